"""
Calls to an isolated plugin as the quick channel carries them, with a real
worker process: many in flight, answered in order (handlers that return at
once) and out of order (handlers whose Deferreds fire in another order),
values that need many writes beside small calls, and a crash with many
calls in flight failing every one of them.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater

from twisted_plugmgr import PluginCrashed, PluginManager, ShutdownMode

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="worker processes: Linux")

PLUGIN = '''
import os
from twisted.internet.defer import Deferred
from twisted_plugmgr import Plugin, handler

class Fast(Plugin):
    name = "fast"
    version = "1"
    isolate = True

    @handler("echo")
    def echo(self, value):
        return value

    @handler("later")
    def later(self, value, delay):
        d = Deferred()
        self.api.reactor.callLater(delay, d.callback, value)
        return d

    @handler("size")
    def size(self, value):
        return len(value), value[-10:]

    @handler("pid")
    def pid(self):
        return os.getpid()

    @handler("exit")
    def exit(self):
        os._exit(4)
'''


def children() -> List[str]:
    """The states of this process's children."""
    me = str(os.getpid())
    states = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                states.append(fields[0])
    return states


async def no_children(seconds: float = 5.0) -> None:
    waited = 0.0
    while children():
        if waited > seconds:
            raise AssertionError(f"children left: {children()}")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@pytest.fixture
def manager(tmp_path: Any) -> Any:
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "fast.py").write_text(textwrap.dedent(PLUGIN))
    m = PluginManager(paths=[str(directory)], reactor=reactor, restart_delay=0.0,
                      old_code_grace=None)
    m.startService()
    yield m
    pytest_twisted.blockon(m.shutdown(ShutdownMode.IMMEDIATE))
    pytest_twisted.blockon(Deferred.fromCoroutine(no_children()))


@pytest_twisted.ensureDeferred
async def test_many_calls_in_flight_answered_in_order(manager):
    await manager.load("fast")
    values = [("value", i, "x" * (i % 7)) for i in range(500)]
    answers = await gatherResults([manager.call("fast", "echo", v) for v in values])
    assert answers == values


@pytest_twisted.ensureDeferred
async def test_many_calls_in_flight_answered_out_of_order(manager):
    """
    Calls whose answers come back in the reverse order, mixed with calls
    answered at once: each caller gets its own answer, and the quick ones
    are not held back by the slow ones sent before them.
    """
    await manager.load("fast")
    slow = [manager.call("fast", "later", i, 0.002 * (60 - i)) for i in range(60)]
    order: List[int] = []
    for i, d in enumerate(slow):
        d.addCallback(lambda value, i=i: order.append(i) or value)
    quick = await gatherResults([manager.call("fast", "echo", i) for i in range(100)])
    assert quick == list(range(100))
    assert len(order) < 60  # the quick answers came first
    assert await gatherResults(slow) == list(range(60))
    assert order[:5] == [59, 58, 57, 56, 55]


@pytest_twisted.ensureDeferred
async def test_values_of_many_writes_beside_small_calls(manager):
    """
    Arguments of several megabytes (many AMP keys, many socket writes)
    cross whole, and small calls sent beside them get their own answers.
    """
    await manager.load("fast")
    big = os.urandom(4_000_000)
    calls = [manager.call("fast", "size", big), manager.call("fast", "echo", "small"),
             manager.call("fast", "echo", big), manager.call("fast", "echo", 7)]
    got = await gatherResults(calls)
    assert got == [(len(big), big[-10:]), "small", big, 7]


@pytest_twisted.ensureDeferred
async def test_crash_with_many_calls_in_flight_fails_each(manager, logged_failures):
    """
    The worker exits with calls in flight behind the one that ends it:
    each of them fails with L{PluginCrashed}, and the restarted worker
    answers again.
    """
    await manager.load("fast")
    before = await manager.call("fast", "pid")
    pending = [manager.call("fast", "later", i, 5.0) for i in range(20)]
    pending.append(manager.call("fast", "exit"))
    pending += [manager.call("fast", "echo", i) for i in range(20)]
    outcomes = await DeferredList(pending, consumeErrors=True)
    assert all(not ok and failure.check(PluginCrashed) for ok, failure in outcomes)
    waited = 0.0
    while True:
        try:
            after = await manager.call("fast", "pid")
            break
        except PluginCrashed:
            assert waited < 10, "never served again"
            await deferLater(reactor, 0.01, lambda: None)
            waited += 0.01
    assert after != before
    logged_failures.flush(PluginCrashed)
