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

Before a plugin hears a sender, the bot's L{Gate} checks the ignore list,
the sender's rate limit, the permission a command needs and whether its
plugin answers in that channel.

Several networks: one L{IRCBot} per network, the first (the I{primary},
the service beside the manager) sharing its command index, its ignore
list and its channel rules with the others, which it starts and stops
(L{add_network}). A network whose connection fails never stops the
others: each reconnects on its own.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._deferreds import run_blocking
from .._dispatch import STOP, handler_specs
from .._errors import NoSuchHandler, NoSuchPlugin
from .._events import PluginEvent
from .._interfaces import IPluginManager
from ._abuse import IGNORE_FILE, IgnoreList, UserFlood
from ._caps import SASLSettings
from ._channels import ChannelPlugins
from ._context import Context, is_channel
from ._flood import TokenBucket
from ._gate import Gate
from ._hostmask import Hostmask
from ._index import CommandIndex, bot_specs
from ._interfaces import IBot, IConnectionOwner
from ._lines import CONSERVATIVE_RESERVE, format_messages
from ._notify import OwnerNotifier
from ._parse import parse_command
from ._permissions import Permissions, Who
from ._plugin import BOT_SERVICE_NAME
from ._protocol import BotFactory, BotProtocol
from ._reconnect import QuietClientService, ReconnectLog

__all__ = ["IRCBot", "ADMIN_PACKAGE", "ADMIN_PLUGIN", "DEFAULT_NETWORK"]

#: The name of the one network of a single C{[irc]} section.
DEFAULT_NETWORK = "default"

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
    @ivar owners: the owners (a L{Who}: hostmask patterns and
        C{account:NAME}).
    @ivar permissions: the L{Permissions} (the owners hold every one).
    @ivar network: the name of this bot's network.
    @ivar bots: every network's bot by name, this one included (one dict,
        shared by all of them).
    @ivar primary: the bot whose index this one shares (itself, for the
        service beside the manager).
    @ivar gate: the L{Gate}: ignore list, user flood, permissions,
        channel rules.
    @ivar login_error: the last required SASL login that failed, or
        L{None}.
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
        network: str = DEFAULT_NETWORK,
        sasl: Optional[SASLSettings] = None,
        permissions: Optional[Mapping[str, Iterable[str]]] = None,
        user_flood: Optional[Tuple[float, int]] = None,
        ignore_seconds: float = 60.0,
        channel_plugins: Optional[Mapping[str, Any]] = None,
        ignores: Optional[IgnoreList] = None,
        primary: Optional[IRCBot] = None,
    ) -> None:
        TokenBucket(flood_rate, flood_burst, reactor)  # check the settings now
        flood = None if user_flood is None else UserFlood(*user_flood, ignore_seconds, reactor)
        self.log = Logger(namespace="twisted_plugmgr.irc", source=self)
        self.manager = manager
        self.reactor = reactor
        self.nick = nick
        self.channels = tuple(channels)
        self.owners = Who(owners)
        self.permissions = Permissions(self.owners, permissions)
        self.network = network
        self.sasl = sasl
        self.login_error: Optional[Exception] = None
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
        self.connection: Optional[BotProtocol] = None
        self.sign_ons = 0
        self.notifier = OwnerNotifier(self.owner_nicks, self.msg)
        self.primary: IRCBot = primary if primary is not None else self
        if primary is None:
            self.index = CommandIndex()
            self._message_plugins: Set[str] = set()
            self.bots: Dict[str, IRCBot] = {network: self}
            if ignores is None:
                path = None if data_dir is None else os.path.join(data_dir, IGNORE_FILE)
                ignores = IgnoreList(path)
            self.ignores = ignores
            self.channel_plugins = ChannelPlugins(channel_plugins)
        else:
            self.index = primary.index
            self._message_plugins = primary._message_plugins
            self.bots = primary.bots
            self.ignores = primary.ignores
            self.channel_plugins = primary.channel_plugins
        self.gate = Gate(self.permissions, self.ignores, flood, self.channel_plugins, reactor)
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
        if self.primary is self:
            self.manager.register(self._plugin_event)
            installed = self._plugins()
            if installed or self.admin:
                loaded = self.manager.plugin_table()
                self._forget(plugin for plugin in installed if plugin not in loaded)
                if self.admin and ADMIN_PLUGIN not in loaded:
                    self.manager.load(ADMIN_PLUGIN).addErrback(self._admin_failed)
            for bot in self.bots.values():
                if bot is not self and not bot.running:
                    bot.startService()
        self._client.startService()

    def add_network(self, bot: IRCBot) -> None:
        """
        Serve network C{bot.network} too: C{bot} (built with
        C{primary=self}) is started and stopped with this bot.

        @raise ValueError: for a network name taken, or a bot of another
            primary.
        """
        if bot.primary is not self or self.primary is not self:
            raise ValueError(f"network {bot.network!r}: built for another bot")
        if bot.network in self.bots:
            raise ValueError(f"network {bot.network!r}: defined twice")
        self.bots[bot.network] = bot
        if self.running:
            bot.startService()

    def _admin_failed(self, failure: Failure) -> None:
        # The manager has broadcast (and logged) why already.
        self.log.warn("the admin plugin did not load: {error}", error=failure.getErrorMessage())

    def stopService(self) -> defer.Deferred[None]:
        """
        Say goodbye, disconnect and stop reconnecting; fires once the
        connection is closed. The bot stops listening to the manager.
        """
        super().stopService()
        stopping = [self._client.stopService()]
        if self.primary is self:
            self.manager.unregister(self._plugin_event)
            stopping.extend(bot.stopService() for bot in self.bots.values()
                            if bot is not self and bot.running)
        if self.connection is not None:
            self.connection.quit_now("shutting down")
        for waiter in self._sign_on_waiters:
            waiter.cancel()
        self._sign_on_waiters = []
        done = defer.gatherResults(stopping, consumeErrors=True)
        return done.addCallback(lambda _: None)

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
        self.login_error = None
        self.log.info("IRC server {address}: signed on as {nick}",
                      address=self._reconnect.address, nick=proto.nickname)
        waiters, self._sign_on_waiters = self._sign_on_waiters, []
        for waiter in waiters:
            waiter.callback(proto)

    def handle_casemapping(self, mapping: str) -> None:
        """
        Compare owners, permissions, the ignore list and channel names
        with the server's C{CASEMAPPING}.
        """
        self.permissions.casemapping = mapping
        self.ignores.casemapping = mapping
        self.channel_plugins.casemapping = mapping

    def handle_login_failed(self, proto: BotProtocol, error: Exception) -> None:
        """
        A required SASL login failed: remember it (the protocol has logged
        it and is disconnecting; reconnection goes on as for any loss).
        """
        self.login_error = error

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

    def is_owner(self, sender: Any, account: Optional[str] = None) -> bool:
        """
        Whether C{sender} (a L{Hostmask} or C{"nick!user@host"}, with
        C{account} when known) is one of the bot's owners.
        """
        return self.owners.matches(sender, account)

    def has_permission(self, permission: Optional[str], sender: Any,
                       account: Optional[str] = None) -> bool:
        """
        Whether C{sender} (with C{account}) holds C{permission}; owners
        hold every one.
        """
        mask = sender if isinstance(sender, Hostmask) else Hostmask.parse(str(sender))
        return self.permissions.has(permission, mask, account)

    def save_ignores(self) -> defer.Deferred[None]:
        """
        Write the ignore list (in a thread); fires once written.
        """
        return run_blocking(self.reactor, self.ignores.save)

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
        for bot in self.bots.values():  # the owners of every network
            bot.notifier(event)
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
        account = None
        gate = self.gate
        entry = self.index.lookup(parsed.name) if parsed is not None else None
        # Chatter no plugin would see costs no screening.
        if gate.screening and (entry is not None or self.index.rules or self._message_plugins):
            sender = Hostmask.parse(prefix)
            account = proto.account_of(sender.nick)
            if not gate.hears(sender, account):
                return
        if parsed is not None and entry is not None:
            if sender is None:
                sender = Hostmask.parse(prefix)
                account = proto.account_of(sender.nick)
            runs, notice = gate.command(sender, account, channel, entry.plugin,
                                        entry.spec.needs, self.prefix + parsed.name)
            if notice is not None:
                self.notice(sender.nick, notice)
            if runs:
                ctx = Context(bot=self, kind="command", sender=sender, target=target,
                              channel=channel, text=text, command=parsed.name,
                              args=parsed.args, plugin=entry.plugin, account=account,
                              tags=proto.tags)
                self._call(entry.plugin, entry.spec.event, ctx)
        else:
            answers = gate.channels.answers
            for plugin, rule in self.index.rules:
                match = rule.pattern.search(text)
                if match is not None and answers(plugin, channel):
                    if sender is None:
                        sender = Hostmask.parse(prefix)
                        account = proto.account_of(sender.nick)
                    ctx = Context(bot=self, kind="rule", sender=sender, target=target,
                                  channel=channel, text=text, match=match, plugin=plugin,
                                  account=account, tags=proto.tags)
                    self._call(plugin, rule.event, ctx)
        if self._message_plugins:
            if sender is None:
                sender = Hostmask.parse(prefix)
                account = proto.account_of(sender.nick)
            ctx = Context(bot=self, kind="message", sender=sender, target=target,
                          channel=channel, text=text, account=account, tags=proto.tags)
            self.manager.emit("irc_message", ctx).addErrback(self._emit_failed, "message")

    def handle_event(self, kind: str, prefix: str, channel: Optional[str] = None,
                     target: str = "", **fields: Any) -> None:
        """
        Emit C{irc_<kind>} with a L{Context} to the plugins that handle it.
        """
        proto = self.connection
        sender = Hostmask.parse(prefix)
        account = None
        tags: Dict[str, str] = {}
        if proto is not None:
            account = proto.account_of(sender.nick)
            tags = proto.tags
            proto.people.follow(kind, prefix, proto.nickname, channel=channel, **fields)
        ctx = Context(bot=self, kind=kind, sender=sender, channel=channel,
                      target=target or channel or "", account=account, tags=tags, **fields)
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
