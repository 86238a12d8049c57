"""
The C{[plugins.NAME]} sections: L{PluginConfig} and their validation.
"""

from __future__ import annotations

import types
from typing import Any, Dict, Mapping, Optional

import attr

from .._errors import InvalidName
from .._isolate._options import ISOLATION_KEYS, check_options
from .._source import check_name
from ._error import key_path
from ._restart import POLICY_KEYS, PolicyKeys, check_policy
from ._values import Checker

__all__ = ["PluginConfig", "check_plugins"]


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class PluginConfig(PolicyKeys):
    """
    One C{[plugins.NAME]} section.

    @ivar name: the plugin's name (a Python identifier).
    @ivar enabled: whether the plugin is loaded at start (default true).
    @ivar data: what the plugin is constructed with (any TOML value;
        L{None} when the section has no C{data}).
    @ivar restart: this plugin's restart policy keys (C{restart},
        C{restart_delay}, C{restart_delay_max}, C{restart_burst},
        C{restart_interval}, C{fail_on_error}), each L{None} when the
        section does not give it (the plugin class's attribute, then the
        manager's default, apply); L{policy()<PolicyKeys.policy>} gives those
        that are given.
    @ivar isolate: run the plugin in a worker process of its own (L{None}:
        its class decides); C{call_deadline} and C{limits} go with it
        (L{isolation} gives those that are given).
    """

    name: str
    enabled: bool = True
    data: Any = None
    restart: Optional[str] = None
    restart_delay: Optional[float] = None
    restart_delay_max: Optional[float] = None
    restart_burst: Optional[int] = None
    restart_interval: Optional[float] = None
    fail_on_error: Optional[bool] = None
    isolate: Optional[bool] = None
    call_deadline: Optional[float] = None
    limits: Optional[Mapping[str, int]] = None

    def isolation(self) -> Dict[str, Any]:
        """
        The isolation options this section gives (C{isolate},
        C{call_deadline}, C{limits}; those not L{None}).
        """
        given = {key: getattr(self, key) for key in ISOLATION_KEYS}
        return {key: value for key, value in given.items() if value is not None}


#: The keys of one C{[plugins.NAME]} section.
PLUGIN_KEYS = ("enabled", "data") + POLICY_KEYS + ISOLATION_KEYS


def check_plugins(check: Checker, value: Any) -> Mapping[str, PluginConfig]:
    """
    Validate the C{[plugins]} table.

    @return: name -> L{PluginConfig}, in file order, read-only.
    @raise ConfigError: for an invalid name, key or value.
    """
    section = check.table(value, "plugins")
    result: Dict[str, PluginConfig] = {}
    for name, body in section.items():
        key = key_path("plugins", name)
        try:
            check_name(name)
        except InvalidName:
            raise check.fail(
                key, "invalid plugin name (expected a Python identifier such as 'hello')"
            ) from None
        body = check.table(body, key)
        check.keys(body, PLUGIN_KEYS, "plugins", name)
        enabled = check.boolean(body.get("enabled", True), f"{key}.enabled")
        policy = check_policy(check, body, "plugins", name)
        isolation = {}
        for option in ISOLATION_KEYS:
            if option in body:
                try:
                    isolation.update(check_options({option: body[option]}))
                except ValueError as e:
                    raise check.fail(f"{key}.{option}", str(e).split(": ", 1)[-1],
                                     repr(body[option])) from None
        if "limits" in isolation:
            isolation["limits"] = types.MappingProxyType(isolation["limits"])
        result[name] = PluginConfig(name=name, enabled=enabled, data=body.get("data"),
                                    **policy, **isolation)
    return types.MappingProxyType(result)
