"""
The bot's IRC wire protocol: L{BotProtocol}, one connection to the server,
and L{BotFactory}, which builds it for its owner (the bot service, an
L{IConnectionOwner}).

The protocol speaks IRC and nothing else: what it receives for plugins it
hands to its owner (C{handle_privmsg}, C{handle_event}), and it tells its
owner when it connects, signs on and goes away. Everything it sends goes
through the connection's L{OutgoingQueue} (flood control), except the few
lines of registration (IRCv3 capability negotiation and SASL,
L{CapNegotiation}), which go out at once.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from ._caps import CapNegotiation
from ._context import is_channel
from ._flood import OutgoingQueue, QueueFull, TokenBucket
from ._hostmask import Hostmask
from ._interfaces import IConnectionOwner
from ._ircv3 import IRCv3Client
from ._lines import MAX_LINE_BYTES, check_target, prefix_reserve
from ._people import People

__all__ = ["BotProtocol", "BotFactory", "MIN_PARAMS", "pong_line", "channel_mode_params"]


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        # Many IRC users still send Latin-1: never drop the connection
        # over a byte.
        return line.decode("latin-1")


#: The SASL numerics (L{CapNegotiation.numeric}).
SASL_NUMERICS = frozenset({"900", "901", "902", "903", "904", "905", "906", "907", "908"})

#: The fewest parameters a command from the server must have before its
#: handler (the bot's or L{irc.IRCClient}'s) may look at them: a shorter line
#: is ignored, with one line in the log. Commands not named here need none.
MIN_PARAMS: Dict[str, int] = {
    "PRIVMSG": 2, "NOTICE": 2, "JOIN": 1, "PART": 1, "KICK": 2, "NICK": 1,
    "TOPIC": 2, "MODE": 2, "PING": 1, "CAP": 2, "ACCOUNT": 1, "AUTHENTICATE": 1,
    "RPL_TOPIC": 3, "RPL_NOTOPIC": 2, "RPL_WHOREPLY": 6, "RPL_MOTDSTART": 1, "RPL_MOTD": 1,
    "RPL_CREATED": 2, "RPL_YOURHOST": 2, "RPL_MYINFO": 2, "RPL_BOUNCE": 2,
    "RPL_LUSERCLIENT": 2, "RPL_LUSEROP": 2, "RPL_LUSERCHANNELS": 2, "RPL_LUSERME": 2,
}


def _is_target(name: str) -> bool:
    try:
        check_target(name)
    except ValueError:
        return False
    return True


def pong_line(token: bytes) -> Optional[bytes]:
    """
    The C{PONG} wire line (CRLF included) that answers a server C{PING}
    with C{token}: the token byte for byte (whatever its encoding), cut so
    that the line fits in 512 bytes; L{None} when there is no token.
    """
    token = token.strip(b" ")
    if token.startswith(b":") and b" " not in token:
        token = token[1:]  # a one-word token needs no colon
    if not token:
        return None
    return (b"PONG " + token)[:MAX_LINE_BYTES - 2] + b"\r\n"


def channel_mode_params(prefixes: Any, chanmodes: Any) -> List[str]:
    """
    The channel modes that take a parameter, C{[when added, when
    removed]}, from the server's C{PREFIX} and C{CHANMODES} features (as
    L{irc.ServerSupportedFeatures} parses them; an empty C{PREFIX=} is no
    prefixes).
    """
    added = removed = "".join(prefixes or {})
    chanmodes = chanmodes or {}
    if chanmodes:
        added += chanmodes.get("addressModes", "") + chanmodes.get("param", "")
        removed = added
        added += chanmodes.get("setParam", "")
    return [added, removed]


class BotProtocol(IRCv3Client, irc.IRCClient):
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
    @ivar people: the users in the bot's channels (L{People}).
    @ivar caps: the IRCv3 negotiation (L{CapNegotiation}): C{caps.enabled}
        are the capabilities in use, C{caps.logged_in} the SASL account.
    @ivar tags: the message tags of the line being handled.
    """

    # IRCClient's own values for these are None or a URL, so Twisted's
    # annotations (inferred from them) say "None" or "str"; either may be a
    # str or None (CTCP VERSION and SOURCE answer only what is set).
    versionName = "twisted-plugmgr"  # type: ignore[assignment]
    versionNum = None
    versionEnv = None
    sourceURL = None  # type: ignore[assignment]
    heartbeatInterval = 60

    def __init__(self, bot: IConnectionOwner) -> None:
        # Per instance: a Logger class attribute would take the class's
        # name as its namespace, whatever namespace it was given.
        self.log = Logger(namespace="twisted_plugmgr.irc", source=self)
        self.bot = bot
        self.reactor: IReactorTime = bot.reactor
        self.nickname = bot.nick
        self.username = bot.username or bot.nick
        # IRCClient's realname = None (as its username and password) makes
        # mypy take None for its type; it is a str here.
        self.realname = bot.realname or "twisted-plugmgr bot"  # type: ignore[assignment]
        self.password = bot.password
        self.hostmask: Optional[str] = None
        self.casemapping = "rfc1459"
        self.people = People()
        self.queue: Optional[OutgoingQueue] = None
        self.last_received = 0.0
        self._collisions = 0
        self._regain: Optional[IDelayedCall] = None
        self._rejoins: Dict[str, IDelayedCall] = {}
        self.tags: Dict[str, str] = {}
        self.caps = CapNegotiation(self._send_now, self._negotiated, getattr(bot, "sasl", None))

    # -- connection -----------------------------------------------------

    def connectionMade(self) -> None:
        """
        Set up this connection's flood-controlled queue, then register.
        """
        transport = self.transport
        assert transport is not None, "makeConnection sets the transport first"
        clock = self.reactor
        bucket = TokenBucket(self.bot.flood_rate, self.bot.flood_burst, clock)
        self.queue = OutgoingQueue(transport.write, bucket, clock, self.bot.max_queue)
        self.last_received = clock.seconds()
        super().connectionMade()
        self.bot.handle_connected(self)

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
        self.bot.handle_disconnected(self, reason)

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
        if isinstance(line, str):
            line = line.encode("utf-8")
        line = self._split_tags(line)
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
        Answer a server PING (see L{pong_line}), ahead of the queue.
        """
        line = pong_line(token)
        if line is None:
            self.log.warn("ignored a PING without a token")
            return
        self.put(line, urgent=True)

    def handleCommand(self, command: str, prefix: str, params: List[str]) -> None:
        """
        Dispatch one command from the server, unless it lacks parameters its
        handler needs (L{MIN_PARAMS}): that is ignored, with one line in the
        log rather than a traceback.
        """
        if command in SASL_NUMERICS:
            self.caps.numeric(command, params)
            return
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
            self._abort()
            return
        super()._sendHeartbeat()

    def _abort(self) -> None:
        transport = self.transport
        if transport is not None:
            # Every stream transport has abortConnection (TCP, TLS, UNIX);
            # ITransport does not declare it.
            abort: Callable[[], None] = getattr(
                transport, "abortConnection", transport.loseConnection)
            abort()

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
            self.people.casemapping = self.casemapping
            self.bot.handle_casemapping(self.casemapping)

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
        self.bot.handle_signed_on(self)

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
        return channel_mode_params(self.supported.getFeature("PREFIX"),
                                   self.supported.getFeature("CHANMODES"))

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
        Emit C{irc_join}; the bot's own join tells its hostmask. With
        C{extended-join}, the joiner's account is noted.
        """
        if "extended-join" in self.caps.enabled and len(params) >= 2:
            self.people.set_account(prefix.split("!", 1)[0], params[1])
            params = params[:1]
        super().irc_JOIN(prefix, params)
        if self._own(prefix) and "!" in prefix and "@" in prefix:
            self.hostmask = prefix
        if self._own(prefix) and _is_target(params[-1]):
            self.sendLine(f"WHO {params[-1]}")  # who was there before the bot (People)
        self.bot.handle_event("join", prefix, channel=params[-1])

    def irc_RPL_WHOREPLY(self, prefix: str, params: List[str]) -> None:
        """A user of a channel the bot asked C{WHO} about: to L{People}."""
        self.people.who_reply(params, self.nickname)

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


class BotFactory(protocol.Factory):
    """
    Builds the bot's protocol.

    @ivar bot: the L{IConnectionOwner} each connection is for.
    """

    def __init__(self, bot: IConnectionOwner) -> None:
        self.bot = bot

    def buildProtocol(self, addr: Any) -> BotProtocol:
        """
        A L{BotProtocol} for the bot.
        """
        proto = BotProtocol(self.bot)
        proto.factory = self
        return proto
