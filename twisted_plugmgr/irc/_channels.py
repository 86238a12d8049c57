"""
Per-channel plugins: in a channel with an C{enabled} list, only those
plugins answer; in one with a C{disabled} list, all but those. Private
messages and channels without a rule are answered by every plugin.

Plain code, no I/O.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple

from ._hostmask import irc_lower

__all__ = ["ChannelPlugins"]


def _field(rule: Any, name: str) -> Any:
    if isinstance(rule, Mapping):
        return rule.get(name)
    return getattr(rule, name, None)


class ChannelPlugins:
    """
    Which plugins answer in which channel.

    @param rules: channel -> a rule with C{enabled} or C{disabled} (a list
        of plugin names; a mapping or an object with those attributes).
    @raise ValueError: for a rule with both lists, or neither.
    """

    def __init__(self, rules: Optional[Mapping[str, Any]] = None,
                 casemapping: str = "rfc1459") -> None:
        self._raw: Tuple[Tuple[str, Optional[FrozenSet[str]], FrozenSet[str]], ...] = ()
        raw = []
        for channel, rule in (rules or {}).items():
            enabled, disabled = _field(rule, "enabled"), _field(rule, "disabled")
            if (enabled is None) == (disabled is None):
                raise ValueError(
                    f"channel_plugins {channel!r}: expected one of enabled or disabled")
            raw.append((channel, None if enabled is None else frozenset(enabled),
                        frozenset(disabled or ())))
        self._raw = tuple(raw)
        self._rules: Dict[str, Tuple[Optional[FrozenSet[str]], FrozenSet[str]]] = {}
        self._casemapping = ""
        self.casemapping = casemapping

    @property
    def casemapping(self) -> str:
        """
        The case mapping channel names are compared with.
        """
        return self._casemapping

    @casemapping.setter
    def casemapping(self, value: str) -> None:
        self._casemapping = value
        self._rules = {irc_lower(c, value): (e, d) for c, e, d in self._raw}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def answers(self, plugin: str, channel: Optional[str]) -> bool:
        """
        Whether C{plugin} answers in C{channel} (L{None}: in private).
        """
        if channel is None or not self._rules:
            return True
        rule = self._rules.get(irc_lower(channel, self._casemapping))
        if rule is None:
            return True
        enabled, disabled = rule
        return plugin in enabled if enabled is not None else plugin not in disabled

    def channels(self) -> Iterable[str]:
        """
        The channels that have a rule, as configured.
        """
        return [c for c, _, _ in self._raw]
