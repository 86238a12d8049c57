"""
Events and the listener registry.
"""

import attr
import pytest

from twisted_plugmgr import EVENT_KINDS, PluginEvent
from twisted_plugmgr._events import Listeners


def test_event_is_frozen():
    event = PluginEvent(kind="plugin_started", plugin="p")
    with pytest.raises(attr.exceptions.FrozenInstanceError):
        event.kind = "x"


def test_every_documented_kind_exists():
    for kind in ("plugin_started", "plugin_compile_failed", "plugin_init_failed",
                 "plugin_invalid_values", "plugin_error", "plugin_warning", "plugin_unloaded",
                 "plugin_unload_failed", "plugin_waiting", "plugin_table",
                 "plugin_manager_shutdown", "plugin_reloaded", "plugin_reload_failed"):
        assert kind in EVENT_KINDS


def test_listeners_get_events_in_registration_order(logged_failures):
    listeners = Listeners()
    got = []
    first = lambda e: got.append(("first", e.kind))  # noqa: E731
    listeners.register(first)
    listeners.register(lambda e: 1 / 0)
    listeners.register(lambda e: got.append(("last", e.kind)))
    listeners.register(first)
    assert len(listeners) == 3
    listeners.broadcast(PluginEvent(kind="plugin_started", plugin="p"))
    assert got == [("first", "plugin_started"), ("last", "plugin_started")]
    [failure] = logged_failures.flush(ZeroDivisionError)
    listeners.unregister(first)
    listeners.unregister(first)
    assert len(listeners) == 2


def test_listener_must_be_callable():
    with pytest.raises(TypeError):
        Listeners().register("not callable")


def test_logged_fields_are_plain_values():
    from twisted.logger import Logger

    logged = []
    listeners = Listeners(Logger(observer=logged.append))
    plugin_instance = object()
    listeners.broadcast(PluginEvent(kind="plugin_unloaded", plugin="p", quit_message=plugin_instance))
    [entry] = logged
    assert entry["plugin"] == "p"
    assert isinstance(entry["quit_message"], str)
