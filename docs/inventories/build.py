"""
Build the intersphinx inventories the API reference links through, offline.

pydoctor turns a name it cannot find in twisted_plugmgr into a link when an
inventory (a Sphinx C{objects.inv}) lists it. CI has no network, so the
inventories are built here from what is installed and committed beside this
script; C{[tool.pydoctor]} in pyproject.toml reads them with
C{intersphinx-file = "PATH::BASE_URL"}, so the links still go to the real
documentation sites:

  - C{twisted.inv}: Twisted's public names, from pydoctor run on the installed
    Twisted (the same tool that builds docs.twisted.org, so the pages match);
    private modules and the test suites are left out.
  - C{python.inv}: the standard library's, from the Python documentation that
    Debian's C{python3.X-doc} package installs (the very C{objects.inv} of
    docs.python.org for that version; its C{py:} entries only).

zope.interface has no inventory here: its documentation is built by Sphinx
from hand-written pages, and the docstrings name its objects in C{C{...}}.

Run it after upgrading Twisted or Python, from the repository root::

    apt-get install python3.11-doc        # once
    .venv/bin/python docs/inventories/build.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

_PRIVATE = re.compile(r"(^|\.)_[^_]|(^|\.)tests?(\.|$)")


def read_inventory(path: str) -> tuple[list[str], list[str]]:
    """
    Read a version 2 inventory.

    @param path: the C{objects.inv} file.
    @return: its four header lines and its entries, one string each.
    """
    with open(path, "rb") as f:
        data = f.read()
    parts = data.split(b"\n", 4)
    header = [line.decode("utf-8") for line in parts[:4]]
    if header[0] != "# Sphinx inventory version 2":
        raise SystemExit(f"{path}: not a version 2 inventory: {header[0]!r}")
    return header, zlib.decompress(parts[4]).decode("utf-8").splitlines()


def write_inventory(path: str, project: str, version: str, entries: list[str]) -> None:
    """
    Write a version 2 inventory.

    @param path: where to write it.
    @param project: the project's name, for the header.
    @param version: its version, for the header.
    @param entries: the entry lines (C{name domain:role priority uri dispname}).
    """
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = zlib.compress(("\n".join(sorted(set(entries))) + "\n").encode("utf-8"), 9)
    with open(path, "wb") as f:
        f.write(header.encode("utf-8") + body)
    print(f"{os.path.relpath(path)}: {len(set(entries))} entries ({project} {version})")


def twisted_inventory() -> None:
    """
    Run pydoctor on the installed Twisted and keep its public names.
    """
    import twisted

    source = os.path.dirname(twisted.__file__)
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "pydoctor", "--make-intersphinx", "--quiet",
             "--project-name", "Twisted", "--project-version", twisted.__version__,
             "--html-output", out, source],
            check=False,  # Twisted's own docstrings give pydoctor warnings
            stdout=subprocess.DEVNULL,
            cwd=out,      # not here, where [tool.pydoctor] would configure it
        )
        _, entries = read_inventory(os.path.join(out, "objects.inv"))
    kept = []
    for entry in entries:
        name, _, rest = entry.partition(" ")
        if _PRIVATE.search(name):
            continue
        # The root package's page is twisted.html on docs.twisted.org.
        kept.append(f"{name} {rest.replace(' index.html ', ' twisted.html ')}")
    write_inventory(os.path.join(HERE, "twisted.inv"), "Twisted", twisted.__version__, kept)


def python_inventory() -> None:
    """
    Copy the C{py:} entries of the installed Python documentation's inventory.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = f"/usr/share/doc/python{version}/html/objects.inv"
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: apt-get install python{version}-doc")
    _, entries = read_inventory(path)
    kept = [entry for entry in entries if entry.split(" ", 2)[1].startswith("py:")]
    write_inventory(os.path.join(HERE, "python.inv"), "Python", version, kept)


if __name__ == "__main__":
    python_inventory()
    twisted_inventory()
