"""Compare two ablation report pages: the same tags, attributes and text, and the same drawings.

Used to check that a change to how the report is rendered (the Jinja2 template that replaced the f-string
HTML) shows the same content: both pages are parsed, entities decoded (``&quot;`` and ``&#34;`` are the same
character), attributes sorted, whitespace collapsed; the inline ``<svg>`` drawings are compared byte for byte.
Render the old page with the old code and the new page with the new code from the same store, then::

    python tests/reference/compare_reports.py OLD.html NEW.html

Prints the differing tokens (if any) and exits 1 when the pages differ.
"""

from __future__ import annotations

import difflib
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

_RAW = ("svg", "style", "script")  # compared separately (drawings) or static (styles, the counting script)


class _Tokens(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[str] = []
        self._raw = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _RAW:
            self._raw += 1
        if self._raw == 0 or tag in _RAW:
            self.tokens.append(f"<{tag}" + "".join(f' {k}="{v}"' for k, v in sorted(attrs) if tag != "svg") + ">")

    def handle_endtag(self, tag: str) -> None:
        if self._raw == 0 or tag in _RAW:
            self.tokens.append(f"</{tag}>")
        if tag in _RAW:
            self._raw -= 1

    def handle_data(self, data: str) -> None:
        if self._raw == 0 and data.strip():
            self.tokens.append(" ".join(data.split()))


def tokens(text: str) -> list[str]:
    parser = _Tokens()
    parser.feed(text)
    return parser.tokens


def drawings(text: str) -> list[tuple[str, str]]:
    return re.findall(r'data-plot="([^"]+)">(<svg.*?</svg>)', text, re.S)


def main(argv: list[str]) -> int:
    old, new = (Path(a).read_text(encoding="utf-8") for a in argv[:2])
    diff = [line for line in difflib.unified_diff(tokens(old), tokens(new), lineterm="", n=0)
            if not line.startswith(("---", "+++", "@@"))]
    a, b = drawings(old), drawings(new)
    same_svg = sum(x == y for x, y in zip(a, b))
    print(f"tokens: {len(tokens(old))} old, {len(tokens(new))} new, {len(diff)} differ; "
          f"figures: {[n for n, _ in a] == [n for n, _ in b]} same names, {same_svg} of {len(a)} drawings identical")
    for line in diff[:100]:
        print("  " + line[:200])
    return 0 if not diff and same_svg == len(a) == len(b) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
