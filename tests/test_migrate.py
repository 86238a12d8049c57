"""
Versioned state: a new version's migrate_state(old_version, state) is given
the old instance's state_version and what its get_state returned, and its
result goes to set_state; a migration that fails fails the reload, and the
old version serves again. A failed reload is shown in the table until a
reload succeeds. Everything on a task.Clock.
"""

from __future__ import annotations

import pytest

from twisted_plugmgr import InitFailed, PluginState
from twisted_plugmgr.testing import failure_of, plugin_modules, result_of, write_plugin

OLD = """
state_version = STATE_VERSION

def __init__(self, api, data=None):
    super().__init__(api, data)
    self.items = ["a", "b"]

def get_state(self):
    return self.items

def set_state(self, state):
    self.items = state

@handler()
def items_(self):
    return self.items
"""

NEW = """
state_version = 2

def __init__(self, api, data=None):
    super().__init__(api, data)
    self.items = {}
    self.migrated_from = "never"

def migrate_state(self, old_version, state):
    self.migrated_from = old_version
    if FAIL:
        raise ValueError("cannot read that state")
    return {item: True for item in state}

def get_state(self):
    return self.items

def set_state(self, state):
    self.items = state

@handler()
def items_(self):
    return self.items
"""


def old(plugdir, state_version):
    write_plugin(plugdir, "store", OLD.replace("STATE_VERSION", repr(state_version)))


def new(plugdir, fail=False):
    write_plugin(plugdir, "store", NEW.replace("FAIL", repr(fail)), version="2.0")


@pytest.mark.parametrize("state_version", [None, 1, "v1"])
def test_migrate_state_is_given_the_old_state_version_and_state(env, state_version):
    manager, clock, events, plugdir = env
    old(plugdir, state_version)
    result_of(manager.load("store"))
    new(plugdir)
    plugin = result_of(manager.reload("store"))
    assert plugin.migrated_from == state_version
    assert plugin.items == {"a": True, "b": True}
    assert manager.plugin_table()["store"].version == "2.0"


def test_migrate_state_is_called_whatever_the_two_versions_are(env):
    manager, clock, events, plugdir = env
    new(plugdir)
    result_of(manager.load("store"))
    result_of(manager.call("store", "items_"))
    write_plugin(plugdir, "store", NEW.replace("FAIL", "False"), version="2.1")
    plugin = result_of(manager.reload("store"))
    assert plugin.migrated_from == 2  # the same state_version: still called
    assert plugin.items == {}


def test_without_migrate_state_the_state_goes_to_set_state_as_it_is(env):
    manager, clock, events, plugdir = env
    old(plugdir, 1)
    result_of(manager.load("store"))
    old(plugdir, 1)
    plugin = result_of(manager.reload("store"))
    assert plugin.items == ["a", "b"]


def test_a_failing_migration_fails_the_reload_and_the_old_version_serves(env, logged_failures):
    manager, clock, events, plugdir = env
    old(plugdir, 1)
    result_of(manager.load("store"))
    modules = plugin_modules(manager)
    new(plugdir, fail=True)
    error = failure_of(manager.reload("store"), InitFailed).value
    assert "migrate_state" in str(error) and error.plugin == "store"
    [failed] = events.of("plugin_reload_failed")
    assert "migrate_state" in failed.message
    info = manager.plugin_table()["store"]
    assert info.state is PluginState.RUNNING and info.version == "1.0"
    assert result_of(manager.call("store", "items_")) == ["a", "b"]  # its state too
    assert plugin_modules(manager) == modules
    assert "migrate_state failed" in info.last_reload_error
    assert info.last_reload_error_at == clock.seconds()
    # A reload that succeeds clears it.
    new(plugdir)
    result_of(manager.reload("store"))
    info = manager.plugin_table()["store"]
    assert info.last_reload_error is None and info.last_reload_error_at is None
    logged_failures.flush(ValueError, InitFailed)


def test_a_reload_that_does_not_compile_shows_in_the_table(env, logged_failures):
    manager, clock, events, plugdir = env
    old(plugdir, 1)
    result_of(manager.load("store"))
    (plugdir / "store.py").write_text("def (:\n")
    clock.advance(7)
    failure_of(manager.reload("store"))
    info = manager.plugin_table()["store"]
    assert "CompileFailed" in info.last_reload_error and info.last_reload_error_at == 7
    logged_failures.flush(Exception)


def test_a_rollback_after_a_migration_gives_the_old_version_its_own_state(env, logged_failures):
    manager, clock, events, plugdir = env
    old(plugdir, 1)
    result_of(manager.load("store"))
    write_plugin(plugdir, "store", NEW.replace("FAIL", "False") +
                 "\ndef startService(self):\n    raise RuntimeError('no start')\n", version="2.0")
    failure_of(manager.reload("store"), InitFailed)
    assert result_of(manager.call("store", "items_")) == ["a", "b"]  # not the migrated dict
    logged_failures.flush(RuntimeError, InitFailed)
