"""
The C{[irc]} section: L{IRCConfig} (with its L{FloodConfig}) and its
validation.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import attr

from ._error import describe
from ._values import Checker

__all__ = ["FloodConfig", "IRCConfig", "check_irc", "IRC_KEYS"]


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class FloodConfig:
    """
    Outgoing flood control of the IRC bot (a token bucket).

    @ivar rate: lines per second sent once the burst is spent.
    @ivar burst: lines that may be sent at once.
    """

    rate: float = 1.0
    burst: int = 4


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class IRCConfig:
    """
    The C{[irc]} section: the IRC bot.

    @ivar server: a Twisted client endpoint string (C{"tcp:host:6667"},
        C{"tls:host:6697"}).
    @ivar nick: the bot's nickname.
    @ivar channels: channels to join.
    @ivar owners: hostmasks (C{nick!user@host}, wildcards allowed) of the
        bot's owners.
    @ivar prefix: what starts a command in a channel (default C{"!"}).
    @ivar flood: outgoing flood control.
    @ivar data_dir: an absolute directory for the bot's data, or L{None}.
    @ivar password: the server password, or L{None}.
    @ivar username: the user name, or L{None}.
    @ivar realname: the real name, or L{None}.
    """

    server: str
    nick: str
    channels: Tuple[str, ...] = ()
    owners: Tuple[str, ...] = ()
    prefix: str = "!"
    flood: FloodConfig = attr.ib(factory=FloodConfig)
    data_dir: Optional[str] = None
    password: Optional[str] = None
    username: Optional[str] = None
    realname: Optional[str] = None


#: The keys of the C{[irc]} section, in the order error messages list them.
IRC_KEYS = (
    "server", "nick", "channels", "owners", "prefix", "flood", "data_dir",
    "password", "username", "realname",
)


def check_irc(check: Checker, value: Any) -> IRCConfig:
    """
    Validate the C{[irc]} table.

    @raise ConfigError: for a missing or unknown key, or an invalid value
        (the server string is checked by Twisted's own endpoint parser).
    """
    section = check.table(value, "irc")
    check.keys(section, IRC_KEYS, "irc")
    for required in ("server", "nick"):
        if required not in section:
            raise check.fail(f"irc.{required}", "missing (required in the [irc] section)")
    kw: Dict[str, Any] = {
        "server": check.client_endpoint(section["server"], "irc.server"),
        "nick": check.string(section["nick"], "irc.nick"),
    }
    if any(c in kw["nick"] for c in " \r\n!@:"):
        raise check.fail("irc.nick", "expected a nickname without spaces, '!', '@' or ':'",
                         describe(kw["nick"]))
    if "channels" in section:
        kw["channels"] = check.strings(section["channels"], "irc.channels")
    if "owners" in section:
        kw["owners"] = check.strings(section["owners"], "irc.owners")
    if "prefix" in section:
        kw["prefix"] = check.string(section["prefix"], "irc.prefix")
    if "flood" in section:
        kw["flood"] = _flood(check, section["flood"])
    if "data_dir" in section:
        kw["data_dir"] = check.path(section["data_dir"], "irc.data_dir")
    for name in ("password", "username", "realname"):
        if name in section:
            kw[name] = check.string(section[name], f"irc.{name}")
    for name in ("channels", "owners"):
        for i, item in enumerate(kw.get(name, ())):
            if any(c in item for c in " \r\n,"):
                raise check.fail(f"irc.{name}[{i}]",
                                 "expected no spaces, commas or line breaks", describe(item))
    for name in ("password", "username", "realname", "prefix"):
        if name in kw and any(c in kw[name] for c in "\r\n"):
            raise check.fail(f"irc.{name}", "expected no line breaks", describe(kw[name]))
    return IRCConfig(**kw)


def _flood(check: Checker, value: Any) -> FloodConfig:
    flood = check.table(value, "irc.flood")
    check.keys(flood, ("rate", "burst"), "irc", "flood")
    kw: Dict[str, Any] = {}
    if "rate" in flood:
        kw["rate"] = check.positive(flood["rate"], "irc.flood.rate")
    if "burst" in flood:
        kw["burst"] = check.positive_int(flood["burst"], "irc.flood.burst")
    return FloodConfig(**kw)
