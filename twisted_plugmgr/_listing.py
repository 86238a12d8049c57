"""
What the file watcher knows of a directory without inotify: listings of
its entries (by inode, size and modification time), what differs between
two listings, which names are reported, and which directories to watch
for a set of targets. Plain functions over the file system.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Set, Tuple

__all__ = ["is_reported_name", "remember", "Key", "Listing"]


#: What is remembered of one entry: (mtime_ns, size, inode) for a file,
#: (-1, -1, inode) for a directory (its contents are not this entry's
#: business, so a new C{__pycache__} inside it does not count).
Key = Tuple[int, int, int]
#: The reported entries of one directory, path -> key; None if the directory
#: does not exist.
Listing = Optional[Dict[str, Key]]


def is_reported_name(name: str, is_dir: bool) -> bool:
    """
    Whether a change to the entry C{name} of a watched directory is reported.

    @param name: a file or directory name (no separators).
    @param is_dir: whether the entry is a directory.
    @return: C{True} for C{.py} files and directories, C{False} for
        C{__pycache__}, hidden names (editor swap, lock and temporary files),
        names ending in C{~}, and anything else.
    """
    if name.startswith(".") or name.endswith("~") or name == "__pycache__":
        return False
    return is_dir or name.endswith(".py")


def _key(st: os.stat_result) -> Optional[Key]:
    """
    The key of an entry from its C{stat}, or L{None} if it is neither a
    regular file nor a directory.
    """
    if stat.S_ISDIR(st.st_mode):
        return (-1, -1, st.st_ino)
    if stat.S_ISREG(st.st_mode):
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    return None


def _scan(directory: str) -> Listing:
    """
    List the reported entries of C{directory}.

    @return: path -> key, or L{None} if C{directory} does not exist (or is
        not a directory).
    @raise OSError: if the directory cannot be read.
    """
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    listing: Dict[str, Key] = {}
    with entries:
        for entry in entries:
            try:
                if not is_reported_name(entry.name, entry.is_dir()):
                    continue
                key = _key(entry.stat())
            except FileNotFoundError:  # removed while we list: not there
                continue
            if key is not None:
                listing[entry.path] = key
    return listing


def _appears_whole(path: str) -> bool:
    """
    Whether the new entry C{path} is complete when it appears: a symbolic
    link, a second name of a file (a hard link), anything but a regular
    file. A regular file with one name was just created by C{open}, and is
    complete when it is closed.

    An entry that is gone already counts as complete: its removal is the
    next event.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return True
    return stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode) or st.st_nlink > 1


def _diff(directory: str, old: Listing, new: Listing) -> Set[str]:
    """
    The paths whose key differs between two listings of C{directory}, plus
    C{directory} itself if it appeared or disappeared.
    """
    before = old or {}
    after = new or {}
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    if (old is None) != (new is None):
        changed.add(directory)
    return changed


@dataclass(eq=False)
class _DirWatch:
    """
    One inotify watch and what it is for.

    @ivar path: the directory watched.
    @ivar ident: its (st_dev, st_ino): two targets naming the same directory
        (through a symlink) share one watch, as inotify would anyway.
    @ivar targets: the targets this directory is; its entries are reported
        under each of them.
    @ivar awaiting: names of entries whose creation may bring back a
        missing target (this directory is the nearest existing parent).
    @ivar stale: the watch no longer follows C{path} (it was moved, deleted
        or unmounted) and must be replaced.
    """

    path: str
    ident: Tuple[int, int]
    targets: Set[str] = field(default_factory=set)
    awaiting: Set[str] = field(default_factory=set)
    stale: bool = False


def _plan(targets: Iterable[str]) -> Dict[str, _DirWatch]:
    """
    The watches needed for C{targets}: each existing target directory, and
    for each missing one its nearest existing parent, waiting for it.
    """
    plan: Dict[str, _DirWatch] = {}
    by_ident: Dict[Tuple[int, int], _DirWatch] = {}

    def watch(path: str) -> Optional[_DirWatch]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        ident = (st.st_dev, st.st_ino)
        found = by_ident.get(ident)
        if found is None:
            found = by_ident[ident] = plan[path] = _DirWatch(path, ident)
        return found

    for target in targets:
        found = watch(target)
        if found is not None:
            found.targets.add(target)
            continue
        child, parent = target, os.path.dirname(target)
        while True:
            found = watch(parent)
            if found is not None:
                found.awaiting.add(os.path.basename(child))
                break
            if parent == os.path.dirname(parent):  # the root is gone?
                break
            child, parent = parent, os.path.dirname(parent)
    return plan


def remember(listings: Dict[str, Listing], paths: Iterable[str]) -> None:
    """
    Update C{listings} with the current state of C{paths} (reported just
    now), so that a later comparison does not report them again.
    """
    for path in paths:
        listing = listings.get(os.path.dirname(path))
        if listing is None:
            continue
        try:
            key = _key(os.stat(path))
        except OSError:
            key = None
        if key is None:
            listing.pop(path, None)
        else:
            listing[path] = key
