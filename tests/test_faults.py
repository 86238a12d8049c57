"""
Fault tolerance: every fault a plugin can make, from the issue's list "Faults
to survive", each with a test. After each fault: the right event, the right
error to the caller, nothing left half-loaded, and the manager still serving
the other plugins (a C{witness} plugin loaded in every test).

Everything runs on a L{task.Clock}; the time a handler "blocks" is measured
with a fake timer that the handler itself moves forward, so no test busy
loops.

Tests marked C{xfail(strict=True, reason="BUG: ...")} expose bugs of the
library; the lead removes the mark with the fix.
"""

from __future__ import annotations

import gc
import sys
import textwrap
import types

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from twisted_plugmgr import (
    CompileFailed,
    HandlerAbandoned,
    InitFailed,
    InvalidMetadata,
    ManagerStopped,
    NoSuchPlugin,
    PluginState,
    ShutdownFailed,
    ShutdownMode,
    ShutdownTimedOut,
    StartTimedOut,
)
from twisted_plugmgr.testing import clock_manager, failure_of, plugin_modules, result_of, write_plugin

#: A module the test plugins import to reach the test: the fake timer
#: (C{timer}), a clock of their own (C{clock}).
HELPER = "plugmgr_faults_helper"
helper = sys.modules.setdefault(HELPER, types.ModuleType(HELPER))


class FakeTimer:
    """
    The manager's C{timer}: a number that the plugins move forward to
    pretend they blocked the reactor.
    """

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


WITNESS = """
@handler()
def echo(self, value):
    return ("witness", value)

@handler("shout")
def shout(self, value):
    return "witness"
"""


@pytest.fixture
def witnessed(plugdir):
    """
    A started manager on a Clock with a fake timer, and a witness plugin
    loaded. At the end: a clean shutdown, nothing on the clock, nothing of
    the plugins in C{sys.modules}.
    """
    helper.timer = FakeTimer()
    manager, clock, events = clock_manager(paths=[plugdir], timer=helper.timer,
                                           deadlines={"immediate": 1, "smart": 3, "lazy": 6})
    write_plugin(plugdir, "witness", WITNESS)
    result_of(manager.load("witness"))
    events.clear()
    yield manager, clock, events, plugdir
    d = manager.shutdown(ShutdownMode.IMMEDIATE)
    clock.advance(5)
    result_of(d)
    assert clock.getDelayedCalls() == []
    assert plugin_modules(manager) == []


def assert_nothing_left(manager, name):
    """
    Nothing of plugin C{name}: not in the table, not a child service, no
    module.
    """
    assert name not in manager.plugin_table()
    assert not [s for s in manager.services if getattr(s, "name", None) == name]
    assert name not in manager.namedServices
    assert not [m for m in plugin_modules(manager) if m.endswith("__" + name)]


def has_result(d):
    """
    Whether C{d} has its final result (C{d.called} is also true while it
    waits on another Deferred).
    """
    box = []
    d.addBoth(lambda result: box.append(result) or result)
    return bool(box)


def assert_still_serving(manager):
    """
    The witness plugin still answers calls and emits.
    """
    assert result_of(manager.call("witness", "echo", 1)) == ("witness", 1)
    assert "witness" in result_of(manager.emit("shout", 2))
    assert manager.plugin_table()["witness"].state is PluginState.RUNNING


# -- faults in the constructor ---------------------------------------------


@pytest.mark.parametrize("raised", ["ValueError('no')", "SystemExit(2)"])
def test_constructor_raising(witnessed, logged_failures, raised):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "ctor", f"def __init__(self, api, data):\n    raise {raised}\n")
    failure = failure_of(manager.load("ctor"), InitFailed)
    assert failure.value.failure.type.__name__ == raised.split("(")[0]
    assert events.kinds("ctor") == ["plugin_init_failed"]
    assert_nothing_left(manager, "ctor")
    assert_still_serving(manager)
    logged_failures.flush(InitFailed)


def test_constructor_returning_a_failing_deferred(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "ctor", header="from twisted.internet.defer import fail\n",
                 body="def __init__(self, api, data):\n    return fail(ValueError('no'))\n")
    failure = failure_of(manager.load("ctor"), InitFailed)
    # Python refuses an __init__ that returns anything but None.
    assert failure.value.failure.check(TypeError)
    assert events.kinds("ctor") == ["plugin_init_failed"]
    assert_nothing_left(manager, "ctor")
    assert_still_serving(manager)
    # The plugin's own Deferred, which nobody could see, is the plugin's.
    logged_failures.flush(InitFailed, ValueError)


def test_constructor_timers_are_cancelled(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "ctor", """
        def __init__(self, api, data):
            api.reactor.callLater(5, print, "never")
            raise ValueError("after starting a timer")
    """)
    failure_of(manager.load("ctor"), InitFailed)
    assert clock.getDelayedCalls() == []
    assert_nothing_left(manager, "ctor")
    logged_failures.flush(InitFailed)


# -- faults in startService ------------------------------------------------


START_HEADER = "from twisted.internet.defer import fail\nfrom twisted.internet.task import deferLater\n"


@pytest.mark.parametrize("body, raised", [
    ("raise RuntimeError('cannot start')", RuntimeError),
    ("raise SystemExit(1)", SystemExit),
    ("return fail(RuntimeError('cannot start'))", RuntimeError),
])
def test_start_failing(witnessed, logged_failures, body, raised):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "badstart", f"def startService(self):\n    {body}\n",
                 header=START_HEADER)
    failure = failure_of(manager.load("badstart"), InitFailed)
    assert failure.value.failure.check(raised)
    assert events.kinds("badstart") == ["plugin_init_failed"]
    assert_nothing_left(manager, "badstart")
    assert_still_serving(manager)
    logged_failures.flush(InitFailed)


def test_start_failing_later_fails_the_messages_it_held(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "badstart", header=START_HEADER, body="""
        def startService(self):
            return deferLater(self.api.reactor, 1, lambda: 1 / 0)
    """)
    d = manager.load("badstart")
    assert manager.post("badstart", "anything") is None
    called = manager.call("badstart", "anything")
    clock.advance(1)
    failure = failure_of(d, InitFailed)
    assert failure.value.failure.check(ZeroDivisionError)
    failure_of(called, NoSuchPlugin)
    # The held post is reported, not lost.
    assert events.kinds("badstart") == ["plugin_error", "plugin_init_failed"]
    assert events.of("plugin_error")[0].failure.check(NoSuchPlugin)
    assert_nothing_left(manager, "badstart")
    assert_still_serving(manager)
    logged_failures.flush(InitFailed, NoSuchPlugin)


def test_start_never_firing_ends_at_the_default_deadline(plugdir, logged_failures):
    manager, clock, events = clock_manager(paths=[plugdir])
    assert manager.start_deadline == 30
    write_plugin(plugdir, "hang", header="from twisted.internet.defer import Deferred\n",
                 body="def startService(self):\n    return Deferred()\n")
    d = manager.load("hang")
    clock.advance(29.9)
    assert not d.called
    assert manager.plugin_table()["hang"].state is PluginState.STARTING
    clock.advance(0.1)
    failure = failure_of(d, InitFailed)
    assert failure.value.failure.check(StartTimedOut)
    assert events.kinds("hang") == ["plugin_init_failed"]
    assert_nothing_left(manager, "hang")
    # Its slot is free: a fixed version loads under the same name.
    write_plugin(plugdir, "hang")
    assert result_of(manager.load("hang")).running
    result_of(manager.shutdown())
    logged_failures.flush(InitFailed)


def test_start_deadline_is_configurable(plugdir, logged_failures):
    manager, clock, events = clock_manager(paths=[plugdir], start_deadline=2)
    write_plugin(plugdir, "hang", header="from twisted.internet.defer import Deferred\n",
                 body="def startService(self):\n    return Deferred()\n")
    d = manager.load("hang")
    clock.advance(2)
    assert failure_of(d, InitFailed).value.failure.value.seconds == 2
    assert clock.getDelayedCalls() == []
    result_of(manager.shutdown())
    logged_failures.flush(InitFailed)


# -- faults in handlers ----------------------------------------------------

FAULTY_HANDLERS = """
@handler()
def boom(self):
    raise ValueError("handler raised")

@handler()
def async_boom(self):
    return fail(KeyError("handler failed later"))

@handler()
def leave(self):
    raise SystemExit(3)

@handler()
def fine(self):
    return "fine"
"""


@pytest.fixture
def faulty(witnessed):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "faulty", FAULTY_HANDLERS,
                 header="from twisted.internet.defer import fail\n")
    result_of(manager.load("faulty"))
    events.clear()
    return witnessed


@pytest.mark.parametrize("event, raised", [
    ("boom", ValueError), ("async_boom", KeyError), ("leave", SystemExit),
])
def test_call_to_failing_handler(faulty, logged_failures, event, raised):
    manager, clock, events, plugdir = faulty
    failure_of(manager.call("faulty", event), raised)
    [error] = events.of("plugin_error")
    assert error.plugin == "faulty" and error.failure.check(raised)
    assert result_of(manager.call("faulty", "fine")) == "fine"
    assert manager.plugin_table()["faulty"].state is PluginState.RUNNING
    assert_still_serving(manager)
    logged_failures.flush(raised)


@pytest.mark.parametrize("event, raised", [
    ("boom", ValueError), ("async_boom", KeyError), ("leave", SystemExit),
])
def test_post_to_failing_handler(faulty, logged_failures, event, raised):
    manager, clock, events, plugdir = faulty
    assert manager.post("faulty", event) is None
    manager.post("faulty", "fine")
    clock.advance(0)
    [error] = events.of("plugin_error")
    assert error.plugin == "faulty" and error.failure.check(raised)
    assert manager.plugin_table()["faulty"].calls == 2
    assert_still_serving(manager)
    logged_failures.flush(raised)


@pytest.mark.parametrize("raised", [ValueError, KeyError, SystemExit])
def test_emit_with_failing_handler(witnessed, logged_failures, raised):
    manager, clock, events, plugdir = witnessed
    body = {
        ValueError: "raise ValueError('emit handler raised')",
        KeyError: "return fail(KeyError('emit handler failed later'))",
        SystemExit: "raise SystemExit(3)",
    }[raised]
    write_plugin(plugdir, "loud", f"@handler('shout', priority=5)\ndef shout(self, value):\n"
                 f"    {body}\n", header="from twisted.internet.defer import fail\n")
    result_of(manager.load("loud"))
    assert result_of(manager.emit("shout", 1)) == ["witness"]
    [error] = events.of("plugin_error")
    assert error.plugin == "loud" and error.failure.check(raised)
    assert_still_serving(manager)
    logged_failures.flush(raised)


def test_sys_exit_at_import(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    (plugdir / "quitter.py").write_text("import sys\nsys.exit('leaving at import')\n")
    failure = failure_of(manager.load("quitter"), CompileFailed)
    assert failure.value.failure.check(SystemExit)
    assert_nothing_left(manager, "quitter")
    assert_still_serving(manager)
    logged_failures.flush(CompileFailed)


def test_reactor_stop_is_not_prevented(plugdir):
    """
    A plugin's reactor is the manager's reactor with bookkeeping: C{stop}
    goes through to it. The README says so: this cannot be prevented.
    """
    class StoppableClock(Clock):
        stopped = 0

        def stop(self):
            self.stopped += 1

    clock = StoppableClock()
    from twisted_plugmgr import PluginManager

    manager = PluginManager(paths=[str(plugdir)], reactor=clock)
    manager.startService()
    write_plugin(plugdir, "stopper", "@handler()\ndef stop(self):\n    self.api.reactor.stop()\n")
    result_of(manager.load("stopper"))
    result_of(manager.call("stopper", "stop"))
    assert clock.stopped == 1
    result_of(manager.shutdown())


ASYNC_HANDLER = """
@handler("shout", priority=5)
def shout(self, value):
    return deferLater(self.api.reactor, 5, lambda: "late")

@handler()
def ask(self):
    return deferLater(self.api.reactor, 5, lambda: "late")
"""


@pytest.mark.parametrize("how", ["unload", "reload"])
def test_handler_waiting_on_its_timer_when_unloaded(witnessed, logged_failures, how):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "waiter", ASYNC_HANDLER,
                 header="from twisted.internet.task import deferLater\n")
    result_of(manager.load("waiter"))
    called = manager.call("waiter", "ask")
    emitted = manager.emit("shout", 1)
    if how == "unload":
        result_of(manager.unload("waiter"))
    else:
        result_of(manager.reload("waiter"))
    clock.advance(10)
    failure = failure_of(called, HandlerAbandoned)
    assert isinstance(failure.value, NoSuchPlugin) and failure.value.plugin == "waiter"
    assert result_of(emitted) == ["witness"]
    # Not the plugin's fault: not reported as one.
    assert events.of("plugin_error") == []
    assert clock.getDelayedCalls() == []
    if how == "reload":
        result_of(manager.unload("waiter"))  # its new version handles "shout" slowly too
    assert_still_serving(manager)


# -- faults in get_state and set_state -------------------------------------

STATEFUL = """
def __init__(self, api, data=None):
    Plugin.__init__(self, api, data)
    self.seen = []

@handler()
def note(self, value):
    self.seen.append(value)

@handler()
def which(self):
    return VERSION

def get_state(self):
    return list(self.seen)

def set_state(self, state):
    self.seen = list(state)
"""


def stateful(plugdir, version="v1", extra=""):
    write_plugin(plugdir, "keeper", STATEFUL + textwrap.dedent(extra), header=(
        "from twisted.internet.defer import Deferred, fail\n"
        f"from twisted.internet.task import deferLater\nVERSION = {version!r}\n"))


def test_get_state_raising(witnessed, logged_failures):
    """
    The old version is stopped and its state unreadable: the error is
    reported, and the new version starts without the state.
    """
    manager, clock, events, plugdir = witnessed
    stateful(plugdir, extra="def get_state(self):\n    raise RuntimeError('no state')\n")
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2")
    new = result_of(manager.reload("keeper"))
    assert new.seen == []
    assert result_of(manager.call("keeper", "which")) == "v2"
    [error] = events.of("plugin_error")
    assert error.plugin == "keeper" and error.failure.check(RuntimeError)
    assert events.kinds("keeper")[-1] == "plugin_reloaded"
    assert len([s for s in manager.services if s.name == "keeper"]) == 1
    assert_still_serving(manager)
    logged_failures.flush(RuntimeError)


def test_get_state_returning_a_failing_deferred(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    stateful(plugdir, extra="def get_state(self):\n    return fail(RuntimeError('no state'))\n")
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2")
    new = result_of(manager.reload("keeper"))
    assert new.seen == []
    assert result_of(manager.call("keeper", "which")) == "v2"
    [error] = events.of("plugin_error")
    assert error.plugin == "keeper" and error.failure.check(RuntimeError)
    assert events.kinds("keeper")[-1] == "plugin_reloaded"
    assert_still_serving(manager)
    logged_failures.flush(RuntimeError)


def test_get_state_returning_a_deferred_state(witnessed):
    manager, clock, events, plugdir = witnessed
    helper.state = Deferred()
    stateful(plugdir, extra=f"""
        def get_state(self):
            import {HELPER}
            return {HELPER}.state
    """)
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2")
    d = manager.reload("keeper")
    assert not has_result(d)
    helper.state.callback([1, 2])
    assert result_of(d).seen == [1, 2]


def test_get_state_may_use_its_own_reactor(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    stateful(plugdir, extra="""
        def get_state(self):
            return deferLater(self.api.reactor, 1, lambda: list(self.seen))
    """)
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2")
    d = manager.reload("keeper")
    clock.advance(1)
    assert result_of(d).seen == [1]
    assert events.of("plugin_error") == []


def test_set_state_returning_a_deferred_is_waited_for(witnessed):
    manager, clock, events, plugdir = witnessed
    stateful(plugdir)
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2", extra="""
        def set_state(self, state):
            def later():
                self.seen = list(state)
            return deferLater(self.api.reactor, 1, later)
    """)
    d = manager.reload("keeper")
    assert not has_result(d)
    clock.advance(1)
    assert result_of(d).seen == [1]


def test_set_state_raising_rolls_back(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    stateful(plugdir)
    old = result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2", extra="def set_state(self, state):\n    raise ValueError('no')\n")
    failure = failure_of(manager.reload("keeper"), InitFailed)
    assert failure.value.failure.check(ValueError)
    current = manager.getServiceNamed("keeper")
    assert current is not old and type(current) is type(old) and current.seen == [1]
    assert result_of(manager.call("keeper", "which")) == "v1"
    assert events.kinds("keeper")[-1] == "plugin_reload_failed"
    assert_still_serving(manager)
    logged_failures.flush(InitFailed)


def test_set_state_returning_a_failing_deferred_rolls_back(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    stateful(plugdir)
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2",
             extra="def set_state(self, state):\n    return fail(ValueError('no'))\n")
    failure = failure_of(manager.reload("keeper"), InitFailed)
    assert failure.value.failure.check(ValueError)
    assert result_of(manager.call("keeper", "which")) == "v1"
    assert manager.getServiceNamed("keeper").seen == [1]
    assert events.kinds("keeper")[-1] == "plugin_reload_failed"
    assert_still_serving(manager)
    logged_failures.flush(InitFailed)


def test_set_state_never_firing_rolls_back_at_the_start_deadline(plugdir, logged_failures):
    manager, clock, events = clock_manager(paths=[plugdir], start_deadline=4)
    stateful(plugdir)
    result_of(manager.load("keeper"))
    result_of(manager.call("keeper", "note", 1))
    stateful(plugdir, version="v2", extra="def set_state(self, state):\n    return Deferred()\n")
    d = manager.reload("keeper")
    clock.advance(3.9)
    assert not has_result(d)
    clock.advance(0.1)
    failure_of(d, InitFailed)
    assert result_of(manager.call("keeper", "which")) == "v1"
    assert manager.getServiceNamed("keeper").seen == [1]
    assert clock.getDelayedCalls() == []
    result_of(manager.shutdown())
    logged_failures.flush(InitFailed)


# -- faults in shutdown ----------------------------------------------------


@pytest.mark.parametrize("body, raised", [
    ("raise RuntimeError('cannot stop')", RuntimeError),
    ("raise SystemExit(0)", SystemExit),
    ("return fail(RuntimeError('cannot stop later'))", RuntimeError),
])
def test_shutdown_failing_still_removes(witnessed, logged_failures, body, raised):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "crash", f"def shutdown(self, mode, reason):\n    {body}\n",
                 header="from twisted.internet.defer import fail\n")
    result_of(manager.load("crash"))
    failure = failure_of(manager.unload("crash"), ShutdownFailed)
    assert failure.value.failure.check(raised)
    assert events.kinds("crash") == ["plugin_started", "plugin_error", "plugin_unloaded"]
    assert_nothing_left(manager, "crash")
    # Its slot is free.
    write_plugin(plugdir, "crash")
    result_of(manager.load("crash"))
    assert_still_serving(manager)
    logged_failures.flush(raised)


def test_quit_message_that_cannot_be_shown(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "odd", header="""
class Odd:
    def __repr__(self):
        raise RuntimeError("cannot show me")
    __str__ = __repr__
""", body="def shutdown(self, mode, reason):\n    return Odd()\n")
    result_of(manager.load("odd"))
    d = manager.unload("odd")
    assert type(result_of(d)).__name__ == "Odd"
    assert events.kinds("odd")[-1] == "plugin_unloaded"
    assert_nothing_left(manager, "odd")
    gc.collect()


@pytest.mark.parametrize("mode, seconds", [("immediate", 1), ("smart", 3), ("lazy", 6)])
def test_shutdown_never_firing_ends_at_the_deadline(witnessed, logged_failures, mode, seconds):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "stuck", header="from twisted.internet.defer import Deferred\n",
                 body="def shutdown(self, mode, reason):\n    return Deferred()\n")
    result_of(manager.load("stuck"))
    unloaded = manager.unload("stuck", mode)
    again = manager.load("stuck")
    clock.advance(seconds - 0.01)
    assert not unloaded.called and not again.called
    clock.advance(0.01)
    failure_of(unloaded, ShutdownTimedOut)
    # The slot was freed, and the load that waited for it went through.
    assert result_of(again).running
    assert manager.plugin_table()["stuck"].state is PluginState.RUNNING
    assert_still_serving(manager)
    d = manager.unload("stuck", "immediate")
    clock.advance(1)
    failure_of(d, ShutdownTimedOut)
    logged_failures.flush(ShutdownTimedOut)


def test_manager_shutdown_with_every_kind_of_bad_shutdown(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "stuck", header="from twisted.internet.defer import Deferred\n",
                 body="def shutdown(self, mode, reason):\n    return Deferred()\n")
    write_plugin(plugdir, "crash", "def shutdown(self, mode, reason):\n    raise SystemExit(1)\n")
    write_plugin(plugdir, "late", header="from twisted.internet.defer import fail\n",
                 body="def shutdown(self, mode, reason):\n    return fail(ValueError('late'))\n")
    for name in ("stuck", "crash", "late"):
        result_of(manager.load(name))
    d = manager.shutdown("smart")
    clock.advance(3)
    assert result_of(d) is None
    assert events.kinds()[-1] == "plugin_manager_shutdown"
    assert manager.plugin_table() == {} and manager.services == []
    logged_failures.flush(ShutdownTimedOut, SystemExit, ValueError)


# -- faults at import time -------------------------------------------------


def test_import_raising_after_defining_the_class(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "half")
    with open(plugdir / "half.py", "a") as f:
        f.write("\nSOME_NAME = 1\nraise RuntimeError('halfway')\n")
    failure = failure_of(manager.load("half"), CompileFailed)
    assert failure.value.failure.check(RuntimeError)
    assert events.kinds("half") == ["plugin_compile_failed"]
    assert_nothing_left(manager, "half")
    assert_still_serving(manager)
    logged_failures.flush(CompileFailed)


def test_package_import_raising_after_its_submodules(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    pkg = plugdir / "halfpkg"
    pkg.mkdir()
    (pkg / "first.py").write_text("X = 1\n")
    (pkg / "second.py").write_text("from . import first\nraise ImportError('second half')\n")
    write_plugin(pkg, "__init__", header="from . import first\nfrom . import second\n",
                 meta="name = 'halfpkg'\nversion = '1'\n")
    failure_of(manager.load("halfpkg"), CompileFailed)
    assert plugin_modules(manager) == sorted(
        n for n in sys.modules if n.startswith(manager.module_prefix + "witness"))
    assert_nothing_left(manager, "halfpkg")
    logged_failures.flush(CompileFailed)


def test_import_raising_after_registering_a_timer(witnessed, logged_failures):
    """
    A timer that the module started at import is not the manager's to
    cancel; the plugin table shows only real plugins.
    """
    manager, clock, events, plugdir = witnessed
    helper.clock = Clock()
    (plugdir / "timed.py").write_text(
        f"import {HELPER}\n"
        f"{HELPER}.clock.callLater(10, lambda: None)\n"
        "raise RuntimeError('after the timer')\n")
    failure_of(manager.load("timed"), CompileFailed)
    assert list(manager.plugin_table()) == ["witness"]
    assert_nothing_left(manager, "timed")
    [timer] = helper.clock.getDelayedCalls()
    timer.cancel()
    logged_failures.flush(CompileFailed)


def test_failed_reload_import_restores_the_old_modules(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    stateful(plugdir)
    old = result_of(manager.load("keeper"))
    before = {n: m for n, m in sys.modules.items() if n.startswith(manager.module_prefix)}
    stateful(plugdir, version="v2", extra="\n")
    with open(plugdir / "keeper.py", "a") as f:
        f.write("\nraise RuntimeError('halfway')\n")
    failure_of(manager.reload("keeper"), CompileFailed)
    after = {n: m for n, m in sys.modules.items() if n.startswith(manager.module_prefix)}
    assert after == before
    assert manager.getServiceNamed("keeper") is old and old.running
    assert result_of(manager.call("keeper", "which")) == "v1"
    logged_failures.flush(CompileFailed)


def test_class_attribute_raising_on_lookup(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "weird", "trap = Trap()\n", header="""
class Trap:
    def __get__(self, instance, owner):
        raise RuntimeError("looked at")
""")
    failure = failure_of(manager.load("weird"), InvalidMetadata)
    assert "looked at" in str(failure.value)
    assert events.kinds("weird") == ["plugin_invalid_values"]
    assert_nothing_left(manager, "weird")
    assert_still_serving(manager)
    logged_failures.flush(InvalidMetadata)


def no_interrupt(f, *args):
    """
    Call C{f}; a KeyboardInterrupt that escapes becomes an AssertionError
    (pytest would end the whole session on it).
    """
    try:
        return f(*args)
    except KeyboardInterrupt:
        raise AssertionError(f"KeyboardInterrupt escaped {f.__name__}") from None


def test_keyboard_interrupt_at_import(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    (plugdir / "interrupted.py").write_text("raise KeyboardInterrupt\n")
    failure = failure_of(no_interrupt(manager.load, "interrupted"), CompileFailed)
    assert failure.value.failure.check(KeyboardInterrupt)
    assert_nothing_left(manager, "interrupted")
    assert_still_serving(manager)
    logged_failures.flush(CompileFailed)


def test_keyboard_interrupt_in_a_handler(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "interrupted", "@handler('shout', priority=1)\n"
                 "def shout(self, value):\n    raise KeyboardInterrupt\n")
    result_of(manager.load("interrupted"))
    assert result_of(no_interrupt(manager.emit, "shout", 1)) == ["witness"]
    failure_of(no_interrupt(manager.call, "interrupted", "shout", 1), KeyboardInterrupt)
    no_interrupt(manager.post, "interrupted", "shout", 1)
    no_interrupt(clock.advance, 0)
    assert [e.plugin for e in events.of("plugin_error")] == ["interrupted"] * 3
    assert manager.plugin_table()["interrupted"].state is PluginState.RUNNING
    assert_still_serving(manager)
    logged_failures.flush(KeyboardInterrupt)


# -- a plugin that blocks the reactor ---------------------------------------

BLOCKING = f"""
@handler()
def work(self, seconds):
    {HELPER}.timer.now += seconds
    return seconds

@handler()
def fail_slowly(self, seconds):
    {HELPER}.timer.now += seconds
    raise ValueError("slow and failing")
"""


@pytest.fixture
def blocking(witnessed):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "blocker", BLOCKING, header=f"import {HELPER}\n")
    result_of(manager.load("blocker"))
    events.clear()
    return witnessed


def test_handler_time_is_measured_per_plugin(blocking):
    manager, clock, events, plugdir = blocking
    result_of(manager.call("blocker", "work", 0.1))
    result_of(manager.emit("work", 0.2))
    manager.post("blocker", "work", 0.05)
    clock.advance(0)
    info = manager.plugin_table()["blocker"]
    assert info.calls == 3
    assert info.busy_time == pytest.approx(0.35)
    assert info.longest_call == pytest.approx(0.2)
    witness = manager.plugin_table()["witness"]
    assert (witness.calls, witness.busy_time) == (0, 0.0)
    assert events.of("plugin_warning") == []


@pytest.mark.parametrize("how", ["call", "emit", "post"])
def test_slow_handler_warns_naming_plugin_and_handler(blocking, how):
    manager, clock, events, plugdir = blocking
    assert manager.slow_call == 0.25
    if how == "call":
        result_of(manager.call("blocker", "work", 0.3))
    elif how == "emit":
        result_of(manager.emit("work", 0.3))
    else:
        manager.post("blocker", "work", 0.3)
        clock.advance(0)
    [warning] = events.of("plugin_warning")
    assert warning.plugin == "blocker"
    assert "work" in warning.message and "0.300" in warning.message
    assert manager.plugin_table()["blocker"].longest_call == pytest.approx(0.3)


def test_handler_at_the_threshold_does_not_warn(blocking):
    manager, clock, events, plugdir = blocking
    result_of(manager.call("blocker", "work", 0.25))
    assert events.of("plugin_warning") == []


def test_slow_failing_handler_is_measured_and_reported(blocking, logged_failures):
    manager, clock, events, plugdir = blocking
    failure_of(manager.call("blocker", "fail_slowly", 1.0), ValueError)
    assert [e.kind for e in events.events if e.plugin == "blocker"] == [
        "plugin_warning", "plugin_error"]
    info = manager.plugin_table()["blocker"]
    assert info.calls == 1 and info.longest_call == pytest.approx(1.0)
    logged_failures.flush(ValueError)


def test_slow_call_threshold_is_configurable(plugdir):
    helper.timer = FakeTimer()
    manager, clock, events = clock_manager(paths=[plugdir], slow_call=0.01, timer=helper.timer)
    write_plugin(plugdir, "blocker", BLOCKING, header=f"import {HELPER}\n")
    result_of(manager.load("blocker"))
    result_of(manager.call("blocker", "work", 0.02))
    [warning] = events.of("plugin_warning")
    assert warning.plugin == "blocker" and "work" in warning.message
    result_of(manager.shutdown())


def test_nested_handler_time_is_charged_to_the_plugin_that_spent_it(blocking):
    manager, clock, events, plugdir = blocking
    write_plugin(plugdir, "relay", """
        @handler()
        def relay(self, seconds):
            return self.api.call("blocker", "work", seconds)
    """)
    result_of(manager.load("relay"))
    events.clear()
    assert result_of(manager.call("relay", "relay", 1.0)) == 1.0
    assert [e.plugin for e in events.of("plugin_warning")] == ["blocker"]
    table = manager.plugin_table()
    assert table["blocker"].busy_time == pytest.approx(1.0)
    assert table["relay"].busy_time == pytest.approx(0.0)


TICKER = """
def startService(self):
    Plugin.startService(self)
    self.api.reactor.callLater(1, self.boom)
    self.loop = self.api.looping_call(self.boom)
    self.loop.start(5, now=False)

def boom(self):
    raise ValueError("timer raised")
"""


def test_plugin_timer_raising_is_reported_as_the_plugins(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "ticker", TICKER)
    result_of(manager.load("ticker"))
    clock.advance(1)
    clock.advance(4)
    clock.advance(5)
    errors = events.of("plugin_error")
    assert [e.plugin for e in errors] == ["ticker"] * 3
    assert all(e.failure.check(ValueError) for e in errors)
    # The looping call goes on; the plugin still runs.
    assert manager.namedServices["ticker"].loop.running
    assert manager.plugin_table()["ticker"].state is PluginState.RUNNING
    result_of(manager.unload("ticker"))
    gc.collect()
    logged_failures.flush(ValueError)


# -- re-entrant plugins ----------------------------------------------------


def one_turn(clock):
    """
    Run the calls due now, as one turn of a real reactor does: not those
    that they schedule (a L{Clock} runs those too, in the same
    C{advance(0)}).
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


def test_post_to_self_is_delivered_on_a_later_turn(witnessed):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "looper", """
        count = 0

        @handler()
        def tick(self):
            type(self).count += 1
            if type(self).count < 100:  # a bound, so that the bug cannot hang the tests
                self.api.post(self.name, "tick")
    """)
    looper = result_of(manager.load("looper"))
    manager.post("looper", "tick")
    one_turn(clock)
    assert type(looper).count == 1
    one_turn(clock)
    assert type(looper).count == 2
    clock.advance(0)
    assert type(looper).count == 100


QUITTER = """
@handler()
def quit(self):
    self.api.manager.unload(self.name, reason="asked to quit").addErrback(lambda f: None)
"""


def test_handler_unloading_its_own_plugin(witnessed):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "quitter", QUITTER)
    result_of(manager.load("quitter"))
    result_of(manager.call("quitter", "quit"))
    assert_nothing_left(manager, "quitter")
    assert events.of("plugin_unloaded")[0].quit_message == "asked to quit"
    assert_still_serving(manager)


def test_handler_unloading_its_plugin_during_unload(witnessed):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "quitter", QUITTER)
    result_of(manager.load("quitter"))
    manager.post("quitter", "quit")
    d = manager.unload("quitter")
    assert result_of(d) == "asked to quit"
    assert_nothing_left(manager, "quitter")


def test_handler_unloading_its_plugin_during_shutdown(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir])
    write_plugin(plugdir, "quitter", QUITTER)
    result_of(manager.load("quitter"))
    manager.post("quitter", "quit")
    d = manager.shutdown()
    assert result_of(d) is None
    assert events.of("plugin_unloaded")[0].quit_message == "asked to quit"
    assert manager.plugin_table() == {} and manager.services == []


# -- a plugin that claims another name ---------------------------------------


def test_instance_claiming_another_name_cannot_take_its_entry(witnessed):
    manager, clock, events, plugdir = witnessed
    witness = manager.getServiceNamed("witness")
    write_plugin(plugdir, "impostor", """
        def __init__(self, api, data):
            Plugin.__init__(self, api, data)
            self.name = "witness"
    """)
    result_of(manager.load("impostor"))
    assert manager.getServiceNamed("witness") is witness
    result_of(manager.unload("impostor"))
    assert manager.getServiceNamed("witness") is witness
    assert sorted(manager.namedServices) == ["witness"]


def test_instance_renaming_itself_leaves_no_entry(witnessed):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "renamer", """
        def startService(self):
            Plugin.startService(self)
            self.name = "renamed"
    """)
    result_of(manager.load("renamer"))
    result_of(manager.unload("renamer"))
    assert sorted(manager.namedServices) == ["witness"]
    assert_nothing_left(manager, "renamer")


# -- plugin attributes that raise when looked at ------------------------------


def test_metadata_property_raising(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "liar", meta="name = 'liar'\n", body="""
        @property
        def version(self):
            raise RuntimeError("no version for you")
    """)
    result_of(manager.load("liar"))
    table = manager.plugin_table()
    assert sorted(table) == ["liar", "witness"]
    assert table["liar"].version is None and table["witness"].version == "1.0"
    before = plugin_modules(manager)
    result_of(manager.reload("liar"))
    assert plugin_modules(manager) == before
    assert manager.plugin_table()["liar"].reloads == 1
    assert_still_serving(manager)
    logged_failures.flush(RuntimeError, AttributeError, InitFailed)


def test_metadata_value_that_cannot_be_shown(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "odd", meta="name = 'odd'\nversion = Odd()\n", header="""
class Odd:
    def __repr__(self):
        raise RuntimeError("cannot show me")
    __str__ = __repr__
""")
    result_of(manager.load("odd"))
    assert sorted(manager.plugin_table()) == ["odd", "witness"]
    assert result_of(manager.reload("odd")).running
    assert events.kinds("odd")[-1] == "plugin_reloaded"
    assert manager.plugin_table()["odd"].reloads == 1
    assert_still_serving(manager)
    gc.collect()


def test_default_property_raising(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "nodefault", """
        @property
        def default(self):
            raise RuntimeError("default looked at")
    """)
    result_of(manager.load("nodefault"))
    failure_of(manager.call("nodefault", "anything"), RuntimeError)
    manager.post("nodefault", "anything")
    clock.advance(0)
    errors = events.of("plugin_error")
    assert [e.plugin for e in errors] == ["nodefault"] * len(errors) and errors
    assert manager.plugin_table()["nodefault"].state is PluginState.RUNNING
    assert_still_serving(manager)
    logged_failures.flush(RuntimeError, AttributeError, InitFailed)


def test_read_only_running_attribute(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "stubborn", """
        @property
        def running(self):
            return 1
    """)
    failure_of(manager.load("stubborn"), InitFailed)
    assert_nothing_left(manager, "stubborn")
    assert_still_serving(manager)
    logged_failures.flush(RuntimeError, AttributeError, InitFailed)


def test_getattr_raising_during_reload(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "proxy", """
        def __getattr__(self, name):
            raise RuntimeError("no attribute " + name)
    """)
    old = result_of(manager.load("proxy"))
    new = result_of(manager.reload("proxy"))
    assert new is not old and manager.plugin_table()["proxy"].state is PluginState.RUNNING
    result_of(manager.unload("proxy"))
    assert_nothing_left(manager, "proxy")
    logged_failures.flush(RuntimeError, AttributeError, InitFailed)


# -- dependencies ----------------------------------------------------------


def test_shutdown_before_start_with_requirements(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir], start=False)
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "web", "requires = ('db',)\n")
    loaded = manager.load("web")
    assert not has_result(loaded)
    d = manager.shutdown()
    assert result_of(d) is None
    failure_of(loaded, ManagerStopped)
    assert manager.plugin_table() == {} and manager.services == []
    assert plugin_modules(manager) == []


def test_start_after_loading_requirements_starts_them_first(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir], start=False)
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "web", "requires = ('db',)\n")
    loaded = manager.load("web")
    manager.startService()
    assert result_of(loaded).running
    assert [e.plugin for e in events.of("plugin_started")] == ["db", "web"]
    result_of(manager.shutdown())


SELF_RELOADER = """
@handler()
def again(self):
    self.api.manager.reload(self.name).addErrback(lambda f: None)

def shutdown(self, mode, reason):
    return deferLater(self.api.reactor, 1, lambda: "slow bye")
"""


def test_handler_reloading_its_plugin_during_unload(witnessed, logged_failures):
    manager, clock, events, plugdir = witnessed
    write_plugin(plugdir, "again", SELF_RELOADER,
                 header="from twisted.internet.task import deferLater\n")
    result_of(manager.load("again"))
    manager.post("again", "again")
    d = manager.unload("again")
    for _ in range(3):
        clock.advance(1)
    assert result_of(d) == "slow bye"
    assert events.kinds("again") == ["plugin_started", "plugin_reloaded", "plugin_unloaded"]
    assert_nothing_left(manager, "again")
