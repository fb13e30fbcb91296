"""Shared test set-up: a per-session data cache so tests never write to the user's cache folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tricklab_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one cache for the whole session: MNIST-1D is generated once (a few seconds), then read from .npz
    path = Path(os.environ.get("TRICKLAB_TEST_CACHE") or tmp_path_factory.mktemp("tricklab-cache"))
    os.environ["TRICKLAB_CACHE"] = str(path)
    return path


# ------------------------------------------------------------------------------------- headless browser
CHROMIUM = Path("/usr/bin/chromium")


class Browser:
    """Debian's headless Chromium: renders a local page, returns its DOM after scripts ran and every console
    message it logged. Chromium writes each console message (log, warning, error, uncaught exception, CSP
    violation) to stderr as "...:INFO:CONSOLE...] ..." without the level, so any such line counts."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def run(self, page: Path, *extra: str) -> "subprocess.CompletedProcess[str]":
        cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={self.tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=5000", *extra, page.resolve().as_uri()]
        env = dict(os.environ, HOME=str(self.tmp))  # keep chromium's folders out of the real home
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)

    @staticmethod
    def console_lines(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if ":CONSOLE" in line]

    def plots(self, page: Path) -> tuple[int, int, list[str]]:
        """(plots rendered, plots expected, console lines) as the report's own script counted them."""
        result = self.run(page, "--dump-dom")
        assert result.returncode == 0, result.stderr[-2000:]
        body = re.search(r"<body([^>]*)>", result.stdout)
        assert body is not None, result.stdout[:2000]
        rendered = re.search(r'data-plots-rendered="(\d+)"', body.group(1))
        expected = re.search(r'data-plots-expected="(\d+)"', body.group(1))
        assert rendered and expected, f"the page script did not run: {body.group(0)}"
        return int(rendered.group(1)), int(expected.group(1)), self.console_lines(result.stderr)


@pytest.fixture
def browser(tmp_path: Path) -> Browser:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: the README's test command installs the Debian package chromium")
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    return Browser(tmp_path)
