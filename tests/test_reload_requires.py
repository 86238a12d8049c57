"""
A reload does what a load does with the new version's requirements: a new
one that exists is loaded and started before the new version starts, one
that cannot run fails the reload (the old version keeps serving), and a
requirement that a failed reload loaded is unloaded again. Shutdown order
and cascades follow the new requirements. Also: a reload before the
manager starts waits for the start; emit() of a name that is not a string
fails its Deferred. Everything on a task.Clock.
"""

from __future__ import annotations

import pytest

from twisted_plugmgr import DependencyError, InitFailed, PluginState
from twisted_plugmgr.testing import (
    clock_manager,
    failure_of,
    plugin_modules,
    result_of,
    write_plugin,
)

APP = """
requires = REQUIRES

@handler()
def which(self):
    return self.version

def startService(self):
    Plugin.startService(self)
    # Its requirements run before it starts.
    self.saw = [self.api.manager.plugin_table()[name].state.value for name in self.requires]
    if FAIL:
        raise RuntimeError("the new version cannot start")
"""


def app(plugdir, version, requires=(), fail=False):
    body = APP.replace("REQUIRES", repr(tuple(requires))).replace("FAIL", repr(fail))
    write_plugin(plugdir, "app", body, version=version)


def table_states(manager):
    return {name: info.state.value for name, info in manager.plugin_table().items()}


def test_a_new_requirement_is_loaded_and_started_before_the_new_version(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db", "@handler()\ndef query(self):\n    return 'rows'\n")
    app(plugdir, "1.0")
    result_of(manager.load("app"))
    app(plugdir, "2.0", requires=("db",))
    new = result_of(manager.reload("app"))
    assert new.saw == ["running"]
    kinds = [(e.kind, e.plugin) for e in events.events
             if e.kind in ("plugin_started", "plugin_reloaded")]
    assert kinds[-2:] == [("plugin_started", "db"), ("plugin_reloaded", "app")]
    assert table_states(manager) == {"app": "running", "db": "running"}
    # Cascades follow the new requirements.
    result_of(manager.unload("db"))
    assert [(e.plugin, e.reason) for e in events.of("plugin_unloaded")] == [
        ("app", "requirement_unloaded"), ("db", "unloaded")]


def test_shutdown_stops_the_new_version_before_its_new_requirement(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    app(plugdir, "1.0")
    result_of(manager.load("app"))
    app(plugdir, "2.0", requires=("db",))
    result_of(manager.reload("app"))
    d = manager.shutdown()
    clock.advance(1)
    result_of(d)
    assert [e.plugin for e in events.of("plugin_unloaded")] == ["app", "db"]


@pytest.mark.parametrize("requirement", ["absent", "broken", "failing"])
def test_a_requirement_that_cannot_run_fails_the_reload_and_the_old_version_serves(
        env, requirement, logged_failures):
    manager, clock, events, plugdir = env
    (plugdir / "broken.py").write_text("def (:\n")
    write_plugin(plugdir, "failing", """
        def startService(self):
            raise RuntimeError("no start")
    """)
    app(plugdir, "1.0")
    old = result_of(manager.load("app"))
    modules = plugin_modules(manager)
    app(plugdir, "2.0", requires=(requirement,))
    d = manager.reload("app")
    held = manager.call("app", "which")
    error = failure_of(d, DependencyError).value
    assert error.plugin == "app" and requirement in str(error)
    [failed] = events.of("plugin_reload_failed")
    assert failed.plugin == "app"
    clock.advance(0)
    assert result_of(held) == "1.0"  # held during the attempt, served by the old version
    assert manager.getServiceNamed("app") is old and old.running
    assert table_states(manager) == {"app": "running"}
    assert plugin_modules(manager) == modules
    assert result_of(manager.call("app", "which")) == "1.0"
    logged_failures.flush(Exception)


def test_a_requirement_a_failed_reload_loaded_is_unloaded_again(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    app(plugdir, "1.0")
    old_modules = None
    result_of(manager.load("app"))
    old_modules = plugin_modules(manager)
    app(plugdir, "2.0", requires=("db",), fail=True)
    failure_of(manager.reload("app"), InitFailed)
    assert [(e.plugin, e.reason) for e in events.of("plugin_unloaded")] == [
        ("db", "reload_failed")]
    assert table_states(manager) == {"app": "running"}
    assert result_of(manager.call("app", "which")) == "1.0"  # rolled back
    assert plugin_modules(manager) == old_modules
    logged_failures.flush(Exception)


def test_a_requirement_already_loaded_stays_when_the_reload_fails(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    app(plugdir, "1.0")
    result_of(manager.load("db"))
    result_of(manager.load("app"))
    app(plugdir, "2.0", requires=("db",), fail=True)
    failure_of(manager.reload("app"), InitFailed)
    assert events.of("plugin_unloaded") == []
    assert table_states(manager) == {"app": "running", "db": "running"}
    logged_failures.flush(Exception)


def test_a_requirement_the_new_version_drops_stays_loaded_but_no_longer_holds_it(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    app(plugdir, "1.0", requires=("db",))
    result_of(manager.load("app"))
    app(plugdir, "2.0")
    result_of(manager.reload("app"))
    assert table_states(manager) == {"app": "running", "db": "running"}
    result_of(manager.unload("db", cascade=False))  # nothing requires it now
    assert table_states(manager) == {"app": "running"}


def test_a_new_requirement_that_would_make_a_cycle_fails_the_reload(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "web", "requires = ('app',)\n")
    app(plugdir, "1.0")
    result_of(manager.load("web"))
    app(plugdir, "2.0", requires=("web",))
    error = failure_of(manager.reload("app"), DependencyError).value
    assert "cycle" in str(error) and "web" in str(error)
    assert table_states(manager) == {"app": "running", "web": "running"}
    assert result_of(manager.call("app", "which")) == "1.0"
    logged_failures.flush(DependencyError)


def test_a_reload_before_the_manager_starts_waits_for_the_start(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir], start=False)
    app(plugdir, "1.0")
    loaded = manager.load("app")
    app(plugdir, "2.0")
    reloaded = manager.reload("app")
    assert not reloaded.called
    assert manager.plugin_table()["app"].state is PluginState.LOADED
    assert manager.plugin_table()["app"].version == "1.0"
    manager.startService()
    assert result_of(loaded).version == "1.0"
    new = result_of(reloaded)
    assert new.version == "2.0" and new.running
    assert result_of(manager.call("app", "which")) == "2.0"
    d = manager.shutdown()
    clock.advance(1)
    result_of(d)


def test_a_reload_waiting_for_the_start_fails_if_the_manager_shuts_down_first(
        plugdir, logged_failures):
    from twisted_plugmgr import NoSuchPlugin

    manager, clock, events = clock_manager(paths=[plugdir], start=False)
    app(plugdir, "1.0")
    loaded = manager.load("app")
    reloaded = manager.reload("app")
    result_of(manager.shutdown())
    failure_of(reloaded, NoSuchPlugin)
    failure_of(loaded)
    assert plugin_modules(manager) == []
    logged_failures.flush(Exception)


@pytest.mark.parametrize("event", [3, None, b"bytes", ("a", "tuple"), ["a", "list"]])
def test_emit_with_a_name_that_is_not_a_string_fails_its_deferred(env, event):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello", "@handler()\ndef greet(self):\n    return 'hi'\n")
    result_of(manager.load("hello"))
    d = manager.emit(event)  # never raises
    error = failure_of(d, TypeError).value
    assert "string" in str(error)
    assert result_of(manager.emit("greet")) == ["hi"]
