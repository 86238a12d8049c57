"""
On-disk checks of a plugin's files, for an operator's tools: whether each
file that runs still has the bytes that were compiled, and whether the file
on disk compiles. Judged by reading and C{compile()}, never by importing.

Blocking (it reads files): run it off the reactor thread
(L{twisted_plugmgr._deferreds.run_blocking}). Nothing here knows the
reactor or the manager.
"""

from __future__ import annotations

import hashlib
import os
from typing import List, Mapping, Optional, Sequence

import attr

from ._errors import PluginError
from ._source import locate

__all__ = ["FileCheck", "compile_error", "check_files", "catalog", "CatalogEntry"]

#: The longest compile error kept (one line).
_MAX_ERROR = 300


@attr.s(frozen=True, slots=True, auto_attribs=True)
class FileCheck:
    """
    One source file of a running plugin, compared with the disk.

    @ivar path: the file.
    @ivar status: C{"unchanged"} (the bytes that run), C{"changed"} (other
        bytes: a reload would run them) or C{"missing"} (cannot be read).
    @ivar compile_error: why the file on disk does not compile, in one line;
        L{None} when it compiles (or is missing).
    """

    path: str
    status: str
    compile_error: Optional[str] = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CatalogEntry:
    """
    One plugin that could be loaded.

    @ivar name: its name.
    @ivar status: C{"loaded"}, C{"not loaded"} or C{"broken"} (its file
        does not compile).
    @ivar path: its module file, or L{None} when it cannot be located.
    @ivar error: why it is broken, in one line, or L{None}.
    """

    name: str
    status: str
    path: Optional[str] = None
    error: Optional[str] = None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR else text[:_MAX_ERROR - 3] + "..."


def _compile(path: str, source: bytes) -> Optional[str]:
    """
    Why C{source} (the bytes of C{path}) does not compile, in one line
    naming the file as Python does (C{"SyntaxError: invalid syntax
    (name.py, line 3)"}); L{None} when it compiles.
    """
    name = os.path.basename(path)
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f", line {e.lineno}" if e.lineno else ""
        return _one_line(f"{type(e).__name__}: {e.msg} ({name}{where})")
    except (ValueError, TypeError) as e:  # null bytes, bad encoding declaration...
        return _one_line(f"{type(e).__name__}: {e} ({name})")
    return None


def compile_error(path: str) -> Optional[str]:
    """
    Why the file C{path} does not compile, in one line; L{None} when it
    compiles. A file that cannot be read is an error too.
    """
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        return _one_line(f"cannot read {path}: {e.strerror or e}")
    return _compile(path, source)


def check_files(files: Mapping[str, str]) -> List[FileCheck]:
    """
    Compare each file of C{files} (path -> SHA-256 of what runs) with the
    disk, sorted by path; a changed file is compiled too.
    """
    checks = []
    for path in sorted(files):
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            checks.append(FileCheck(path, "missing"))
            continue
        if hashlib.sha256(source).hexdigest() == files[path]:
            checks.append(FileCheck(path, "unchanged"))
        else:
            checks.append(FileCheck(path, "changed", _compile(path, source)))
    return checks


def catalog(names: Sequence[str], loaded: Mapping[str, Optional[str]],
            packages: Sequence[str], paths: Sequence[str]) -> List[CatalogEntry]:
    """
    Each of C{names} (the plugins that could be loaded): loaded, not loaded,
    or broken when its module file does not compile. C{loaded} maps the
    loaded plugins to their source file (L{None}: unknown); a loaded plugin
    whose file on disk does not compile is broken too (a reload would fail).
    A plugin not loaded is located in C{packages} and C{paths}; one that
    cannot be is merely not loaded.
    """
    entries = []
    for name in names:
        path = loaded.get(name)
        if path is None:
            try:
                path = locate(name, packages, paths, "").origin
            except (PluginError, ImportError, OSError):
                path = None
        error = compile_error(path) if path is not None else None
        status = "broken" if error else "loaded" if name in loaded else "not loaded"
        entries.append(CatalogEntry(name, status, path, error))
    return entries

