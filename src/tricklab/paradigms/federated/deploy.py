"""Flower in separate processes on this machine: one SuperLink (which starts the ServerApp), one SuperNode per client
(each starts its ClientApp), and ``flwr run`` to submit the app of :mod:`tricklab.paradigms.federated.flower_app`.

Every process gets free local ports, its own session (so its children, the ServerApp / ClientApp processes, are
stopped with it) and a private ``FLWR_HOME``; :func:`run_flower_deployment` always stops every process it started,
also on errors and timeouts. Run it from a shell:

    python -m tricklab.paradigms.federated.deploy --clients 2 --rounds 2 --hidden 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tricklab.errors import ConfigError
from tricklab.paradigms.federated.flower import app_dir, config_to_run_config
from tricklab.paradigms.federated.config import FederatedConfig

__all__ = ["alive", "descendants", "free_port", "run_flower_deployment"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise ConfigError(f"{name} not found next to {sys.executable}; install flwr: pip install 'tricklab[federated]'")
    return str(path)


def _children_map() -> dict[int, list[int]]:
    """ppid -> pids of the live processes (Linux /proc)."""
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            if fields[0] != "Z":  # zombies are only waiting for their parent to read them
                out.setdefault(int(fields[1]), []).append(int(d.name))
    return out


def descendants(pids: list[int]) -> set[int]:
    """Every live process below ``pids`` (children, grandchildren, ...)."""
    kids, seen, todo = _children_map(), set(), list(pids)
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _stop(procs: list[subprocess.Popen[bytes]], extra: set[int], grace: float = 10.0) -> None:
    """SIGTERM each started process's session (it and its children) and every descendant seen while it ran (a
    ServerApp may run in a session of its own), wait, then SIGKILL what is left."""
    extra = extra | descendants([p.pid for p in procs])
    for pid in extra:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:  # the session may outlive its leader (a ServerApp child): kill the group in any case
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.wait(timeout=5)
    for pid in extra:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, tails: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the SuperLink did not open port {port}:\n{tails()}")
        time.sleep(0.2)


@contextmanager
def _processes(seen: set[int]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        _stop(procs, seen)


def run_flower_deployment(config: FederatedConfig, seed: int, workdir: Path | None = None,
                          timeout: float = 300.0) -> dict[str, Any]:
    """Run ``config`` on a local SuperLink and ``config.clients`` SuperNodes (separate processes); returns the
    ServerApp's result ({"seed", "rounds": per-round rows}) plus "pids" (every process started). Raises
    RuntimeError with the logs' tails when the run does not finish within ``timeout`` seconds."""
    tmp = tempfile.TemporaryDirectory(prefix="tricklab-flower-") if workdir is None else None
    root = Path(tmp.name if tmp is not None else workdir)  # type: ignore[arg-type]
    root.mkdir(parents=True, exist_ok=True)
    home, logs = root / "flwr-home", root / "logs"
    home.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    app = app_dir(root / "app")
    result_path = root / "result.json"
    run_config = dict(config_to_run_config(config, seed), **{"result-path": str(result_path)})
    overrides = root / "run_config.toml"
    overrides.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()), encoding="utf-8")
    # flwr 1.42's SuperLink serves its Runtime, Control and Fleet APIs over HTTP on one port
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n',
        encoding="utf-8")
    env = dict(os.environ, FLWR_HOME=str(home), PYTHONUNBUFFERED="1")
    # Flower's processes start further Flower commands (flower-superexec, flwr-serverapp) by name
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # the apps import tricklab from this checkout, whatever the cwd of the processes Flower starts
    src = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    started: list[int] = []
    seen: set[int] = set()  # descendants of the started processes, collected while they run

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed when the process ends (below)
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
        out.close()  # the child holds its own descriptor
        started.append(p.pid)
        return p

    def tails() -> str:
        return "\n".join(f"--- {f.name}\n" + f.read_text(errors="replace")[-2000:] for f in sorted(logs.glob("*.log")))

    try:
        with _processes(seen) as procs:
            procs.append(start("superlink", [
                _bin("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(link),
                "--disable-runtime-dependency-installation"]))
            _wait_for_port(link, procs[0], timeout, tails)
            for k in range(config.clients):
                procs.append(start(f"supernode{k}", [
                    _bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                    "--node-config", f"partition-id={k} num-partitions={config.clients}",
                    "--host", "127.0.0.1", "--port", str(free_port())]))
            submit = subprocess.run([_bin("flwr"), "run", str(app), "local", "--run-config", str(overrides)],
                                    env=env, cwd=root, capture_output=True, timeout=timeout, check=False)
            (logs / "flwr-run.log").write_bytes(submit.stdout + submit.stderr)
            if submit.returncode != 0:
                raise RuntimeError(f"flwr run failed (exit {submit.returncode}):\n{tails()}")
            deadline = time.monotonic() + timeout
            while not result_path.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no result after {timeout:.0f} s:\n{tails()}")
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a Flower process exited early (exit {dead[0].returncode}):\n{tails()}")
                seen.update(descendants(started))
                time.sleep(0.5)
            result = json.loads(result_path.read_text(encoding="utf-8"))
        result["pids"] = sorted(set(started) | seen)
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--algorithm", default="fedavg")
    ap.add_argument("--secure-aggregation", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = FederatedConfig(algorithm=a.algorithm, clients=a.clients, rounds=a.rounds, hidden=a.hidden,
                          secure_aggregation=a.secure_aggregation)
    out = run_flower_deployment(cfg, a.seed)
    for row in out["rounds"]:
        print(f"round {row['step']}: accuracy {row['accuracy']:.4f} loss {row['loss']:.4f}")


if __name__ == "__main__":
    main()
