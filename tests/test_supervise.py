"""
Supervision (Erlang/OTP supervisors, systemd's Restart=): what a failure
is, restart policies, backoff, crash loops quarantined, dependents
restarted after their requirement, messages held across a restart.
Everything on a task.Clock.
"""

from __future__ import annotations

import pytest

from twisted_plugmgr import (
    HandlerAbandoned,
    NoSuchPlugin,
    PluginError,
    PluginQuarantined,
    PluginState,
    RestartPolicy,
)
from twisted_plugmgr.testing import clock_manager, failure_of, plugin_modules, result_of, write_plugin

WORKER = """
import itertools
GENERATIONS = itertools.count(1)


class P_worker(Plugin):
    name = "worker"
    version = "1.0"
    longname = "a worker"
    license = "MIT"
    author = "tests"
    CLASS_POLICY

    def __init__(self, api, data=None):
        super().__init__(api, data)
        self.generation = next(GENERATIONS)
        self.seen = []

    def startService(self):
        Plugin.startService(self)
        if (self.data or {}).get("fail_restarts") and self.generation > 1:
            raise RuntimeError("cannot start again")
        if (self.data or {}).get("fail_at_start"):
            self.api.fail("broken from the start")

    @handler()
    def ping(self, token=None):
        self.seen.append(token)
        return ("pong", self.generation, token)

    @handler()
    def broke(self):
        self.api.fail("upstream gone")
        return "said so"

    @handler()
    def tick(self):
        self.loop = self.api.looping_call(self._tick)
        self.loop.start(1, now=False)

    def _tick(self):
        raise ValueError("tick failed")

    @handler()
    def slow(self):
        from twisted.internet.task import deferLater
        return deferLater(self.api.reactor, 100, lambda: "late")

    @handler()
    def leave(self):
        return self.api.stop("done")
"""


@pytest.fixture(autouse=True)
def expected_failures(logged_failures):
    """
    The failures these tests cause are logged (plugin_failed is a failure
    event): they are expected; any other is not.
    """
    yield
    logged_failures.flush(PluginError, ValueError, RuntimeError, KeyError)


def worker(plugdir, policy: str = "") -> None:
    source = WORKER.replace("CLASS_POLICY", policy or "pass")
    (plugdir / "worker.py").write_text("from twisted_plugmgr import Plugin, handler\n" + source)


def kinds(events, *wanted):
    return [e.kind for e in events.events if e.kind in wanted]


def current(manager):
    return manager.getServiceNamed("worker")


def fail_it(manager):
    assert result_of(manager.call("worker", "broke")) == "said so"


SUPERVISION = ("plugin_failed", "plugin_restarting", "plugin_started", "plugin_quarantined",
               "plugin_unloaded")


def test_a_plugin_that_says_it_is_broken_is_restarted_after_the_delay(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    old = result_of(manager.load("worker"))
    events.clear()
    fail_it(manager)
    assert not old.running  # never left running once it declared itself broken
    [failed] = events.of("plugin_failed")
    assert failed.cause == "fail" and "upstream gone" in failed.failure.getErrorMessage()
    [restarting] = events.of("plugin_restarting")
    assert (restarting.attempt, restarting.delay) == (1, 0.1)
    info = manager.plugin_table()["worker"]
    assert info.state is PluginState.RESTARTING and info.events == ()
    clock.advance(0.1)
    new = current(manager)
    assert new is not old and new.running and new.generation == old.generation + 1
    assert kinds(events, *SUPERVISION) == ["plugin_failed", "plugin_restarting", "plugin_started"]
    info = manager.plugin_table()["worker"]
    assert info.state is PluginState.RUNNING and info.restarts == 1
    assert "upstream gone" in info.last_failure
    assert result_of(manager.call("worker", "ping"))[1] == new.generation


def test_restart_no_unloads_a_failed_plugin(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart="no"))
    fail_it(manager)
    [unloaded] = events.of("plugin_unloaded")
    assert unloaded.reason == "failed"
    assert "worker" not in manager.plugin_table() and plugin_modules(manager) == []
    assert events.of("plugin_restarting") == []


def test_restart_always_restarts_a_plugin_that_ends_itself(env):
    manager, clock, events, plugdir = env
    worker(plugdir, 'restart = "always"')
    old = result_of(manager.load("worker"))
    events.clear()
    result_of(manager.call("worker", "leave"))
    assert events.of("plugin_failed") == []  # a clean exit is not a failure
    clock.advance(0.1)
    assert kinds(events, *SUPERVISION) == ["plugin_restarting", "plugin_started"]
    assert current(manager) is not old and current(manager).running


def test_on_failure_unloads_a_plugin_that_ends_itself(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker"))
    result_of(manager.call("worker", "leave"))
    assert [e.reason for e in events.of("plugin_unloaded")] == ["stopped_itself"]
    assert "worker" not in manager.plugin_table()


def test_a_timer_error_stays_a_plugin_error_without_fail_on_error(env, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir)
    plugin = result_of(manager.load("worker"))
    result_of(manager.call("worker", "tick"))
    clock.advance(1)
    clock.advance(1)
    assert len(events.of("plugin_error")) == 2 and events.of("plugin_failed") == []
    assert plugin.loop.running and plugin.running  # the looping call goes on
    logged_failures.flush(ValueError)


@pytest.mark.parametrize("how", ["load", "class"])
def test_with_fail_on_error_a_timer_error_is_a_failure(env, how, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir, "fail_on_error = True" if how == "class" else "")
    kw = {"fail_on_error": True} if how == "load" else {}
    old = result_of(manager.load("worker", **kw))
    result_of(manager.call("worker", "tick"))
    clock.advance(1)
    [failed] = events.of("plugin_failed")
    assert failed.cause == "error" and failed.failure.check(ValueError)
    assert not old.running and not old.loop.running
    clock.advance(0.1)
    assert current(manager).running and current(manager) is not old
    logged_failures.flush(ValueError)


def test_the_backoff_doubles_and_a_crash_loop_is_quarantined(env, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart_delay=0.1, restart_burst=5, restart_interval=100))
    delays = []
    for _ in range(5):
        fail_it(manager)
        delays.append(events.of("plugin_restarting")[-1].delay)
        clock.advance(delays[-1])
        assert current(manager).running
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert [e.attempt for e in events.of("plugin_restarting")] == [1, 2, 3, 4, 5]
    fail_it(manager)  # the sixth failure within the interval
    [quarantined] = events.of("plugin_quarantined")
    assert quarantined.restarts == 5
    info = manager.plugin_table()["worker"]
    assert info.state is PluginState.QUARANTINED and info.restarts == 5
    assert "worker" not in manager.namedServices  # nothing of it runs
    clock.advance(1000)
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED


def test_failures_spread_wider_than_the_interval_are_never_quarantined(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart_burst=2, restart_interval=1))
    for _ in range(6):
        fail_it(manager)
        clock.advance(0.1)
        clock.advance(1)
    assert [e.attempt for e in events.of("plugin_restarting")] == [1] * 6
    assert events.of("plugin_quarantined") == []
    assert manager.plugin_table()["worker"].restarts == 6


def quarantine(manager, clock):
    for _ in range(2):
        fail_it(manager)
        clock.advance(10)
    fail_it(manager)
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED


def test_a_quarantined_plugin_answers_nothing(env, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart_burst=2, restart_interval=100))
    quarantine(manager, clock)
    error = failure_of(manager.call("worker", "ping"), PluginQuarantined).value
    assert error.plugin == "worker"
    events.clear()
    manager.post("worker", "ping")  # not raised: reported
    [reported] = events.of("plugin_error")
    assert reported.failure.check(PluginQuarantined)
    assert result_of(manager.emit("ping")) == []
    logged_failures.flush(PluginQuarantined)


@pytest.mark.parametrize("how", ["load", "reset", "reload"])
def test_a_quarantined_plugin_starts_afresh(env, how):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart_burst=2, restart_interval=100))
    quarantine(manager, clock)
    if how == "load":
        instance = result_of(manager.load("worker", {"new": "data"}))
        assert instance.data == {"new": "data"}
    elif how == "reset":
        instance = result_of(manager.reset("worker"))
    else:
        (plugdir / "worker.py").write_text((plugdir / "worker.py").read_text().replace(
            'version = "1.0"', 'version = "2.0"'))
        instance = result_of(manager.reload("worker"))
        assert instance.version == "2.0"
    assert instance.running and current(manager) is instance
    info = manager.plugin_table()["worker"]
    assert info.state is PluginState.RUNNING
    assert info.restarts == (2 if how == "reload" else 0)  # reload does not reset the count
    assert result_of(manager.call("worker", "ping"))[0] == "pong"


def test_a_quarantined_plugin_can_be_unloaded(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart_burst=0))
    fail_it(manager)
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED
    result_of(manager.unload("worker"))
    assert "worker" not in manager.plugin_table() and plugin_modules(manager) == []


def test_reset_clears_the_count_of_a_running_plugin(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker"))
    fail_it(manager)
    clock.advance(0.1)
    assert manager.plugin_table()["worker"].restarts == 1
    assert result_of(manager.reset("worker")) is current(manager)
    assert manager.plugin_table()["worker"].restarts == 0
    failure_of(manager.reset("nope"), NoSuchPlugin)


def test_messages_during_a_restart_are_held_and_delivered_once_to_the_new_instance(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    old = result_of(manager.load("worker"))
    slow = manager.call("worker", "slow")  # still running in the failed instance
    fail_it(manager)
    failure_of(slow, HandlerAbandoned)
    manager.post("worker", "ping", "posted")
    called = manager.call("worker", "ping", "called")
    clock.advance(0.05)  # during the delay: still held
    assert not called.called
    clock.advance(0.05)
    new = current(manager)
    clock.advance(0)
    assert result_of(called) == ("pong", new.generation, "called")
    assert new.seen == ["posted", "called"] and old.seen == []


def test_a_failure_of_the_restarted_start_counts_toward_the_burst(env, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", {"fail_restarts": True}, restart_burst=3,
                           restart_interval=100, restart_delay=1))
    fail_it(manager)
    for _ in range(3):
        clock.advance(10)
    causes = [e.cause for e in events.of("plugin_failed")]
    assert causes == ["fail", "start", "start", "start"]
    assert [e.attempt for e in events.of("plugin_restarting")] == [1, 2, 3]
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED
    assert "worker" not in manager.namedServices
    logged_failures.flush(Exception)


@pytest.mark.parametrize("how", ["unload", "shutdown"])
def test_unload_or_shutdown_during_a_pending_restart_finish_at_once(env, how):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", restart_delay=20))
    fail_it(manager)
    events.clear()
    d = manager.unload("worker") if how == "unload" else manager.shutdown()
    result_of(d)  # without advancing the clock
    clock.advance(100)
    assert "worker" not in manager.plugin_table() and manager.services == []
    assert events.of("plugin_started") == []  # nothing restarts after it
    assert [e.reason for e in events.of("plugin_unloaded")] == [
        "unloaded" if how == "unload" else "shutdown"]
    assert clock.getDelayedCalls() == [] and plugin_modules(manager) == []


def test_a_failure_declared_during_the_start_takes_effect_once_it_runs(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    first = result_of(manager.load("worker", {"fail_at_start": True}, restart="no"))
    assert not first.running
    assert [e.reason for e in events.of("plugin_unloaded")] == ["failed"]


def test_an_old_instance_cannot_fail_the_new_one(env, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir)
    old = result_of(manager.load("worker"))
    fail_it(manager)
    clock.advance(0.1)
    new = current(manager)
    events.clear()
    old.api.fail("stale")
    assert events.of("plugin_failed") == [] and len(events.of("plugin_error")) == 1
    assert new.running and current(manager) is new
    logged_failures.flush(PluginError)


DB = """
import itertools
GENERATIONS = itertools.count(1)

class P_db(Plugin):
    name = "db"
    version = "1.0"
    longname = "db"
    license = "MIT"
    author = "tests"

    def __init__(self, api, data=None):
        super().__init__(api, data)
        self.generation = next(GENERATIONS)

    @handler()
    def broke(self):
        self.api.fail("corrupt")

    @handler()
    def which(self):
        return self.generation
"""

WEB = """
requires = ("db",)

def __init__(self, api, data=None):
    super().__init__(api, data)
    self.db = api.plugin("db")
    self.derived = None
    self.handed = None

def startService(self):
    Plugin.startService(self)
    self.derived = self.db.which()

def get_state(self):
    return "state of web"

def set_state(self, state):
    self.handed = state
"""


def test_dependents_are_restarted_after_their_requirement_with_their_state(env):
    manager, clock, events, plugdir = env
    (plugdir / "db.py").write_text("from twisted_plugmgr import Plugin, handler\n" + DB)
    write_plugin(plugdir, "web", WEB)
    write_plugin(plugdir, "front", "requires = ('web',)\n")
    result_of(manager.load("front"))
    web = manager.getServiceNamed("web")
    assert web.derived == 1
    events.clear()
    result_of(manager.call("db", "broke"))
    clock.advance(0.1)
    started = [e.plugin for e in events.of("plugin_started")]
    assert started == ["db", "web", "front"]  # in dependency order
    new_web = manager.getServiceNamed("web")
    assert new_web is not web and not web.running
    assert new_web.handed == "state of web"  # they did not fail: their state goes on
    assert new_web.derived == 2  # what they derived follows the new db
    assert new_web.db.which() == 2  # and their live reference
    assert events.of("plugin_failed")[0].plugin == "db"
    table = manager.plugin_table()
    assert table["web"].restarts == 1 and table["db"].restarts == 1


def test_a_failing_dependent_never_restarts_its_requirements(env):
    manager, clock, events, plugdir = env
    (plugdir / "db.py").write_text("from twisted_plugmgr import Plugin, handler\n" + DB)
    write_plugin(plugdir, "web", WEB + "\n@handler()\ndef broke(self):\n    self.api.fail('x')\n")
    result_of(manager.load("web"))
    db = manager.getServiceNamed("db")
    events.clear()
    result_of(manager.call("web", "broke"))
    clock.advance(0.1)
    assert [e.plugin for e in events.of("plugin_started")] == ["web"]
    assert manager.getServiceNamed("db") is db and db.running


def test_the_policy_is_the_managers_under_the_class_under_the_load(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir], restart="no", restart_burst=7)
    worker(plugdir, 'restart = "always"\n    restart_delay = 2')
    result_of(manager.load("worker", restart_delay=3))
    policy = manager.policy_of("worker")
    assert (policy.restart, policy.restart_delay, policy.restart_burst) == ("always", 3.0, 7)
    assert manager.set_policy("worker", restart="on-failure").restart_delay == 2.0
    assert manager.policy_of("worker").restart == "on-failure"
    manager.set_restart_policy(restart_burst=9)
    assert manager.restart_policy == RestartPolicy(restart="no", restart_burst=9)
    assert manager.policy_of("worker").restart_burst == 9
    with pytest.raises(ValueError, match="restart_burst"):
        manager.set_policy("worker", restart_burst=-1)
    assert manager.policy_of("worker").restart == "on-failure"  # unchanged
    with pytest.raises(ValueError, match="restart"):
        manager.set_restart_policy(restart="sometimes")
    with pytest.raises(NoSuchPlugin):
        manager.policy_of("nope")
    with pytest.raises(ValueError, match="restart_delay"):
        clock_manager(paths=[plugdir], restart_delay=-1)
    result_of(manager.shutdown())


def test_a_bad_policy_on_load_fails_it_naming_the_key_and_loads_nothing(env, logged_failures):
    manager, clock, events, plugdir = env
    worker(plugdir)
    error = failure_of(manager.load("worker", restart="sometimes"), PluginError).value
    assert "restart" in str(error) and error.plugin == "worker"
    failure_of(manager.load("worker", restrat="no"), PluginError)
    assert manager.plugin_table() == {} and plugin_modules(manager) == []
    logged_failures.flush(PluginError)


@pytest.mark.parametrize("restart", ["no", "on-failure", "always"])
@pytest.mark.parametrize("cause", ["fail", "error"])
def test_each_policy_with_each_kind_of_failure(env, restart, cause):
    manager, clock, events, plugdir = env
    worker(plugdir)
    old = result_of(manager.load("worker", restart=restart, fail_on_error=True))
    if cause == "fail":
        fail_it(manager)
    else:
        result_of(manager.call("worker", "tick"))
        clock.advance(1)
    assert [e.cause for e in events.of("plugin_failed")] == [cause]
    assert not old.running
    clock.advance(0.1)
    if restart == "no":
        assert [e.reason for e in events.of("plugin_unloaded")] == ["failed"]
        assert "worker" not in manager.plugin_table() and plugin_modules(manager) == []
    else:
        assert current(manager).running and current(manager) is not old
        assert manager.plugin_table()["worker"].restarts == 1


@pytest.mark.parametrize("restart", ["on-failure", "always"])
def test_a_failed_restart_start_is_a_start_failure_under_each_restarting_policy(env, restart):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", {"fail_restarts": True}, restart=restart, restart_burst=1,
                           restart_interval=100))
    fail_it(manager)
    clock.advance(0.1)
    assert [e.cause for e in events.of("plugin_failed")] == ["fail", "start"]
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED
    assert "worker" not in manager.namedServices


# -- found in review ---------------------------------------------------------


def test_a_restarted_instance_that_fails_in_its_start_is_not_left_running(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", {"fail_at_start": True}, restart_burst=2,
                           restart_interval=100))
    for _ in range(5):
        clock.advance(10)
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED
    assert "worker" not in manager.namedServices
    assert [e.cause for e in events.of("plugin_failed")] == ["fail"] * 3


def test_the_old_version_failing_during_a_reload_does_not_fail_the_new_one(env):
    manager, clock, events, plugdir = env
    worker(plugdir, "def shutdown(self, mode, reason):\n        self.api.fail('late')\n"
                    "        return 'bye'")
    result_of(manager.load("worker"))
    worker(plugdir)
    new = result_of(manager.reload("worker"))
    clock.advance(1)
    assert events.of("plugin_failed") == [] and len(events.of("plugin_error")) == 1
    assert current(manager) is new and new.running


def test_unloading_in_the_errback_of_a_failed_revival_leaves_nothing(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker", {"fail_restarts": True}, restart_burst=0))
    fail_it(manager)
    assert manager.plugin_table()["worker"].state is PluginState.QUARANTINED
    revived = manager.reset("worker")
    unloaded = revived.addErrback(lambda f: manager.unload("worker"))
    result_of(unloaded)
    clock.advance(100)
    assert manager.plugin_table() == {} and clock.getDelayedCalls() == []
    assert plugin_modules(manager) == []


def test_a_bad_policy_attribute_on_the_class_fails_the_load_naming_it(env):
    from twisted_plugmgr import InvalidMetadata

    manager, clock, events, plugdir = env
    worker(plugdir, 'restart = "sometimes"')
    error = failure_of(manager.load("worker"), InvalidMetadata).value
    assert "restart" in str(error) and "sometimes" in str(error)
    assert manager.plugin_table() == {} and plugin_modules(manager) == []


def test_with_restart_no_a_broken_plugin_serves_nothing_while_it_goes(env):
    manager, clock, events, plugdir = env
    worker(plugdir, "def shutdown(self, mode, reason):\n"
                    "        from twisted.internet.task import deferLater\n"
                    "        return deferLater(self.api.reactor, 0.5, lambda: 'bye')")
    old = result_of(manager.load("worker", restart="no"))
    fail_it(manager)
    late = manager.call("worker", "ping", "late")  # not the broken instance's
    clock.advance(1)
    failure_of(late, NoSuchPlugin)
    assert old.seen == []
    assert "worker" not in manager.plugin_table()


def test_nothing_restarts_once_the_shutdown_began(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    write_plugin(plugdir, "slowdep", "requires = ('worker',)\n"
                 "def shutdown(self, mode, reason):\n"
                 "    from twisted.internet.task import deferLater\n"
                 "    return deferLater(self.api.reactor, 2, lambda: 'bye')\n")
    result_of(manager.load("slowdep"))
    fail_it(manager)  # worker restarts in 0.1 s, while slowdep stops for 2 s
    events.clear()
    d = manager.shutdown()
    clock.advance(5)
    result_of(d)
    assert events.of("plugin_started") == []
    assert manager.plugin_table() == {} and clock.getDelayedCalls() == []


def test_reloading_a_quarantined_plugin_honours_its_new_requirements(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    worker(plugdir)
    result_of(manager.load("worker", restart_burst=0))
    fail_it(manager)
    worker(plugdir, 'requires = ("db",)')
    events.clear()
    result_of(manager.reload("worker"))
    assert manager.plugin_table()["db"].state is PluginState.RUNNING
    kinds_ = [(e.kind, e.plugin) for e in events.events
              if e.kind in ("plugin_started", "plugin_reloaded")]
    assert kinds_ == [("plugin_started", "db"), ("plugin_started", "worker"),
                      ("plugin_reloaded", "worker")]



DEFER_LATER = """
@handler()
def later(self, handled):
    from twisted.internet.task import deferLater

    def boom():
        raise KeyError("deferred boom")

    d = deferLater(self.api.reactor, 1, boom)
    if handled:
        d.addErrback(lambda f: self.caught.append(f))

def __init__(self, api, data=None):
    super().__init__(api, data)
    self.caught = []
"""


@pytest.mark.parametrize("fail_on_error", [False, True])
def test_with_fail_on_error_a_deferlater_that_raises_is_a_failure(env, fail_on_error):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "later", DEFER_LATER)
    plugin = result_of(manager.load("later", fail_on_error=fail_on_error, restart="no"))
    result_of(manager.call("later", "later", True))
    clock.advance(1)
    assert len(plugin.caught) == 1  # its own errback still gets it
    assert [e.cause for e in events.of("plugin_failed")] == (["error"] if fail_on_error else [])
    assert events.of("plugin_error") == []  # handled by the plugin: no plugin_error
    assert ("later" in manager.plugin_table()) is (not fail_on_error)


def test_reset_during_a_restart_answers_the_new_instance_and_counts_nothing(env):
    manager, clock, events, plugdir = env
    worker(plugdir)
    result_of(manager.load("worker"))
    fail_it(manager)
    reset = manager.reset("worker")
    assert not reset.called  # the fresh instance is on its way
    clock.advance(0.1)
    assert result_of(reset) is current(manager) and current(manager).running
    assert manager.plugin_table()["worker"].restarts == 0
