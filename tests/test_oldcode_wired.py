"""
The manager warns about old code still referenced after an unload or a
reload (Erlang's check_old_code), and stops checking when it shuts down.
"""

from __future__ import annotations

from twisted_plugmgr.testing import clock_manager, result_of, write_plugin

HOLDER = "tests_oldcode_holder"


def test_old_code_held_after_an_unload_and_a_reload_is_named(plugdir, monkeypatch):
    import sys
    import types

    holder = types.ModuleType(HOLDER)
    monkeypatch.setitem(sys.modules, HOLDER, holder)
    manager, clock, events = clock_manager(paths=[plugdir], old_code_grace=5)
    write_plugin(plugdir, "keep", f"""
        def startService(self):
            Plugin.startService(self)
            import sys
            sys.modules[{HOLDER!r}].kept = type(self)  # a registration elsewhere
    """)
    result_of(manager.load("keep"))
    write_plugin(plugdir, "keep", version="2.0")
    result_of(manager.reload("keep"))
    clock.advance(4.9)
    assert events.of("plugin_warning") == []
    clock.advance(0.2)
    [warning] = events.of("plugin_warning")
    assert warning.plugin == "keep" and "1.0" in warning.message
    assert "still referenced" in warning.message and HOLDER in warning.message
    del holder.kept
    result_of(manager.unload("keep"))
    clock.advance(10)
    assert len(events.of("plugin_warning")) == 1  # 2.0 went clean
    d = manager.shutdown()
    clock.advance(1)
    result_of(d)
    assert clock.getDelayedCalls() == []


def test_no_warning_when_nothing_holds_the_old_code(plugdir):
    manager, clock, events = clock_manager(paths=[plugdir], old_code_grace=5)
    write_plugin(plugdir, "clean")
    result_of(manager.load("clean"))
    write_plugin(plugdir, "clean", version="2.0")
    result_of(manager.reload("clean"))
    result_of(manager.unload("clean"))
    clock.advance(10)
    assert events.of("plugin_warning") == []
    assert clock.getDelayedCalls() == []
    result_of(manager.shutdown())
