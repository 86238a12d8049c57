"""
File watching for reload on change.

L{SourceWatcher} watches a set of directories (not recursively) and reports
the absolute paths of the C{.py} files and the subdirectories in them that
were saved, created, deleted or renamed, once a short settle window
(C{debounce}, 5 ms by default) has passed after the last complete save. It
uses Linux inotify through L{twisted.internet.inotify} when it can, and
otherwise polls C{os.scandir} with a L{LoopingCall}.

With inotify, only the events that end a save are acted on: C{IN_CLOSE_WRITE}
(a file written in place and closed), C{IN_MOVED_TO} (a temporary file
renamed over the module), C{IN_MOVED_FROM} and C{IN_DELETE} (gone), and
C{IN_CREATE} of a directory, a symbolic link or a hard link. A write still in
progress (C{IN_MODIFY}, or C{IN_CREATE} of a new file by C{open}) only marks
the file as being written: it is held, not reported, until the writer closes
it, so the manager never reads a half-written file. Before reporting, the
watcher reads the inotify events already queued, so that a write begun just
before the window ends holds its file too, however busy the reactor was. (A
file changed without being opened, by C{truncate(path)}, is held until its
next complete save.) Polling cannot tell a finished write from one in
progress: it reports what changed at each listing, as it always has.

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
import select
import sys
from functools import partial
from typing import Callable, Dict, FrozenSet, Iterable, Optional, Set, Tuple

from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ._listing import (
    Listing,
    _appears_whole,
    _diff,
    _DirWatch,
    _plan,
    _scan,
    is_reported_name,
    remember,
)

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
        An L{INotify<twisted.internet.inotify.INotify>} that tells its owner
        when its connection is lost.

        Twisted's L{INotify<twisted.internet.inotify.INotify>} loses its
        connection, and with it every watch, when a watched directory is
        deleted, or when a callback raises; this subclass calls
        C{on_lost(self, reason)} after the usual cleanup, so the owner can
        open a new one.
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
    #: IN_MODIFY and IN_CREATE (of a file, by open) begin one, IN_MOVED_TO
    #: is an editor's rename over the old file; IN_MOVE_SELF (and
    #: IN_DELETE_SELF, which Twisted always adds) concern the watched
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
    #: Events that end a change of an entry of a watched directory: it is
    #: reported once the settle window is over.
    _COMPLETE_MASK = (
        _inotify.IN_CLOSE_WRITE | _inotify.IN_DELETE | _inotify.IN_MOVED_FROM | _inotify.IN_MOVED_TO
    )
    #: Events about the watched directory itself, after which its watch is
    #: no longer good for its path.
    _SELF_MASK = (
        _inotify.IN_MOVE_SELF | _inotify.IN_DELETE_SELF | _inotify.IN_UNMOUNT | _inotify.IN_IGNORED
    )
    _APPEAR_MASK = _inotify.IN_CREATE | _inotify.IN_MOVED_TO


class SourceWatcher:
    """
    Watch directories of plugin sources and report changed paths, once a
    settle window has passed after the last complete save.

    @ivar mode: C{"inotify"} or C{"polling"}: how changes are noticed (it
        becomes C{"polling"} if inotify fails while the watcher runs and
        inotify was not forced).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        on_change: Callable[[FrozenSet[str]], object],
        debounce: float = 0.005,
        poll_interval: float = 0.25,
        use_inotify: bool | None = None,
    ) -> None:
        """
        @param reactor: the reactor: an L{IReactorTime} provider, and an
            L{IReactorFDSet} provider for inotify (a
            L{twisted.internet.task.Clock} gives polling).
        @param on_change: called with a C{frozenset} of the absolute paths
            changed since the last call, once C{debounce} seconds passed
            without a further complete save. A file still being written
            (with inotify) is not in it: it is reported once closed. If it
            raises or returns a Deferred that fails, the failure is logged.
        @param debounce: the settle window: seconds after the last complete
            save before reporting; several saves inside it give one report.
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
        self._listings: Dict[str, Listing] = {}
        self._unreadable: Set[str] = set()
        self._pending: Set[str] = set()
        # Paths being written (inotify saw the write begin, not end): held,
        # even when pending, until the writer closes them.
        self._writing: Set[str] = set()
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
        current contents are the baseline. Giving the same directories
        again does nothing.

        @param directories: paths (made absolute here).
        """
        targets = set()
        for directory in directories:
            path = os.path.abspath(os.fspath(directory))
            if os.path.basename(path) == "__pycache__":
                self._log.debug("Not watching {directory}: bytecode cache", directory=path)
                continue
            targets.add(path)
        ordered = tuple(sorted(targets))
        if self._running and ordered == self._targets:
            return
        self._targets = ordered
        for gone in self._listings.keys() - targets:
            del self._listings[gone]
        self._unreadable &= targets
        # A write in a directory no longer watched will not be seen to end.
        abandoned = {p for p in self._writing if os.path.dirname(p) not in targets}
        self._writing -= abandoned
        self._pending -= abandoned
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
        self._writing.clear()
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
        Remember paths whose change is complete (a save ended, an entry
        appeared or went away) and restart the settle window.
        """
        paths = set(paths)
        if not paths:
            return
        self._writing -= paths
        self._pending |= paths
        if self._quiet is not None and self._quiet.active():
            self._quiet.reset(self._debounce)
        else:
            self._quiet = self._reactor.callLater(self._debounce, self._report)

    def _being_written(self, paths: Iterable[str]) -> None:
        """
        Hold paths whose write began and has not ended: they are not
        reported until L{_changed} says it ended.
        """
        self._writing.update(paths)

    def _report(self) -> None:
        """
        The settle window is over: report what changed, except the files
        still being written.
        """
        self._quiet = None
        self._read_queued_events()
        if self._quiet is not None:
            # A save ended meanwhile: the window starts again.
            return
        paths = frozenset(self._pending - self._writing)
        self._pending &= self._writing
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
        Update the listings with what was just reported (see L{remember}).
        """
        remember(self._listings, paths)

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
            # A file that inotify saw being written stays held until it is
            # closed, whatever its listing says.
            held = {p for p in changed & self._writing if os.path.lexists(p)}
            self._pending |= held
            self._changed(changed - held)

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
        Note a change to an entry (complete, or a write in progress that
        holds it), or resync if a watched directory went away or a missing
        target may be back.
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
        is_dir = bool(mask & _inotify.IN_ISDIR)
        if not watch.targets or not is_reported_name(name, is_dir):
            return
        paths = [os.path.join(target, name) for target in watch.targets]
        if mask & _COMPLETE_MASK:
            self._changed(paths)
        elif mask & _inotify.IN_CREATE:
            if is_dir or _appears_whole(path):
                self._changed(paths)
            else:  # made by open(): complete when closed
                self._being_written(paths)
        elif mask & _inotify.IN_MODIFY:
            self._being_written(paths)

    def _read_queued_events(self) -> None:
        """
        Handle the inotify events already queued, before a report: a write
        that began before the window ended must hold its file, even when
        the reactor runs this timer before it reads the inotify descriptor
        (it runs due timers first). Errors reading are left to the
        reactor, which sees the descriptor readable and reads it itself.
        """
        notifier = self._notifier
        if notifier is None:
            return
        poller = select.poll()
        poller.register(notifier.fileno(), select.POLLIN)
        # Bounded: a writer faster than us must not keep us here.
        for _ in range(64):
            if self._notifier is not notifier or not poller.poll(0):
                return
            if notifier.doRead() is not None:
                return

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
