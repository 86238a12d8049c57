"""
The parts of the C{[irc]} section beyond one plain connection: SASL
(L{SASLConfig}), named permissions, the per-user rate limit
(L{UserFloodConfig}), per-channel plugins (L{ChannelPluginsConfig}) and
several networks (L{NetworkConfig}, C{[irc.networks.NAME]}), with their
checks. Pure: nothing is read here (a SASL password file is read when the
bot is built).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import attr

from ._error import describe, key_path
from ._values import Checker

__all__ = [
    "SASLConfig",
    "UserFloodConfig",
    "ChannelPluginsConfig",
    "NetworkConfig",
    "NETWORK_KEYS",
    "check_sasl",
    "check_permissions",
    "check_user_flood",
    "rate_and_burst",
    "check_channel_plugins",
    "check_who",
]

#: The keys a C{[irc.networks.NAME]} table may hold (the others are
#: top-level only); top-level values are their defaults.
NETWORK_KEYS = (
    "server", "nick", "channels", "owners", "password", "username", "realname", "sasl",
    "permissions",
)


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class SASLConfig:
    """
    C{sasl = { ... }}: the SASL login.

    @ivar mechanism: C{"PLAIN"} (account and password) or C{"EXTERNAL"}
        (the client certificate of a C{tls:} server endpoint).
    @ivar account: the account name.
    @ivar password: the password, or L{None} when it is in a file.
    @ivar password_file: an absolute path (relative ones are resolved
        against the config file's directory), or L{None}.
    @ivar required: whether the bot refuses to register without the login.
    """

    mechanism: str = "PLAIN"
    account: str = ""
    password: Optional[str] = attr.ib(default=None, repr=False)
    password_file: Optional[str] = None
    required: bool = True


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class UserFloodConfig:
    """
    C{user_flood = { rate, burst }}: each user's command rate limit.
    """

    rate: float = 1.0
    burst: int = 5


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class ChannelPluginsConfig:
    """
    C{[irc.channel_plugins."#name"]}: C{enabled} (only these plugins
    answer there) or C{disabled} (all but these).
    """

    enabled: Optional[Tuple[str, ...]] = None
    disabled: Optional[Tuple[str, ...]] = None


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class NetworkConfig:
    """
    One network the bot connects to, with the top-level C{[irc]} values
    filled in (its C{permissions} are added to the top-level ones).
    """

    name: str
    server: str
    nick: str
    channels: Tuple[str, ...] = ()
    owners: Tuple[str, ...] = ()
    password: Optional[str] = None
    username: Optional[str] = None
    realname: Optional[str] = None
    sasl: Optional[SASLConfig] = None
    permissions: Mapping[str, Tuple[str, ...]] = attr.ib(factory=dict)


def check_who(check: Checker, entry: str, key: str) -> None:
    """
    Refuse an owner, permission or ignore entry that is neither a
    C{nick!user@host} pattern nor C{account:NAME}.
    """
    if entry.lower().startswith("account:"):
        name = entry[len("account:"):]
        if not name or any(c in name for c in " *?!@"):
            raise check.fail(key, "expected account:NAME (no wildcards)", describe(entry))
        return
    if "!" not in entry or "@" not in entry or entry.index("!") > entry.rindex("@"):
        raise check.fail(key, "expected nick!user@host (wildcards allowed) or account:NAME",
                         describe(entry))


def check_sasl(check: Checker, value: Any, prefix: str, server: Optional[str]) -> SASLConfig:
    """
    Validate a C{sasl} table (at key path C{prefix}), for C{server}.
    """
    table = check.table(value, prefix)
    check.keys(table, ("mechanism", "account", "password", "password_file", "required"),
               *prefix.split("."))
    kw: Dict[str, Any] = {}
    mechanism = check.string(table.get("mechanism", "PLAIN"), f"{prefix}.mechanism").upper()
    if mechanism not in ("PLAIN", "EXTERNAL"):
        raise check.fail(f"{prefix}.mechanism", "expected PLAIN or EXTERNAL", describe(mechanism))
    kw["mechanism"] = mechanism
    if "account" in table:
        kw["account"] = check.string(table["account"], f"{prefix}.account")
    if "password" in table:
        kw["password"] = check.string(table["password"], f"{prefix}.password")
    if "password_file" in table:
        kw["password_file"] = check.path(table["password_file"], f"{prefix}.password_file")
    if "required" in table:
        kw["required"] = check.boolean(table["required"], f"{prefix}.required")
    if mechanism == "PLAIN":
        if not kw.get("account"):
            raise check.fail(f"{prefix}.account", "missing (SASL PLAIN needs an account)")
        if ("password" in kw) == ("password_file" in kw):
            raise check.fail(f"{prefix}.password",
                             "expected one of password or password_file for SASL PLAIN")
    elif server is not None and not server.startswith("tls:"):
        raise check.fail(f"{prefix}.mechanism",
                         "EXTERNAL needs a tls: server with a client certificate (certificate=, privateKey=)",
                         describe(server))
    for name in ("account", "password"):
        if any(c in (kw.get(name) or "") for c in "\r\n\x00"):
            raise check.fail(f"{prefix}.{name}", "expected no line breaks")
    return SASLConfig(**kw)


def check_permissions(check: Checker, value: Any, prefix: str) -> Dict[str, Tuple[str, ...]]:
    """
    Validate a C{permissions} table: permission name -> entries.
    """
    table = check.table(value, prefix)
    out: Dict[str, Tuple[str, ...]] = {}
    for name, entries in table.items():
        key = f"{prefix}.{key_path(name)}"
        if not name or any(c.isspace() for c in name) or name.lower() != name:
            raise check.fail(key, "expected a lower-case permission name without spaces")
        if name == "owner":
            raise check.fail(key, "owner is given by the owners key, not here")
        items = check.strings(entries, key)
        for i, entry in enumerate(items):
            check_who(check, entry, f"{key}[{i}]")
        out[name] = items
    return out


def check_user_flood(check: Checker, value: Any) -> Optional[UserFloodConfig]:
    """
    Validate C{user_flood}: C{false} (off) or C{{ rate, burst }}.
    """
    if value is False:
        return None
    return UserFloodConfig(**rate_and_burst(check, value, "user_flood"))


def rate_and_burst(check: Checker, value: Any, key: str) -> Dict[str, Any]:
    """
    The C{rate} (a positive number) and C{burst} (a positive whole number)
    that the table C{irc.KEY} gives, for a token bucket's config class.
    """
    table = check.table(value, f"irc.{key}")
    check.keys(table, ("rate", "burst"), "irc", key)
    kw: Dict[str, Any] = {}
    if "rate" in table:
        kw["rate"] = check.positive(table["rate"], f"irc.{key}.rate")
    if "burst" in table:
        kw["burst"] = check.positive_int(table["burst"], f"irc.{key}.burst")
    return kw


def check_channel_plugins(check: Checker, value: Any) -> Dict[str, ChannelPluginsConfig]:
    """
    Validate C{[irc.channel_plugins]}: channel -> C{enabled} or
    C{disabled}.
    """
    table = check.table(value, "irc.channel_plugins")
    out: Dict[str, ChannelPluginsConfig] = {}
    for channel, rule in table.items():
        key = f"irc.channel_plugins.{key_path(channel)}"
        if not channel or channel[0] not in "#&+!" or any(c in channel for c in " ,\r\n"):
            raise check.fail(key, "expected a channel name (#name)")
        rule = check.table(rule, key)
        check.keys(rule, ("enabled", "disabled"), "irc", "channel_plugins", channel)
        if ("enabled" in rule) == ("disabled" in rule):
            raise check.fail(key, "expected one of enabled or disabled")
        kind = "enabled" if "enabled" in rule else "disabled"
        out[channel] = ChannelPluginsConfig(**{kind: check.strings(rule[kind], f"{key}.{kind}")})
    return out
