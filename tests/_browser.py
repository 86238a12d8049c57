"""
What the web service's tests talk to it with: a small HTTP client (real
requests over loopback with Twisted's Agent, the session cookie kept as a
browser keeps it, no redirect followed, an event stream read as it comes),
and headless Chromium driven by selenium, its blocking calls run in a
thread so the reactor keeps turning.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

from tests._processes import TextWaiters, timeout

__all__ = ["Client", "Response", "Stream", "csrf_of", "Browser", "browser_missing", "CHROMIUM",
           "CHROMEDRIVER"]

#: Debian's chromium and chromium-driver (.ci/run installs them).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser_missing() -> Optional[str]:
    """
    Why the browser tests cannot run here, or L{None} if they can.
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install {package}; .ci/run installs it)"
    return None


class Browser:
    """
    One headless Chromium (per test module: starting one takes seconds).
    L{run} calls a function with the driver in a thread.
    """

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", f"--window-size={width},{height}"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def run(self, function, *args) -> Deferred:
        """
        C{function(driver, *args)} in a thread.
        """
        from twisted.internet.threads import deferToThread

        return timeout(deferToThread(function, self.driver, *args), 30)

    @staticmethod
    def until(driver, condition, seconds: float = 10):
        """
        Wait (in the browser's thread) until C{condition(driver)} is true.
        """
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            WebDriverException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        def attempt(d: Any) -> Any:
            try:
                return condition(d)
            except WebDriverException as e:
                # Chrome's word for a node a live update replaced between
                # finding it and using it: stale, said otherwise.
                if "does not belong to the document" in (e.msg or ""):
                    return False
                raise

        return WebDriverWait(driver, seconds, poll_frequency=0.05, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(attempt)

    def quit(self) -> None:
        self.driver.quit()


class Response:
    """
    What came back: status, headers (name lower case -> values), body.
    """

    def __init__(self, code: int, headers: Dict[str, List[str]], body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def csrf_of(page: str) -> str:
    """
    The CSRF token the page's forms carry.
    """
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


class Client:
    """
    A client of one web service, at C{base} (C{"http://127.0.0.1:PORT"}),
    connecting from C{source} (a loopback address such as C{"127.0.0.2"}:
    another client address, as the server sees it) when given.
    """

    def __init__(self, base: str, source: Optional[str] = None) -> None:
        self.base = base
        self.agent = Agent(reactor, bindAddress=(source, 0) if source else None)
        self.cookies: Dict[str, str] = {}
        self.set_cookies: List[str] = []

    def _headers(self, extra: Optional[Mapping[str, str]] = None) -> Headers:
        headers = Headers()
        if self.cookies:
            headers.addRawHeader(b"cookie", "; ".join(
                f"{k}={v}" for k, v in self.cookies.items()).encode())
        for name, value in (extra or {}).items():
            headers.addRawHeader(name.encode(), value.encode())
        return headers

    def _keep(self, response) -> Dict[str, List[str]]:
        headers = {k.decode().lower(): [v.decode() for v in vs]
                   for k, vs in response.headers.getAllRawHeaders()}
        for cookie in headers.get("set-cookie", []):
            self.set_cookies.append(cookie)
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return headers

    async def request(self, method: str, path: str, body: Optional[bytes] = None,
                      headers: Optional[Mapping[str, str]] = None) -> Response:
        extra = dict(headers or {})
        producer: Optional[IBodyProducer] = None
        if body is not None:
            producer = FileBodyProducer(io.BytesIO(body))
            extra.setdefault("content-type", "application/x-www-form-urlencoded")
        response = await timeout(self.agent.request(
            method.encode(), (self.base + path).encode(), self._headers(extra), producer))
        kept = self._keep(response)
        body = _Body()
        response.deliverBody(body)
        data = await timeout(body.done)
        return Response(response.code, kept, data)

    async def get(self, path: str, headers: Optional[Mapping[str, str]] = None) -> Response:
        return await self.request("GET", path, headers=headers)

    async def post(self, path: str, fields: Mapping[str, str]) -> Response:
        return await self.request("POST", path, urlencode(dict(fields)).encode())

    async def login(self, token: str) -> Response:
        page = await self.get("/")
        return await self.post("/login", {"token": token, "csrf": csrf_of(page.text)})

    async def act(self, action: str, plugin: str = "") -> Response:
        page = await self.get("/")
        return await self.post("/action", {"action": action, "plugin": plugin,
                                           "csrf": csrf_of(page.text)})

    async def stream(self, path: str = "/events",
                     headers: Optional[Mapping[str, str]] = None) -> Stream:
        stream = Stream()
        response = await timeout(self.agent.request(b"GET", (self.base + path).encode(),
                                                    self._headers(headers)))
        stream.code = response.code
        stream.content_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
        response.deliverBody(stream)
        return stream


class _Body(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.data)
        else:
            self.done.errback(reason)


class Stream(Protocol):
    """
    An event stream being read.
    """

    def __init__(self) -> None:
        self.data = b""
        self.code = 0
        self.content_type = ""
        self.closed: Deferred = Deferred()
        self.waiters = TextWaiters(lambda: self.text)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.waiters.check()

    def connectionLost(self, reason) -> None:
        self.waiters.fail_all("stream closed")
        self.reason = reason
        if not self.closed.called:
            self.closed.callback(None)

    def wait_for(self, text: str, count: int = 1) -> Deferred:
        return self.waiters.wait_for(text, count)

    def events(self) -> List[Tuple[str, str]]:
        """
        (event name, data) of each complete event so far.
        """
        out = []
        for block in self.text.split("\n\n"):
            name, data = "message", None
            for line in block.splitlines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
            if data is not None:
                out.append((name, data))
        return out

    def close(self) -> None:
        self.transport.stopProducing()
