"""
The bot: a service that keeps one IRC connection up (reconnecting with
backoff) and feeds its traffic to plugins through the plugin manager; and
L{make_bot_service}, which builds it from the C{[irc]} configuration.

How a message travels: L{BotProtocol} receives C{PRIVMSG}; L{IRCBot}
parses it (L{parse_command}); a command costs one lookup in the
L{CommandIndex}, and is delivered with C{manager.call(plugin, event, ctx)};
rules are tried only for the plugins that declare some; plugins that handle
C{irc_message} get it through C{manager.emit}. What a handler returns is
replied. A handler that fails is broadcast as C{plugin_error} by the
manager, and the caller gets a short error notice. Joins, parts, quits,
kicks, nick changes and topics are emitted as C{irc_<kind>}.

Everything the bot says goes through the connection's L{OutgoingQueue}
(flood control) after L{format_messages} (splitting, no injection).

For its operators: one log line per reconnection attempt, naming the
server's host and port and why (L{_reconnect.ReconnectLog}); and the owners
it sees in its channels are told in private when a file change broke a
plugin and when it works again (L{_notify.OwnerNotifier}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Set

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._dispatch import STOP, handler_specs
from .._errors import NoSuchHandler, NoSuchPlugin
from .._events import PluginEvent
from .._interfaces import IPluginManager
from ._context import Context, is_channel
from ._flood import TokenBucket
from ._hostmask import Hostmask, HostmaskPatterns
from ._index import CommandIndex, bot_specs
from ._interfaces import IBot, IConnectionOwner
from ._lines import CONSERVATIVE_RESERVE, format_messages
from ._notify import OwnerNotifier
from ._parse import parse_command
from ._plugin import BOT_SERVICE_NAME
from ._protocol import BotFactory, BotProtocol
from ._reconnect import QuietClientService, ReconnectLog

if TYPE_CHECKING:  # pragma: no cover
    from .._manager import PluginManager

__all__ = ["IRCBot", "make_bot_service", "ADMIN_PACKAGE", "ADMIN_PLUGIN"]

#: The package of the bot's built-in plugins.
ADMIN_PACKAGE = "twisted_plugmgr.irc.plugins"

#: The built-in admin plugin (C{!plugins}, C{!load}, C{!unload},
#: C{!reload}, C{!help}).
ADMIN_PLUGIN = "irc_admin"


@implementer(IBot, IConnectionOwner)
class IRCBot(Service):
    """
    The IRC bot: keeps a connection to the server up and gives its traffic
    to the manager's plugins.

    Put it beside the manager, in the same parent service (bot plugins
    find it there, under the name L{BOT_SERVICE_NAME}); L{make_bot_service}
    builds it from the C{[irc]} configuration.

    @ivar manager: the L{PluginManager} whose plugins serve IRC.
    @ivar index: the L{CommandIndex}.
    @ivar owners: the owners' L{HostmaskPatterns}.
    @ivar connection: the current L{BotProtocol}, or L{None}.
    @ivar sign_ons: how many times the bot has signed on (a reconnection
        adds one).
    @ivar notifier: tells the owners in private when a file change broke a
        plugin and when it works again (an L{OwnerNotifier}).
    """

    # Service declares name = None, which mypy takes for its type.
    name = BOT_SERVICE_NAME  # type: ignore[assignment]

    def __init__(
        self,
        manager: IPluginManager,
        endpoint: IStreamClientEndpoint,
        nick: str,
        reactor: IReactorTime,
        *,
        channels: Iterable[str] = (),
        owners: Iterable[str] = (),
        prefix: str = "!",
        flood_rate: float = 1.0,
        flood_burst: int = 4,
        data_dir: Optional[str] = None,
        password: Optional[str] = None,
        username: Optional[str] = None,
        realname: Optional[str] = None,
        retry_policy: Optional[Callable[[int], float]] = None,
        max_queue: int = 1000,
        admin: bool = True,
        regain_interval: float = 60.0,
        rejoin_delay: float = 10.0,
    ) -> None:
        TokenBucket(flood_rate, flood_burst, reactor)  # check the settings now
        self.log = Logger(namespace="twisted_plugmgr.irc", source=self)
        self.manager = manager
        self.reactor = reactor
        self.nick = nick
        self.channels = tuple(channels)
        self.owners = HostmaskPatterns(owners)
        self.prefix = prefix
        self.flood_rate = flood_rate
        self.flood_burst = flood_burst
        self.data_dir = data_dir
        self.password = password
        self.username = username
        self.realname = realname
        self.max_queue = max_queue
        self.admin = admin
        self.regain_interval = regain_interval
        self.rejoin_delay = rejoin_delay
        self.index = CommandIndex()
        self.connection: Optional[BotProtocol] = None
        self.sign_ons = 0
        self.notifier = OwnerNotifier(self.owner_nicks, self.msg)
        self._message_plugins: Set[str] = set()
        self._sign_on_waiters: List[defer.Deferred[BotProtocol]] = []
        self._reconnect = ReconnectLog(
            endpoint, retry_policy or backoffPolicy(initialDelay=1.0, maxDelay=60.0), self.log)
        self._client = QuietClientService(
            self._reconnect.endpoint, BotFactory(self), retryPolicy=self._reconnect.policy,
            clock=reactor,
        )

    # -- service --------------------------------------------------------

    def startService(self) -> None:
        """
        Listen to the manager, load the admin plugin, connect. The commands
        of plugins unloaded while the bot was not listening (before it
        started, or while it was stopped) are forgotten.
        """
        super().startService()
        self.manager.register(self._plugin_event)
        installed = self._plugins()
        if installed or self.admin:
            loaded = self.manager.plugin_table()
            self._forget(plugin for plugin in installed if plugin not in loaded)
            if self.admin and ADMIN_PLUGIN not in loaded:
                self.manager.load(ADMIN_PLUGIN).addErrback(self._admin_failed)
        self._client.startService()

    def _admin_failed(self, failure: Failure) -> None:
        # The manager has broadcast (and logged) why already.
        self.log.warn("the admin plugin did not load: {error}", error=failure.getErrorMessage())

    def stopService(self) -> defer.Deferred[None]:
        """
        Say goodbye, disconnect and stop reconnecting; fires once the
        connection is closed. The bot stops listening to the manager.
        """
        super().stopService()
        self.manager.unregister(self._plugin_event)
        if self.connection is not None:
            self.connection.quit_now("shutting down")
        for waiter in self._sign_on_waiters:
            waiter.cancel()
        self._sign_on_waiters = []
        return self._client.stopService()

    # -- connections ----------------------------------------------------

    def handle_connected(self, proto: BotProtocol) -> None:
        """
        Connection C{proto} is made: it is the bot's L{connection} from now.
        """
        self.connection = proto

    def handle_signed_on(self, proto: BotProtocol) -> None:
        """
        The server has welcomed C{proto}: count the sign-on, fire the
        L{when_signed_on} waiters.
        """
        self.sign_ons += 1
        self.log.info("IRC server {address}: signed on as {nick}",
                      address=self._reconnect.address, nick=proto.nickname)
        waiters, self._sign_on_waiters = self._sign_on_waiters, []
        for waiter in waiters:
            waiter.callback(proto)

    def handle_disconnected(self, proto: BotProtocol, reason: Failure) -> None:
        """
        C{proto} is closed: the bot has no connection until the next one.
        """
        if self.connection is proto:
            self.connection = None
        self._reconnect.lost(reason)
        if not self.running:  # else the reconnection line says why
            self.log.info("IRC server {address}: disconnected ({reason})",
                          address=self._reconnect.address, reason=reason.getErrorMessage())

    def when_signed_on(self, fresh: bool = False) -> defer.Deferred[BotProtocol]:
        """
        Fire with the connection once the bot is signed on: at once if it is
        now, unless C{fresh}, which waits for the next sign-on (after a
        reconnection).
        """
        if not fresh and self.connection is not None and self.connection.signed_on:
            return defer.succeed(self.connection)
        waiter: defer.Deferred[BotProtocol] = defer.Deferred()
        self._sign_on_waiters.append(waiter)
        return waiter

    def owner_nicks(self) -> List[str]:
        """
        The nicks of the owners the bot sees now: users of its channels
        whose C{nick!user@host} matches an owner pattern.
        """
        proto = self.connection
        if proto is None or not proto.signed_on:
            return []
        return proto.people.matching(self.owners)

    def is_owner(self, sender: Any) -> bool:
        """
        Whether C{sender} (a L{Hostmask} or C{"nick!user@host"}) is one of
        the bot's owners.
        """
        return self.owners.matches(sender)

    # -- the index ------------------------------------------------------

    def install(self, plugin: str, cls: type) -> None:
        """
        Make the commands and rules of class C{cls} those of plugin
        C{plugin} (called by L{BotPlugin.startService}).

        @raise DuplicateCommand: if another plugin holds one of them.
        """
        commands, rules = bot_specs(cls)
        self.index.set(plugin, commands, rules)
        if any(spec.event == "irc_message" for spec in handler_specs(cls)):
            self._message_plugins.add(plugin)
        else:
            self._message_plugins.discard(plugin)

    def _plugin_event(self, event: PluginEvent) -> None:
        self.notifier(event)
        gone = event.kind in ("plugin_unloaded", "plugin_init_failed")
        if gone and isinstance(event.plugin, str):
            self._forget([event.plugin])

    def _plugins(self) -> Set[str]:
        """
        The plugins that have commands, rules or message handlers here.
        """
        plugins = {entry.plugin for entry in self.index.commands()}
        plugins.update(plugin for plugin, _ in self.index.rules)
        return plugins | self._message_plugins

    def _forget(self, plugins: Iterable[str]) -> None:
        for plugin in list(plugins):
            self.index.remove(plugin)
            self._message_plugins.discard(plugin)

    # -- traffic in -----------------------------------------------------

    def handle_privmsg(self, proto: BotProtocol, prefix: str, target: str, text: str) -> None:
        """
        A message to a channel or to the bot: run the command it names, or
        the rules it matches; then give it to the C{irc_message} handlers.
        """
        private = not is_channel(target)
        channel = None if private else target
        proto.people.follow("message", prefix, proto.nickname, channel)
        parsed = parse_command(text, proto.nickname, self.prefix, private, proto.casemapping)
        sender = None
        entry = self.index.lookup(parsed.name) if parsed is not None else None
        if parsed is not None and entry is not None:
            sender = Hostmask.parse(prefix)
            ctx = Context(bot=self, kind="command", sender=sender, target=target,
                          channel=channel, text=text, command=parsed.name,
                          args=parsed.args, plugin=entry.plugin)
            self._call(entry.plugin, entry.spec.event, ctx)
        else:
            for plugin, rule in self.index.rules:
                match = rule.pattern.search(text)
                if match is not None:
                    sender = sender or Hostmask.parse(prefix)
                    ctx = Context(bot=self, kind="rule", sender=sender, target=target,
                                  channel=channel, text=text, match=match, plugin=plugin)
                    self._call(plugin, rule.event, ctx)
        if self._message_plugins:
            ctx = Context(bot=self, kind="message", sender=sender or Hostmask.parse(prefix),
                          target=target, channel=channel, text=text)
            self.manager.emit("irc_message", ctx).addErrback(self._emit_failed, "message")

    def handle_event(self, kind: str, prefix: str, channel: Optional[str] = None,
                     target: str = "", **fields: Any) -> None:
        """
        Emit C{irc_<kind>} with a L{Context} to the plugins that handle it.
        """
        if self.connection is not None:
            self.connection.people.follow(kind, prefix, self.connection.nickname,
                                          channel=channel, **fields)
        ctx = Context(bot=self, kind=kind, sender=Hostmask.parse(prefix), channel=channel,
                      target=target or channel or "", **fields)
        self.manager.emit(f"irc_{kind}", ctx).addErrback(self._emit_failed, kind)

    def _emit_failed(self, failure: Failure, kind: str) -> None:
        self.log.failure("emitting irc_{kind} failed", failure=failure, kind=kind)

    def _call(self, plugin: str, event: str, ctx: Context) -> None:
        d = self.manager.call(plugin, event, ctx)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(ctx,), errbackArgs=(ctx,))
        d.addErrback(self._reply_failed, ctx)

    def _answered(self, result: Any, ctx: Context) -> None:
        if result is None or result is STOP:
            return
        if isinstance(result, (list, tuple)):
            for item in result:
                ctx.reply(item)
        else:
            ctx.reply(result)

    def _failed(self, failure: Failure, ctx: Context) -> None:
        what = f"{self.prefix}{ctx.command}" if ctx.command else "your message"
        if failure.check(NoSuchPlugin, NoSuchHandler):
            # Unloaded between the lookup and the call; nothing was run.
            self.log.info("{plugin} went away before handling {what}", plugin=ctx.plugin, what=what)
            text = f"{what} is not available right now"
        else:
            # The manager has broadcast plugin_error (and logged it).
            text = f"{what} failed: {failure.type.__name__} in plugin {ctx.plugin}"
        self.notice(ctx.nick, text)

    def _reply_failed(self, failure: Failure, ctx: Context) -> None:
        self.log.failure("could not send the answer of plugin {plugin}", failure=failure,
                         plugin=ctx.plugin)

    # -- traffic out ----------------------------------------------------

    def _send(self, command: str, target: str, text: str, ctcp: Optional[str] = None) -> int:
        proto = self.connection
        reserve = proto.reserve if proto is not None else CONSERVATIVE_RESERVE
        lines = format_messages(command, target, text, reserve, ctcp)
        if proto is None or not proto.signed_on:
            self.log.info("not connected: {count} lines to {target} dropped",
                          count=len(lines), target=target)
            return 0
        for line in lines:
            proto.put(line)
        return len(lines)

    def msg(self, target: str, text: str) -> int:
        """
        Send C{text} to C{target} as C{PRIVMSG}: split at line breaks and
        to fit 512 bytes, queued under flood control.

        @return: how many lines were queued.
        @raise ValueError: for a target that is not one nick or channel.
        """
        return self._send("PRIVMSG", target, text)

    def notice(self, target: str, text: str) -> int:
        """
        As L{msg}, with C{NOTICE}.
        """
        return self._send("NOTICE", target, text)

    def action(self, target: str, text: str) -> int:
        """
        As L{msg}, as a CTCP ACTION (C{/me}).
        """
        return self._send("PRIVMSG", target, text, ctcp="ACTION")


def _field(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


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
    (C{bot.setServiceParent(parent)}). With C{admin} (the default), the
    package of the built-in plugins (L{ADMIN_PACKAGE}) is added to the
    packages the manager searches (C{manager.add_package}), and the bot
    loads L{ADMIN_PLUGIN} when it starts. The manager is left as it was
    when the configuration is refused.

    @param irc_config: an C{IRCConfig} (from C{twisted_plugmgr._config}) or
        a dict with the same keys: C{server} (a client endpoint string),
        C{nick}, C{channels}, C{owners}, C{prefix}, C{flood} (with C{rate}
        and C{burst}), C{data_dir}, C{password}, C{username},
        C{realname}.
    @param reactor: the reactor.
    @param retry_policy: seconds to wait before reconnection attempt N
        (backoff from 1 s up to 60 s by default).
    @raise ValueError: for a server that is not a client endpoint string,
        an owner pattern that is not C{nick!user@host}, or bad flood
        settings.
    """
    flood = _field(irc_config, "flood")
    rate = _field(flood, "rate", 1.0) if flood is not None else 1.0
    burst = _field(flood, "burst", 4) if flood is not None else 4
    server = _field(irc_config, "server")
    try:
        endpoint = clientFromString(reactor, server)
    except Exception as e:
        # A dict config has not been through _config's check: a bad string
        # is a TypeError, KeyError, ImportError... there.
        raise ValueError(
            f"server {server!r}: not a Twisted client endpoint string "
            f"({type(e).__name__}: {e})"[:300]
        ) from None
    bot = IRCBot(
        manager,
        endpoint,
        _field(irc_config, "nick"),
        reactor,
        channels=_field(irc_config, "channels", ()) or (),
        owners=_field(irc_config, "owners", ()) or (),
        prefix=_field(irc_config, "prefix", "!"),
        flood_rate=rate,
        flood_burst=burst,
        data_dir=_field(irc_config, "data_dir"),
        password=_field(irc_config, "password"),
        username=_field(irc_config, "username"),
        realname=_field(irc_config, "realname"),
        retry_policy=retry_policy,
        admin=admin,
    )
    if admin:
        manager.add_package(ADMIN_PACKAGE)
    return bot
