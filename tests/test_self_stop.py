"""
A plugin that ends itself is unloaded like any other (POE: a plugin session
that stops on its own produces plugin_unloaded): api.stop(), stopService()
and disownServiceParent() all go through the manager's unload path, and
plugin_unloaded says why a plugin went. Everything on a task.Clock.
"""

from __future__ import annotations

import pytest
from twisted.application.service import MultiService

from twisted_plugmgr import NoSuchPlugin, PluginError, PluginState
from twisted_plugmgr.testing import failure_of, plugin_modules, result_of, write_plugin

ENDER = """
def __init__(self, api, data=None):
    super().__init__(api, data)
    self.reasons = []

@handler()
def ping(self):
    return "pong"

@handler()
def end(self, how):
    if how == "api":
        self.stopped = self.api.stop("tired")
    elif how == "stopService":
        self.stopped = self.stopService()
    else:
        self.stopped = self.disownServiceParent()
    return "ending"

def shutdown(self, mode, reason):
    self.reasons.append((mode.value, reason))
    return "bye: " + reason
"""


def assert_gone(manager, name):
    assert name not in manager.plugin_table()
    assert name not in manager.namedServices
    assert not [s for s in manager.services if getattr(s, "name", None) == name]
    assert not [m for m in plugin_modules(manager) if m.endswith("__" + name)]


@pytest.mark.parametrize("how", ["api", "stopService", "disownServiceParent"])
def test_a_plugin_that_ends_itself_is_unloaded(env, how, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ender", ENDER)
    write_plugin(plugdir, "other", "@handler()\ndef ping(self):\n    return 'other'\n")
    plugin = result_of(manager.load("ender"))
    result_of(manager.load("other"))
    manager.post("ender", "ping")  # queued: delivered first, on the next turn
    ended = manager.call("ender", "end", how)
    clock.advance(0)
    assert result_of(ended) == "ending"
    quit_message = result_of(plugin.stopped)
    [unloaded] = events.of("plugin_unloaded")
    assert unloaded.plugin == "ender" and unloaded.reason == "stopped_itself"
    assert unloaded.quit_message == quit_message
    assert quit_message.startswith("bye: ")
    assert plugin.reasons[0][0] == "smart"
    assert not plugin.running
    assert_gone(manager, "ender")
    # Gone from the event index; addressing it is refused; the rest serves.
    assert result_of(manager.emit("ping")) == ["other"]
    with pytest.raises(NoSuchPlugin):
        manager.post("ender", "ping")
    failure_of(manager.call("ender", "ping"), NoSuchPlugin)
    # Its name is free to load again.
    again = result_of(manager.load("ender"))
    assert again is not plugin and again.running
    assert manager.plugin_table()["ender"].state is PluginState.RUNNING


def test_api_stop_passes_its_reason_to_shutdown_and_answers_the_quit_message(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ender", ENDER)
    plugin = result_of(manager.load("ender"))
    result_of(manager.call("ender", "end", "api"))
    assert result_of(plugin.stopped) == "bye: tired"
    assert plugin.reasons == [("smart", "tired")]


def test_messages_held_for_a_plugin_that_ends_itself_are_reported(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ender", """
def shutdown(self, mode, reason):
    return self.api.reactor.looping_call(lambda: None).start(5, now=False)
""")
    plugin = result_of(manager.load("ender"))
    stopped = plugin.api.stop("now")
    # It is stopping: a post is refused at once, a call fails.
    with pytest.raises(NoSuchPlugin):
        manager.post("ender", "ping")
    failure_of(manager.call("ender", "ping"), NoSuchPlugin)
    clock.advance(10)  # past the smart deadline
    failure_of(stopped)
    assert events.of("plugin_unloaded")[0].reason == "stopped_itself"
    assert_gone(manager, "ender")
    logged_failures.flush(Exception)


def test_a_plugin_that_ends_itself_takes_its_dependents_first(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "web", "requires = ('db',)\n")
    result_of(manager.load("web"))
    db = manager.getServiceNamed("db")
    result_of(db.api.stop())
    assert [(e.plugin, e.reason) for e in events.of("plugin_unloaded")] == [
        ("web", "requirement_unloaded"), ("db", "stopped_itself")]
    assert manager.plugin_table() == {}


def test_an_old_version_cannot_end_the_new_one(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ender", ENDER)
    old = result_of(manager.load("ender"))
    write_plugin(plugdir, "ender", ENDER, version="2.0")
    new = result_of(manager.reload("ender"))
    failure_of(old.api.stop("stale"), NoSuchPlugin)
    old.stopService()  # no longer its manager's child: a plain Service stop
    assert manager.plugin_table()["ender"].state is PluginState.RUNNING
    assert manager.getServiceNamed("ender") is new and new.running
    assert events.of("plugin_unloaded") == []


def test_a_plugin_cannot_be_given_a_second_parent(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ender", ENDER)
    plugin = result_of(manager.load("ender"))
    other = MultiService()
    for parent in (other, manager):
        with pytest.raises(PluginError, match="child of its plugin manager") as info:
            plugin.setServiceParent(parent)
        assert info.value.plugin == "ender"
    assert plugin.parent is manager and plugin not in other
    assert manager.getServiceNamed("ender") is plugin and plugin.running
    assert result_of(manager.call("ender", "ping")) == "pong"
    assert events.of("plugin_unloaded") == []


def test_a_plugin_outside_a_manager_stops_as_a_plain_service():
    from twisted_plugmgr.testing import FakePluginAPI

    api = FakePluginAPI("solo")
    from twisted_plugmgr import Plugin

    class Solo(Plugin):
        name = "solo"
        version = "1"

        def shutdown(self, mode, reason):
            return f"{mode.value}: {reason}"

    parent = MultiService()
    plugin = Solo(api)
    plugin.setServiceParent(parent)
    parent.startService()
    assert result_of(plugin.stopService()) == "smart: service stopped"
    assert api.stops == []


def test_the_fake_api_records_stops():
    from twisted_plugmgr.testing import FakePluginAPI

    api = FakePluginAPI("p")
    assert result_of(api.stop("done")) == "done"
    assert api.stops == ["done"]


def test_plugin_unloaded_says_why(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "web", "requires = ('db',)\n")
    write_plugin(plugdir, "solo")
    write_plugin(plugdir, "cache")
    write_plugin(plugdir, "app", "requires = ('cache', 'absent')\n")
    result_of(manager.load("web"))
    result_of(manager.load("solo"))
    result_of(manager.unload("solo"))
    result_of(manager.unload("db"))
    failure_of(manager.load("app"))
    logged_failures.flush(Exception)
    result_of(manager.load("solo"))
    d = manager.shutdown()
    clock.advance(1)
    result_of(d)
    assert [(e.plugin, e.reason) for e in events.of("plugin_unloaded")] == [
        ("solo", "unloaded"),
        ("web", "requirement_unloaded"), ("db", "unloaded"),
        ("cache", "load_failed"),
        ("solo", "shutdown"),
    ]


def test_a_reloaded_version_that_ends_itself_in_its_start_is_unloaded(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "ender", ENDER)
    result_of(manager.load("ender"))
    write_plugin(plugdir, "ender", ENDER + """
def startService(self):
    Plugin.startService(self)
    self.stopped = self.api.stop("not today")
""", version="2.0")
    new = result_of(manager.reload("ender"))
    assert result_of(new.stopped) == "bye: not today"
    assert [e.reason for e in events.of("plugin_unloaded")] == ["stopped_itself"]
    assert_gone(manager, "ender")
