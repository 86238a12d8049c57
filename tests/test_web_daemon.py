"""
The web service started by a real C{twist plugmgr} from the C{[web]}
section of its config file: /metrics after calls and reloads made through
the real CLI, the token taken from C{[manager]} when C{[web]} has none, and
an endpoint reachable from other hosts refused at start.
"""

from __future__ import annotations

import re
import socket
import sys

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.utils import getProcessOutputAndValue

from tests._browser import Client
from tests._processes import BASE, Daemon, environment, make_home, timeout


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


@pytest_twisted.ensureDeferred
async def test_a_web_port_in_use_fails_the_start_in_one_line_naming_web(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        config = BASE + f'\n[web]\nendpoint = "tcp:{port}:interface=127.0.0.1"\n'
        home = make_home(tmp_path, config)
        daemon = Daemon(home, "--config", str(home / "plugmgr.toml"))
        status = await daemon.ended()
    finally:
        taken.close()
    assert status == 1
    text = daemon.proto.text
    lines = [line for line in text.splitlines() if "cannot listen" in line]
    assert len(lines) == 1, text
    assert "[web]" in lines[0] and f"tcp:{port}" in lines[0], text
    assert "Traceback" not in text
    assert "plugin_started" not in text and "plugmgr ready" not in text  # nothing started
    # The control channel was closed again: a new start can take its socket over.
    probe = socket.socket(socket.AF_UNIX)
    try:
        assert probe.connect_ex(str(home / "plugmgr.sock")) != 0
    finally:
        probe.close()


@pytest_twisted.ensureDeferred
async def test_under_twistd_a_web_port_in_use_fails_the_start_in_one_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        config = BASE + f'\n[web]\nendpoint = "tcp:{port}:interface=127.0.0.1"\n'
        home = make_home(tmp_path, config)
        out, err, code = await timeout(getProcessOutputAndValue(
            sys.executable,
            ["-c", "from twisted.scripts.twistd import run; run()", "--pidfile=twistd.pid",
             "--logfile=twistd.log", "plugmgr", "--config", "plugmgr.toml"],
            env=environment(), path=str(home)))
    finally:
        taken.close()
    assert code == 1
    text = (out + err).decode().strip()
    assert len(text.splitlines()) == 1, text
    assert "[web]" in text and f"tcp:{port}" in text and "cannot listen" in text
    assert not (home / "twistd.pid").exists()
    assert not (home / "twistd.log").exists()  # refused before it forked: nothing ran


@pytest.mark.parametrize("phase", ["startService", "privilegedStartService"])
@pytest_twisted.ensureDeferred
async def test_a_port_taken_after_the_check_fails_the_start_and_closes_control(
        tmp_path, monkeypatch, phase):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from twisted_plugmgr._settings import StartupError
    from twisted_plugmgr._tap import Options, makeService

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    config = BASE + f'\n[web]\nendpoint = "tcp:{port}:interface=127.0.0.1"\n'
    home = make_home(tmp_path, config)
    monkeypatch.chdir(home)
    options = Options()
    options.parseOptions(["--config", str(home / "plugmgr.toml")])
    service = makeService(options, reactor)  # the port is free: the check passes
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen(1)
    try:
        with pytest.raises(StartupError) as caught:
            getattr(service, phase)()
    finally:
        taken.close()
    message = caught.value.message
    assert "[web]" in message and f"tcp:{port}" in message and "cannot listen" in message
    assert "\n" not in message
    manager = service.getServiceNamed("manager")
    assert not manager.running and manager.plugin_table() == {}
    await deferLater(reactor, 0.05, lambda: None)  # the control port's close
    probe = socket.socket(socket.AF_UNIX)
    try:
        assert probe.connect_ex(str(home / "plugmgr.sock")) != 0
    finally:
        probe.close()
