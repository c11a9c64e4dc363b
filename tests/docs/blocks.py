"""The fenced code blocks of a Markdown file, with the directives that tell a test how to run
them.

A directive is an HTML comment (invisible when rendered) on the line before the block:

- ``<!-- docs-test: skip REASON -->``: not run (it installs, or runs the test suite itself).
- ``<!-- docs-test: expect TEXT -->``: the block's output must contain TEXT; retried for a few
  seconds while it does not (what it shows may still be catching up, as search does).
- ``<!-- docs-test: until-interrupted -->``: runs until Ctrl-C (``tail``); it must still be
  running after a moment, and end cleanly on SIGINT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^(?P<fence>```+)(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^<!-- docs-test: (?P<verb>[a-z-]+)\s*(?P<arg>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i].strip())
        if directive:
            directives[directive["verb"]] = directive["arg"]
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if not fence:
            if lines[i].strip():
                directives = {}
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence["fence"]))
        lang = fence["info"].strip().split(" ")[0]
        blocks.append(Block(path, i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", directives))
        directives = {}
        i = end + 1
    return blocks
