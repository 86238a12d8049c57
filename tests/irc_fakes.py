"""
In-process fakes for the bot's unit tests and the benchmark: a real
L{PluginManager} and L{IRCBot} on a L{Clock}, connected through a fake
endpoint to a L{StringTransport}; lines from "the server" are fed to the
protocol, and what the bot wrote is read back.

Also the C{harness} fixture (L{harness_fixture}), shared by the test
modules that import it.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any, Callable, Iterator, List, Optional

import pytest
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_plugmgr import PluginManager
from twisted_plugmgr.irc import ADMIN_PACKAGE, BotProtocol, IRCBot
from twisted_plugmgr.testing import EventRecorder, result_of

__all__ = ["FakeEndpoint", "BotHarness", "write_bot_plugin", "BOT_MASK", "harness_fixture"]

#: The bot's hostmask as the fake server tells it.
BOT_MASK = "bot!~bot@127.0.0.1"

#: Owners in the harness.
OWNERS = ("alice!*@trusted.example",)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Connects at once, to a L{StringTransport}.

    @ivar protocols: every protocol connected, in order.
    """

    def __init__(self) -> None:
        self.protocols: List[Any] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.protocols.append(proto)
        return defer.succeed(proto)


def write_bot_plugin(directory: Any, name: str, body: str, version: str = "1.0",
                     header: str = "") -> str:
    """
    Write a bot plugin module C{name}.py: a L{BotPlugin} subclass with the
    metadata filled in and C{body} as its class body.
    """
    source = (
        "from twisted_plugmgr.irc import BotPlugin, command, rule, on\n"
        + textwrap.dedent(header)
        + f"\nclass P_{name}(BotPlugin):\n"
        + textwrap.indent(
            f"name = {name!r}\nversion = {version!r}\nlongname = 'test plugin {name}'\n"
            "license = 'MIT'\nauthor = 'tests'\n" + textwrap.dedent(body),
            "    ",
        )
    )
    path = os.path.join(str(directory), f"{name}.py")
    with open(path, "w") as f:
        f.write(source)
    return path


class BotHarness:
    """
    A manager and a bot on a Clock, in one parent service, connected to a
    fake server.

    @ivar dir: the directory the manager loads plugins from.
    """

    def __init__(self, plugin_dir: Any, *, admin: bool = True, flood_rate: float = 1000.0,
                 flood_burst: int = 1000, data_dir: Optional[str] = None,
                 clock: Optional[Clock] = None,
                 manager_class: Callable[..., PluginManager] = PluginManager,
                 **bot_kw: Any) -> None:
        self.clock = clock if clock is not None else Clock()
        self.dir = plugin_dir
        self.manager = manager_class(
            packages=[ADMIN_PACKAGE] if admin else [], paths=[str(plugin_dir)],
            reactor=self.clock,
        )
        self.events = EventRecorder()
        self.manager.register(self.events)
        self.endpoint = FakeEndpoint()
        self.bot = IRCBot(
            self.manager, self.endpoint, "bot", self.clock,
            channels=("#chan",), owners=OWNERS, flood_rate=flood_rate,
            flood_burst=flood_burst, admin=admin, data_dir=data_dir, **bot_kw,
        )
        self.stopped = False
        self.parent = MultiService()
        self.manager.setServiceParent(self.parent)
        self.bot.setServiceParent(self.parent)

    def start(self, welcome: bool = True) -> BotProtocol:
        """
        Start everything; with C{welcome}, sign the bot on.
        """
        self.parent.startService()
        self.clock.advance(0)
        if welcome:
            self.welcome()
        return self.proto

    def load(self, name: str, body: Optional[str] = None, **kw: Any) -> Any:
        """
        Load plugin C{name} (first written with L{write_bot_plugin} when
        C{body} is given); return the plugin, once loaded.
        """
        if body is not None:
            write_bot_plugin(self.dir, name, body, **kw)
        return result_of(self.manager.load(name))

    def plugin(self, name: str) -> Any:
        """
        The running plugin C{name}: the manager's child service of that name.
        """
        return self.manager.getServiceNamed(name)

    @property
    def proto(self) -> BotProtocol:
        """
        The current connection.
        """
        return self.endpoint.protocols[-1]

    def welcome(self, nick: str = "bot") -> None:
        """
        The server welcomes the bot.
        """
        self.feed(f":irc.test 001 {nick} :Welcome to the test network {nick}!~bot@127.0.0.1")
        self.feed(f":{nick}!~bot@127.0.0.1 JOIN #chan")
        self.take()

    def feed(self, *lines: str, raw: Optional[bytes] = None) -> None:
        """
        Lines from the server.
        """
        for line in lines:
            self.proto.dataReceived(line.encode("utf-8") + b"\r\n")
        if raw is not None:
            self.proto.dataReceived(raw)

    def say(self, text: str, target: str = "#chan",
            sender: str = "carol!~carol@elsewhere.example") -> None:
        """
        C{sender} says C{text} to C{target}.
        """
        self.feed(f":{sender} PRIVMSG {target} :{text}")

    def take(self) -> List[bytes]:
        """
        The lines the bot wrote since the last call (CRLF removed).
        """
        transport = self.proto.transport
        data = transport.value()
        transport.clear()
        return [line for line in data.split(b"\r\n") if line]

    def said(self) -> List[str]:
        """
        The lines written since the last call, decoded, without the
        heartbeat's C{PING}s.
        """
        return [line.decode("utf-8") for line in self.take() if not line.startswith(b"PING ")]

    def lose(self) -> None:
        """
        The connection closes.
        """
        self.proto.connectionLost(Failure(ConnectionDone()))

    def stop_bot(self) -> None:
        """
        Stop the bot alone (the manager keeps running) and close its
        connection.
        """
        d = self.bot.stopService()
        if self.endpoint.protocols and self.proto.transport.connected:
            self.proto.transport.connected = False
            self.lose()
        result_of(d)

    def start_bot(self) -> BotProtocol:
        """
        Start the bot again (after L{stop_bot}) and sign it on.
        """
        self.bot.startService()
        self.clock.advance(0)
        self.welcome()
        return self.proto

    def stop(self) -> None:
        """
        Stop everything and close the connection; no call is left pending
        on the clock.
        """
        if self.stopped:
            return
        self.stopped = True
        d = self.parent.stopService()
        if self.endpoint.protocols and self.proto.transport.connected:
            self.proto.transport.connected = False
            self.lose()
        self.clock.advance(0)
        for _ in range(200):
            if d.called:
                break
            self.clock.advance(1)
        assert d.called, "the services did not stop"


@pytest.fixture(name="harness")
def harness_fixture(tmp_path: Any) -> Iterator[BotHarness]:
    """
    A L{BotHarness} (with the admin plugin) loading plugins from an empty
    directory, not started yet; stopped at the end of the test, which must
    leave no call pending on its clock.
    """
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    h = BotHarness(plugins)
    yield h
    h.stop()
    assert not h.clock.getDelayedCalls(), h.clock.getDelayedCalls()
