"""
Isolation from the command line: C{plugmgr load NAME --isolate
--call-deadline S --limit KEY=N}, C{plugmgr reload NAME --isolate |
--no-isolate | --class-isolation}, what C{status} and C{info} show, and the
control channel's C{isolation} argument beneath them: checked by the CLI
before connecting, by the server before the manager is asked, and carried
out by a real manager with real worker processes.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest
import pytest_twisted
import test_control
from _workers import isolating_manager, shut_down, until, workers
from test_control import Server, run_cli, timeout
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from twisted_plugmgr import ShutdownMode, cli
from twisted_plugmgr._cli_parser import UsageError, parse_isolation
from twisted_plugmgr._control import JSON, BadRequestError
from twisted_plugmgr.testing import FakePluginManager, result_of

# The control service of tests/test_control.py on a fake manager.
server = test_control.server

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="worker processes: Linux")


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


# --- parsing, without I/O -------------------------------------------------------------


@pytest.mark.parametrize("argv, options", [
    (["--isolate"], {"isolate": True}),
    (["--no-isolate"], {"isolate": False}),
    (["--call-deadline", "2.5"], {"call_deadline": 2.5}),
    (["--limit", "memory_mb=256", "--limit", "open_files=64"],
     {"limits": {"memory_mb": 256, "open_files": 64}}),
    (["--limit", "cpu_seconds=5", "--limit", "cpu_seconds=7"], {"limits": {"cpu_seconds": 7}}),
    (["--isolate", "--call-deadline", "1", "--limit", "open_files=32"],
     {"isolate": True, "call_deadline": 1.0, "limits": {"open_files": 32}}),
])
@pytest.mark.parametrize("command", ["load", "reload"])
def test_each_isolation_option_gives_its_key(command, argv, options):
    assert parse_isolation(cli.parse([command, "x", *argv])) == options


@pytest.mark.parametrize("command", ["load", "reload"])
def test_no_isolation_option_is_no_isolation(command):
    assert parse_isolation(cli.parse([command, "x", "--data", "1"])) is None


def test_class_isolation_drops_what_is_not_given_again():
    assert parse_isolation(cli.parse(["reload", "x", "--class-isolation"])) == {
        "isolate": None, "call_deadline": None, "limits": None}
    assert parse_isolation(cli.parse(["reload", "x", "--class-isolation", "--call-deadline",
                                      "5"])) == {
        "isolate": None, "call_deadline": 5.0, "limits": None}


@pytest.mark.parametrize("option, message", [
    (["--call-deadline", "0"],
     "argument --call-deadline: invalid call_deadline 0.0: expected a positive number of "
     "seconds"),
    (["--call-deadline", "-3"],
     "argument --call-deadline: invalid call_deadline -3.0: expected a positive number of "
     "seconds"),
    (["--call-deadline", "nan"], "argument --call-deadline: invalid number of seconds: 'nan'"),
    (["--call-deadline", "soon"],
     "argument --call-deadline: invalid number of seconds: 'soon'"),
    (["--limit", "memory_mb"], "argument --limit: invalid limit 'memory_mb': expected KEY=N, "
     "KEY one of memory_mb, cpu_seconds, open_files"),
    (["--limit", "heap=3"], "argument --limit: invalid limit 'heap=3': expected KEY=N, KEY "
     "one of memory_mb, cpu_seconds, open_files"),
    (["--limit", "memory_mb=0"],
     "argument --limit: invalid limit 'memory_mb=0': expected memory_mb=N, N a positive "
     "whole number"),
    (["--limit", "cpu_seconds=1.5"],
     "argument --limit: invalid limit 'cpu_seconds=1.5': expected cpu_seconds=N, N a "
     "positive whole number"),
    (["--isolate=yes"], "argument --isolate/--no-isolate: ignored explicit argument 'yes'"),
], ids=["zero-deadline", "negative-deadline", "nan-deadline", "word-deadline", "no-value",
        "unknown-limit", "zero-limit", "fractional-limit", "isolate-value"])
@pytest.mark.parametrize("command", ["load", "reload"])
@pytest_twisted.ensureDeferred
async def test_a_bad_isolation_option_is_a_usage_error_and_nothing_is_sent(server, command,
                                                                           option, message):
    result_of(server.manager.load("hello"))
    server.manager.calls.clear()
    code, out, err = await run_cli("--control", server.path, command, "hello", *option)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert first_line(err).startswith(f"plugmgr: {message}"), err
    assert server.manager.calls == []
    assert server.manager.plugins["hello"].isolation == {}


@pytest.mark.parametrize("option", [["--isolate"], ["--no-isolate"], ["--call-deadline", "3"],
                                    ["--limit", "open_files=9"], ["--class-isolation"]])
@pytest_twisted.ensureDeferred
async def test_isolation_options_reload_one_plugin_only(server, option):
    for name in ("a", "b"):
        result_of(server.manager.load(name))
    server.manager.calls.clear()
    code, out, err = await run_cli("--control", server.path, "reload", "a", "b", *option)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert first_line(err) == ("plugmgr: the isolation options reload one plugin: a reload "
                               "of several, in one transaction, keeps the isolation of each")
    assert server.manager.calls == []


@pytest_twisted.ensureDeferred
async def test_class_isolation_is_for_reload_only(server):
    code, out, err = await run_cli("--control", server.path, "load", "hello",
                                   "--class-isolation")
    assert code == cli.EXIT_USAGE
    assert first_line(err) == "plugmgr: unrecognized arguments: --class-isolation"
    assert server.manager.calls == []


@pytest.mark.parametrize("command", ["load", "reload"])
def test_the_help_of_load_and_reload_describes_the_isolation_options(command, capsys):
    with pytest.raises(SystemExit):
        cli.parse([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "isolation: Whether the plugin runs in a worker process of its own" in text
    for option in ("--isolate, --no-isolate", "--call-deadline S", "--limit KEY=N"):
        assert option in text
    assert ("--class-isolation" in text) is (command == "reload")


def test_a_limit_option_needs_its_value():
    with pytest.raises(UsageError) as info:
        cli.parse(["load", "x", "--limit"])
    assert str(info.value).startswith("argument --limit: expected one argument")


# --- the control channel, against a fake manager ------------------------------------


@pytest_twisted.ensureDeferred
async def test_load_sends_the_isolation_options(server):
    code, out, err = await run_cli(
        "--control", server.path, "load", "hello", "--isolate", "--call-deadline", "2.5",
        "--limit", "memory_mb=512", "--restart", "no")
    assert (code, out) == (0, "loaded hello 1.0 (worker process (none now))\n"), err
    options = {"isolate": True, "call_deadline": 2.5, "limits": {"memory_mb": 512}}
    assert server.manager.calls[0] == ("load", "hello", None, {"restart": "no", **options})
    assert server.manager.plugins["hello"].isolation == options
    assert server.manager.plugins["hello"].policy == {"restart": "no"}


#: Isolation arguments the server refuses, and what the one-line answer names.
BAD_ISOLATION = [
    ([], "not an array"),
    ("isolate", "not a string"),
    (True, "not a boolean"),
    ({"isolat": True}, "unknown isolation option 'isolat'"),
    ({"nope": None}, "unknown isolation option 'nope'"),
    ({"isolate": "yes"}, "invalid isolate 'yes'"),
    ({"call_deadline": -1}, "invalid call_deadline -1"),
    ({"call_deadline": True}, "invalid call_deadline True"),
    ({"limits": []}, "invalid limits []"),
    ({"limits": {"heap": 1}}, "invalid limits key 'heap'"),
    ({"limits": {"memory_mb": 1.5}}, "invalid limits.memory_mb 1.5"),
    ({"limits": {"open_files": 0}}, "invalid limits.open_files 0"),
]


@pytest.mark.parametrize("isolation, named", BAD_ISOLATION)
@pytest_twisted.ensureDeferred
async def test_a_bad_isolation_is_refused_and_nothing_is_loaded(server, isolation, named):
    client = await server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.load("hello", {"x": 1}, isolation=isolation)
    message = info.value.message
    assert message.startswith("invalid isolation: ") and named in message, message
    assert "\n" not in message
    assert server.manager.calls == []
    assert server.manager.plugins == {}
    # The connection goes on.
    assert (await client.load("hello"))["name"] == "hello"
    await client.close()


@pytest.mark.parametrize("isolation, named", BAD_ISOLATION)
@pytest_twisted.ensureDeferred
async def test_a_bad_isolation_is_refused_and_nothing_is_reloaded(server, isolation, named):
    result_of(server.manager.load("hello", isolate=True, call_deadline=4))
    server.manager.calls.clear()
    client = await server.connect()
    with pytest.raises(BadRequestError) as info:
        await client.reload("hello", isolation=isolation)
    assert named in info.value.message and "\n" not in info.value.message
    assert server.manager.calls == []
    plugin = server.manager.plugins["hello"]
    assert (plugin.reloads, plugin.isolation) == (0, {"isolate": True, "call_deadline": 4.0})
    await client.close()


@pytest_twisted.ensureDeferred
async def test_reload_changes_only_the_options_given(server):
    limits = {"memory_mb": 256, "open_files": 64}
    result_of(server.manager.load("hello", isolate=True, call_deadline=5, limits=limits))
    code, out, err = await run_cli("--control", server.path, "reload", "hello",
                                   "--call-deadline", "9")
    assert code == 0, err
    assert server.manager.calls[-2][:2] == ("reload", "hello")
    assert server.manager.calls[-2][-1] == {"isolate": True, "call_deadline": 9.0,
                                            "limits": limits}
    # --limit replaces the limits as a whole; the other options stay.
    await run_cli("--control", server.path, "reload", "hello", "--limit", "cpu_seconds=3")
    assert server.manager.plugins["hello"].isolation == {
        "isolate": True, "call_deadline": 9.0, "limits": {"cpu_seconds": 3}}
    # A null drops one; --class-isolation drops them all.
    client = await server.connect()
    await client.reload("hello", isolation={"call_deadline": None})
    assert server.manager.plugins["hello"].isolation == {
        "isolate": True, "limits": {"cpu_seconds": 3}}
    await client.close()
    code, out, err = await run_cli("--control", server.path, "reload", "hello",
                                   "--class-isolation")
    assert (code, out) == (0, "reloaded hello 1.0\n"), err
    assert server.manager.plugins["hello"].isolation == {}
    assert server.manager.plugins["hello"].reloads == 4


@pytest_twisted.ensureDeferred
async def test_a_reload_without_isolation_options_keeps_them(server):
    result_of(server.manager.load("hello", isolate=True))
    code, out, err = await run_cli("--control", server.path, "reload", "hello", "--data", "2")
    assert code == 0, err
    assert ("reload", "hello", 2, ShutdownMode.SMART, False) in server.manager.calls  # no isolation
    assert server.manager.plugins["hello"].isolation == {"isolate": True}


@pytest_twisted.ensureDeferred
async def test_a_reload_with_isolation_of_what_is_not_loaded_says_so(server):
    code, out, err = await run_cli("--control", server.path, "reload", "ghost", "--isolate")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err.startswith("plugmgr: reload: plugin 'ghost': no such plugin"), err
    assert server.manager.plugins == {}


class OldLoad(amp.Command):
    """C{Load} as a manager from before isolation options knows it."""

    commandName = b"Load"
    arguments = [(b"name", amp.Unicode()), (b"data", JSON(optional=True)),
                 (b"policy", JSON(optional=True))]
    response = [(b"plugin", JSON())]


class OldManager(amp.AMP):
    """A control channel of an older manager: it loads, ignoring isolation."""

    @OldLoad.responder
    def load(self, name, data=None, policy=None):
        self.factory.loaded.append(name)
        return {"plugin": {"name": name, "version": "1.0", "longname": "old",
                           "restarts": 0, "last_failure": None}}


@pytest_twisted.ensureDeferred
async def test_an_older_manager_that_ignores_isolation_is_said_so(tmp_path):
    path = str(tmp_path / "old.sock")
    factory = Factory.forProtocol(OldManager)
    factory.loaded = []
    port = await timeout(UNIXServerEndpoint(reactor, path).listen(factory))
    try:
        code, out, err = await run_cli("--control", path, "load", "hello", "--isolate")
        assert (code, out) == (cli.EXIT_REFUSED, "loaded hello 1.0\n")
        assert err == ("plugmgr: load: plugin 'hello': the isolation options were ignored: this "
                       "manager is older than them (where the plugin runs is as before)\n")
        assert factory.loaded == ["hello"]
        # Without isolation options, the same answer is a plain success.
        code, out, err = await run_cli("--control", path, "load", "hello")
        assert (code, out, err) == (0, "loaded hello 1.0\n", "")
    finally:
        await timeout(port.stopListening())


def test_the_fake_manager_details_show_the_isolation_given():
    manager = FakePluginManager(["a", "b"])
    result_of(manager.load("a", isolate=True, limits={"open_files": 8}))
    result_of(manager.load("b", call_deadline=3))
    a, b = manager.details("a"), manager.details("b")
    assert (a.info.isolated, a.call_deadline, a.limits, a.isolation_options) == (
        True, 30.0, {"open_files": 8}, {"isolate": True, "limits": {"open_files": 8}})
    assert (b.info.isolated, b.call_deadline, b.limits, b.isolation_options) == (
        False, None, {}, {"call_deadline": 3.0})


# --- a real manager, real worker processes ----------------------------------------


COUNTER = '''
import os
from twisted_plugmgr import Plugin, handler

class Counter(Plugin):
    name = "counter"
    version = "1"

    def __init__(self, api, data=None):
        super().__init__(api, data)
        self.count = 0

    @handler()
    def bump(self):
        self.count += 1
        return [os.getpid(), self.count]

    def get_state(self):
        return self.count

    def set_state(self, state):
        self.count = state
'''


@pytest.fixture
def real(tmp_path):
    os.chmod(tmp_path, 0o700)
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    (plugdir / "counter.py").write_text(textwrap.dedent(COUNTER))
    manager = isolating_manager(plugdir)
    s = Server(tmp_path, manager=manager).start()
    yield s
    pytest_twisted.blockon(s.stop())
    shut_down(manager)


async def cli_json(s, *argv):
    code, out, err = await run_cli("--control", s.path, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def worker_pid(out, said):
    """The pid in C{out}, the one line C{"<said> (worker process PID)"}."""
    match = re.fullmatch(re.escape(said) + r" \(worker process (\d+)\)\n", out)
    assert match, out
    return int(match.group(1))


@linux_only
@pytest_twisted.ensureDeferred
async def test_load_isolated_from_the_cli_then_move_it_back_with_its_state(real):
    code, out, err = await run_cli("--control", real.path, "load", "counter", "--isolate",
                                   "--call-deadline", "5", "--limit", "open_files=256")
    assert code == 0, err
    pid = worker_pid(out, "loaded counter 1")
    assert pid in workers()  # with the warm spare beside it
    assert (await cli_json(real, "call", "counter", "bump"))["value"] == [pid, 1]
    [row] = await cli_json(real, "status")
    assert (row["isolated"], row["pid"]) == (True, pid)

    code, out, err = await run_cli("--control", real.path, "info", "counter")
    assert code == 0, err
    lines = out.splitlines()
    assert f"runs in:            worker process {pid}" in lines
    assert "call deadline:      5s" in lines
    assert "limits:             open_files=256" in lines
    assert ("isolation given:    isolate=true call_deadline=5s limits: open_files=256"
            in lines), out

    # Back into the manager's process, its count handed over; the other
    # options given stay (and apply again once it is isolated again).
    code, out, err = await run_cli("--control", real.path, "reload", "counter",
                                   "--no-isolate")
    assert (code, out) == (0, "reloaded counter 1\n"), err
    assert (await cli_json(real, "call", "counter", "bump"))["value"] == [os.getpid(), 2]
    details = await cli_json(real, "info", "counter")
    assert (details["info"]["isolated"], details["call_deadline"], details["limits"]) == (
        False, None, {})
    assert details["isolation_options"] == {"isolate": False, "call_deadline": 5.0,
                                            "limits": {"open_files": 256}}
    await until(lambda: not workers(), 5.0)  # no isolated plugin left: no spare either

    # In again, with the class's own options only: the default deadline.
    code, out, err = await run_cli("--control", real.path, "reload", "counter",
                                   "--class-isolation", "--isolate")
    assert code == 0, err
    second = worker_pid(out, "reloaded counter 1")
    assert second in workers() and second != pid
    assert (await cli_json(real, "call", "counter", "bump"))["value"] == [second, 3]
    details = await cli_json(real, "info", "counter")
    assert (details["call_deadline"], details["limits"], details["isolation_options"]) == (
        30.0, {}, {"isolate": True})


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_reload_into_a_worker_that_fails_leaves_it_where_it_ran(real):
    await cli_json(real, "load", "counter")
    await cli_json(real, "call", "counter", "bump")
    # Too few open files for the worker to start its interpreter.
    code, out, err = await run_cli("--control", real.path, "reload", "counter", "--isolate",
                                   "--limit", "open_files=3")
    assert (code, out) == (cli.EXIT_REFUSED, ""), err
    assert err.startswith("plugmgr: reload: plugin 'counter': "), err
    assert len(err.splitlines()) == 1
    assert (await cli_json(real, "call", "counter", "bump"))["value"] == [os.getpid(), 2]
    details = await cli_json(real, "info", "counter")
    assert (details["info"]["isolated"], details["info"]["state"],
            details["isolation_options"]) == (False, "running", {})
    await until(lambda: not workers(), 5.0)
