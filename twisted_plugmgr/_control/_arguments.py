"""
The arguments of the control channel's requests, checked before the
manager is asked anything: a restart policy, plugin names, the data of
several plugins, a shutdown mode, isolation options. Each check answers a
bad argument with L{BadRequestError}, one line naming what is wrong.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._isolate._options import ISOLATION_KEYS, check_options
from .._lifecycle import ShutdownMode
from .._policy import RestartPolicy
from ._wire import BadRequestError

__all__ = ["json_kind", "policy_keys", "isolation_options", "plugin_names", "data_of_each",
           "shutdown_mode"]

#: The longest answer to a bad policy or isolation option (it names the
#: key first; a huge value is cut).
_MAX_ERROR = 300


def _refused(what: str, error: ValueError) -> BadRequestError:
    """
    The one-line answer to a bad C{what} (C{"policy"}...), at most
    L{_MAX_ERROR} characters.
    """
    text = " ".join(f"invalid {what}: {error}".split())
    if len(text) > _MAX_ERROR:
        text = text[:_MAX_ERROR - 3] + "..."
    return BadRequestError(text)


def json_kind(value: Any) -> str:
    """
    What C{value}, decoded from JSON, was: C{"an array"}, C{"a string"}...
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else "an object"


def policy_keys(policy: Any) -> Dict[str, Any]:
    """
    The restart policy keys of a C{policy} argument (absent: none), checked
    as the manager checks them; a key whose value is null is not given.

    @raise BadRequestError: when C{policy} is not an object, names a key
        that is not a policy key, or gives a key a bad value: one line,
        naming the key.
    """
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise BadRequestError(f"invalid policy: expected an object of restart policy keys, "
                              f"not {json_kind(policy)}")
    try:
        RestartPolicy().evolve(**policy)
    except ValueError as e:
        raise _refused("policy", e) from None
    return {key: value for key, value in policy.items() if value is not None}


def isolation_options(isolation: Any, nulls: bool = False) -> Dict[str, Any]:
    """
    The isolation options (C{isolate}, C{call_deadline}, C{limits}) of an
    C{isolation} argument (absent: none), checked and normalized as the
    manager checks them.

    @param nulls: whether an option whose value is null is kept, as
        L{None} (a reload: it drops the value given before), rather than
        left out (a load: not given).
    @raise BadRequestError: when C{isolation} is not an object, names a key
        that is not an isolation option, or gives one a bad value: one line,
        naming the key.
    """
    if isolation is None:
        return {}
    if not isinstance(isolation, dict):
        raise BadRequestError(f"invalid isolation: expected an object of "
                              f"{', '.join(ISOLATION_KEYS)}, not {json_kind(isolation)}")
    try:
        for key in isolation:
            if key not in ISOLATION_KEYS:
                raise ValueError(f"unknown isolation option {key!r}: expected one of "
                                 + ", ".join(ISOLATION_KEYS))
        options = check_options(isolation)
    except ValueError as e:
        raise _refused("isolation", e) from None
    if nulls:
        options.update({key: None for key, value in isolation.items() if value is None})
    return options


def plugin_names(names: Any) -> List[str]:
    """
    The plugin names of a C{names} argument: an array of strings (empty:
    none). Whether each is a valid name, loaded and running is the
    manager's to say.

    @raise BadRequestError: when C{names} is not an array, or an item of it
        is not a string: one line, naming which.
    """
    if not isinstance(names, list):
        raise BadRequestError(f"invalid names: expected an array of plugin names, "
                              f"not {json_kind(names)}")
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise BadRequestError(f"invalid names: names[{index}] is {json_kind(name)}, "
                                  "not a plugin name (a string)")
    return names


def data_of_each(data: Any) -> Optional[Dict[str, Any]]:
    """
    The C{data} argument of L{ReloadMany}: an object of plugin name -> new
    data, or L{None} when absent (no data changes).

    @raise BadRequestError: when it is not an object: one line.
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BadRequestError(f"invalid data: expected an object of plugin name -> data, "
                              f"not {json_kind(data)}")
    return data


def shutdown_mode(mode: Optional[str]) -> Optional[ShutdownMode]:
    if mode is None:
        return None
    try:
        return ShutdownMode.coerce(mode)
    except ValueError as e:
        raise BadRequestError(str(e)) from None
