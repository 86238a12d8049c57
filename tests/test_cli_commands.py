"""
Tests for the commands of C{plugmgr} added for operators (L{twisted_plugmgr.cli}):
C{status NAME...}, C{info}, C{available}, C{call}, C{emit}, C{reconfig},
C{checkconfig}, C{ready}; C{--json} errors; a config file that does not
parse; a manager that does not know a command; every option's help.

They run the CLI in process, as tests/test_control.py does, against a
control service on a UNIX socket in C{tmp_path} (a fake manager, the real
one, or a fake one with the daemon's reconfig and readiness hooks).
"""

from __future__ import annotations

import argparse
import json

import pytest
import pytest_twisted
import test_control
from test_control import Outcome, Server, _write_plugin, run_cli

from twisted_plugmgr import cli
from twisted_plugmgr._cli_parser import build_parser
from twisted_plugmgr.testing import result_of

server = test_control.server
real_server = test_control.real_server
hooked = test_control.hooked


def older(server: Server, *commands: bytes) -> Server:
    """
    C{server}, made to answer C{commands} as a manager that does not know
    them does (AMP's UNHANDLED), then started.
    """
    build = server.factory.buildProtocol

    def protocol(addr):
        proto = build(addr)
        locate = proto.locateResponder
        proto.locateResponder = lambda name: None if name in commands else locate(name)
        return proto

    server.factory.buildProtocol = protocol
    return server.start()


# --- status NAME... ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_of_the_plugins_named(server):
    for name in ("a", "b", "hello"):
        result_of(server.manager.load(name))
    code, out, err = await run_cli("--control", server.path, "status", "hello", "a")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "a", "hello"]


@pytest_twisted.ensureDeferred
async def test_status_of_a_plugin_not_loaded_is_exit_1_naming_it(server):
    result_of(server.manager.load("a"))
    code, out, err = await run_cli("--control", server.path, "status", "a", "b", "zed")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err == "plugmgr: status: plugin 'b', plugin 'zed': no such plugin: not loaded\n"


@pytest_twisted.ensureDeferred
async def test_status_shows_a_failed_reload_under_the_plugin(real_server, logged_failures):
    client = await real_server.connect()
    await client.load("hello")
    (real_server.plugins / "hello.py").write_text("def (:\n")
    await client.reload_changed()
    code, out, err = await run_cli("--control", real_server.path, "status")
    assert code == 0, err
    header, row, note = out.splitlines()
    assert row.split()[:3] == ["hello", "1", "running"]
    assert note.startswith(" " * len("hello  ") + "reload failed ")
    assert "CompileFailed: plugin 'hello': module failed t..." in note and len(note) == 80
    logged_failures.flush()
    await client.close()


# --- info ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_info_shows_everything_within_80_columns(real_server):
    client = await real_server.connect()
    await client.load("hello", {"a": 1})
    (real_server.plugins / "hello.py").write_text("def (:\n")
    code, out, err = await run_cli("--control", real_server.path, "info", "hello")
    assert code == 0, err
    lines = out.splitlines()
    # Within 80 columns, but for a path longer than the room (kept whole).
    assert all(len(line) <= 80 or "/" in line.split()[-1] for line in lines), out
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
              for line in lines if not line.startswith(" ") and ":" in line}
    assert fields["name"] == "hello" and fields["version"] == "1"
    assert fields["state"] == "running" and fields["description"] == "the hello"
    assert fields["requires"] == "-" and fields["dependents"] == "-"
    assert fields["restarts"] == "0" and fields["last failure"] == "-"
    assert fields["restart policy"].startswith("restart=on-failure delay=0.1s")
    assert fields["old versions"] == "none alive"
    assert "files" in fields
    files = " ".join(out.split("\nfiles:\n", 1)[1].split())
    assert files.startswith(f"{real_server.plugins / 'hello.py'}: changed on disk, does not "
                            "compile: SyntaxError: invalid syntax (")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_info_json_is_the_answer(real_server):
    client = await real_server.connect()
    await client.load("hello")
    code, out, err = await run_cli("--control", real_server.path, "--json", "info", "hello")
    assert code == 0, err
    details = json.loads(out)
    assert details["info"]["name"] == "hello"
    assert details["files"][0]["status"] == "unchanged"
    await client.close()


@pytest_twisted.ensureDeferred
async def test_info_of_a_plugin_not_loaded_is_exit_1(server):
    code, out, err = await run_cli("--control", server.path, "info", "hello")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err == "plugmgr: info: plugin 'hello': no such plugin\n"


# --- available -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_available_marks_loaded_not_loaded_and_broken(real_server):
    (real_server.plugins / "broken.py").write_text("x = (\n")
    client = await real_server.connect()
    await client.load("hello")
    code, out, err = await run_cli("--control", real_server.path, "available")
    assert code == 0, err
    header, broken, error, hello = out.splitlines()
    assert header.split() == ["NAME", "STATUS"]
    assert broken.split() == ["broken", "broken"]
    assert error.startswith("        SyntaxError: ") and len(error) <= 80
    assert hello.split() == ["hello", "loaded"]
    code, out, err = await run_cli("--control", real_server.path, "available", "--names")
    assert (code, out) == (0, "broken\nhello\n")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_available_from_a_manager_without_catalog_is_the_names(tmp_path):
    tmp_path.chmod(0o700)
    s = older(Server(tmp_path), b"Catalog")
    try:
        code, out, err = await run_cli("--control", s.path, "available")
        assert (code, out) == (0, "a\nb\nhello\n"), err
    finally:
        await s.stop()


# --- call and emit ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_call_arguments_are_json_else_strings(server):
    result_of(server.manager.load("hello"))
    server.manager.answers["greet"] = {"hi": "there"}
    code, out, err = await run_cli("--control", server.path, "call", "hello", "greet",
                                   "3", "true", '"7"', "world", "[1, 2]", '{"a": null}', "NaN",
                                   "{oops", "1e999", "[1e999]", "2.5")
    assert (code, out) == (0, '{"hi": "there"}\n'), err
    assert server.manager.calls[-1] == (
        "call", "hello", "greet", (3, True, "7", "world", [1, 2], {"a": None}, "NaN", "{oops",
                                   "1e999", "[1e999]", 2.5),
        {})


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("data", ["1e999", '{"x": -1e999}', "NaN", '[Infinity]'])
async def test_data_no_json_value_holds_is_bad_usage_and_nothing_is_sent(server, data):
    code, out, err = await run_cli("--control", server.path, "load", "hello", "--data", data)
    assert code == cli.EXIT_USAGE and out == ""
    assert err.startswith("plugmgr: --data is not valid JSON: ") and "Traceback" not in err
    assert server.manager.plugin_table() == {}


@pytest_twisted.ensureDeferred
async def test_call_result_not_json_is_its_repr_and_says_so(server):
    result_of(server.manager.load("hello"))
    server.manager.answers["odd"] = {1, 2}
    code, out, err = await run_cli("--control", server.path, "call", "hello", "odd")
    assert (code, out) == (0, "{1, 2}  (not JSON-serialisable: shown as its repr)\n"), err
    code, out, err = await run_cli("--control", server.path, "--json", "call", "hello", "odd")
    assert json.loads(out) == {"repr": "{1, 2}"}


@pytest_twisted.ensureDeferred
async def test_call_of_a_handler_that_raises_is_exit_1_naming_it(real_server, logged_failures):
    _write_plugin(real_server.plugins, "hello", body=(
        "    from twisted_plugmgr import handler\n"
        "    @handler()\n"
        "    def boom(self):\n"
        "        raise ValueError('no fuel')\n"))
    client = await real_server.connect()
    await client.load("hello")
    code, out, err = await run_cli("--control", real_server.path, "call", "hello", "boom")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err == "plugmgr: call: plugin 'hello': handler of 'boom' raised ValueError: no fuel\n"
    logged_failures.flush(ValueError)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_emit_prints_each_answer(server):
    server.manager.answers["tick"] = [1, "two"]
    code, out, err = await run_cli("--control", server.path, "emit", "tick", "now")
    assert (code, out) == (0, '[1, "two"]\n'), err
    assert server.manager.calls[-1] == ("emit", "tick", ("now",), {})
    code, out, err = await run_cli("--control", server.path, "emit", "nothing")
    assert (code, out) == (0, "no handler answered\n"), err
    code, out, err = await run_cli("--control", server.path, "emit", "tick", "--json")
    assert json.loads(out) == [{"value": [1, "two"]}]


# --- reconfig and ready ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reconfig_prints_what_changed(hooked):
    hooked.hooks.outcome = Outcome(loaded=("gamma",), unloaded=("beta",), reloaded=("alpha",))
    code, out, err = await run_cli("--control", hooked.path, "reconfig")
    assert (code, out) == (0, "loaded: gamma\nunloaded: beta\nreloaded: alpha\n"), err
    hooked.hooks.outcome = Outcome(loaded=("gamma",), failed=("unload beta",))
    code, out, err = await run_cli("--control", hooked.path, "reconfig")
    assert (code, out) == (0, "loaded: gamma\nfailed after it was applied: unload beta\n"), err
    hooked.hooks.outcome = Outcome()
    code, out, err = await run_cli("--control", hooked.path, "reconfig")
    assert (code, out) == (0, "nothing needed to change\n"), err
    code, out, err = await run_cli("--control", hooked.path, "--json", "reconfig")
    assert json.loads(out)["changed"] is False


@pytest_twisted.ensureDeferred
async def test_reconfig_refused_is_exit_1_with_the_reason(hooked):
    hooked.hooks.refusal = "plugmgr.toml: manager.watched: unknown key"
    code, out, err = await run_cli("--control", hooked.path, "reconfig")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err == "plugmgr: reconfig: plugmgr.toml: manager.watched: unknown key\n"


@pytest_twisted.ensureDeferred
async def test_reconfig_of_a_manager_without_a_config_file(server):
    code, out, err = await run_cli("--control", server.path, "reconfig")
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err == ("plugmgr: reconfig: reconfig is not available: this manager was not "
                   "started from a config file\n")


@pytest_twisted.ensureDeferred
async def test_ready_exit_0_when_every_enabled_plugin_runs(hooked):
    hooked.hooks.states = {"alpha": "running", "beta": "running"}
    code, out, err = await run_cli("--control", hooked.path, "ready")
    assert (code, out) == (0, "ready: 2 plugins running\n"), err


@pytest_twisted.ensureDeferred
async def test_ready_exit_1_naming_what_is_not_running(hooked):
    hooked.hooks.states = {"alpha": "running", "beta": "starting", "gamma": "not loaded"}
    code, out, err = await run_cli("--control", hooked.path, "ready")
    assert (code, out) == (cli.EXIT_REFUSED, "not ready: beta (starting), gamma (not loaded)\n")
    code, out, err = await run_cli("--control", hooked.path, "--json", "ready")
    assert code == cli.EXIT_REFUSED
    assert json.loads(out) == {"ready": False, "plugins": hooked.hooks.states}


@pytest.mark.parametrize("argv, command", [
    (["info", "a"], "info"), (["call", "a", "e"], "call"), (["emit", "e"], "emit"),
    (["reconfig"], "reconfig"), (["ready"], "ready"),
])
@pytest_twisted.ensureDeferred
async def test_a_command_the_manager_does_not_know_is_not_supported(tmp_path, argv, command):
    tmp_path.chmod(0o700)
    s = older(Server(tmp_path), b"Info", b"Call", b"Emit", b"Reconfig", b"Ready")
    try:
        code, out, err = await run_cli("--control", s.path, *argv)
        assert (code, out) == (cli.EXIT_REFUSED, "")
        assert err == (f"plugmgr: {command} is not supported by this manager (it runs an "
                       "older twisted-plugmgr)\n")
        code, out, err = await run_cli("--control", s.path, "--json", *argv)
        assert code == cli.EXIT_REFUSED and err == ""
        assert json.loads(out)["error"] == (f"{command} is not supported by this manager (it "
                                            "runs an older twisted-plugmgr)")
    finally:
        await s.stop()


# --- checkconfig ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_checkconfig_of_a_valid_file(tmp_path):
    (tmp_path / "plugins").mkdir()
    config = tmp_path / "plugmgr.toml"
    config.write_text('[manager]\npaths = ["plugins"]\n\n[plugins.alpha]\n[plugins.beta]\n'
                      "[plugins.gamma]\nenabled = false\n")
    code, out, err = await run_cli("checkconfig", str(config))
    assert (code, err) == (0, "")
    assert out == (f"{config}: ok: 2 plugins enabled (alpha, beta); control "
                   f"unix:path={tmp_path}/plugmgr.sock\n")
    code, out, err = await run_cli("--config", str(config), "--json", "checkconfig")
    assert json.loads(out) == {"file": str(config), "ok": True, "enabled": ["alpha", "beta"],
                               "control": f"unix:path={tmp_path}/plugmgr.sock"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[manager\n", "plugmgr.toml: invalid TOML"),
        ("[manager]\nwatched = true\n", "plugmgr.toml: manager.watched: unknown key"),
        ('[plugins.alpha]\nenabled = "yes"\n',
         "plugmgr.toml: plugins.alpha.enabled: expected true or false, got a string 'yes'"),
        ('[manager]\npaths = ["nowhere"]\n', "plugmgr.toml: manager.paths[0]: expected an "
         "existing directory"),
        ('[manager]\ncontrol = "tcp:8123"\n', "plugmgr.toml: manager.control: a control "
         "endpoint that is not a UNIX socket needs manager.control_token"),
    ],
    ids=["toml", "unknown-key", "wrong-type", "missing-path", "tcp-without-token"],
)
@pytest_twisted.ensureDeferred
async def test_checkconfig_of_an_invalid_file_is_exit_1_with_the_start_message(
        tmp_path, text, message):
    config = tmp_path / "plugmgr.toml"
    config.write_text(text)
    code, out, err = await run_cli("checkconfig", str(config))
    assert (code, out) == (cli.EXIT_REFUSED, "")
    assert err.startswith(f"plugmgr: {tmp_path}/{message}"), err
    assert err.count("\n") == 1
    code, out, err = await run_cli("checkconfig", str(config), "--json")
    assert (code, err) == (cli.EXIT_REFUSED, "")
    assert json.loads(out)["error"].startswith(f"{tmp_path}/{message}")


@pytest_twisted.ensureDeferred
async def test_checkconfig_without_a_file_is_a_usage_error():
    code, out, err = await run_cli("checkconfig")
    assert (code, err) == (cli.EXIT_USAGE, "plugmgr: checkconfig: give FILE, or --config FILE\n")


@pytest_twisted.ensureDeferred
async def test_checkconfig_of_a_missing_file(tmp_path):
    code, out, err = await run_cli("checkconfig", str(tmp_path / "none.toml"))
    assert code == cli.EXIT_REFUSED
    assert err == (f"plugmgr: {tmp_path}/none.toml: cannot read the file (No such file or "
                   "directory)\n")


# --- --json errors -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_json_errors_go_to_standard_output_with_the_same_exit_status(server, tmp_path):
    code, out, err = await run_cli("--control", server.path, "--json", "unload", "nope")
    assert (code, err) == (cli.EXIT_REFUSED, "")
    assert json.loads(out) == {"error": "unload: plugin 'nope': no such plugin",
                               "command": "unload", "exit_status": 1}
    code, out, err = await run_cli("--json", "load", "x", "--data", "{")
    assert (code, err) == (cli.EXIT_USAGE, "")
    assert json.loads(out)["error"].startswith("--data is not valid JSON")
    code, out, err = await run_cli("--json", "frobnicate")
    assert (code, err) == (cli.EXIT_USAGE, "")
    assert json.loads(out)["error"].startswith("argument COMMAND: invalid choice: 'frobnicate'")
    missing = tmp_path / "missing.sock"
    code, out, err = await run_cli("--control", str(missing), "status", "--json")
    assert (code, err) == (cli.EXIT_UNAVAILABLE, "")
    assert json.loads(out) == {
        "error": f"cannot connect to unix:path={missing}: No such file or directory (is the "
                 "manager running?)", "command": "status", "exit_status": 3}


# --- a config file that does not parse ------------------------------------------------------


@pytest.mark.parametrize("text, warning", [
    ("[manager\n", "invalid TOML"),
    ("[manager]\nwatched = true\n", "manager.watched: unknown key"),
], ids=["toml", "invalid"])
@pytest_twisted.ensureDeferred
async def test_a_config_file_that_does_not_parse_still_reaches_the_default_socket(
        tmp_path, text, warning):
    tmp_path.chmod(0o700)
    s = Server(tmp_path, description=f"unix:path={tmp_path}/plugmgr.sock")
    s.path = str(tmp_path / "plugmgr.sock")
    s.start()
    try:
        result_of(s.manager.load("hello"))
        config = tmp_path / "plugmgr.toml"
        config.write_text(text)
        code, out, err = await run_cli("--config", str(config), "status")
        assert code == 0, err
        assert [line.split()[0] for line in out.splitlines()] == ["NAME", "hello"]
        [line] = err.splitlines()
        assert line.startswith(f"plugmgr: warning: {config}: {warning}")
        assert line.endswith(f"; connecting to unix:path={tmp_path}/plugmgr.sock")
        # Only checkconfig fails on it.
        code, out, err = await run_cli("--config", str(config), "checkconfig")
        assert code == cli.EXIT_REFUSED and warning in err
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_an_invalid_config_file_keeps_its_control_key(tmp_path, server):
    config = tmp_path / "elsewhere.toml"
    config.write_text(f'[manager]\ncontrol = "unix:path={server.path}"\nwatched = 1\n')
    code, out, err = await run_cli("--config", str(config), "status")
    assert (code, out) == (0, "no plugins loaded\n"), err
    assert err.startswith("plugmgr: warning: ") and err.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_control_wins_over_a_config_file_that_does_not_parse(tmp_path, server):
    config = tmp_path / "plugmgr.toml"
    config.write_text("[manager\n")
    code, out, err = await run_cli("--config", str(config), "--control", server.path, "status")
    assert (code, out) == (0, "no plugins loaded\n"), err


# --- help ----------------------------------------------------------------------------------


def commands():
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_of_every_command_has_help(name):
    sub = commands()[name]
    text = " ".join(sub.format_help().split())
    shown = [a for a in sub._actions if a.help != argparse.SUPPRESS]
    assert shown, name
    for action in shown:
        assert action.help, (name, action.dest)
        for flag in action.option_strings:
            assert flag in text, (name, flag)
        assert " ".join(action.help.split()) in text, (name, action.dest)


@pytest_twisted.ensureDeferred
async def test_help_of_a_command_through_the_entry_point():
    import sys

    from _processes import environment
    from _processes import timeout as process_timeout
    from twisted.internet.utils import getProcessOutputAndValue

    out, err, code = await process_timeout(getProcessOutputAndValue(
        sys.executable, ["-m", "twisted_plugmgr.cli", "call", "--help"], env=environment()))
    assert code == 0, err
    text = " ".join(out.decode().split())
    assert text.startswith("usage: plugmgr call [-h] name event [arg ...]")
    assert "an argument: a JSON value, or else a plain string" in text


@pytest_twisted.ensureDeferred
async def test_an_invalid_config_file_keeps_its_token_file(tmp_path):
    tcp = Server(tmp_path, token="s3cret", description="tcp:0:interface=127.0.0.1").start()
    try:
        port = tcp.service.port.getHost().port
        (tmp_path / "token").write_text("s3cret\n")
        config = tmp_path / "plugmgr.toml"
        config.write_text(f'[manager]\ncontrol = "tcp:{port}:interface=127.0.0.1"\n'
                          'control_token_file = "token"\nwatched = 1\n')
        code, out, err = await run_cli("--config", str(config), "status")
        assert (code, out) == (0, "no plugins loaded\n"), err
        assert err.startswith(f"plugmgr: warning: {config}: manager.watched: unknown key")
    finally:
        await tcp.stop()


@pytest_twisted.ensureDeferred
async def test_available_shows_a_file_with_a_null_byte_as_broken(real_server):
    (real_server.plugins / "nul.py").write_bytes(b"x = 1\x00\n")
    code, out, err = await run_cli("--control", real_server.path, "--json", "available")
    assert code == 0, err
    entry = next(e for e in json.loads(out) if e["name"] == "nul")
    assert entry["status"] == "broken"
    # SyntaxError or ValueError, depending on the version of Python.
    assert entry["error"] in ("SyntaxError: source code string cannot contain null bytes "
                              "(nul.py)",
                              "ValueError: source code string cannot contain null bytes "
                              "(nul.py)")


@pytest_twisted.ensureDeferred
async def test_status_cuts_a_long_description_at_80_columns(server):
    result_of(server.manager.load("hello"))
    server.manager.plugins["hello"].longname = "a description " * 10
    code, out, err = await run_cli("--control", server.path, "status")
    assert code == 0, err
    header, row = out.splitlines()
    # Cut to end at column 80, unless that leaves less than 20 characters of it.
    start = header.index("DESCRIPTION")
    assert len(row) == max(80, start + 20)
    assert row[start:] == ("a description " * 10)[:len(row) - start - 3] + "..."
    code, out, err = await run_cli("--control", server.path, "--json", "status")
    assert json.loads(out)[0]["longname"] == "a description " * 10


def test_status_shows_the_worker_pid_of_an_isolated_plugin_under_its_line():
    """
    An isolated plugin's worker pid is on a line under its own; the
    plugins in the manager's process have none.
    """
    from twisted_plugmgr._cli_format import format_status

    local = {"name": "hello", "version": "1.0", "state": "running", "loaded_at": 0,
             "reloads": 0, "restarts": 0, "longname": "hi", "isolated": False, "pid": None}
    isolated = dict(local, name="sandboxed", isolated=True, pid=4242)
    header, first, second, note = format_status([local, isolated]).splitlines()
    assert first.split()[:3] == ["hello", "1.0", "running"]
    assert second.split()[:3] == ["sandboxed", "1.0", "running"]
    assert note.split() == ["isolated:", "worker", "process", "4242"]
    assert note.index("isolated") == header.index("VERSION")
    assert max(len(line) for line in (header, first, second, note)) <= 80
