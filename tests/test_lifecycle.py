"""
The plugin state machine and the shutdown modes.
"""

import pytest

from twisted_plugmgr import InvalidTransition, PluginState, ShutdownMode
from twisted_plugmgr._lifecycle import TRANSITIONS, Lifecycle, coerce_deadlines


def test_happy_path():
    life = Lifecycle("p")
    for transition, state in [("loaded", "loaded"), ("start", "starting"), ("started", "running"),
                              ("reload", "reloading"), ("reloaded", "running"),
                              ("stop", "stopping"), ("stopped", "stopped")]:
        assert life.fire(transition) is PluginState(state)


@pytest.mark.parametrize("state", list(PluginState))
def test_impossible_transitions_are_refused_and_change_nothing(state):
    for transition in {t for (_, t) in TRANSITIONS}:
        life = Lifecycle("p", state)
        if (state, transition) in TRANSITIONS:
            assert life.can(transition)
            continue
        assert not life.can(transition)
        with pytest.raises(InvalidTransition) as info:
            life.fire(transition)
        assert life.state is state
        assert info.value.plugin == "p" and info.value.state is state
        assert transition in str(info.value)


def test_terminal_states_have_no_way_out():
    assert not [k for k in TRANSITIONS if k[0] in (PluginState.STOPPED, PluginState.FAILED)]


def test_modes_coerce():
    assert ShutdownMode.coerce("LAZY") is ShutdownMode.LAZY
    assert ShutdownMode.coerce(ShutdownMode.SMART) is ShutdownMode.SMART
    for bad in ("later", 3, None):
        with pytest.raises(ValueError, match="invalid shutdown mode"):
            ShutdownMode.coerce(bad)


def test_deadlines():
    deadlines = coerce_deadlines({"lazy": 5, ShutdownMode.IMMEDIATE: 0.5})
    assert deadlines == {ShutdownMode.IMMEDIATE: 0.5, ShutdownMode.SMART: 10.0,
                         ShutdownMode.LAZY: 5.0}
    for bad in ({"smart": 0}, {"smart": "1"}, {"smart": True}, {"never": 1}):
        with pytest.raises(ValueError):
            coerce_deadlines(bad)
