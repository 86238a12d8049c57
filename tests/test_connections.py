"""
Connections accepted on a plugin's listening port are the plugin's: at
unload and at reload they are closed (loseConnection, so what was written
is sent first), aborted if still open when the stop's deadline passes, and
counted in the plugin_warning. Real loopback sockets on the real reactor.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from twisted_plugmgr import PluginManager
from twisted_plugmgr.testing import EventRecorder, plugin_modules

SERVER = """
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol


class Greeter(Protocol):
    def connectionMade(self):
        self.factory.open.add(self)
        self.transport.write(b"hello from %s\\n" % self.factory.version.encode())

    def connectionLost(self, reason):
        self.factory.open.discard(self)


class P_server(Plugin):
    name = "server"
    version = "VERSION"
    longname = "a TCP server"
    license = "MIT"
    author = "tests"

    def __init__(self, api, data=None):
        super().__init__(api, data)
        self.port_number = 0
        self.factory = Factory.forProtocol(Greeter)
        self.factory.open = set()
        self.factory.version = self.version

    def set_state(self, state):
        self.port_number = state

    def get_state(self):
        return self.port_number

    def startService(self):
        Plugin.startService(self)
        how = (self.data or {}).get("how", "listenTCP")
        if how == "endpoint":
            endpoint = serverFromString(self.api.reactor, f"tcp:{self.port_number}:interface=127.0.0.1")
            return endpoint.listen(self.factory).addCallback(self._listening)
        self._listening(self.api.reactor.listenTCP(self.port_number, self.factory,
                                                   interface="127.0.0.1"))

    def _listening(self, port):
        self.port = port
        self.port_number = port.getHost().port

    def shutdown(self, mode, reason):
        for connection in list(self.factory.open):
            connection.transport.write(b"bye\\n")
            if (self.data or {}).get("flood"):
                connection.transport.write(b"x" * (32 * 1024 * 1024))
        return "bye"
"""


def server_source(version: str = "1.0") -> str:
    return SERVER.replace("VERSION", version)


class Client(Protocol):
    """
    Keeps what it receives; C{lost} fires when the connection is lost.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self.got_line: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\n" in self.received and not self.got_line.called:
            self.got_line.callback(None)

    def connectionLost(self, reason: object) -> None:
        self.lost.callback(None)


async def connect(reactor, port: int, pause: bool = False) -> Client:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    client = await endpoint.connect(Factory.forProtocol(Client))
    await client.got_line  # the server has accepted it and greeted it
    if pause:
        client.transport.pauseProducing()  # read nothing more
    return client


def manager_for(reactor, plugdir, **kw) -> tuple:
    manager = PluginManager(paths=[str(plugdir)], reactor=reactor, **kw)
    events = EventRecorder()
    manager.register(events)
    manager.startService()
    return manager, events


def warnings(events) -> list:
    return [e.message for e in events.of("plugin_warning")]


@pytest_twisted.ensureDeferred
async def test_unload_closes_the_connections_the_plugin_accepted(tmp_path):
    from twisted.internet import reactor

    (tmp_path / "server.py").write_text("from twisted_plugmgr import Plugin\n" + server_source())
    manager, events = manager_for(reactor, tmp_path)
    plugin = await manager.load("server")
    port = plugin.port_number
    first, second = await connect(reactor, port), await connect(reactor, port)
    assert await manager.unload("server") == "bye"
    # Closed with loseConnection: what the shutdown wrote arrived first.
    await first.lost
    await second.lost
    assert first.received == second.received == b"hello from 1.0\nbye\n"
    assert warnings(events) == ["left 1 listening port open", "left 2 accepted connections open"]
    assert plugin.factory.open == set()
    assert "server" not in manager.plugin_table() and plugin_modules(manager) == []
    await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_connections_of_an_endpoint_the_plugin_listened_on_are_closed_too(tmp_path):
    from twisted.internet import reactor

    (tmp_path / "server.py").write_text("from twisted_plugmgr import Plugin\n" + server_source())
    manager, events = manager_for(reactor, tmp_path)
    plugin = await manager.load("server", {"how": "endpoint"})
    client = await connect(reactor, plugin.port_number)
    await manager.unload("server")
    await client.lost
    assert client.received == b"hello from 1.0\nbye\n"
    assert "left 1 accepted connection open" in warnings(events)
    await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_reload_closes_the_old_versions_connections_and_the_new_one_listens_again(tmp_path):
    from twisted.internet import reactor

    path = tmp_path / "server.py"
    path.write_text("from twisted_plugmgr import Plugin\n" + server_source("1.0"))
    manager, events = manager_for(reactor, tmp_path)
    old = await manager.load("server")
    port = old.port_number
    client = await connect(reactor, port)
    path.write_text("from twisted_plugmgr import Plugin\n" + server_source("2.0"))
    new = await manager.reload("server")
    await client.lost
    assert client.received == b"hello from 1.0\nbye\n"
    assert "left 1 accepted connection open" in warnings(events)
    assert new.port_number == port  # its state, and the port was free again
    again = await connect(reactor, port)
    assert again.received == b"hello from 2.0\n"
    await manager.unload("server")
    await again.lost
    await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_a_connection_still_open_at_the_deadline_is_aborted(tmp_path):
    from twisted.internet import reactor

    (tmp_path / "server.py").write_text("from twisted_plugmgr import Plugin\n" + server_source())
    # The plugin writes far more than the client reads: loseConnection
    # cannot finish, so the connection is aborted when the deadline passes.
    manager, events = manager_for(reactor, tmp_path, deadlines={"immediate": 0.3})
    plugin = await manager.load("server", {"flood": True})
    client = await connect(reactor, plugin.port_number, pause=True)
    started = reactor.seconds()
    await manager.unload("server", mode="immediate")
    took = reactor.seconds() - started
    assert 0.25 <= took < 5
    assert plugin.factory.open == set()  # aborted: the server side is gone
    client.transport.resumeProducing()
    await client.lost
    assert len(client.received) < 32 * 1024 * 1024
    assert "left 1 accepted connection open" in warnings(events)
    await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_connections_are_closed_when_the_shutdown_raises(tmp_path, logged_failures):
    from twisted.internet import reactor

    from twisted_plugmgr import ShutdownFailed

    source = server_source().replace('        return "bye"', '        raise RuntimeError("no bye")')
    (tmp_path / "server.py").write_text("from twisted_plugmgr import Plugin\n" + source)
    manager, events = manager_for(reactor, tmp_path)
    plugin = await manager.load("server")
    client = await connect(reactor, plugin.port_number)
    try:
        await manager.unload("server")
    except ShutdownFailed as error:
        assert error.plugin == "server"
    else:
        raise AssertionError("the unload did not fail")
    await client.lost
    assert client.received == b"hello from 1.0\nbye\n"
    assert plugin.factory.open == set()
    assert "server" not in manager.plugin_table() and plugin_modules(manager) == []
    logged_failures.flush(RuntimeError)
    await manager.stopService()
