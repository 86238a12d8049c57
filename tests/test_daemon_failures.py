"""
How a real C{twist plugmgr} / C{twistd plugmgr} fails and what it logs: a
second instance on the same control socket (in the foreground, and under
C{twistd} forking into the background), an unknown plugin in a SIGHUP
config, the help text, and the startup and shutdown lines as journald
shows them.
"""

from __future__ import annotations

import re
import sys

import pytest_twisted
from _processes import BASE, Daemon, environment, make_home, timeout, write_config
from test_tap import help_faults
from twisted.internet.utils import getProcessOutputAndValue


async def start(home, daemons) -> Daemon:
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    return daemon


def in_use(home) -> str:
    return (f"plugmgr: control channel 'unix:path={home}/plugmgr.sock': {home}/plugmgr.sock "
            "is in use by a running process; not taking it over")


@pytest_twisted.ensureDeferred
async def test_a_second_twistd_in_the_background_says_so_in_one_line(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    first = await start(home, daemons)
    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable,
        ["-c", "from twisted.scripts.twistd import run; run()", "--pidfile=second.pid",
         "--logfile=second.log", "plugmgr", "--config", "plugmgr.toml"],
        env=environment(), path=str(home)))
    assert code == 1
    assert (out + err).decode().strip() == in_use(home)
    assert not (home / "second.pid").exists()
    # The first one goes on serving.
    assert (await first.cli("status"))[0] == 0


@pytest_twisted.ensureDeferred
async def test_a_second_twist_says_so_in_one_line(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    first = await start(home, daemons)
    second = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(second)
    assert await second.ended() == 1
    assert second.proto.text.strip() == in_use(home)
    assert (await first.cli("status"))[0] == 0


@pytest_twisted.ensureDeferred
async def test_twistd_help_has_no_layout_faults(tmp_path):
    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable, ["-c", "from twisted.scripts.twistd import run; run()", "plugmgr",
                         "--help"],
        env={**environment(), "COLUMNS": "80"}, path=str(tmp_path)))
    text = out.decode()
    assert code == 0, err
    assert help_faults(text) == [], text
    for option in ("--config=", "--control=", "--load=", "--package=", "--path=",
                   "--shutdown-mode=", "--watch"):
        assert option in text


@pytest_twisted.ensureDeferred
async def test_an_unknown_plugin_on_sighup_is_one_line(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    daemon = await start(home, daemons)
    write_config(home, BASE + "\n[plugins.nosuch]\n")
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig aborted, nothing changed")
    lines = [line for line in daemon.proto.text.splitlines() if "nosuch" in line]
    assert "Traceback" not in daemon.proto.text
    aborted = [line for line in lines if "reconfig aborted" in line]
    assert len(aborted) == 1
    errors = [line for line in daemon.proto.text.splitlines()
              if "#error]" in line or "#critical]" in line]
    assert errors == aborted
    assert aborted[0].endswith(f"reconfig aborted, nothing changed: plugin 'nosuch': no such "
                               f"plugin: not found in path {home}/plugins, the installed "
                               f"distributions' entry points (twisted_plugmgr.plugins)")
    assert (await daemon.cli("status"))[0] == 0


@pytest_twisted.ensureDeferred
async def test_startup_and_shutdown_lines_read_well(tmp_path, daemons):
    home = make_home(tmp_path, BASE + "\n[plugins.nosuch]\n")
    daemon = await start(home, daemons)
    daemon.signal("TERM")
    assert await daemon.ended() == 0
    ours = [re.sub(r"^\S+ \[[^]]+\] ", "", line) for line in daemon.proto.text.splitlines()
            if "[twisted_plugmgr._tap." in line or "[twisted_plugmgr._control." in line]
    assert ours[:3] == [
        f"control: listening on socket {home}/plugmgr.sock",
        f"plugmgr starting: config {home}/plugmgr.toml, control socket {home}/plugmgr.sock, "
        "3 plugins enabled",
        "plugmgr ready: 2 of 3 plugins loaded; failed: nosuch",
    ]
    assert ours[-3:] == ["received SIGTERM, shutting down (smart)",
                         "plugmgr stopping (smart shutdown)", "plugmgr stopped"]
    for line in ours:
        assert "b'" not in line and "unix:path=" not in line and "<" not in line, line
