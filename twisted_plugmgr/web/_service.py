"""
L{WebService}: the HTTP endpoint serving C{/metrics} and the dashboard
beside a L{PluginManager}, and L{make_web_service}, which builds one from
the C{[web]} section of a config file.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, List, Optional, Set, cast

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from .._config import split_endpoint
from ._auth import Sessions
from ._chart import Samples
from ._dashboard import Action, Dashboard, Login, Logout, Page, Script
from ._events import EventFeed, EventStream
from ._metrics import GuardedMetrics, metrics_registry

__all__ = ["WebService", "make_web_service", "EndpointRefused", "loopback_only"]


class EndpointRefused(ValueError):
    """
    A web endpoint that listens beyond loopback, and no token to guard it.

    @ivar endpoint: the endpoint string refused.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"endpoint {endpoint!r} is reachable from other hosts (a TCP endpoint "
            "without interface=, or with an interface that is not loopback): configure a "
            "token ([web] token or token_file, or [manager] control_token), or listen on "
            "interface=127.0.0.1")


def loopback_only(endpoint: str) -> bool:
    """
    Whether a server endpoint string listens where only this host can
    connect: a UNIX socket, or TCP on a loopback interface.
    """
    try:
        kind, args, kwargs = split_endpoint(endpoint)
    except ValueError:
        return False
    kind = kind.strip().lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = kwargs.get("interface", args[1] if len(args) > 1 else "")
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


class _Root(Resource):
    """
    The site's root: its children, and a plain 404 for anything else.
    """

    def getChild(self, path: bytes, request: Any) -> Any:
        return notFound("No such page", "Try the dashboard at /.")


class _Channel(HTTPChannel):
    """
    An HTTP connection its site knows of, so that stopping closes it.
    """

    site: _Site

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.site.channels.discard(self)
        super().connectionLost(reason)
        for waiter in list(self.site.waiting.pop(self, [])):
            waiter.callback(None)


class _Site(Site):
    """
    A site that logs nothing per request or connection, and knows its open
    connections.
    """

    noisy = False
    protocol = _Channel  # type: ignore[assignment]

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.channels: Set[_Channel] = set()
        self.waiting: Dict[_Channel, List[Deferred[Any]]] = {}

    def log(self, request: Any) -> None:
        """
        Nothing: no line per request.
        """

    def logPrefix(self) -> str:
        """
        What the port's start and stop lines call it.
        """
        return "plugmgr web"

    def close_all(self, reactor: IReactorTime, grace: float = 2.0) -> Deferred[Any]:
        """
        Close every open connection; a Deferred firing once they are gone
        (those still open after C{grace} seconds are aborted).
        """
        waits: List[Deferred[Any]] = []
        for channel in list(self.channels):
            d: Deferred[Any] = Deferred()
            self.waiting.setdefault(channel, []).append(d)
            waits.append(d)
            transport = channel.transport
            if transport is not None:
                transport.loseConnection()
                abort = getattr(transport, "abortConnection", None)
                if abort is not None:
                    call = reactor.callLater(grace, _abort_if_open, channel, abort)
                    d.addBoth(_cancel_call, call)
        return DeferredList(waits)


def _abort_if_open(channel: _Channel, abort: Callable[[], None]) -> None:
    if channel in channel.site.channels:
        abort()


def _cancel_call(result: Any, call: Any) -> Any:
    if call.active():
        call.cancel()
    return result


@implementer(IService)
class WebService(Service):
    """
    Prometheus metrics (C{/metrics}) and a live dashboard (C{/}) of
    C{manager}, served on C{endpoint}, as a service of its own beside the
    manager.

    @param manager: the L{IPluginManager} shown.
    @param endpoint: a Twisted server endpoint string
        (C{"tcp:9180:interface=127.0.0.1"}).
    @param token: the token the dashboard's actions need (and C{/metrics},
        as a bearer token, on an endpoint reachable from other hosts);
        L{None}: the dashboard is read-only.
    @param reactor: the reactor to listen with (the global one by
        default).
    @param metrics_public: serve C{/metrics} without the token even on an
        endpoint reachable from other hosts.
    @param reconfig: what the dashboard's reconfig button calls (a
        Deferred with a C{ReconfigOutcome}), or L{None}: no such button.
    @param refresh: seconds between two samples of the charts (and two
        pushes of the table to the open pages).
    @param keep: how many samples the charts show.
    @raise EndpointRefused: (a C{ValueError}) for an endpoint reachable
        from other hosts without a token.
    @raise ValueError: for an endpoint string Twisted cannot parse.

    It hears the manager's events from its construction (the page shows
    the loads that came before its start), until it stops.

    @ivar address: the address listened on, once listening (L{None}
        before).
    """

    log = Logger(namespace="twisted_plugmgr.web")

    def __init__(self, manager: Any, endpoint: str, token: Optional[str] = None, *,
                 reactor: Optional[IReactorTime] = None, metrics_public: bool = False,
                 reconfig: Optional[Callable[[], Deferred[Any]]] = None,
                 refresh: float = 2.0, keep: int = 150, name: str = "web") -> None:
        if reactor is None:
            from twisted.internet import reactor as _global_reactor

            reactor = cast(IReactorTime, _global_reactor)
        if token is not None and not token.strip():
            token = None
        exposed = not loopback_only(endpoint)
        if exposed and token is None:
            raise EndpointRefused(endpoint)
        if not refresh > 0:
            raise ValueError(f"invalid refresh {refresh!r}: expected a positive number of seconds")
        self.setName(name)
        self.manager = manager
        self.endpoint_description = endpoint
        self._endpoint = serverFromString(reactor, endpoint)
        self._reactor = reactor
        self.sessions = Sessions(token, reactor)
        self.feed = EventFeed(reactor)
        self.samples = Samples(keep)
        self.refresh = float(refresh)
        self.dashboard = Dashboard(manager, self.feed, self.samples, self.sessions, reconfig,
                                   minutes=refresh * keep / 60.0)
        self.metrics_guarded = exposed and not metrics_public
        root = _Root()
        root.putChild(b"", Page(self.dashboard))
        root.putChild(b"metrics", GuardedMetrics(
            metrics_registry(manager.metrics, self.feed), self.sessions, self.metrics_guarded))
        root.putChild(b"events", EventStream(self.feed))
        root.putChild(b"login", Login(self.dashboard))
        root.putChild(b"logout", Logout(self.dashboard))
        root.putChild(b"action", Action(self.dashboard))
        root.putChild(b"dashboard.js", Script())
        self.site = _Site(root)
        # Listening from now on: the page shows what happened before it
        # started (the plugins its daemon loaded first).
        manager.register(self.feed)
        self._port: Optional[IListeningPort] = None
        self._listening: Optional[Deferred[Any]] = None
        self._loop: Optional[LoopingCall] = None
        self._push_call: Any = None
        self.address: Any = None

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        """
        Listen, count handler calls and events, and start sampling.
        """
        Service.startService(self)
        self.manager.register(self.feed)  # again, after a stop
        self.manager.metrics.enable()
        self.feed.changed = self._changed
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self._reactor
        loop.start(self.refresh, now=True).addErrback(
            lambda f: self.log.failure("web: sampling stopped", failure=f))
        self._listening = self._endpoint.listen(self.site)
        self._listening.addCallbacks(self._listened, self._listen_failed)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self._port = port
        self.address = host = port.getHost()
        if not self.running:  # stopped while it was starting to listen
            port.stopListening()
            return port
        where = (f"http://{getattr(host, 'host', '')}:{host.port}/" if hasattr(host, "port")
                 else self.endpoint_description)
        self.log.info("web: dashboard and /metrics on {where}{readonly}", where=where,
                      readonly="" if self.sessions.writable else " (read-only: no token)")
        return port

    def _listen_failed(self, failure: Failure) -> Failure:
        self.log.error("web: cannot listen on {endpoint}: {error}",
                       endpoint=self.endpoint_description, error=failure.getErrorMessage())
        return failure

    def when_listening(self) -> Deferred[Any]:
        """
        A Deferred firing with the L{IListeningPort} once listening (or
        failing with why it cannot listen).
        """
        if self._listening is None:
            raise RuntimeError("the web service is not started")
        d: Deferred[Any] = Deferred()

        def give(result: Any) -> Any:
            if isinstance(result, Failure):
                d.errback(result)
                return None  # consumed here; logged by _listen_failed
            d.callback(result)
            return result

        self._listening.addBoth(give)
        return d

    def stopService(self) -> Deferred[Any]:
        """
        Stop listening, end the event streams, close every connection,
        stop counting and sampling. The Deferred fires once all is closed.
        """
        Service.stopService(self)
        self.manager.unregister(self.feed)
        if self.manager.metrics.enabled:
            self.manager.metrics.disable()
        self.feed.changed = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._push_call is not None and self._push_call.active():
            self._push_call.cancel()
        self._push_call = None
        self.feed.close()
        stopped: Deferred[Any] = succeed(None)
        if self._port is not None:
            stopped = _maybe(self._port.stopListening())
            self._port = None
        elif self._listening is not None and not self._listening.called:
            self._listening.cancel()
        closing = self.site.close_all(self._reactor)
        return DeferredList([stopped, closing]).addCallback(lambda _: None)

    # -- keeping the pages live -------------------------------------------

    def _tick(self) -> None:
        plugins = self.manager.metrics.plugins()
        self.samples.sample({name: p.info.busy_time for name, p in plugins.items()})
        self._push()

    def _changed(self) -> None:
        if self._push_call is None or not self._push_call.active():
            self._push_call = self._reactor.callLater(0, self._push)

    def _push(self) -> None:
        self._push_call = None
        if self.feed.streams:
            self.feed.send("table", self.dashboard.live())


def _maybe(result: Any) -> Deferred[Any]:
    return result if isinstance(result, Deferred) else succeed(result)


def make_web_service(manager: Any, web: Any, token: Optional[str], reactor: Any,
                     reconfig: Optional[Callable[[], Deferred[Any]]] = None) -> IService:
    """
    The web service of C{twist plugmgr}, from the C{[web]} section
    C{web} (a L{WebConfig}).

    @param token: the token found for it (C{[web]} token or token file,
        else the C{[manager]} control token), or L{None}.
    @param reactor: the reactor (L{IReactorTime} and the listening
        interfaces of the endpoint, such as C{IReactorTCP}).
    @raise ValueError: naming C{[web]}, for an endpoint reachable from other
        hosts without a token, or one Twisted cannot parse.
    """
    try:
        return WebService(manager, web.endpoint, token, reactor=reactor,
                          metrics_public=web.metrics_public, reconfig=reconfig)
    except EndpointRefused:
        raise
    except ValueError as e:
        raise ValueError(f"endpoint {web.endpoint!r} ([web] endpoint): {e}") from None
