"""
The bot: a service that keeps one IRC connection up (reconnecting with
backoff), and the protocol that feeds IRC traffic to plugins through the
plugin manager.

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
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from .._dispatch import STOP, handler_specs
from .._errors import NoSuchHandler, NoSuchPlugin
from .._events import PluginEvent
from ._context import Context, is_channel
from ._flood import OutgoingQueue, QueueFull, TokenBucket
from ._hostmask import Hostmask, HostmaskPatterns
from ._index import CommandIndex, bot_specs
from ._lines import (
    CONSERVATIVE_RESERVE,
    MAX_LINE_BYTES,
    check_target,
    format_messages,
    prefix_reserve,
)
from ._parse import parse_command
from ._plugin import BOT_SERVICE_NAME

__all__ = ["IRCBot", "BotProtocol", "make_bot_service", "ADMIN_PACKAGE", "ADMIN_PLUGIN"]

#: The package of the bot's built-in plugins.
ADMIN_PACKAGE = "twisted_plugmgr.irc.plugins"

#: The built-in admin plugin (C{!plugins}, C{!load}, C{!unload},
#: C{!reload}, C{!help}).
ADMIN_PLUGIN = "irc_admin"


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        # Many IRC users still send Latin-1: never drop the connection
        # over a byte.
        return line.decode("latin-1")


#: The fewest parameters a command from the server must have before its
#: handler (the bot's or L{irc.IRCClient}'s) may look at them: a shorter line
#: is ignored, with one line in the log. Commands not named here need none.
MIN_PARAMS: Dict[str, int] = {
    "PRIVMSG": 2, "NOTICE": 2, "JOIN": 1, "PART": 1, "KICK": 2, "NICK": 1,
    "TOPIC": 2, "MODE": 2, "PING": 1,
    "RPL_TOPIC": 3, "RPL_NOTOPIC": 2, "RPL_MOTDSTART": 1, "RPL_MOTD": 1,
    "RPL_CREATED": 2, "RPL_YOURHOST": 2, "RPL_MYINFO": 2, "RPL_BOUNCE": 2,
    "RPL_LUSERCLIENT": 2, "RPL_LUSEROP": 2, "RPL_LUSERCHANNELS": 2, "RPL_LUSERME": 2,
}


def _is_target(name: str) -> bool:
    try:
        check_target(name)
    except ValueError:
        return False
    return True


class BotProtocol(irc.IRCClient):
    """
    One connection of the bot to the server.

    Differences from L{irc.IRCClient}: every outgoing line goes through the
    connection's flood-controlled queue (C{PONG} first); received lines
    are decoded leniently (UTF-8, else Latin-1) and never low-level
    dequoted, so that received text cannot smuggle CR or LF; nick
    collisions at sign-on alter the nick, and the configured nick is
    reclaimed later; the heartbeat runs on the bot's reactor and closes a
    connection that has been silent for three heartbeats. A line from the
    server that lacks parameters its handler needs (L{MIN_PARAMS}), a
    C{MODE} that does not parse, and a C{PRIVMSG} that could not be answered
    (its sender has no nick, or its channel is not a valid target) are
    ignored with one line in the log, before any plugin sees them.

    @ivar hostmask: the bot's own C{nick!user@host} as the server relays
        it, once known (from the welcome, then from its own joins).
    @ivar queue: the L{OutgoingQueue} of this connection.
    """

    versionName = "twisted-plugmgr"
    versionNum = None
    versionEnv = None
    sourceURL = None
    heartbeatInterval = 60.0

    def __init__(self, bot: IRCBot) -> None:
        # Per instance: a Logger class attribute would take the class's
        # name as its namespace, whatever namespace it was given.
        self.log = Logger(namespace="twisted_plugmgr.irc", source=self)
        self.bot = bot
        self.reactor = bot.reactor
        self.nickname = bot.nick
        self.username = bot.username or bot.nick
        self.realname = bot.realname or "twisted-plugmgr bot"
        self.password = bot.password
        self.hostmask: Optional[str] = None
        self.casemapping = "rfc1459"
        self.queue: Optional[OutgoingQueue] = None
        self.last_received = 0.0
        self._collisions = 0
        self._regain: Optional[IDelayedCall] = None
        self._rejoins: Dict[str, IDelayedCall] = {}

    # -- connection -----------------------------------------------------

    def connectionMade(self) -> None:
        """
        Set up this connection's flood-controlled queue, then register.
        """
        clock = self.reactor
        bucket = TokenBucket(self.bot.flood_rate, self.bot.flood_burst, clock)
        self.queue = OutgoingQueue(self.transport.write, bucket, clock, self.bot.max_queue)
        self.last_received = clock.seconds()
        super().connectionMade()
        self.bot._connected(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """
        Drop the queue and pending timers; tell the bot.
        """
        if self.queue is not None:
            self.queue.clear()
        for call in [self._regain, *self._rejoins.values()]:
            if call is not None and call.active():
                call.cancel()
        self._regain = None
        self._rejoins = {}
        super().connectionLost(reason)
        self.bot._disconnected(self, reason)

    @property
    def reserve(self) -> int:
        """
        Bytes the server puts in front of the bot's lines when relaying.
        """
        return prefix_reserve(self.hostmask)

    @property
    def signed_on(self) -> bool:
        """
        Whether the server has welcomed this connection.
        """
        return bool(self._registered)

    # -- sending --------------------------------------------------------

    def sendLine(self, line: Any) -> None:
        """
        Queue one IRC line (without CRLF). A line that holds CR, LF or NUL
        is refused and logged: it would be two commands.
        """
        if isinstance(line, bytes):
            line = _decode(line)
        if "\r" in line or "\n" in line or "\x00" in line:
            self.log.error("refused to send a line holding CR, LF or NUL: {line!r}", line=line)
            return
        self.put(line.encode("utf-8") + b"\r\n", urgent=line.startswith("PONG "))

    def put(self, data: bytes, urgent: bool = False) -> None:
        """
        Queue one complete wire line (CRLF included).
        """
        if self.queue is None:
            return
        try:
            self.queue.put(data, urgent)
        except QueueFull:
            if self.queue.dropped == 1 or self.queue.dropped % 100 == 0:
                self.log.warn(
                    "outgoing queue full ({size} lines): {dropped} lines dropped so far",
                    size=len(self.queue), dropped=self.queue.dropped,
                )

    def quit_now(self, message: str = "") -> None:
        """
        Send C{QUIT} at once, ahead of anything queued.
        """
        if self.transport is not None:
            text = message.replace("\r", " ").replace("\n", " ").replace("\x00", "")
            self.transport.write(f"QUIT :{text}\r\n".encode())

    # -- receiving ------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        """
        Decode (UTF-8, else Latin-1), parse and handle one line from the server.
        """
        self.last_received = self.reactor.seconds()
        if isinstance(line, bytes):
            # PING is answered from the bytes, so the token goes back as it came.
            rest = line.partition(b" ")[2].lstrip(b" ") if line.startswith(b":") else line
            if rest[:5].upper() == b"PING ":
                self._pong(rest[5:])
                return
        text = _decode(line) if isinstance(line, bytes) else line
        try:
            prefix, command, params = irc.parsemsg(text)
        except (irc.IRCBadMessage, IndexError, ValueError):
            self.log.info("unparsable line from the server: {line!r}", line=text)
            return
        command = irc.numeric_to_symbolic.get(command, command)
        self.handleCommand(command, prefix, params)

    def _pong(self, token: bytes) -> None:
        """
        Answer a server PING with its token byte for byte (whatever its
        encoding), cut so that the PONG fits in 512 bytes, ahead of the
        queue.
        """
        token = token.strip(b" ")
        if token.startswith(b":") and b" " not in token:
            token = token[1:]  # a one-word token needs no colon
        if not token:
            self.log.warn("ignored a PING without a token")
            return
        line = (b"PONG " + token)[:MAX_LINE_BYTES - 2]
        self.put(line + b"\r\n", urgent=True)

    def handleCommand(self, command: str, prefix: str, params: List[str]) -> None:
        """
        Dispatch one command from the server, unless it lacks parameters its
        handler needs (L{MIN_PARAMS}): that is ignored, with one line in the
        log rather than a traceback.
        """
        needed = MIN_PARAMS.get(command, 0)
        if len(params) < needed:
            self.log.warn(
                "ignored {command} from {prefix!r}: {count} parameters, {needed} needed",
                command=command, prefix=prefix, count=len(params), needed=needed,
                params=params,
            )
            return
        super().handleCommand(command, prefix, params)

    def _createHeartbeat(self) -> LoopingCall:
        loop = LoopingCall(self._sendHeartbeat)
        loop.clock = self.reactor
        return loop

    def _sendHeartbeat(self) -> None:
        silent = self.reactor.seconds() - self.last_received
        if self.heartbeatInterval and silent > 3 * self.heartbeatInterval:
            self.log.warn("no data from the server for {silent:.0f}s: reconnecting", silent=silent)
            self.transport.abortConnection()
            return
        super()._sendHeartbeat()

    # -- registration and nick ------------------------------------------

    def irc_RPL_WELCOME(self, prefix: str, params: List[str]) -> None:
        """
        Signed on: learn the bot's hostmask when the welcome gives it.
        """
        words = params[-1].split() if params else []
        if words and "!" in words[-1] and "@" in words[-1]:
            self.hostmask = words[-1]
        super().irc_RPL_WELCOME(prefix, params)

    def irc_RPL_ISUPPORT(self, prefix: str, params: List[str]) -> None:
        """
        Follow the server's CASEMAPPING for nicks and owner patterns.
        """
        super().irc_RPL_ISUPPORT(prefix, params)
        mapping = self.supported.getFeature("CASEMAPPING")
        if isinstance(mapping, (tuple, list)):
            mapping = mapping[0] if mapping else None
        if isinstance(mapping, str) and mapping:
            self.casemapping = mapping.lower()
            self.bot.owners.casemapping = self.casemapping

    def alterCollidedNick(self, nickname: str) -> str:
        """
        The next nick to try at sign-on: C{nick_}, then C{nick2}, C{nick3}...
        """
        self._collisions += 1
        base = self.bot.nick
        if self._collisions == 1:
            return base + "_"
        suffix = str(self._collisions)
        return base[: max(1, 9 - len(suffix))] + suffix

    def irc_ERR_PASSWDMISMATCH(self, prefix: str, params: List[str]) -> None:
        """
        The server refused the password: say so (L{irc.IRCClient} raises,
        which only logs a traceback); the server closes the connection.
        """
        self.log.error("the server refused the password: {text}",
                       text=params[-1] if params else "")

    def irc_ERR_NICKNAMEINUSE(self, prefix: str, params: List[str]) -> None:
        """
        At sign-on, try another nick; later (reclaiming), keep the current one.
        """
        if not self._registered:
            super().irc_ERR_NICKNAMEINUSE(prefix, params)
        else:
            # Reclaiming the configured nick failed: keep the current one.
            self._attemptedNick = self.nickname
            self._schedule_regain()

    def _schedule_regain(self) -> None:
        if self._regain is None or not self._regain.active():
            self._regain = self.reactor.callLater(self.bot.regain_interval, self._try_regain)

    def _try_regain(self) -> None:
        self._regain = None
        if self.nickname != self.bot.nick:
            self.setNick(self.bot.nick)

    def signedOn(self) -> None:
        """
        Join the configured channels; reclaim the nick later if it was altered.
        """
        self.log.info("signed on as {nick}", nick=self.nickname)
        if self.nickname != self.bot.nick:
            self._schedule_regain()
        for channel in self.bot.channels:
            self.join(channel)
        self.bot._signed_on(self)

    def nickChanged(self, nick: str) -> None:
        """
        Keep the hostmask in step with the bot's nick.
        """
        super().nickChanged(nick)
        if self.hostmask:
            _, bang, rest = self.hostmask.partition("!")
            self.hostmask = nick + bang + rest if bang else None

    def kickedFrom(self, channel: str, kicker: str, message: str) -> None:
        """
        Rejoin a configured channel after C{rejoin_delay} seconds.
        """
        if any(channel.lower() == c.lower() for c in self.bot.channels):
            pending = self._rejoins.get(channel)
            if pending is not None and pending.active():
                return
            self._rejoins[channel] = self.reactor.callLater(
                self.bot.rejoin_delay, self._rejoin, channel)

    def _rejoin(self, channel: str) -> None:
        self._rejoins.pop(channel, None)
        self.join(channel)

    def ctcpReply_PING(self, user: str, channel: str, data: Any) -> None:
        """
        A CTCP PING reply: one to no ping of the bot's is ignored, with one
        line in the log (L{irc.IRCClient} raises, which logs a traceback).
        """
        if not self._pings or (user.split("!", 1)[0], data) not in self._pings:
            self.log.info("ignored a CTCP PING reply from {user!r}: the bot sent no such ping",
                          user=user, data=data)
            return
        super().ctcpReply_PING(user, channel, data)

    def ctcpQuery_DCC(self, user: str, channel: str, data: str) -> None:
        """
        DCC offers are ignored: the bot opens no connections for strangers.
        """

    # -- traffic to plugins ---------------------------------------------

    def _own(self, prefix: str) -> bool:
        return Hostmask.parse(prefix).nick == self.nickname

    def irc_PRIVMSG(self, prefix: str, params: List[str]) -> None:
        """
        A message (or CTCP query), unless it could not be answered: from a
        sender without a valid nick, or to a channel that is not a valid
        target. Such a message is ignored, with one line in the log, before
        any plugin runs (a reply or an error notice would fail).
        """
        target = params[0]
        nick = prefix.split("!", 1)[0]
        if not _is_target(nick) or (is_channel(target) and not _is_target(target)):
            self.log.warn("ignored PRIVMSG from {prefix!r} to {target!r}: no valid reply target",
                          prefix=prefix, target=target)
            return
        super().irc_PRIVMSG(prefix, params)

    def irc_NOTICE(self, prefix: str, params: List[str]) -> None:
        """
        A notice; an empty one is ignored (L{irc.IRCClient} would raise).
        """
        if params[-1]:
            super().irc_NOTICE(prefix, params)

    def irc_MODE(self, prefix: str, params: List[str]) -> None:
        """
        A mode change, as L{irc.IRCClient} parses it; one that does not
        parse is ignored with one line in the log (L{irc.IRCClient} logs a
        traceback).
        """
        target, modes, args = params[0], params[1], params[2:]
        if not modes.startswith(("+", "-")):
            modes = "+" + modes
        if target == self.nickname:
            param_modes = self.getUserModeParams()
        else:
            param_modes = self.getChannelModeParams()
        try:
            added, removed = irc.parseModes(modes, args, param_modes)
        except irc.IRCBadModes as e:
            self.log.warn("ignored MODE from {prefix!r}: {error}", prefix=prefix,
                          error=str(e), params=params)
            return
        for adding, changes in ((True, added), (False, removed)):
            if changes:
                letters = "".join(letter for letter, _ in changes)
                values = tuple(value for _, value in changes)
                self.modeChanged(prefix, target, adding, letters, values)

    def getChannelModeParams(self) -> List[str]:
        """
        The channel modes that take a parameter, C{[when added, when
        removed]}, from the server's C{PREFIX} and C{CHANMODES} (an empty
        C{PREFIX=} is no prefixes, where L{irc.IRCClient} raises).
        """
        prefixes = self.supported.getFeature("PREFIX") or {}
        chanmodes = self.supported.getFeature("CHANMODES") or {}
        added = removed = "".join(prefixes)
        if chanmodes:
            added += chanmodes.get("addressModes", "") + chanmodes.get("param", "")
            removed = added
            added += chanmodes.get("setParam", "")
        return [added, removed]

    def privmsg(self, user: str, channel: str, message: str) -> None:
        """
        A message: to the bot's dispatch.
        """
        self.bot.handle_privmsg(self, user, channel, message)

    def action(self, user: str, channel: str, data: str) -> None:
        """
        A CTCP ACTION: emitted as C{irc_action}.
        """
        where = channel if is_channel(channel) else None
        self.bot.handle_event("action", user, channel=where, target=channel, text=data)

    def irc_JOIN(self, prefix: str, params: List[str]) -> None:
        """
        Emit C{irc_join}; the bot's own join tells its hostmask.
        """
        super().irc_JOIN(prefix, params)
        if self._own(prefix) and "!" in prefix and "@" in prefix:
            self.hostmask = prefix
        self.bot.handle_event("join", prefix, channel=params[-1])

    def irc_PART(self, prefix: str, params: List[str]) -> None:
        """
        Emit C{irc_part}.
        """
        super().irc_PART(prefix, params)
        self.bot.handle_event("part", prefix, channel=params[0],
                              text=params[1] if len(params) > 1 else "")

    def irc_QUIT(self, prefix: str, params: List[str]) -> None:
        """
        Emit C{irc_quit}; the quit message is optional.
        """
        text = params[0] if params else ""
        self.userQuit(prefix.split("!")[0], text)
        self.bot.handle_event("quit", prefix, text=text)

    def irc_KICK(self, prefix: str, params: List[str]) -> None:
        """
        Emit C{irc_kick}.
        """
        super().irc_KICK(prefix, params)
        self.bot.handle_event("kick", prefix, channel=params[0], kicked=params[1],
                              text=params[2] if len(params) > 2 else "")

    def irc_NICK(self, prefix: str, params: List[str]) -> None:
        """
        Emit C{irc_nick}.
        """
        super().irc_NICK(prefix, params)
        self.bot.handle_event("nick", prefix, new_nick=params[0])

    def irc_TOPIC(self, prefix: str, params: List[str]) -> None:
        """
        Emit C{irc_topic}.
        """
        super().irc_TOPIC(prefix, params)
        self.bot.handle_event("topic", prefix, channel=params[0], text=params[-1])


class _BotFactory(protocol.Factory):
    """
    Builds the bot's protocol.
    """

    def __init__(self, bot: IRCBot) -> None:
        self.bot = bot

    def buildProtocol(self, addr: Any) -> BotProtocol:
        """
        A L{BotProtocol} for the bot.
        """
        proto = BotProtocol(self.bot)
        proto.factory = self
        return proto


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
    """

    name = BOT_SERVICE_NAME

    def __init__(
        self,
        manager: Any,
        endpoint: IStreamClientEndpoint,
        nick: str,
        reactor: Any,
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
        self._message_plugins: Set[str] = set()
        self._sign_on_waiters: List[defer.Deferred[BotProtocol]] = []
        self._client = ClientService(
            endpoint,
            _BotFactory(self),
            retryPolicy=retry_policy or backoffPolicy(initialDelay=1.0, maxDelay=60.0),
            clock=reactor,
        )
        # Listen from now on: the manager may load (and unload) bot plugins
        # before this service starts.
        manager.register(self._plugin_event)

    # -- service --------------------------------------------------------

    def startService(self) -> None:
        """
        Listen to the manager, load the admin plugin, connect.
        """
        super().startService()
        self.manager.register(self._plugin_event)
        if self.admin and ADMIN_PLUGIN not in self.manager.plugin_table():
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

    def _connected(self, proto: BotProtocol) -> None:
        self.connection = proto

    def _signed_on(self, proto: BotProtocol) -> None:
        self.sign_ons += 1
        waiters, self._sign_on_waiters = self._sign_on_waiters, []
        for waiter in waiters:
            waiter.callback(proto)

    def _disconnected(self, proto: BotProtocol, reason: Failure) -> None:
        if self.connection is proto:
            self.connection = None
        self.log.info("disconnected: {reason}", reason=reason.getErrorMessage())

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
        gone = event.kind in ("plugin_unloaded", "plugin_init_failed")
        if gone and isinstance(event.plugin, str):
            self.index.remove(event.plugin)
            self._message_plugins.discard(event.plugin)

    # -- traffic in -----------------------------------------------------

    def handle_privmsg(self, proto: BotProtocol, prefix: str, target: str, text: str) -> None:
        """
        A message to a channel or to the bot: run the command it names, or
        the rules it matches; then give it to the C{irc_message} handlers.
        """
        private = not is_channel(target)
        channel = None if private else target
        parsed = parse_command(text, proto.nickname, self.prefix, private, proto.casemapping)
        sender = None
        entry = self.index.lookup(parsed.name) if parsed is not None else None
        if entry is not None:
            sender = Hostmask.parse(prefix)
            ctx = Context(bot=self, kind="command", sender=sender, target=target,
                          channel=channel, text=text, command=parsed.name,  # type: ignore[union-attr]
                          args=parsed.args, plugin=entry.plugin)  # type: ignore[union-attr]
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
    manager: Any,
    irc_config: Any,
    reactor: Any,
    *,
    retry_policy: Optional[Callable[[int], float]] = None,
    admin: bool = True,
) -> IRCBot:
    """
    Build the IRC bot for C{manager} from the C{[irc]} configuration.

    The caller puts the returned service in the same parent as the manager
    (C{bot.setServiceParent(parent)}). With C{admin} (the default), the
    package of the built-in plugins (L{ADMIN_PACKAGE}) is added to the
    manager's packages, and the bot loads L{ADMIN_PLUGIN} when it starts.

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
    if admin and ADMIN_PACKAGE not in manager.packages:
        manager.packages = tuple(manager.packages) + (ADMIN_PACKAGE,)
    return IRCBot(
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
