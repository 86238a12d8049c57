"""
The plugin state machine and the shutdown modes.
"""

import pytest

from twisted_plugmgr import InvalidTransition, PluginState, ShutdownMode
from twisted_plugmgr._lifecycle import (
    PHASE_TRANSITIONS,
    TRANSITIONS,
    Lifecycle,
    ManagerLifecycle,
    ManagerPhase,
    coerce_deadlines,
)


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


def test_a_failed_reload_rolls_back_through_the_table():
    life = Lifecycle("p", PluginState.RELOADING)
    assert life.fire("rolled_back") is PluginState.RUNNING


def test_a_plugin_whose_requirement_failed_fails_before_it_starts():
    life = Lifecycle("p", PluginState.LOADED)
    assert life.fire("fail") is PluginState.FAILED


@pytest.mark.parametrize("state, expected", [
    (PluginState.LOADING, {"loading", "headed_for_running"}),
    (PluginState.LOADED, {"addressable", "unstarted", "headed_for_running", "settled", "watched"}),
    (PluginState.STARTING, {"addressable", "headed_for_running"}),
    (PluginState.RUNNING, {"addressable", "serving", "settled", "watched"}),
    (PluginState.RELOADING, {"addressable", "reloading", "headed_for_running", "watched"}),
    (PluginState.STOPPING, {"stopping", "leaving"}),
    (PluginState.STOPPED, {"leaving", "settled"}),
    (PluginState.FAILED, {"settled"}),
])
def test_every_question_about_a_state_is_a_named_predicate(state, expected):
    predicates = {"addressable", "serving", "headed_for_running", "stopping", "leaving",
                  "reloading", "loading", "unstarted", "watched", "settled"}
    life = Lifecycle("p", state)
    assert {name for name in predicates if getattr(life, name)} == expected


def test_the_manager_phase_goes_one_way():
    phase = ManagerLifecycle()
    assert phase.state is ManagerPhase.OPEN and phase.accepting
    assert phase.fire("shutdown") is ManagerPhase.SHUTTING_DOWN
    assert phase.shutting_down and not phase.accepting
    with pytest.raises(InvalidTransition):
        phase.fire("shutdown")
    assert phase.fire("stopped") is ManagerPhase.STOPPED
    assert not phase.accepting and not phase.shutting_down
    for transition in {t for (_, t) in PHASE_TRANSITIONS}:
        with pytest.raises(InvalidTransition):
            phase.fire(transition)
    assert phase.state is ManagerPhase.STOPPED
