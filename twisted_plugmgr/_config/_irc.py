"""
The C{[irc]} section: L{IRCConfig} (with its L{FloodConfig}) and its
validation; SASL, permissions, the per-user rate limit, per-channel plugins
and C{[irc.networks.NAME]} are in L{_irc_networks}.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import attr

from ._error import describe, key_path
from ._irc_networks import (
    NETWORK_KEYS,
    ChannelPluginsConfig,
    NetworkConfig,
    SASLConfig,
    UserFloodConfig,
    check_channel_plugins,
    check_permissions,
    check_sasl,
    check_user_flood,
    check_who,
    rate_and_burst,
)
from ._values import Checker

__all__ = ["FloodConfig", "IRCConfig", "check_irc", "IRC_KEYS", "NetworkConfig", "SASLConfig",
           "UserFloodConfig", "ChannelPluginsConfig"]


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
    @ivar sasl: the SASL login (L{SASLConfig}), or L{None}.
    @ivar permissions: permission name -> hostmask patterns and
        C{account:NAME} entries.
    @ivar user_flood: each user's command rate limit, or L{None} (off).
    @ivar ignore_seconds: how long a user over that limit is ignored.
    @ivar channel_plugins: channel -> which plugins answer there.
    @ivar networks: C{[irc.networks.NAME]}, each with the top-level values
        filled in, in the file's order; empty for a single network (the
        top-level keys, network C{"default"}).
    """

    server: Optional[str]
    nick: Optional[str]
    channels: Tuple[str, ...] = ()
    owners: Tuple[str, ...] = ()
    prefix: str = "!"
    flood: FloodConfig = attr.ib(factory=FloodConfig)
    data_dir: Optional[str] = None
    password: Optional[str] = None
    username: Optional[str] = None
    realname: Optional[str] = None
    sasl: Optional[SASLConfig] = None
    permissions: Mapping[str, Tuple[str, ...]] = attr.ib(factory=dict)
    user_flood: Optional[UserFloodConfig] = attr.ib(factory=UserFloodConfig)
    ignore_seconds: float = 60.0
    channel_plugins: Mapping[str, ChannelPluginsConfig] = attr.ib(factory=dict)
    networks: Tuple[NetworkConfig, ...] = ()


#: The keys of the C{[irc]} section, in the order error messages list them.
IRC_KEYS = (
    "server", "nick", "channels", "owners", "prefix", "flood", "data_dir",
    "password", "username", "realname", "sasl", "permissions", "user_flood", "ignore_seconds",
    "channel_plugins", "networks",
)


def check_irc(check: Checker, value: Any) -> IRCConfig:
    """
    Validate the C{[irc]} table.

    @raise ConfigError: for a missing or unknown key, or an invalid value
        (the server string is checked by Twisted's own endpoint parser).
    """
    section = check.table(value, "irc")
    check.keys(section, IRC_KEYS, "irc")
    networks = section.get("networks")
    if networks is None:
        for required in ("server", "nick"):
            if required not in section:
                raise check.fail(f"irc.{required}", "missing (required in the [irc] section)")
    kw: Dict[str, Any] = _connection(check, section, "irc")
    kw.setdefault("server", None)
    kw.setdefault("nick", None)
    if "prefix" in section:
        kw["prefix"] = check.string(section["prefix"], "irc.prefix")
    if "flood" in section:
        kw["flood"] = _flood(check, section["flood"])
    if "data_dir" in section:
        kw["data_dir"] = check.path(section["data_dir"], "irc.data_dir")
    if "prefix" in kw and any(c in kw["prefix"] for c in "\r\n"):
        raise check.fail("irc.prefix", "expected no line breaks", describe(kw["prefix"]))
    if "user_flood" in section:
        kw["user_flood"] = check_user_flood(check, section["user_flood"])
    if "ignore_seconds" in section:
        kw["ignore_seconds"] = check.positive(section["ignore_seconds"], "irc.ignore_seconds")
    if "channel_plugins" in section:
        kw["channel_plugins"] = check_channel_plugins(check, section["channel_plugins"])
    if networks is not None:
        kw["networks"] = _networks(check, networks, kw)
    return IRCConfig(**kw)


def _connection(check: Checker, section: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    """
    The keys of one connection (the top-level ones, or a network's).
    """
    kw: Dict[str, Any] = {}
    if "server" in section:
        kw["server"] = check.client_endpoint(section["server"], f"{prefix}.server")
    if "nick" in section:
        kw["nick"] = check.string(section["nick"], f"{prefix}.nick")
        if any(c in kw["nick"] for c in " \r\n!@:"):
            raise check.fail(f"{prefix}.nick",
                             "expected a nickname without spaces, '!', '@' or ':'",
                             describe(kw["nick"]))
    for name in ("channels", "owners"):
        if name in section:
            kw[name] = check.strings(section[name], f"{prefix}.{name}")
            for i, item in enumerate(kw[name]):
                if any(c in item for c in " \r\n,"):
                    raise check.fail(f"{prefix}.{name}[{i}]",
                                     "expected no spaces, commas or line breaks", describe(item))
    for i, item in enumerate(kw.get("owners", ())):
        check_who(check, item, f"{prefix}.owners[{i}]")
    for name in ("password", "username", "realname"):
        if name in section:
            kw[name] = check.string(section[name], f"{prefix}.{name}")
            if any(c in kw[name] for c in "\r\n"):
                raise check.fail(f"{prefix}.{name}", "expected no line breaks",
                                 describe(kw[name]))
    if "sasl" in section:
        kw["sasl"] = check_sasl(check, section["sasl"], f"{prefix}.sasl", kw.get("server"))
    if "permissions" in section:
        kw["permissions"] = check_permissions(check, section["permissions"],
                                              f"{prefix}.permissions")
    return kw


def _networks(check: Checker, value: Any, top: Dict[str, Any]) -> Tuple[NetworkConfig, ...]:
    table = check.table(value, "irc.networks")
    if not table:
        raise check.fail("irc.networks", "expected at least one [irc.networks.NAME] table")
    out = []
    for name, network in table.items():
        prefix = f"irc.networks.{key_path(name)}"
        network = check.table(network, prefix)
        check.keys(network, NETWORK_KEYS, "irc", "networks", name)
        kw = _connection(check, network, prefix)
        for required in ("server", "nick"):
            if kw.get(required) is None and top.get(required) is None:
                raise check.fail(f"{prefix}.{required}",
                                 "missing (in the network, or as a top-level [irc] default)")
        merged: Dict[str, Tuple[str, ...]] = dict(top.get("permissions") or {})
        for permission, entries in kw.pop("permissions", {}).items():
            merged[permission] = merged.get(permission, ()) + entries
        resolved: Dict[str, Any] = {
            key: top[key] for key in NETWORK_KEYS if top.get(key) is not None}
        resolved.update(kw)
        resolved["permissions"] = merged
        if "sasl" in kw or "server" in kw:
            sasl = resolved.get("sasl")
            if sasl is not None and sasl.mechanism == "EXTERNAL" and \
                    not str(resolved["server"]).startswith("tls:"):
                raise check.fail(f"{prefix}.server",
                                 "SASL EXTERNAL needs a tls: server with a client certificate",
                                 describe(resolved["server"]))
        out.append(NetworkConfig(name=name, **resolved))
    return tuple(out)


def _flood(check: Checker, value: Any) -> FloodConfig:
    return FloodConfig(**rate_and_burst(check, value, "flood"))
