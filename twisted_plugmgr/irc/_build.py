"""
L{make_bot_service}: the bot, built from the C{[irc]} configuration (an
C{IRCConfig} from C{twisted_plugmgr._config}, or a dict with the same
keys): one L{IRCBot} per network, the first beside the manager and the
others started and stopped by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime

from ._bot import ADMIN_PACKAGE, DEFAULT_NETWORK, IRCBot
from ._caps import SASLSettings

if TYPE_CHECKING:  # pragma: no cover
    from .._manager import PluginManager

__all__ = ["make_bot_service", "sasl_settings"]

#: The keys of one network, with the top-level values as defaults.
_NETWORK_KEYS = ("server", "nick", "channels", "owners", "password", "username", "realname",
                 "sasl", "permissions")


def _field(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def sasl_settings(sasl: Any, network: str) -> Optional[SASLSettings]:
    """
    The L{SASLSettings} of a C{sasl} table (or C{SASLConfig}), its
    password file read.

    @raise ValueError: for a password file that cannot be read, or
        settings that do not hold together (naming the network).
    """
    if sasl is None:
        return None
    password = _field(sasl, "password") or ""
    path = _field(sasl, "password_file")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as e:
            raise ValueError(f"network {network}: sasl.password_file {path}: "
                             f"{e.strerror or e}") from None
        if not password:
            raise ValueError(f"network {network}: sasl.password_file {path}: empty")
    try:
        return SASLSettings(
            mechanism=str(_field(sasl, "mechanism", "PLAIN")).upper(),
            account=_field(sasl, "account", "") or "",
            password=password,
            required=bool(_field(sasl, "required", True)),
        )
    except ValueError as e:
        raise ValueError(f"network {network}: sasl: {e}") from None


def _networks(irc_config: Any) -> List[Tuple[str, Any]]:
    """
    (name, settings) of every network: C{networks}, or the top-level keys
    as network C{"default"}.
    """
    networks = _field(irc_config, "networks") or ()
    if not networks:
        return [(DEFAULT_NETWORK, irc_config)]
    if isinstance(networks, Mapping):  # a dict config: merge the defaults here
        out = []
        for name, network in networks.items():
            merged: Dict[str, Any] = {k: _field(irc_config, k) for k in _NETWORK_KEYS}
            merged.update({k: v for k, v in network.items() if k != "permissions"})
            permissions = {k: tuple(v) for k, v in (_field(irc_config, "permissions") or {}).items()}
            for key, entries in (network.get("permissions") or {}).items():
                permissions[key] = permissions.get(key, ()) + tuple(entries)
            merged["permissions"] = permissions
            out.append((str(name), merged))
        return out
    return [(network.name, network) for network in networks]


def _user_flood(irc_config: Any) -> Optional[Tuple[float, int]]:
    flood = _field(irc_config, "user_flood", {}) if isinstance(irc_config, Mapping) \
        else _field(irc_config, "user_flood")
    if flood is None or flood is False:
        return None
    return float(_field(flood, "rate", 1.0)), int(_field(flood, "burst", 5))


def make_bot_service(
    manager: PluginManager,
    irc_config: Any,
    reactor: IReactorTime,
    *,
    retry_policy: Optional[Callable[[int], float]] = None,
    admin: bool = True,
) -> IRCBot:
    """
    Build the IRC bot for C{manager} from the C{[irc]} configuration.

    The caller puts the returned service in the same parent as the manager
    (C{bot.setServiceParent(parent)}); with C{[irc.networks.NAME]}, it is
    the first network's bot, and starts the others (C{bot.bots}). With
    C{admin} (the default), the package of the built-in plugins
    (L{ADMIN_PACKAGE}) is added to the packages the manager searches
    (C{manager.add_package}), and the bot loads the admin plugin when it
    starts. The manager is left as it was when the configuration is
    refused.

    @param irc_config: an C{IRCConfig} or a dict with the same keys:
        C{server} (a client endpoint string), C{nick}, C{channels},
        C{owners}, C{prefix}, C{flood} (C{rate}, C{burst}), C{data_dir},
        C{password}, C{username}, C{realname}, C{sasl}, C{permissions},
        C{user_flood} (on by default; C{False} turns it off),
        C{ignore_seconds}, C{channel_plugins}, C{networks}.
    @param reactor: the reactor.
    @param retry_policy: seconds to wait before reconnection attempt N
        (backoff from 1 s up to 60 s by default).
    @raise ValueError: for a server that is not a client endpoint string,
        an owner pattern that is neither C{nick!user@host} nor
        C{account:NAME}, bad flood settings, an unreadable SASL password
        file or a corrupt ignore list (each naming what is wrong).
    """
    flood = _field(irc_config, "flood")
    rate = _field(flood, "rate", 1.0) if flood is not None else 1.0
    burst = _field(flood, "burst", 4) if flood is not None else 4
    common: Dict[str, Any] = dict(
        prefix=_field(irc_config, "prefix", "!"),
        flood_rate=rate,
        flood_burst=burst,
        data_dir=_field(irc_config, "data_dir"),
        retry_policy=retry_policy,
        admin=admin,
        user_flood=_user_flood(irc_config),
        ignore_seconds=float(_field(irc_config, "ignore_seconds", 60.0) or 60.0),
    )
    primary: Optional[IRCBot] = None
    for name, network in _networks(irc_config):
        server = _field(network, "server")
        try:
            endpoint = clientFromString(reactor, server)
        except Exception as e:
            # A dict config has not been through _config's check: a bad string
            # is a TypeError, KeyError, ImportError... there.
            where = "" if name == DEFAULT_NETWORK else f"network {name}: "
            raise ValueError(
                f"{where}server {server!r}: not a Twisted client endpoint string "
                f"({type(e).__name__}: {e})"[:300]
            ) from None
        bot = IRCBot(
            manager,
            endpoint,
            _field(network, "nick"),
            reactor,
            channels=_field(network, "channels", ()) or (),
            owners=_field(network, "owners", ()) or (),
            password=_field(network, "password"),
            username=_field(network, "username"),
            realname=_field(network, "realname"),
            network=name,
            sasl=sasl_settings(_field(network, "sasl"), name),
            permissions=_field(network, "permissions") or {},
            channel_plugins=_field(irc_config, "channel_plugins") or {},
            primary=primary,
            **common,
        )
        if primary is None:
            primary = bot
        else:
            primary.add_network(bot)
    assert primary is not None
    if admin:
        manager.add_package(ADMIN_PACKAGE)
    return primary
