"""
Reconfig end to end: C{twist plugmgr} runs as a subprocess, the C{plugmgr}
CLI (a subprocess too) edits nothing but asks it to re-read its file. A
refused reconfig changes nothing that C{plugmgr info} and C{plugmgr ready}
show, and is tried again; new isolation options of a plugin move it into a
worker process of its own (a reload) and back.

Every wait is bounded and event-driven (log lines, the CLI's answers).
"""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest_twisted
from _processes import BASE, Daemon, make_home, write_config, write_plugin

#: A startService that fails: the plugin's new version cannot start.
CANNOT_START = """
def startService(self):
    raise RuntimeError("beta 2 cannot start")
"""


async def start(home, daemons) -> Daemon:
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    return daemon


async def info(daemon: Daemon, name: str) -> Dict[str, Any]:
    code, out, err = await daemon.cli("--json", "info", name)
    assert code == 0, err
    details: Dict[str, Any] = json.loads(out)
    return details


def config(alpha: str = "", beta: str = "", manager: str = "") -> str:
    return (BASE.replace("paths = [\"plugins\"]\n", f"paths = [\"plugins\"]\n{manager}")
            .replace("[plugins.alpha]\n", f"[plugins.alpha]\n{alpha}")
            .replace("[plugins.beta]\n", f"[plugins.beta]\n{beta}"))


@pytest_twisted.ensureDeferred
async def test_a_refused_reconfig_changes_nothing_and_is_tried_again(tmp_path, daemons):
    home = make_home(tmp_path, config())
    daemon = await start(home, daemons)
    policy = (await info(daemon, "alpha"))["policy"]
    ready = await daemon.cli("--json", "ready")
    write_plugin(home / "plugins", "beta", body=CANNOT_START)
    write_config(home, config(alpha='restart = "always"\n', beta='data = "changed"\n',
                              manager='restart = "no"\n')
                 + "\n[plugins.delta]\n")
    for attempt in (1, 2):
        code, out, err = await daemon.cli("reconfig")
        assert (code, out) == (1, ""), err
        assert "beta 2 cannot start" in err and err.count("\n") == 1
        await daemon.proto.wait_for("reconfig aborted, nothing changed", count=attempt)
        # No policy, no plugin, no readiness changed.
        assert (await info(daemon, "alpha"))["policy"] == policy
        assert policy["restart"] == "on-failure"
        assert await daemon.cli("--json", "ready") == ready
        assert json.loads(ready[1])["plugins"] == {"alpha": "running", "beta": "running"}
        code, out, err = await daemon.cli("--json", "status")
        assert [row["name"] for row in json.loads(out)] == ["alpha", "beta"]
    write_plugin(home / "plugins", "beta")
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "loaded: delta\nreloaded: beta\nnew restart policy: alpha\n"
                              "the manager's restart policy changed\n"), err
    assert (await info(daemon, "alpha"))["policy"]["restart"] == "always"
    assert (await info(daemon, "delta"))["policy"]["restart"] == "no"


@pytest_twisted.ensureDeferred
async def test_reconfig_moves_a_plugin_into_a_worker_and_back(tmp_path, daemons):
    home = make_home(tmp_path, config())
    daemon = await start(home, daemons)
    manager_pid = daemon.transport.pid
    assert (await info(daemon, "alpha"))["info"]["isolated"] is False
    write_config(home, config(alpha="isolate = true\n"))
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "reloaded: alpha\n"), err
    await daemon.proto.wait_for("reconfig: alpha reloaded with isolate=True "
                                "(its state handed over)")
    row = (await info(daemon, "alpha"))["info"]
    assert row["isolated"] is True and row["pid"] not in (None, manager_pid)
    assert row["state"] == "running"
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "nothing needed to change\n"), err
    write_config(home, config())
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "reloaded: alpha\n"), err
    assert (await info(daemon, "alpha"))["info"]["isolated"] is False
