"""
Tests for the options of C{plugmgr} (L{twisted_plugmgr.cli}): the global
options before and after the command, C{--version}, and usage errors.

Most run the CLI in process, as tests/test_control.py does, against a
control service on a UNIX socket (or TCP, for tokens) in C{tmp_path}; a
few run C{python -m twisted_plugmgr.cli} as a subprocess, for the exit
status of the real entry point.
"""

from __future__ import annotations

import io
import json
import sys
from importlib import metadata

import pytest
import pytest_twisted
import test_control
from _processes import environment
from _processes import timeout as process_timeout
from test_control import Server, run_cli, timeout, until
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from zope.interface import implementer

import twisted_plugmgr
from twisted_plugmgr import cli
from twisted_plugmgr.testing import FakePluginManager

# The control services of tests/test_control.py (a fake manager on a UNIX
# socket; on TCP with the token "s3cret"), as fixtures of this module too.
server = test_control.server
tcp_server = test_control.tcp_server

#: Every global option that takes a value, and a value for it.
VALUED = [
    ("--control", "unix:path=ctl.sock"),
    ("--config", "plugmgr.toml"),
    ("--token", "s3cret"),
    ("--token-file", "token"),
    ("--timeout", "2.5"),
]


def before_and_after(*options, command=("status",)):
    """
    C{options} before the command, and after it.
    """
    return pytest.mark.parametrize(
        "argv", [[*options, *command], [*command, *options]], ids=["before", "after"])


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


# --- parsing, without I/O ------------------------------------------------------------


@pytest.mark.parametrize("option, value", VALUED)
def test_valued_option_is_the_same_before_and_after_the_command(option, value):
    before = cli._parse([option, value, "status"])
    after = cli._parse(["status", option, value])
    assert vars(before) == vars(after)
    dest = option[2:].replace("-", "_")
    assert str(getattr(after, dest)) == value


def test_json_is_the_same_before_and_after_the_command():
    assert cli._parse(["--json", "status"]).json is True
    assert cli._parse(["status", "--json"]).json is True
    assert cli._parse(["status"]).json is False


def test_options_not_given_after_the_command_keep_their_values_from_before():
    args = cli._parse(["--control", "c", "--json", "--timeout", "3", "load", "x",
                       "--config", "f"])
    assert (args.control, args.json, args.timeout, args.config, args.name) == (
        "c", True, 3.0, "f", "x")


@pytest.mark.parametrize("option, value", VALUED)
def test_valued_option_given_twice_takes_the_last_value(option, value):
    assert vars(cli._parse([option, "7", "status", option, value])) == \
        vars(cli._parse(["status", option, value]))
    assert vars(cli._parse([option, value, "status", option, "7"])) == \
        vars(cli._parse(["status", option, "7"]))


@pytest.mark.parametrize("argv", [
    ["--token", "t", "status", "--token-file", "f"],
    ["--token-file", "f", "status", "--token", "t"],
    ["status", "--token", "t", "--token-file", "f"],
])
def test_token_and_token_file_are_exclusive_on_either_side(argv):
    with pytest.raises(cli._UsageError) as info:
        cli._parse(argv)
    assert first_line(str(info.value)) == \
        "argument --token-file: not allowed with argument --token"


def test_command_arguments_are_the_commands():
    args = cli._parse(["--control", "load", "load", "status", "--timeout", "1"])
    assert (args.control, args.command, args.name, args.timeout) == (
        "load", "load", "status", 1.0)
    args = cli._parse(["unload", "json", "--reason=--json"])
    assert (args.name, args.reason, args.json) == ("json", "--json", False)
    args = cli._parse(["unload", "json", "--reason", "--json --timeout 5"])
    assert (args.reason, args.json, args.timeout) == ("--json --timeout 5", False, None)


# --- each global option, against a control service ------------------------------------


@before_and_after("--control", "CONTROL")
@pytest_twisted.ensureDeferred
async def test_control(server, argv):
    argv = [server.path if a == "CONTROL" else a for a in argv]
    code, out, err = await run_cli(*argv)
    assert code == 0, err
    assert out == "no plugins loaded\n"


@before_and_after("--json")
@pytest_twisted.ensureDeferred
async def test_json(server, argv):
    await server.manager.load("hello")
    code, out, err = await run_cli("--control", server.path, *argv)
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["name"], row["state"]) == ("hello", "running")


@before_and_after("--config", "CONFIG")
@pytest_twisted.ensureDeferred
async def test_config(server, tmp_path, argv):
    config = tmp_path / "plugmgr.toml"
    config.write_text(f'[manager]\ncontrol = "unix:path={server.path}"\n')
    argv = [str(config) if a == "CONFIG" else a for a in argv]
    code, out, err = await run_cli(*argv)
    assert (code, out) == (0, "no plugins loaded\n"), err


def tcp_control(tcp_server) -> str:
    return f"tcp:host=127.0.0.1:port={tcp_server.service.port.getHost().port}"


@before_and_after("--token", "s3cret")
@pytest_twisted.ensureDeferred
async def test_token(tcp_server, argv):
    code, out, err = await run_cli("--control", tcp_control(tcp_server), *argv)
    assert (code, out) == (0, "no plugins loaded\n"), err


@before_and_after("--token-file", "TOKEN")
@pytest_twisted.ensureDeferred
async def test_token_file(tcp_server, tmp_path, argv):
    (tmp_path / "token").write_text("s3cret\n")
    argv = [str(tmp_path / "token") if a == "TOKEN" else a for a in argv]
    code, out, err = await run_cli("--control", tcp_control(tcp_server), *argv)
    assert (code, out) == (0, "no plugins loaded\n"), err


@implementer(IReactorTime)
class ClockedReactor:
    """
    The global reactor for I/O, with C{clock} keeping its time: what the CLI
    times out with.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __getattr__(self, name):
        return getattr(reactor, name)

    def callLater(self, *args, **kw):
        return self.clock.callLater(*args, **kw)

    def seconds(self):
        return self.clock.seconds()

    def getDelayedCalls(self):
        return self.clock.getDelayedCalls()


class SilentManager(FakePluginManager):
    """
    A fake manager that never answers C{load}.
    """

    def load(self, name, data=None):
        self.calls.append(("load", name, data))
        return Deferred()


@pytest.mark.parametrize("argv", [
    ["--timeout", "5", "load", "hello"],
    ["load", "hello", "--timeout", "5"],
    ["--timeout", "60", "load", "hello", "--timeout", "5"],
], ids=["before", "after", "twice"])
@pytest_twisted.ensureDeferred
async def test_timeout(tmp_path, argv):
    tmp_path.chmod(0o700)
    s = Server(tmp_path, manager=SilentManager(["hello"])).start()
    clock = Clock()
    err = io.StringIO()
    try:
        running = Deferred.fromCoroutine(cli.run(
            ClockedReactor(clock), ["--control", s.path, *argv], io.StringIO(), err, {}))
        await until(lambda: s.manager.calls == [("load", "hello", None)])
        assert [call.getTime() for call in clock.getDelayedCalls()] == [5.0]
        clock.advance(5)
        assert await timeout(running) == cli.EXIT_UNAVAILABLE
        assert err.getvalue() == "plugmgr: load: no answer within 5s\n"
        assert clock.getDelayedCalls() == []
    finally:
        await s.stop()


class Mute(Protocol):
    """
    Accepts a connection, says nothing.
    """

    def connectionMade(self):
        self.factory.connections.append(self)


@pytest_twisted.ensureDeferred
async def test_no_answer_to_connecting_times_out(tmp_path):
    tmp_path.chmod(0o700)
    path = str(tmp_path / "mute.sock")
    factory = Factory.forProtocol(Mute)
    factory.connections = []
    port = await timeout(UNIXServerEndpoint(reactor, path).listen(factory))
    clock = Clock()
    err = io.StringIO()
    try:
        running = Deferred.fromCoroutine(cli.run(
            ClockedReactor(clock), ["--control", path, "--token", "t", "status"],
            io.StringIO(), err, {}))
        await until(lambda: factory.connections)
        clock.advance(cli.CONNECT_TIMEOUT)
        assert await timeout(running) == cli.EXIT_UNAVAILABLE
        assert err.getvalue() == (f"plugmgr: cannot connect to unix:path={path}: no answer "
                                  "within 10s (is the manager running?)\n")
        assert clock.getDelayedCalls() == []
    finally:
        for connection in factory.connections:
            connection.transport.loseConnection()
        await timeout(port.stopListening())


# --- an option given twice: the last one wins --------------------------------------------


@pytest_twisted.ensureDeferred
async def test_control_twice_the_last_wins(server, tmp_path):
    missing = str(tmp_path / "missing.sock")
    code, out, err = await run_cli("--control", missing, "status", "--control", server.path)
    assert (code, out) == (0, "no plugins loaded\n"), err
    code, out, err = await run_cli("--control", server.path, "status", "--control", missing)
    assert code == cli.EXIT_UNAVAILABLE
    assert err.startswith(f"plugmgr: cannot connect to unix:path={missing}: ")


@pytest_twisted.ensureDeferred
async def test_config_twice_the_last_wins(server, tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(f'[manager]\ncontrol = "unix:path={server.path}"\n')
    bad.write_text(f'[manager]\ncontrol = "unix:path={tmp_path / "missing.sock"}"\n')
    code, out, err = await run_cli("--config", str(bad), "status", "--config", str(good))
    assert (code, out) == (0, "no plugins loaded\n"), err
    code, out, err = await run_cli("--config", str(good), "status", "--config", str(bad))
    assert code == cli.EXIT_UNAVAILABLE, err


@pytest_twisted.ensureDeferred
async def test_token_twice_the_last_wins(tcp_server):
    control = tcp_control(tcp_server)
    code, out, err = await run_cli("--control", control, "--token", "guess", "status",
                                   "--token", "s3cret")
    assert (code, out) == (0, "no plugins loaded\n"), err
    code, out, err = await run_cli("--control", control, "--token", "s3cret", "status",
                                   "--token", "guess")
    assert (code, err) == (cli.EXIT_REFUSED, f"plugmgr: {control}: refused: wrong token\n")


@pytest_twisted.ensureDeferred
async def test_token_and_token_file_on_either_side_is_a_usage_error(tcp_server, tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    code, out, err = await run_cli("--control", tcp_control(tcp_server), "--token", "s3cret",
                                   "status", "--token-file", str(tmp_path / "token"))
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: argument --token-file: not allowed with argument --token"
    assert tcp_server.manager.calls == []


# --- a command's own arguments ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_plugin_named_as_a_command_or_an_option(tmp_path):
    tmp_path.chmod(0o700)
    s = Server(tmp_path, manager=FakePluginManager(["status", "json", "control"])).start()
    try:
        code, out, err = await run_cli("--control", s.path, "load", "status", "--json")
        assert (code, json.loads(out)["name"]) == (0, "status"), err
        code, out, err = await run_cli("load", "json", "--control", s.path)
        assert (code, out) == (0, "loaded json 1.0\n"), err
        code, out, err = await run_cli("--json", "load", "control", "--control", s.path)
        assert (code, json.loads(out)["name"]) == (0, "control"), err
        code, out, err = await run_cli("unload", "json", "--reason=--json", "--control", s.path)
        assert (code, out) == (0, "unloaded json: json quits (smart): --json\n"), err
    finally:
        await s.stop()


# --- --version ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_version_needs_no_manager():
    code, out, err = await run_cli("--version")
    assert (code, out, err) == (0, f"plugmgr {metadata.version('twisted-plugmgr')}\n", "")


@before_and_after("--version", command=("load", "hello"))
@pytest_twisted.ensureDeferred
async def test_version_before_or_after_a_command(server, argv):
    code, out, err = await run_cli("--control", server.path, *argv)
    assert (code, out, err) == (0, f"plugmgr {metadata.version('twisted-plugmgr')}\n", "")
    assert server.manager.calls == []


def not_installed(name):
    raise metadata.PackageNotFoundError(name)


@pytest_twisted.ensureDeferred
async def test_version_not_installed_is_the_packages(monkeypatch):
    monkeypatch.setattr(metadata, "version", not_installed)
    monkeypatch.setattr(twisted_plugmgr, "__version__", "9.8.7", raising=False)
    assert await run_cli("--version") == (0, "plugmgr 9.8.7\n", "")


@pytest_twisted.ensureDeferred
async def test_version_unknown(monkeypatch):
    monkeypatch.setattr(metadata, "version", not_installed)
    monkeypatch.delattr(twisted_plugmgr, "__version__", raising=False)
    assert await run_cli("--version") == (0, "plugmgr unknown\n", "")


# --- usage errors ------------------------------------------------------------------------


@before_and_after("--bogus")
@pytest_twisted.ensureDeferred
async def test_unknown_option(server, argv):
    code, out, err = await run_cli("--control", server.path, *argv)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert first_line(err) == "plugmgr: unrecognized arguments: --bogus"
    assert err.splitlines()[1].startswith("usage: plugmgr ")
    assert server.manager.calls == []


@pytest_twisted.ensureDeferred
async def test_bad_value_after_the_command(server):
    code, out, err = await run_cli("--control", server.path, "status", "--timeout", "soon")
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: argument --timeout: invalid float value: 'soon'"


@pytest_twisted.ensureDeferred
async def test_global_option_without_its_value_after_the_command(server):
    code, out, err = await run_cli("--control", server.path, "status", "--control")
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: argument --control: expected one argument"


# --- the real entry point, as a subprocess ---------------------------------------------------


async def plugmgr(*argv):
    out, err, code = await process_timeout(getProcessOutputAndValue(
        sys.executable, ["-m", "twisted_plugmgr.cli", *argv], env=environment()))
    return code, out.decode(), err.decode()


@pytest_twisted.ensureDeferred
async def test_entry_point_version():
    assert await plugmgr("--version") == (
        0, f"plugmgr {metadata.version('twisted-plugmgr')}\n", "")


@pytest_twisted.ensureDeferred
async def test_entry_point_unknown_option():
    code, out, err = await plugmgr("status", "--bogus")
    assert (code, out) == (2, "")
    assert first_line(err) == "plugmgr: unrecognized arguments: --bogus"


@pytest_twisted.ensureDeferred
async def test_entry_point_global_options_after_the_command(server):
    await server.manager.load("hello")
    code, out, err = await plugmgr("status", "--control", f"unix:path={server.path}", "--json")
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)] == ["hello"]
