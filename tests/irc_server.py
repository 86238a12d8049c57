"""
A real IRC server for the integration tests, and a test client that talks
to it over real sockets.

L{start_server} runs C{ngircd} in the foreground (C{-n -f config}) on a
free loopback port, with a configuration generated in a temporary
directory. When C{ngircd} is not installed (the Debian package C{ngircd};
C{.ci/run} installs it), or when the environment variable
C{PLUGMGR_IRC_SERVER=twisted} asks for it, Twisted's own IRC server
(C{twisted.words.service}) is started instead, in this process, and a
warning says so in the test output. Twisted's server needs a password
(any will do): use L{IRCServer.password}.

L{TestClient} is a small C{IRCClient} that records every message it
receives; tests wait for one with L{TestClient.wait_for}, a Deferred
bounded by a timeout on the reactor's clock (never a sleep).
"""

from __future__ import annotations

import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import Logger
from twisted.words.protocols import irc
from zope.interface import implementer

__all__ = ["IRCServer", "start_server", "TestClient", "connect_client", "Message", "find_ngircd"]

log = Logger()

#: How long a test waits for something that should happen on loopback.
TIMEOUT = 10.0

NGIRCD_CONFIG = """\
[Global]
	Name = irc.plugmgr.test
	Info = twisted-plugmgr test server
	AdminInfo1 = twisted-plugmgr tests
	AdminInfo2 = loopback
	AdminEMail = tests@plugmgr.test
	Listen = 127.0.0.1
	Ports = {port}
	MotdPhrase = "test server"
	PidFile = {directory}/ngircd.pid
	HelpFile = {directory}/help.txt
[Limits]
	MaxNickLength = 30
	MaxConnectionsIP = 0
	MaxJoins = 0
	PingTimeout = 120
	PongTimeout = 20
	MaxPenaltyTime = 0
[Options]
	DNS = no
	Ident = no
	PAM = no
	MorePrivacy = no
	SyslogFacility = local1
"""


def find_ngircd() -> Optional[str]:
    """
    The path of the C{ngircd} executable (also looked for in C{/usr/sbin},
    where Debian puts it, which is not on every user's PATH), or L{None}.
    """
    if os.environ.get("PLUGMGR_IRC_SERVER", "").lower() == "twisted":
        return None
    path = os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/usr/local/sbin"
    return shutil.which("ngircd", path=path)


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _NgircdProtocol(protocol.ProcessProtocol):
    """
    Watches ngircd's output for the line that says it is ready, and its
    end.
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self._seen(data)

    def errReceived(self, data: bytes) -> None:
        self._seen(data)

    def _seen(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"ready." in self.output:
            self.ready.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            output = self.output.decode("utf-8", "replace")
            self.ready.errback(RuntimeError("ngircd ended before it was ready:\n" + output))
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(None)
        else:
            self.ended.errback(reason)


@implementer(ICredentialsChecker)
class _AnyPassword:
    """
    Lets anyone in, under the nick they ask for (Twisted's IRC server
    insists on a login).
    """

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
        username = credentials.username
        return defer.succeed(username if isinstance(username, bytes) else username.encode())


def _tracking_factory_class() -> Any:
    from twisted.words import service as words

    class UnknownCommandIRCUser(words.IRCUser):  # type: ignore[misc]
        """
        Twisted's IRC server connection, answering a command it does not
        know (C{CAP}, ...) with C{421} as IRC servers do (Twisted's raises
        NotImplementedError, which is logged as an error).
        """

        def irc_unknown(self, prefix: str, command: str, params: List[str]) -> None:
            nick = getattr(self, "name", None) or "*"
            self.sendLine(f":{self.hostname} {irc.ERR_UNKNOWNCOMMAND} {nick} {command} :Unknown command")

    class TrackingIRCFactory(words.IRCFactory):  # type: ignore[misc]
        """
        Twisted's IRC server factory, remembering its connections so that
        L{IRCServer.stop} can close them.
        """

        protocol = UnknownCommandIRCUser

        def __init__(self, realm: Any, portal: Any) -> None:
            super().__init__(realm, portal)
            self.clients: set = set()
            self.closed_waiters: dict = {}

        def buildProtocol(self, addr: Any) -> Any:
            proto = super().buildProtocol(addr)
            clients = self.clients
            clients.add(proto)
            lost = proto.connectionLost

            def connectionLost(reason: Any) -> None:
                clients.discard(proto)
                lost(reason)
                for waiter in self.closed_waiters.pop(proto, []):
                    waiter.callback(None)

            proto.connectionLost = connectionLost
            return proto

    return TrackingIRCFactory


class IRCServer:
    """
    A running IRC server on 127.0.0.1.

    @ivar kind: C{"ngircd"} or C{"twisted"}.
    @ivar port: its TCP port; the same across L{restart}.
    @ivar password: what clients must send with C{PASS} (None for ngircd).
    """

    def __init__(self, reactor: Any, directory: Path, ngircd: Optional[str]) -> None:
        self.reactor = reactor
        self.directory = directory
        self.ngircd = ngircd
        self.kind = "ngircd" if ngircd else "twisted"
        self.password: Optional[str] = None if ngircd else "test"
        self.port = free_port()
        self._process: Optional[_NgircdProtocol] = None
        self._transport: Any = None
        self._listening: Any = None

    @property
    def endpoint(self) -> str:
        """
        The client endpoint string of the server.
        """
        return f"tcp:host=127.0.0.1:port={self.port}"

    @property
    def running(self) -> bool:
        """
        Whether the server is up.
        """
        return self._process is not None or self._listening is not None

    def start(self) -> defer.Deferred[IRCServer]:
        """
        Start the server; fires with C{self} once it accepts connections.
        """
        if self.ngircd:
            return self._start_ngircd()
        return self._start_twisted()

    def _start_ngircd(self) -> defer.Deferred[IRCServer]:
        config = self.directory / "ngircd.conf"
        config.write_text(NGIRCD_CONFIG.format(port=self.port, directory=self.directory))
        (self.directory / "help.txt").write_text("")
        proto = _NgircdProtocol()
        self._process = proto
        self._transport = self.reactor.spawnProcess(
            proto, self.ngircd, [self.ngircd, "-n", "-f", str(config)], env=os.environ.copy()
        )
        ready = proto.ready
        ready.addTimeout(TIMEOUT, self.reactor)
        return ready.addCallback(lambda _: self)

    def _start_twisted(self) -> defer.Deferred[IRCServer]:
        from twisted.words import service as words

        realm = words.InMemoryWordsRealm("irc.plugmgr.test")
        realm.createGroupOnRequest = True
        portal = Portal(realm, [_AnyPassword()])
        factory = _tracking_factory_class()(realm, portal)
        endpoint = TCP4ServerEndpoint(self.reactor, self.port, interface="127.0.0.1")

        def listening(port: Any) -> IRCServer:
            self._listening = port
            return self

        return endpoint.listen(factory).addCallback(listening)

    def stop(self) -> defer.Deferred[None]:
        """
        Stop the server; fires once it is gone (its port closed).
        """
        if self._process is not None:
            proto, self._process = self._process, None
            if not proto.ended.called:
                self._transport.signalProcess("TERM")
            ended = proto.ended
            ended.addTimeout(TIMEOUT, self.reactor)
            return ended
        if self._listening is not None:
            port, self._listening = self._listening, None
            factory = port.factory
            stopped = defer.maybeDeferred(port.stopListening)

            def drop_clients(_: object) -> defer.Deferred[None]:
                # Closing the listening port leaves the connections open,
                # unlike a real server that stops: close them, and fire once
                # they are all closed, as ngircd's end does.
                closing = []
                for client in list(factory.clients):
                    closed: defer.Deferred[None] = defer.Deferred()
                    factory.closed_waiters.setdefault(client, []).append(closed)
                    closing.append(closed)
                    client.transport.abortConnection()
                done = defer.gatherResults(closing, consumeErrors=True)
                done.addTimeout(TIMEOUT, self.reactor)
                return done.addCallback(lambda _: None)

            return stopped.addCallback(drop_clients)
        return defer.succeed(None)

    @defer.inlineCallbacks
    def restart(self) -> Any:
        """
        Stop the server and start it again on the same port.
        """
        yield self.stop()
        yield self.start()
        return self


def start_server(reactor: Any, directory: Path) -> defer.Deferred[IRCServer]:
    """
    Start ngircd, or Twisted's IRC server when ngircd cannot be found, and
    say which one in the test output.
    """
    ngircd = find_ngircd()
    server = IRCServer(reactor, directory, ngircd)
    if ngircd is None:
        warnings.warn(
            "ngircd not found (apt-get install -y ngircd): the IRC tests use "
            "Twisted's own IRC server (twisted.words) instead",
            stacklevel=2,
        )
    return server.start()


#: (prefix, command, params) as parsed by twisted.words.
Message = Tuple[str, str, List[str]]


class TestClient(irc.IRCClient):
    """
    A test user: records every message it receives, lets a test wait for
    one, and sends raw lines.

    @ivar messages: every (prefix, command, params) received, in order.
    @ivar signed_on: fires once the server has welcomed the client.
    @ivar lost: fires when the connection is closed.
    """

    __test__ = False  # not a pytest test class
    heartbeatInterval = None
    versionName = None
    sourceURL = None

    def __init__(self, nickname: str, reactor: Any, password: Optional[str] = None) -> None:
        self.nickname = nickname
        self.username = nickname
        self.realname = f"test user {nickname}"
        self.password = password
        self.reactor = reactor
        self.messages: List[Message] = []
        self.raw: List[bytes] = []
        self._waiters: List[Tuple[Callable[[Message], bool], defer.Deferred[Message]]] = []
        self.signed_on: defer.Deferred[TestClient] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.raw.append(data)
        super().dataReceived(data)

    def handleCommand(self, command: str, prefix: str, params: List[str]) -> None:
        message = (prefix, command, list(params))
        self.messages.append(message)
        for waiter in list(self._waiters):
            predicate, deferred = waiter
            if predicate(message):
                self._waiters.remove(waiter)
                deferred.callback(message)
        super().handleCommand(command, prefix, params)

    def signedOn(self) -> None:
        if not self.signed_on.called:
            self.signed_on.callback(self)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        for _, deferred in self._waiters:
            deferred.errback(reason)
        self._waiters = []
        if not self.lost.called:
            self.lost.callback(None)

    def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout: float = TIMEOUT,
        since: Optional[int] = None,
    ) -> defer.Deferred[Message]:
        """
        Fire with the first message matching C{predicate}: among those
        received from index C{since} on (if given), else the next one to
        arrive. Fails with C{TimeoutError} after C{timeout} seconds.
        """
        if since is not None:
            for message in self.messages[since:]:
                if predicate(message):
                    return defer.succeed(message)
        deferred: defer.Deferred[Message] = defer.Deferred()
        waiter = (predicate, deferred)
        self._waiters.append(waiter)

        def forget(result: Any) -> Any:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return result

        deferred.addTimeout(timeout, self.reactor)
        deferred.addBoth(forget)
        return deferred

    def wait_privmsg(
        self, sender: str, target: Optional[str] = None, text: Optional[str] = None, **kw: Any
    ) -> defer.Deferred[Message]:
        """
        Wait for a PRIVMSG from nick C{sender} (to C{target}, with exactly
        C{text}, when given).
        """

        def match(message: Message) -> bool:
            prefix, command, params = message
            return (
                command == "PRIVMSG"
                and prefix.split("!", 1)[0] == sender
                and (target is None or params[0] == target)
                and (text is None or params[-1] == text)
            )

        return self.wait_for(match, **kw)

    def wait_notice(
        self, sender: str, text: Optional[str] = None, **kw: Any
    ) -> defer.Deferred[Message]:
        """
        Wait for a NOTICE from nick C{sender} to this client (with exactly
        C{text}, when given).
        """

        def match(message: Message) -> bool:
            prefix, command, params = message
            return (
                command == "NOTICE"
                and prefix.split("!", 1)[0] == sender
                and (text is None or params[-1] == text)
            )

        return self.wait_for(match, **kw)

    def notices_from(self, sender: str) -> List[str]:
        """
        The texts of every NOTICE received from nick C{sender} so far.
        """
        return [params[-1] for prefix, command, params in self.messages
                if command == "NOTICE" and prefix.split("!", 1)[0] == sender]

    def say(self, target: str, text: str) -> None:
        """
        Send C{PRIVMSG target :text} as is.
        """
        self.sendLine(f"PRIVMSG {target} :{text}")

    def join_channel(self, channel: str) -> defer.Deferred[Message]:
        """
        Join C{channel}; fires when the server confirms.
        """
        mark = len(self.messages)
        self.join(channel)
        return self.wait_for(
            lambda m: m[1] == "JOIN" and m[0].split("!", 1)[0] == self.nickname
            and m[2][0].lower() == channel.lower(),
            since=mark,
        )


@defer.inlineCallbacks
def connect_client(reactor: Any, server: IRCServer, nickname: str) -> Any:
    """
    Connect a L{TestClient} called C{nickname} to C{server}; fires with it
    once it is signed on.
    """
    client = TestClient(nickname, reactor, server.password)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=int(TIMEOUT))
    yield connectProtocol(endpoint, client)
    signed_on = client.signed_on
    signed_on.addTimeout(TIMEOUT, reactor)
    yield signed_on
    return client
