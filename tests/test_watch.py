"""
Tests for L{twisted_plugmgr._watch}: polling and debounce on a L{Clock},
inotify on the real reactor (and, to time the settle window exactly, real
inotify read by the real reactor with a L{Clock}'s time), all on real files
in a temporary directory.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any, Callable, Dict, FrozenSet, Iterator, List, Set

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.logger import globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_plugmgr._watch import SourceWatcher, is_reported_name

try:
    from twisted.internet.inotify import INotify, INotifyError
except ImportError:  # not Linux
    INotify = INotifyError = None

needs_inotify = pytest.mark.skipif(
    INotify is None or not sys.platform.startswith("linux"), reason="inotify is not available"
)

# Binary-exact durations, so that Clock arithmetic is exact.
POLL = 0.125
DEBOUNCE = 0.5
#: The watcher's default settle window, which the inotify tests use.
WINDOW: float = inspect.signature(SourceWatcher.__init__).parameters["debounce"].default


class Reports:
    """
    An C{on_change} callback that keeps what it is given.
    """

    def __init__(self) -> None:
        self.calls: List[FrozenSet[str]] = []
        self.queue: DeferredQueue = DeferredQueue()

    def __call__(self, paths: FrozenSet[str]) -> None:
        self.calls.append(paths)
        self.queue.put(paths)

    async def next(self, timeout: float = 5.0) -> FrozenSet[str]:
        """
        Wait (on the real reactor, at most C{timeout} seconds) for the next
        report.
        """
        from twisted.internet import reactor

        d = self.queue.get()
        d.addTimeout(timeout, reactor)
        return await d

    async def until(self, *paths: Path) -> Set[str]:
        """
        Wait for reports until every one of C{paths} was reported; return
        the union of those reports.
        """
        expected = {str(p) for p in paths}
        seen: Set[str] = set()
        while not expected <= seen:
            seen |= await self.next()
        return seen


def write(path: Path, text: str) -> None:
    """
    Write a file in place, as C{echo > file} does.
    """
    with open(path, "w") as f:
        f.write(text)


def save_like_editor(path: Path, text: str) -> None:
    """
    Write a hidden temporary file beside C{path}, then rename it over
    C{path}, as editors do.
    """
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(temporary, text)
    os.replace(temporary, path)


def start_writing(path: Path, text: str) -> IO[str]:
    """
    Open C{path} for writing (truncating or creating it), write C{text} and
    flush it, and leave the file open: a save in progress. The caller
    closes it.
    """
    f = open(path, "w")
    f.write(text)
    f.flush()
    return f


def link_elsewhere(path: Path, text: str, link: Callable[[Path, Path], None]) -> None:
    """
    Write C{text} to a file outside the watched directory, then make
    C{path} a link to it with C{link(source, path)}.
    """
    source = path.parent.parent / f"elsewhere-{path.name}"
    write(source, text)
    link(source, path)


#: The ways to save a module: name -> save(path, text).
SAVE_STYLES: Dict[str, Callable[[Path, str], None]] = {
    "rename": save_like_editor,
    "in_place": write,
    "hard_link": lambda path, text: link_elsewhere(path, text, os.link),
    "symlink": lambda path, text: link_elsewhere(path, text, os.symlink),
}


def elapse(clock: Clock, seconds: float) -> None:
    """
    Let C{seconds} pass on C{clock}, in steps of L{POLL}, so that what each
    poll schedules runs in its turn.
    """
    steps, rest = divmod(seconds, POLL)
    assert rest == 0, seconds
    clock.pump([POLL] * int(steps))


def paths(*items: Path) -> FrozenSet[str]:
    return frozenset(str(p) for p in items)


def owned_calls(reactor: Any, watcher: SourceWatcher) -> List[Any]:
    """
    The delayed calls on C{reactor} that belong to C{watcher}.
    """
    found = []
    for call in reactor.getDelayedCalls():
        owner = getattr(call.func, "__self__", None)
        if isinstance(owner, LoopingCall):
            owner = getattr(owner.f, "__self__", None)
        if owner is watcher:
            found.append(call)
    return found


async def turns_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """
    Let the real reactor run, a turn at a time, until C{predicate()} is
    true; fail after C{seconds}.
    """
    from twisted.internet import reactor

    async def turns() -> None:
        while not predicate():
            await deferLater(reactor, 0, lambda: None)

    await Deferred.fromCoroutine(turns()).addTimeout(seconds, reactor)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """
    A plugin directory with one plugin module, C{hello.py}.
    """
    directory = tmp_path / "plugins"
    directory.mkdir()
    write(directory / "hello.py", "VERSION = 1\n")
    return directory


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def poller(clock: Clock, reports: Reports, plugins: Path) -> Iterator[SourceWatcher]:
    """
    A started polling watcher on a Clock, watching C{plugins}; at teardown it
    is stopped and must leave nothing on the Clock.
    """
    watcher = SourceWatcher(clock, reports, debounce=DEBOUNCE, poll_interval=POLL)
    watcher.set_targets([str(plugins)])
    watcher.start()
    yield watcher
    watcher.stop()
    assert clock.getDelayedCalls() == []


@pytest.fixture
def log_events() -> Iterator[List[dict]]:
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def make_inotify_watcher(reports: Reports, targets: List[Path], reactor: Any = None) -> SourceWatcher:
    if reactor is None:
        from twisted.internet import reactor

    watcher = SourceWatcher(reactor, reports, use_inotify=True)
    watcher.set_targets([str(t) for t in targets])
    watcher.start()
    return watcher


@implementer(IReactorTime, IReactorFDSet)
class ClockedReactor:
    """
    The real reactor's file descriptors with a L{Clock}'s time: inotify
    events are read by the real reactor as they come, and the settle window
    passes only when the test advances the clock.
    """

    def __init__(self, clock: Clock) -> None:
        from twisted.internet import reactor

        self.clock = clock
        self._reactor: Any = reactor

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, f, *args, **kw)

    def getDelayedCalls(self) -> Any:
        return self.clock.getDelayedCalls()

    def addReader(self, reader: Any) -> None:
        self._reactor.addReader(reader)

    def addWriter(self, writer: Any) -> None:
        self._reactor.addWriter(writer)

    def removeReader(self, reader: Any) -> None:
        self._reactor.removeReader(reader)

    def removeWriter(self, writer: Any) -> None:
        self._reactor.removeWriter(writer)

    def removeAll(self) -> Any:
        raise NotImplementedError("not the tests' to remove every reader")

    def getReaders(self) -> Any:
        return self._reactor.getReaders()

    def getWriters(self) -> Any:
        return self._reactor.getWriters()


@pytest.fixture
def clocked_watcher(clock: Clock, reports: Reports, plugins: Path) -> Iterator[SourceWatcher]:
    """
    A started inotify watcher on a L{ClockedReactor}, watching C{plugins},
    with the default settle window.
    """
    watcher = make_inotify_watcher(reports, [plugins], reactor=ClockedReactor(clock))
    yield watcher
    watcher.stop()
    assert clock.getDelayedCalls() == []
    assert_released(watcher)


async def window_started(clock: Clock) -> float:
    """
    Let the real reactor run until the watcher has seen a complete save
    (its report is scheduled on C{clock}); return when the report is due.
    """
    await turns_until(lambda: clock.getDelayedCalls() != [])
    [call] = clock.getDelayedCalls()
    return call.getTime()


async def window_restarted(clock: Clock, due: float) -> float:
    """
    Let the real reactor run until the watcher has seen a further complete
    save (its report, due at C{due}, was postponed); return when it is due.
    """
    await turns_until(lambda: [c.getTime() for c in clock.getDelayedCalls()] > [due])
    [call] = clock.getDelayedCalls()
    return call.getTime()


def assert_released(watcher: SourceWatcher) -> None:
    """
    C{watcher} has no reader and no delayed call left on the reactor.
    """
    from twisted.internet import reactor

    assert [r for r in reactor.getReaders() if isinstance(r, INotify)] == []
    assert owned_calls(reactor, watcher) == []


@pytest.fixture
def inotify_watcher(reports: Reports, plugins: Path) -> Iterator[SourceWatcher]:
    """
    A started inotify watcher on the real reactor, watching C{plugins}.
    """
    watcher = make_inotify_watcher(reports, [plugins])
    yield watcher
    watcher.stop()
    assert_released(watcher)


# -- names and construction --------------------------------------------------


@pytest.mark.parametrize(
    "name, is_dir, reported",
    [
        ("hello.py", False, True),
        ("pkg", True, True),
        ("__pycache__", True, False),
        ("hello.cpython-311.pyc", False, False),
        (".hello.py.swp", False, False),
        (".#hello.py", False, False),
        (".hello.py.tmp1234", False, False),
        ("hello.py~", False, False),
        ("4913", False, False),
        ("notes.txt", False, False),
        (".git", True, False),
    ],
)
def test_reported_names(name: str, is_dir: bool, reported: bool) -> None:
    """
    Only C{.py} files and directories are reported; caches, editor temporary
    and backup files are not.
    """
    assert is_reported_name(name, is_dir) is reported


def test_clock_gives_polling(clock: Clock, reports: Reports) -> None:
    """
    With a reactor that cannot watch file descriptors, the watcher polls.
    """
    assert SourceWatcher(clock, reports).mode == "polling"


def test_forced_inotify_needs_fd_reactor(clock: Clock, reports: Reports) -> None:
    """
    Forcing inotify with a reactor that cannot watch file descriptors fails
    at once.
    """
    with pytest.raises(ValueError, match="inotify is not available"):
        SourceWatcher(clock, reports, use_inotify=True)


def test_default_settle_window_is_5ms() -> None:
    """
    By default a report comes 5 ms after the last complete save.
    """
    assert WINDOW == 0.005


def test_clocked_reactor_provides_interfaces(clock: Clock) -> None:
    """
    The tests' L{ClockedReactor} is an L{IReactorTime} and an
    L{IReactorFDSet}, as the watcher needs for inotify.
    """
    reactor = ClockedReactor(clock)
    verifyObject(IReactorTime, reactor)
    verifyObject(IReactorFDSet, reactor)


def test_start_twice_refused(poller: SourceWatcher) -> None:
    """
    Starting a running watcher is an error.
    """
    with pytest.raises(RuntimeError, match="already running"):
        poller.start()


# -- polling and debounce, on a Clock ---------------------------------------


def test_poll_write_reported(poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports):
    """
    A write to a watched file is reported once the quiet period is over.
    """
    write(plugins / "hello.py", "VERSION = 22\n")
    clock.advance(POLL)
    assert reports.calls == []
    clock.advance(DEBOUNCE)
    assert reports.calls == [paths(plugins / "hello.py")]


def test_poll_no_change_no_report(poller: SourceWatcher, clock: Clock, reports: Reports):
    """
    Nothing is reported while nothing changes, and the existing files are
    not reported at start.
    """
    for _ in range(10):
        clock.advance(POLL)
    assert reports.calls == []


def test_poll_rename_over_reported(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    An editor's save (write a temporary file, rename it over the module) is
    reported under the module's name only.
    """
    save_like_editor(plugins / "hello.py", "VERSION = 2\n")
    elapse(clock, POLL + DEBOUNCE)
    assert reports.calls == [paths(plugins / "hello.py")]


def test_poll_new_and_removed_files(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    A new module and a removed one are reported together.
    """
    write(plugins / "new.py", "")
    (plugins / "hello.py").unlink()
    elapse(clock, POLL + DEBOUNCE)
    assert reports.calls == [paths(plugins / "new.py", plugins / "hello.py")]


def test_poll_new_directory_reported(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    A new subdirectory (a package) is reported, not its contents (it is not
    watched until it is given to L{SourceWatcher.set_targets}).
    """
    (plugins / "pkg").mkdir()
    write(plugins / "pkg" / "__init__.py", "")
    elapse(clock, POLL + DEBOUNCE)
    assert reports.calls == [paths(plugins / "pkg")]


def test_poll_ignored_names(poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports):
    """
    Bytecode, caches, editor swap, lock and backup files are not reported.
    """
    (plugins / "__pycache__").mkdir()
    write(plugins / "__pycache__" / "hello.cpython-311.pyc", "x")
    write(plugins / "hello.pyc", "x")
    write(plugins / ".hello.py.swp", "x")
    write(plugins / "hello.py~", "x")
    write(plugins / "4913", "")
    write(plugins / "README.txt", "x")
    elapse(clock, POLL + DEBOUNCE)
    shutil.rmtree(plugins / "__pycache__")
    elapse(clock, POLL + DEBOUNCE)
    assert reports.calls == []


def test_poll_burst_one_report(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    Ten saves, each seen by a different poll, each less than the debounce
    apart, give one report once quiet; every change restarts the quiet
    period.
    """
    for i in range(10):
        save_like_editor(plugins / "hello.py", f"VERSION = {i}\n" + "#" * i)
        write(plugins / f"m{i}.py", "")
        clock.advance(POLL)
    clock.advance(DEBOUNCE - POLL)
    assert reports.calls == []
    clock.advance(POLL)
    expected = {plugins / "hello.py"} | {plugins / f"m{i}.py" for i in range(10)}
    assert reports.calls == [paths(*expected)]


def test_poll_reports_later_changes(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    After a report, a further change is reported again: each report holds
    what changed since the previous one.
    """
    write(plugins / "hello.py", "VERSION = 2\n")
    elapse(clock, POLL + DEBOUNCE)
    write(plugins / "other.py", "")
    elapse(clock, POLL + DEBOUNCE)
    assert reports.calls == [paths(plugins / "hello.py"), paths(plugins / "other.py")]


def test_poll_stop_cancels_everything(clock: Clock, reports: Reports, plugins: Path) -> None:
    """
    L{SourceWatcher.stop} with a report pending cancels the report and the
    polling: nothing is left on the Clock and nothing is reported.
    """
    watcher = SourceWatcher(clock, reports, debounce=DEBOUNCE, poll_interval=POLL)
    watcher.set_targets([str(plugins)])
    watcher.start()
    write(plugins / "hello.py", "VERSION = 2222\n")
    clock.advance(POLL)
    assert len(clock.getDelayedCalls()) == 2  # the next poll, the report
    watcher.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert reports.calls == []
    watcher.stop()  # stopping twice is harmless


def test_poll_restart_after_stop(clock: Clock, reports: Reports, plugins: Path) -> None:
    """
    A stopped watcher can be started again; what changed while it was
    stopped is the new baseline, not reported.
    """
    watcher = SourceWatcher(clock, reports, debounce=DEBOUNCE, poll_interval=POLL)
    watcher.set_targets([str(plugins)])
    watcher.start()
    watcher.stop()
    write(plugins / "while_stopped.py", "")
    watcher.start()
    write(plugins / "hello.py", "VERSION = 2222\n")
    elapse(clock, POLL + DEBOUNCE)
    watcher.stop()
    assert reports.calls == [paths(plugins / "hello.py")]
    assert clock.getDelayedCalls() == []


def test_poll_set_targets_changes(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports, tmp_path: Path
):
    """
    L{SourceWatcher.set_targets} on a running watcher starts watching the
    new directories (their current contents are not reported) and stops
    watching the ones left out.
    """
    other = tmp_path / "other"
    other.mkdir()
    write(other / "old.py", "")
    poller.set_targets([str(other)])
    write(other / "new.py", "")
    write(plugins / "hello.py", "VERSION = 2222\n")
    elapse(clock, POLL + DEBOUNCE)
    assert reports.calls == [paths(other / "new.py")]


def test_poll_same_targets_again_does_nothing(
    poller: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    Giving the watched directories again does not list them again: a
    change is seen by the next poll, as if nothing had been given.
    """
    write(plugins / "hello.py", "VERSION = 2222\n")
    poller.set_targets([str(plugins)])
    elapse(clock, DEBOUNCE)  # the poll at POLL saw it: reported at POLL + DEBOUNCE
    assert reports.calls == []
    clock.advance(POLL)
    assert reports.calls == [paths(plugins / "hello.py")]


def test_poll_watched_dir_deleted_and_recreated(
    clock: Clock, reports: Reports, plugins: Path
) -> None:
    """
    A watched directory that is deleted is reported with its modules; when
    it comes back, it and its modules are reported, and it is watched again.
    """
    package = plugins / "pkg"
    package.mkdir()
    write(package / "__init__.py", "")
    watcher = SourceWatcher(clock, reports, debounce=DEBOUNCE, poll_interval=POLL)
    watcher.set_targets([str(package)])
    watcher.start()
    shutil.rmtree(package)
    elapse(clock, POLL + DEBOUNCE)
    package.mkdir()
    write(package / "mod.py", "")
    elapse(clock, POLL + DEBOUNCE)
    write(package / "mod.py", "changed")
    elapse(clock, POLL + DEBOUNCE)
    watcher.stop()
    assert reports.calls == [
        paths(package, package / "__init__.py"),
        paths(package, package / "mod.py"),
        paths(package / "mod.py"),
    ]


def test_poll_missing_target_appears(clock: Clock, reports: Reports, tmp_path: Path) -> None:
    """
    A target that does not exist yet is reported when it appears.
    """
    later = tmp_path / "later"
    watcher = SourceWatcher(clock, reports, debounce=DEBOUNCE, poll_interval=POLL)
    watcher.set_targets([str(later)])
    watcher.start()
    clock.advance(POLL)
    later.mkdir()
    write(later / "a.py", "")
    elapse(clock, POLL + DEBOUNCE)
    watcher.stop()
    assert reports.calls == [paths(later, later / "a.py")]


def test_poll_callback_failure_logged(clock: Clock, plugins: Path, logged_failures: Any) -> None:
    """
    An exception from C{on_change} is logged, and later changes are still
    reported.
    """
    calls = []

    def on_change(changed: FrozenSet[str]) -> None:
        calls.append(changed)
        raise ZeroDivisionError("plugin manager bug")

    watcher = SourceWatcher(clock, on_change, debounce=DEBOUNCE, poll_interval=POLL)
    watcher.set_targets([str(plugins)])
    watcher.start()
    write(plugins / "hello.py", "VERSION = 2222\n")
    elapse(clock, POLL + DEBOUNCE)
    write(plugins / "b.py", "")
    elapse(clock, POLL + DEBOUNCE)
    watcher.stop()
    assert calls == [paths(plugins / "hello.py"), paths(plugins / "b.py")]
    assert len(logged_failures.flush(ZeroDivisionError)) == 2


# -- inotify, on the real reactor --------------------------------------------


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_write_reported(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports
):
    """
    With inotify, a write to a watched file is reported.
    """
    assert inotify_watcher.mode == "inotify"
    write(plugins / "hello.py", "VERSION = 2\n")
    assert await reports.next() == paths(plugins / "hello.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_rename_over_reported(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports
):
    """
    With inotify, an editor's save (a temporary file renamed over the
    module) is reported under the module's name only.
    """
    save_like_editor(plugins / "hello.py", "VERSION = 2\n")
    assert await reports.next() == paths(plugins / "hello.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_burst_one_report(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports
):
    """
    With inotify, ten quick saves give one report: the next report is about
    the next change only.
    """
    for i in range(10):
        save_like_editor(plugins / "hello.py", f"VERSION = {i}\n")
    assert await reports.next() == paths(plugins / "hello.py")
    write(plugins / "marker.py", "")
    assert await reports.next() == paths(plugins / "marker.py")


@needs_inotify
@pytest.mark.parametrize("style", sorted(SAVE_STYLES))
@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
@pytest_twisted.ensureDeferred
async def test_inotify_each_save_one_report(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports, style: str, existing: bool
):
    """
    Each way to save a module, over an existing one or as a new one, gives
    exactly one report: the next report is about the next save only.
    """
    path = plugins / ("hello.py" if existing else "new.py")
    if style in ("hard_link", "symlink") and existing:
        path.unlink()  # a link is made where nothing is
        assert await reports.next() == paths(path)
    SAVE_STYLES[style](path, "VERSION = 2\n")
    assert await reports.next() == paths(path)
    write(plugins / "marker.py", "")
    assert await reports.next() == paths(plugins / "marker.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_write_in_chunks_reported_once_closed(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports
):
    """
    A module written in two chunks, with a pause longer than the settle
    window between them, is reported once, after it is closed: a save that
    ends (C{marker.py}) after each chunk is reported alone.
    """

    module = plugins / "hello.py"
    f = start_writing(module, "VERSION = 2\n")
    try:
        write(plugins / "marker.py", "")
        assert await reports.next() == paths(plugins / "marker.py")
        # The marker's report came a settle window after it: the pause is longer.
        f.write("def later():\n    return 2\n")
        f.flush()
        write(plugins / "marker.py", "# 2")
        assert await reports.next() == paths(plugins / "marker.py")
    finally:
        f.close()
    assert await reports.next() == paths(module)
    write(plugins / "marker.py", "# 3")
    assert await reports.next() == paths(plugins / "marker.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_half_written_file_never_reported(
    reports: Reports, plugins: Path
):
    """
    Files opened, written in part (or not yet) and not closed (a module
    rewritten in place, a new module, a new module still empty) are never
    reported, however long they stay so.
    """

    watcher = make_inotify_watcher(reports, [plugins])
    half_written = [
        start_writing(plugins / "hello.py", "VERSION = 2\n"),
        start_writing(plugins / "new.py", "def f(\n"),
        start_writing(plugins / "empty.py", ""),
    ]
    try:
        write(plugins / "marker.py", "")
        assert await reports.next() == paths(plugins / "marker.py")
        # The marker's report came a settle window after it: the pause is longer.
        write(plugins / "marker.py", "# 2")
        assert await reports.next() == paths(plugins / "marker.py")
    finally:
        watcher.stop()
        for f in half_written:
            f.close()
    assert_released(watcher)
    assert reports.calls == [paths(plugins / "marker.py")] * 2


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_relisting_holds_file_being_written(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports, tmp_path: Path
):
    """
    A module being written is not reported when the watcher lists its
    directory again (new targets are given while it is written, before and
    after the watcher saw the write begin), only once it is closed.
    """
    other = tmp_path / "other"
    other.mkdir()
    f = start_writing(plugins / "hello.py", "VERSION = 2\n")
    try:
        write(plugins / "marker.py", "")
        assert await reports.next() == paths(plugins / "marker.py")
        inotify_watcher.set_targets([str(plugins), str(other)])
        write(other / "marker.py", "")
        assert await reports.next() == paths(other / "marker.py")
        f.write("# more\n")
        f.flush()
        inotify_watcher.set_targets([str(plugins)])  # before the event is read
        write(plugins / "marker.py", "# 2")
        assert await reports.next() == paths(plugins / "marker.py")
    finally:
        f.close()
    assert await reports.next() == paths(plugins / "hello.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_window_gathers_saves(
    clocked_watcher: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    Saves that each end within the settle window of the previous one give
    one report, a window after the last one; each way to save counts.
    """
    save_like_editor(plugins / "hello.py", "VERSION = 2\n")
    due = await window_started(clock)
    clock.advance(0.8 * WINDOW)
    write(plugins / "new.py", "")
    due = await window_restarted(clock, due)
    clock.advance(0.8 * WINDOW)
    write(plugins / "hello.py", "VERSION = 3\n")
    await window_restarted(clock, due)
    clock.advance(0.8 * WINDOW)
    assert reports.calls == []
    clock.advance(0.4 * WINDOW)
    assert reports.calls == [paths(plugins / "hello.py", plugins / "new.py")]


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_several_files_saved_together_one_report(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports
):
    """
    Several modules saved together (as a checkout or "save all" does), in
    different ways, give one report.
    """
    save_like_editor(plugins / "hello.py", "VERSION = 2\n")
    write(plugins / "a.py", "A = 1\n")
    write(plugins / "b.py", "B = 1\n")
    (plugins / "b.py").unlink()
    assert await reports.next() == paths(plugins / "hello.py", plugins / "a.py", plugins / "b.py")
    write(plugins / "marker.py", "")
    assert await reports.next() == paths(plugins / "marker.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_write_begun_as_window_ends_holds_file(
    clocked_watcher: SourceWatcher, clock: Clock, plugins: Path, reports: Reports
):
    """
    A write that begins after a complete save, before its report is due,
    holds the file even when the report's timer runs before the reactor
    reads the inotify events (here the clock is advanced with no reactor
    turn between): the file is reported once, when the write ends.
    """
    module = plugins / "hello.py"
    save_like_editor(module, "VERSION = 2\n")
    await window_started(clock)
    f = start_writing(module, "VERSION = 3\n")
    try:
        clock.advance(WINDOW)
        assert reports.calls == []
    finally:
        f.close()
    await window_started(clock)
    clock.advance(WINDOW)
    assert reports.calls == [paths(module)]


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_new_and_removed_files(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports
):
    """
    With inotify, a new module and a removed one are reported; editor swap
    files and bytecode are not.
    """
    write(plugins / ".new.py.swp", "x")
    write(plugins / "new.py", "")
    (plugins / "hello.py").unlink()
    write(plugins / "new.pyc", "x")
    assert await reports.next() == paths(plugins / "new.py", plugins / "hello.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_pycache_deleted_then_write_reported(
    reports: Reports, plugins: Path, log_events: List[dict]
):
    """
    Deleting C{__pycache__} directories (in a watched directory and in a
    watched package, even one given as a target) does not disturb the
    watcher: a later write is reported, and inotify was never reopened.
    """
    package = plugins / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (plugins / "__pycache__").mkdir()
    write(package / "__init__.py", "")
    write(package / "__pycache__" / "__init__.cpython-311.pyc", "x")
    write(plugins / "__pycache__" / "hello.cpython-311.pyc", "x")
    watcher = make_inotify_watcher(reports, [plugins, package, package / "__pycache__"])
    try:
        shutil.rmtree(package / "__pycache__")
        shutil.rmtree(plugins / "__pycache__")
        write(package / "__init__.py", "X = 1\n")
        write(plugins / "hello.py", "VERSION = 2\n")
        assert await reports.next() == paths(package / "__init__.py", plugins / "hello.py")
    finally:
        watcher.stop()
    assert_released(watcher)
    assert not [e for e in log_events if "reopening" in e.get("log_format", "")]


@needs_inotify
@pytest.mark.parametrize("parent_watched", [True, False])
@pytest_twisted.ensureDeferred
async def test_inotify_watched_dir_deleted_and_recreated(
    reports: Reports, plugins: Path, log_events: List[dict], parent_watched: bool
):
    """
    Deleting a watched directory makes Twisted drop the inotify connection;
    the watcher reopens it, reports the deleted directory and its modules,
    reports it again when it is re-created, and keeps reporting writes in it
    and beside it.
    """
    package = plugins / "pkg"
    package.mkdir()
    write(package / "__init__.py", "")
    targets = [plugins, package] if parent_watched else [package]
    watcher = make_inotify_watcher(reports, targets)
    try:
        shutil.rmtree(package)
        seen = await reports.until(package, package / "__init__.py")
        assert seen <= paths(package, package / "__init__.py")
        assert [e for e in log_events if "reopening" in e.get("log_format", "")]

        package.mkdir()
        write(package / "mod.py", "")
        seen = await reports.until(package, package / "mod.py")
        assert seen <= paths(package, package / "mod.py")

        save_like_editor(package / "mod.py", "X = 2\n")
        assert await reports.next() == paths(package / "mod.py")
        if parent_watched:
            write(plugins / "hello.py", "VERSION = 2\n")
            assert await reports.next() == paths(plugins / "hello.py")
        assert watcher.mode == "inotify"
    finally:
        watcher.stop()
    assert_released(watcher)


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_watched_dir_moved_away_and_back(
    reports: Reports, plugins: Path, tmp_path: Path
):
    """
    A watched directory renamed away is reported as gone (its watch no
    longer follows the path); renamed back, it is watched again.
    """
    package = plugins / "pkg"
    package.mkdir()
    write(package / "__init__.py", "")
    watcher = make_inotify_watcher(reports, [package])
    try:
        os.rename(package, tmp_path / "elsewhere")
        await reports.until(package, package / "__init__.py")
        write(tmp_path / "elsewhere" / "__init__.py", "X = 1\n")  # not watched
        os.rename(tmp_path / "elsewhere", package)
        await reports.until(package, package / "__init__.py")
        write(package / "__init__.py", "X = 2\n")
        assert await reports.next() == paths(package / "__init__.py")
    finally:
        watcher.stop()
    assert_released(watcher)


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_missing_target_appears(reports: Reports, tmp_path: Path):
    """
    With inotify, a target that does not exist yet (two levels deep) is
    reported when it appears, and watched from then on.
    """
    target = tmp_path / "a" / "plugins"
    watcher = make_inotify_watcher(reports, [target])
    try:
        target.mkdir(parents=True)
        await reports.until(target)
        write(target / "x.py", "")
        await reports.until(target / "x.py")
    finally:
        watcher.stop()
    assert_released(watcher)


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_set_targets_changes(
    inotify_watcher: SourceWatcher, plugins: Path, reports: Reports, tmp_path: Path
):
    """
    With inotify, L{SourceWatcher.set_targets} starts watching new
    directories and stops watching the ones left out.
    """
    other = tmp_path / "other"
    other.mkdir()
    inotify_watcher.set_targets([str(other)])
    write(plugins / "hello.py", "VERSION = 2\n")
    write(other / "new.py", "")
    assert await reports.next() == paths(other / "new.py")


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_stop_releases_reactor(reports: Reports, plugins: Path) -> None:
    """
    L{SourceWatcher.stop} with a report pending closes inotify and cancels
    the report.
    """
    from twisted.internet import reactor

    watcher = SourceWatcher(reactor, reports, debounce=60, use_inotify=True)
    watcher.set_targets([str(plugins)])
    watcher.start()
    write(plugins / "hello.py", "VERSION = 2\n")
    await turns_until(lambda: owned_calls(reactor, watcher) != [])  # the report, in 60s
    watcher.stop()
    assert_released(watcher)
    assert reports.calls == []


@needs_inotify
@pytest_twisted.ensureDeferred
async def test_inotify_failure_falls_back_to_polling(
    reports: Reports, plugins: Path, monkeypatch: pytest.MonkeyPatch, logged_failures: Any
):
    """
    If inotify cannot be used and was not forced, the watcher logs why and
    polls instead.
    """
    from twisted.internet import reactor

    def broken(*args: object, **kwargs: object) -> None:
        raise INotifyError("too many inotify instances")

    monkeypatch.setattr(INotify, "__init__", broken)
    watcher = SourceWatcher(reactor, reports, poll_interval=0.02)
    watcher.set_targets([str(plugins)])
    assert watcher.mode == "inotify"
    watcher.start()
    try:
        assert watcher.mode == "polling"
        [failure] = logged_failures.flush(INotifyError)
        write(plugins / "hello.py", "VERSION = 2222\n")
        assert await reports.next() == paths(plugins / "hello.py")
    finally:
        watcher.stop()
    assert_released(watcher)


@needs_inotify
def test_forced_inotify_failure_raises_at_start(
    reports: Reports, plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    If inotify was forced and cannot be used, L{SourceWatcher.start} raises
    and the watcher stays stopped.
    """
    from twisted.internet import reactor

    def broken(*args: object, **kwargs: object) -> None:
        raise INotifyError("too many inotify instances")

    monkeypatch.setattr(INotify, "__init__", broken)
    watcher = SourceWatcher(reactor, reports, use_inotify=True)
    watcher.set_targets([str(plugins)])
    with pytest.raises(INotifyError):
        watcher.start()
    assert_released(watcher)
    with pytest.raises(INotifyError):
        watcher.start()  # not "already running"
