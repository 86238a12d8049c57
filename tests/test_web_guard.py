"""
The web service on an endpoint reachable from other hosts: the page and
C{/events} behind the login, wrong tokens throttled per client address,
the cookie's C{Secure} flag, and the event streams bounded (how many, and
how much may wait for one that does not read). Real HTTP over loopback;
the throttle's window on a L{Clock}.
"""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests._browser import Client
from tests._processes import timeout, write_plugin
from twisted_plugmgr import PluginManager
from twisted_plugmgr.web import WebService
from twisted_plugmgr.web._auth import FAILURES, WINDOW, Sessions, Throttle

TOKEN = "s3cret-token"


@pytest.fixture
def plugins(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    write_plugin(directory, "alpha", "1")
    return directory


async def serve(plugins, endpoint="tcp:0:interface=0.0.0.0", **kw):
    manager = PluginManager(paths=[str(plugins)], reactor=reactor, old_code_grace=None)
    manager.startService()
    web = WebService(manager, endpoint, TOKEN, reactor=reactor, **kw)
    web.startService()
    port = await timeout(web.when_listening())
    await manager.load("alpha")
    return manager, web, port.getHost().port


@pytest_twisted.async_yield_fixture
async def exposed(plugins):
    """A web service on 0.0.0.0 (reachable from other hosts), with a token."""
    seen = []
    globalLogPublisher.addObserver(seen.append)
    manager, web, port = await serve(plugins)
    yield manager, web, port, seen
    globalLogPublisher.removeObserver(seen.append)
    await web.stopService()
    await manager.stopService()


def client(port, source=None):
    return Client(f"http://127.0.0.1:{port}", source)


def logged(seen, text):
    return [e for e in seen if text in str(e.get("log_format", ""))]


# -- the page and /events need the login ------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_exposed_page_is_the_login_form_alone_until_logged_in(exposed):
    manager, web, port, seen = exposed
    await manager.reload("alpha")  # an event the page would show
    anonymous = client(port)
    page = await anonymous.get("/")
    assert page.code == 200
    assert 'id="login"' in page.text and 'id="private"' in page.text
    for shown in ('id="plugin-alpha"', "alpha", "plugin_reloaded", "dashboard.js", 'id="rows"'):
        assert shown not in page.text
    wrong = await anonymous.login("wrong")
    assert wrong.code == 403 and "wrong token" in wrong.text and "alpha" not in wrong.text
    assert (await anonymous.login(TOKEN)).code == 303
    page = await anonymous.get("/")
    assert 'id="plugin-alpha"' in page.text and "plugin_reloaded" in page.text


@pytest_twisted.ensureDeferred
async def test_an_exposed_page_takes_the_bearer_token_too(exposed):
    manager, web, port, seen = exposed
    page = await client(port).get("/", {"authorization": f"Bearer {TOKEN}"})
    assert page.code == 200 and 'id="plugin-alpha"' in page.text


@pytest_twisted.ensureDeferred
async def test_exposed_events_need_a_login_or_the_bearer_token(exposed):
    manager, web, port, seen = exposed
    anonymous = client(port)
    refused = await anonymous.get("/events?since=0")
    assert refused.code == 401
    assert refused.header("www-authenticate").startswith("Bearer")
    assert "plugin_started" not in refused.text
    assert web.feed.streams == 0
    assert (await client(port).get("/events", {"authorization": "Bearer wrong"})).code == 401
    with_token = await client(port).stream("/events?since=0",
                                           {"authorization": f"Bearer {TOKEN}"})
    assert with_token.code == 200
    await with_token.wait_for('"kind":"plugin_started"')
    with_token.close()
    await timeout(with_token.closed)
    await anonymous.login(TOKEN)
    stream = await anonymous.stream("/events?since=0")
    assert stream.code == 200
    await stream.wait_for('"kind":"plugin_started"')
    stream.close()
    await timeout(stream.closed)


@pytest_twisted.ensureDeferred
async def test_a_loopback_page_needs_no_login(plugins):
    manager, web, port = await serve(plugins, "tcp:0:interface=127.0.0.1")
    try:
        page = await client(port).get("/")
        assert 'id="plugin-alpha"' in page.text and 'id="login"' in page.text
        stream = await client(port).stream()
        assert stream.code == 200
        stream.close()
        await timeout(stream.closed)
    finally:
        await web.stopService()
        await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_plain_tcp_off_loopback_warns_once_that_the_token_is_cleartext(exposed):
    manager, web, port, seen = exposed
    # The warning came at listening, before the observer: start another one.
    other = WebService(manager, "tcp:0:interface=0.0.0.0", TOKEN, reactor=reactor)
    mine = []
    globalLogPublisher.addObserver(mine.append)
    try:
        other.startService()
        await timeout(other.when_listening())
    finally:
        globalLogPublisher.removeObserver(mine.append)
        await other.stopService()
    assert len(logged(mine, "cleartext")) == 1
    loopback = WebService(manager, "tcp:0:interface=127.0.0.1", TOKEN, reactor=reactor)
    mine.clear()
    globalLogPublisher.addObserver(mine.append)
    try:
        loopback.startService()
        await timeout(loopback.when_listening())
    finally:
        globalLogPublisher.removeObserver(mine.append)
        await loopback.stopService()
    assert logged(mine, "cleartext") == []


# -- wrong tokens throttled -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wrong_logins_are_throttled_per_address_with_429_and_one_line(exposed):
    manager, web, port, seen = exposed
    guesser = client(port)
    for _ in range(FAILURES):
        assert (await guesser.login("guess")).code == 403
    refused = await guesser.login(TOKEN)  # even the right one, now
    assert refused.code == 429
    assert 0 < int(refused.header("retry-after")) <= WINDOW
    assert "too many wrong tokens" in refused.text and 'id="plugin-alpha"' not in refused.text
    assert (await guesser.get("/")).code == 200  # the login form still shows
    assert len(logged(seen, "wrong tokens from")) == 1
    event = logged(seen, "wrong tokens from")[0]
    assert event["client"] == "127.0.0.1" and event["what"] == "login"
    # Another address is not held back.
    other = client(port, "127.0.0.2")
    assert (await other.login(TOKEN)).code == 303
    assert 'id="plugin-alpha"' in (await other.get("/")).text
    assert len(logged(seen, "wrong tokens from")) == 1


@pytest_twisted.ensureDeferred
async def test_wrong_bearer_tokens_are_throttled_too(plugins):
    manager, web, port = await serve(plugins)
    try:
        guesser = client(port)
        for _ in range(FAILURES):
            assert (await guesser.get("/metrics", {"authorization": "Bearer nope"})).code == 401
        for path in ("/metrics", "/events", "/"):
            answer = await guesser.get(path, {"authorization": f"Bearer {TOKEN}"})
            assert answer.code == 429, path
            assert answer.header("retry-after")
        assert (await guesser.get("/metrics")).code == 401  # no token: not counted, no 429
        ok = await client(port, "127.0.0.3").get(
            "/metrics", {"authorization": f"Bearer {TOKEN}"})
        assert ok.code == 200
    finally:
        await web.stopService()
        await manager.stopService()


def test_the_throttle_lets_an_address_try_again_once_its_failures_age():
    clock = Clock()
    throttle = Throttle(clock, failures=3, window=60.0)
    for _ in range(2):
        throttle.failed("10.0.0.1", "login")
        clock.advance(10)
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1", "login")
    assert throttle.retry_after("10.0.0.1") == 40  # the first failure was 20 s ago
    assert throttle.retry_after("10.0.0.2") is None
    clock.advance(39)
    assert throttle.retry_after("10.0.0.1") == 1
    clock.advance(1)
    assert throttle.retry_after("10.0.0.1") is None  # two failures in the window now
    throttle.failed("10.0.0.1", "login")
    assert throttle.retry_after("10.0.0.1") == 10


# -- CSRF field that is not ASCII (finding 12) ------------------------------


@pytest.mark.parametrize("path", ["/login", "/logout", "/action"])
@pytest_twisted.ensureDeferred
async def test_a_csrf_field_that_is_not_ascii_is_refused_not_a_crash(exposed, path,
                                                                    logged_failures):
    manager, web, port, seen = exposed
    c = client(port)
    await c.get("/")
    response = await c.post(path, {"csrf": "\u00e9", "token": TOKEN, "action": "reload",
                                   "plugin": "alpha"})
    assert response.code == 403
    assert "CSRF token is missing or wrong" in response.text
    assert logged_failures.flush() == []
    assert manager.info("alpha").reloads == 0


# -- the Secure cookie -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_cookie_is_secure_when_asked_and_only_then():
    class Give(Resource):
        isLeaf = True

        def __init__(self, sessions):
            super().__init__()
            self.sessions = sessions

        def render_GET(self, request):
            self.sessions.session(request)
            return b"ok"

    cookies = {}
    for secure in (True, False):
        port = reactor.listenTCP(0, Site(Give(Sessions(TOKEN, reactor, secure=secure))),
                                 interface="127.0.0.1")
        try:
            c = client(port.getHost().port)
            await c.get("/")
            cookies[secure] = [p.strip().lower() for p in c.set_cookies[-1].split(";")]
        finally:
            await port.stopListening()
    assert "secure" in cookies[True] and "httponly" in cookies[True]
    assert "secure" not in cookies[False]


# -- the event streams are bounded -----------------------------------------


@pytest_twisted.ensureDeferred
async def test_at_most_max_streams_event_streams(plugins):
    manager, web, port = await serve(plugins, "tcp:0:interface=127.0.0.1", max_streams=2)
    try:
        streams = [await client(port).stream() for _ in range(2)]
        for stream in streams:
            await stream.wait_for("retry:")
        refused = await client(port).get("/events")
        assert refused.code == 503 and refused.header("retry-after")
        assert "too many event streams open (at most 2)" in refused.text
        assert web.feed.streams == 2
        streams[0].close()
        await timeout(web.feed.when_streams(1))
        again = await client(port).stream()
        assert again.code == 200
        await again.wait_for("retry:")
        for stream in (streams[1], again):
            stream.close()
        await timeout(web.feed.when_streams(0))
    finally:
        await web.stopService()
        await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stream_that_does_not_read_is_dropped_and_the_others_go_on(plugins):
    manager, web, port = await serve(plugins, "tcp:0:interface=127.0.0.1",
                                     max_backlog=64 * 1024)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        await timeout(web.feed.when_streams(1))
        reader = await client(port).stream()
        await reader.wait_for("retry:")
        assert web.feed.streams == 2
        payload = {"pad": "x" * 8192}
        for _ in range(2000):  # up to 16 MB: far more than the socket buffers hold
            web.feed.send("table", payload)
            if web.feed.streams == 1:
                break
            await deferLater(reactor, 0, lambda: None)
        await timeout(web.feed.when_streams(1))
        assert len(logged(seen, "dropped the event stream")) == 1
        await manager.reload("alpha")  # the reading one still gets events
        await reader.wait_for('"kind":"plugin_reloaded"')
        reader.close()
        await timeout(web.feed.when_streams(0))
    finally:
        globalLogPublisher.removeObserver(seen.append)
        stalled.close()
        await web.stopService()
        await manager.stopService()
