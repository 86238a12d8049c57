"""
What the web service hears from the manager: every event counted by kind,
reloads counted by result, the recent events and the reload history kept
for the page, and the Server-Sent Events streams they are pushed to.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .._events import PluginEvent, safe_str

__all__ = ["EventRow", "ReloadRow", "EventFeed", "EventStream", "describe_event"]


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

    @ivar counts: event kind -> how many were heard.
    @ivar reloads: (plugin, C{"ok"} or C{"failed"}) -> how many.
    @ivar recent: the last events, oldest first.
    @ivar history: the last reloads, oldest first.
    """

    def __init__(self, reactor: IReactorTime, keep: int = 200, history: int = 50) -> None:
        self._reactor = reactor
        self.counts: Dict[str, int] = {}
        self.reloads: Dict[Tuple[str, str], int] = {}
        self.recent: Deque[EventRow] = collections.deque(maxlen=keep)
        self.history: Deque[ReloadRow] = collections.deque(maxlen=history)
        self._streams: Set[Request] = set()
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
        self._streams.add(request)
        request.notifyFinish().addBoth(self._gone, request)
        self._counted()

    def _gone(self, _: Any, request: Request) -> None:
        self._streams.discard(request)
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
        for request in list(self._streams):
            request.write(frame)

    def close(self) -> List[Request]:
        """
        End every stream; return the requests that were streams.
        """
        streams, self._streams = list(self._streams), set()
        for request in streams:
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
    """

    isLeaf = True

    def __init__(self, feed: EventFeed) -> None:
        super().__init__()
        self._feed = feed

    def render_GET(self, request: Request) -> Any:
        """
        Open the stream.
        """
        self._feed.open(request)
        return NOT_DONE_YET
