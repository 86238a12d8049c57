"""
reload_many: several plugins reloaded in one transaction, applied
completely or not at all. Everything on a task.Clock.
"""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from twisted_plugmgr import PluginState, ReloadFailed
from twisted_plugmgr.testing import failure_of, plugin_modules, result_of, write_plugin

BODY = """
requires = REQUIRES

def __init__(self, api, data=None):
    super().__init__(api, data)
    self.count = 0
    self.got_state = None

def get_state(self):
    return self.count

def set_state(self, state):
    self.got_state = state
    self.count = state

@handler()
def bump(self):
    self.count += 1
    return (self.version, self.count)

START
"""

CHAIN = {"db": (), "web": ("db",), "front": ("web",)}


def plugin(plugdir, name, version, broken=None):
    body = BODY.replace("REQUIRES", repr(CHAIN[name]))
    start = ""
    if broken == "start":
        start = "def startService(self):\n    raise RuntimeError('no start')\n"
    body = body.replace("START", start)
    if broken == "syntax":
        (plugdir / f"{name}.py").write_text("def (:\n")
        return
    write_plugin(plugdir, name, body, version=version)


def load_chain(manager, plugdir):
    for name in CHAIN:
        plugin(plugdir, name, "1.0")
    result_of(manager.load("front"))
    for name in CHAIN:
        result_of(manager.call(name, "bump"))  # count = 1 each


def versions(manager):
    return {name: info.version for name, info in manager.plugin_table().items()}


def test_a_transaction_swaps_all_in_dependency_order_and_says_so_once_committed(env):
    manager, clock, events, plugdir = env
    load_chain(manager, plugdir)
    for name in CHAIN:
        plugin(plugdir, name, "2.0")
    events.clear()
    order = []
    manager.register(lambda e: order.append((e.kind, e.plugin))
                     if e.kind in ("plugin_reloaded", "plugin_warning") else None)
    result = result_of(manager.reload_many(["front", "db", "web"]))
    assert result == {"db": "2.0", "web": "2.0", "front": "2.0"}
    assert list(result) == ["db", "web", "front"]  # requirements first
    assert versions(manager) == {"db": "2.0", "web": "2.0", "front": "2.0"}
    assert [k for k, _ in order] == ["plugin_reloaded"] * 3
    for name in CHAIN:
        instance = manager.getServiceNamed(name)
        assert instance.got_state == 1  # its state went over
        assert result_of(manager.call(name, "bump")) == ("2.0", 2)
        assert manager.plugin_table()[name].reloads == 1


@pytest.mark.parametrize("where", ["db", "web", "front"])
@pytest.mark.parametrize("broken", ["syntax", "start"])
def test_a_failure_anywhere_leaves_everything_as_it_was(env, where, broken, logged_failures):
    manager, clock, events, plugdir = env
    load_chain(manager, plugdir)
    modules = plugin_modules(manager)
    before = {name: manager.getServiceNamed(name) for name in CHAIN}
    for name in CHAIN:
        plugin(plugdir, name, "2.0", broken=broken if name == where else None)
    events.clear()
    error = failure_of(manager.reload_many(list(CHAIN)), ReloadFailed).value
    assert error.plugin == where
    assert events.of("plugin_reloaded") == []
    failed = {e.plugin: e.message for e in events.of("plugin_reload_failed")}
    assert set(failed) == set(CHAIN)
    assert all(where in message for message in failed.values())
    assert versions(manager) == {"db": "1.0", "web": "1.0", "front": "1.0"}
    assert all(info.state is PluginState.RUNNING for info in manager.plugin_table().values())
    assert plugin_modules(manager) == modules
    for name in CHAIN:
        assert result_of(manager.call(name, "bump")) == ("1.0", 2)  # its state is kept
        instance = manager.getServiceNamed(name)
        # Untouched (never swapped) or a fresh instance of the old class.
        assert instance is before[name] or not before[name].running
    logged_failures.flush(Exception)


def test_messages_are_held_until_the_transaction_ends(env):
    manager, clock, events, plugdir = env
    load_chain(manager, plugdir)
    write_plugin(plugdir, "db", BODY.replace("REQUIRES", "()").replace("START", """
def startService(self):
    Plugin.startService(self)
    from twisted.internet.task import deferLater
    return deferLater(self.api.reactor, 1, lambda: None)
"""), version="2.0")
    plugin(plugdir, "web", "2.0")
    d = manager.reload_many(["db", "web"])
    held = [manager.call("web", "bump"), manager.call("db", "bump")]
    assert not any(h.called for h in held)
    clock.advance(1)
    result_of(d)
    clock.advance(0)
    assert [result_of(h) for h in held] == [("2.0", 2), ("2.0", 2)]


def test_a_transaction_refuses_what_it_cannot_do_and_changes_nothing(env, logged_failures):
    from twisted_plugmgr import ManagerStopped

    manager, clock, events, plugdir = env
    load_chain(manager, plugdir)
    assert result_of(manager.reload_many([])) == {}
    for names, data in ((["db", "db"], None), (["db", "ghost"], None), (["db"], {"web": 1}),
                        (["bad name"], None), ("db", None)):
        failure_of(manager.reload_many(names, data), ReloadFailed)
    assert versions(manager) == {"db": "1.0", "web": "1.0", "front": "1.0"}
    assert events.of("plugin_reloaded") == []
    # A new version that needs a plugin that does not run.
    write_plugin(plugdir, "db", BODY.replace("REQUIRES", "('absent',)").replace("START", ""),
                 version="2.0")
    error = failure_of(manager.reload_many(["db"]), ReloadFailed).value
    assert "absent" in str(error)
    assert versions(manager)["db"] == "1.0"
    d = manager.shutdown()
    clock.advance(1)
    result_of(d)
    failure_of(manager.reload_many(["db"]), ReloadFailed).value.failure.check(ManagerStopped)
    logged_failures.flush(Exception)


def test_data_changes_with_the_transaction(env):
    manager, clock, events, plugdir = env
    load_chain(manager, plugdir)
    for name in CHAIN:
        plugin(plugdir, name, "2.0")
    result_of(manager.reload_many(["db", "web"], {"web": {"new": "data"}}))
    assert manager.getServiceNamed("web").data == {"new": "data"}
    assert manager.getServiceNamed("db").data is None  # its data did not change


def test_reload_changed_reloads_what_changed_together_in_one_transaction(env, logged_failures):
    manager, clock, events, plugdir = env
    load_chain(manager, plugdir)
    plugin(plugdir, "db", "2.0")
    plugin(plugdir, "web", "2.0", broken="start")
    outcome = result_of(manager.reload_changed())
    assert set(outcome) == {"db", "web"}
    assert all(isinstance(value, Failure) and value.check(ReloadFailed)
               for value in outcome.values())
    assert versions(manager) == {"db": "1.0", "web": "1.0", "front": "1.0"}  # none of them
    plugin(plugdir, "web", "2.0")
    outcome = result_of(manager.reload_changed())
    assert {name: instance.version for name, instance in outcome.items()} == {
        "db": "2.0", "web": "2.0"}
    logged_failures.flush(Exception)
