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
from test_control import Server, flaky, run_cli, timeout, until
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from zope.interface import implementer

import twisted_plugmgr
from twisted_plugmgr import CompileFailed, PluginError, PluginEvent, ShutdownMode, cli
from twisted_plugmgr._cli_parser import UsageError, parse_policy
from twisted_plugmgr.testing import FakePluginManager, result_of

# The control services of tests/test_control.py (a fake manager on a UNIX
# socket; on TCP with the token "s3cret"), as fixtures of this module too.
server = test_control.server
tcp_server = test_control.tcp_server
real_server = test_control.real_server

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
    before = cli.parse([option, value, "status"])
    after = cli.parse(["status", option, value])
    assert vars(before) == vars(after)
    dest = option[2:].replace("-", "_")
    assert str(getattr(after, dest)) == value


def test_json_is_the_same_before_and_after_the_command():
    assert cli.parse(["--json", "status"]).json is True
    assert cli.parse(["status", "--json"]).json is True
    assert cli.parse(["status"]).json is False


def test_options_not_given_after_the_command_keep_their_values_from_before():
    args = cli.parse(["--control", "c", "--json", "--timeout", "3", "load", "x",
                       "--config", "f"])
    assert (args.control, args.json, args.timeout, args.config, args.name) == (
        "c", True, 3.0, "f", "x")


@pytest.mark.parametrize("option, value", VALUED)
def test_valued_option_given_twice_takes_the_last_value(option, value):
    assert vars(cli.parse([option, "7", "status", option, value])) == \
        vars(cli.parse(["status", option, value]))
    assert vars(cli.parse([option, value, "status", option, "7"])) == \
        vars(cli.parse(["status", option, "7"]))


@pytest.mark.parametrize("argv", [
    ["--token", "t", "status", "--token-file", "f"],
    ["--token-file", "f", "status", "--token", "t"],
    ["status", "--token", "t", "--token-file", "f"],
])
def test_token_and_token_file_are_exclusive_on_either_side(argv):
    with pytest.raises(UsageError) as info:
        cli.parse(argv)
    assert first_line(str(info.value)) == \
        "argument --token-file: not allowed with argument --token"


def test_command_arguments_are_the_commands():
    args = cli.parse(["--control", "load", "load", "status", "--timeout", "1"])
    assert (args.control, args.command, args.name, args.timeout) == (
        "load", "load", "status", 1.0)
    args = cli.parse(["unload", "json", "--reason=--json"])
    assert (args.name, args.reason, args.json) == ("json", "--json", False)
    args = cli.parse(["unload", "json", "--reason", "--json --timeout 5"])
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


# --- load's restart policy options ---------------------------------------------------------

#: Every restart policy option of load, a value for it, and the policy key it gives.
POLICY_OPTIONS = [
    (["--restart", "always"], "restart", "always"),
    (["--restart-delay", "0.5"], "restart_delay", 0.5),
    (["--restart-delay-max", "8"], "restart_delay_max", 8.0),
    (["--restart-burst", "3"], "restart_burst", 3),
    (["--restart-interval", "60"], "restart_interval", 60.0),
    (["--fail-on-error"], "fail_on_error", True),
    (["--no-fail-on-error"], "fail_on_error", False),
]


@pytest.mark.parametrize("option, key, value", POLICY_OPTIONS)
def test_each_policy_option_gives_its_key(option, key, value):
    assert parse_policy(cli.parse(["load", "x", *option])) == {key: value}


def test_no_policy_option_is_no_policy():
    assert parse_policy(cli.parse(["load", "x", "--data", "1"])) is None


def test_fail_on_error_given_twice_takes_the_last():
    args = cli.parse(["load", "x", "--fail-on-error", "--no-fail-on-error"])
    assert parse_policy(args) == {"fail_on_error": False}


def test_policy_options_mix_with_global_options():
    args = cli.parse(["--json", "load", "x", "--restart", "no", "--timeout", "3",
                       "--restart-burst", "0"])
    assert (args.json, args.timeout, args.name) == (True, 3.0, "x")
    assert parse_policy(args) == {"restart": "no", "restart_burst": 0}


@pytest_twisted.ensureDeferred
async def test_load_sends_the_policy_options(server):
    code, out, err = await run_cli(
        "--control", server.path, "load", "hello", "--data", "[1]", "--restart", "on-failure",
        "--restart-delay", "0.25", "--restart-delay-max", "4", "--restart-burst", "2",
        "--restart-interval", "30", "--no-fail-on-error")
    assert (code, out) == (0, "loaded hello 1.0\n"), err
    policy = {"restart": "on-failure", "restart_delay": 0.25, "restart_delay_max": 4.0,
              "restart_burst": 2, "restart_interval": 30.0, "fail_on_error": False}
    assert server.manager.calls[0] == ("load", "hello", [1], policy)
    assert server.manager.plugins["hello"].policy == policy


@pytest_twisted.ensureDeferred
async def test_load_without_policy_options_sends_no_policy(server):
    code, out, err = await run_cli("--control", server.path, "load", "hello")
    assert (code, out) == (0, "loaded hello 1.0\n"), err
    assert server.manager.calls[0] == ("load", "hello", None)


@pytest_twisted.ensureDeferred
async def test_load_json_answer_has_restarts_and_last_failure(server):
    code, out, err = await run_cli("--control", server.path, "load", "hello", "--restart",
                                   "no", "--json")
    assert code == 0, err
    assert json.loads(out) == {"name": "hello", "version": "1.0",
                               "longname": "the hello plugin", "restarts": 0,
                               "last_failure": None, "isolated": False, "pid": None}


@pytest.mark.parametrize("option, message", [
    (["--restart", "sometimes"], "argument --restart: invalid choice: 'sometimes'"),
    (["--restart-delay", "-1"],
     "argument --restart-delay: invalid restart_delay -1.0: expected a number of seconds >= 0"),
    (["--restart-delay", "soon"], "argument --restart-delay: invalid number of seconds: 'soon'"),
    (["--restart-delay-max", "inf"],
     "argument --restart-delay-max: invalid number of seconds: 'inf'"),
    (["--restart-interval", "nan"],
     "argument --restart-interval: invalid number of seconds: 'nan'"),
    (["--restart-interval", "0"], "argument --restart-interval: invalid restart_interval 0.0: "
     "expected a positive number of seconds"),
    (["--restart-burst", "-1"],
     "argument --restart-burst: invalid restart_burst -1: expected a whole number >= 0"),
    (["--restart-burst", "1.5"], "argument --restart-burst: invalid int value: '1.5'"),
    (["--restart"], "argument --restart: expected one argument"),
    (["--fail-on-error=yes"], "argument --fail-on-error/--no-fail-on-error: ignored explicit "
     "argument 'yes'"),
], ids=["restart", "negative-delay", "delay-not-a-number", "infinite-delay-max",
        "nan-interval", "zero-interval", "negative-burst", "fractional-burst", "no-value",
        "fail-on-error-value"])
@pytest_twisted.ensureDeferred
async def test_a_bad_policy_option_is_a_usage_error_and_nothing_is_sent(server, option,
                                                                        message):
    code, out, err = await run_cli("--control", server.path, "load", "hello", *option)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert first_line(err).startswith(f"plugmgr: {message}"), err
    assert server.manager.calls == []
    assert server.manager.plugins == {}


@pytest.mark.parametrize("command", [["reload", "hello"], ["reset", "hello"], ["reload-changed"]])
@pytest_twisted.ensureDeferred
async def test_policy_options_are_loads_only(server, command):
    code, out, err = await run_cli("--control", server.path, *command, "--restart", "always")
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: unrecognized arguments: --restart always"
    assert server.manager.calls == []


class StrictManager(FakePluginManager):
    """
    A fake manager that refuses to restart plugins C{always}.
    """

    def load(self, name, data=None, **policy):
        if policy.get("restart") == "always":
            self.calls.append(("load", name, data, policy))
            return fail(PluginError(name, "restart 'always' is not allowed here"))
        return super().load(name, data, **policy)


@pytest_twisted.ensureDeferred
async def test_a_policy_the_manager_refuses_is_exit_1(tmp_path):
    tmp_path.chmod(0o700)
    s = Server(tmp_path, manager=StrictManager(["hello"])).start()
    try:
        code, out, err = await run_cli("--control", s.path, "load", "hello", "--restart",
                                       "always")
        assert (code, out) == (cli.EXIT_REFUSED, "")
        assert err == ("plugmgr: load: plugin 'hello': plugin error: restart 'always' is not "
                       "allowed here\n")
        assert s.manager.plugins == {}
    finally:
        await s.stop()


# --- reset ---------------------------------------------------------------------------------


@before_and_after("--control", "CONTROL", command=("reset", "hello"))
@pytest_twisted.ensureDeferred
async def test_reset(server, argv):
    plugin = result_of(server.manager.load("hello"))
    plugin.restarts = 4
    argv = [server.path if a == "CONTROL" else a for a in argv]
    code, out, err = await run_cli(*argv)
    assert (code, out) == (0, "reset hello 1.0\n"), err
    assert plugin.restarts == 0
    assert server.manager.calls[-2:] == [("reset", "hello"), ("info", "hello")]


@pytest_twisted.ensureDeferred
async def test_reset_json_answer(server, logged_failures):
    result_of(server.manager.load("hello"))
    server.manager.quarantine("hello", ValueError("boom"))
    code, out, err = await run_cli("--control", server.path, "--json", "reset", "hello")
    assert code == 0, err
    assert json.loads(out) == {"name": "hello", "version": "1.0",
                               "longname": "the hello plugin", "restarts": 0,
                               "last_failure": "ValueError: boom", "isolated": False,
                               "pid": None}
    logged_failures.flush(ValueError)


@pytest_twisted.ensureDeferred
async def test_reset_unknown_plugin_is_exit_1(server):
    result_of(server.manager.load("a"))
    server.manager.plugins["a"].restarts = 2
    code, out, err = await run_cli("--control", server.path, "reset", "nope")
    assert (code, out, err) == (cli.EXIT_REFUSED, "",
                                "plugmgr: reset: plugin 'nope': no such plugin\n")
    assert list(server.manager.plugins) == ["a"]
    assert server.manager.plugins["a"].restarts == 2


@pytest_twisted.ensureDeferred
async def test_reset_needs_a_name(server):
    code, out, err = await run_cli("--control", server.path, "reset")
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: the following arguments are required: name"
    assert server.manager.calls == []


# --- status: restarts and the last failure -------------------------------------------------


def column(line, header, name):
    """
    The cell of column C{name} in C{line} (a cell without spaces).
    """
    return line[header.index(name):].split(" ", 1)[0]


@pytest_twisted.ensureDeferred
async def test_status_shows_restarts_and_the_last_failure(server, logged_failures):
    result_of(server.manager.load("a"))
    result_of(server.manager.load("hello"))
    server.manager.plugins["hello"].restarts = 3
    server.manager.quarantine("hello", ValueError("boom"))
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, a, hello, failure = out.splitlines()
    assert header.split() == ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "RESTARTS",
                              "DESCRIPTION"]
    assert [column(line, header, "STATE") for line in (a, hello)] == ["running", "quarantined"]
    assert [column(line, header, "RESTARTS") for line in (a, hello)] == ["0", "3"]
    assert [line[header.index("DESCRIPTION"):] for line in (a, hello)] == [
        "the a plugin", "the hello plugin"]
    # Under its plugin's line, aligned with the second column.
    assert failure == " " * header.index("VERSION") + "last failure: ValueError: boom"
    logged_failures.flush(ValueError)


@pytest_twisted.ensureDeferred
async def test_status_cuts_a_long_failure_at_80_columns(server):
    result_of(server.manager.load("hello"))
    server.manager.plugins["hello"].last_failure = "RuntimeError: " + "that went wrong " * 20
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, row, failure = out.splitlines()
    assert len(failure) == 80
    assert failure.lstrip().startswith("last failure: RuntimeError: that went wrong")
    assert failure.endswith("...")


@pytest_twisted.ensureDeferred
async def test_status_keeps_some_of_the_failure_under_a_long_name(tmp_path):
    tmp_path.chmod(0o700)
    name = "p" * 70
    s = Server(tmp_path, manager=FakePluginManager([name])).start()
    try:
        result_of(s.manager.load(name))
        s.manager.plugins[name].last_failure = "ValueError: " + "x" * 100
        code, out, err = await run_cli("--control", s.path, "status")
        assert code == 0, err
        header, row, failure = out.splitlines()
        assert failure == " " * 72 + "last failure: ValueError: xxxxx..."
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_status_failure_on_several_lines_is_shown_on_one(server):
    result_of(server.manager.load("hello"))
    server.manager.plugins["hello"].last_failure = "ValueError: one\ntwo\tthree"
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, row, failure = out.splitlines()
    assert failure.lstrip() == "last failure: ValueError: one two three"


@pytest_twisted.ensureDeferred
async def test_status_of_plugins_that_never_failed_has_a_line_each(server):
    for name in ("a", "b", "hello"):
        result_of(server.manager.load(name))
    server.manager.plugins["b"].restarts = 1
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert [row.split()[0] for row in rows] == ["a", "b", "hello"]
    assert [column(row, header, "RESTARTS") for row in rows] == ["0", "1", "0"]


@pytest_twisted.ensureDeferred
async def test_status_json_has_restarts_and_the_last_failure(server):
    result_of(server.manager.load("hello"))
    server.manager.plugins["hello"].restarts = 2
    server.manager.plugins["hello"].last_failure = "ValueError: boom"
    code, out, err = await run_cli("--control", server.path, "status", "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["restarts"], row["last_failure"]) == (2, "ValueError: boom")


# --- events: the supervision fields --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_events_show_the_supervision_fields(server, logged_failures):
    printed = io.StringIO()
    running = Deferred.fromCoroutine(run_cli("--control", server.path, "events", "--count",
                                             "3", out=printed))
    await until(lambda: len(server.manager.listeners) == 1)
    server.manager.broadcast(PluginEvent(kind="plugin_failed", plugin="x", cause="crash",
                                         failure=Failure(ValueError("boom"))))
    server.manager.broadcast(PluginEvent(kind="plugin_restarting", plugin="x", attempt=2,
                                         delay=0.4))
    server.manager.broadcast(PluginEvent(kind="plugin_quarantined", plugin="x", restarts=5,
                                         failure=Failure(ValueError("boom"))))
    code, out, err = await running
    assert code == 0, err
    assert [line.split(" ", 1)[1] for line in out.splitlines()] == [
        "plugin_failed x cause='crash' failure='ValueError: boom'",
        "plugin_restarting x attempt=2 delay=0.4",
        "plugin_quarantined x restarts=5 failure='ValueError: boom'",
    ]
    logged_failures.flush(ValueError)


# --- against the real manager --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_real_manager_load_options_status_and_reset(real_server, logged_failures):
    data, flag = flaky(real_server)
    code, out, err = await run_cli(
        "--control", real_server.path, "load", "flaky", "--data", json.dumps(data),
        "--restart", "on-failure", "--restart-delay", "0", "--restart-burst", "1",
        "--restart-interval", "60")
    assert (code, out) == (0, "loaded flaky 1\n"), err
    table = real_server.manager.plugin_table
    await until(lambda: table()["flaky"].state.value == "quarantined")
    code, out, err = await run_cli("--control", real_server.path, "status")
    assert code == 0, err
    header, row, failure = out.splitlines()
    assert column(row, header, "STATE") == "quarantined"
    assert column(row, header, "RESTARTS") == "1"
    assert failure.lstrip().startswith("last failure: PluginError: plugin 'flaky': ")
    assert "boom" in failure
    flag.unlink()
    code, out, err = await run_cli("--control", real_server.path, "reset", "flaky")
    assert (code, out) == (0, "reset flaky 1\n"), err
    assert (table()["flaky"].state.value, table()["flaky"].restarts) == ("running", 0)
    logged_failures.flush(PluginError)


@pytest_twisted.ensureDeferred
async def test_real_manager_reset_of_what_is_not_loaded_is_exit_1(real_server):
    code, out, err = await run_cli("--control", real_server.path, "reset", "hello")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err.startswith("plugmgr: reset: plugin 'hello': no such plugin")


# --- reload of several plugins, in one transaction -----------------------------------------


def loaded_with_new_sources(manager):
    """
    Load C{a}, C{b} and C{hello} into a fake C{manager} (data C{"A"}, ...),
    and put version 2.0 of each on its disk.
    """
    for name in ("a", "b", "hello"):
        result_of(manager.load(name, name.upper()))
        manager.sources[name] = "2.0"


def what_runs(manager):
    return {name: (plugin, plugin.version, plugin.data)
            for name, plugin in manager.plugins.items()}


@pytest_twisted.ensureDeferred
async def test_reload_of_one_name_is_the_reload_it_always_was(server):
    loaded_with_new_sources(server.manager)
    code, out, err = await run_cli("--control", server.path, "reload", "a", "--data",
                                   '{"b": 1}')
    assert (code, out) == (0, "reloaded a 2.0\n"), err
    # With one name, --data is that plugin's data, whatever its shape.
    assert server.manager.plugins["a"].data == {"b": 1}
    assert [call[0] for call in server.manager.calls if call[0].startswith("reload")] == [
        "reload"]


@before_and_after("--control", "CONTROL", command=("reload", "hello", "a", "--mode", "lazy"))
@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_is_one_transaction(server, argv):
    loaded_with_new_sources(server.manager)
    argv = [server.path if a == "CONTROL" else a for a in argv]
    code, out, err = await run_cli(*argv)
    assert (code, out) == (0, "reloaded hello 2.0\nreloaded a 2.0\n"), err
    assert [call for call in server.manager.calls if call[0].startswith("reload")] == [
        ("reload_many", ["hello", "a"], None, ShutdownMode.LAZY)]
    assert {n: p.version for n, p in server.manager.plugins.items()} == {
        "a": "2.0", "b": "1.0", "hello": "2.0"}


@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_takes_an_object_of_data(server):
    loaded_with_new_sources(server.manager)
    code, out, err = await run_cli("--control", server.path, "reload", "a", "b", "--data",
                                   '{"b": [1, 2]}')
    assert (code, out) == (0, "reloaded a 2.0\nreloaded b 2.0\n"), err
    assert server.manager.calls[-1] == ("reload_many", ["a", "b"], {"b": [1, 2]},
                                        ShutdownMode.SMART)
    assert (server.manager.plugins["a"].data, server.manager.plugins["b"].data) == ("A", [1, 2])


@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_json_is_the_answer(server):
    loaded_with_new_sources(server.manager)
    code, out, err = await run_cli("--control", server.path, "--json", "reload", "b", "a")
    assert code == 0, err
    assert json.loads(out) == {"b": "2.0", "a": "2.0"}
    assert list(json.loads(out)) == ["b", "a"]


@pytest.mark.parametrize("data, kind", [
    ("[1]", "an array"), ('"x"', "a string"), ("3", "a number"), ("true", "a boolean")])
@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_with_data_not_an_object_is_a_usage_error(server, data,
                                                                                 kind):
    loaded_with_new_sources(server.manager)
    before, calls = what_runs(server.manager), list(server.manager.calls)
    code, out, err = await run_cli("--control", server.path, "reload", "a", "b", "--data", data)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == ("plugmgr: --data: with several plugins, give a JSON object of name -> data, "
                   f"not {kind}\n")
    assert server.manager.calls == calls  # nothing was sent
    assert what_runs(server.manager) == before


@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_with_bad_json_is_a_usage_error(server):
    code, out, err = await run_cli("--control", server.path, "reload", "a", "b", "--data", "{")
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.startswith("plugmgr: --data is not valid JSON")
    assert server.manager.calls == []


@pytest.mark.parametrize("argv, plugin, says", [
    (["a", "b"], "b", "module failed to import"),
    (["a", "nope"], "nope", "no such plugin: not loaded"),
    (["a", "a"], "a", "named twice"),
    (["a", "hello", "--data", '{"b": 1}'], "b", "data given for a plugin not in the set"),
], ids=["broken", "not-loaded", "twice", "data-for-another"])
@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_that_fails_names_the_plugin_and_changes_nothing(
        server, argv, plugin, says):
    loaded_with_new_sources(server.manager)
    server.manager.broken["b"] = CompileFailed("b", failure=Failure(SyntaxError("bad")))
    before = what_runs(server.manager)
    code, out, err = await run_cli("--control", server.path, "reload", *argv)
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err.startswith(f"plugmgr: reload: plugin {plugin!r}: the transaction failed")
    assert says in err and err.endswith(" (nothing was changed)\n") and err.count("\n") == 1
    assert what_runs(server.manager) == before


@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_needs_a_name(server):
    code, out, err = await run_cli("--control", server.path, "reload", "--data", "{}")
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: the following arguments are required: name"
    assert server.manager.calls == []


@pytest_twisted.ensureDeferred
async def test_reload_of_several_names_from_a_manager_that_does_not_know_it(tmp_path):
    """
    A manager older than ReloadMany answers it as an unknown command.
    """
    tmp_path.chmod(0o700)
    s = Server(tmp_path)
    build = s.factory.buildProtocol

    def older(addr):
        proto = build(addr)
        locate = proto.locateResponder
        proto.locateResponder = lambda name: None if name == b"ReloadMany" else locate(name)
        return proto

    s.factory.buildProtocol = older
    s.start()
    try:
        loaded_with_new_sources(s.manager)
        before = what_runs(s.manager)
        code, out, err = await run_cli("--control", s.path, "reload", "a", "b")
        assert (code, out) == (cli.EXIT_REFUSED, "")
        assert err == ("plugmgr: reload is not supported by this manager (it runs an older "
                       "twisted-plugmgr)\n")
        assert err.count("\n") == 1
        assert what_runs(s.manager) == before
        # One name is the Reload it knows.
        code, out, err = await run_cli("--control", s.path, "reload", "a")
        assert (code, out) == (0, "reloaded a 2.0\n"), err
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_real_manager_reload_of_several_that_fails_changes_nothing(real_server,
                                                                          logged_failures):
    from test_control import running_versions, three_running

    client = await three_running(real_server)
    code, out, err = await run_cli("--control", real_server.path, "reload", "a", "b", "c")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err.startswith("plugmgr: reload: plugin 'b': the transaction failed")
    assert "no start" in err and err.endswith(" (nothing was changed)\n")
    assert await running_versions(client) == {
        "a": ("1", "running", 0), "b": ("1", "running", 0), "c": ("1", "running", 0)}
    await client.close()
    logged_failures.flush(PluginError, RuntimeError)
