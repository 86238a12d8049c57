"""
The plugin lifecycle: one explicit state machine, and the shutdown modes.

Every state a plugin can be in, and every transition between two states, is
in L{TRANSITIONS}; a transition that is not in the table is refused with
L{InvalidTransition} before any plugin code runs.

    loading --loaded--> loaded --start--> starting --started--> running
       |                   |                 |                     |
       +--fail--> failed   +--stop--+        +--fail--> failed     +--reload--> reloading
                                    |                              |               |
                                    v                              v   reloaded/   |
                 stopped <--stopped-- stopping <-------stop--------+<--rollback----+
"""

from __future__ import annotations

import enum
from typing import Dict, Mapping, Optional, Tuple, Union

from ._errors import InvalidTransition

__all__ = [
    "PluginState",
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
    (S.STARTING, "started"): S.RUNNING,
    (S.STARTING, "fail"): S.FAILED,
    (S.RUNNING, "reload"): S.RELOADING,
    (S.RUNNING, "stop"): S.STOPPING,
    (S.RELOADING, "reloaded"): S.RUNNING,
    (S.RELOADING, "fail"): S.FAILED,
    (S.STOPPING, "stopped"): S.STOPPED,
}

del S


class Lifecycle:
    """
    The state of one plugin. Only L{TRANSITIONS} can change it.

    @ivar plugin: the plugin's name, for error messages.
    @ivar state: the current L{PluginState}.
    """

    __slots__ = ("plugin", "state")

    def __init__(self, plugin: str, state: PluginState = PluginState.LOADING) -> None:
        self.plugin = plugin
        self.state = state

    def can(self, transition: str) -> bool:
        """
        Whether C{transition} is possible from the current state.
        """
        return (self.state, transition) in TRANSITIONS

    def fire(self, transition: str) -> PluginState:
        """
        Take C{transition} and return the new state.

        @raise InvalidTransition: if the table has no such transition from
            the current state; the state is unchanged.
        """
        try:
            new = TRANSITIONS[(self.state, transition)]
        except KeyError:
            raise InvalidTransition(self.plugin, self.state, transition) from None
        self.state = new
        return new

    @property
    def settled(self) -> bool:
        """
        Whether the plugin is in a state no operation is under way in.
        """
        return self.state in (PluginState.RUNNING, PluginState.LOADED,
                              PluginState.STOPPED, PluginState.FAILED)

    def __repr__(self) -> str:
        return f"<Lifecycle {self.plugin!r} {self.state.value}>"
