"""
The C{[plugins.NAME]} sections: L{PluginConfig} and their validation.
"""

from __future__ import annotations

import types
from typing import Any, Dict, Mapping

import attr

from .._errors import InvalidName
from .._source import check_name
from ._error import key_path
from ._values import Checker

__all__ = ["PluginConfig", "check_plugins"]


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class PluginConfig:
    """
    One C{[plugins.NAME]} section.

    @ivar name: the plugin's name (a Python identifier).
    @ivar enabled: whether the plugin is loaded at start (default true).
    @ivar data: what the plugin is constructed with (any TOML value;
        L{None} when the section has no C{data}).
    """

    name: str
    enabled: bool = True
    data: Any = None


#: The keys of one C{[plugins.NAME]} section.
PLUGIN_KEYS = ("enabled", "data")


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
        result[name] = PluginConfig(name=name, enabled=enabled, data=body.get("data"))
    return types.MappingProxyType(result)
