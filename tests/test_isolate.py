"""
Isolated plugins, with real worker processes: each test loads plugins into
a manager on the real reactor and checks what a user observes -- pids,
answers, errors, events, processes alive or gone.

Deadlines are short so the file stays fast; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from typing import Any, List

import pytest
import pytest_twisted
from _workers import until, workers
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from twisted_plugmgr import (
    CallTimedOut,
    CompileFailed,
    InvalidMetadata,
    IPlugin,
    PluginCrashed,
    PluginError,
    PluginManager,
    PluginState,
    RemoteError,
    ShutdownMode,
    ShutdownTimedOut,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="worker processes: Linux")

#: An isolated plugin with handlers for every test.
ISO = '''
import os, signal, ctypes
from twisted.internet.defer import Deferred
from twisted_plugmgr import Plugin, handler

class Iso(Plugin):
    name = "iso"
    version = "{version}"
    isolate = True
    seen = None

    def startService(self):
        super().startService()
        self.posts = []

    @handler("pid")
    def pid(self):
        return os.getpid()

    @handler("version")
    def get_version(self):
        return self.version

    @handler("ask")
    def ask(self, other, event):
        return self.api.call(other, event)

    @handler("tell")
    def tell(self, other, event, value):
        self.api.post(other, event, value)

    @handler("shout")
    def shout(self, event, value):
        return self.api.emit(event, value)

    @handler("posted")
    def posted(self, value):
        self.posts.append(value)

    @handler("posts")
    def get_posts(self):
        return self.posts

    @handler("ping", priority=5)
    def ping(self, value):
        return ("iso", value)

    @handler("hang")
    def hang(self):
        while True:
            pass

    @handler("exit")
    def exit_now(self, code):
        os._exit(code)

    @handler("segv")
    def segv(self):
        ctypes.string_at(0)

    @handler("boom")
    def boom(self):
        raise ValueError("boom")

    @handler("odd")
    def odd(self):
        class Local(Exception):
            pass
        raise Local("not picklable")

    @handler("lambda")
    def give_lambda(self):
        return lambda: None

    @handler("big")
    def big(self, megabytes):
        return len(bytearray(megabytes * 1024 * 1024))

    @handler("echo")
    def echo(self, value):
        return value

    @handler("reach")
    def reach(self, other):
        try:
            self.api.plugin(other)
        except Exception as e:
            return type(e).__name__ + ": " + str(e)
        return "reached"

    @handler("log")
    def log(self, who):
        self.api.log.info("hello {{who}}", who=who)
        import sys
        print("to stderr", who, file=sys.stderr)

    @handler("hang_shutdown")
    def hang_shutdown(self):
        type(self).stuck = True

    def shutdown(self, mode, reason):
        if getattr(self, "stuck", False):
            return Deferred()
        return "iso bye " + mode.value

    {extra}
'''

#: An in-process plugin that talks to the isolated one.
LOCAL = '''
import os
from twisted_plugmgr import Plugin, handler

class Local(Plugin):
    name = "local"
    version = "1"

    def startService(self):
        super().startService()
        self.got = []

    @handler("pid")
    def pid(self):
        return os.getpid()

    @handler("posted")
    def posted(self, value):
        self.got.append(value)

    @handler("got")
    def get_got(self):
        return self.got

    @handler("ping")
    def ping(self, value):
        return ("local", value)

    @handler("ask")
    def ask(self, other, event):
        return self.api.call(other, event)

    @handler("reach")
    def reach(self, other):
        try:
            self.api.plugin(other)
        except Exception as e:
            return type(e).__name__ + ": " + str(e)
        return "reached"
'''


def write(directory: Any, name: str, text: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(text))


def iso_source(version: str = "1", extra: str = "") -> str:
    return ISO.format(version=version, extra=textwrap.indent(textwrap.dedent(extra), "    ")
                      .strip())


def alive(pid: int) -> bool:
    """Whether process C{pid} exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def running(pid: int) -> bool:
    """Whether process C{pid} is on a CPU or ready to run (state R), not asleep."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "R"
    except OSError:
        return False


def children_state() -> List[str]:
    """The states of this process's children (Z for zombies)."""
    me = str(os.getpid())
    states = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            states.append(fields[0])
    return states




class Events:
    """The events a manager broadcasts, kept, with a wait for one."""

    def __init__(self, manager: PluginManager) -> None:
        self.seen: List[Any] = []
        self._waiters: List[Any] = []
        manager.register(self)

    def __call__(self, event: Any) -> None:
        self.seen.append(event)
        for waiter in list(self._waiters):
            kind, plugin, d = waiter
            if event.kind == kind and event.plugin == plugin:
                self._waiters.remove(waiter)
                d.callback(event)

    def next(self, kind: str, plugin: str) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append((kind, plugin, d))
        return d.addTimeout(15, reactor)

    def of(self, kind: str) -> List[Any]:
        return [e for e in self.seen if e.kind == kind]


@pytest.fixture
def plugins(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    write(directory, "iso", iso_source())
    write(directory, "local", LOCAL)
    return directory


@pytest.fixture
def manager(plugins):
    m = PluginManager(paths=[str(plugins)], reactor=reactor,
                      deadlines={"immediate": 0.5, "smart": 2, "lazy": 3},
                      restart_delay=0.0, old_code_grace=None)
    m.startService()
    yield m
    pytest_twisted.blockon(m.shutdown(ShutdownMode.IMMEDIATE))
    pytest_twisted.blockon(until_gone())  # fails if a zombie (or any child) is left


async def until_gone_async() -> None:
    # A worker just killed is a zombie until the reactor reaps it (and a
    # dying one has no command line already): wait until no child is left.
    await until(lambda: not children_state(), 5.0)


def until_gone() -> Deferred:
    return Deferred.fromCoroutine(until_gone_async())


# -- loading and answering --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_answer_comes_from_another_process(manager):
    """
    A plugin whose class says C{isolate = True} answers from a worker
    process: the plugin table says so, with the worker's pid.
    """
    instance = await manager.load("iso")
    pid = await manager.call("iso", "pid")
    assert pid != os.getpid()
    assert alive(pid)
    info = manager.info("iso")
    assert (info.isolated, info.pid, info.version) == (True, pid, "1")
    assert info.events and "pid" in info.events
    assert manager.info("iso").calls == 1
    verifyObject(IPlugin, instance)


@pytest_twisted.ensureDeferred
async def test_load_argument_isolates_a_plain_plugin(manager):
    """
    C{load(name, isolate=True)} isolates a plugin whose class does not say
    so; C{isolate=False} keeps an C{isolate = True} class in-process.
    """
    await manager.load("local", isolate=True)
    pid = await manager.call("local", "pid")
    assert pid != os.getpid() and manager.info("local").isolated
    await manager.load("iso", isolate=False)
    assert await manager.call("iso", "pid") == os.getpid()
    assert manager.info("iso").isolated is False and manager.info("iso").pid is None


@pytest_twisted.ensureDeferred
async def test_call_post_emit_both_ways(manager):
    """
    The isolated plugin calls, posts to and emits to in-process plugins,
    and they call it; an emit reaches both, by priority.
    """
    await manager.load("local")
    await manager.load("iso")
    assert await manager.call("iso", "ask", "local", "pid") == os.getpid()
    assert await manager.call("local", "ask", "iso", "pid") != os.getpid()
    assert await manager.emit("ping", 7) == [("iso", 7), ("local", 7)]
    assert await manager.call("iso", "shout", "ping", 8) == [("iso", 8), ("local", 8)]
    await manager.call("iso", "tell", "local", "posted", "hi")
    await until(lambda: manager.instance_of("local").got == ["hi"])
    manager.post("iso", "posted", "there")
    await until_posts(manager, ["there"])


async def until_posts(manager: PluginManager, expected: List[Any]) -> None:
    for _ in range(500):
        if await manager.call("iso", "posts") == expected:
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the post never arrived")


@pytest_twisted.ensureDeferred
async def test_large_values_cross(manager):
    """
    Arguments and results larger than one AMP value (64 KiB) cross whole.
    """
    await manager.load("iso")
    value = "x" * 300_000
    assert await manager.call("iso", "echo", value) == value


# -- errors across the boundary ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_exception_arrives_as_its_type(manager, logged_failures):
    """
    A handler's exception arrives as the same type, with the remote
    traceback; one that cannot be unpickled as L{RemoteError}.
    """
    await manager.load("iso")
    with pytest.raises(ValueError, match="boom") as info:
        await manager.call("iso", "boom")
    assert "raise ValueError" in info.value.remote_traceback
    with pytest.raises(RemoteError) as remote:
        await manager.call("iso", "odd")
    assert "Local" in remote.value.type_name and "not picklable" in remote.value.remote_traceback
    logged_failures.flush(ValueError, RemoteError)
    assert await manager.call("iso", "echo", 1) == 1  # still serving


@pytest_twisted.ensureDeferred
async def test_unpicklable_values_fail_that_call(manager, logged_failures):
    """
    An argument or a result that cannot be pickled fails that call with an
    error naming the handler; the plugin goes on serving.
    """
    await manager.load("iso")
    with pytest.raises(PluginError, match="handler echo: its arguments cannot be pickled"):
        await manager.call("iso", "echo", lambda: None)
    with pytest.raises(PluginError, match="handler give_lambda: its result cannot be pickled"):
        await manager.call("iso", "lambda")
    logged_failures.flush(PluginError)
    assert await manager.call("iso", "echo", 2) == 2


@pytest_twisted.ensureDeferred
async def test_live_reference_across_processes_refused(manager):
    """
    C{api.plugin()} across the process boundary is refused, either way,
    with an error naming both plugins and pointing to C{api.call}.
    """
    await manager.load("local")
    await manager.load("iso")
    from_local = await manager.call("local", "reach", "iso")
    from_iso = await manager.call("iso", "reach", "local")
    for text in (from_local, from_iso):
        assert text.startswith("PluginError") and "'iso'" in text and "'local'" in text
        assert "api.call" in text
    assert await manager.call("iso", "reach", "iso") == "reached"


@pytest_twisted.ensureDeferred
async def test_bad_isolation_options_refused(manager, logged_failures):
    """
    A bad C{isolate}, C{call_deadline} or C{limits} fails the load with an
    error naming it; nothing is left.
    """
    for options, word in (({"isolate": "yes"}, "isolate"), ({"call_deadline": -1}, "call_deadline"),
                          ({"limits": {"memory": 1}}, "limits key 'memory'"),
                          ({"limits": {"memory_mb": 0}}, "limits.memory_mb")):
        with pytest.raises(PluginError, match=word):
            await manager.load("iso", **options)
        assert "iso" not in manager.plugin_table()
    logged_failures.flush(PluginError)
    assert workers() == []


@pytest_twisted.ensureDeferred
async def test_bot_plugin_cannot_be_isolated(manager, plugins, logged_failures):
    """
    C{isolate} on an IRC bot plugin is refused, before any process starts.
    """
    write(plugins, "bot", '''
        from twisted_plugmgr.irc import BotPlugin

        class Bot(BotPlugin):
            name = "bot"
            version = "1"
            isolate = True
    ''')
    with pytest.raises(InvalidMetadata, match="BotPlugin"):
        await manager.load("bot")
    assert "bot" not in manager.plugin_table() and workers() == []
    logged_failures.flush(InvalidMetadata)


@pytest_twisted.ensureDeferred
async def test_compile_error_in_worker(manager, plugins, logged_failures):
    """
    An isolated plugin that fails to import fails its load with
    L{CompileFailed} (the traceback from the worker); no worker is left.
    """
    write(plugins, "iso", iso_source(extra="x = 1 / 0"))
    with pytest.raises(CompileFailed) as info:
        await manager.load("iso")
    assert "ZeroDivisionError" in info.value.failure.value.remote_traceback
    assert "iso" not in manager.plugin_table()
    logged_failures.flush(CompileFailed)
    await until_gone()


# -- deadlines and crashes ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hanging_handler_times_out_and_restarts(manager, plugins, logged_failures):
    """
    A handler stuck in C{while True: pass} fails with L{CallTimedOut} at its
    deadline while the other plugins answer, in the manager's process and
    in another worker; the plugin fails with cause C{timeout} and is
    restarted in a new worker.
    """
    events = Events(manager)
    write(plugins, "other", LOCAL.replace('name = "local"', 'name = "other"'))
    await manager.load("local")
    await manager.load("other", isolate=True)
    await manager.load("iso", call_deadline=1.0)
    first = await manager.call("iso", "pid")
    hanging = manager.call("iso", "hang")
    await until(lambda: running(first), 5.0)  # the worker spins in the hang
    # Served meanwhile, by a plugin in the manager and one in another worker.
    assert await manager.call("local", "pid") == os.getpid()
    assert await manager.call("other", "pid") not in (os.getpid(), first)
    assert not hanging.called
    started = events.next("plugin_started", "iso")
    with pytest.raises(CallTimedOut) as info:
        await hanging
    assert info.value.handler == "hang" and info.value.seconds == 1.0
    await started
    failed = events.of("plugin_failed")
    assert [(e.plugin, e.cause) for e in failed] == [("iso", "timeout")]
    second = await manager.call("iso", "pid")
    assert second != first and not alive(first)
    assert manager.info("iso").restarts == 1
    logged_failures.flush(CallTimedOut)


@pytest.mark.parametrize("handler, args, detail, check", [
    ("exit", (3,), "exit status 3", lambda e: e.exit_code == 3),
    ("segv", (), f"signal {int(signal.SIGSEGV)}", lambda e: e.signal == signal.SIGSEGV),
])
@pytest_twisted.ensureDeferred
async def test_crash_fails_calls_and_restarts(manager, logged_failures, handler, args, detail,
                                              check):
    """
    A worker that exits or dies of a signal in a handler: the call fails
    with L{PluginCrashed}, C{plugin_failed} (cause C{crash}) says the
    status or signal, and a restarted worker serves again.
    """
    events = Events(manager)
    await manager.load("iso")
    first = await manager.call("iso", "pid")
    started = events.next("plugin_started", "iso")
    with pytest.raises(PluginCrashed) as info:
        await manager.call("iso", handler, *args)
    assert check(info.value)
    await started
    (failed,) = events.of("plugin_failed")
    assert failed.cause == "crash" and detail in failed.message
    assert await manager.call("iso", "pid") not in (first, os.getpid())
    logged_failures.flush(PluginCrashed)


@pytest_twisted.ensureDeferred
async def test_restart_after_a_crash_takes_the_warm_spare(manager, logged_failures):
    """
    While an isolated plugin runs, one more worker waits warm; a crash
    restarts the plugin in that very process (no interpreter start), and
    another spare is started behind it.
    """
    events = Events(manager)
    await manager.load("iso")
    first = await manager.call("iso", "pid")
    await until(lambda: len(workers()) == 2)
    (spare,) = set(workers()) - {first}
    started = events.next("plugin_started", "iso")
    with pytest.raises(PluginCrashed):
        await manager.call("iso", "exit", 3)
    await started
    assert manager.info("iso").state is PluginState.RUNNING
    assert await manager.call("iso", "pid") == spare == manager.info("iso").pid
    await until(lambda: len(workers()) == 2 and first not in workers())
    logged_failures.flush(PluginCrashed)


@pytest.mark.parametrize("end", ["unload", "shutdown"])
@pytest_twisted.ensureDeferred
async def test_the_spare_goes_with_a_quarantined_plugin(manager, logged_failures, end):
    """
    A quarantined isolated plugin has no worker, but may be reset: the
    warm spare waits for it; once it is unloaded, or the manager shut
    down, no worker is left.
    """
    await manager.load("iso", restart="always", restart_burst=1, restart_interval=100)
    with pytest.raises(PluginCrashed):
        await manager.call("iso", "exit", 3)
    await until(lambda: manager.info("iso").restarts == 1 and
                manager.info("iso").state is PluginState.RUNNING)
    with pytest.raises(PluginCrashed):
        await manager.call("iso", "exit", 3)
    await until(lambda: manager.info("iso").state is PluginState.QUARANTINED)
    await until(lambda: len(workers()) == 1)  # the spare only
    if end == "unload":
        await manager.unload("iso")
    else:
        await manager.shutdown(ShutdownMode.IMMEDIATE)
    await until(lambda: not workers(), 5.0)
    logged_failures.flush(PluginCrashed)


@pytest_twisted.ensureDeferred
async def test_memory_limit(manager, logged_failures):
    """
    With C{limits = {memory_mb = ...}}, a handler allocating past it fails
    alone (C{MemoryError}, in its worker); the plugin and the others go on.
    """
    await manager.load("local")
    await manager.load("iso", limits={"memory_mb": 400})
    assert await manager.call("iso", "big", 10) == 10 * 1024 * 1024
    with pytest.raises((MemoryError, PluginCrashed)):
        await manager.call("iso", "big", 1024)
    logged_failures.flush(MemoryError, PluginCrashed)
    assert await manager.call("local", "pid") == os.getpid()
    await until(lambda: manager.info("iso").state.value == "running")
    assert await manager.call("iso", "echo", 3) == 3


# -- unload, shutdown, reload ------------------------------------------------


@pytest.mark.parametrize("mode", list(ShutdownMode))
@pytest_twisted.ensureDeferred
async def test_unload_in_each_mode(manager, mode):
    """
    Unloading an isolated plugin runs its C{shutdown} in its worker (its
    quit message comes back) and ends the worker.
    """
    await manager.load("iso")
    pid = await manager.call("iso", "pid")
    assert await manager.unload("iso", mode) == "iso bye " + mode.value
    assert not alive(pid)
    await until_gone()


@pytest_twisted.ensureDeferred
async def test_unload_past_deadline_kills_worker(manager, logged_failures):
    """
    A shutdown that never answers: the unload fails with
    L{ShutdownTimedOut} at the mode's deadline and the worker is killed.
    """
    await manager.load("iso")
    pid = await manager.call("iso", "pid")
    await manager.call("iso", "hang_shutdown")
    with pytest.raises(ShutdownTimedOut):
        await manager.unload("iso", ShutdownMode.IMMEDIATE)
    logged_failures.flush(ShutdownTimedOut)
    assert not alive(pid)


@pytest_twisted.ensureDeferred
async def test_shutdown_leaves_no_worker(manager):
    """
    The manager's shutdown ends every worker, the warm spare included.
    """
    await manager.load("iso")
    await manager.load("local", isolate=True)
    await until(lambda: len(workers()) == 3)  # two plugins and the spare
    await manager.shutdown()
    await until_gone()


@pytest_twisted.ensureDeferred
async def test_reload_carries_state_to_a_new_worker(manager, plugins):
    """
    A reload starts a new worker with the new code, which answers before
    the old one stops; the state is handed over (pickled) and migrated.
    """
    state = '''
        def get_state(self):
            return {"posts": self.posts, "pid": os.getpid()}

        def set_state(self, state):
            type(self).seen = state

        def migrate_state(self, old_version, state):
            return dict(state, migrated_from=old_version)

        @handler("seen")
        def get_seen(self):
            return self.seen
    '''
    write(plugins, "iso", iso_source("1", state + "\n        state_version = 1"))
    await manager.load("iso")
    old = await manager.call("iso", "pid")
    manager.post("iso", "posted", "kept")
    await until_posts(manager, ["kept"])
    write(plugins, "iso", iso_source("2", state + "\n        state_version = 2"))
    await manager.reload("iso")
    assert await manager.call("iso", "version") == "2"
    new = await manager.call("iso", "pid")
    assert new != old and not alive(old)
    assert await manager.call("iso", "seen") == {"posts": ["kept"], "pid": old,
                                                 "migrated_from": 1}
    assert manager.info("iso").reloads == 1


@pytest_twisted.ensureDeferred
async def test_reload_of_broken_code_keeps_the_old_worker(manager, plugins, logged_failures):
    """
    New code that does not import: the reload fails and the old worker,
    never stopped, goes on serving.
    """
    await manager.load("iso")
    old = await manager.call("iso", "pid")
    write(plugins, "iso", iso_source("2", "x = 1 / 0"))
    with pytest.raises(CompileFailed):
        await manager.reload("iso")
    assert await manager.call("iso", "pid") == old
    assert await manager.call("iso", "version") == "1"
    logged_failures.flush(CompileFailed)


@pytest_twisted.ensureDeferred
async def test_reload_many_with_an_isolated_plugin(manager, plugins):
    """
    An isolated plugin takes part in a transaction beside an in-process one.
    """
    await manager.load("local")
    await manager.load("iso")
    old = await manager.call("iso", "pid")
    write(plugins, "iso", iso_source("3"))
    result = await manager.reload_many(["iso", "local"])
    assert result["iso"] == "3"
    assert await manager.call("iso", "pid") != old
    assert await manager.emit("ping", 1) == [("iso", 1), ("local", 1)]


# -- logs ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_logs_and_stderr_arrive_under_the_plugin_namespace(manager):
    """
    What the plugin logs in its worker is re-emitted in the manager under
    its namespace, with its level and fields; its stderr line by line.
    """
    seen: List[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        await manager.load("iso")
        await manager.call("iso", "log", "world")
        await until(lambda: any(e.get("who") == "world" for e in seen)
                    and any(e.get("line") == "to stderr world" for e in seen))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    (logged,) = [e for e in seen if e.get("who") == "world"]
    assert logged["log_namespace"] == "twisted_plugmgr.plugins.iso"
    assert logged["log_level"].name == "info" and logged["log_format"] == "hello {who}"
    (line,) = [e for e in seen if e.get("line") == "to stderr world"]
    assert line["log_namespace"] == "twisted_plugmgr.plugins.iso"
    assert line["stream"] == "stderr" and line["log_level"].name == "warn"


# -- the manager killed ---------------------------------------------------------

MANAGER_SCRIPT = '''
import sys
from twisted.internet import reactor
from twisted_plugmgr import PluginManager

manager = PluginManager(paths=[sys.argv[1]], reactor=reactor)

def started(_):
    print(manager.info("iso").pid, flush=True)

def go():
    manager.startService()
    manager.load("iso").addCallback(started)

reactor.callWhenRunning(go)
reactor.run()
'''


@pytest_twisted.ensureDeferred
async def test_manager_killed_leaves_no_worker(plugins, tmp_path):
    """
    A manager killed with SIGKILL leaves no worker alive a second later
    (its worker and its spare notice their channel closing).
    """
    from twisted.internet.protocol import ProcessProtocol

    script = tmp_path / "manager.py"
    script.write_text(MANAGER_SCRIPT)
    output: Deferred = Deferred()
    ended: Deferred = Deferred()

    class Protocol(ProcessProtocol):
        def outReceived(self, data: bytes) -> None:
            if not output.called:
                output.callback(data)

        def processEnded(self, reason: Any) -> None:
            ended.callback(None)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    process = reactor.spawnProcess(Protocol(), sys.executable, [sys.executable, str(script),
                                                               str(plugins)], env=env)
    pid = int((await output.addTimeout(20, reactor)).split()[0])
    manager_pid = process.pid

    def its_workers() -> List[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if b"_isolate.worker" in cmdline and \
                    f"PLUGMGR_PARENT_PID={manager_pid}".encode() in environ and alive(int(entry)):
                found.append(int(entry))
        return found

    await until(lambda: len(its_workers()) == 2)  # the plugin's worker and the spare
    assert pid in its_workers()
    process.signalProcess("KILL")
    await ended
    await until(lambda: not its_workers(), 1.0)


# -- the config file and a real `twist plugmgr` ----------------------------------


def test_config_isolation_keys():
    """
    C{[plugins.NAME]} takes C{isolate}, C{call_deadline} and C{limits},
    given to the plugin's load.
    """
    from twisted_plugmgr._config import parse_config

    config = parse_config(textwrap.dedent('''
        [plugins.iso]
        isolate = true
        call_deadline = 2
        limits = { memory_mb = 256, open_files = 64 }

        [plugins.plain]
    '''), "plugmgr.toml", base_dir="/")
    assert config.plugins["iso"].isolation() == {
        "isolate": True, "call_deadline": 2.0, "limits": {"memory_mb": 256, "open_files": 64}}
    assert config.plugins["plain"].isolation() == {}


@pytest.mark.parametrize("body, key", [
    ('isolate = "yes"', "plugins.iso.isolate"),
    ("call_deadline = 0", "plugins.iso.call_deadline"),
    ("limits = { memory = 1 }", "plugins.iso.limits"),
    ("limits = { cpu_seconds = -1 }", "plugins.iso.limits"),
])
def test_config_bad_isolation_keys(body, key):
    """
    A bad isolation key in the config is a L{ConfigError} naming it.
    """
    from twisted_plugmgr._config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(f"[plugins.iso]\n{body}\n", "plugmgr.toml", base_dir="/")


@pytest_twisted.ensureDeferred
async def test_twist_plugmgr_runs_isolated_plugin_and_dies_with_it(tmp_path):
    """
    C{isolate = true} in the config of a real C{twist plugmgr}: the status
    shows the plugin isolated with its worker's pid; SIGKILLed, the
    service leaves no worker alive a second later.
    """
    import json

    from _processes import Daemon, make_home

    home = make_home(tmp_path, "[manager]\npaths = [\"plugins\"]\n\n[plugins.local]\n"
                               "isolate = true\ncall_deadline = 5\n")
    write(home / "plugins", "local", LOCAL)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    try:
        await daemon.ready()
        code, out, err = await daemon.cli("--json", "status")
        assert code == 0, err
        (row,) = [r for r in json.loads(out) if r["name"] == "local"]
        assert row["isolated"] is True and row["pid"] not in (None, daemon.transport.pid)
        worker = row["pid"]
        assert alive(worker)
        code, out, err = await daemon.cli("status")
        assert code == 0, err
        assert f"isolated: worker process {worker}" in out
        code, out, err = await daemon.cli("info", "local")
        assert code == 0, err
        assert f"worker process {worker}" in out
        daemon.signal("KILL")
        await daemon.ended()
        await until(lambda: not alive(worker), 1.0)
    finally:
        await daemon.kill()


# -- more of the plugin API across the boundary -----------------------------------


@pytest_twisted.ensureDeferred
async def test_requires_loads_the_requirement_first(manager, plugins):
    """
    An isolated plugin's literal C{requires} is honoured: the requirement is
    loaded first, and it is unloaded with it.
    """
    write(plugins, "iso", iso_source(extra='requires = ("local",)'))
    await manager.load("iso")
    assert manager.info("local").state.value == "running"
    assert await manager.call("iso", "ask", "local", "pid") == os.getpid()
    await manager.unload("local")
    assert "iso" not in manager.plugin_table()


@pytest_twisted.ensureDeferred
async def test_api_fail_in_worker_restarts_it(manager, plugins, logged_failures):
    """
    C{api.fail()} in the worker is a failure like any other (C{cause="fail"}):
    the plugin restarts in a new worker.
    """
    write(plugins, "iso", iso_source(extra='''
        @handler("break")
        def break_it(self):
            self.api.fail("upstream gone")
    '''))
    events = Events(manager)
    await manager.load("iso")
    first = await manager.call("iso", "pid")
    started = events.next("plugin_started", "iso")
    await manager.call("iso", "break")
    await started
    (failed,) = events.of("plugin_failed")
    assert failed.cause == "fail" and "upstream gone" in failed.message
    assert await manager.call("iso", "pid") != first
    logged_failures.flush(PluginError)


@pytest_twisted.ensureDeferred
async def test_api_stop_in_worker_unloads_it(manager, plugins):
    """
    C{api.stop()} in the worker ends the plugin as for any plugin: it is
    unloaded (C{stopped_itself}) and its worker ends.
    """
    write(plugins, "iso", iso_source(extra='''
        @handler("quit")
        def quit(self):
            self.api.stop("done here")
    '''))
    events = Events(manager)
    await manager.load("iso")
    pid = await manager.call("iso", "pid")
    unloaded = events.next("plugin_unloaded", "iso")
    await manager.call("iso", "quit")
    event = await unloaded
    assert event.reason == "stopped_itself" and event.quit_message == "iso bye smart"
    await until(lambda: not alive(pid))


@pytest_twisted.ensureDeferred
async def test_isolation_needs_a_reactor_with_processes(plugins, logged_failures):
    """
    On a reactor that cannot run processes (a L{Clock}), an isolated load
    fails with an error saying so; nothing is left.
    """
    from twisted.internet.task import Clock

    from twisted_plugmgr import InitFailed

    clock = Clock()
    m = PluginManager(paths=[str(plugins)], reactor=clock, old_code_grace=None)
    m.startService()
    failure = []
    m.load("iso").addErrback(failure.append)
    (f,) = failure
    assert f.check(InitFailed) and "IReactorProcess" in str(f.value)
    assert "iso" not in m.plugin_table() and workers() == []
    logged_failures.flush(InitFailed)
    m.shutdown()
    clock.advance(10)


@pytest_twisted.ensureDeferred
async def test_reload_whose_import_hangs_keeps_the_old_worker(plugins, logged_failures):
    """
    A new version whose import never ends (in its worker) fails the reload
    at the start deadline; the old worker, never stopped, serves again.
    """
    from twisted_plugmgr import StartTimedOut

    # The deadline also covers a cold worker's interpreter start (the first
    # load), which a loaded machine can take seconds for; the reload takes
    # the warm spare (waited for).
    m = PluginManager(paths=[str(plugins)], reactor=reactor, start_deadline=5.0,
                      old_code_grace=None)
    m.startService()
    try:
        await m.load("iso")
        old = await m.call("iso", "pid")
        await until(lambda: len(workers()) == 2)
        write(plugins, "iso", iso_source("2", "import time; time.sleep(60)"))
        with pytest.raises(StartTimedOut):
            await m.reload("iso")
        logged_failures.flush(StartTimedOut)
        assert await m.call("iso", "pid") == old
        assert await m.call("iso", "version") == "1"
    finally:
        await m.shutdown(ShutdownMode.IMMEDIATE)
    await until_gone()


@pytest_twisted.ensureDeferred
async def test_open_files_and_cpu_limits(manager, plugins, logged_failures):
    """
    C{open_files} and C{cpu_seconds} are applied in the worker: opening
    past the one fails there (C{OSError}), spinning past the other ends the
    worker (SIGXCPU: a crash, restarted).
    """
    write(plugins, "iso", iso_source(extra='''
        @handler("open_many")
        def open_many(self, n):
            return [open(os.devnull) for _ in range(n)] and n

        @handler("spin")
        def spin(self):
            while True:
                pass
    '''))
    events = Events(manager)
    await manager.load("iso", limits={"open_files": 64, "cpu_seconds": 1}, call_deadline=20)
    with pytest.raises(OSError):
        await manager.call("iso", "open_many", 100)
    started = events.next("plugin_started", "iso")
    with pytest.raises(PluginCrashed) as info:
        await manager.call("iso", "spin")
    assert info.value.signal in (signal.SIGXCPU, signal.SIGKILL)
    await started
    assert events.of("plugin_failed")[0].cause == "crash"
    logged_failures.flush(OSError, PluginCrashed)


@pytest_twisted.ensureDeferred
async def test_worker_ignoring_sigterm_is_killed_at_the_deadline(manager, plugins):
    """
    Unload ends the worker with SIGTERM; one that ignores it is killed with
    SIGKILL at the mode's deadline.
    """
    write(plugins, "iso", iso_source(extra='''
        @handler("deaf")
        def deaf(self):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    '''))
    await manager.load("iso")
    pid = await manager.call("iso", "pid")
    await manager.call("iso", "deaf")
    started = reactor.seconds()
    await manager.unload("iso", ShutdownMode.IMMEDIATE)  # its deadline: 0.5 s
    assert reactor.seconds() - started >= 0.4
    assert not alive(pid)


@pytest_twisted.ensureDeferred
async def test_reload_changed_sees_the_files_the_worker_compiled(manager, plugins):
    """
    C{reload_changed} reloads an isolated plugin whose source changed (the
    worker reported the hashes of what it compiled).
    """
    await manager.load("iso")
    assert await manager.reload_changed() == {}
    write(plugins, "iso", iso_source("4"))
    result = await manager.reload_changed()
    assert list(result) == ["iso"]
    assert await manager.call("iso", "version") == "4"


@pytest_twisted.ensureDeferred
async def test_time_in_the_worker_is_in_the_table(manager, plugins):
    """
    The time an isolated handler spends in its worker is in the plugin's
    C{busy_time} and C{longest_call}, as for any plugin (and the manager
    was not blocked meanwhile).
    """
    write(plugins, "iso", iso_source(extra='''
        @handler("slow")
        def slow(self):
            import time
            time.sleep(0.3)
            return "done"
    '''))
    await manager.load("local")
    await manager.load("iso")
    slow = manager.call("iso", "slow")
    assert await manager.call("local", "pid") == os.getpid()  # not blocked
    assert await slow == "done"
    info = manager.info("iso")
    assert info.calls == 1 and 0.3 <= info.longest_call < 5 and info.busy_time >= 0.3


@pytest_twisted.ensureDeferred
async def test_rollback_and_restart_run_the_code_that_was_running(manager, plugins,
                                                                   logged_failures):
    """
    A new version that fails to start is rolled back to the old code -- the
    code its worker compiled, not the file on disk -- in a fresh worker,
    with the state; a restart after a crash runs that code too.
    """
    state = '''
        def get_state(self):
            return {"kept": "yes"}

        def set_state(self, state):
            type(self).seen = state

        @handler("seen")
        def get_seen(self):
            return self.seen
    '''
    write(plugins, "iso", iso_source("1", state))
    await manager.load("iso")
    old = await manager.call("iso", "pid")
    write(plugins, "iso", iso_source("2", state + '''
        def startService(self):
            raise RuntimeError("version 2 does not start")
    '''))
    with pytest.raises(PluginError, match="does not start|startService"):
        await manager.reload("iso")
    assert await manager.call("iso", "version") == "1"
    assert await manager.call("iso", "seen") == {"kept": "yes"}
    rolled_back = await manager.call("iso", "pid")
    assert rolled_back != old
    events = Events(manager)
    started = events.next("plugin_started", "iso")
    with pytest.raises(PluginCrashed):
        await manager.call("iso", "exit", 1)
    await started
    assert await manager.call("iso", "version") == "1"  # not the file's "2"
    logged_failures.flush(RuntimeError, PluginCrashed, PluginError)


@pytest_twisted.ensureDeferred
async def test_stop_service_in_worker_ends_the_plugin(manager, plugins):
    """
    A plugin that calls its own C{stopService()} in its worker ends itself
    as in the manager: it is unloaded (C{stopped_itself}).
    """
    write(plugins, "iso", iso_source(extra='''
        @handler("stop_me")
        def stop_me(self):
            self.stopService()
    '''))
    events = Events(manager)
    await manager.load("iso")
    unloaded = events.next("plugin_unloaded", "iso")
    await manager.call("iso", "stop_me")
    assert (await unloaded).reason == "stopped_itself"
