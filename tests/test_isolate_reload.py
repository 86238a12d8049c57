"""
C{reload(name, isolation=...)}: a running plugin moved into a worker
process and back with its state, as a transactional reload (the old
instance serves until the new one is ready; any failure leaves it as it
was, isolation options included); real worker processes.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any

import pytest
import pytest_twisted
from _workers import isolating_manager, shut_down, until, workers

from twisted_plugmgr import InitFailed, PluginError, PluginState

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="worker processes: Linux")

COUNTER = '''
import os
from twisted_plugmgr import Plugin, handler

class Counter(Plugin):
    name = "counter"
    version = "{version}"
    {isolate}

    def __init__(self, api, data=None):
        super().__init__(api, data)
        self.count = 0

    @handler()
    def bump(self):
        self.count += 1
        return self.count

    @handler()
    def where(self):
        return os.getpid(), self.count, self.data

    @handler()
    def keep_unpicklable(self):
        self.count = lambda: None  # a state no pickle can carry

    def get_state(self):
        return self.count

    def set_state(self, state):
        self.count = state
'''


def write(plugdir: Any, version: str = "1", isolate: str = "") -> None:
    (plugdir / "counter.py").write_text(textwrap.dedent(COUNTER.format(
        version=version, isolate=isolate)))


@pytest.fixture
def env(tmp_path):
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    write(plugdir)
    manager = isolating_manager(plugdir)
    yield manager, plugdir
    shut_down(manager)


@pytest_twisted.ensureDeferred
async def test_a_reload_moves_a_running_plugin_into_a_worker_and_back_with_its_state(env):
    manager, plugdir = env
    await manager.load("counter", {"n": 1})
    for _ in range(3):
        await manager.call("counter", "bump")
    assert await manager.call("counter", "where") == (os.getpid(), 3, {"n": 1})
    assert manager.info("counter").isolated is False

    await manager.reload("counter", isolation={"isolate": True, "call_deadline": 5})
    pid, count, data = await manager.call("counter", "where")
    assert pid != os.getpid() and pid in workers()
    assert (count, data) == (3, {"n": 1})
    info = manager.info("counter")
    assert (info.isolated, info.pid, info.state) == (True, pid, PluginState.RUNNING)
    assert await manager.call("counter", "bump") == 4

    # A reload that says nothing of isolation keeps it (a new worker).
    write(plugdir, version="2")
    await manager.reload("counter")
    second, count, _ = await manager.call("counter", "where")
    assert second != pid and second in workers() and count == 4
    assert manager.info("counter").version == "2"

    # And back into the manager's process, with new data.
    await manager.reload("counter", data={"n": 2}, isolation={"isolate": False})
    assert await manager.call("counter", "where") == (os.getpid(), 4, {"n": 2})
    assert manager.info("counter").isolated is False
    await until(lambda: second not in workers(), 5.0)


@pytest_twisted.ensureDeferred
async def test_an_empty_isolation_goes_back_to_what_the_class_says(env):
    manager, plugdir = env
    write(plugdir, isolate="isolate = True")
    await manager.load("counter", isolate=False)
    assert (await manager.call("counter", "where"))[0] == os.getpid()
    await manager.reload("counter", isolation={})
    assert (await manager.call("counter", "where"))[0] in workers()


@pytest.mark.parametrize("isolation, message", [
    ({"isolate": "yes"}, "invalid isolate 'yes': expected true or false"),
    ({"call_deadline": 0}, "invalid call_deadline 0"),
    ({"limits": {"memory": 1}}, "invalid limits key 'memory'"),
    ({"isolated": True}, "unknown isolation option 'isolated'"),
    (["isolate"], "invalid isolation ['isolate']: expected a mapping"),
])
@pytest_twisted.ensureDeferred
async def test_bad_isolation_options_are_refused_and_nothing_changes(env, logged_failures,
                                                                    isolation, message):
    manager, plugdir = env
    plugin = await manager.load("counter")
    await manager.call("counter", "bump")
    with pytest.raises(PluginError) as info:
        await manager.reload("counter", isolation=isolation)
    assert info.value.plugin == "counter" and message in str(info.value)
    assert manager.getServiceNamed("counter") is plugin
    assert await manager.call("counter", "where") == (os.getpid(), 1, None)
    logged_failures.flush(PluginError)


@pytest_twisted.ensureDeferred
async def test_a_state_the_worker_cannot_take_rolls_back_and_keeps_the_options(
        env, logged_failures):
    """
    The state cannot be pickled: the new version in its worker fails to
    start, the old code takes over in the manager's process with its state,
    the worker is gone, and a later reload still runs in-process.
    """
    manager, plugdir = env
    await manager.load("counter")
    await manager.call("counter", "keep_unpicklable")
    with pytest.raises(InitFailed):
        await manager.reload("counter", isolation={"isolate": True})
    logged_failures.flush(InitFailed, PluginError)
    pid, count, _ = await manager.call("counter", "where")
    assert pid == os.getpid() and callable(count)
    assert manager.info("counter").isolated is False
    await until(lambda: not workers(), 5.0)  # the new version's worker, and no spare kept
    await manager.reload("counter")
    assert manager.info("counter").isolated is False
    assert (await manager.call("counter", "where"))[0] == os.getpid()


@pytest_twisted.ensureDeferred
async def test_a_quarantined_plugin_reloaded_into_a_worker(env, logged_failures):
    manager, plugdir = env
    write(plugdir, isolate="")
    (plugdir / "counter.py").write_text((plugdir / "counter.py").read_text().replace(
        "    def bump(self):\n", "    def bump(self):\n        self.api.fail('broken')\n"))
    await manager.load("counter", restart="always", restart_burst=1, restart_interval=100)
    await manager.call("counter", "bump")
    await until(lambda: manager.info("counter").restarts == 1
                and manager.info("counter").state is PluginState.RUNNING)
    await manager.call("counter", "bump")
    await until(lambda: manager.info("counter").state is PluginState.QUARANTINED)
    write(plugdir, version="2")
    await manager.reload("counter", isolation={"isolate": True})
    pid, _, _ = await manager.call("counter", "where")
    assert pid in workers() and manager.info("counter").version == "2"
    logged_failures.flush(PluginError)


@pytest_twisted.ensureDeferred
async def test_a_reload_queued_behind_another_keeps_its_isolation(env):
    """
    A reload into a worker asked while another reload runs: it runs after
    it, with its options; the state goes through both.
    """
    manager, plugdir = env
    await manager.load("counter")
    await manager.call("counter", "bump")
    first = manager.reload("counter")
    second = manager.reload("counter", isolation={"isolate": True})
    await first
    await second
    pid, count, _ = await manager.call("counter", "where")
    assert pid in workers() and count == 1
    assert manager.info("counter").reloads == 2
