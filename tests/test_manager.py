"""
The plugin manager: load, unload, staged shutdown, events, addressing.
Everything runs on a task.Clock: a load completes by advancing the clock.
"""

from __future__ import annotations

import gc
import sys

import pytest
from zope.interface.verify import verifyObject

from twisted_plugmgr import (
    AlreadyLoaded,
    CompileFailed,
    DependencyError,
    InitFailed,
    InvalidMetadata,
    InvalidName,
    IPlugin,
    IPluginAPI,
    IPluginManager,
    ManagerStopped,
    NoSuchHandler,
    NoSuchPlugin,
    PluginState,
    ShutdownFailed,
    ShutdownMode,
    ShutdownTimedOut,
    StartTimedOut,
)
from twisted_plugmgr._interfaces import IPluginHost
from twisted_plugmgr.testing import (
    clock_manager,
    failure_of,
    plugin_modules,
    result_of,
    write_plugin,
)


def assert_nothing_left(manager, name):
    assert name not in manager.plugin_table()
    assert not [s for s in manager.services if getattr(s, "name", None) == name]
    assert name not in manager.namedServices
    assert not [m for m in plugin_modules(manager) if m.endswith("__" + name)]


# -- interfaces ----------------------------------------------------------


def test_interfaces_are_provided(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    plugin = result_of(manager.load("hello"))
    assert verifyObject(IPluginManager, manager)
    assert verifyObject(IPlugin, plugin)
    assert verifyObject(IPluginAPI, plugin.api)


def test_the_plugin_host_provides_its_interface():
    from twisted_plugmgr._events import Listeners, Reporter
    from twisted_plugmgr._host import Host
    from twisted_plugmgr._registry import Registry

    host = Host(Registry(), Reporter(Listeners()), lambda *a: None, lambda *a: None,
                lambda record: False)
    assert verifyObject(IPluginHost, host)


def test_instance_of_gives_the_serving_instance_or_refuses(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    plugin = result_of(manager.load("hello"))
    assert manager.instance_of("hello") is plugin
    for name in ("nope", "bad name", 3):
        with pytest.raises(NoSuchPlugin):
            manager.instance_of(name)
    result_of(manager.unload("hello"))
    with pytest.raises(NoSuchPlugin):
        manager.instance_of("hello")


# -- why a load failed: the reason field -----------------------------------


def test_each_load_failure_says_why_in_its_reason(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    (plugdir / "broken.py").write_text("def (:\n")
    write_plugin(plugdir, "nometa", meta="name = 'nometa'\n")
    write_plugin(plugdir, "ctor", """
        def __init__(self, api, data=None):
            raise RuntimeError("no")
    """)
    write_plugin(plugdir, "needy", "requires = ('absent',)\n")
    result_of(manager.load("hello"))
    events.clear()
    cases = [
        ("bad name!", InvalidName, "plugin_compile_failed", "invalid_name"),
        ("ghost", NoSuchPlugin, "plugin_compile_failed", "not_found"),
        ("hello", AlreadyLoaded, "plugin_compile_failed", "already_loaded"),
        ("broken", CompileFailed, "plugin_compile_failed", "compile_error"),
        ("nometa", InvalidMetadata, "plugin_invalid_values", "invalid_metadata"),
        ("ctor", InitFailed, "plugin_init_failed", "init_failed"),
        ("needy", DependencyError, "plugin_init_failed", "dependency_failed"),
    ]
    for name, error, kind, reason in cases:
        events.clear()
        failure_of(manager.load(name), error)
        [event] = [e for e in events.events if e.failure is not None and e.plugin == name]
        assert (event.kind, event.reason) == (kind, reason), name
        assert event.message == str(event.failure.value)
        assert name not in manager.plugin_table() or name == "hello"
    logged_failures.flush(CompileFailed, InvalidMetadata, InitFailed, DependencyError,
                          NoSuchPlugin, InvalidName, AlreadyLoaded)
    d = manager.shutdown()
    clock.advance(1)
    result_of(d)
    events.clear()
    failure_of(manager.load("hello"), ManagerStopped)
    [event] = events.of("plugin_compile_failed")
    assert event.reason == "manager_stopped"
    assert "shut down" in event.message
    logged_failures.flush(ManagerStopped)


def test_the_already_loaded_message_says_so(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    result_of(manager.load("hello"))
    failure_of(manager.load("hello"), AlreadyLoaded)
    [event] = events.of("plugin_compile_failed")
    assert "already loaded" in event.message and "running" in event.message
    logged_failures.flush(AlreadyLoaded)


# -- what the table and the manager show -----------------------------------


def test_the_table_shows_the_events_a_plugin_handles_while_it_runs(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello", """
        @handler()
        def greet(self):
            return "hi"

        @handler("shout")
        def loud(self):
            return "HI"
    """)
    write_plugin(plugdir, "slow", header="from twisted.internet.task import deferLater\n", body="""
        @handler()
        def greet(self):
            return "slow"

        def startService(self):
            Plugin.startService(self)
            return deferLater(self.api.reactor, 2, lambda: None)
    """)
    result_of(manager.load("hello"))
    d = manager.load("slow")
    assert manager.plugin_table()["hello"].events == ("greet", "shout")
    assert manager.plugin_table()["slow"].events == ()  # starting: not called yet
    clock.advance(2)
    result_of(d)
    assert manager.plugin_table()["slow"].events == ("greet",)
    assert result_of(manager.emit("greet")) == ["hi", "slow"]


def test_module_prefix_names_the_plugins_modules(env):
    manager, clock, events, plugdir = env
    other, _, _ = clock_manager(paths=[plugdir])
    assert manager.module_prefix != other.module_prefix
    write_plugin(plugdir, "hello")
    result_of(manager.load("hello"))
    assert plugin_modules(manager) == [manager.module_prefix + "hello"]
    assert manager.plugin_table()["hello"].module == manager.module_prefix + "hello"
    assert plugin_modules(other) == []
    result_of(manager.unload("hello"))
    assert plugin_modules(manager) == []


def test_a_later_manager_never_takes_the_prefix_of_one_gone(plugdir):
    # An object's id is reused by the next one: a prefix made of it would
    # give a new manager the modules an earlier one left in sys.modules.
    prefixes = []
    for _ in range(20):
        prefixes.append(clock_manager(paths=[plugdir])[0].module_prefix)
        gc.collect()
    assert len(set(prefixes)) == len(prefixes), prefixes
    assert all(p.startswith("_plugmgr_") and p.endswith("__") for p in prefixes)


def test_add_package_extends_where_plugins_are_found(env, tmp_path, monkeypatch):
    manager, clock, events, plugdir = env
    package = tmp_path / "extra_plugins_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_plugin(package, "extra")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "extra" not in manager.available()
    manager.add_package("extra_plugins_pkg")
    manager.add_package("extra_plugins_pkg")
    assert manager.packages == ("extra_plugins_pkg",)
    assert "extra" in manager.available()
    result_of(manager.load("extra"))
    assert manager.plugin_table()["extra"].module == "extra_plugins_pkg.extra"
    result_of(manager.unload("extra"))
    for bad in ("", 3, None):
        with pytest.raises(TypeError):
            manager.add_package(bad)
    assert manager.packages == ("extra_plugins_pkg",)


def test_watch_mode_says_how_files_are_watched(env):
    manager, clock, events, plugdir = env
    assert manager.watch_mode is None
    manager.watch(use_inotify=False, poll_interval=1)
    assert manager.watch_mode == "polling"
    manager.unwatch()
    assert manager.watch_mode is None


# -- load ----------------------------------------------------------------


def test_load_starts_plugin_with_data_and_broadcasts(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    plugin = result_of(manager.load("hello", {"greeting": "hi"}))
    assert plugin.data == {"greeting": "hi"}
    assert plugin.running
    assert plugin.parent is manager
    assert manager.getServiceNamed("hello") is plugin
    assert events.kinds("hello") == ["plugin_started"]
    info = manager.plugin_table()["hello"]
    assert (info.name, info.version, info.state) == ("hello", "1.0", PluginState.RUNNING)
    assert info.longname == "test plugin hello" and info.license == "MIT"
    assert info.author == "tests" and info.source.endswith("hello.py")


def test_plugin_table_is_broadcast(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    result_of(manager.load("hello"))
    table = manager.plugin_table()
    [event] = events.of("plugin_table")
    assert event.table == table


def test_plugin_from_path_gets_private_module_name(env):
    manager, clock, events, plugdir = env
    import json

    write_plugin(plugdir, "json")
    result_of(manager.load("json"))
    assert sys.modules["json"] is json
    assert manager.plugin_table()["json"].module != "json"


def test_package_plugins(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg_plugins_a"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write_plugin(pkg, "alpha")
    monkeypatch.syspath_prepend(str(tmp_path))
    manager, clock, events = clock_manager(packages=["mypkg_plugins_a"])
    plugin = result_of(manager.load("alpha"))
    assert type(plugin).__module__ == "mypkg_plugins_a.alpha"
    assert manager.available() == ["alpha"]
    result_of(manager.unload("alpha"))
    assert "mypkg_plugins_a.alpha" not in sys.modules
    assert not hasattr(sys.modules["mypkg_plugins_a"], "alpha")
    result_of(manager.shutdown())


def test_package_plugin_with_submodule(env):
    manager, clock, events, plugdir = env
    pkg = plugdir / "multi"
    pkg.mkdir()
    (pkg / "helpers.py").write_text("VALUE = 41\n")
    write_plugin(pkg, "__init__", header="from . import helpers\n",
                 meta="name = 'multi'\nversion = '1'\n",
                 body="def answer(self):\n    return helpers.VALUE + 1\n")
    plugin = result_of(manager.load("multi"))
    assert plugin.answer() == 42
    owned = plugin_modules(manager)
    assert len(owned) == 2
    result_of(manager.unload("multi"))
    assert plugin_modules(manager) == []


@pytest.mark.parametrize("bad", ["", "a.b", "../x", "/etc/passwd", "import", 3, None, "x-y"])
def test_invalid_names_are_refused_before_import(env, bad, logged_failures):
    manager, clock, events, plugdir = env
    before = set(sys.modules)
    failure = failure_of(manager.load(bad), InvalidName)
    assert failure.value.plugin == bad
    assert repr(bad) in str(failure.value)
    assert set(sys.modules) == before
    assert events.kinds() == ["plugin_compile_failed"]
    assert manager.plugin_table() == {}
    logged_failures.flush(InvalidName)


def test_name_importable_from_syspath_is_not_imported(env, logged_failures):
    manager, clock, events, plugdir = env
    failure_of(manager.load("textwrap"), NoSuchPlugin)
    failure = failure_of(manager.load("twisted_plugmgr"), NoSuchPlugin)
    assert "not found" in str(failure.value)
    assert events.kinds() == ["plugin_compile_failed"] * 2
    logged_failures.flush(NoSuchPlugin)


def test_symlink_outside_path_is_refused(env, tmp_path, logged_failures):
    manager, clock, events, plugdir = env
    outside = tmp_path / "outside"
    outside.mkdir()
    write_plugin(outside, "evil")
    (plugdir / "evil.py").symlink_to(outside / "evil.py")
    failure_of(manager.load("evil"), NoSuchPlugin)
    assert "evil" not in manager.available()
    logged_failures.flush(NoSuchPlugin)


def test_syntax_error_is_compile_failed_and_leaves_nothing(env, logged_failures):
    manager, clock, events, plugdir = env
    (plugdir / "broken.py").write_text("def (:\n")
    failure = failure_of(manager.load("broken"), CompileFailed)
    assert failure.value.failure.check(SyntaxError)
    assert "broken" in str(failure.value)
    [event] = events.of("plugin_compile_failed")
    assert event.plugin == "broken" and event.failure.value is failure.value
    assert_nothing_left(manager, "broken")
    logged_failures.flush(CompileFailed)


def test_import_that_raises_halfway_leaves_no_module(env, logged_failures):
    manager, clock, events, plugdir = env
    pkg = plugdir / "half"
    pkg.mkdir()
    (pkg / "sub.py").write_text("X = 1\n")
    (pkg / "__init__.py").write_text("from . import sub\nA = 1\nraise RuntimeError('halfway')\n")
    failure = failure_of(manager.load("half"), CompileFailed)
    assert failure.value.failure.check(RuntimeError)
    assert plugin_modules(manager) == []
    assert_nothing_left(manager, "half")
    logged_failures.flush(CompileFailed)


def test_sys_exit_at_import_is_contained(env, logged_failures):
    manager, clock, events, plugdir = env
    (plugdir / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    failure = failure_of(manager.load("quitter"), CompileFailed)
    assert failure.value.failure.check(SystemExit)
    assert_nothing_left(manager, "quitter")
    logged_failures.flush(CompileFailed)


def test_already_loaded(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    first = result_of(manager.load("hello"))
    failure_of(manager.load("hello"), AlreadyLoaded)
    assert events.kinds() == ["plugin_started", "plugin_compile_failed"]
    assert manager.getServiceNamed("hello") is first
    logged_failures.flush(AlreadyLoaded)


@pytest.mark.parametrize(
    "source, problem",
    [
        ("from twisted_plugmgr import Plugin\n", "found none"),
        (
            "from twisted_plugmgr import Plugin\n"
            "class A(Plugin):\n    name='multi2'\n    version='1'\n"
            "class B(Plugin):\n    name='multi2'\n    version='1'\n",
            "found A, B",
        ),
        ("from twisted_plugmgr import Plugin\nclass A(Plugin):\n    version='1'\n", "no 'name'"),
        (
            "from twisted_plugmgr import Plugin\nclass A(Plugin):\n    name='other'\n    version='1'\n",
            "'other', not the loaded name",
        ),
        ("from twisted_plugmgr import Plugin\nclass A(Plugin):\n    name='multi2'\n", "no 'version'"),
        (
            "from twisted_plugmgr import Plugin\nclass A(Plugin):\n    name='multi2'\n"
            "    version='1'\n    requires='db'\n",
            "requires must be a tuple",
        ),
        (
            "from twisted_plugmgr import Plugin, handler\nclass A(Plugin):\n    name='multi2'\n"
            "    version='1'\n    @handler('x')\n    def a(self): pass\n"
            "    @handler('x')\n    def b(self): pass\n",
            "two handlers",
        ),
    ],
)
def test_invalid_metadata(env, logged_failures, source, problem):
    manager, clock, events, plugdir = env
    (plugdir / "multi2.py").write_text(source)
    failure = failure_of(manager.load("multi2"), InvalidMetadata)
    assert problem in str(failure.value)
    assert events.kinds() == ["plugin_invalid_values"]
    assert_nothing_left(manager, "multi2")
    logged_failures.flush(InvalidMetadata)


def test_imported_plugin_class_does_not_count(env, logged_failures):
    manager, clock, events, plugdir = env
    (plugdir / "reexport.py").write_text("from twisted_plugmgr import Plugin\n")
    failure = failure_of(manager.load("reexport"), InvalidMetadata)
    assert "reexport" in str(failure.value)
    logged_failures.flush(InvalidMetadata)


def test_missing_optional_metadata_only_warns(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "bare", meta="name = 'bare'\nversion = '0.1'\n")
    result_of(manager.load("bare"))
    [event] = events.of("plugin_invalid_values")
    assert event.missing == ("longname", "license", "author")
    assert events.kinds("bare") == ["plugin_invalid_values", "plugin_started"]


def test_constructor_raising_is_init_failed(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ctor", body="def __init__(self, api, data):\n    raise ValueError('no')\n")
    failure = failure_of(manager.load("ctor"), InitFailed)
    assert failure.value.failure.check(ValueError)
    assert events.kinds() == ["plugin_init_failed"]
    assert_nothing_left(manager, "ctor")
    logged_failures.flush(InitFailed)


def test_start_raising_is_init_failed_and_timers_cleaned(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "badstart", body="""
        def startService(self):
            self.api.reactor.callLater(10, print, "never")
            self.api.error(RuntimeError("reported during start"))
            raise RuntimeError("cannot start")
    """)
    failure = failure_of(manager.load("badstart"), InitFailed)
    assert failure.value.failure.check(RuntimeError)
    [error] = events.of("plugin_error")
    assert error.plugin == "badstart"
    assert events.kinds() == ["plugin_error", "plugin_warning", "plugin_init_failed"]
    assert clock.getDelayedCalls() == []
    assert_nothing_left(manager, "badstart")
    logged_failures.flush(RuntimeError, InitFailed)


def test_async_start_is_waited_for(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "slow", header="from twisted.internet.task import deferLater\n", body="""
        def startService(self):
            Plugin.startService(self)
            return deferLater(self.api.reactor, 2, lambda: None)
    """)
    d = manager.load("slow")
    assert not d.called
    assert manager.plugin_table()["slow"].state is PluginState.STARTING
    clock.advance(2)
    result_of(d)
    assert manager.plugin_table()["slow"].state is PluginState.RUNNING


def test_start_deadline(plugdir, logged_failures):
    manager, clock, events = clock_manager(paths=[plugdir], start_deadline=5)
    write_plugin(plugdir, "hang", header="from twisted.internet.defer import Deferred\n",
                 body="def startService(self):\n    return Deferred()\n")
    d = manager.load("hang")
    clock.advance(5)
    failure = failure_of(d, InitFailed)
    assert failure.value.failure.check(StartTimedOut)
    assert_nothing_left(manager, "hang")
    result_of(manager.shutdown())
    logged_failures.flush(InitFailed)


def test_load_before_manager_starts(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir], start=False)
    write_plugin(plugdir, "early")
    d = manager.load("early")
    assert not d.called
    assert manager.plugin_table()["early"].state is PluginState.LOADED
    manager.startService()
    plugin = result_of(d)
    assert plugin.running
    result_of(manager.shutdown())


def test_available_lists_without_importing(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "one")
    (plugdir / "two").mkdir()
    (plugdir / "two" / "__init__.py").write_text("raise SystemExit('imported!')\n")
    (plugdir / "not-a-plugin.py").write_text("")
    (plugdir / "README.txt").write_text("")
    before = set(sys.modules)
    assert manager.available() == ["one", "two"]
    assert set(sys.modules) == before


# -- unload --------------------------------------------------------------


def test_unload_returns_quit_message_and_cleans_up(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello", body="""
        def shutdown(self, mode, reason):
            return f"bye ({mode.value}, {reason})"
    """)
    plugin = result_of(manager.load("hello"))
    assert result_of(manager.unload("hello", "lazy", "done")) == "bye (lazy, done)"
    assert not plugin.running and plugin.parent is None
    [event] = events.of("plugin_unloaded")
    assert event.quit_message == "bye (lazy, done)"
    assert_nothing_left(manager, "hello")


def test_unload_unknown(env, logged_failures):
    manager, clock, events, plugdir = env
    failure_of(manager.unload("nope"), NoSuchPlugin)
    failure_of(manager.unload("../nope"), InvalidName)
    assert events.kinds() == ["plugin_unload_failed"] * 2
    logged_failures.flush(NoSuchPlugin, InvalidName)


def test_unload_with_bad_mode(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    result_of(manager.load("hello"))
    failure = failure_of(manager.unload("hello", "sometime"))
    assert "sometime" in str(failure.value)
    assert manager.plugin_table()["hello"].state is PluginState.RUNNING
    logged_failures.flush()


def test_unload_deadline_removes_plugin_anyway(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "stuck", header="from twisted.internet.defer import Deferred\n",
                 body="def shutdown(self, mode, reason):\n    return Deferred()\n")
    result_of(manager.load("stuck"))
    d = manager.unload("stuck", ShutdownMode.IMMEDIATE)
    clock.advance(0.9)
    assert not d.called
    clock.advance(0.1)
    failure = failure_of(d, ShutdownTimedOut)
    assert isinstance(failure.value, ShutdownFailed)
    [error] = events.of("plugin_error")
    assert error.failure.check(ShutdownTimedOut)
    assert events.of("plugin_unloaded")[0].quit_message is None
    assert_nothing_left(manager, "stuck")
    logged_failures.flush(ShutdownTimedOut)


def test_shutdown_raising_still_removes(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "crash", body="def shutdown(self, mode, reason):\n    1/0\n")
    result_of(manager.load("crash"))
    failure = failure_of(manager.unload("crash"), ShutdownFailed)
    assert failure.value.failure.check(ZeroDivisionError)
    assert events.kinds("crash") == ["plugin_started", "plugin_error", "plugin_unloaded"]
    assert_nothing_left(manager, "crash")
    logged_failures.flush(ZeroDivisionError)


def test_custom_deadlines(plugdir, logged_failures):
    manager, clock, events = clock_manager(paths=[plugdir], deadlines={"lazy": 3})
    write_plugin(plugdir, "stuck", header="from twisted.internet.defer import Deferred\n",
                 body="def shutdown(self, mode, reason):\n    return Deferred()\n")
    result_of(manager.load("stuck"))
    d = manager.unload("stuck", "lazy")
    clock.advance(3)
    failure_of(d, ShutdownTimedOut)
    result_of(manager.shutdown())
    logged_failures.flush(ShutdownTimedOut)


def test_bad_deadlines_are_refused():
    with pytest.raises(ValueError, match="sometimes"):
        clock_manager(deadlines={"sometimes": 1})
    with pytest.raises(ValueError, match="positive"):
        clock_manager(deadlines={"smart": -1})


def test_unload_while_starting_waits_for_start(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "slow", header="from twisted.internet.task import deferLater\n", body="""
        def startService(self):
            Plugin.startService(self)
            return deferLater(self.api.reactor, 2, lambda: None)
    """)
    loaded = manager.load("slow")
    unloaded = manager.unload("slow")
    assert not unloaded.called
    clock.advance(2)
    result_of(loaded)
    assert result_of(unloaded) == "slow unloaded"
    assert events.kinds("slow") == ["plugin_started", "plugin_unloaded"]
    assert_nothing_left(manager, "slow")


def test_load_while_stopping_loads_anew_after_stop(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "lazy", header="from twisted.internet.task import deferLater\n", body="""
        def shutdown(self, mode, reason):
            return deferLater(self.api.reactor, 3, lambda: "done")
    """)
    first = result_of(manager.load("lazy"))
    unloaded = manager.unload("lazy", "lazy")
    assert manager.plugin_table()["lazy"].state is PluginState.STOPPING
    reloaded = manager.load("lazy")
    assert not reloaded.called
    clock.advance(3)
    assert result_of(unloaded) == "done"
    second = result_of(reloaded)
    assert second is not first and second.running
    assert events.kinds("lazy") == ["plugin_started", "plugin_unloaded", "plugin_started"]
    d = manager.unload("lazy")
    clock.advance(3)
    assert result_of(d) == "done"


def test_timers_left_running_are_cancelled_and_reported(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "timers", body="""
        def startService(self):
            Plugin.startService(self)
            for i in range(3):
                self.api.reactor.callLater(100, print, i)
            self.loop = self.api.looping_call(lambda: None)
            self.loop.start(1)
    """)
    result_of(manager.load("timers"))
    assert len(clock.getDelayedCalls()) == 4
    result_of(manager.unload("timers"))
    assert clock.getDelayedCalls() == []
    messages = [e.message for e in events.of("plugin_warning")]
    assert messages == ["left 3 timers running", "left 1 looping call running"]


# -- shutdown ------------------------------------------------------------


def write_chain(plugdir):
    """db <- cache <- web, and a lone one."""
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "cache", body="requires = ('db',)\n")
    write_plugin(plugdir, "web", body="requires = ('cache',)\n")
    write_plugin(plugdir, "lone")


def test_shutdown_in_stages(env):
    manager, clock, events, plugdir = env
    write_chain(plugdir)
    result_of(manager.load("web"))
    result_of(manager.load("lone"))
    assert list(manager.plugin_table()) == ["web", "db", "cache", "lone"] or set(
        manager.plugin_table()) == {"web", "db", "cache", "lone"}
    events.clear()
    result_of(manager.shutdown())
    unloaded = [e.plugin for e in events.of("plugin_unloaded")]
    assert unloaded.index("web") < unloaded.index("cache") < unloaded.index("db")
    assert [e.count for e in events.of("plugin_waiting")] == [3, 2, 1]
    assert events.kinds()[-1] == "plugin_manager_shutdown"
    assert manager.services == []


def test_shutdown_waits_for_lazy_plugins_concurrently(env):
    manager, clock, events, plugdir = env
    for name, seconds in (("a", 5), ("b", 3)):
        write_plugin(plugdir, name, header="from twisted.internet.task import deferLater\n", body=f"""
            def shutdown(self, mode, reason):
                return deferLater(self.api.reactor, {seconds}, lambda: "{name} done")
        """)
        result_of(manager.load(name))
    d = manager.shutdown("lazy")
    clock.advance(3)
    assert not d.called and events.of("plugin_waiting")[0].count == 1
    clock.advance(2)
    result_of(d)
    assert [e.quit_message for e in events.of("plugin_unloaded")] == ["b done", "a done"]


def test_shutdown_always_finishes(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "stuck", header="from twisted.internet.defer import Deferred\n",
                 body="def shutdown(self, mode, reason):\n    return Deferred()\n")
    write_plugin(plugdir, "crash", body="def shutdown(self, mode, reason):\n    1/0\n")
    result_of(manager.load("stuck"))
    result_of(manager.load("crash"))
    d = manager.shutdown()
    clock.advance(10)
    assert result_of(d) is None
    assert manager.services == [] and manager.plugin_table() == {}
    logged_failures.flush(ShutdownTimedOut, ZeroDivisionError)


def test_load_after_shutdown_is_refused_and_second_shutdown_harmless(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    result_of(manager.shutdown())
    failure = failure_of(manager.load("hello"), ManagerStopped)
    assert "shut down" in str(failure.value)
    result_of(manager.shutdown())
    assert events.kinds().count("plugin_manager_shutdown") == 1
    logged_failures.flush(ManagerStopped)


def test_stop_service_is_smart_shutdown(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello", body="def shutdown(self, mode, reason):\n    return mode\n")
    result_of(manager.load("hello"))
    result_of(manager.stopService())
    assert events.of("plugin_unloaded")[0].quit_message is ShutdownMode.SMART
    assert not manager.running


def test_shutdown_before_start_fails_pending_loads(plugdir, logged_failures):
    manager, clock, events = clock_manager(paths=[plugdir], start=False)
    write_plugin(plugdir, "early")
    d = manager.load("early")
    result_of(manager.shutdown())
    failure_of(d, ManagerStopped)
    assert manager.services == []


# -- dependencies --------------------------------------------------------


def test_requirements_are_loaded_first(env):
    manager, clock, events, plugdir = env
    write_chain(plugdir)
    result_of(manager.load("web"))
    assert events.kinds() == ["plugin_started"] * 3
    assert [e.plugin for e in events.events] == ["db", "cache", "web"]


def test_missing_requirement_leaves_nothing(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "cache", body="requires = ('db', 'ghost')\n")
    failure = failure_of(manager.load("cache"), DependencyError)
    assert "ghost" in str(failure.value)
    assert manager.plugin_table() == {}
    assert plugin_modules(manager) == []
    logged_failures.flush(NoSuchPlugin, DependencyError)


def test_dependency_cycle(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "x", body="requires = ('y',)\n")
    write_plugin(plugdir, "y", body="requires = ('x',)\n")
    failure = failure_of(manager.load("x"), DependencyError)
    assert "x -> y -> x" in str(failure.value)
    assert manager.plugin_table() == {} and plugin_modules(manager) == []
    logged_failures.flush(DependencyError)


def test_a_failure_deep_in_the_requirements_is_said_once(env, logged_failures):
    """
    A cycle (or a broken module) several requirements down: one line that
    names the plugin loaded, its requirement, the chain, and the cause at
    its end, once (not each level's message inside the next).
    """
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "front", body="requires = ('a',)\n")
    write_plugin(plugdir, "a", body="requires = ('b',)\n")
    write_plugin(plugdir, "b", body="requires = ('c',)\n")
    write_plugin(plugdir, "c", body="requires = ('a',)\n")
    failure = failure_of(manager.load("front"), DependencyError)
    assert str(failure.value) == (
        "plugin 'front': dependency error: cannot load requirement 'a' (chain front -> a -> b "
        "-> c -> a) (DependencyError: plugin 'c': dependency error: dependency cycle: front -> "
        "a -> b -> c -> a)")
    assert failure.value.requirement == "a" and failure.value.chain[-1] == "a"
    (plugdir / "c.py").write_text("raise ImportError('no c today')\n")
    failure = failure_of(manager.load("front"), DependencyError)
    message = str(failure.value)
    assert message.startswith("plugin 'front': dependency error: cannot load requirement 'a' "
                              "(chain front -> a -> b -> c) (CompileFailed: plugin 'c': module "
                              "failed to import: ")
    assert message.count("no c today") == 1 and "\n" not in message
    assert manager.plugin_table() == {} and plugin_modules(manager) == []
    logged_failures.flush(DependencyError, CompileFailed)


def test_unload_cascades_to_dependents(env):
    manager, clock, events, plugdir = env
    write_chain(plugdir)
    result_of(manager.load("web"))
    events.clear()
    result_of(manager.unload("db"))
    assert [e.plugin for e in events.of("plugin_unloaded")] == ["web", "cache", "db"]


def test_unload_without_cascade_refuses(env, logged_failures):
    manager, clock, events, plugdir = env
    write_chain(plugdir)
    result_of(manager.load("web"))
    failure = failure_of(manager.unload("db", cascade=False), DependencyError)
    assert "cache" in str(failure.value) and "web" in str(failure.value)
    assert set(manager.plugin_table()) == {"db", "cache", "web"}
    logged_failures.flush(DependencyError)


# -- listeners -----------------------------------------------------------


def test_listener_order_and_registration(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    seen = []

    def first(event):
        seen.append(("first", event.kind))

    def broken(event):
        raise RuntimeError("listener bug")

    def last(event):
        seen.append(("last", event.kind))

    for listener in (first, first, broken, last):
        manager.register(listener)
    result_of(manager.load("hello"))
    assert seen == [("first", "plugin_started"), ("last", "plugin_started")]
    assert manager.plugin_table()["hello"].state is PluginState.RUNNING
    assert logged_failures.flush(RuntimeError)
    manager.unregister(first)
    manager.unregister(broken)
    seen.clear()
    result_of(manager.unload("hello"))
    assert seen == [("last", "plugin_unloaded")]


def test_events_are_logged_with_fields(env, logged_failures):
    from twisted.logger import globalLogPublisher

    manager, clock, events, plugdir = env
    write_plugin(plugdir, "hello")
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        result_of(manager.load("hello"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    [entry] = [e for e in logged if e.get("kind") == "plugin_started"]
    assert entry["plugin"] == "hello"


# -- addressing ----------------------------------------------------------

HANDLERS = """
    @handler()
    def greet(self, who):
        return f"{{self.name}} greets {{who}}"

    @handler("order", priority={priority})
    def order(self):
        return self.name
"""


def load_handlers(manager, plugdir, names_priorities):
    for name, priority in names_priorities:
        write_plugin(plugdir, name, HANDLERS.format(priority=priority))
        result_of(manager.load(name))


def test_emit_order_by_priority_then_load_order(env):
    manager, clock, events, plugdir = env
    load_handlers(manager, plugdir, [("a", 0), ("b", 10), ("c", 0), ("d", 5)])
    assert result_of(manager.emit("order")) == ["b", "d", "a", "c"]
    assert result_of(manager.emit("greet", "you")) == [f"{n} greets you" for n in "abcd"]
    assert result_of(manager.emit("nobody")) == []


def test_emit_touches_only_handlers(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "quiet", body="def __getattribute__(self, name):\n"
                 "    if name == 'greet': raise AssertionError('touched')\n"
                 "    return object.__getattribute__(self, name)\n")
    result_of(manager.load("quiet"))
    load_handlers(manager, plugdir, [("a", 0)])
    assert result_of(manager.emit("greet", "x")) == ["a greets x"]
    assert manager.plugin_table()["quiet"].calls == 0


def test_emit_stop_ends_chain(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "eater", body="""
        @handler("greet", priority=5)
        def eat(self, who):
            return STOP
    """)
    result_of(manager.load("eater"))
    load_handlers(manager, plugdir, [("a", 0)])
    assert result_of(manager.emit("greet", "x")) == []


def test_emit_failing_handler_is_reported_and_skipped(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "bad", header="from twisted.internet.defer import fail\n", body="""
        @handler("greet", priority=5)
        def greet(self, who):
            raise ValueError("bad handler")

        @handler("async_greet")
        def agreet(self):
            return fail(KeyError("async bad"))
    """)
    result_of(manager.load("bad"))
    load_handlers(manager, plugdir, [("a", 0)])
    assert result_of(manager.emit("greet", "x")) == ["a greets x"]
    assert result_of(manager.emit("async_greet")) == []
    assert [e.failure.type for e in events.of("plugin_error")] == [ValueError, KeyError]
    logged_failures.flush(ValueError, KeyError)


def test_emit_waits_for_async_handlers_in_order(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "slowh", header="from twisted.internet.task import deferLater\n", body="""
        @handler("greet", priority=1)
        def greet(self, who):
            return deferLater(self.api.reactor, 1, lambda: "slow " + who)
    """)
    result_of(manager.load("slowh"))
    load_handlers(manager, plugdir, [("a", 0)])
    d = manager.emit("greet", "x")
    assert not d.called
    clock.advance(1)
    assert result_of(d) == ["slow x", "a greets x"]


def test_call_and_errors(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "calc", body="""
        @handler()
        def add(self, a, b=0):
            return a + b

        @handler()
        def boom(self):
            raise ValueError("boom")
    """)
    result_of(manager.load("calc"))
    assert result_of(manager.call("calc", "add", 2, b=3)) == 5
    failure = failure_of(manager.call("calc", "missing"), NoSuchHandler)
    assert "missing" in str(failure.value)
    failure_of(manager.call("ghost", "add"), NoSuchPlugin)
    failure_of(manager.call("calc", "boom"), ValueError)
    assert [e.kind for e in events.of("plugin_error")] == ["plugin_error"]
    logged_failures.flush(ValueError)


def test_default_handler(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "catchall", body="""
        def default(self, event, *args, **kw):
            return (event, args, kw)
    """)
    result_of(manager.load("catchall"))
    assert result_of(manager.call("catchall", "anything", 1, k=2)) == ("anything", (1,), {"k": 2})
    assert result_of(manager.emit("anything")) == []


def test_post_is_later_and_fifo(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "inbox", body="""
        def startService(self):
            Plugin.startService(self)
            self.got = []

        @handler()
        def note(self, value):
            self.got.append(value)

        @handler()
        def boom(self):
            raise ValueError("in post")
    """)
    plugin = result_of(manager.load("inbox"))
    for i in range(5):
        assert manager.post("inbox", "note", i) is None
    manager.post("inbox", "boom")
    manager.post("inbox", "nohandler")
    assert plugin.got == []
    clock.advance(0)
    assert plugin.got == [0, 1, 2, 3, 4]
    assert [e.failure.type for e in events.of("plugin_error")] == [ValueError, NoSuchHandler]
    with pytest.raises(NoSuchPlugin):
        manager.post("ghost", "note", 1)
    logged_failures.flush(ValueError, NoSuchHandler)


def test_posts_pending_at_unload_are_delivered_first(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "inbox", body="""
        got = []

        @handler()
        def note(self, value):
            self.got.append(value)

        def shutdown(self, mode, reason):
            return list(self.got)
    """)
    result_of(manager.load("inbox"))
    manager.post("inbox", "note", 1)
    assert result_of(manager.unload("inbox")) == [1]


def test_call_while_starting_is_held(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "slow", header="from twisted.internet.task import deferLater\n", body="""
        def startService(self):
            Plugin.startService(self)
            self.ready = False
            def ready():
                self.ready = True
            return deferLater(self.api.reactor, 2, ready)

        @handler()
        def is_ready(self):
            return self.ready
    """)
    manager.load("slow")
    d = manager.call("slow", "is_ready")
    clock.advance(1)
    assert not d.called
    clock.advance(1)
    assert result_of(d) is True


def test_plugin_api_talks_to_other_plugins(env, logged_failures):
    manager, clock, events, plugdir = env
    load_handlers(manager, plugdir, [("a", 0)])
    write_plugin(plugdir, "client", body="""
        @handler()
        def relay(self):
            self.api.warning("relaying")
            return self.api.call("a", "greet", "client")
    """)
    result_of(manager.load("client"))
    assert result_of(manager.call("client", "relay")) == "a greets client"
    [warning] = events.of("plugin_warning")
    assert (warning.plugin, warning.message) == ("client", "relaying")


def test_handler_stats_and_slow_warning(plugdir):
    ticks = iter([0.0, 0.5, 1.0, 1.01])
    manager, clock, events = clock_manager(paths=[plugdir], timer=lambda: next(ticks))
    write_plugin(plugdir, "busy", body="@handler()\ndef work(self):\n    return 1\n")
    result_of(manager.load("busy"))
    result_of(manager.call("busy", "work"))
    result_of(manager.emit("work"))
    info = manager.plugin_table()["busy"]
    assert info.calls == 2
    assert info.longest_call == pytest.approx(0.5)
    assert info.busy_time == pytest.approx(0.51)
    [warning] = events.of("plugin_warning")
    assert "work" in warning.message and "0.500" in warning.message
    result_of(manager.shutdown())

