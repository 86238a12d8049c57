"""
The plugin lifecycle: one explicit state machine, and the shutdown modes.

Every state a plugin can be in, and every transition between two states, is
in L{TRANSITIONS}; a transition that is not in the table is refused with
L{InvalidTransition} before any plugin code runs. Every question the manager
asks of a plugin's state ("may it be addressed?", "is an operation under
way?") is one of the named predicates of L{Lifecycle}: nothing keeps a flag
beside it::

    loading --loaded--> loaded --start--> starting --started--> running
       |                 |  |                |                     |
       +--fail--> failed <--+ fail           +--fail--> failed     +--reload--> reloading
                            |                                      |            |  |
                          stop  reloaded / rolled_back / cancelled |            |  +--fail--> failed
                            v                                      v            |
               stopped <--stopped-- stopping <-------stop----------+<-----------+

Supervision adds C{running --restart--> restarting --started--> running},
C{running/restarting --quarantine--> quarantined}, and back from
C{quarantined} by C{restart} (load, reset, reload) or C{stop}.

The manager has a phase of its own, L{ManagerPhase}, in L{PHASE_TRANSITIONS}:
C{open --shutdown--> shutting_down --stopped--> stopped}.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ._errors import InvalidTransition

__all__ = [
    "PluginState",
    "ManagerPhase",
    "PHASE_TRANSITIONS",
    "ManagerLifecycle",
    "ShutdownMode",
    "DEFAULT_DEADLINES",
    "DEFAULT_START_DEADLINE",
    "TRANSITIONS",
    "Lifecycle",
    "coerce_deadlines",
]


class PluginState(enum.Enum):
    """
    The states of a plugin, as shown in the plugin table.
    """

    LOADING = "loading"  #: being imported and constructed
    LOADED = "loaded"  #: constructed, waiting for the manager to start
    STARTING = "starting"  #: its startService has not finished yet
    RUNNING = "running"  #: started and serving
    RELOADING = "reloading"  #: a new version is being put in its place
    RESTARTING = "restarting"  #: it failed (or ended) and a fresh instance is on its way
    QUARANTINED = "quarantined"  #: it failed too often: it answers nothing until load or reset
    STOPPING = "stopping"  #: its shutdown has not finished yet
    STOPPED = "stopped"  #: gone (terminal)
    FAILED = "failed"  #: failed to load or start (terminal)


class ShutdownMode(str, enum.Enum):
    """
    How fast a plugin is asked to shut down: C{IMMEDIATE} (as fast as
    possible), C{SMART} (what is needed, no more) or C{LAZY} (take the time
    to clean up). Each mode has a deadline after which the plugin is removed
    anyway. The plain strings C{"immediate"}, C{"smart"} and C{"lazy"} are
    accepted wherever a mode is.
    """

    IMMEDIATE = "immediate"
    SMART = "smart"
    LAZY = "lazy"

    @classmethod
    def coerce(cls, value: Union[ShutdownMode, str]) -> ShutdownMode:
        """
        Return the mode for C{value}, a mode or its name.

        @raise ValueError: naming the value and the modes that exist.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise ValueError(
            f"invalid shutdown mode {value!r}: expected one of "
            + ", ".join(repr(m.value) for m in cls)
        )

    def __str__(self) -> str:
        return self.value


#: Seconds each mode's shutdown may take before the plugin is removed anyway.
DEFAULT_DEADLINES: Mapping[ShutdownMode, float] = {
    ShutdownMode.IMMEDIATE: 1.0,
    ShutdownMode.SMART: 10.0,
    ShutdownMode.LAZY: 120.0,
}

#: Seconds a plugin's startService may take before its start is abandoned.
DEFAULT_START_DEADLINE: float = 30.0


def coerce_deadlines(
    deadlines: Optional[Mapping[Union[ShutdownMode, str], float]],
) -> Dict[ShutdownMode, float]:
    """
    Merge C{deadlines} (keys are modes or their names) over
    L{DEFAULT_DEADLINES}.

    @raise ValueError: for an unknown mode or a deadline that is not a
        positive number.
    """
    result = dict(DEFAULT_DEADLINES)
    for key, seconds in (deadlines or {}).items():
        mode = ShutdownMode.coerce(key)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(
                f"invalid deadline for mode {mode.value!r}: {seconds!r} "
                "(expected a positive number of seconds)"
            )
        result[mode] = float(seconds)
    return result


S = PluginState

#: (state, transition) -> next state. Nothing else is possible.
TRANSITIONS: Mapping[Tuple[PluginState, str], PluginState] = {
    (S.LOADING, "loaded"): S.LOADED,
    (S.LOADING, "fail"): S.FAILED,
    (S.LOADED, "start"): S.STARTING,
    (S.LOADED, "stop"): S.STOPPING,
    # A requirement failed to start: the plugin never starts.
    (S.LOADED, "fail"): S.FAILED,
    (S.STARTING, "started"): S.RUNNING,
    (S.STARTING, "fail"): S.FAILED,
    (S.RUNNING, "reload"): S.RELOADING,
    (S.RUNNING, "stop"): S.STOPPING,
    (S.RELOADING, "reloaded"): S.RUNNING,
    # The new version failed; a fresh instance of the old one runs again.
    (S.RELOADING, "rolled_back"): S.RUNNING,
    # A requirement of the new version failed: the old one never stopped.
    (S.RELOADING, "cancelled"): S.RUNNING,
    # Neither the new nor the old version could start.
    (S.RELOADING, "fail"): S.FAILED,
    (S.STOPPING, "stopped"): S.STOPPED,
    # Supervision: a failed (or, with restart="always", ended) plugin.
    (S.RUNNING, "restart"): S.RESTARTING,
    (S.RESTARTING, "started"): S.RUNNING,
    (S.RESTARTING, "stop"): S.STOPPING,
    (S.RUNNING, "quarantine"): S.QUARANTINED,
    (S.RESTARTING, "quarantine"): S.QUARANTINED,
    # load(), reset() or reload() start a quarantined plugin afresh.
    (S.QUARANTINED, "restart"): S.RESTARTING,
    (S.QUARANTINED, "stop"): S.STOPPING,
}

#: Posts and calls are accepted (and held until it runs).
_ADDRESSABLE = frozenset({S.LOADED, S.STARTING, S.RUNNING, S.RELOADING, S.RESTARTING})
#: It is running, or will be once what is under way finishes.
_HEADED_FOR_RUNNING = frozenset({S.LOADING, S.LOADED, S.STARTING, S.RELOADING, S.RESTARTING})
#: No operation is under way.
_SETTLED = frozenset({S.RUNNING, S.LOADED, S.QUARANTINED, S.STOPPED, S.FAILED})
#: Its stop has begun.
_LEAVING = frozenset({S.STOPPING, S.STOPPED})
#: Its files are compared for reload_changed().
_WATCHED = frozenset({S.LOADED, S.RUNNING, S.RELOADING, S.RESTARTING, S.QUARANTINED})

del S


class _Machine:
    """
    A state changed only by the transitions of a table.
    """

    __slots__ = ("plugin", "state")

    _table: Mapping[Tuple[Any, str], Any] = {}

    def __init__(self, plugin: Any, state: Any) -> None:
        self.plugin = plugin
        self.state = state

    def can(self, transition: str) -> bool:
        """
        Whether C{transition} is possible from the current state.
        """
        return (self.state, transition) in self._table

    def fire(self, transition: str) -> Any:
        """
        Take C{transition} and return the new state.

        @raise InvalidTransition: if the table has no such transition from
            the current state; the state is unchanged.
        """
        try:
            new = self._table[(self.state, transition)]
        except KeyError:
            raise InvalidTransition(self.plugin, self.state, transition) from None
        self.state = new
        return new

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.plugin!r} {self.state.value}>"


class Lifecycle(_Machine):
    """
    The state of one plugin. Only L{TRANSITIONS} can change it.

    @ivar plugin: the plugin's name, for error messages.
    @ivar state: the current L{PluginState}.
    """

    __slots__ = ()
    _table = TRANSITIONS
    state: PluginState

    def __init__(self, plugin: str, state: PluginState = PluginState.LOADING) -> None:
        super().__init__(plugin, state)

    @property
    def settled(self) -> bool:
        """
        Whether the plugin is in a state no operation is under way in.
        """
        return self.state in _SETTLED

    @property
    def addressable(self) -> bool:
        """
        Whether posts and calls to it are accepted: it is constructed and
        not stopping (they are held until it runs).
        """
        return self.state in _ADDRESSABLE

    @property
    def serving(self) -> bool:
        """
        Whether its handlers are called now.
        """
        return self.state is PluginState.RUNNING

    @property
    def headed_for_running(self) -> bool:
        """
        Whether it is not running yet, or not again, but will be once what
        is under way (its load, start or reload) succeeds.
        """
        return self.state in _HEADED_FOR_RUNNING

    @property
    def stopping(self) -> bool:
        """
        Whether its shutdown is under way.
        """
        return self.state is PluginState.STOPPING

    @property
    def leaving(self) -> bool:
        """
        Whether its stop has begun: it is stopping, or stopped.
        """
        return self.state in _LEAVING

    @property
    def restarting(self) -> bool:
        """
        Whether its supervisor is replacing a failed (or ended) instance.
        """
        return self.state is PluginState.RESTARTING

    @property
    def quarantined(self) -> bool:
        """
        Whether it failed too often and answers nothing.
        """
        return self.state is PluginState.QUARANTINED

    @property
    def reloading(self) -> bool:
        """
        Whether a new version is being put in its place.
        """
        return self.state is PluginState.RELOADING

    @property
    def loading(self) -> bool:
        """
        Whether it is still being imported and constructed.
        """
        return self.state is PluginState.LOADING

    @property
    def unstarted(self) -> bool:
        """
        Whether it is constructed and waits for the manager to start.
        """
        return self.state is PluginState.LOADED

    @property
    def watched(self) -> bool:
        """
        Whether a change to its source files makes it due for a reload.
        """
        return self.state in _WATCHED


class ManagerPhase(enum.Enum):
    """
    The phases of a manager: C{OPEN} (loads are accepted, before and after
    C{startService}), C{SHUTTING_DOWN} and C{STOPPED} (terminal).
    """

    OPEN = "open"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"


#: (phase, transition) -> next phase. Nothing else is possible.
PHASE_TRANSITIONS: Mapping[Tuple[ManagerPhase, str], ManagerPhase] = {
    (ManagerPhase.OPEN, "shutdown"): ManagerPhase.SHUTTING_DOWN,
    (ManagerPhase.SHUTTING_DOWN, "stopped"): ManagerPhase.STOPPED,
}


class ManagerLifecycle(_Machine):
    """
    The phase of a manager. Only L{PHASE_TRANSITIONS} can change it.
    """

    __slots__ = ()
    _table = PHASE_TRANSITIONS
    state: ManagerPhase

    def __init__(self) -> None:
        super().__init__(None, ManagerPhase.OPEN)

    @property
    def accepting(self) -> bool:
        """
        Whether loads and reloads are accepted.
        """
        return self.state is ManagerPhase.OPEN

    @property
    def shutting_down(self) -> bool:
        """
        Whether its shutdown is under way.
        """
        return self.state is ManagerPhase.SHUTTING_DOWN
