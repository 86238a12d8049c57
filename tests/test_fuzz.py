"""
Fuzz every input boundary with Hypothesis: plugin names (and event names,
modes, arguments), plugin C{data}, config files, control-channel frames, and
IRC lines from the server.

What is expected, whatever the input: a clear error (a L{PluginError}, a
L{ConfigError}, a dropped connection), never a crash (an exception out of
the entry point, or a Failure logged by anything but the manager's own event
log), never a hang (a request left unanswered on a connection still open),
and never a change to what runs (the plugin table is the same before and
after).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List

import pytest
import pytest_twisted
from _profiles import budget
from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from twisted_plugmgr import PluginError, PluginState, ShutdownMode
from twisted_plugmgr._config import ConfigError, parse_config
from twisted_plugmgr._control import (
    MAX_BOX_KEYS,
    BadRequestError,
    ControlClientProtocol,
    ControlFactory,
    ControlService,
    InvalidNameError,
    Load,
    NoSuchPluginError,
    Reload,
    ReloadFailedError,
    ReloadMany,
    Reset,
    Status,
    Unload,
    connect,
)
from twisted_plugmgr._policy import POLICY_KEYS
from twisted_plugmgr.testing import clock_manager, failure_of, result_of, write_plugin

GOOD = "fuzzgood"

GOOD_BODY = """
@handler()
def echo(self, value):
    return value

@handler()
def data_of(self):
    return self.data
"""


def snapshot(manager):
    """
    What runs: the plugin table's names, states, versions, modules and
    instances.
    """
    return {
        name: (info.state, info.version, info.module, id(manager.namedServices.get(name)))
        for name, info in manager.plugin_table().items()
    }


def stray_failures(logged):
    """
    The Failures logged by anything but the manager's event log: a crash,
    or a failure nobody handled.
    """
    return [
        f"{e.get('log_namespace')}: {e['log_failure'].getTraceback()}"
        for e in logged.events if e.get("log_namespace") != "twisted_plugmgr.events"
    ]


def settle(logged):
    """
    End one example: no stray Failure; forget the expected ones.
    """
    stray = stray_failures(logged)
    logged.flush()
    assert not stray, "\n".join(stray)


@pytest.fixture
def good(tmp_path):
    """
    A started manager on a Clock with one plugin, C{fuzzgood}, loaded.
    """
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    write_plugin(plugdir, GOOD, GOOD_BODY)
    write_plugin(plugdir, "datap", GOOD_BODY)
    manager, clock, events = clock_manager(paths=[plugdir])
    result_of(manager.load(GOOD))
    yield manager, clock, events
    d = manager.shutdown(ShutdownMode.IMMEDIATE)
    clock.advance(2)
    result_of(d)
    assert clock.getDelayedCalls() == []


# -- plugin names, event names, modes, arguments ---------------------------

TRICKY_NAMES = [
    "..", "../x", "/etc/passwd", "os.path", "twisted_plugmgr", "__init__", "__main__",
    "fuzzgood.py", "fuzzgood ", " fuzzgood", "FUZZGOOD", "fuzzgood\x00", "fuzzgood/",
    "ｆｕｚｚｇｏｏｄ", "fuzzgoo\u217e", "class", "None", "", "_", "datap2",
]
NAMES = st.one_of(
    st.sampled_from(TRICKY_NAMES),
    st.text(max_size=30),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
    st.binary(max_size=10),
    st.integers(),
    st.none(),
    st.floats(),
    st.lists(st.text(max_size=3), max_size=2),
)


@budget("fuzz")
@given(name=NAMES)
def test_fuzzed_plugin_names(good, logged_failures, name):
    manager, clock, events = good
    assume(name not in (GOOD, "datap"))
    before, modules = snapshot(manager), set(sys.modules)
    for d in (manager.load(name), manager.unload(name), manager.reload(name),
              manager.call(name, "echo", 1)):
        failure_of(d, PluginError)
    with pytest.raises(PluginError):
        manager.post(name, "echo", 1)
    clock.advance(0)
    assert snapshot(manager) == before
    assert set(sys.modules) == modules
    assert result_of(manager.call(GOOD, "echo", 7)) == 7
    settle(logged_failures)


@budget("fuzz")
@given(event=st.text(max_size=20), args=st.lists(st.integers(), max_size=3))
def test_fuzzed_event_names_and_arguments(good, logged_failures, event, args):
    manager, clock, events = good
    before = snapshot(manager)
    called = manager.call(GOOD, event, *args)
    emitted = manager.emit(event, *args)
    manager.post(GOOD, event, *args)
    clock.advance(0)
    if event == "echo" and len(args) == 1:
        assert result_of(called) == args[0]
        assert result_of(emitted) == args
    else:
        failure_of(called, PluginError, TypeError)
        assert result_of(emitted) == []
    assert snapshot(manager) == before
    settle(logged_failures)


@budget("fuzz")
@given(mode=st.one_of(st.text(max_size=12), st.integers(), st.none(), st.binary(max_size=5)))
def test_fuzzed_shutdown_modes(good, logged_failures, mode):
    manager, clock, events = good
    assume(not (isinstance(mode, str) and mode.lower() in ("immediate", "smart", "lazy")))
    before = snapshot(manager)
    failure_of(manager.unload(GOOD, mode), PluginError)
    failure_of(manager.reload(GOOD, mode=mode), PluginError)
    assert snapshot(manager) == before
    settle(logged_failures)


# -- data ------------------------------------------------------------------


class Hostile:
    """
    Data that raises on anything anyone might do to it.
    """

    def _refuse(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("hostile data was touched")

    __eq__ = __ne__ = __lt__ = __hash__ = __bool__ = __len__ = __iter__ = _refuse  # type: ignore
    __repr__ = __str__ = __format__ = __reduce__ = __reduce_ex__ = __deepcopy__ = _refuse  # type: ignore
    __copy__ = __getstate__ = __getattr__ = _refuse  # type: ignore


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
ANY_DATA = st.one_of(
    JSON_VALUES, st.builds(Hostile), st.floats(), st.binary(max_size=20),
    st.builds(object), st.just(sys), st.builds(Deferred),
)


@budget("io")
@given(data=ANY_DATA, new=ANY_DATA)
def test_fuzzed_data_is_handed_over_untouched(good, logged_failures, data, new):
    manager, clock, events = good
    before = snapshot(manager)
    try:
        plugin = result_of(manager.load("datap", data))
        assert plugin.data is data
        if not isinstance(data, Deferred):  # a handler returning a Deferred is waited for
            assert result_of(manager.call("datap", "data_of")) is data
        reloaded = result_of(manager.reload("datap", data=new))
        assert reloaded.data is new
    finally:
        if "datap" in manager.plugin_table():
            result_of(manager.unload("datap"))
    assert snapshot(manager) == before
    settle(logged_failures)


# -- config files ------------------------------------------------------------

#: Keys that the config knows, and a few it does not.
KEYS = st.sampled_from([
    "manager", "plugins", "irc", "packages", "paths", "watch", "control", "shutdown_mode",
    "deadlines", "start_deadline", "control_token", "control_token_file", "allow_shared_dir",
    "immediate", "smart", "lazy", "enabled", "data", "server", "nick", "channels", "owners",
    "prefix", "flood", "rate", "burst", "data_dir", "password", "username", "realname",
    "hello", "good", "../x", "a.b", "", "class",
])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    TEXT,
    st.sampled_from([
        "unix:path=ctl.sock", "tcp:0", "tcp:7777:interface=127.0.0.1", "tcp:irc.example:6667",
        "tcp:irc.example", "tls:irc.example:6697", "foo:bar", "unix:", "smart", "LAZY", "x",
        "plugins", "/", "..", "#chan", "alice!*@host", "alice", "pkg.plugins", "tcp",
    ]),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=10,
)
DOCUMENTS = st.dictionaries(KEYS, st.dictionaries(KEYS, TOML_VALUES, max_size=6), max_size=3)


def toml_string(text: str) -> str:
    """
    A TOML basic string.
    """
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char not in "\x7f":
            out.append(char)
        else:
            out.append(f"\\U{ord(char):08X}")
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """
    A TOML value (tables inline).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items())


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "token").write_text("sesame\n")
    return tmp_path


def config_outcome(config_dir, data):
    """
    Read C{data} as a config file as the service does at start, and build
    the service from it (without starting it).

    @return: the service, or the L{ConfigError}.
    """
    from twisted_plugmgr._tap import Overrides, PlugmgrService, StartupError, read_config

    path = config_dir / "plugmgr.toml"
    path.write_bytes(data)
    try:
        settings = read_config(str(path), Overrides())
    except ConfigError as e:
        assert str(path) in str(e)
        return e
    try:
        return PlugmgrService(settings, Clock(), handle_signals=False)
    except StartupError as e:
        return e


@budget("io")
@given(document=DOCUMENTS)
def test_fuzzed_config_documents(config_dir, document):
    text = toml_document(document)
    try:
        parse_config(text, str(config_dir / "plugmgr.toml"))
    except ConfigError:
        pass
    config_outcome(config_dir, text.encode("utf-8"))


def test_config_irc_server_without_port(config_dir):
    outcome = config_outcome(config_dir, b'[irc]\nserver = "tcp:irc.example"\nnick = "bot"\n')
    assert isinstance(outcome, ConfigError) and "irc.server" in str(outcome)


@budget("fuzz")
@given(data=st.binary(max_size=300))
def test_fuzzed_config_bytes(data):
    try:
        parse_config(data, "/etc/plugmgr/plugmgr.toml")
    except ConfigError:
        pass


@budget("fuzz")
@given(text=st.text(alphabet=st.sampled_from('[]{}="\'.,#\n \\:=0123456789abcdeflmnoprstuvz_-'),
                    max_size=120))
def test_fuzzed_config_text(text):
    try:
        parse_config("[manager]\n" + text, "/etc/plugmgr/plugmgr.toml")
    except ConfigError:
        pass


# -- control-channel frames ----------------------------------------------------


class Recorder(Protocol):
    """
    A raw client: what it received, and whether the connection closed.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True


@pytest.fixture
def control(good):
    """
    A control factory for the manager of C{good}; connections are made in
    memory.
    """
    manager, clock, events = good
    factory = ControlFactory(manager, clock)
    return manager, clock, factory


def close(client, pump, factory):
    """
    Close an in-memory connection; the server forgets it.
    """
    if client.transport is not None:
        client.transport.loseConnection()
    pump.flush()
    assert factory.connections == set()


def raw_connection(factory):
    """
    An in-memory connection from a raw client to the control server.
    """
    return iosim.connectedServerAndClient(lambda: factory.buildProtocol(None), Recorder)


COMMAND_NAMES = [b"Authenticate", b"Status", b"Available", b"Load", b"Unload", b"Reload",
                 b"ReloadMany", b"ReloadChanged", b"Reset", b"Subscribe", b"Event",
                 b"Shutdownx", b"", b"status"]
BOX_KEYS = st.one_of(
    st.sampled_from([b"_command", b"_ask", b"_answer", b"_error", b"_error_code",
                     b"_error_description", b"name", b"data", b"data.1", b"data.2", b"mode",
                     b"reason", b"token", b"event", b"plugins", b"policy", b"policy.1",
                     b"names", b"names.1"]),
    st.binary(min_size=1, max_size=12),
)
BOX_VALUES = st.one_of(
    st.sampled_from(COMMAND_NAMES + [
        b"1", b"2", b"datap", b"ghost", b"../x", b"smart", b"sometime", b"null", b"{}", b"[1]",
        b'"x"', b"{\"a\": [1, 2", b"\xff\xfe", b"nan", b"1e999", b"-",
        b'{"restart": "always"}', b'{"restart_burst": -1}', b'{"restart_delay": NaN}',
        b'{"restart_interval": Infinity}', b'["datap"]', b'["datap", "datap"]',
        b'["ghost", 1]', b'[]', b'{"datap": 1}']),
    st.binary(max_size=40),
)


@st.composite
def boxes(draw):
    """
    A random AMP box, most often shaped like a command.
    """
    box = draw(st.dictionaries(BOX_KEYS, BOX_VALUES, max_size=6))
    if draw(st.booleans()):
        box[b"_command"] = draw(st.sampled_from(COMMAND_NAMES))
    if b"_command" in box:
        # Commands without _ask: see test_command_without_ask_is_dropped_quietly.
        box[b"_ask"] = draw(st.sampled_from([b"1", b"2", b"x", b""]))
    return box


@st.composite
def frames(draw):
    """
    Bytes for the control server: serialized boxes, raw bytes, or both.
    """
    parts = draw(st.lists(
        st.one_of(boxes().map(lambda b: amp.AmpBox(b).serialize()), st.binary(max_size=30)),
        min_size=1, max_size=4,
    ))
    return b"".join(parts)


def unanswered(sent: bytes, received: bytes) -> List[bytes]:
    """
    The C{_ask} tags of the well-formed commands in C{sent} that no box in
    C{received} answers.
    """
    try:
        asked = [b[b"_ask"] for b in amp.parseString(sent) if b"_command" in b and b"_ask" in b]
    except Exception:
        return []  # not all well-formed: the server must drop, checked elsewhere
    answered = set()
    for b in amp.parseString(received):
        for key in (b"_answer", b"_error"):
            if key in b:
                answered.add(b[key])
    return [tag for tag in asked if tag not in answered]


@budget("fuzz")
@given(data=frames())
def test_fuzzed_control_frames(control, logged_failures, data):
    manager, clock, factory = control
    assume(GOOD.encode() not in data)
    before = snapshot(manager)
    client, server, pump = raw_connection(factory)
    client.transport.write(data)
    pump.flush()
    if not client.closed:
        assert unanswered(data, client.received) == [], "a request was left unanswered"
    # Whatever it was: the manager still runs the same plugins (datap may
    # have been loaded by a well-formed Load; take it away again).
    if "datap" in manager.plugin_table():
        result_of(manager.unload("datap"))
    assert snapshot(manager) == before
    # And a new connection is served.
    close(client, pump, factory)
    settle(logged_failures)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers = []
    client.callRemote(Status).addBoth(answers.append)
    pump.flush()
    assert [row["name"] for row in answers[0]["plugins"]] == [GOOD]
    close(client, pump, factory)
    clock.advance(0)
    settle(logged_failures)


@pytest.mark.parametrize("box", [
    {b"_command": b"Nope"},
    {b"_command": b"Authenticate"},
    {b"_command": b"Load", b"name": b"x", b"data": b"{not json"},
])
def test_command_without_ask_is_dropped_quietly(control, logged_failures, box):
    manager, clock, factory = control
    before = snapshot(manager)
    client, server, pump = raw_connection(factory)
    client.transport.write(amp.AmpBox(box).serialize())
    pump.flush()
    assert client.closed
    assert snapshot(manager) == before
    close(client, pump, factory)
    settle(logged_failures)


@budget("fuzz")
@given(box=st.dictionaries(BOX_KEYS, st.binary(max_size=65535), max_size=MAX_BOX_KEYS + 4))
def test_fuzzed_box_sizes(control, logged_failures, box):
    manager, clock, factory = control
    if b"_command" in box:
        box[b"_ask"] = b"1"
    before = snapshot(manager)
    client, server, pump = raw_connection(factory)
    client.transport.write(amp.AmpBox(box).serialize())
    pump.flush()
    assert snapshot(manager) == before
    close(client, pump, factory)
    settle(logged_failures)


@budget("io")
@given(data=JSON_VALUES)
def test_fuzzed_data_through_the_control_channel(control, logged_failures, data):
    manager, clock, factory = control
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers: List[Any] = []
    client.callRemote(Load, name="datap", data=data).addBoth(answers.append)
    pump.flush()
    assert answers[0]["plugin"]["name"] == "datap"
    assert manager.namedServices["datap"].data == data
    client.callRemote(Reload, name="datap", data=[data]).addBoth(answers.append)
    pump.flush()
    assert manager.namedServices["datap"].data == [data]
    client.callRemote(Unload, name="datap").addBoth(answers.append)
    pump.flush()
    assert answers[2] == {"quit_message": "datap unloaded"}
    close(client, pump, factory)
    settle(logged_failures)


POLICIES = st.one_of(
    JSON_VALUES,
    st.dictionaries(st.sampled_from(POLICY_KEYS) | TEXT, JSON_VALUES, max_size=4),
    st.dictionaries(st.sampled_from(POLICY_KEYS), st.none() | st.booleans() | st.integers()
                    | st.floats() | st.sampled_from(["no", "on-failure", "always"]),
                    max_size=6),
)


@budget("fuzz")
@given(policy=POLICIES)
def test_fuzzed_policies_through_the_control_channel(control, logged_failures, policy):
    """
    A policy is refused with one line, and nothing loaded; or the plugin
    is loaded under it.
    """
    manager, clock, factory = control
    try:
        json.dumps(policy, allow_nan=False)
    except ValueError:
        # Not JSON (a float that is not finite): the client cannot send it.
        assume(False)
    before = snapshot(manager)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers: List[Any] = []
    client.callRemote(Load, name="datap", policy=policy).addBoth(answers.append)
    pump.flush()
    [answer] = answers
    if isinstance(answer, Failure):
        assert answer.check(BadRequestError), answer
        message = answer.value.message
        assert message.startswith("invalid policy: ") and "\n" not in message
        assert len(message) <= 300
        assert snapshot(manager) == before
    else:
        assert answer["plugin"]["name"] == "datap"
        result_of(manager.unload("datap"))
    assert not client.closed.called
    close(client, pump, factory)
    settle(logged_failures)


#: Names for ReloadMany: arrays of names (never the plugin that runs), or not.
RELOAD_NAMES = st.one_of(
    st.lists(st.sampled_from(TRICKY_NAMES) | TEXT | st.just("datap"), max_size=4),
    st.lists(JSON_VALUES, max_size=3),
    JSON_VALUES,
)


@budget("fuzz")
@given(names=RELOAD_NAMES, data=JSON_VALUES, mode=st.none() | st.sampled_from(
    ["smart", "lazy", "fast", ""]) | TEXT)
def test_fuzzed_reload_many_through_the_control_channel(control, logged_failures, names, data,
                                                       mode):
    """
    Whatever the names, data and mode: a one-line BAD_REQUEST, or
    RELOAD_FAILED naming a plugin, or (no names) nothing to do; the
    connection goes on and what runs is the same.
    """
    manager, clock, factory = control
    assume(not (isinstance(names, list) and GOOD in names))
    before = snapshot(manager)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers: List[Any] = []
    client.callRemote(ReloadMany, names=names, data=data, mode=mode).addBoth(answers.append)
    pump.flush()
    clock.advance(0)
    pump.flush()
    [answer] = answers
    if isinstance(answer, Failure):
        assert answer.check(BadRequestError, ReloadFailedError), answer
        message = answer.value.message
        assert "\n" not in message or answer.check(ReloadFailedError)
        if answer.check(ReloadFailedError):
            assert message.startswith("plugin "), message
    else:
        assert answer == {"versions": {}} and names == []
    assert not client.closed.called
    assert snapshot(manager) == before
    close(client, pump, factory)
    settle(logged_failures)


def test_reset_through_the_control_channel(control, logged_failures):
    manager, clock, factory = control
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers: List[Any] = []
    for name in (GOOD, "ghost", "../x", "", "x" * 300):
        client.callRemote(Reset, name=name).addBoth(answers.append)
    pump.flush()
    client.callRemote(Status).addBoth(answers.append)
    pump.flush()
    try:
        assert answers[0]["plugin"]["name"] == GOOD
        assert all(a.check(NoSuchPluginError, InvalidNameError) for a in answers[1:5]), \
            answers
        assert [row["name"] for row in answers[5]["plugins"]] == [GOOD]
    finally:
        close(client, pump, factory)
        settle(logged_failures)


def test_load_of_a_plugin_with_a_raising_version_is_answered(control, logged_failures):
    manager, clock, factory = control
    write_plugin(manager.paths[0], "liar", meta="name = 'liar'\n", body="""
        @property
        def version(self):
            raise RuntimeError("no version for you")
    """)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None), ControlClientProtocol)
    answers: List[Any] = []
    client.callRemote(Load, name="liar").addBoth(answers.append)
    pump.flush()
    try:
        # The plugin sets only its name (no longname); its version raises.
        assert answers[0]["plugin"] == {"name": "liar", "version": None, "longname": None,
                                        "restarts": 0, "last_failure": None, "isolated": False, "pid": None}
        assert not client.closed.called
    finally:
        close(client, pump, factory)
        if "liar" in manager.plugin_table():
            result_of(manager.unload("liar"))
        logged_failures.flush()


@pytest_twisted.ensureDeferred
async def test_real_socket_garbage_drops_that_connection_only(tmp_path, logged_failures):
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString, connectProtocol

    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    write_plugin(plugdir, GOOD, GOOD_BODY)
    from twisted_plugmgr import PluginManager

    manager = PluginManager(paths=[str(plugdir)], reactor=reactor)
    manager.startService()
    await manager.load(GOOD)
    path = str(tmp_path / "ctl.sock")
    service = ControlService(ControlFactory(manager, reactor), f"unix:path={path}", reactor)
    service.startService()
    try:
        closed: Deferred = Deferred()

        class Garbage(Protocol):
            def connectionMade(self):
                # A key longer than AMP allows, then noise.
                self.transport.write(b"\x01\x00" + os.urandom(300))

            def connectionLost(self, reason=None):
                closed.callback(None)

        await connectProtocol(clientFromString(reactor, f"unix:path={path}"), Garbage())
        await closed.addTimeout(5, reactor)
        client = await connect(reactor, f"unix:path={path}")
        rows = await client.status()
        assert [row["name"] for row in rows] == [GOOD]
        assert rows[0]["state"] == PluginState.RUNNING.value
        await client.close()
    finally:
        await service.stopService()
        await manager.shutdown()


# -- IRC lines from the server ---------------------------------------------------

try:
    from irc_fakes import BotHarness, write_bot_plugin
except ImportError:  # pragma: no cover - the IRC bot's test harness is not there
    BotHarness = None

needs_bot = pytest.mark.skipif(
    BotHarness is None, reason="the IRC bot's in-process harness (tests/irc_fakes.py) is missing")

SENDERS = st.sampled_from([
    "", ":irc.test ", ":carol!~carol@elsewhere.example ", ":bot!~bot@127.0.0.1 ",
    ":alice!alice@untrusted.example ", ":x ", ":!@ ", ": ", ":carol ", ":a!b@c!d@e ",
])
IRC_COMMANDS = st.sampled_from([
    "PRIVMSG", "NOTICE", "JOIN", "PART", "QUIT", "KICK", "NICK", "TOPIC", "PING", "PONG",
    "MODE", "INVITE", "ERROR", "001", "005", "433", "353", "366", "privmsg", "999", "",
])
WORDS = st.sampled_from([
    "#chan", "bot", "Bot", "carol", "#other", "*", "", "CASEMAPPING=ascii", "CASEMAPPING=x",
    "PREFIX=(ov)@+", ":", "::", "\x00", "\x01", "bot,carol",
])
TEXTS = st.one_of(
    st.sampled_from([
        "!echo hi", "bot: echo hi", "!echo a\r\nPRIVMSG #chan :injected", "!load anything",
        "!unload irc_admin", "!reload irc_admin", "!plugins", "!help", "!", "bot:", "\x01ACTION waves\x01",
        "\x01DCC SEND x 1 2 3\x01", "\x01VERSION\x01", "\x01PING 1\x01", "hello there", "!echo " + "é" * 300,
    ]),
    st.text(max_size=60),
)


@st.composite
def irc_lines(draw):
    """
    A line from the server: shaped like IRC, or any bytes; at most 510
    bytes, as a server sends (see test_oversized_ping_gets_a_pong_that_fits
    for longer ones).
    """
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=80)).replace(b"\r", b"").replace(b"\n", b"")
    words = draw(st.lists(WORDS, max_size=3))
    line = draw(SENDERS) + draw(IRC_COMMANDS)
    if words:
        line += " " + " ".join(words)
    if draw(st.booleans()):
        line += " :" + draw(TEXTS)
    return line.replace("\r", "").replace("\n", "").encode("utf-8", "surrogatepass")[:510]


@pytest.fixture
def legacy_failures():
    """
    Failures logged through the legacy C{twisted.python.log.err} (as
    twisted.words' C{IRCClient} logs what its handlers raise): they carry
    C{failure}, not C{log_failure}, so the C{logged_failures} fixture does
    not see them.
    """
    from twisted.logger import globalLogPublisher

    seen: List[Any] = []

    def observe(event: Any) -> None:
        if event.get("isError") and event.get("failure") is not None:
            seen.append(event["failure"])

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def bot(tmp_path):
    """
    A signed-on bot with an echo command and a rule, on a Clock.
    """
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    harness = BotHarness(plugins)
    harness.start()
    write_bot_plugin(plugins, "echoer", """
@command("echo")
def echo(self, ctx):
    return ctx.args

@rule(r"hello (\\w+)")
def hello(self, ctx):
    return "hi " + ctx.match.group(1)
""")
    result_of(harness.manager.load("echoer"))
    harness.take()
    yield harness
    harness.stop()


@needs_bot
@budget("fuzz")
@given(lines=st.lists(irc_lines(), min_size=1, max_size=5))
def test_fuzzed_irc_lines(bot, logged_failures, legacy_failures, lines):
    before = snapshot(bot.manager)
    for line in lines:
        bot.feed(raw=line + b"\r\n")
    bot.clock.advance(0)
    written = bot.proto.transport.value() if bot.proto.transport is not None else b""
    bot.take()
    for sent in written.split(b"\r\n")[:-1]:
        assert b"\r" not in sent and b"\n" not in sent, sent
        assert len(sent) + 2 <= 512, sent
        if not sent.startswith(b"PONG "):
            # A PONG gives the server's own token back, byte for byte (NUL
            # included).
            assert b"\x00" not in sent, sent
    assert snapshot(bot.manager) == before
    legacy = [f.getTraceback() for f in legacy_failures]
    legacy_failures.clear()
    assert not legacy, "\n".join(legacy)
    settle(logged_failures)


@needs_bot
@pytest.mark.parametrize("line", [b"JOIN", b"PART", b":a!b@c KICK #chan", b"NICK", b"TOPIC",
                                  b"QUIT", b"PRIVMSG", b"NOTICE", b"MODE", b"MODE #chan bot",
                                  b"PING", b":carol!c@h NOTICE bot :\x01PING 1\x01"])
def test_server_line_missing_parameters_is_ignored_quietly(bot, logged_failures,
                                                           legacy_failures, line):
    bot.feed(raw=line + b"\r\n")
    bot.clock.advance(0)
    assert [f.getErrorMessage() for f in legacy_failures] == []
    assert stray_failures(logged_failures) == []
    bot.take()
    # And the bot still answers.
    bot.say("!echo still here")
    assert bot.said() == ["PRIVMSG #chan :still here"]


@needs_bot
@pytest.mark.parametrize("token", [b"\xe9t\xe9", b"irc.\xff.example", b"\xc3" + b"\xa9" * 300])
def test_pong_echoes_the_token_byte_for_byte(bot, token):
    bot.feed(raw=b"PING :" + token + b"\r\n")
    bot.clock.advance(0)
    pongs = [line for line in bot.take() if line.startswith(b"PONG")]
    assert pongs and all(line.endswith(token) for line in pongs), pongs
    assert all(len(line) + 2 <= 512 for line in pongs)


@needs_bot
@pytest.mark.parametrize("token", [b"\xe9t\xe9", b"\xc3" + b"\xa9" * 300])
def test_prefixed_ping_is_answered_byte_for_byte(bot, token):
    bot.feed(raw=b":irc.test PING :" + token + b"\r\n")
    bot.clock.advance(0)
    pongs = [line for line in bot.take() if line.startswith(b"PONG")]
    assert pongs and all(line.endswith(token) for line in pongs), pongs
    assert all(len(line) + 2 <= 512 for line in pongs)


@needs_bot
def test_oversized_ping_gets_a_pong_that_fits(bot):
    """
    A server line longer than IRC allows (a PING with a 600-byte token):
    whatever the bot answers fits in 512 bytes.
    """
    bot.feed(raw=b"PING :" + "é".encode() * 300 + b"\r\n")
    bot.clock.advance(0)
    for line in bot.take():
        assert len(line) + 2 <= 512, line


@needs_bot
@pytest.mark.parametrize("line", [b"PRIVMSG :!echo hi", b"PRIVMSG bot :!echo hi"])
def test_command_without_a_valid_reply_target(bot, logged_failures, line):
    bot.feed(raw=line + b"\r\n")
    bot.clock.advance(0)
    assert stray_failures(logged_failures) == []
    assert bot.said() == []
