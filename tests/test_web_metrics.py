"""
What a manager counts for metrics (C{manager.metrics}), on a Clock, with a
timer the handlers advance: calls per event, the handler time histogram,
errors, reload times; counted only while on, nothing lost across off and
on; and the fake's metrics.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, fail
from zope.interface.verify import verifyObject

from twisted_plugmgr import IPluginManager, ShutdownMode
from twisted_plugmgr._delivery import RELOAD_BUCKETS
from twisted_plugmgr._registry import HANDLER_BUCKETS
from twisted_plugmgr.testing import (
    FakePluginManager,
    clock_manager,
    failure_of,
    plugin_modules,
    result_of,
    write_plugin,
)

BODY = """
@handler()
def work(self, seconds):
    self.api.manager.test_timer.now += seconds
    return seconds

@handler()
def boom(self):
    raise ValueError("boom")

@handler()
def later(self):
    return self.api.manager.test_later
"""


class Timer:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def counted(tmp_path):
    write_plugin(tmp_path, "alpha", BODY)
    write_plugin(tmp_path, "beta", BODY)
    timer = Timer()
    manager, clock, recorder = clock_manager(paths=[tmp_path], timer=timer, slow_call=1e9)
    manager.test_timer = timer
    for name in ("alpha", "beta"):
        d = manager.load(name)
        clock.advance(0)
        result_of(d)
    yield manager, clock, tmp_path
    # Nothing left behind: no plugin module of this manager in sys.modules.
    done = manager.shutdown(ShutdownMode.IMMEDIATE)
    for _ in range(30):
        if done.called:
            break
        clock.advance(1)
    result_of(done)
    assert plugin_modules(manager) == []


def test_off_by_default_and_nothing_counted(counted):
    manager, clock, _ = counted
    assert not manager.metrics.enabled
    result_of(manager.call("alpha", "work", 0.5))
    alpha = manager.metrics.plugins()["alpha"]
    assert alpha.calls == {} and alpha.seconds == 0 and sum(alpha.buckets) == 0
    assert alpha.info.calls == 1  # the table counts anyway


def test_calls_per_event_and_the_histogram(counted):
    manager, clock, _ = counted
    manager.metrics.enable()
    for seconds in (0.00005, 0.00005, 0.003, 10.0):
        result_of(manager.call("alpha", "work", seconds))
    result_of(manager.emit("work", 0.0))
    alpha = manager.metrics.plugins()["alpha"]
    assert alpha.calls == {"work": 5}
    assert len(alpha.buckets) == len(HANDLER_BUCKETS) + 1
    assert alpha.buckets[0] == 3  # 0, 0.00005 and 0.00005
    assert alpha.buckets[HANDLER_BUCKETS.index(0.005)] == 1
    assert alpha.buckets[-1] == 1  # longer than every bound
    assert sum(alpha.buckets) == 5
    assert alpha.seconds == pytest.approx(10.0031)
    assert manager.metrics.plugins()["beta"].calls == {"work": 1}


def test_only_what_runs_while_on_is_counted(counted):
    manager, clock, _ = counted
    result_of(manager.call("alpha", "work", 1.0))  # off
    manager.metrics.enable()
    result_of(manager.call("alpha", "work", 2.0))
    manager.metrics.disable()
    result_of(manager.call("alpha", "work", 4.0))  # off
    manager.metrics.enable()
    result_of(manager.call("alpha", "work", 8.0))
    alpha = manager.metrics.plugins()["alpha"]
    assert alpha.calls == {"work": 2}
    assert alpha.seconds == pytest.approx(10.0)
    manager.metrics.disable()
    assert manager.metrics.plugins()["alpha"].seconds == pytest.approx(10.0)  # kept


def test_a_plugin_loaded_while_on_counts_from_its_load(counted):
    manager, clock, directory = counted
    manager.metrics.enable()
    write_plugin(directory, "gamma", BODY)
    d = manager.load("gamma")
    clock.advance(0)
    result_of(d)
    result_of(manager.call("gamma", "work", 3.0))
    manager.metrics.disable()
    result_of(manager.call("gamma", "work", 5.0))
    gamma = manager.metrics.plugins()["gamma"]
    assert gamma.calls == {"work": 1} and gamma.seconds == pytest.approx(3.0)


def test_each_user_must_disable(counted):
    manager, clock, _ = counted
    manager.metrics.enable()
    manager.metrics.enable()
    manager.metrics.disable()
    assert manager.metrics.enabled
    manager.metrics.disable()
    assert not manager.metrics.enabled
    manager.metrics.disable()  # one too many: harmless
    assert not manager.metrics.enabled


def test_errors_sync_and_async(counted, logged_failures):
    manager, clock, _ = counted
    manager.metrics.enable()
    manager.test_later = fail(KeyError("async"))
    failure_of(manager.call("alpha", "boom"), ValueError)
    failure_of(manager.call("alpha", "later"), KeyError)
    result_of(manager.emit("boom"))
    logged_failures.flush(ValueError, KeyError)
    assert manager.metrics.plugins()["alpha"].errors == 3
    assert manager.metrics.plugins()["beta"].errors == 1
    assert manager.metrics.plugins()["alpha"].calls == {"boom": 2, "later": 1}


def test_held_messages_are_counted(counted):
    manager, clock, _ = counted
    manager.post("alpha", "work", 0.0)
    manager.post("alpha", "work", 0.0)
    assert manager.metrics.plugins()["alpha"].held == 2
    clock.advance(0)
    assert manager.metrics.plugins()["alpha"].held == 0


def test_plugins_broadcasts_nothing(counted):
    manager, clock, _ = counted
    seen = []
    manager.register(seen.append)
    manager.metrics.plugins()
    assert seen == []


def test_reloads_are_timed_while_on(counted):
    manager, clock, directory = counted
    manager.metrics.enable()
    pending: Deferred = Deferred()
    manager.metrics.timed(pending)
    clock.advance(0.3)
    pending.callback(None)
    assert manager.metrics.reload_seconds == pytest.approx(0.3)
    assert manager.metrics.reload_buckets[RELOAD_BUCKETS.index(0.5)] == 1
    d = manager.reload("beta")
    clock.advance(0)
    result_of(d)
    assert sum(manager.metrics.reload_buckets) == 2
    manager.metrics.disable()
    d = manager.reload("beta")
    clock.advance(0)
    result_of(d)
    assert sum(manager.metrics.reload_buckets) == 2  # off: not timed


def test_the_fake_has_metrics_too():
    fake = FakePluginManager(["alpha"])
    assert verifyObject(IPluginManager, fake)
    result_of(fake.load("alpha"))
    fake.metrics.enable()
    assert fake.metrics.enabled
    alpha = fake.metrics.plugins()["alpha"]
    assert alpha.info.name == "alpha" and alpha.calls == {} and sum(alpha.buckets) == 0
    d: Deferred = Deferred()
    assert fake.metrics.timed(d) is d
    fake.metrics.disable()
    assert not fake.metrics.enabled
