"""
Real processes and sockets: C{twist plugmgr} runs as a subprocess in a
temporary directory, and the C{plugmgr} CLI (also a subprocess) drives it.

Every wait is bounded and event-driven (log lines, process exit, the
CLI's answer); nothing sleeps.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import pytest_twisted
from _processes import (
    BASE,
    Daemon,
    Watched,
    environment,
    make_home,
    timeout,
    write_config,
    write_plugin,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

#: A shutdown that waits for SIGUSR1 (and says so in the log), then writes
#: "finished MODE" to the file named by the plugin's data.
GATED_SHUTDOWN = """
def shutdown(self, mode, reason):
    import signal
    from twisted.internet.defer import Deferred

    finish = Deferred()

    def release(signum, frame):
        self.api.reactor.callFromThread(finish.callback, None)

    def finished(_):
        with open(self.data["marker"], "w") as f:
            f.write(f"finished {mode.value}")
        return "slow done"

    signal.signal(signal.SIGUSR1, release)
    self.api.log.info("slow: shutting down, waiting for SIGUSR1")
    return finish.addCallback(finished)
"""


async def start(tmp_path, config: str = BASE, *args: str) -> Daemon:
    home = make_home(tmp_path, config)
    daemon = Daemon(home, "--config", "plugmgr.toml", *args)
    await daemon.ready()
    return daemon


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """
    One daemon for the CLI tests that each use their own plugins.
    """
    home = make_home(tmp_path_factory.mktemp("shared"), BASE)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    pytest_twisted.blockon(daemon.ready())
    yield daemon
    pytest_twisted.blockon(Deferred.fromCoroutine(daemon.kill()))


# --- the CLI against a running manager ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_table(shared):
    code, out, err = await shared.cli("status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "RESTARTS",
                                "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "beta"]
    assert "running" in lines[1]


@pytest_twisted.ensureDeferred
async def test_status_json(shared):
    code, out, err = await shared.cli("--json", "status")
    assert code == 0, err
    rows = json.loads(out)
    alpha = next(r for r in rows if r["name"] == "alpha")
    assert alpha["state"] == "running" and alpha["version"] == "1"


@pytest_twisted.ensureDeferred
async def test_available(shared):
    code, out, err = await shared.cli("available")
    assert code == 0, err
    assert [line.split(None, 1) for line in out.splitlines()] == [
        ["NAME", "STATUS"], ["alpha", "loaded"], ["beta", "loaded"], ["delta", "not loaded"],
        ["gamma", "not loaded"]]
    code, out, err = await shared.cli("available", "--names")
    assert (code, out.split()) == (0, ["alpha", "beta", "delta", "gamma"]), err


@pytest_twisted.ensureDeferred
async def test_load_reload_unload(shared):
    code, out, err = await shared.cli("load", "gamma", "--data", '{"x": 1}')
    assert (code, out.strip()) == (0, "loaded gamma 1"), err
    write_plugin(shared.home / "plugins", "gamma", version="2")
    code, out, err = await shared.cli("reload", "gamma")
    assert (code, out.strip()) == (0, "reloaded gamma 2"), err
    code, out, err = await shared.cli("unload", "gamma", "--mode", "immediate",
                                      "--reason", "test over")
    assert (code, out.strip()) == (0, "unloaded gamma: test over"), err


@pytest_twisted.ensureDeferred
async def test_unload_unknown_plugin(shared):
    code, out, err = await shared.cli("unload", "nope")
    assert code == 1
    assert err.strip() == "plugmgr: unload: plugin 'nope': no such plugin: not loaded"


@pytest_twisted.ensureDeferred
async def test_load_invalid_name(shared):
    code, out, err = await shared.cli("load", "../etc")
    assert code == 1
    assert "plugmgr: load: plugin '../etc': invalid plugin name" in err


@pytest_twisted.ensureDeferred
async def test_cannot_connect(tmp_path):
    daemon = Daemon.absent(tmp_path)
    code, out, err = await daemon.cli("status")
    assert code == 3
    assert err.strip() == (f"plugmgr: cannot connect to unix:path={tmp_path}/none.sock: "
                           "No such file or directory (is the manager running?)")


@pytest_twisted.ensureDeferred
async def test_events_stream(shared):
    watcher = Watched()
    reactor.spawnProcess(
        watcher, sys.executable,
        [sys.executable, "-m", "twisted_plugmgr.cli", "--control", f"unix:path={shared.socket}",
         "--json", "events", "--count", "2"],
        env=environment(), path=str(shared.home),
    )
    await watcher.wait_for("subscribed")
    assert (await shared.cli("load", "delta"))[0] == 0
    assert (await shared.cli("unload", "delta"))[0] == 0
    await timeout(watcher.ended)
    assert watcher.exit_code == 0, watcher.text
    events = [json.loads(line) for line in watcher.out.decode().splitlines()]
    assert [(e["kind"], e["plugin"]) for e in events] == [
        ("plugin_started", "delta"), ("plugin_unloaded", "delta"),
    ]


class Raw(Protocol):
    def __init__(self):
        self.closed: Deferred = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_control_socket(shared):
    raw = await timeout(connectProtocol(UNIXClientEndpoint(reactor, shared.socket), Raw()))
    raw.transport.write(b"\x00\x05hello\x00\x03abc\x00\x00" + bytes(range(256)) * 20)
    await timeout(raw.closed)
    code, out, err = await shared.cli("status")
    assert code == 0, err
    assert "alpha" in out


# --- lifecycle ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sighup_with_a_changed_config(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    write_config(tmp_path, """
        [manager]
        paths = ["plugins"]

        [plugins.alpha]
        data = { n = 2 }

        [plugins.gamma]
    """)
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig done")
    code, out, err = await daemon.cli("--json", "status")
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == ["alpha", "gamma"]
    assert rows["alpha"]["reloads"] == 1


@pytest_twisted.ensureDeferred
async def test_sighup_with_a_broken_config(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    write_config(tmp_path, "[manager\n")
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig aborted, nothing changed")
    assert "plugmgr.toml: invalid TOML" in daemon.proto.text
    code, out, err = await daemon.cli("status")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["alpha", "beta"]


@pytest_twisted.ensureDeferred
async def test_sigterm_waits_for_a_slow_lazy_shutdown(tmp_path, daemons):
    marker = tmp_path / "marker"
    home = make_home(tmp_path, f"""
        [manager]
        paths = ["plugins"]
        shutdown_mode = "lazy"

        [plugins.slow]
        data = {{ marker = "{marker}" }}
    """)
    write_plugin(home / "plugins", "slow", body=GATED_SHUTDOWN)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    daemon.signal("TERM")
    await daemon.proto.wait_for("slow: shutting down, waiting for SIGUSR1")
    # The plugin's shutdown has not finished: neither has the process.
    assert not daemon.proto.ended.called
    assert not marker.exists()
    daemon.signal("USR1")
    assert await daemon.ended() == 0, daemon.proto.text
    assert marker.read_text() == "finished lazy"
    assert not os.path.exists(daemon.socket)


@pytest.mark.parametrize("name", ["TERM", "INT"])
@pytest_twisted.ensureDeferred
async def test_sigterm_and_sigint_exit_zero_without_the_signal(tmp_path, daemons, name):
    """
    SIGTERM and SIGINT shut the manager down and the process exits with
    status 0: it does not end with the signal (as a reactor that stops on
    its own signal handler would make C{twist} do).
    """
    daemon = await start(tmp_path)
    daemons.append(daemon)
    daemon.signal(name)
    assert await daemon.ended() == 0, daemon.proto.text
    assert daemon.proto.signal is None
    assert f"received SIG{name}, shutting down (smart)" in daemon.proto.text


@pytest_twisted.ensureDeferred
async def test_shutdown_command_stops_the_process(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    code, out, err = await daemon.cli("shutdown", "--mode", "immediate")
    assert (code, out.strip()) == (0, "manager shut down"), err
    assert await daemon.ended() == 0


@pytest_twisted.ensureDeferred
async def test_socket_in_use_is_not_taken_over(tmp_path, daemons):
    first = await start(tmp_path)
    daemons.append(first)
    second = Daemon(tmp_path, "--config", "plugmgr.toml")
    daemons.append(second)
    assert await second.ended() == 1
    assert "is in use by a running process; not taking it over" in second.proto.text
    code, out, err = await first.cli("status")
    assert code == 0, err


@pytest_twisted.ensureDeferred
async def test_stale_socket_is_removed(tmp_path, daemons):
    import socket

    make_home(tmp_path, BASE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "plugmgr.sock"))
    sock.close()
    daemon = await start(tmp_path)
    daemons.append(daemon)
    assert "removed stale socket" in daemon.proto.text
    assert (await daemon.cli("status"))[0] == 0


#: Config files that do not start, and what the start (and checkconfig) says.
BAD_CONFIGS = [
    ("[manager\n", "plugmgr.toml: invalid TOML"),
    ("[manager]\nwatched = true\n", "plugmgr.toml: manager.watched: unknown key"),
    ('[plugins.alpha]\nenabled = "yes"\n',
     "plugmgr.toml: plugins.alpha.enabled: expected true or false, got a string 'yes'"),
    ('[plugins."a.b"]\n', 'plugmgr.toml: plugins."a.b": invalid plugin name'),
    ('[manager]\nshutdown_mode = "fast"\n',
     "plugmgr.toml: manager.shutdown_mode: expected one of 'immediate', 'smart', 'lazy'"),
]


@pytest.mark.parametrize(
    "config, message",
    BAD_CONFIGS,
    ids=["toml", "unknown-key", "wrong-type", "invalid-name", "invalid-mode"],
)
@pytest_twisted.ensureDeferred
async def test_bad_config_exits_without_starting(tmp_path, daemons, config, message):
    home = make_home(tmp_path, config)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    code = await daemon.ended()
    assert code != 0
    assert message in daemon.proto.text
    assert not os.path.exists(daemon.socket)
    assert "plugmgr ready" not in daemon.proto.text


@pytest_twisted.ensureDeferred
async def test_twistd_nodaemon(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    daemon = Daemon(home, "--nodaemon", "--pidfile=", "--logfile=-", "plugmgr", "--config",
                    "plugmgr.toml", twistd=True)
    daemons.append(daemon)
    await daemon.ready()
    assert (await daemon.cli("status"))[0] == 0
    daemon.signal("TERM")
    assert await daemon.ended() == 0, daemon.proto.text


# --- watch -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_edited_plugin_is_reloaded(tmp_path, daemons):
    daemon = await start(tmp_path, BASE.replace("[manager]\n", "[manager]\nwatch = true\n"))
    daemons.append(daemon)
    await daemon.proto.wait_for("Watching")
    write_plugin(tmp_path / "plugins", "alpha", version="2")
    await daemon.proto.wait_for("plugin_reloaded")
    code, out, err = await daemon.cli("--json", "status")
    alpha = next(r for r in json.loads(out) if r["name"] == "alpha")
    assert (alpha["version"], alpha["reloads"]) == ("2", 1)





#: A plugin that says it is broken when the process gets SIGUSR1.
FAIL_ON_USR1 = """
def startService(self):
    import signal

    Plugin.startService(self)

    def broken(signum, frame):
        self.api.reactor.callFromThread(self.api.fail, "SIGUSR1: upstream gone")

    signal.signal(signal.SIGUSR1, broken)
"""


@pytest_twisted.ensureDeferred
async def test_sighup_with_a_policy_only_change_reloads_nothing(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    write_plugin(home / "plugins", "alpha", body=FAIL_ON_USR1)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    write_config(tmp_path, BASE.replace("data = { n = 1 }\n",
                                        'data = { n = 1 }\nrestart = "no"\n'))
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig done")
    assert "reconfig: restart policy of alpha: restart='no' (not reloaded); " \
        "in effect: restart='no', " in daemon.proto.text
    assert "plugin_reloaded" not in daemon.proto.text
    code, out, err = await daemon.cli("--json", "status")
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == ["alpha", "beta"] and rows["alpha"]["reloads"] == 0
    # In effect: the failure unloads alpha instead of restarting it.
    daemon.signal("USR1")
    await daemon.proto.wait_for("plugin_unloaded alpha reason=failed")
    assert "plugin_restarting" not in daemon.proto.text
    code, out, err = await daemon.cli("--json", "status")
    assert [r["name"] for r in json.loads(out)] == ["beta"]


# --- an operator's commands, through the real CLI -------------------------------------------


async def cli_in(home, *args: str):
    """
    Run the plugmgr CLI in C{home} with C{args} only (no C{--control}):
    (exit status, stdout, stderr).
    """
    from twisted.internet.utils import getProcessOutputAndValue

    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable, ["-m", "twisted_plugmgr.cli", *args], env=environment(),
        path=str(home)))
    return code, out.decode(), err.decode()


@pytest_twisted.ensureDeferred
async def test_available_marks_a_broken_file_with_its_error(shared):
    broken = shared.home / "plugins" / "broken.py"
    broken.write_text("def broken(:\n")
    try:
        code, out, err = await shared.cli("available")
        assert code == 0, err
        lines = out.splitlines()
        row = lines.index(next(line for line in lines if line.startswith("broken ")))
        assert lines[row].split() == ["broken", "broken"]
        assert lines[row + 1].strip() == "SyntaxError: invalid syntax (broken.py, line 1)"
        code, out, err = await shared.cli("--json", "available")
        entry = next(e for e in json.loads(out) if e["name"] == "broken")
        assert entry["status"] == "broken" and entry["path"] == str(broken)
    finally:
        broken.unlink()


@pytest_twisted.ensureDeferred
async def test_status_of_one_plugin(shared):
    code, out, err = await shared.cli("status", "beta")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "beta"]
    code, out, err = await shared.cli("status", "beta", "nope")
    assert (code, out) == (1, "")
    assert err == "plugmgr: status: plugin 'nope': no such plugin: not loaded\n"


@pytest_twisted.ensureDeferred
async def test_info_of_a_running_plugin(shared):
    code, out, err = await shared.cli("info", "alpha")
    assert code == 0, err
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
              for line in out.splitlines() if not line.startswith(" ") and ":" in line}
    assert (fields["name"], fields["version"], fields["state"]) == ("alpha", "1", "running")
    assert fields["description"] == "test plugin alpha"
    assert (fields["author"], fields["license"]) == ("tests", "MIT")
    assert fields["handles"] == "echo" and fields["restarts"] == "0"
    assert fields["old versions"] == "none alive"
    source = str(shared.home / "plugins" / "alpha.py")
    assert f"{source}: unchanged (what runs)" in " ".join(out.split())
    code, out, err = await shared.cli("--json", "info", "alpha")
    details = json.loads(out)
    assert details["files"] == [{"path": source, "status": "unchanged", "compile_error": None}]
    assert details["info"]["events"] == ["echo"]


@pytest_twisted.ensureDeferred
async def test_call_and_emit(shared):
    code, out, err = await shared.cli("call", "alpha", "echo")
    assert (code, out) == (0, '{"n": 1}\n'), err
    code, out, err = await shared.cli("--json", "call", "alpha", "echo")
    assert json.loads(out) == {"value": {"n": 1}}
    code, out, err = await shared.cli("emit", "echo")
    assert code == 0, err
    assert '{"n": 1}' in out.splitlines() and "null" in out.splitlines()


@pytest_twisted.ensureDeferred
async def test_call_of_a_handler_that_raises(shared):
    code, out, err = await shared.cli("call", "alpha", "echo", "unexpected")
    assert (code, out) == (1, "")
    assert err.startswith("plugmgr: call: plugin 'alpha': handler of 'echo' raised TypeError: ")
    assert err.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_ready_when_every_enabled_plugin_runs(shared):
    code, out, err = await shared.cli("ready")
    assert (code, out) == (0, "ready: 2 plugins running\n"), err


@pytest_twisted.ensureDeferred
async def test_json_errors_are_on_standard_output(shared):
    code, out, err = await shared.cli("--json", "unload", "nope")
    assert (code, err) == (1, "")
    assert json.loads(out) == {"error": "unload: plugin 'nope': no such plugin: not loaded",
                               "command": "unload", "exit_status": 1}


@pytest_twisted.ensureDeferred
async def test_a_config_file_with_a_syntax_error_does_not_lock_the_cli_out(shared):
    (shared.home / "broken.toml").write_text("[manager\n")
    code, out, err = await cli_in(shared.home, "--config", "broken.toml", "status")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]][:2] == ["alpha", "beta"]
    [warning] = err.splitlines()
    assert warning.startswith("plugmgr: warning: broken.toml: invalid TOML")
    assert warning.endswith(f"; connecting to unix:path={shared.socket}")
    code, out, err = await cli_in(shared.home, "--config", "broken.toml", "checkconfig")
    assert code == 1
    assert err.startswith("plugmgr: broken.toml: invalid TOML")


@pytest_twisted.ensureDeferred
async def test_checkconfig_gives_the_messages_of_the_start(shared):
    code, out, err = await cli_in(shared.home, "checkconfig", "plugmgr.toml")
    assert (code, err) == (0, "")
    assert out == (f"plugmgr.toml: ok: 2 plugins enabled (alpha, beta); control "
                   f"unix:path={shared.socket}\n")
    for config, message in BAD_CONFIGS:
        (shared.home / "bad.toml").write_text(config)
        code, out, err = await cli_in(shared.home, "checkconfig", "bad.toml")
        assert (code, out) == (1, ""), config
        assert err.startswith("plugmgr: " + message.replace("plugmgr.toml", "bad.toml")), err


#: A plugin whose version is held by a delayed call on the global reactor.
HELD = """
def startService(self):
    from twisted.internet import reactor

    Plugin.startService(self)
    reactor.callLater(3600, self.echo)
"""


@pytest_twisted.ensureDeferred
async def test_info_shows_old_versions_still_alive(shared):
    write_plugin(shared.home / "plugins", "held", body=HELD)
    assert (await shared.cli("load", "held"))[0] == 0
    try:
        write_plugin(shared.home / "plugins", "held", version="2", body=HELD)
        assert (await shared.cli("reload", "held"))[0] == 0
        code, out, err = await shared.cli("info", "held")
        assert code == 0, err
        old = out.split("old versions still alive:\n", 1)[1].splitlines()
        assert len(old) == 1 and " 1, retired " in old[0], out
        code, out, err = await shared.cli("--json", "info", "held")
        [text] = json.loads(out)["old_versions"]
        assert " 1, retired " in text
    finally:
        await shared.cli("unload", "held", "--mode", "immediate")


@pytest_twisted.ensureDeferred
async def test_reconfig_prints_what_changed_or_why_it_refused(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "nothing needed to change\n"), err
    write_config(tmp_path, """
        [manager]
        paths = ["plugins"]

        [plugins.alpha]
        data = { n = 2 }

        [plugins.gamma]
    """)
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "loaded: gamma\nunloaded: beta\nreloaded: alpha\n"), err
    code, out, err = await daemon.cli("--json", "status")
    assert [r["name"] for r in json.loads(out)] == ["alpha", "gamma"]
    write_config(tmp_path, "[manager\n")
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (1, "")
    assert err.startswith("plugmgr: reconfig: ") and "plugmgr.toml: invalid TOML" in err
    assert err.count("\n") == 1
    code, out, err = await daemon.cli("--json", "status")
    assert [r["name"] for r in json.loads(out)] == ["alpha", "gamma"]


@pytest_twisted.ensureDeferred
async def test_ready_names_an_enabled_plugin_that_is_not_running(tmp_path, daemons):
    home = make_home(tmp_path, BASE.replace("data = { n = 1 }\n",
                                            'data = { n = 1 }\nrestart = "no"\n'))
    write_plugin(home / "plugins", "alpha", body=FAIL_ON_USR1)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    assert (await daemon.cli("ready"))[0] == 0
    daemon.signal("USR1")
    await daemon.proto.wait_for("plugin_unloaded alpha reason=failed")
    code, out, err = await daemon.cli("ready")
    assert (code, out) == (1, "not ready: alpha (not loaded)\n"), err
    code, out, err = await daemon.cli("--json", "ready")
    assert code == 1
    assert json.loads(out) == {"ready": False,
                               "plugins": {"alpha": "not loaded", "beta": "running"}}


@pytest_twisted.ensureDeferred
async def test_reconfig_of_a_manager_without_a_config_file(tmp_path, daemons):
    home = make_home(tmp_path)
    daemon = Daemon(home, "--path", "plugins", "--load", "alpha")
    daemons.append(daemon)
    await daemon.ready()
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (1, "")
    assert err == ("plugmgr: reconfig: reconfig is not available: this manager was not "
                   "started from a config file\n")
    code, out, err = await daemon.cli("ready")
    assert (code, out) == (0, "ready: 1 plugin running\n"), err
