"""
Restart policies: what a supervisor does when a plugin fails, in
systemd's words (C{Restart=}, C{StartLimitBurst=}, C{StartLimitIntervalSec=}).

Pure data and arithmetic: no reactor, no plugin. The supervisor that acts on
a policy is L{_supervise}.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Tuple

import attr

__all__ = ["RestartPolicy", "POLICY_KEYS", "RESTART_MODES", "RestartWindow", "class_policy"]

#: What C{restart} may be: never, after a failure, or after any exit.
RESTART_MODES: Tuple[str, ...] = ("no", "on-failure", "always")

#: The keys of a policy, as arguments, class attributes and config keys.
POLICY_KEYS: Tuple[str, ...] = (
    "restart",
    "restart_delay",
    "restart_delay_max",
    "restart_burst",
    "restart_interval",
    "fail_on_error",
)


def _check(key: str, value: Any) -> Any:
    """
    C{value} for policy key C{key}, checked.

    @raise ValueError: naming the key, the value and what was expected.
    """
    if key == "restart":
        if value not in RESTART_MODES:
            raise ValueError(f"invalid restart {value!r}: expected one of "
                             + ", ".join(repr(m) for m in RESTART_MODES))
        return value
    if key == "fail_on_error":
        if not isinstance(value, bool):
            raise ValueError(f"invalid fail_on_error {value!r}: expected true or false")
        return value
    if key == "restart_burst":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"invalid restart_burst {value!r}: expected a whole number >= 0")
        return value
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value)):
        raise ValueError(f"invalid {key} {value!r}: expected a finite number of seconds")
    if key == "restart_interval" and not value > 0:
        raise ValueError(f"invalid restart_interval {value!r}: expected a positive number of seconds")
    if value < 0:
        raise ValueError(f"invalid {key} {value!r}: expected a number of seconds >= 0")
    return float(value)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RestartPolicy:
    """
    What happens when a plugin fails or ends.

    @ivar restart: C{"no"} (a failed plugin is unloaded), C{"on-failure"}
        (it is restarted after a failure) or C{"always"} (after a failure
        and after a clean exit too).
    @ivar restart_delay: seconds before the first restart in the window;
        each restart already in it doubles the delay.
    @ivar restart_delay_max: the longest delay, in seconds.
    @ivar restart_burst: how many restarts the window may hold; a failure
        beyond that quarantines the plugin.
    @ivar restart_interval: the window, in seconds: restarts older than
        that no longer count.
    @ivar fail_on_error: "let it crash": an unhandled error in a timer,
        looping call or delayed call the plugin started through
        C{api.reactor} is a failure, not only a C{plugin_error}.
    """

    restart: str = "on-failure"
    restart_delay: float = 0.1
    restart_delay_max: float = 30.0
    restart_burst: int = 5
    restart_interval: float = 10.0
    fail_on_error: bool = False

    def __attrs_post_init__(self) -> None:
        for key in POLICY_KEYS:
            object.__setattr__(self, key, _check(key, getattr(self, key)))

    def evolve(self, **changes: Any) -> RestartPolicy:
        """
        This policy with C{changes} (policy keys; a value of L{None} keeps
        this policy's).

        @raise ValueError: for a key that is not a policy key, or a bad value,
            naming the key.
        """
        for key in changes:
            if key not in POLICY_KEYS:
                raise ValueError(f"unknown restart policy key {key!r}: expected one of "
                                 + ", ".join(POLICY_KEYS))
        given = {k: v for k, v in changes.items() if v is not None}
        return attr.evolve(self, **given) if given else self

    def over(self, *layers: Optional[Mapping[str, Any]]) -> RestartPolicy:
        """
        This policy with each of C{layers} (mappings of policy keys, later
        ones winning) applied in turn.
        """
        policy = self
        for layer in layers:
            if layer:
                policy = policy.evolve(**layer)
        return policy

    def restarts_after(self, clean: bool) -> bool:
        """
        Whether a plugin is restarted after a clean exit (C{clean}) or a
        failure.
        """
        if self.restart == "always":
            return True
        return self.restart == "on-failure" and not clean

    def delay(self, count: int) -> float:
        """
        Seconds before a restart when C{count} restarts are in the window.
        """
        if self.restart_delay == 0:
            return 0.0
        try:
            return min(self.restart_delay * (2 ** count), self.restart_delay_max)
        except OverflowError:
            return self.restart_delay_max

    def as_dict(self) -> dict:
        """
        The policy as a plain mapping of its keys.
        """
        return {key: getattr(self, key) for key in POLICY_KEYS}


def class_policy(cls: Any) -> dict:
    """
    The policy keys a plugin class sets to something else than L{None}
    (plugin code: a lookup that raises counts as not set).
    """
    found = {}
    for key in POLICY_KEYS:
        try:
            value = getattr(cls, key, None)
        except BaseException:
            value = None
        if value is not None:
            found[key] = value
    return found


class RestartWindow:
    """
    The times of a plugin's recent restarts: a sliding window of
    C{restart_interval} seconds, as systemd's C{StartLimitIntervalSec}.
    """

    __slots__ = ("_times",)

    def __init__(self, times: Sequence[float] = ()) -> None:
        self._times = list(times)

    def count(self, now: float, interval: float) -> int:
        """
        How many restarts happened in the C{interval} seconds before C{now}.
        """
        self._times = [t for t in self._times if now - t < interval]
        return len(self._times)

    def add(self, now: float) -> None:
        """
        Count a restart at C{now}.
        """
        self._times.append(now)

    def clear(self) -> None:
        """
        Forget every restart (a fresh load, a reset).
        """
        self._times = []

    def copy(self) -> RestartWindow:
        """
        Another window with the same restarts.
        """
        return RestartWindow(self._times)
