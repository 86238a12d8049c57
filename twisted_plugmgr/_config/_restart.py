"""
The restart policy keys (C{restart}, C{restart_delay}, C{restart_delay_max},
C{restart_burst}, C{restart_interval}, C{fail_on_error}) of the
C{[manager]} section and of each C{[plugins.NAME]} section.

The rules are L{twisted_plugmgr._policy}'s, not written twice: a value is
checked by L{RestartPolicy.evolve}, and its L{ValueError} becomes a
L{ConfigError} in the file's style (C{FILE: KEY: expected ..., got ...}).

Every key is optional: one that is absent is L{None} in the model, "not
given", so that the plugin class's attribute and the manager's default
apply.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from .._policy import POLICY_KEYS, RestartPolicy
from ._error import describe, key_path
from ._values import Checker

__all__ = ["POLICY_KEYS", "PolicyKeys", "check_policy"]

#: The policy values are checked against (by evolving it).
_DEFAULT = RestartPolicy()


class PolicyKeys:
    """
    What the section models that hold the restart policy keys share (mixed
    into attrs classes with slots: it has no slots of its own).
    """

    __slots__ = ()

    def policy(self) -> Dict[str, Any]:
        """
        The restart policy keys this section gives (those not L{None}), in
        L{POLICY_KEYS} order.
        """
        given = {key: getattr(self, key) for key in POLICY_KEYS}
        return {key: value for key, value in given.items() if value is not None}


def check_policy(check: Checker, section: Mapping[str, Any], *prefix: str) -> Dict[str, Any]:
    """
    The restart policy keys of C{section} (found at the key path C{prefix}),
    checked and converted as L{RestartPolicy} does (seconds as floats).

    @return: key -> value, for the keys C{section} has.
    @raise ConfigError: naming the file and the key, for a bad value.
    """
    found: Dict[str, Any] = {}
    for key in POLICY_KEYS:
        if key in section:
            found[key] = _value(check, key, section[key], key_path(*prefix, key))
    return found


def _value(check: Checker, key: str, value: Any, where: str) -> Any:
    try:
        return getattr(_DEFAULT.evolve(**{key: value}), key)
    except (TypeError, ValueError) as e:
        raise check.fail(where, _expected(key, value, e), describe(value)) from None


def _expected(key: str, value: Any, error: Exception) -> str:
    """
    What L{RestartPolicy} expected, from its message C{"invalid KEY VALUE:
    expected ..."} (the whole message if it is not of that form).
    """
    message = str(error)
    prefix = f"invalid {key} {value!r}: "
    if message.startswith(prefix) and message[len(prefix):]:
        return message[len(prefix):]
    return message or f"expected a valid {key}"
