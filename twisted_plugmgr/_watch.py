"""
File watching for reload on change.

L{SourceWatcher} watches a set of directories (not recursively) and reports,
after a quiet period, the absolute paths of the C{.py} files and the
subdirectories in them that were written, created, deleted or renamed. It
uses Linux inotify through L{twisted.internet.inotify} when it can, and
otherwise polls C{os.scandir} with a L{LoopingCall}.

What is reported, and what is not:

  - C{.py} files and directories (a new package, say) directly inside a
    watched directory, and the watched directory itself when it disappears
    or reappears;
  - never C{__pycache__}, C{*.pyc}, hidden names (C{.foo.py.swp},
    C{.#foo.py}, C{.foo.py.tmp}), backups (C{foo.py~}) or other names (vim's
    C{4913}); an editor that writes C{.foo.py.tmp} and renames it over
    C{foo.py} is reported as a change of C{foo.py}.

Twisted's L{INotify <twisted.internet.inotify.INotify>} closes its whole
connection, dropping every watch, when any watched directory is deleted
(C{IN_DELETE_SELF}). The watcher notices (its notifier reports
C{connectionLost}), opens a new one, watches what still exists (the nearest
existing parent of a deleted directory, to see it come back), and compares a
fresh listing of every watched directory with the last one it saw, so that
what changed while nothing was watching is reported too.

Only the reactor given is used; nothing here is module-level state.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, FrozenSet, Iterable, Optional, Set, Tuple

from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

__all__ = ["SourceWatcher", "is_reported_name"]

#: Whether Twisted's inotify support can be used here (Linux, with a libc
#: that has inotify); without it, the watcher polls.
_HAVE_INOTIFY = False
if sys.platform.startswith("linux"):
    try:
        from twisted.internet import inotify as _inotify
    except ImportError:  # no usable libc inotify: polling only
        pass
    else:
        _HAVE_INOTIFY = True

if _HAVE_INOTIFY:

    class _Notifier(_inotify.INotify):
        """
        An L{INotify} that tells its owner when its connection is lost.

        Twisted's L{INotify} loses its connection, and with it every watch,
        when a watched directory is deleted, or when a callback raises; this
        subclass calls C{on_lost(self, reason)} after the usual cleanup, so
        the owner can open a new one.
        """

        def __init__(
            self, reactor: IReactorFDSet, on_lost: Callable[[_Notifier, Failure], None]
        ) -> None:
            super().__init__(reactor=reactor)
            self._on_lost = on_lost

        def connectionLost(self, reason: Failure) -> None:
            """
            Close the inotify descriptor, then tell the owner.
            """
            super().connectionLost(reason)
            self._on_lost(self, reason)

    #: What a watched directory reports. IN_CLOSE_WRITE ends a write,
    #: IN_MODIFY keeps the quiet timer from expiring during a long one,
    #: IN_MOVED_TO is an editor's rename over the old file; IN_MOVE_SELF
    #: (and IN_DELETE_SELF, which Twisted always adds) concern the watched
    #: directory itself.
    _WATCH_MASK = (
        _inotify.IN_CLOSE_WRITE
        | _inotify.IN_MODIFY
        | _inotify.IN_CREATE
        | _inotify.IN_DELETE
        | _inotify.IN_MOVED_FROM
        | _inotify.IN_MOVED_TO
        | _inotify.IN_MOVE_SELF
        | _inotify.IN_DELETE_SELF
        | _inotify.IN_ONLYDIR
    )
    #: Events about an entry of a watched directory that are reported.
    _REPORT_MASK = (
        _inotify.IN_CLOSE_WRITE
        | _inotify.IN_MODIFY
        | _inotify.IN_CREATE
        | _inotify.IN_DELETE
        | _inotify.IN_MOVED_FROM
        | _inotify.IN_MOVED_TO
    )
    #: Events about the watched directory itself, after which its watch is
    #: no longer good for its path.
    _SELF_MASK = (
        _inotify.IN_MOVE_SELF | _inotify.IN_DELETE_SELF | _inotify.IN_UNMOUNT | _inotify.IN_IGNORED
    )
    _APPEAR_MASK = _inotify.IN_CREATE | _inotify.IN_MOVED_TO


#: What is remembered of one entry: (mtime_ns, size, inode) for a file,
#: (-1, -1, inode) for a directory (its contents are not this entry's
#: business, so a new C{__pycache__} inside it does not count).
_Key = Tuple[int, int, int]
#: The reported entries of one directory, path -> key; None if the directory
#: does not exist.
_Listing = Optional[Dict[str, _Key]]


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


def _key(st: os.stat_result) -> Optional[_Key]:
    """
    The key of an entry from its C{stat}, or L{None} if it is neither a
    regular file nor a directory.
    """
    if stat.S_ISDIR(st.st_mode):
        return (-1, -1, st.st_ino)
    if stat.S_ISREG(st.st_mode):
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    return None


def _scan(directory: str) -> _Listing:
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
    listing: Dict[str, _Key] = {}
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


def _diff(directory: str, old: _Listing, new: _Listing) -> Set[str]:
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


class SourceWatcher:
    """
    Watch directories of plugin sources and report changed paths, debounced.

    @ivar mode: C{"inotify"} or C{"polling"}: how changes are noticed (it
        becomes C{"polling"} if inotify fails while the watcher runs and
        inotify was not forced).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        on_change: Callable[[FrozenSet[str]], object],
        debounce: float = 0.05,
        poll_interval: float = 0.25,
        use_inotify: bool | None = None,
    ) -> None:
        """
        @param reactor: the reactor: an L{IReactorTime} provider, and an
            L{IReactorFDSet} provider for inotify (a
            L{twisted.internet.task.Clock} gives polling).
        @param on_change: called with a C{frozenset} of the absolute paths
            changed since the last call, once C{debounce} seconds passed
            without a further change. If it raises or returns a Deferred
            that fails, the failure is logged.
        @param debounce: seconds of quiet before reporting.
        @param poll_interval: seconds between two listings, when polling.
        @param use_inotify: L{None} to use inotify when it is available (on
            Linux, with a reactor providing L{IReactorFDSet}), C{True} to
            require it, C{False} to poll.
        @raise ValueError: if C{use_inotify} is C{True} and inotify is not
            available, or a duration is out of range.
        """
        if debounce < 0:
            raise ValueError(f"debounce must be >= 0, not {debounce!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval!r}")
        can_inotify = _HAVE_INOTIFY and IReactorFDSet.providedBy(reactor)
        if use_inotify and not can_inotify:
            why = "not on Linux" if not _HAVE_INOTIFY else f"{reactor!r} is not an IReactorFDSet"
            raise ValueError(f"inotify is not available: {why}")
        self._reactor = reactor
        self._on_change = on_change
        self._debounce = debounce
        self._poll_interval = poll_interval
        self._want_inotify = can_inotify if use_inotify is None else bool(use_inotify)
        self._forced = use_inotify is not None
        self.mode: str = "inotify" if self._want_inotify else "polling"
        self._running = False
        self._targets: Tuple[str, ...] = ()
        # target -> its last listing; no key: not listed yet (a baseline).
        self._listings: Dict[str, _Listing] = {}
        self._unreadable: Set[str] = set()
        self._pending: Set[str] = set()
        self._quiet: Optional[IDelayedCall] = None
        # polling
        self._loop: Optional[LoopingCall] = None
        # inotify
        self._notifier: Optional[_Notifier] = None
        self._watches: Dict[str, _DirWatch] = {}
        self._resync_call: Optional[IDelayedCall] = None

    def __repr__(self) -> str:
        return f"<SourceWatcher {self.mode} running={self._running} targets={len(self._targets)}>"

    # -- public API --------------------------------------------------------

    def set_targets(self, directories: Iterable[str]) -> None:
        """
        Set the directories to watch, replacing the previous set.

        Each directory is watched for changes to the C{.py} files and the
        subdirectories directly in it (not recursively: give a package's
        directory too, to watch inside it). A directory may be missing: it
        is reported when it appears. C{__pycache__} directories are
        skipped. Directories newly added are not reported as changed; their
        current contents are the baseline.

        @param directories: paths (made absolute here).
        """
        targets = set()
        for directory in directories:
            path = os.path.abspath(os.fspath(directory))
            if os.path.basename(path) == "__pycache__":
                self._log.debug("Not watching {directory}: bytecode cache", directory=path)
                continue
            targets.add(path)
        self._targets = tuple(sorted(targets))
        for gone in self._listings.keys() - targets:
            del self._listings[gone]
        self._unreadable &= targets
        if not self._running:
            return
        if self.mode == "inotify":
            self._resync()
        else:
            self._rescan()

    def start(self) -> None:
        """
        Start watching the targets; their current contents are the baseline.

        @raise RuntimeError: if the watcher is already running.
        @raise twisted.internet.inotify.INotifyError: if inotify was forced
            and cannot watch the targets (the watcher stays stopped).
        """
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self._running = True
        self._listings.clear()
        self.mode = "inotify" if self._want_inotify else "polling"
        self._log.info(
            "Watching {count} directories for source changes ({mode})",
            count=len(self._targets),
            mode=self.mode,
            targets=self._targets,
        )
        if self.mode == "inotify":
            self._resync(starting=True)
        else:
            self._start_polling()

    def stop(self) -> None:
        """
        Stop watching: cancel every pending call, close inotify, and forget
        the changes not reported yet. Stopping a stopped watcher does
        nothing.
        """
        if not self._running:
            return
        self._running = False
        self._pending.clear()
        for call in (self._quiet, self._resync_call):
            if call is not None and call.active():
                call.cancel()
        self._quiet = self._resync_call = None
        if self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()
        self._close_notifier()
        self._listings.clear()
        self._unreadable.clear()

    # -- reporting ---------------------------------------------------------

    def _changed(self, paths: Iterable[str]) -> None:
        """
        Remember changed paths and restart the quiet timer.
        """
        paths = set(paths)
        if not paths:
            return
        self._pending |= paths
        if self._quiet is not None and self._quiet.active():
            self._quiet.reset(self._debounce)
        else:
            self._quiet = self._reactor.callLater(self._debounce, self._report)

    def _report(self) -> None:
        """
        The quiet period is over: report what changed.
        """
        self._quiet = None
        paths = frozenset(self._pending)
        self._pending.clear()
        if not paths:
            return
        self._remember(paths)
        self._log.debug("Reporting {count} changed paths", count=len(paths), paths=sorted(paths))
        maybeDeferred(self._on_change, paths).addErrback(
            lambda failure: self._log.failure(
                "Change callback {callback!r} failed for {paths}",
                failure,
                callback=self._on_change,
                paths=sorted(paths),
            )
        )

    def _remember(self, paths: Iterable[str]) -> None:
        """
        Update the listings with the current state of reported paths, so a
        later comparison (after a lost inotify connection) does not report
        them again.
        """
        for path in paths:
            listing = self._listings.get(os.path.dirname(path))
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

    def _rescan(self) -> None:
        """
        List every target and report what differs from its last listing;
        a target listed for the first time only sets the baseline.
        """
        changed: Set[str] = set()
        for target in self._targets:
            try:
                listing = _scan(target)
            except OSError:
                if target not in self._unreadable:
                    self._unreadable.add(target)
                    self._log.failure("Cannot list watched directory {directory}", directory=target)
                continue
            if target in self._unreadable:
                self._unreadable.discard(target)
                self._log.info("Watched directory {directory} is readable again", directory=target)
            if target in self._listings:
                changed |= _diff(target, self._listings[target], listing)
            self._listings[target] = listing
        if changed:
            self._changed(changed)

    # -- polling -----------------------------------------------------------

    def _start_polling(self) -> None:
        """
        List the targets now, then every C{poll_interval} seconds.
        """
        self.mode = "polling"
        self._rescan()
        loop = self._loop = LoopingCall(self._poll)
        loop.clock = self._reactor
        loop.start(self._poll_interval, now=False).addErrback(
            lambda failure: self._log.failure("Polling stopped", failure)
        )

    def _poll(self) -> None:
        """
        One polling round.
        """
        try:
            self._rescan()
        except Exception:
            self._log.failure("Polling {count} directories failed", count=len(self._targets))

    # -- inotify -----------------------------------------------------------

    def _schedule_resync(self) -> None:
        """
        Bring the watches up to date soon (not from inside the notifier's
        read loop).
        """
        if self._resync_call is None and self._running:
            self._resync_call = self._reactor.callLater(0, self._resync)

    def _resync(self, starting: bool = False) -> None:
        """
        Open a notifier if there is none, make the watches match the
        targets, then list the targets to report what changed while they
        were not watched. If inotify fails and was not forced, poll instead.
        """
        if self._resync_call is not None:
            if self._resync_call.active():
                self._resync_call.cancel()
            self._resync_call = None
        if not self._running or self.mode != "inotify":
            return
        try:
            self._update_watches()
        except Exception:
            failure = Failure()
            if self._forced and starting:
                self._close_notifier()
                self._running = False
                failure.raiseException()
            if self._forced:
                self._log.failure(
                    "Cannot watch {targets} with inotify", failure, targets=self._targets
                )
            else:
                self._log.failure(
                    "Cannot watch {targets} with inotify; polling every {interval}s instead",
                    failure,
                    level=LogLevel.warn,
                    targets=self._targets,
                    interval=self._poll_interval,
                )
                self._close_notifier()
                self._start_polling()
                return
        self._rescan()

    def _update_watches(self) -> None:
        """
        Add and remove inotify watches to match L{_plan}.
        """
        assert _HAVE_INOTIFY
        if self._notifier is None:
            notifier = _Notifier(IReactorFDSet(self._reactor), self._notifier_lost)
            notifier.startReading()
            self._notifier = notifier
            self._watches.clear()
        notifier = self._notifier
        plan = _plan(self._targets)
        for path, old in list(self._watches.items()):
            new = plan.get(path)
            if new is None or old.stale or new.ident != old.ident:
                del self._watches[path]
                try:
                    notifier.ignore(FilePath(path))
                except KeyError:
                    # Twisted already forgot it (a deleted directory).
                    pass
        for path, new in plan.items():
            current = self._watches.get(path)
            if current is not None:
                # Keep the object: the notifier's callback holds it.
                current.targets, current.awaiting = new.targets, new.awaiting
                continue
            try:
                notifier.watch(
                    FilePath(path),
                    mask=_WATCH_MASK,
                    callbacks=[partial(self._inotify_event, new)],
                )
            except _inotify.INotifyError:
                if os.path.isdir(path):
                    raise
                # Removed since _plan looked: plan again.
                self._schedule_resync()
                continue
            self._watches[path] = new

    def _inotify_event(
        self, watch: _DirWatch, ignored: object, filepath: FilePath, mask: int
    ) -> None:
        """
        Called by the notifier for every event on a watched directory.
        Never raises: an exception here would close the notifier.
        """
        try:
            self._handle_event(watch, os.fsdecode(filepath.path), mask)
        except Exception:
            self._log.failure(
                "Error handling inotify event {events} for {path}",
                events=_inotify.humanReadableMask(mask),
                path=filepath.path,
            )

    def _handle_event(self, watch: _DirWatch, path: str, mask: int) -> None:
        """
        Report a change to an entry, or resync if a watched directory went
        away or a missing target may be back.
        """
        if not self._running:
            return
        if path == watch.path:
            if mask & _SELF_MASK:
                watch.stale = True
                self._schedule_resync()
            return
        name = os.path.basename(path)
        if mask & _APPEAR_MASK and name in watch.awaiting:
            self._schedule_resync()
        if watch.targets and mask & _REPORT_MASK:
            if is_reported_name(name, bool(mask & _inotify.IN_ISDIR)):
                self._changed(os.path.join(target, name) for target in watch.targets)

    def _notifier_lost(self, notifier: _Notifier, reason: Failure) -> None:
        """
        The notifier closed. If it was not L{stop}, open a new one soon:
        Twisted closes it when a watched directory is deleted.
        """
        if notifier is not self._notifier:
            return
        self._notifier = None
        self._watches.clear()
        if reason.check(ConnectionDone, ConnectionLost):
            self._log.info(
                "inotify connection closed (a watched directory was deleted?); reopening it"
            )
        else:
            self._log.failure("inotify connection failed; reopening it", reason)
        self._schedule_resync()

    def _close_notifier(self) -> None:
        """
        Close the notifier, if any, without reopening it.
        """
        notifier, self._notifier = self._notifier, None
        self._watches.clear()
        if notifier is not None:
            notifier.loseConnection()
