"""
The web service in the test process: a real PluginManager, a real
WebService on a loopback port, real HTTP over it (Twisted's Agent).
/metrics is parsed back with prometheus_client's own parser.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from tests._browser import Client, csrf_of
from tests._processes import timeout, write_plugin
from twisted_plugmgr import CompileFailed, PluginManager
from twisted_plugmgr._config import WebConfig
from twisted_plugmgr.web import (
    EndpointRefused,
    WebListenError,
    WebService,
    loopback_only,
    make_web_service,
)

TOKEN = "s3cret-token"

BODY = """
@handler()
def boom(self):
    raise ValueError("boom from the plugin")

@handler()
def later(self):
    from twisted.internet.defer import fail
    return fail(KeyError("async boom"))
"""


@pytest.fixture
def plugins(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    write_plugin(directory, "alpha", "1", BODY)
    write_plugin(directory, "beta", "1")
    return directory


@pytest_twisted.async_yield_fixture
async def running(plugins):
    """A started manager with alpha and beta, and a web service with a token."""
    manager = PluginManager(paths=[str(plugins)], reactor=reactor, old_code_grace=None)
    manager.startService()
    web = WebService(manager, "tcp:0:interface=127.0.0.1", TOKEN, reactor=reactor)
    web.startService()
    port = await timeout(web.when_listening())
    await manager.load("alpha", {"n": 1})
    await manager.load("beta")
    yield manager, web, Client(f"http://127.0.0.1:{port.getHost().port}")
    await web.stopService()
    await manager.stopService()


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, sample=None, **labels):
    """The value of the sample C{sample} (default: the family's name) with C{labels}."""
    family = fams[name]
    wanted = sample or name
    found = [s.value for s in family.samples if s.name == wanted and all(
        s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (wanted, labels, family.samples)
    return found[0]


async def scrape(client):
    response = await client.get("/metrics")
    assert response.code == 200
    assert response.header("content-type").startswith("text/plain")
    return families(response.text)


# -- the service ----------------------------------------------------------


def test_web_service_provides_iservice(tmp_path):
    manager = PluginManager(reactor=reactor)
    web = WebService(manager, "tcp:0:interface=127.0.0.1", reactor=reactor)
    assert verifyObject(IService, web)
    assert web.name == "web"


def test_make_web_service_from_the_config_section(tmp_path):
    manager = PluginManager(reactor=reactor)
    web = make_web_service(manager, WebConfig(endpoint="tcp:0:interface=127.0.0.1"), None,
                           reactor)
    assert verifyObject(IService, web)


@pytest.mark.parametrize("endpoint, local", [
    ("tcp:9180:interface=127.0.0.1", True),
    ("tcp:9180:interface=127.0.0.2", True),
    ("tcp6:9180:interface=\\:\\:1", True),
    ("unix:path=/tmp/web.sock", True),
    ("tcp:9180", False),
    ("tcp:9180:interface=0.0.0.0", False),
    ("tcp:9180:interface=192.168.1.5", False),
    ("tcp6:9180:interface=\\:\\:", False),
    ("ssl:9180:interface=10.0.0.1", False),
])
def test_loopback_only(endpoint, local):
    assert loopback_only(endpoint) is local


@pytest.mark.parametrize("endpoint", ["tcp:9180", "tcp:9180:interface=0.0.0.0"])
def test_an_exposed_endpoint_without_a_token_is_refused_naming_web(endpoint):
    manager = PluginManager(reactor=reactor)
    with pytest.raises(EndpointRefused) as info:
        WebService(manager, endpoint, None, reactor=reactor)
    assert info.value.endpoint == endpoint
    with pytest.raises(ValueError, match=r"\[web\] token") as info:
        make_web_service(manager, WebConfig(endpoint=endpoint), None, reactor)
    assert "\n" not in str(info.value)
    assert not manager.metrics.enabled  # nothing was started
    WebService(manager, endpoint, TOKEN, reactor=reactor)  # with a token: accepted


def test_a_blank_token_is_no_token():
    manager = PluginManager(reactor=reactor)
    with pytest.raises(EndpointRefused):
        WebService(manager, "tcp:9180", "  ", reactor=reactor)


def test_an_endpoint_twisted_cannot_parse_is_a_value_error_naming_web():
    manager = PluginManager(reactor=reactor)
    with pytest.raises(ValueError, match=r"\[web\] endpoint"):
        make_web_service(manager, WebConfig(endpoint="tcp:notaport:interface=127.0.0.1"),
                         None, reactor)


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_fails_the_start_and_leaves_nothing(running, logged_failures):
    manager, web, client = running
    port = web.address.port
    other = WebService(manager, f"tcp:{port}:interface=127.0.0.1", reactor=reactor)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        with pytest.raises(WebListenError, match="[Aa]ddress already in use") as caught:
            other.startService()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert caught.value.endpoint == f"tcp:{port}:interface=127.0.0.1"
    assert str(caught.value).startswith(f"endpoint 'tcp:{port}:interface=127.0.0.1' cannot")
    assert not other.running
    assert seen == []  # the caller says it (twist plugmgr: one line naming [web])
    await manager.reload("beta")
    assert other.feed.counts == {}  # it no longer hears the manager
    assert manager.metrics.enabled  # the first service still counts
    assert (await client.get("/metrics")).code == 200


@pytest_twisted.ensureDeferred
async def test_privileged_start_listens_and_start_then_serves(plugins):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    taken = WebService(manager, "tcp:0:interface=127.0.0.1", reactor=reactor)
    taken.privilegedStartService()  # listens, not started: nothing counted yet
    assert not taken.running and not manager.metrics.enabled
    try:
        taken.startService()  # uses the port privilegedStartService opened
        port = (await timeout(taken.when_listening())).getHost().port
        assert (await Client(f"http://127.0.0.1:{port}").get("/metrics")).code == 200
        again = WebService(manager, f"tcp:{port}:interface=127.0.0.1", reactor=reactor)
        with pytest.raises(WebListenError, match="already in use"):
            again.privilegedStartService()
        assert not again.running
    finally:
        await taken.stopService()
    # Listened (privileged) and stopped without a start: the port is closed.
    idle = WebService(manager, f"tcp:{port}:interface=127.0.0.1", reactor=reactor)
    idle.privilegedStartService()
    await timeout(idle.stopService())
    with pytest.raises(ConnectionRefusedError):
        await Client(f"http://127.0.0.1:{port}").get("/")
    assert not manager.metrics.enabled


# -- /metrics ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_metrics_count_calls_per_plugin_and_event(running):
    manager, web, client = running
    for _ in range(3):
        await manager.call("alpha", "echo")
    await manager.emit("echo")
    await manager.emit("echo")
    fams = await scrape(client)
    assert value(fams, "plugmgr_handler_calls", "plugmgr_handler_calls_total",
                 plugin="alpha", event="echo") == 5
    assert value(fams, "plugmgr_handler_calls", "plugmgr_handler_calls_total",
                 plugin="beta", event="echo") == 2
    assert value(fams, "plugmgr_handler_seconds", "plugmgr_handler_seconds_count",
                 plugin="alpha") == 5
    assert value(fams, "plugmgr_handler_seconds", "plugmgr_handler_seconds_bucket",
                 plugin="alpha", le="+Inf") == 5
    assert value(fams, "plugmgr_handler_seconds", "plugmgr_handler_seconds_sum",
                 plugin="alpha") >= 0
    assert value(fams, "plugmgr_plugin_up", plugin="alpha") == 1
    assert value(fams, "plugmgr_plugins", state="running") == 2
    assert value(fams, "plugmgr_plugins", state="quarantined") == 0
    assert value(fams, "plugmgr_held_messages", plugin="beta") == 0
    assert value(fams, "plugmgr_restarts", "plugmgr_restarts_total", plugin="alpha") == 0
    assert value(fams, "plugmgr_events", "plugmgr_events_total", kind="plugin_started") == 2


@pytest_twisted.ensureDeferred
async def test_metrics_count_handler_errors_sync_and_async(running, logged_failures):
    manager, web, client = running
    with pytest.raises(ValueError):
        await manager.call("alpha", "boom")
    with pytest.raises(KeyError):
        await manager.call("alpha", "later")
    await manager.emit("boom")
    logged_failures.flush(ValueError, KeyError)
    fams = await scrape(client)
    assert value(fams, "plugmgr_handler_errors", "plugmgr_handler_errors_total",
                 plugin="alpha") == 3
    assert value(fams, "plugmgr_handler_errors", "plugmgr_handler_errors_total",
                 plugin="beta") == 0
    assert value(fams, "plugmgr_handler_calls", "plugmgr_handler_calls_total",
                 plugin="alpha", event="boom") == 2
    assert value(fams, "plugmgr_events", "plugmgr_events_total", kind="plugin_error") == 3


@pytest_twisted.ensureDeferred
async def test_metrics_count_reloads_by_result_and_time_them(running, plugins,
                                                             logged_failures):
    manager, web, client = running
    write_plugin(plugins, "beta", "2")
    await manager.reload("beta")
    (plugins / "beta.py").write_text("this is not python(\n")
    with pytest.raises(CompileFailed):
        await manager.reload("beta")
    logged_failures.flush()
    fams = await scrape(client)
    assert value(fams, "plugmgr_reloads", "plugmgr_reloads_total",
                 plugin="beta", result="ok") == 1
    assert value(fams, "plugmgr_reloads", "plugmgr_reloads_total",
                 plugin="beta", result="failed") == 1
    assert value(fams, "plugmgr_reload_seconds", "plugmgr_reload_seconds_count") == 2
    assert value(fams, "plugmgr_reload_seconds", "plugmgr_reload_seconds_sum") > 0
    assert value(fams, "plugmgr_events", "plugmgr_events_total", kind="plugin_reloaded") == 1
    assert value(fams, "plugmgr_plugin_up", plugin="beta") == 1  # still serving


@pytest_twisted.ensureDeferred
async def test_metrics_gone_plugins_leave_the_scrape(running):
    manager, web, client = running
    await manager.unload("beta")
    fams = await scrape(client)
    assert all(s.labels.get("plugin") != "beta" for s in fams["plugmgr_plugin_up"].samples)
    assert value(fams, "plugmgr_plugins", state="running") == 1


@pytest_twisted.ensureDeferred
async def test_calls_are_counted_only_while_the_service_runs(plugins):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor, old_code_grace=None)
    manager.startService()
    await manager.load("beta")
    await manager.call("beta", "echo")  # not counted: metrics off
    assert not manager.metrics.enabled
    web = WebService(manager, "tcp:0:interface=127.0.0.1", reactor=reactor)
    web.startService()
    try:
        port = await timeout(web.when_listening())
        assert manager.metrics.enabled
        await manager.call("beta", "echo")
        fams = await scrape(Client(f"http://127.0.0.1:{port.getHost().port}"))
        assert value(fams, "plugmgr_handler_calls", "plugmgr_handler_calls_total",
                     plugin="beta", event="echo") == 1
    finally:
        await web.stopService()
    assert not manager.metrics.enabled
    assert manager.info("beta").calls == 2  # the table counts all the time
    await manager.stopService()


def test_the_global_registry_holds_no_plugmgr_metric():
    names = {f.name for f in REGISTRY.collect()}
    assert not any(name.startswith("plugmgr_") for name in names)


# -- /metrics behind the bearer token -------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_exposed_endpoint_needs_the_bearer_token_for_metrics(plugins):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    web = WebService(manager, "tcp:0:interface=0.0.0.0", TOKEN, reactor=reactor)
    web.startService()
    try:
        port = await timeout(web.when_listening())
        client = Client(f"http://127.0.0.1:{port.getHost().port}")
        refused = await client.get("/metrics")
        assert refused.code == 401
        assert refused.header("www-authenticate").startswith("Bearer")
        assert "plugmgr_" not in refused.text
        wrong = await client.get("/metrics", {"authorization": "Bearer nope"})
        assert wrong.code == 401
        ok = await client.get("/metrics", {"authorization": f"Bearer {TOKEN}"})
        assert ok.code == 200 and "plugmgr_plugins" in ok.text
    finally:
        await web.stopService()


@pytest_twisted.ensureDeferred
async def test_metrics_public_serves_metrics_without_the_token(plugins):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    web = WebService(manager, "tcp:0:interface=0.0.0.0", TOKEN, reactor=reactor,
                     metrics_public=True)
    web.startService()
    try:
        port = await timeout(web.when_listening())
        client = Client(f"http://127.0.0.1:{port.getHost().port}")
        assert (await client.get("/metrics")).code == 200
        assert (await client.act("reload", "beta")).code == 403  # actions still need it
    finally:
        await web.stopService()


@pytest_twisted.ensureDeferred
async def test_a_loopback_endpoint_serves_metrics_without_the_token(running):
    manager, web, client = running
    assert (await client.get("/metrics")).code == 200


# -- the page, the login, CSRF ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_page_shows_the_plugin_table_server_side(running):
    manager, web, client = running
    await manager.call("alpha", "echo")
    page = await client.get("/")
    assert page.code == 200
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.header("content-security-policy")
    for name in ("alpha", "beta"):
        assert f'id="plugin-{name}"' in page.text
    assert '<td class="state running">running</td>' in page.text
    assert "<svg" in page.text  # the charts
    assert 'id="events"' in page.text and "plugin_started" in page.text
    assert (await client.get("/dashboard.js")).code == 200


@pytest_twisted.ensureDeferred
async def test_the_session_cookie_is_httponly_and_samesite_strict(running):
    manager, web, client = running
    await client.get("/")
    cookie = client.set_cookies[-1]
    assert cookie.startswith("plugmgr_session=")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags


@pytest_twisted.ensureDeferred
async def test_login_with_the_token_gives_a_new_session(running):
    manager, web, client = running
    await client.get("/")
    before = client.cookies["plugmgr_session"]
    response = await client.login(TOKEN)
    assert response.code == 303
    assert client.cookies["plugmgr_session"] != before
    page = await client.get("/")
    assert "logged in" in page.text and 'id="logout"' in page.text


@pytest_twisted.ensureDeferred
async def test_login_with_a_wrong_token_is_refused(running):
    manager, web, client = running
    response = await client.login("wrong")
    assert response.code == 403
    assert '<p id="message" class="error"' in response.text and "wrong token" in response.text
    page = await client.get("/")
    assert 'id="login"' in page.text


@pytest_twisted.ensureDeferred
async def test_an_action_needs_a_login(running):
    manager, web, client = running
    response = await client.act("reload", "beta")
    assert response.code == 403
    assert "log in with the token first" in response.text
    assert manager.info("beta").reloads == 0


@pytest_twisted.ensureDeferred
async def test_an_action_without_the_right_csrf_token_is_refused(running):
    manager, web, client = running
    await client.login(TOKEN)
    for csrf in ("", "0" * 64):
        response = await client.post("/action", {"action": "reload", "plugin": "beta",
                                                 "csrf": csrf})
        assert response.code == 403
        assert "CSRF token is missing or wrong" in response.text
    other = Client(client.base)  # another session's token does not pass
    other_csrf = csrf_of((await other.get("/")).text)
    response = await client.post("/action", {"action": "reload", "plugin": "beta",
                                             "csrf": other_csrf})
    assert response.code == 403
    assert manager.info("beta").reloads == 0


@pytest_twisted.ensureDeferred
async def test_a_logged_in_reload_reloads_and_says_so(running):
    manager, web, client = running
    await client.login(TOKEN)
    response = await client.act("reload", "beta")
    assert response.code == 303
    assert manager.info("beta").reloads == 1
    page = await client.get("/")
    assert '<p id="message" class="ok"' in page.text and "reloaded beta (version 1)" in page.text
    assert 'id="message"' not in (await client.get("/")).text  # said once


@pytest_twisted.ensureDeferred
async def test_a_row_button_reloads(running):
    manager, web, client = running
    await client.login(TOKEN)
    page = await client.get("/")
    assert 'value="reload beta"' in page.text
    response = await client.post("/action", {"do": "reload beta", "csrf": csrf_of(page.text)})
    assert response.code == 303
    assert manager.info("beta").reloads == 1


@pytest_twisted.ensureDeferred
async def test_load_and_unload_from_the_dashboard(running, plugins):
    manager, web, client = running
    write_plugin(plugins, "gamma", "3")
    await client.login(TOKEN)
    assert (await client.act("load", "gamma")).code == 303
    assert manager.info("gamma").version == "3"
    assert "loaded gamma (version 3)" in (await client.get("/")).text
    assert (await client.act("unload", "gamma")).code == 303
    assert "gamma" not in manager.plugin_table()


@pytest.mark.parametrize("action, plugin, status, line", [
    ("frobnicate", "beta", 400, "unknown action &#x27;frobnicate&#x27;"),
    ("reload", "", 400, "reload: which plugin?"),
    ("load", "../etc", 409, "load failed:"),
    ("load", "alpha", 409, "load failed:"),
    ("reload", "nosuch", 409, "reload failed:"),
    ("unload", "nosuch", 409, "unload failed:"),
    ("reconfig", "", 409, "no config file"),
])
@pytest_twisted.ensureDeferred
async def test_bad_form_input_is_one_line_on_the_page_and_changes_nothing(
        running, action, plugin, status, line, logged_failures):
    manager, web, client = running
    await client.login(TOKEN)
    before = {name: (info.state, info.reloads) for name, info in manager.plugin_table().items()}
    response = await client.act(action, plugin)
    logged_failures.flush()
    assert response.code == status
    messages = [row for row in response.text.splitlines() if 'id="message"' in row]
    assert len(messages) == 1 and line in messages[0], messages
    after = {name: (info.state, info.reloads) for name, info in manager.plugin_table().items()}
    assert after == before


@pytest_twisted.ensureDeferred
async def test_a_form_that_is_not_utf8_is_refused(running):
    manager, web, client = running
    await client.login(TOKEN)
    csrf = csrf_of((await client.get("/")).text)
    response = await client.request(
        "POST", "/action", b"action=reload&plugin=%ff%fe&csrf=" + csrf.encode())
    assert response.code == 400
    assert "not UTF-8" in response.text


@pytest_twisted.ensureDeferred
async def test_reconfig_calls_what_it_was_given(plugins):
    from twisted.internet.defer import fail, succeed

    from twisted_plugmgr._reconfig import ReconfigOutcome, ReconfigRefused

    outcomes = [succeed(ReconfigOutcome(reloaded=("beta",))),
                fail(ReconfigRefused("plugmgr.toml: manager.watch: expected true or false"))]
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    web = WebService(manager, "tcp:0:interface=127.0.0.1", TOKEN, reactor=reactor,
                     reconfig=lambda: outcomes.pop(0))
    web.startService()
    try:
        port = await timeout(web.when_listening())
        client = Client(f"http://127.0.0.1:{port.getHost().port}")
        await client.login(TOKEN)
        assert 'id="reconfig"' in (await client.get("/")).text
        assert (await client.act("reconfig")).code == 303
        assert "reconfig: reloaded beta" in (await client.get("/")).text
        refused = await client.act("reconfig")
        assert refused.code == 409
        assert "reconfig refused: plugmgr.toml: manager.watch" in refused.text
    finally:
        await web.stopService()


@pytest_twisted.ensureDeferred
async def test_without_a_token_the_dashboard_is_read_only(plugins):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    manager.startService()
    await manager.load("beta")
    web = WebService(manager, "tcp:0:interface=127.0.0.1", reactor=reactor)
    web.startService()
    try:
        port = await timeout(web.when_listening())
        client = Client(f"http://127.0.0.1:{port.getHost().port}")
        page = await client.get("/")
        assert "read-only" in page.text
        assert 'id="login"' not in page.text and 'value="reload beta"' not in page.text
        response = await client.post("/action", {"action": "reload", "plugin": "beta",
                                                 "csrf": "x"})
        assert response.code == 403 and "read-only" in response.text
        assert (await client.post("/login", {"token": "anything", "csrf": "x"})).code == 403
        assert manager.info("beta").reloads == 0
    finally:
        await web.stopService()
        await manager.stopService()


# -- the event stream, and what stopping closes ----------------------------


@pytest_twisted.ensureDeferred
async def test_the_event_stream_pushes_events_and_table_updates(running):
    manager, web, client = running
    stream = await client.stream()
    assert stream.code == 200 and stream.content_type.startswith("text/event-stream")
    await stream.wait_for("retry:")
    await manager.reload("beta")
    await stream.wait_for('"kind":"plugin_reloaded"')
    await stream.wait_for("event: table")
    names = [name for name, _ in stream.events()]
    assert "plugin" in names and "table" in names
    stream.close()
    await timeout(stream.closed)


@pytest_twisted.ensureDeferred
async def test_the_event_stream_replays_what_a_reconnecting_page_missed(running):
    manager, web, client = running
    await manager.reload("beta")
    stream = await client.stream("/events?since=0")
    await stream.wait_for('"kind":"plugin_started"', count=2)
    await stream.wait_for('"kind":"plugin_reloaded"')
    stream.close()


@pytest_twisted.ensureDeferred
async def test_a_closed_page_leaves_no_stream_behind(running):
    manager, web, client = running
    streams = [await client.stream() for _ in range(3)]
    for stream in streams:
        await stream.wait_for("retry:")
    assert web.feed.streams == 3
    for stream in streams:
        stream.close()
        await timeout(stream.closed)
    await timeout(web.feed.when_streams(0))
    await manager.reload("beta")  # nothing is written to them
    assert web.feed.streams == 0
    assert (await client.get("/metrics")).code == 200


@pytest_twisted.ensureDeferred
async def test_stopping_ends_the_streams_and_closes_the_connections(plugins):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    web = WebService(manager, "tcp:0:interface=127.0.0.1", reactor=reactor)
    web.startService()
    port = await timeout(web.when_listening())
    client = Client(f"http://127.0.0.1:{port.getHost().port}")
    stream = await client.stream()
    await stream.wait_for("retry:")
    await timeout(web.stopService())
    await timeout(stream.closed)
    assert web.feed.streams == 0
    assert not web.site.channels
    with pytest.raises(ConnectionRefusedError):
        await client.get("/")  # nothing listens any more
    assert not manager.metrics.enabled


@pytest_twisted.ensureDeferred
async def test_requests_are_not_logged(running):
    manager, web, client = running
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        for path in ("/", "/metrics", "/dashboard.js", "/nosuch"):
            await client.get(path)
        stream = await client.stream()
        await stream.wait_for("retry:")
        stream.close()
        await timeout(stream.closed)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    server_side = [e for e in seen if not e.get("log_namespace", "").startswith(
        "twisted.web.client")]  # the test's own Agent
    assert server_side == []


@pytest_twisted.ensureDeferred
async def test_an_unexpected_failure_is_one_line_on_the_page_and_logged(plugins,
                                                                       logged_failures):
    def broken():
        raise RuntimeError("the reconfig machinery broke")

    manager = PluginManager(paths=[str(plugins)], reactor=reactor)
    web = WebService(manager, "tcp:0:interface=127.0.0.1", TOKEN, reactor=reactor,
                     reconfig=broken)
    web.startService()
    try:
        port = await timeout(web.when_listening())
        client = Client(f"http://127.0.0.1:{port.getHost().port}")
        await client.login(TOKEN)
        response = await client.act("reconfig")
        assert response.code == 500
        messages = [row for row in response.text.splitlines() if 'id="message"' in row]
        assert len(messages) == 1
        assert "reconfig failed: RuntimeError: the reconfig machinery broke" in messages[0]
        assert "Traceback" not in response.text
        assert len(logged_failures.flush(RuntimeError)) == 1  # for whoever debugs it
    finally:
        await web.stopService()
