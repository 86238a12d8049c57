"""
What the web service hears from the manager: every event counted by kind,
reloads counted by result, the recent events and the reload history kept
for the page, and the Server-Sent Events streams they are pushed to.

The streams are bounded: at most C{max_streams} at once (more are answered
503), and a stream whose client stops reading is dropped once
C{max_backlog} bytes wait for it beyond what its transport would take.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Deque, Dict, List, Optional, Tuple

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .._events import PluginEvent, safe_str
from ._auth import Sessions, client_of

__all__ = ["EventRow", "ReloadRow", "EventFeed", "EventStream", "describe_event",
           "MAX_STREAMS", "MAX_BACKLOG"]

#: Event streams open at once, at most.
MAX_STREAMS = 32

#: Bytes that may wait for a stream whose transport stopped taking more.
MAX_BACKLOG = 256 * 1024

_log = Logger(namespace="twisted_plugmgr.web")


@implementer(IPushProducer)
class _Gate:
    """
    What a stream's transport says about its buffer: paused when it is
    full, and the bytes written to it since.
    """

    def __init__(self) -> None:
        self.paused = False
        self.backlog = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.backlog = 0

    def stopProducing(self) -> None:
        self.paused = True


@attr.s(frozen=True, slots=True, auto_attribs=True)
class EventRow:
    """
    One event as the page shows it.

    @ivar id: its number, counted from 1 (the SSE event id).
    @ivar at: the reactor time it came at.
    @ivar kind: its kind (C{"plugin_reloaded"}...).
    @ivar plugin: the plugin concerned, or L{None}.
    @ivar text: one line about it.
    """

    id: int
    at: float
    kind: str
    plugin: Optional[str]
    text: str

    def json(self) -> Dict[str, Any]:
        """
        It as a JSON object.
        """
        return {"id": self.id, "at": self.at, "kind": self.kind, "plugin": self.plugin,
                "text": self.text}


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ReloadRow:
    """
    One reload of the history.

    @ivar at: the reactor time it ended at.
    @ivar plugin: the plugin reloaded.
    @ivar result: C{"ok"} or C{"failed"}.
    @ivar detail: the versions (C{"1.0 -> 1.1"}), or why it failed.
    """

    at: float
    plugin: str
    result: str
    detail: str


def describe_event(event: PluginEvent) -> str:
    """
    One line about C{event}: its message, its failure's, its versions...
    """
    if event.kind == "plugin_reloaded":
        return f"{event.old_version} -> {event.new_version}"
    if event.message:
        return _one_line(event.message)
    if event.failure is not None:
        return _one_line(f"{event.failure.type.__name__}: {event.failure.getErrorMessage()}")
    parts = [f"{name}={value}" for name, value in (
        ("reason", event.reason), ("cause", event.cause), ("count", event.count),
        ("attempt", event.attempt), ("delay", event.delay), ("path", event.path))
        if value is not None]
    return " ".join(parts)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class EventFeed:
    """
    A listener of one manager: counts, keeps and pushes what it hears.

    @param reactor: where event times come from.
    @param keep: how many recent events are kept.
    @param history: how many reloads the history keeps.
    @param max_streams: how many event streams may be open at once.
    @param max_backlog: bytes that may wait for a stream whose transport
        is full before it is dropped.

    @ivar counts: event kind -> how many were heard.
    @ivar reloads: (plugin, C{"ok"} or C{"failed"}) -> how many.
    @ivar recent: the last events, oldest first.
    @ivar history: the last reloads, oldest first.
    """

    def __init__(self, reactor: IReactorTime, keep: int = 200, history: int = 50,
                 max_streams: int = MAX_STREAMS, max_backlog: int = MAX_BACKLOG) -> None:
        self._reactor = reactor
        self.max_streams = max_streams
        self.max_backlog = max_backlog
        self.counts: Dict[str, int] = {}
        self.reloads: Dict[Tuple[str, str], int] = {}
        self.recent: Deque[EventRow] = collections.deque(maxlen=keep)
        self.history: Deque[ReloadRow] = collections.deque(maxlen=history)
        self._streams: Dict[Request, _Gate] = {}
        self._count_waiters: List[Tuple[int, Deferred[None]]] = []
        self._last_id = 0
        self.changed: Any = None  # called with no argument after each event

    def __call__(self, event: PluginEvent) -> None:
        kind = event.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        plugin = safe_str(event.plugin)
        text = describe_event(event)
        if kind in ("plugin_reloaded", "plugin_reload_failed") and plugin is not None:
            result = "ok" if kind == "plugin_reloaded" else "failed"
            self.reloads[(plugin, result)] = self.reloads.get((plugin, result), 0) + 1
            self.history.append(ReloadRow(self._reactor.seconds(), plugin, result, text))
        if kind == "plugin_table":
            return  # what a table listing asked for: nothing to show
        self._last_id += 1
        row = EventRow(self._last_id, self._reactor.seconds(), kind, plugin, text)
        self.recent.append(row)
        self.send("plugin", row.json(), row.id)
        if self.changed is not None:
            self.changed()

    # -- the streams -------------------------------------------------------

    @property
    def streams(self) -> int:
        """
        How many event streams are open.
        """
        return len(self._streams)

    @property
    def full(self) -> bool:
        """
        Whether C{max_streams} streams are open (no more may open).
        """
        return len(self._streams) >= self.max_streams

    def open(self, request: Request) -> None:
        """
        Make C{request} an event stream: what it missed since its
        C{Last-Event-ID} (or its C{since} argument) first, then every event as it comes, until it
        disconnects or L{close} is called.
        """
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        last = request.getHeader(b"last-event-id")
        if last is None:
            asked = (getattr(request, "args", None) or {}).get(b"since")
            last = asked[0] if asked else None
        try:
            since = int(last) if last is not None else None
        except ValueError:
            since = None
        request.write(b"retry: 2000\n\n")
        if since is not None:
            for row in self.recent:
                if row.id > since:
                    request.write(_frame("plugin", row.json(), row.id))
        gate = self._streams[request] = _Gate()
        request.registerProducer(gate, True)
        request.notifyFinish().addBoth(self._gone, request)
        self._counted()

    def _gone(self, _: Any, request: Request) -> None:
        self._streams.pop(request, None)
        self._counted()

    def when_streams(self, count: int) -> Deferred[None]:
        """
        A Deferred firing once exactly C{count} streams are open.
        """
        d: Deferred[None] = Deferred()
        self._count_waiters.append((count, d))
        self._counted()
        return d

    def _counted(self) -> None:
        now = len(self._streams)
        ready = [(count, d) for count, d in self._count_waiters if count == now]
        for waiter in ready:
            self._count_waiters.remove(waiter)
            waiter[1].callback(None)

    def send(self, name: str, data: Any, event_id: Optional[int] = None) -> None:
        """
        Push an event named C{name} with C{data} (JSON) to every stream.
        """
        if not self._streams:
            return
        frame = _frame(name, data, event_id)
        for request, gate in list(self._streams.items()):
            if gate.paused:
                gate.backlog += len(frame)
                if gate.backlog > self.max_backlog:
                    self._drop(request)
                    continue
            request.write(frame)

    def _drop(self, request: Request) -> None:
        """
        Drop a stream its client does not read.
        """
        del self._streams[request]
        _log.warn("web: dropped the event stream of {client}: it read nothing while more "
                  "than {limit} bytes waited for it", client=client_of(request),
                  limit=self.max_backlog)
        transport: Any = request.channel.transport if request.channel is not None else None
        if transport is not None:
            transport.abortConnection()
        self._counted()

    def close(self) -> List[Request]:
        """
        End every stream; return the requests that were streams.
        """
        streams, self._streams = list(self._streams), {}
        for request in streams:
            request.unregisterProducer()
            request.finish()
        self._counted()
        return streams


def _frame(name: str, data: Any, event_id: Optional[int]) -> bytes:
    text = f"event: {name}\n"
    if event_id is not None:
        text += f"id: {event_id}\n"
    text += "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"
    return text.encode("utf-8")


class EventStream(Resource):
    """
    C{/events}: a Server-Sent Events stream of L{EventFeed}'s events (and
    of the table updates the service pushes).

    @param sessions: the service's L{Sessions}.
    @param private: whether a stream needs a logged-in session (or the
        token as a bearer token): an endpoint reachable from other hosts.
    """

    isLeaf = True

    def __init__(self, feed: EventFeed, sessions: Sessions, private: bool = False) -> None:
        super().__init__()
        self._feed = feed
        self._sessions = sessions
        self.private = private

    def render_GET(self, request: Request) -> Any:
        """
        Open the stream; or 401 (not logged in, where it must be), 429 (too
        many wrong tokens) or 503 (too many streams open).
        """
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if self.private:
            bearer = self._sessions.bearer(request)
            if bearer == "throttled":
                retry = self._sessions.throttle.retry_after(client_of(request)) or 1
                request.setResponseCode(429)
                request.setHeader(b"retry-after", str(retry).encode("ascii"))
                return b"too many wrong tokens from this address: try again later\n"
            if bearer != "ok" and not self._sessions.logged_in(
                    self._sessions.session(request)):
                request.setResponseCode(401)
                request.setHeader(b"www-authenticate", b'Bearer realm="plugmgr"')
                return b"/events needs a login (or the token as a bearer token)\n"
        if self._feed.full:
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"10")
            return (f"too many event streams open (at most {self._feed.max_streams}): "
                    "try again later\n").encode()
        self._feed.open(request)
        return NOT_DONE_YET
