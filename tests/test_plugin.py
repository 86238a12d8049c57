"""
The Plugin base class, the plugin-scoped reactor, and the testing fakes.
"""

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from twisted_plugmgr import IPlugin, IPluginAPI, Plugin, PluginError, ShutdownMode
from twisted_plugmgr._reactor import PluginReactor
from twisted_plugmgr.testing import FakePluginAPI, result_of


class Sample(Plugin):
    name = "sample"
    version = "1"


def test_plugin_with_fake_api():
    api = FakePluginAPI("sample")
    plugin = Sample(api, {"x": 1})
    assert verifyObject(IPlugin, plugin)
    assert verifyObject(IPluginAPI, api)
    assert plugin.data == {"x": 1}
    api.answers["ping"] = "pong"
    assert result_of(plugin.api.call("other", "ping")) == "pong"
    plugin.api.warning("careful")
    plugin.api.error(ValueError("x"))
    assert api.warnings == ["careful"] and api.errors[0].check(ValueError)


def test_stop_service_is_smart_shutdown():
    class Quits(Sample):
        def shutdown(self, mode, reason):
            return (mode, reason)

    plugin = Quits(FakePluginAPI())
    plugin.startService()
    assert result_of(plugin.stopService()) == (ShutdownMode.SMART, "service stopped")
    assert not plugin.running
    assert result_of(Sample(FakePluginAPI()).stopService()) == "service stopped"


def test_plugin_reactor_tracks_and_closes():
    clock = Clock()
    scoped = PluginReactor(clock, "p")
    fired = []
    scoped.callLater(1, fired.append, "a")
    cancelled = scoped.callLater(5, fired.append, "b")
    scoped.callLater(9, fired.append, "c")
    cancelled.cancel()
    clock.advance(1)
    assert fired == ["a"] and len(scoped.getDelayedCalls()) == 1
    loop = scoped.looping_call(fired.append, "tick")
    loop.start(2)
    assert scoped.seconds() == 1
    closed, left = scoped.close()
    assert left == ["left 1 timer running", "left 1 looping call running"]
    assert clock.getDelayedCalls() == []
    assert result_of(closed) == []
    with pytest.raises(PluginError, match="unloaded"):
        scoped.callLater(1, fired.append, "late")


@pytest_twisted.ensureDeferred
async def test_ports_and_connections_left_open_are_closed_on_unload(tmp_path):
    from twisted.internet import reactor

    from twisted_plugmgr import PluginManager
    from twisted_plugmgr.testing import EventRecorder, write_plugin

    write_plugin(tmp_path, "server", header="from twisted.internet.protocol import Factory, Protocol\n",
                 body="""
def startService(self):
    Plugin.startService(self)
    self.port = self.api.reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
""")
    manager = PluginManager(paths=[str(tmp_path)], reactor=reactor)
    events = EventRecorder()
    manager.register(events)
    manager.startService()
    plugin = await manager.load("server")
    port = plugin.port.getHost().port
    connected = await _connect(reactor, port)
    assert connected
    await _settled(reactor)  # the server has seen the client go
    await manager.unload("server")
    assert [e.message for e in events.of("plugin_warning")] == ["left 1 listening port open"]
    assert not plugin.port.connected
    refused = await _connect(reactor, port)
    assert not refused
    await manager.stopService()


def _connect(reactor, port):
    """
    Whether a TCP connection to 127.0.0.1:port succeeds.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    d = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(Factory.forProtocol(Protocol))

    def connected(protocol):
        protocol.transport.loseConnection()
        return True

    return d.addCallbacks(connected, lambda f: False)


async def _settled(reactor, turns=20):
    """
    Let the reactor run a few turns (a bounded wait, a turn at a time).
    """
    from twisted.internet.task import deferLater

    for _ in range(turns):
        await deferLater(reactor, 0, lambda: None)
