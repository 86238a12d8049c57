"""
The web service started by a real C{twist plugmgr} from the C{[web]}
section of its config file: /metrics after calls and reloads made through
the real CLI, the token taken from C{[manager]} when C{[web]} has none, and
an endpoint reachable from other hosts refused at start.
"""

from __future__ import annotations

import re

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from tests._browser import Client
from tests._processes import BASE, Daemon, make_home


def scraped(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def start(tmp_path, web: str, manager_extra: str = "") -> Daemon:
    config = BASE.replace("[manager]\n", f"[manager]\n{manager_extra}") + f"\n[web]\n{web}\n"
    home = make_home(tmp_path, config)
    daemon = Daemon(home, "--config", str(home / "plugmgr.toml"))
    await daemon.ready()
    await daemon.proto.wait_for("web: dashboard and /metrics on http://")
    daemon.url = re.search(r"on (http://\S+)/", daemon.proto.text).group(1)
    return daemon


async def stop(daemon: Daemon) -> None:
    daemon.signal("TERM")
    assert await daemon.ended() == 0


@pytest_twisted.ensureDeferred
async def test_metrics_of_the_daemon_after_cli_calls_and_reloads(tmp_path):
    daemon = await start(tmp_path, 'endpoint = "tcp:0:interface=127.0.0.1"')
    try:
        for _ in range(3):
            code, out, err = await daemon.cli("call", "alpha", "echo")
            assert code == 0, err
        code, out, err = await daemon.cli("reload", "beta")
        assert code == 0, err
        (tmp_path / "plugins" / "beta.py").write_text("not python(\n")
        code, out, err = await daemon.cli("reload", "beta")
        assert code != 0
        response = await Client(daemon.url).get("/metrics")
        assert response.code == 200
        values = scraped(response.text)
        assert values[("plugmgr_handler_calls_total",
                       (("event", "echo"), ("plugin", "alpha")))] == 3
        assert values[("plugmgr_reloads_total", (("plugin", "beta"), ("result", "ok")))] == 1
        assert values[("plugmgr_reloads_total",
                       (("plugin", "beta"), ("result", "failed")))] == 1
        assert values[("plugmgr_plugins", (("state", "running"),))] == 2
        assert values[("plugmgr_plugin_up", (("plugin", "beta"),))] == 1
        assert values[("plugmgr_events_total", (("kind", "plugin_started"),))] == 2
        page = await Client(daemon.url).get("/")
        assert 'id="plugin-alpha"' in page.text and 'id="reconfig"' not in page.text  # no token
        assert "GET /" not in daemon.proto.text  # no line per request
    finally:
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_the_manager_control_token_guards_an_exposed_endpoint(tmp_path):
    daemon = await start(tmp_path, 'endpoint = "tcp:0:interface=0.0.0.0"',
                         'control_token = "the-control-token"\n')
    try:
        client = Client(daemon.url.replace("0.0.0.0", "127.0.0.1"))
        assert (await client.get("/metrics")).code == 401
        ok = await client.get("/metrics", {"authorization": "Bearer the-control-token"})
        assert ok.code == 200 and "plugmgr_plugins" in ok.text
        assert (await client.login("the-control-token")).code == 303
        assert 'id="reconfig"' in (await client.get("/")).text
    finally:
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_an_exposed_endpoint_without_a_token_is_refused_at_start(tmp_path):
    config = BASE + '\n[web]\nendpoint = "tcp:0"\n'
    home = make_home(tmp_path, config)
    daemon = Daemon(home, "--config", str(home / "plugmgr.toml"))
    status = await daemon.ended()
    assert status not in (0, None)
    text = daemon.proto.text
    lines = [line for line in text.splitlines() if "reachable from other hosts" in line]
    assert len(lines) == 1 and "[web]" in lines[0], text
    assert "Traceback" not in text
    assert "plugin_started" not in text  # nothing was started
