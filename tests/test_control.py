"""
Tests for L{twisted_plugmgr._control}: the AMP control channel, on real
UNIX and TCP sockets, against L{FakePluginManager} (and the real manager).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from typing import List

import attr
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface.verify import verifyObject

from twisted_plugmgr import (
    AlreadyLoaded,
    CompileFailed,
    InvalidName,
    ManagerStopped,
    NoSuchPlugin,
    PluginError,
    PluginEvent,
    PluginQuarantined,
    PluginState,
    ReloadFailed,
    ShutdownMode,
)
from twisted_plugmgr import _errors as errors_module
from twisted_plugmgr._control import (
    MAX_BOX_BYTES,
    WIRE_ERRORS,
    AlreadyLoadedError,
    AmbiguousPluginError,
    Authenticate,
    AuthenticationFailed,
    AuthenticationRequired,
    Available,
    BadRequestError,
    Call,
    CallTimedOutError,
    Catalog,
    CompileFailedError,
    ControlChannelError,
    ControlClientProtocol,
    ControlError,
    ControlFactory,
    ControlService,
    DependencyFailedError,
    Emit,
    Event,
    Info,
    InitFailedError,
    InternalError,
    InvalidDataError,
    InvalidMetadataError,
    InvalidNameError,
    InvalidTransitionError,
    Load,
    ManagerStoppedError,
    NoSuchPluginError,
    NotAvailableError,
    PluginCrashedError,
    PluginFailedError,
    PluginQuarantinedError,
    Ready,
    Reconfig,
    ReconfigRefusedError,
    Reload,
    ReloadChanged,
    ReloadFailedError,
    ReloadMany,
    Reset,
    Shutdown,
    Status,
    Subscribe,
    Unload,
    check_unix_socket_path,
    client_endpoint_for,
    connect,
    event_to_json,
    reported_as,
    to_json,
)
from twisted_plugmgr._interfaces import IPluginManager
from twisted_plugmgr._reconfig import ReconfigOutcome
from twisted_plugmgr.testing import FakePluginManager, failure_of, result_of

TIMEOUT = 5


@attr.s(auto_attribs=True, frozen=True)
class FakeInfo:
    name: str
    version: str
    state: PluginState
    loaded_at: float


#: The plugins the fake manager of these tests could load.
SOURCES = ["a", "b", "hello"]


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
                 **factory_kw):
        self.manager = manager or FakePluginManager(SOURCES)
        self.path = str(tmp_path / "ctl.sock")
        self.factory = ControlFactory(self.manager, clock or reactor, token=token,
                                      **factory_kw)
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


def last_call(manager, method):
    """
    The last call of C{method} a fake C{manager} recorded (a command's
    answer may read the plugin table after it).
    """
    return next(call for call in reversed(manager.calls) if call[0] == method)


def box(**kw) -> bytes:
    out = b""
    for key, value in kw.items():
        k = key.encode()
        out += struct.pack("!H", len(k)) + k + struct.pack("!H", len(value)) + value
    return out + b"\x00\x00"


# --- the fake manager --------------------------------------------------------------


def test_fake_manager_provides_the_interface():
    assert verifyObject(IPluginManager, FakePluginManager())


def test_fake_manager_refuses_as_the_manager_does(logged_failures):
    manager = FakePluginManager(["hello"])
    failure_of(manager.load("../x"), InvalidName)
    failure_of(manager.load("nope"), NoSuchPlugin)
    result_of(manager.load("hello"))
    failure_of(manager.load("hello"), AlreadyLoaded)
    failure_of(manager.call("nope", "ping"), NoSuchPlugin)
    result_of(manager.shutdown())
    assert manager.plugins == {}
    failure_of(manager.load("hello"), ManagerStopped)


def test_fake_manager_reloads_what_changed_on_its_disk():
    clock = Clock()
    manager = FakePluginManager({"a": "1", "b": "1", "c": "1"}, clock=clock)
    for name in "abc":
        result_of(manager.load(name, data=name.upper()))
    clock.advance(7)
    manager.sources["a"] = "2"
    manager.broken["b"] = CompileFailed("b", failure=Failure(SyntaxError("bad")))
    results = result_of(manager.reload_changed())
    assert sorted(results) == ["a", "b"]
    assert (results["a"].version, results["a"].data, results["a"].reloads) == ("2", "A", 1)
    assert results["b"].check(CompileFailed)
    table = manager.plugin_table()
    assert {n: (i.version, i.loaded_at) for n, i in table.items()} == {
        "a": ("2", 7.0), "b": ("1", 0.0), "c": ("1", 0.0)}


def test_fake_manager_records_the_policy_given():
    manager = FakePluginManager(["a", "b"])
    result_of(manager.load("a", {"x": 1}, restart="always", restart_delay=None,
                           restart_burst=2))
    result_of(manager.load("b"))
    assert manager.calls == [("load", "a", {"x": 1}, {"restart": "always", "restart_burst": 2}),
                             ("load", "b", None)]
    assert manager.plugins["a"].policy == {"restart": "always", "restart_burst": 2}
    assert manager.plugins["b"].policy == {}


@pytest.mark.parametrize("policy, key", [
    ({"restart": "sometimes"}, "restart"),
    ({"restart_delay": -1}, "restart_delay"),
    ({"restart_burst": 1.5}, "restart_burst"),
    ({"restart_interval": 0}, "restart_interval"),
    ({"fail_on_error": "yes"}, "fail_on_error"),
    ({"restarts": 3}, "restarts"),
])
def test_fake_manager_refuses_a_bad_policy_naming_the_key(policy, key):
    manager = FakePluginManager(["hello"])
    failure = failure_of(manager.load("hello", **policy), PluginError)
    assert f"{key} " in str(failure.value) or f"{key!r}" in str(failure.value)
    assert manager.plugins == {}


def test_fake_manager_rows_show_restarts_and_last_failure():
    manager = FakePluginManager(["hello"])
    result_of(manager.load("hello"))
    assert (manager.plugin_table()["hello"].restarts,
            manager.plugin_table()["hello"].last_failure) == (0, None)
    manager.plugins["hello"].restarts = 2
    manager.plugins["hello"].last_failure = "ValueError: boom"
    info = manager.plugin_table()["hello"]
    assert (info.state, info.restarts, info.last_failure) == (
        PluginState.RUNNING, 2, "ValueError: boom")


def test_fake_manager_quarantines_and_refuses_calls(logged_failures):
    manager = FakePluginManager(["hello"])
    events = []
    manager.register(events.append)
    result_of(manager.load("hello"))
    manager.plugins["hello"].restarts = 5
    manager.quarantine("hello", ValueError("boom\nagain"))
    [event] = [e for e in events if e.kind == "plugin_quarantined"]
    assert (event.plugin, event.restarts, event.failure.value.args) == (
        "hello", 5, ("boom\nagain",))
    info = manager.plugin_table()["hello"]
    assert (info.state, info.restarts, info.last_failure) == (
        PluginState.QUARANTINED, 5, "ValueError: boom again")
    failure_of(manager.call("hello", "ping"), PluginQuarantined)
    logged_failures.flush(ValueError)


def test_fake_manager_reset_clears_the_restarts_of_a_running_plugin():
    manager = FakePluginManager(["hello"])
    plugin = result_of(manager.load("hello"))
    plugin.restarts, plugin.last_failure = 3, "ValueError: boom"
    assert result_of(manager.reset("hello")) is plugin
    assert (plugin.restarts, plugin.state) == (0, PluginState.RUNNING)
    assert manager.calls[-1] == ("reset", "hello")


def test_fake_manager_reset_starts_a_quarantined_plugin_afresh(logged_failures):
    manager = FakePluginManager(["hello"])
    events = []
    old = result_of(manager.load("hello", [1], restart="always"))
    manager.quarantine("hello", ValueError("boom"))
    manager.register(events.append)
    new = result_of(manager.reset("hello"))
    assert new is not old and manager.plugins["hello"] is new
    assert (new.data, new.policy, new.state, new.restarts, new.last_failure) == (
        [1], {"restart": "always"}, PluginState.RUNNING, 0, "ValueError: boom")
    assert [e.kind for e in events] == ["plugin_started"]
    assert result_of(manager.call("hello", "ping")) is None
    logged_failures.flush(ValueError)


def test_fake_manager_load_starts_a_quarantined_plugin_afresh(logged_failures):
    manager = FakePluginManager(["hello"])
    old = result_of(manager.load("hello", [1], restart="always"))
    old.restarts = 5
    manager.quarantine("hello", ValueError("boom"))
    new = result_of(manager.load("hello", [2], restart_burst=1))
    assert new is not old and manager.plugins["hello"] is new
    assert (new.data, new.policy, new.state, new.restarts) == (
        [2], {"restart_burst": 1}, PluginState.RUNNING, 0)
    failure_of(manager.load("hello"), AlreadyLoaded)
    logged_failures.flush(ValueError)


def test_fake_manager_reset_refuses_as_the_manager_does(logged_failures):
    manager = FakePluginManager(["hello"])
    failure_of(manager.reset("hello"), NoSuchPlugin)
    failure_of(manager.reset("../x"), InvalidName)
    result_of(manager.load("hello"))
    manager.quarantine("hello", ValueError("boom"))
    manager.broken["hello"] = CompileFailed("hello", failure=Failure(SyntaxError("bad")))
    failure_of(manager.reset("hello"), CompileFailed)
    assert manager.plugin_table()["hello"].state is PluginState.QUARANTINED
    logged_failures.flush(ValueError)


def three_loaded(manager=None):
    """
    A fake manager with C{a}, C{b} and C{hello} loaded (data C{"A"},
    C{"B"}, C{"HELLO"}), and version 2.0 of each on its disk.
    """
    manager = manager or FakePluginManager(SOURCES)
    for name in SOURCES:
        result_of(manager.load(name, name.upper()))
        manager.sources[name] = "2.0"
    return manager


def what_runs(manager):
    """
    The fake plugins loaded, as (the instance, its version, its data).
    """
    return {name: (plugin, plugin.version, plugin.data)
            for name, plugin in manager.plugins.items()}


def test_fake_manager_reload_many_reloads_all_then_says_so():
    manager = three_loaded()
    seen = []
    manager.register(lambda e: seen.append(
        (e.kind, e.plugin, e.old_version, e.new_version, sorted(
            n for n, p in manager.plugins.items() if p.version == "2.0"))))
    result = result_of(manager.reload_many(["hello", "a"], {"a": [1]}))
    assert result == {"hello": "2.0", "a": "2.0"} and list(result) == ["hello", "a"]
    # Broadcast once both were swapped, not one after the other.
    assert seen == [("plugin_reloaded", "hello", "1.0", "2.0", ["a", "hello"]),
                    ("plugin_reloaded", "a", "1.0", "2.0", ["a", "hello"])]
    assert {n: (p.version, p.data, p.reloads) for n, p in manager.plugins.items()} == {
        "a": ("2.0", [1], 1), "b": ("1.0", "B", 0), "hello": ("2.0", "HELLO", 1)}
    assert manager.calls[-1] == ("reload_many", ["hello", "a"], {"a": [1]},
                                 ShutdownMode.SMART)


def test_fake_manager_reload_many_keeps_restarts_policy_and_last_failure():
    manager = FakePluginManager(["a"])
    result_of(manager.load("a", restart="always"))
    manager.plugins["a"].restarts, manager.plugins["a"].last_failure = 2, "ValueError: x"
    result_of(manager.reload_many(("a",), mode="lazy"))
    plugin = manager.plugins["a"]
    assert (plugin.policy, plugin.restarts, plugin.last_failure, plugin.reloads) == (
        {"restart": "always"}, 2, "ValueError: x", 1)
    assert manager.calls[-1] == ("reload_many", ["a"], None, ShutdownMode.LAZY)


def test_fake_manager_reload_many_data_of_none_is_none():
    """
    As the manager: a name C{data} maps to None gets None, not its old data.
    """
    manager = three_loaded()
    result_of(manager.reload_many(["a", "b"], {"a": None}))
    assert (manager.plugins["a"].data, manager.plugins["b"].data) == (None, "B")


def test_fake_manager_reload_many_of_nothing_is_nothing():
    manager = three_loaded()
    before = what_runs(manager)
    assert result_of(manager.reload_many([])) == {}
    assert what_runs(manager) == before


def broken(name):
    return CompileFailed(name, failure=Failure(SyntaxError("bad")))


#: What a reload_many of the plugins of L{three_loaded} is refused for: the
#: plugin the failure names, and what the message says.
FAKE_REFUSALS = [
    (["a", "nope"], None, {}, "nope", "no such plugin: not loaded"),
    (["a", "b"], None, {"b": broken("b")}, "b", "module failed to import"),
    (["a", "b"], None, {"b": ZeroDivisionError("oops")}, "b", "ZeroDivisionError: oops"),
    (["a", "a"], None, {}, "a", "named twice"),
    (["a", "../x"], None, {}, "../x", "invalid plugin name"),
    (["a"], {"b": 1}, {}, "b", "data given for a plugin not in the set"),
    ("a", None, {}, None, "not one string"),
]


@pytest.mark.parametrize("names, data, broken_sources, plugin, says", FAKE_REFUSALS)
def test_fake_manager_reload_many_is_all_or_nothing(names, data, broken_sources, plugin,
                                                    says):
    manager = three_loaded()
    manager.broken.update(broken_sources)
    before = what_runs(manager)
    events = []
    manager.register(events.append)
    error = failure_of(manager.reload_many(names, data), ReloadFailed).value
    assert error.plugin == plugin and says in str(error), str(error)
    assert what_runs(manager) == before
    assert events == []


def test_fake_manager_reload_many_refuses_a_quarantined_plugin(logged_failures):
    manager = three_loaded()
    manager.quarantine("b", ValueError("boom"))
    before = what_runs(manager)
    error = failure_of(manager.reload_many(["a", "b"]), ReloadFailed).value
    assert error.plugin == "b" and "it is quarantined" in str(error)
    assert what_runs(manager) == before
    logged_failures.flush(ValueError)


def test_fake_manager_reload_many_refuses_a_bad_mode_and_after_shutdown():
    manager = three_loaded()
    before = what_runs(manager)
    error = failure_of(manager.reload_many(["a"], mode="fast"), ReloadFailed).value
    assert error.plugin is None and "invalid shutdown mode 'fast'" in str(error)
    failure_of(manager.reload_many(None), ReloadFailed)
    assert what_runs(manager) == before
    result_of(manager.shutdown())
    error = failure_of(manager.reload_many(["a"]), ReloadFailed).value
    assert error.plugin == "a" and error.failure.check(ManagerStopped)


# --- commands --------------------------------------------------------------------

#: How the failed reload of C{b} (see L{change_a_break_b}) is reported.
BROKEN_B = "CompileFailed: plugin 'b': module failed to import (SyntaxError: bad)"


def change_a_break_b(manager):
    """
    Load C{a} and C{b}; then change C{a}'s source to version 2.0 and break
    C{b}'s.
    """
    result_of(manager.load("a"))
    result_of(manager.load("b"))
    manager.sources["a"] = "2.0"
    manager.broken["b"] = CompileFailed("b", failure=Failure(SyntaxError("bad")))


@pytest_twisted.ensureDeferred
async def test_load_then_status(server):
    client = await server.connect()
    plugin = await client.load("hello", {"greeting": "hi", "n": [1, 2]})
    assert plugin == {"name": "hello", "version": "1.0", "longname": "the hello plugin",
                      "restarts": 0, "last_failure": None, "isolated": False, "pid": None}
    assert server.manager.plugins["hello"].data == {"greeting": "hi", "n": [1, 2]}
    [row] = await client.status()
    assert (row["name"], row["version"], row["state"], row["loaded_at"], row["reloads"],
            row["restarts"], row["last_failure"]) == ("hello", "1.0", "running", 0.0, 0, 0, None)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_load_without_data_gives_none(server):
    client = await server.connect()
    await client.load("hello")
    assert server.manager.calls[0] == ("load", "hello", None)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_large_data_is_split_over_keys(server):
    client = await server.connect()
    data = {"blob": "x" * 300_000}
    await client.load("hello", data)
    assert server.manager.plugins["hello"].data == data
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
    assert await client.unload("hello", mode="lazy", reason="done") == \
        "hello quits (lazy): done"
    assert server.manager.calls[-1] == ("unload", "hello", ShutdownMode.LAZY, "done", True)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_unload_default_mode_is_the_managers(server):
    client = await server.connect()
    await client.load("hello")
    await client.unload("hello")
    assert server.manager.calls[-1] == ("unload", "hello", ShutdownMode.SMART, "", True)
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
    server.manager.broken["hello"] = ZeroDivisionError("oops")
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
    server.manager.sources["hello"] = "2.0"
    assert (await client.reload("hello"))["version"] == "2.0"
    assert last_call(server.manager, "reload") == (
        "reload", "hello", None, ShutdownMode.SMART, False)
    assert server.manager.plugins["hello"].data == 1
    await client.reload("hello", data={"x": 1}, mode="immediate")
    assert last_call(server.manager, "reload") == (
        "reload", "hello", {"x": 1}, ShutdownMode.IMMEDIATE, False)
    assert server.manager.plugins["hello"].data == {"x": 1}
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_changed(server):
    change_a_break_b(server.manager)
    client = await server.connect()
    results = await client.reload_changed()
    assert results == {
        "a": {"ok": True, "name": "a", "version": "2.0", "longname": "the a plugin",
              "restarts": 0, "last_failure": None, "isolated": False, "pid": None},
        "b": {"ok": False, "error": BROKEN_B},
    }
    await client.close()


# --- several plugins in one transaction ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reload_many_answers_the_new_versions(server):
    three_loaded(server.manager)
    client = await server.connect()
    versions = await client.reload_many(["hello", "a"], {"a": {"x": 1}}, mode="immediate")
    assert versions == {"hello": "2.0", "a": "2.0"} and list(versions) == ["hello", "a"]
    assert last_call(server.manager, "reload_many") == (
        "reload_many", ["hello", "a"], {"a": {"x": 1}}, ShutdownMode.IMMEDIATE)
    assert {n: (p.version, p.data) for n, p in server.manager.plugins.items()} == {
        "a": ("2.0", {"x": 1}), "b": ("1.0", "B"), "hello": ("2.0", "HELLO")}
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_many_without_data_or_mode_leaves_them_to_the_manager(server):
    three_loaded(server.manager)
    client = await server.connect()
    assert await client.reload_many(["b"]) == {"b": "2.0"}
    assert last_call(server.manager, "reload_many") == (
        "reload_many", ["b"], None, ShutdownMode.SMART)
    assert server.manager.plugins["b"].data == "B"
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_many_of_no_names_answers_nothing(server):
    three_loaded(server.manager)
    before = what_runs(server.manager)
    client = await server.connect()
    assert await client.reload_many([]) == {}
    assert what_runs(server.manager) == before
    await client.close()


@pytest.mark.parametrize("names, data, broken_sources, plugin, says", [
    refusal for refusal in FAKE_REFUSALS if not isinstance(refusal[0], str)])
@pytest_twisted.ensureDeferred
async def test_reload_many_that_fails_is_reload_failed_and_changes_nothing(
        server, names, data, broken_sources, plugin, says):
    three_loaded(server.manager)
    server.manager.broken.update(broken_sources)
    before = what_runs(server.manager)
    client = await server.connect()
    with pytest.raises(ReloadFailedError) as info:
        await client.reload_many(names, data)
    message = info.value.message
    assert message.startswith(f"plugin {plugin!r}: the transaction failed") and says in message
    assert what_runs(server.manager) == before
    # The connection goes on.
    assert await client.available() == ["a", "b", "hello"]
    await client.close()


#: ReloadMany arguments the server refuses, and what its one-line answer says.
BAD_RELOAD_MANY = [
    ({"names": "a"}, "invalid names: expected an array of plugin names, not a string"),
    ({"names": {"a": 1}}, "invalid names: expected an array of plugin names, not an object"),
    ({"names": None}, "invalid names: expected an array of plugin names, not null"),
    ({"names": 3}, "invalid names: expected an array of plugin names, not a number"),
    ({"names": ["a", 1]}, "invalid names: names[1] is a number, not a plugin name (a string)"),
    ({"names": [None]}, "invalid names: names[0] is null, not a plugin name (a string)"),
    ({"names": ["a", ["b"]]},
     "invalid names: names[1] is an array, not a plugin name (a string)"),
    ({"names": ["a"], "data": ["x"]},
     "invalid data: expected an object of plugin name -> data, not an array"),
    ({"names": ["a"], "data": "x"},
     "invalid data: expected an object of plugin name -> data, not a string"),
    ({"names": ["a"], "data": True},
     "invalid data: expected an object of plugin name -> data, not a boolean"),
    ({"names": ["a"], "mode": "fast"}, "invalid shutdown mode 'fast'"),
]


@pytest.mark.parametrize("arguments, says", BAD_RELOAD_MANY)
@pytest_twisted.ensureDeferred
async def test_reload_many_bad_request_is_one_line_and_changes_nothing(server, arguments,
                                                                       says):
    three_loaded(server.manager)
    before, calls = what_runs(server.manager), list(server.manager.calls)
    client = await server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.reload_many(**arguments)
    assert info.value.message.startswith(says) and "\n" not in info.value.message
    assert server.manager.calls == calls  # the manager was asked nothing
    assert what_runs(server.manager) == before
    assert await client.available() == ["a", "b", "hello"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_many_box_with_only_names_is_answered(server):
    """
    A ReloadMany box with names only (no data, no mode keys).
    """
    three_loaded(server.manager)
    raw = await raw_connect(server.path)
    raw.transport.write(box(_command=b"ReloadMany", _ask=b"1", names=b'["a"]'))
    await until(lambda: b"_answer" in raw.received)
    assert b'{"a": "2.0"}' in raw.received
    assert server.manager.calls[-1] == ("reload_many", ["a"], None, ShutdownMode.SMART)
    raw.transport.loseConnection()
    await timeout(raw.closed)


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


# --- restart policies and reset ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_load_with_a_policy_gives_its_keys_to_the_manager(server):
    client = await server.connect()
    policy = {"restart": "always", "restart_delay": 0.5, "restart_delay_max": 8,
              "restart_burst": 3, "restart_interval": 60, "fail_on_error": True}
    plugin = await client.load("hello", {"x": 1}, policy=policy)
    assert plugin["name"] == "hello"
    assert server.manager.calls[0] == ("load", "hello", {"x": 1}, policy)
    assert server.manager.plugins["hello"].policy == policy
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_null_policy_key_is_not_given(server):
    client = await server.connect()
    await client.load("hello", policy={"restart": None, "restart_burst": 2})
    assert server.manager.calls[0] == ("load", "hello", None, {"restart_burst": 2})
    await client.close()


@pytest_twisted.ensureDeferred
async def test_an_empty_policy_is_a_plain_load(server):
    client = await server.connect()
    await client.load("hello", policy={})
    assert server.manager.calls[0] == ("load", "hello", None)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_load_box_of_an_older_client_is_answered(server):
    """
    A Load box as clients from before policies send it (no policy key).
    """
    raw = await raw_connect(server.path)
    raw.transport.write(box(_command=b"Load", _ask=b"1", name=b"hello"))
    await until(lambda: b"_answer" in raw.received)
    assert b"the hello plugin" in raw.received
    assert server.manager.calls[0] == ("load", "hello", None)
    raw.transport.loseConnection()
    await timeout(raw.closed)


#: Policies a Load refuses, and the key (or what) the one-line answer names.
BAD_POLICIES = [
    ([], "not an array"),
    ("always", "not a string"),
    (3, "not a number"),
    (True, "not a boolean"),
    ({"restrat": "always"}, "'restrat'"),
    ({"restart": "sometimes"}, "restart 'sometimes'"),
    ({"restart": None, "retries": None}, "'retries'"),
    ({"restart_delay": -1}, "restart_delay -1"),
    ({"restart_delay": "1"}, "restart_delay '1'"),
    ({"restart_delay_max": True}, "restart_delay_max True"),
    ({"restart_burst": 1.5}, "restart_burst 1.5"),
    ({"restart_burst": -1}, "restart_burst -1"),
    ({"restart_interval": 0}, "restart_interval 0"),
    ({"fail_on_error": "yes"}, "fail_on_error 'yes'"),
    ({"restart": "always", "restart_burst": [5]}, "restart_burst [5]"),
]


@pytest.mark.parametrize("policy, named", BAD_POLICIES)
@pytest_twisted.ensureDeferred
async def test_a_bad_policy_is_refused_and_nothing_is_loaded(server, policy, named):
    client = await server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.load("hello", {"x": 1}, policy=policy)
    message = info.value.message
    assert message.startswith("invalid policy: ") and named in message, message
    assert "\n" not in message
    assert server.manager.calls == []
    assert server.manager.plugins == {}
    # The connection goes on.
    assert (await client.load("hello"))["name"] == "hello"
    await client.close()


@pytest.mark.parametrize("argument, key", [("policy", "restart"), ("isolation", "isolate")])
@pytest_twisted.ensureDeferred
async def test_a_huge_bad_value_gets_a_short_answer(server, argument, key):
    client = await server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.load("hello", **{argument: {key: "x\n" * 100_000}})
    message = info.value.message
    assert message.startswith(f"invalid {argument}: invalid {key} 'x\\nx")
    assert len(message) <= 300 and message.endswith("...") and "\n" not in message
    assert server.manager.calls == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_status_rows_show_restarts_and_last_failure(server, logged_failures):
    result_of(server.manager.load("a"))
    result_of(server.manager.load("b"))
    server.manager.plugins["b"].restarts = 4
    server.manager.quarantine("b", ValueError("boom"))
    client = await server.connect()
    rows = {row["name"]: row for row in await client.status()}
    assert {n: (r["state"], r["restarts"], r["last_failure"]) for n, r in rows.items()} == {
        "a": ("running", 0, None), "b": ("quarantined", 4, "ValueError: boom")}
    await client.close()
    logged_failures.flush(ValueError)


@pytest_twisted.ensureDeferred
async def test_reset_clears_the_restarts_and_answers_the_description(server):
    plugin = result_of(server.manager.load("hello"))
    plugin.restarts, plugin.last_failure = 3, "ValueError: boom"
    client = await server.connect()
    assert await client.reset("hello") == {
        "name": "hello", "version": "1.0", "longname": "the hello plugin", "restarts": 0,
        "last_failure": "ValueError: boom", "isolated": False, "pid": None}
    assert server.manager.plugins["hello"] is plugin
    assert last_call(server.manager, "reset") == ("reset", "hello")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reset_starts_a_quarantined_plugin_afresh(server, logged_failures):
    result_of(server.manager.load("hello", 7))
    server.manager.quarantine("hello", ValueError("boom"))
    client = await server.connect()
    plugin = await client.reset("hello")
    assert (plugin["name"], plugin["restarts"], plugin["last_failure"]) == (
        "hello", 0, "ValueError: boom")
    [row] = await client.status()
    assert row["state"] == "running"
    assert server.manager.plugins["hello"].data == 7
    await client.close()
    logged_failures.flush(ValueError)


@pytest_twisted.ensureDeferred
async def test_reset_unknown_is_no_such_plugin_and_changes_nothing(server):
    result_of(server.manager.load("a"))
    server.manager.plugins["a"].restarts = 2
    client = await server.connect()
    with pytest.raises(NoSuchPluginError) as info:
        await client.reset("nope")
    assert str(info.value) == "plugin 'nope': no such plugin"
    with pytest.raises(InvalidNameError):
        await client.reset("../x")
    assert [call for call in server.manager.calls if call[0] == "reset"] == [
        ("reset", "nope"), ("reset", "../x")]
    assert list(server.manager.plugins) == ["a"]
    assert server.manager.plugins["a"].restarts == 2
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_quarantine_reaches_a_subscriber_with_its_fields(server, logged_failures):
    result_of(server.manager.load("hello"))
    server.manager.plugins["hello"].restarts = 5
    watcher = await server.connect()
    events: List[dict] = []
    await watcher.subscribe(events.append)
    server.manager.quarantine("hello", ValueError("boom"))
    await until(lambda: events)
    [event] = events
    assert {k: v for k, v in event.items() if k != "time"} == {
        "kind": "plugin_quarantined", "plugin": "hello", "restarts": 5,
        "failure": "ValueError: boom"}
    await watcher.close()
    logged_failures.flush(ValueError)


# --- the wire ----------------------------------------------------------------------


def test_wire_protocol_is_unchanged():
    """
    Command names, argument names and error codes are what clients of
    earlier versions send and expect.
    """
    def names(arguments):
        return [(name.decode(), type(argument).__name__, argument.optional)
                for name, argument in arguments]

    assert {c.commandName: (names(c.arguments), names(c.response)) for c in (
        Authenticate, Status, Available, Load, Unload, Reload, ReloadMany, ReloadChanged, Reset,
        Shutdown, Subscribe, Event, Info, Catalog, Call, Emit, Reconfig, Ready)} == {
        b"Authenticate": ([("token", "Unicode", False)], []),
        b"Status": ([], [("plugins", "JSON", False)]),
        b"Available": ([], [("names", "JSON", False)]),
        # policy and isolation are new, and optional: a Load of an older
        # client is the same.
        b"Load": ([("name", "Unicode", False), ("data", "JSON", True),
                   ("policy", "JSON", True), ("isolation", "JSON", True)],
                  [("plugin", "JSON", False)]),
        b"Unload": ([("name", "Unicode", False), ("mode", "Unicode", True),
                     ("reason", "Unicode", True)], [("quit_message", "JSON", False)]),
        b"Reload": ([("name", "Unicode", False), ("data", "JSON", True),
                     ("mode", "Unicode", True), ("isolation", "JSON", True)],
                    [("plugin", "JSON", False)]),
        # New: a command of its own, so Reload of an older client is the same.
        b"ReloadMany": ([("names", "JSON", False), ("data", "JSON", True),
                         ("mode", "Unicode", True)], [("versions", "JSON", False)]),
        b"ReloadChanged": ([], [("results", "JSON", False)]),
        b"Reset": ([("name", "Unicode", False)], [("plugin", "JSON", False)]),
        b"Shutdown": ([("mode", "Unicode", True)], []),
        b"Subscribe": ([], []),
        b"Event": ([("event", "JSON", False)], []),
        # New, each a command of its own: older managers answer UNHANDLED.
        b"Info": ([("name", "Unicode", False)], [("details", "JSON", False)]),
        b"Catalog": ([], [("plugins", "JSON", False)]),
        b"Call": ([("name", "Unicode", False), ("event", "Unicode", False),
                   ("args", "JSON", True)], [("result", "JSON", False)]),
        b"Emit": ([("event", "Unicode", False), ("args", "JSON", True)],
                  [("results", "JSON", False)]),
        b"Reconfig": ([], [("outcome", "JSON", False)]),
        b"Ready": ([], [("ready", "JSON", False), ("plugins", "JSON", False)]),
    }
    codes = {cls.__name__: code for cls, code in Load.allErrors.items()}
    assert codes == {
        "NoSuchPluginError": b"NO_SUCH_PLUGIN", "InvalidNameError": b"INVALID_NAME",
        "AlreadyLoadedError": b"ALREADY_LOADED", "CompileFailedError": b"COMPILE_FAILED",
        "InitFailedError": b"INIT_FAILED", "InvalidMetadataError": b"INVALID_METADATA",
            # New errors, for new conditions (a Config schema, entry points).
            "InvalidDataError": b"INVALID_DATA", "AmbiguousPluginError": b"AMBIGUOUS_PLUGIN",
        "DependencyFailedError": b"DEPENDENCY_ERROR",
        "ManagerStoppedError": b"MANAGER_STOPPED",
        "InvalidTransitionError": b"INVALID_TRANSITION", "PluginFailedError": b"PLUGIN_ERROR",
        "PluginQuarantinedError": b"PLUGIN_QUARANTINED",
        # New: only ReloadMany answers it (ReloadChanged gives its failures as
        # outcomes), so older clients never see it.
        "ReloadFailedError": b"RELOAD_FAILED",
        # New: only Reconfig answers them, so older clients never see them.
        "ReconfigRefusedError": b"RECONFIG_REFUSED", "NotAvailableError": b"NOT_AVAILABLE",
        # New: isolated plugins' handlers (Call, Emit); older clients see
        # them only with isolated plugins, which they predate.
        "CallTimedOutError": b"CALL_TIMED_OUT", "PluginCrashedError": b"PLUGIN_CRASHED",
        "BadRequestError": b"BAD_REQUEST", "InternalError": b"INTERNAL_ERROR",
        "AuthenticationRequired": b"AUTH_REQUIRED", "AuthenticationFailed": b"AUTH_FAILED",
    }
    assert set(Load.fatalErrors) == {AuthenticationRequired, AuthenticationFailed}
    assert Event.allErrors == {}


def test_every_wire_error_is_in_the_table_once():
    assert len({row.error for row in WIRE_ERRORS}) == len(WIRE_ERRORS)
    assert len({row.code for row in WIRE_ERRORS}) == len(WIRE_ERRORS)
    assert {row.error: row.code for row in WIRE_ERRORS} == Status.allErrors


#: Every PluginError, and what the server reports it as.
REPORTED_AS = {
    "PluginError": PluginFailedError,
    "InvalidName": InvalidNameError,
    "NoSuchPlugin": NoSuchPluginError,
    "HandlerAbandoned": NoSuchPluginError,
    "CompileFailed": CompileFailedError,
    "InitFailed": InitFailedError,
    "AlreadyLoaded": AlreadyLoadedError,
    "InvalidMetadata": InvalidMetadataError,
    "InvalidData": InvalidDataError,
    "AmbiguousPlugin": AmbiguousPluginError,
    "ManagerStopped": ManagerStoppedError,
    "NoSuchHandler": PluginFailedError,
    "DependencyError": DependencyFailedError,
    "ShutdownFailed": PluginFailedError,
    "ShutdownTimedOut": PluginFailedError,
    "StartTimedOut": PluginFailedError,
    "InvalidTransition": InvalidTransitionError,
    "PluginQuarantined": PluginQuarantinedError,
    "ReloadFailed": ReloadFailedError,
    "CallTimedOut": CallTimedOutError,
    "PluginCrashed": PluginCrashedError,
    # A handler's exception that cannot travel as itself: a plugin error.
    "RemoteError": PluginFailedError,
}


def test_every_plugin_error_is_reported_as_something():
    classes = [name for name in errors_module.__all__
               if isinstance(getattr(errors_module, name), type)]
    assert sorted(REPORTED_AS) == sorted(classes)


@pytest.mark.parametrize("name", sorted(REPORTED_AS))
def test_plugin_error_reaches_the_client_as(name):
    manager = FakePluginManager(["hello"])
    error = getattr(errors_module, name)("hello")
    manager.broken["hello"] = error
    factory = ControlFactory(manager, Clock())
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers = []
    client.callRemote(Load, name="hello").addBoth(answers.append)
    pump.flush()
    [failure] = answers
    assert isinstance(failure, Failure) and failure.check(ControlError), failure
    assert type(failure.value) is REPORTED_AS[name]
    assert failure.value.message == str(error)
    assert reported_as(error) is REPORTED_AS[name]


def test_other_errors_are_reported_as_nothing():
    assert reported_as(ZeroDivisionError()) is None


# --- logging ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_connection_logs_nothing_at_info(server):
    """
    Connecting, asking for the status and closing (what C{plugmgr status}
    does) leaves no line at the default log level, on either side.
    """
    lines: List[str] = []

    def observe(event):
        if event.get("log_level", LogLevel.info) is not LogLevel.debug:
            lines.append(f"{event.get('log_namespace')}: {formatEvent(event)}")

    globalLogPublisher.addObserver(observe)
    try:
        client = await server.connect()
        await client.status()
        await client.close()
        await until(lambda: not server.factory.connections)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert lines == []


@pytest_twisted.ensureDeferred
async def test_a_dropped_connection_is_logged(server):
    lines: List[str] = []

    def observe(event):
        # The server's lines only (not the raw client's).
        if event.get("log_namespace", "").startswith("twisted_plugmgr.") \
                and event.get("log_level") is not LogLevel.debug:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        raw = await raw_connect(server.path)
        raw.transport.write(box(_answer=b"77"))
        await timeout(raw.closed)
        await until(lambda: not server.factory.connections)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(lines) == 1 and "dropping connection" in lines[0], lines


# --- events -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_streams_events_in_order(server):
    watcher = await server.connect()
    events: List[dict] = []
    three = Deferred()

    def on_event(event):
        events.append(event)
        if len(events) == 2:
            three.callback(None)

    await watcher.subscribe(on_event)
    actor = await server.connect()
    await actor.load("hello")
    await actor.unload("hello", reason="r")
    await timeout(three)
    # The answer to Load describes the plugin from its table row, read
    # without broadcasting plugin_table.
    assert [(e["kind"], e["plugin"]) for e in events] == [
        ("plugin_started", "hello"), ("plugin_unloaded", "hello"),
    ]
    assert events[1]["quit_message"] == "hello quits (smart): r"
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
        reason="timeout", cause="crash", attempt=3, delay=0.4, restarts=5,
    )
    result = event_to_json(event, 3.0)
    assert result["failure"] == "ValueError: boom"
    assert result["table"] == {"x": {"name": "x", "version": "1", "state": "running",
                                     "loaded_at": 1.0}}
    assert result["missing"] == ["author"]
    assert result["time"] == 3.0
    assert isinstance(result["quit_message"], str)
    assert result["reason"] == "timeout"
    assert (result["cause"], result["attempt"], result["delay"], result["restarts"]) == \
        ("crash", 3, 0.4, 5)
    assert {"count", "message", "old_version", "new_version", "path"} <= set(result)


def test_event_to_json_leaves_out_what_is_not_set():
    assert event_to_json(PluginEvent(kind="plugin_started", plugin="x")) == {
        "kind": "plugin_started", "plugin": "x"}


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
    other = ControlService(ControlFactory(FakePluginManager(), reactor), server.description,
                           reactor)
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
    service = ControlService(ControlFactory(FakePluginManager(), reactor, token="t"),
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
async def test_slow_subscriber_is_dropped(tmp_path):
    os.chmod(tmp_path, 0o700)
    s = Server(tmp_path, max_unacknowledged=3).start()
    try:
        raw = await raw_connect(s.path)
        raw.transport.write(box(_command=b"Subscribe", _ask=b"1"))
        await until(lambda: len(s.manager.listeners) == 1)
        for _ in range(5):
            s.manager.broadcast(PluginEvent(kind="plugin_warning", plugin="x"))
        await timeout(raw.closed)
        assert len(s.manager.listeners) == 0
    finally:
        await s.stop()



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
        "name": "hello", "version": "1", "longname": "the hello", "restarts": 0,
        "last_failure": None, "isolated": False, "pid": None}
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
                                 "longname": "the hello", "restarts": 0,
                                 "last_failure": None, "isolated": False, "pid": None}}
    await client.close()


#: A plugin version whose start fails.
NO_START = """
    def startService(self):
        raise RuntimeError("no start")
"""


async def three_running(real_server):
    """
    Load C{a}, C{b} and C{c} (version 1) over the channel; then write
    version 2 of each, C{b}'s failing to start.
    """
    client = await real_server.connect()
    for name in "abc":
        _write_plugin(real_server.plugins, name)
        await client.load(name, {"n": name})
    for name in "abc":
        _write_plugin(real_server.plugins, name, version="2",
                      body=NO_START if name == "b" else "")
    return client


async def running_versions(client):
    """
    What runs, as the channel shows it: name -> (version, state, reloads).
    """
    return {row["name"]: (row["version"], row["state"], row["reloads"])
            for row in await client.status()}


@pytest_twisted.ensureDeferred
async def test_real_manager_reload_many_that_fails_leaves_every_old_version(
        real_server, logged_failures):
    from twisted_plugmgr import PluginError as Error

    client = await three_running(real_server)
    instances = {name: real_server.manager.getServiceNamed(name) for name in "abc"}
    events: List[dict] = []
    await client.subscribe(events.append)
    with pytest.raises(ReloadFailedError) as info:
        await client.reload_many(["a", "b", "c"], {"c": {"n": "new"}})
    message = info.value.message
    assert message.startswith("plugin 'b': the transaction failed") and "no start" in message
    assert await running_versions(client) == {
        "a": ("1", "running", 0), "b": ("1", "running", 0), "c": ("1", "running", 0)}
    # a was swapped, then put back: a fresh instance of its old version;
    # c was never touched.
    assert real_server.manager.getServiceNamed("a") is not instances["a"]
    assert real_server.manager.getServiceNamed("c") is instances["c"]
    assert {name: real_server.manager.getServiceNamed(name).data for name in "abc"} == {
        "a": {"n": "a"}, "b": {"n": "b"}, "c": {"n": "c"}}
    await until(lambda: len([e for e in events if e["kind"] == "plugin_reload_failed"]) == 3)
    assert not [e for e in events if e["kind"] == "plugin_reloaded"]
    # Fixed, the same transaction goes through.
    _write_plugin(real_server.plugins, "b", version="2")
    assert await client.reload_many(["a", "b", "c"], {"c": {"n": "new"}}) == {
        "a": "2", "b": "2", "c": "2"}
    assert await running_versions(client) == {
        "a": ("2", "running", 1), "b": ("2", "running", 1), "c": ("2", "running", 1)}
    assert real_server.manager.getServiceNamed("c").data == {"n": "new"}
    await client.close()
    logged_failures.flush(Error, RuntimeError)


#: A plugin that fails once started while the file C{data["flag"]} exists.
FLAKY = """
    def startService(self):
        super().startService()
        import os
        if os.path.exists(self.data["flag"]):
            self.api.reactor.callLater(0, self.api.fail, "boom")
"""

#: Restart at once, at most twice in a minute.
FAST = {"restart": "on-failure", "restart_delay": 0, "restart_burst": 2,
        "restart_interval": 60}


def flaky(real_server):
    """
    Write the C{flaky} plugin, broken; return its data and its flag.
    """
    _write_plugin(real_server.plugins, "flaky", body=FLAKY)
    flag = real_server.plugins / "broken"
    flag.write_text("")
    return {"flag": str(flag)}, flag


async def row_of(client, name):
    rows = {row["name"]: row for row in await client.status()}
    return rows.get(name)


@pytest_twisted.ensureDeferred
async def test_real_manager_quarantines_restarts_and_resets(real_server, logged_failures):
    from twisted_plugmgr import PluginError as Error

    data, flag = flaky(real_server)
    client = await real_server.connect()
    await client.load("flaky", data, policy=FAST)
    rows: List[dict] = []

    async def quarantined():
        rows[:] = [await row_of(client, "flaky")]
        return rows[0]["state"] == "quarantined"

    deadline = reactor.seconds() + TIMEOUT
    while not await quarantined():
        assert reactor.seconds() < deadline, rows
        await deferLater(reactor, 0, lambda: None)
    [row] = rows
    assert row["restarts"] == 2 and "boom" in row["last_failure"], row
    flag.unlink()
    plugin = await client.reset("flaky")
    assert (plugin["name"], plugin["restarts"]) == ("flaky", 0)
    assert "boom" in plugin["last_failure"]
    assert (await row_of(client, "flaky"))["state"] == "running"
    await client.close()
    logged_failures.flush(Error)


@pytest_twisted.ensureDeferred
async def test_real_manager_takes_the_policy_of_the_load(real_server, logged_failures):
    from twisted_plugmgr import PluginError as Error

    data, flag = flaky(real_server)
    client = await real_server.connect()
    events: List[dict] = []
    await client.subscribe(events.append)
    await client.load("flaky", data, policy={"restart": "no"})
    await until(lambda: any(e["kind"] == "plugin_unloaded" for e in events))
    assert [e.get("cause") for e in events if e["kind"] == "plugin_failed"] == ["fail"]
    assert not [e for e in events if e["kind"] == "plugin_restarting"]
    assert await client.status() == []
    await client.close()
    logged_failures.flush(Error)


@pytest.mark.parametrize("policy, named", BAD_POLICIES[:8])
@pytest_twisted.ensureDeferred
async def test_real_manager_bad_policy_is_refused_and_nothing_is_loaded(real_server, policy,
                                                                        named):
    client = await real_server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.load("hello", policy=policy)
    assert named in info.value.message
    assert await client.status() == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_real_manager_reset_of_what_is_not_loaded(real_server, logged_failures):
    client = await real_server.connect()
    with pytest.raises(NoSuchPluginError) as info:
        await client.reset("hello")
    assert str(info.value).startswith("plugin 'hello': no such plugin")
    await client.load("hello")
    assert (await client.reset("hello"))["restarts"] == 0
    [row] = await client.status()
    assert (row["state"], row["restarts"], row["last_failure"]) == ("running", 0, None)
    await client.close()
    logged_failures.flush()


# --- the CLI, in process ---------------------------------------------------------------------


async def run_cli(*argv, environ=None, out=None):
    import io

    from twisted_plugmgr.cli import run

    out, err = out or io.StringIO(), io.StringIO()
    code = await timeout(Deferred.fromCoroutine(
        run(reactor, list(argv), out, err, environ=environ or {})))
    return code, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_cli_status_table_and_json(server):
    result_of(server.manager.load("hello"))
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "RESTARTS",
                              "DESCRIPTION"]
    assert row.split()[:3] == ["hello", "1.0", "running"]
    assert row[header.index("RESTARTS"):].split()[0] == "0"
    code, out, err = await run_cli("--control", f"unix:path={server.path}", "--json", "status")
    [row] = json.loads(out)
    assert (row["name"], row["version"], row["state"]) == ("hello", "1.0", "running")


@pytest_twisted.ensureDeferred
async def test_cli_control_from_the_environment(server):
    code, out, err = await run_cli("available", "--names",
                                   environ={"PLUGMGR_CONTROL": f"unix:path={server.path}"})
    assert (code, out.split()) == (0, ["a", "b", "hello"])


@pytest_twisted.ensureDeferred
async def test_cli_control_and_token_from_the_config_file(tcp_server, tmp_path):
    port = tcp_server.service.port.getHost().port
    (tmp_path / "token").write_text("s3cret\n")
    config = tmp_path / "plugmgr.toml"
    config.write_text(f'[manager]\ncontrol = "tcp:{port}:interface=127.0.0.1"\n'
                      'control_token_file = "token"\n')
    code, out, err = await run_cli("--config", str(config), "load", "hello", "--data", "[1]")
    assert (code, out.strip()) == (0, "loaded hello 1.0"), err
    assert tcp_server.manager.plugins["hello"].data == [1]


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
    change_a_break_b(server.manager)
    code, out, err = await run_cli("--control", server.path, "reload-changed")
    assert code == 1
    assert out.splitlines() == ["reloaded a 2.0", f"failed b: {BROKEN_B}"]


@pytest_twisted.ensureDeferred
async def test_cli_events_until_the_server_closes(server):
    import io

    printed = io.StringIO()
    d = Deferred.fromCoroutine(run_cli("--control", server.path, "events", out=printed))
    await until(lambda: len(server.manager.listeners) == 1)
    server.manager.broadcast(PluginEvent(kind="plugin_warning", plugin="x", message="careful"))
    # Wait until the CLI has printed the event.
    await until(lambda: "careful" in printed.getvalue())
    await server.stop()
    code, out, err = await d
    assert code == 0
    assert out.split()[1:] == ["plugin_warning", "x", "message='careful'"]


# --- an operator's questions: info, catalog, call, emit, reconfig, ready ------------------


#: What a reconfig changed: the daemon's own class.
Outcome = ReconfigOutcome


class Hooks:
    """
    The daemon's reconfig and readiness, as a test drives them.
    """

    def __init__(self):
        self.reconfigs = 0
        self.outcome = Outcome()
        self.refusal = None
        self.states = {}

    def reconfig(self):
        from twisted_plugmgr._reconfig import ReconfigRefused

        self.reconfigs += 1
        if self.refusal is not None:
            return Deferred.fromCoroutine(_raise(ReconfigRefused(self.refusal)))
        return succeed(self.outcome)

    def readiness(self):
        return dict(self.states)


async def _raise(error):
    raise error


@pytest.fixture
def hooked(tmp_path):
    """
    A control service of a fake manager with the daemon's hooks.
    """
    os.chmod(tmp_path, 0o700)
    hooks = Hooks()
    s = Server(tmp_path, reconfig=hooks.reconfig, readiness=hooks.readiness).start()
    s.hooks = hooks
    yield s
    pytest_twisted.blockon(s.stop())


@pytest_twisted.ensureDeferred
async def test_info_is_the_details_with_the_files_checked(real_server):
    client = await real_server.connect()
    await client.load("hello", {"a": 1})
    details = await client.info("hello")
    path = str(real_server.plugins / "hello.py")
    assert details["info"]["name"] == "hello" and details["info"]["state"] == "running"
    assert (details["requires"], details["dependents"], details["old_versions"]) == ([], [], [])
    assert details["policy"]["restart"] == "on-failure"
    assert details["files"] == [{"path": path, "status": "unchanged", "compile_error": None}]
    _write_plugin(real_server.plugins, "hello", version="2")
    assert (await client.info("hello"))["files"] == [
        {"path": path, "status": "changed", "compile_error": None}]
    (real_server.plugins / "hello.py").write_text("def (:\n")
    [check] = (await client.info("hello"))["files"]
    assert check["status"] == "changed"
    assert check["compile_error"] == "SyntaxError: invalid syntax (hello.py, line 1)"
    (real_server.plugins / "hello.py").unlink()
    assert (await client.info("hello"))["files"] == [
        {"path": path, "status": "missing", "compile_error": None}]
    # Nothing was reloaded by looking.
    [row] = await client.status()
    assert (row["version"], row["reloads"]) == ("1", 0)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_info_of_what_is_not_loaded_is_no_such_plugin(real_server):
    client = await real_server.connect()
    with pytest.raises(NoSuchPluginError) as info:
        await client.info("hello")
    assert str(info.value) == "plugin 'hello': no such plugin: not loaded"
    await client.close()


#: A module whose import would leave a mark: the catalog must not import it.
MARKS = """
import pathlib
pathlib.Path(__file__).with_suffix(".imported").write_text("imported")
from twisted_plugmgr import Plugin

class Marks(Plugin):
    name = "marks"
    version = "1"
"""


@pytest_twisted.ensureDeferred
async def test_catalog_marks_loaded_not_loaded_and_broken_without_importing(real_server):
    (real_server.plugins / "broken.py").write_text("x = (\n")
    (real_server.plugins / "marks.py").write_text(MARKS)
    client = await real_server.connect()
    await client.load("hello")
    entries = {e["name"]: e for e in await client.catalog()}
    assert sorted(entries) == ["broken", "hello", "marks"]
    assert entries["hello"] == {"name": "hello", "status": "loaded", "error": None,
                                "path": str(real_server.plugins / "hello.py")}
    assert (entries["marks"]["status"], entries["marks"]["error"]) == ("not loaded", None)
    assert entries["broken"]["status"] == "broken"
    assert entries["broken"]["error"] == "SyntaxError: '(' was never closed (broken.py, line 1)"
    assert not (real_server.plugins / "marks.imported").exists()
    # A loaded plugin whose file no longer compiles is broken: its reload would fail.
    (real_server.plugins / "hello.py").write_text("def (:\n")
    hello = next(e for e in await client.catalog() if e["name"] == "hello")
    assert hello["status"] == "broken" and hello["error"].startswith("SyntaxError")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_catalog_of_a_fake_manager_has_no_files(server):
    result_of(server.manager.load("a"))
    client = await server.connect()
    assert await client.catalog() == [
        {"name": "a", "status": "loaded", "path": None, "error": None},
        {"name": "b", "status": "not loaded", "path": None, "error": None},
        {"name": "hello", "status": "not loaded", "path": None, "error": None},
    ]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_call_passes_the_arguments_and_answers_the_value(server):
    result_of(server.manager.load("hello"))
    server.manager.answers["greet"] = {"hi": [1, 2]}
    client = await server.connect()
    assert await client.call("hello", "greet", [3, "x", None]) == {"value": {"hi": [1, 2]}}
    assert last_call(server.manager, "call") == ("call", "hello", "greet", (3, "x", None), {})
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_result_that_is_not_json_is_its_repr(server):
    result_of(server.manager.load("hello"))
    server.manager.answers["odd"] = {1, 2}
    server.manager.answers["nan"] = float("nan")
    client = await server.connect()
    assert await client.call("hello", "odd", []) == {"repr": "{1, 2}"}
    assert await client.call("hello", "nan", []) == {"repr": "nan"}
    assert await client.emit("odd", []) == [{"repr": "{1, 2}"}]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_call_of_what_is_not_loaded_is_no_such_plugin(server):
    client = await server.connect()
    with pytest.raises(NoSuchPluginError):
        await client.call("hello", "greet", [])
    await client.close()


@pytest_twisted.ensureDeferred
async def test_call_with_args_not_an_array_is_a_bad_request(server):
    result_of(server.manager.load("hello"))
    raw = await raw_connect(server.path)
    raw.transport.write(box(_command=b"Call", _ask=b"1", name=b"hello", event=b"greet",
                            args=b'{"a": 1}'))
    await until(lambda: b"BAD_REQUEST" in raw.received)
    assert b"invalid args: expected an array" in raw.received
    assert [c for c in server.manager.calls if c[0] == "call"] == []
    raw.transport.loseConnection()
    await timeout(raw.closed)


@pytest_twisted.ensureDeferred
async def test_a_handler_that_raises_is_answered_naming_it_without_a_traceback(
        real_server, logged_failures):
    _write_plugin(real_server.plugins, "hello", body=(
        "    from twisted_plugmgr import handler\n"
        "    @handler()\n"
        "    def explode(self, n):\n"
        "        return 1 / n\n"))
    client = await real_server.connect()
    await client.load("hello")
    assert await client.call("hello", "explode", [4]) == {"value": 0.25}
    with pytest.raises(PluginFailedError) as info:
        await client.call("hello", "explode", [0])
    assert str(info.value) == ("plugin 'hello': handler of 'explode' raised "
                               "ZeroDivisionError: division by zero")
    # The manager reported the plugin's own error (its traceback is the
    # author's); the control channel added no failure of its own.
    failures = logged_failures.flush()
    assert [f.type for f in failures] in ([], [ZeroDivisionError])
    assert all(not e.get("log_namespace", "").startswith("twisted_plugmgr._control")
               for e in logged_failures.events)
    assert await client.emit("explode", [2]) == [{"value": 0.5}]
    assert await client.emit("explode", [0]) == []
    logged_failures.flush(ZeroDivisionError)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_emit_answers_every_result(server):
    server.manager.answers["tick"] = 7
    client = await server.connect()
    assert await client.emit("tick", ["now"]) == [{"value": 7}]
    assert await client.emit("nothing", []) == []
    assert last_call(server.manager, "emit") == ("emit", "nothing", (), {})
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reconfig_without_a_config_file_is_not_available(server):
    client = await server.connect()
    with pytest.raises(NotAvailableError) as info:
        await client.reconfig()
    assert str(info.value) == ("reconfig is not available: this manager was not started "
                               "from a config file")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reconfig_answers_what_changed(hooked):
    hooked.hooks.outcome = Outcome(loaded=("gamma",), reloaded=("alpha",), policy=("beta",),
                                   failed=("unload delta",))
    client = await hooked.connect()
    assert await client.reconfig() == {
        "loaded": ["gamma"], "unloaded": [], "reloaded": ["alpha"], "policy": ["beta"],
        "failed": ["unload delta"], "manager_policy": False, "changed": True}
    hooked.hooks.outcome = Outcome()
    assert (await client.reconfig())["changed"] is False
    assert hooked.hooks.reconfigs == 2
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_reconfig_is_reconfig_refused_with_the_reason(hooked, logged_failures):
    hooked.hooks.refusal = "plugmgr.toml: invalid TOML:\n  line 1"
    client = await hooked.connect()
    with pytest.raises(ReconfigRefusedError) as info:
        await client.reconfig()
    assert str(info.value) == "plugmgr.toml: invalid TOML: line 1"
    assert logged_failures.failures == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_reconfig_that_fails_unexpectedly_is_internal_and_logged(tmp_path,
                                                                         logged_failures):
    os.chmod(tmp_path, 0o700)
    s = Server(tmp_path, reconfig=lambda: 1 / 0).start()
    try:
        client = await s.connect()
        with pytest.raises(InternalError):
            await client.reconfig()
        [failure] = logged_failures.flush(ZeroDivisionError)
        await client.close()
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_ready_without_the_hook_is_every_loaded_plugin_running(server, logged_failures):
    client = await server.connect()
    assert await client.ready() == {"ready": True, "plugins": {}}
    result_of(server.manager.load("a"))
    result_of(server.manager.load("b"))
    assert await client.ready() == {"ready": True,
                                    "plugins": {"a": "running", "b": "running"}}
    server.manager.quarantine("b", RuntimeError("down"))
    assert await client.ready() == {"ready": False,
                                    "plugins": {"a": "running", "b": "quarantined"}}
    logged_failures.flush()
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ready_with_the_hook_is_what_the_daemon_says(hooked):
    hooked.hooks.states = {"beta": "not loaded", "alpha": "running"}
    client = await hooked.connect()
    assert await client.ready() == {"ready": False,
                                    "plugins": {"alpha": "running", "beta": "not loaded"}}
    hooked.hooks.states = {"alpha": "running"}
    assert (await client.ready())["ready"] is True
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_bad_name_over_the_channel_logs_one_line_and_no_traceback(real_server,
                                                                          logged_failures):
    client = await real_server.connect()
    for command in (lambda: client.load("../etc"), lambda: client.info("../etc"),
                    lambda: client.unload("nope"), lambda: client.call("nope", "x", []),
                    lambda: client.reset("nope")):
        seen = []
        globalLogPublisher.addObserver(seen.append)
        try:
            with pytest.raises(ControlError):
                await command()
        finally:
            globalLogPublisher.removeObserver(seen.append)
        assert [e for e in seen if e.get("log_failure") is not None] == []
        loud = [formatEvent(e) for e in seen
                if e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)]
        # At most the manager's one line (its event); never a traceback.
        assert len(loud) <= 1, loud
        assert all("\n" not in line and "Traceback" not in line for line in loud)
    assert logged_failures.failures == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_command_is_logged_with_a_readable_peer(server, tcp_server):
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        client = await server.connect()
        await client.load("hello")
        await client.close()
        client = await tcp_server.connect("s3cret")
        await client.load("hello")
        await client.close()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [formatEvent(e) for e in seen if e.get("log_level") == LogLevel.info
             and "control: load" in formatEvent(e)]
    assert lines[0] == "control: load 'hello' from the UNIX socket"
    assert lines[1].startswith("control: load 'hello' from 127.0.0.1:")
    assert lines[1].rsplit(":", 1)[1].isdigit()
