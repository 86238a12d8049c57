"""
Tests for L{twisted_plugmgr._control}: the AMP control channel, on real
UNIX and TCP sockets, against a fake manager that provides IPluginManager.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from typing import Any, Dict, List

import attr
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_plugmgr._control import (
    MAX_BOX_BYTES,
    AuthenticationFailed,
    AuthenticationRequired,
    BadRequestError,
    CompileFailedError,
    ControlChannelError,
    ControlFactory,
    ControlService,
    InternalError,
    InvalidNameError,
    NoSuchPluginError,
    check_unix_socket_path,
    client_endpoint_for,
    connect,
    event_to_json,
    to_json,
)
from twisted_plugmgr._errors import InvalidName, NoSuchPlugin
from twisted_plugmgr._events import Listeners, PluginEvent
from twisted_plugmgr._interfaces import IPluginManager
from twisted_plugmgr._lifecycle import PluginState, ShutdownMode

TIMEOUT = 5


@attr.s(auto_attribs=True, frozen=True)
class FakeInfo:
    name: str
    version: str
    state: PluginState
    loaded_at: float


class FakePlugin:
    def __init__(self, name: str, data: Any) -> None:
        self.name = name
        self.data = data
        self.version = "1.0"
        self.longname = f"the {name} plugin"


@implementer(IPluginManager)
class FakeManager:
    """
    Just enough of a manager: a dict of plugins, events to listeners, and a
    record of every call.
    """

    def __init__(self) -> None:
        self.plugins: Dict[str, FakePlugin] = {}
        self.listeners = Listeners()
        self.calls: List[tuple] = []
        self.stopped = False
        self.fail_with: Any = None

    def _check(self, name):
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidName(name)

    def load(self, name, data=None):
        self.calls.append(("load", name, data))
        if self.fail_with is not None:
            raise self.fail_with
        self._check(name)
        plugin = self.plugins[name] = FakePlugin(name, data)
        self.listeners.broadcast(PluginEvent(kind="plugin_started", plugin=name))
        return succeed(plugin)

    def unload(self, name, mode=ShutdownMode.SMART, reason="", cascade=True):
        self.calls.append(("unload", name, mode, reason))
        if name not in self.plugins:
            return fail(NoSuchPlugin(name))
        del self.plugins[name]
        self.listeners.broadcast(
            PluginEvent(kind="plugin_unloaded", plugin=name, quit_message="bye " + reason)
        )
        return succeed("bye " + reason)

    def reload(self, name, data=None, mode=ShutdownMode.SMART, dependents=False):
        self.calls.append(("reload", name, data, mode))
        if name not in self.plugins:
            return fail(NoSuchPlugin(name))
        plugin = self.plugins[name] = FakePlugin(name, data)
        plugin.version = "2.0"
        return succeed(plugin)

    def reload_changed(self):
        self.calls.append(("reload_changed",))
        return succeed({"a": FakePlugin("a", None), "b": Failure(SyntaxError("bad"))})

    def shutdown(self, mode=ShutdownMode.SMART):
        self.calls.append(("shutdown", mode))
        self.stopped = True
        return deferLater(reactor, 0, lambda: None)

    def plugin_table(self):
        return {
            name: FakeInfo(name, p.version, PluginState.RUNNING, 12.5)
            for name, p in self.plugins.items()
        }

    def available(self):
        return ["a", "b", "hello"]

    def register(self, listener):
        self.listeners.register(listener)

    def unregister(self, listener):
        self.listeners.unregister(listener)

    def post(self, plugin, event, *args, **kw):
        pass

    def call(self, plugin, event, *args, **kw):
        return succeed(None)

    def emit(self, event, *args, **kw):
        return succeed([])

    def watch(self, debounce=0.05):
        pass

    def unwatch(self):
        pass


def timeout(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    return d.addTimeout(seconds, reactor)


async def until(predicate, seconds: float = TIMEOUT) -> None:
    """
    Wait, a reactor turn at a time, until C{predicate()} holds: waiting on
    the event itself, bounded by C{seconds}, never a fixed delay.
    """
    deadline = reactor.seconds() + seconds
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{predicate} never held within {seconds}s")
        await deferLater(reactor, 0, lambda: None)


class Server:
    """
    A control service listening in a temporary directory.
    """

    def __init__(self, tmp_path, manager=None, token=None, description=None, clock=None,
                 on_shutdown=None):
        self.manager = manager or FakeManager()
        self.path = str(tmp_path / "ctl.sock")
        self.factory = ControlFactory(self.manager, clock or reactor, token=token,
                                      on_shutdown=on_shutdown)
        self.description = description or f"unix:path={self.path}"
        self.service = ControlService(self.factory, self.description, reactor)

    def start(self):
        self.service.startService()
        return self

    @property
    def client_description(self):
        if self.description.startswith("tcp"):
            return f"tcp:host=127.0.0.1:port={self.service.port.getHost().port}"
        return f"unix:path={self.path}"

    def connect(self, token=None):
        return timeout(connect(reactor, self.client_description, token))

    def stop(self):
        if self.service.running:
            return timeout(self.service.stopService())
        return succeed(None)


@pytest.fixture
def server(tmp_path):
    os.chmod(tmp_path, 0o700)
    s = Server(tmp_path).start()
    yield s
    pytest_twisted.blockon(s.stop())


class Raw(Protocol):
    """
    A raw client: sends bytes, records what comes back and when it closes.
    """

    def __init__(self):
        self.received = b""
        self.closed = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(None)


async def raw_connect(path) -> Raw:
    from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

    return await timeout(connectProtocol(UNIXClientEndpoint(reactor, path), Raw()))


def box(**kw) -> bytes:
    out = b""
    for key, value in kw.items():
        k = key.encode()
        out += struct.pack("!H", len(k)) + k + struct.pack("!H", len(value)) + value
    return out + b"\x00\x00"


def test_fake_manager_provides_the_interface():
    assert verifyObject(IPluginManager, FakeManager())


# --- commands --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_load_then_status(server):
    client = await server.connect()
    plugin = await client.load("hello", {"greeting": "hi", "n": [1, 2]})
    assert plugin == {"name": "hello", "version": "1.0", "longname": "the hello plugin"}
    assert server.manager.plugins["hello"].data == {"greeting": "hi", "n": [1, 2]}
    rows = await client.status()
    assert rows == [{"name": "hello", "version": "1.0", "state": "running", "loaded_at": 12.5}]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_load_without_data_gives_none(server):
    client = await server.connect()
    await client.load("hello")
    assert server.manager.calls == [("load", "hello", None)]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_large_data_is_split_over_keys(server):
    client = await server.connect()
    data = {"blob": "x" * 300_000}
    await client.load("big", data)
    assert server.manager.plugins["big"].data == data
    await client.close()


@pytest_twisted.ensureDeferred
async def test_available(server):
    client = await server.connect()
    assert await client.available() == ["a", "b", "hello"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unload_with_mode_and_reason(server):
    client = await server.connect()
    await client.load("hello")
    assert await client.unload("hello", mode="lazy", reason="done") == "bye done"
    assert server.manager.calls[-1] == ("unload", "hello", ShutdownMode.LAZY, "done")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unload_default_mode_is_the_managers(server):
    client = await server.connect()
    await client.load("hello")
    await client.unload("hello")
    assert server.manager.calls[-1] == ("unload", "hello", ShutdownMode.SMART, "")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unload_unknown_is_no_such_plugin(server):
    client = await server.connect()
    with pytest.raises(NoSuchPluginError) as info:
        await client.unload("nope")
    assert str(info.value) == "plugin 'nope': no such plugin"
    # The connection goes on.
    assert await client.available() == ["a", "b", "hello"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_invalid_name(server):
    client = await server.connect()
    with pytest.raises(InvalidNameError) as info:
        await client.load("../x")
    assert "invalid plugin name" in str(info.value)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_invalid_mode_is_bad_request(server):
    client = await server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.unload("hello", mode="fast")
    assert "invalid shutdown mode 'fast'" in str(info.value)
    assert server.manager.calls == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unexpected_error_is_internal_and_logged(server, logged_failures):
    server.manager.fail_with = ZeroDivisionError("oops")
    client = await server.connect()
    with pytest.raises(InternalError) as info:
        await client.load("hello")
    assert str(info.value) == "load failed: ZeroDivisionError: oops"
    assert len(logged_failures.flush(ZeroDivisionError)) == 1
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_keeps_data_unless_given(server):
    client = await server.connect()
    await client.load("hello", 1)
    assert (await client.reload("hello"))["version"] == "2.0"
    assert server.manager.calls[-1] == ("reload", "hello", None, ShutdownMode.SMART)
    await client.reload("hello", data={"x": 1}, mode="immediate")
    assert server.manager.calls[-1] == ("reload", "hello", {"x": 1}, ShutdownMode.IMMEDIATE)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_changed(server):
    client = await server.connect()
    results = await client.reload_changed()
    assert results == {
        "a": {"ok": True, "name": "a", "version": "1.0", "longname": "the a plugin"},
        "b": {"ok": False, "error": "SyntaxError: bad"},
    }
    await client.close()


@pytest_twisted.ensureDeferred
async def test_shutdown_answers_then_calls_the_hook(tmp_path):
    os.chmod(tmp_path, 0o700)
    called = Deferred()
    s = Server(tmp_path, on_shutdown=lambda: called.callback(None)).start()
    try:
        client = await s.connect()
        await client.shutdown("lazy")
        assert s.manager.calls == [("shutdown", ShutdownMode.LAZY)]
        await timeout(called)
        await client.close()
    finally:
        await s.stop()


# --- events -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_streams_events_in_order(server):
    watcher = await server.connect()
    events: List[dict] = []
    two = Deferred()

    def on_event(event):
        events.append(event)
        if len(events) == 2:
            two.callback(None)

    await watcher.subscribe(on_event)
    actor = await server.connect()
    await actor.load("hello")
    await actor.unload("hello", reason="r")
    await timeout(two)
    assert [(e["kind"], e["plugin"]) for e in events] == [
        ("plugin_started", "hello"), ("plugin_unloaded", "hello"),
    ]
    assert events[1]["quit_message"] == "bye r"
    assert isinstance(events[0]["time"], float)
    await actor.close()
    await watcher.close()


@pytest_twisted.ensureDeferred
async def test_disconnect_unsubscribes(server):
    watcher = await server.connect()
    await watcher.subscribe(lambda e: None)
    assert len(server.manager.listeners) == 1
    await watcher.close()
    await until(lambda: len(server.manager.listeners) == 0)


def test_event_to_json_carries_every_field():
    failure = Failure(ValueError("boom"))
    event = PluginEvent(
        kind="plugin_error", plugin="x", failure=failure, count=2, missing=("author",),
        table={"x": FakeInfo("x", "1", PluginState.RUNNING, 1.0)}, message="m",
        old_version="1", new_version="2", path="/p.py", quit_message=object(),
    )
    result = event_to_json(event, 3.0)
    assert result["failure"] == "ValueError: boom"
    assert result["table"] == {"x": {"name": "x", "version": "1", "state": "running",
                                     "loaded_at": 1.0}}
    assert result["missing"] == ["author"]
    assert result["time"] == 3.0
    assert isinstance(result["quit_message"], str)
    assert {"count", "message", "old_version", "new_version", "path"} <= set(result)


def test_to_json_non_finite_float():
    assert to_json(float("nan")) == "nan"


# --- malformed and oversized input --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_garbage_drops_that_connection_only(server):
    other = await server.connect()
    raw = await raw_connect(server.path)
    raw.transport.write(b"\x00\x03abc\x00\x01x\x00\x00" + os.urandom(2000))
    await timeout(raw.closed)
    assert await other.available() == ["a", "b", "hello"]
    fresh = await server.connect()
    assert await fresh.available() == ["a", "b", "hello"]
    await other.close()
    await fresh.close()


@pytest_twisted.ensureDeferred
async def test_huge_box_drops_that_connection(server):
    other = await server.connect()
    raw = await raw_connect(server.path)
    chunk = b"v" * 65000
    count = MAX_BOX_BYTES // len(chunk) + 2
    raw.transport.write(b"".join(
        struct.pack("!H", 4) + b"k%03d" % i + struct.pack("!H", len(chunk)) + chunk
        for i in range(count)
    ))
    await timeout(raw.closed)
    assert await other.available() == ["a", "b", "hello"]
    await other.close()


@pytest_twisted.ensureDeferred
async def test_too_many_keys_drops_that_connection(server):
    raw = await raw_connect(server.path)
    raw.transport.write(b"".join(
        struct.pack("!H", 5) + b"k%04d" % i + struct.pack("!H", 1) + b"v" for i in range(500)
    ))
    await timeout(raw.closed)


@pytest_twisted.ensureDeferred
async def test_malformed_arguments_drop_that_connection(server):
    raw = await raw_connect(server.path)
    # Load without its name argument, and data that is not JSON.
    raw.transport.write(box(_command=b"Load", _ask=b"1", data=b"{not json"))
    await timeout(raw.closed)
    assert b"MALFORMED" in raw.received
    assert server.manager.calls == []


@pytest_twisted.ensureDeferred
async def test_unknown_command_is_an_error_not_a_drop(server):
    raw = await raw_connect(server.path)
    raw.transport.write(box(_command=b"Explode", _ask=b"1"))
    await until(lambda: b"UNHANDLED" in raw.received)
    raw.transport.write(box(_command=b"Available", _ask=b"2"))
    await until(lambda: b"hello" in raw.received)
    raw.transport.loseConnection()
    await timeout(raw.closed)


@pytest_twisted.ensureDeferred
async def test_answer_to_nothing_drops_that_connection(server):
    raw = await raw_connect(server.path)
    raw.transport.write(box(_answer=b"77"))
    await timeout(raw.closed)


# --- authentication ------------------------------------------------------------------


@pytest.fixture
def tcp_server(tmp_path):
    s = Server(tmp_path, token="s3cret", description="tcp:0:interface=127.0.0.1").start()
    yield s
    pytest_twisted.blockon(s.stop())


def test_tcp_without_token_refused(tmp_path):
    with pytest.raises(ControlChannelError) as info:
        Server(tmp_path, description="tcp:0:interface=127.0.0.1")
    assert "needs a token" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_tcp_with_token(tcp_server):
    client = await tcp_server.connect(token="s3cret")
    assert await client.available() == ["a", "b", "hello"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_tcp_command_before_authenticating_is_refused(tcp_server):
    client = await tcp_server.connect()
    with pytest.raises(AuthenticationRequired):
        await client.available()
    await timeout(client.closed)
    assert tcp_server.manager.calls == []


@pytest_twisted.ensureDeferred
async def test_tcp_wrong_token_is_refused(tcp_server):
    with pytest.raises(AuthenticationFailed):
        await tcp_server.connect(token="guess")


@pytest_twisted.ensureDeferred
async def test_unauthenticated_connection_times_out(tmp_path):
    clock = Clock()
    s = Server(tmp_path, token="t", description="tcp:0:interface=127.0.0.1",
               clock=clock).start()
    try:
        client = await s.connect()
        clock.advance(10)
        await timeout(client.closed)
        assert clock.getDelayedCalls() == []
    finally:
        await s.stop()


# --- the UNIX socket -------------------------------------------------------------------


def test_socket_mode_is_0600(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


@pytest_twisted.ensureDeferred
async def test_stop_removes_the_socket_and_closes_connections(server):
    client = await server.connect()
    await server.stop()
    await timeout(client.closed)
    assert not os.path.exists(server.path)


def test_shared_directory_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ControlChannelError) as info:
        check_unix_socket_path(str(shared / "s.sock"))
    assert "writable by other users (mode 777)" in str(info.value)
    assert "allow_shared_dir" in str(info.value)


def test_shared_directory_allowed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    check_unix_socket_path(str(shared / "s.sock"), allow_shared_dir=True)


def test_stale_socket_is_removed(tmp_path):
    os.chmod(tmp_path, 0o700)
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # bound, never listened: connecting is refused
    check_unix_socket_path(path)
    assert not os.path.exists(path)


def test_live_socket_is_not_taken_over(server):
    with pytest.raises(ControlChannelError) as info:
        check_unix_socket_path(server.path)
    assert "in use by a running process" in str(info.value)
    assert os.path.exists(server.path)


def test_second_service_on_the_same_socket_fails(server, tmp_path):
    other = ControlService(ControlFactory(FakeManager(), reactor), server.description, reactor)
    with pytest.raises(ControlChannelError):
        other.startService()


def test_regular_file_is_not_touched(tmp_path):
    os.chmod(tmp_path, 0o700)
    path = tmp_path / "s.sock"
    path.write_text("precious")
    with pytest.raises(ControlChannelError) as info:
        check_unix_socket_path(str(path))
    assert "is not a socket" in str(info.value)
    assert path.read_text() == "precious"


def test_invalid_endpoint(tmp_path):
    service = ControlService(ControlFactory(FakeManager(), reactor, token="t"),
                             "bogus:x", reactor)
    with pytest.raises(ControlChannelError) as info:
        service.startService()
    assert "invalid endpoint" in str(info.value)


@pytest.mark.parametrize(
    "server_desc, client_desc",
    [
        ("unix:path=/run/x.sock:mode=600", "unix:path=/run/x.sock"),
        ("unix:/run/x.sock", "unix:path=/run/x.sock"),
        ("tcp:8123", "tcp:host=127.0.0.1:port=8123"),
        ("tcp:port=8123:interface=10.0.0.1", "tcp:host=10.0.0.1:port=8123"),
        ("tcp6:8123:interface=\\:\\:", "tcp:host=\\:\\:1:port=8123"),
    ],
)
def test_client_endpoint_for(server_desc, client_desc):
    assert client_endpoint_for(server_desc) == client_desc


def test_client_endpoint_for_unknown_kind():
    with pytest.raises(ValueError):
        client_endpoint_for("ssl:443")


# --- a slow subscriber ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_slow_subscriber_is_dropped(server, monkeypatch):
    import twisted_plugmgr._control as control

    monkeypatch.setattr(control, "MAX_UNACKNOWLEDGED_EVENTS", 3)
    raw = await raw_connect(server.path)
    raw.transport.write(box(_command=b"Subscribe", _ask=b"1"))
    await until(lambda: len(server.manager.listeners) == 1)
    for _ in range(5):
        server.manager.listeners.broadcast(PluginEvent(kind="plugin_warning", plugin="x"))
    await timeout(raw.closed)
    assert len(server.manager.listeners) == 0



# --- the real manager ---------------------------------------------------------------------


def test_real_manager_provides_the_interface():
    from twisted_plugmgr import PluginManager

    assert verifyObject(IPluginManager, PluginManager(reactor=Clock()))


def _write_plugin(directory, name, version="1", body=""):
    (directory / f"{name}.py").write_text(
        "from twisted_plugmgr import Plugin\n\n"
        "class Thing(Plugin):\n"
        f"    name = {name!r}\n    version = {version!r}\n    longname = 'the {name}'\n"
        "    license = 'MIT'\n    author = 'tests'\n"
        "    def shutdown(self, mode, reason):\n"
        "        return f'{self.name} quits ({mode.value}): {reason}'\n" + body
    )


@pytest.fixture
def real_server(tmp_path):
    from twisted_plugmgr import PluginManager

    os.chmod(tmp_path, 0o700)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write_plugin(plugins, "hello")
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    manager.startService()
    s = Server(tmp_path, manager=manager).start()
    s.plugins = plugins
    yield s
    pytest_twisted.blockon(s.stop())
    pytest_twisted.blockon(timeout(manager.shutdown("immediate")))


@pytest_twisted.ensureDeferred
async def test_real_manager_load_status_unload(real_server):
    client = await real_server.connect()
    assert await client.available() == ["hello"]
    assert await client.load("hello", {"a": 1}) == {
        "name": "hello", "version": "1", "longname": "the hello"}
    [row] = await client.status()
    assert (row["name"], row["version"], row["state"]) == ("hello", "1", "running")
    assert row["source"] == str(real_server.plugins / "hello.py")
    assert await client.unload("hello", mode="lazy", reason="bye") == \
        "hello quits (lazy): bye"
    assert await client.status() == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_real_manager_errors(real_server, logged_failures):
    from twisted_plugmgr import CompileFailed
    from twisted_plugmgr import NoSuchPlugin as NoSuch

    (real_server.plugins / "broken.py").write_text("def (:\n")
    client = await real_server.connect()
    with pytest.raises(NoSuchPluginError):
        await client.load("missing")
    with pytest.raises(CompileFailedError) as info:
        await client.load("broken")
    assert "plugin 'broken': module failed to import" in str(info.value)
    assert "SyntaxError" in str(info.value)
    with pytest.raises(NoSuchPluginError):
        await client.reload("hello")
    logged_failures.flush(NoSuch, CompileFailed, SyntaxError)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_real_manager_reload_and_reload_changed(real_server):
    client = await real_server.connect()
    await client.load("hello")
    _write_plugin(real_server.plugins, "hello", version="2")
    assert (await client.reload("hello"))["version"] == "2"
    _write_plugin(real_server.plugins, "hello", version="3")
    results = await client.reload_changed()
    assert results == {"hello": {"ok": True, "name": "hello", "version": "3",
                                 "longname": "the hello"}}
    await client.close()


# --- the CLI, in process ---------------------------------------------------------------------


async def run_cli(*argv, environ=None):
    import io

    from twisted_plugmgr.cli import run

    out, err = io.StringIO(), io.StringIO()
    code = await timeout(Deferred.fromCoroutine(
        run(reactor, list(argv), out, err, environ=environ or {})))
    return code, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_cli_status_table_and_json(server):
    server.manager.plugins["hello"] = FakePlugin("hello", None)
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "DESCRIPTION"]
    assert row.split()[:3] == ["hello", "1.0", "running"]
    code, out, err = await run_cli("--control", f"unix:path={server.path}", "--json", "status")
    assert json.loads(out) == [{"name": "hello", "version": "1.0", "state": "running",
                                "loaded_at": 12.5}]


@pytest_twisted.ensureDeferred
async def test_cli_control_from_the_environment(server):
    code, out, err = await run_cli("available",
                                   environ={"PLUGMGR_CONTROL": f"unix:path={server.path}"})
    assert (code, out.split()) == (0, ["a", "b", "hello"])


@pytest_twisted.ensureDeferred
async def test_cli_control_and_token_from_the_config_file(tcp_server, tmp_path):
    port = tcp_server.service.port.getHost().port
    (tmp_path / "token").write_text("s3cret\n")
    config = tmp_path / "plugmgr.toml"
    config.write_text(f'[manager]\ncontrol = "tcp:{port}:interface=127.0.0.1"\n'
                      'control_token_file = "token"\n')
    code, out, err = await run_cli("--config", str(config), "load", "x", "--data", "[1]")
    assert (code, out.strip()) == (0, "loaded x 1.0"), err
    assert tcp_server.manager.plugins["x"].data == [1]


@pytest_twisted.ensureDeferred
async def test_cli_wrong_token_is_refused(tcp_server):
    port = tcp_server.service.port.getHost().port
    code, out, err = await run_cli("--control", f"tcp:host=127.0.0.1:port={port}",
                                   "--token", "guess", "status")
    assert code == 1
    assert err.strip() == (f"plugmgr: tcp:host=127.0.0.1:port={port}: refused: wrong token")


@pytest_twisted.ensureDeferred
async def test_cli_no_such_plugin(server):
    code, out, err = await run_cli("--control", server.path, "reload", "nope")
    assert (code, err.strip()) == (1, "plugmgr: reload: plugin 'nope': no such plugin")


@pytest_twisted.ensureDeferred
async def test_cli_bad_data_is_a_usage_error(server):
    code, out, err = await run_cli("--control", server.path, "load", "x", "--data", "{")
    assert code == 2
    assert err.startswith("plugmgr: --data is not valid JSON")
    assert server.manager.calls == []


@pytest_twisted.ensureDeferred
async def test_cli_reload_changed_reports_failures(server):
    code, out, err = await run_cli("--control", server.path, "reload-changed")
    assert code == 1
    assert out.splitlines() == ["reloaded a 1.0", "failed b: SyntaxError: bad"]


@pytest_twisted.ensureDeferred
async def test_cli_events_until_the_server_closes(server):
    d = Deferred.fromCoroutine(run_cli("--control", server.path, "events"))
    await until(lambda: len(server.manager.listeners) == 1)
    server.manager.listeners.broadcast(PluginEvent(kind="plugin_warning", plugin="x",
                                                   message="careful"))
    # Wait until the CLI has acknowledged the event.
    subscriber = server.manager.listeners._listeners[0].__self__
    await until(lambda: subscriber._unacknowledged == 0)
    await server.stop()
    code, out, err = await d
    assert code == 0
    assert out.split()[1:] == ["plugin_warning", "x", "message='careful'"]
