"""
The documentation's links resolve, and the README's commands are CI's.

Every relative link of README.md and docs/*.md must name a file or directory
of the repository, and a C{#anchor} must name a heading of the markdown file it
points to (GitHub's anchors: the heading's text, lower-cased, punctuation
dropped, spaces made hyphens, C{-1}, C{-2}... after a repeated one). The two
commands at the top of the README are what people run first: the test command
must be the one .ci/run runs, and the other must install the same way.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """
    The lines of C{text} outside fenced code blocks, numbered from 1.
    """
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """
    GitHub's anchor for a heading's markdown text.
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links: their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = "".join(
        c for c in text
        if c in " -_" or unicodedata.category(c)[0] in "LNM"
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """
    The anchors of a markdown file's headings, repeated ones numbered.
    """
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """
    The link and image targets of a markdown file, outside code.
    """
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def broken(path: Path, root: Path = ROOT) -> list[str]:
    """
    What is wrong with each relative link of one markdown file, one line each.

    @param path: the markdown file.
    @param root: the repository, which no link may leave.
    """
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue                      # https:, mailto:...: not ours to check
        where = f"{path.relative_to(root)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        goal = (path.parent / file_part).resolve() if file_part else path
        if not goal.exists():
            problems.append(f"{where}: no such file or directory")
            continue
        if root not in goal.parents and goal != root:
            problems.append(f"{where}: outside the repository")
            continue
        if anchor:
            if goal.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in anchors(goal):
                problems.append(f"{where}: no heading with this anchor in {goal.name}")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path: Path) -> None:
    """
    Every relative link and #anchor of the file names something that exists.
    """
    assert broken(path) == []


def test_every_docs_file_is_checked() -> None:
    """
    The README and the guides are there (a test over no file would pass).
    """
    names = {p.name for p in DOCS}
    assert {"README.md", "index.md", "plugins.md", "operating.md", "irc.md",
            "guarantees.md", "benchmarks.md", "development.md", "web.md"} <= names


def test_broken_links_are_found(tmp_path: Path) -> None:
    """
    The checker itself: a missing file, a missing anchor and a file outside
    the repository are reported; a good anchor (a repeated heading's too), a
    link in code and an external link are not.
    """
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "outside.md").write_text("# Outside\n")
    (repo / "other.md").write_text("# Other\n\n## The `plugmgr new` command: NAME\n\n## A\n\n## A\n")
    page = repo / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#the-plugmgr-new-command-name) [dup](other.md#a-1) [self](#page)\n"
        "[gone](missing.md) [bad](other.md#nope) `[code](missing2.md)` [web](https://x.org/y)\n"
        "[out](../outside.md)\n"
        "```\n[fenced](missing3.md)\n```\n"
    )
    assert broken(page, repo) == [
        "page.md:4: missing.md: no such file or directory",
        "page.md:4: other.md#nope: no heading with this anchor in other.md",
        "page.md:5: ../outside.md: outside the repository",
    ]


def _readme_commands() -> dict[str, str]:
    """
    The commands under C{# 1.} and C{# 2.} in the README's first code block.
    """
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None and text.index(block.group(0)) < text.index("\n## ")
    commands, label = {}, None
    for line in block.group(1).splitlines():
        marker = re.match(r"# (\d)\. ", line)
        if marker:
            label = marker.group(1)
        elif line.strip() and label:
            commands[label] = line.strip()
            label = None
    return commands


def test_readme_test_command_is_what_ci_runs() -> None:
    """
    The README's second command (the tests) is a line of .ci/run, and the
    first installs the project the same way before it runs the examples.
    """
    commands = _readme_commands()
    assert sorted(commands) == ["1", "2"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands["2"] in ci
    setup_1, _, run_1 = commands["1"].rpartition(" && ")
    assert setup_1 == commands["2"].rpartition(" && ")[0]
    assert run_1 == ".venv/bin/twist plugmgr --config examples/plugmgr.toml"
    assert (ROOT / "examples" / "plugmgr.toml").is_file()
