"""
L{WebService}: the HTTP endpoint serving C{/metrics} and the dashboard
beside a L{PluginManager}, and L{make_web_service}, which builds one from
the C{[web]} section of a config file.
"""

from __future__ import annotations

import ipaddress
import socket
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
from ._events import MAX_BACKLOG, MAX_STREAMS, EventFeed, EventStream
from ._metrics import GuardedMetrics, metrics_registry

__all__ = ["WebService", "make_web_service", "EndpointRefused", "WebListenError",
           "loopback_only", "check_web_port"]


class WebListenError(Exception):
    """
    The web endpoint cannot listen (a port in use, a permission refused);
    the service did not start.

    @ivar endpoint: the endpoint string.
    @ivar reason: why, in one line.
    """

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"endpoint {endpoint!r} cannot listen: {reason}")


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


def check_web_port(endpoint: str) -> None:
    """
    Check, before anything starts, that a TCP (or SSL) endpoint's port
    can be bound, by binding it and closing it at once (as Twisted would:
    C{SO_REUSEADDR}). Synchronous, never blocks. Port 0, UNIX sockets and
    other endpoints are only tried when listening. C{twistd} builds the
    service before it forks into the background, so a port in use is said
    on the terminal in one line.

    @raise WebListenError: if it cannot be bound.
    """
    try:
        kind, args, kwargs = split_endpoint(endpoint)
        kind = kind.strip().lower()
        if kind not in ("tcp", "tcp6", "ssl"):
            return
        port = int(kwargs.get("port", args[0] if args else "0"))
    except ValueError:
        return  # what Twisted says of it comes when listening
    if port == 0:
        return
    interface = kwargs.get("interface", args[1] if len(args) > 1 else "").strip("[]")
    family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface or ("::" if family == socket.AF_INET6 else ""), port))
    except OSError as e:
        where = f"{interface or 'all interfaces'} port {port}"
        raise WebListenError(endpoint, f"{where}: {e.strerror or e}") from None
    finally:
        probe.close()


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
    @param max_streams: how many event streams may be open at once (more
        are answered 503).
    @param max_backlog: bytes that may wait for an event stream whose
        client stopped reading before it is dropped.
    @raise EndpointRefused: (a C{ValueError}) for an endpoint reachable
        from other hosts without a token.
    @raise ValueError: for an endpoint string Twisted cannot parse.

    On an endpoint reachable from other hosts, the page and C{/events}
    need a login (or the token as a bearer token): until then the page is
    the login form alone. On an C{ssl:} endpoint the session cookie is
    C{Secure}.

    It hears the manager's events from its construction (the page shows
    the loads that came before its start), until it stops.

    @ivar address: the address listened on, once listening (L{None}
        before).
    """

    log = Logger(namespace="twisted_plugmgr.web")

    def __init__(self, manager: Any, endpoint: str, token: Optional[str] = None, *,
                 reactor: Optional[IReactorTime] = None, metrics_public: bool = False,
                 reconfig: Optional[Callable[[], Deferred[Any]]] = None,
                 refresh: float = 2.0, keep: int = 150, name: str = "web",
                 max_streams: int = MAX_STREAMS, max_backlog: int = MAX_BACKLOG) -> None:
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
        self.exposed = exposed
        self.sessions = Sessions(token, reactor, secure=_kind(endpoint) == "ssl")
        self.feed = EventFeed(reactor, max_streams=max_streams, max_backlog=max_backlog)
        self.samples = Samples(keep)
        self.refresh = float(refresh)
        self.dashboard = Dashboard(manager, self.feed, self.samples, self.sessions, reconfig,
                                   minutes=refresh * keep / 60.0, private=exposed)
        self.metrics_guarded = exposed and not metrics_public
        root = _Root()
        root.putChild(b"", Page(self.dashboard))
        root.putChild(b"metrics", GuardedMetrics(
            metrics_registry(manager.metrics, self.feed), self.sessions, self.metrics_guarded))
        root.putChild(b"events", EventStream(self.feed, self.sessions, private=exposed))
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
        self._pending: Optional[Deferred[Any]] = None  # listened, not started yet
        self._listen_failure: Optional[Failure] = None
        self._counting = False
        self._loop: Optional[LoopingCall] = None
        self._push_call: Any = None
        self.address: Any = None

    # -- service -------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Listen (under twistd, before privileges are dropped; C{twist
        plugmgr} calls it before the manager starts, so that a port in use
        stops everything). L{startService} listens itself if this was not
        called.

        @raise WebListenError: if the endpoint cannot listen (known at once
            for TCP, SSL and UNIX endpoints): nothing was started, and the
            service no longer hears the manager.
        """
        Service.privilegedStartService(self)
        if self._pending is None:
            self._listen()

    def _listen(self) -> None:
        self._listen_failure = None
        listening = self._endpoint.listen(self.site)
        outcome: List[Any] = []

        def record(result: Any) -> Any:
            outcome.append(result)
            return result

        listening.addBoth(record)
        if outcome and isinstance(outcome[0], Failure):
            listening.addErrback(lambda _: None)
            self.manager.unregister(self.feed)
            raise WebListenError(self.endpoint_description, outcome[0].getErrorMessage())
        self._pending = listening

    def startService(self) -> None:
        """
        Listen (unless L{privilegedStartService} did), count handler calls
        and events, and start sampling.

        @raise WebListenError: if the endpoint cannot listen (known at once
            for TCP, SSL and UNIX endpoints); nothing was started. An
            endpoint that fails later is logged, and L{when_listening}
            fails.
        """
        Service.startService(self)
        if self._pending is None:
            try:
                self._listen()
            except WebListenError:
                Service.stopService(self)
                raise
        listening, self._pending = self._pending, None
        assert listening is not None
        self.manager.register(self.feed)  # again, after a stop
        self.manager.metrics.enable()
        self._counting = True
        self.feed.changed = self._changed
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self._reactor
        loop.start(self.refresh, now=True).addErrback(
            lambda f: self.log.failure("web: sampling stopped", failure=f))
        self._listening = listening.addCallbacks(self._listened, self._listen_failed)

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
        if self.exposed and _kind(self.endpoint_description) != "ssl":
            self.log.warn(
                "web: {endpoint} is reachable from other hosts over plain HTTP: the token "
                "and the session cookie cross the network in cleartext (use an ssl: "
                "endpoint, or a TLS proxy in front)", endpoint=self.endpoint_description)
        return port

    def _listen_failed(self, failure: Failure) -> None:
        self._listen_failure = failure
        if not self.running:
            return None  # stopped before it listened: nothing to say
        self.log.error("web: cannot listen on {endpoint}: {error}",
                       endpoint=self.endpoint_description, error=failure.getErrorMessage())
        return None

    def when_listening(self) -> Deferred[Any]:
        """
        A Deferred firing with the L{IListeningPort} once listening (or
        failing with why it cannot listen).
        """
        if self._listening is None:
            raise RuntimeError("the web service is not started")
        d: Deferred[Any] = Deferred()

        def give(result: Any) -> Any:
            if self._listen_failure is not None:
                d.errback(self._listen_failure)
            else:
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
        if self._counting:
            self._counting = False
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
        if self._pending is not None:  # listened (privileged), never started
            pending, self._pending = self._pending, None
            stopped = pending.addCallback(lambda port: port.stopListening())
            stopped.addErrback(lambda _: None)
        elif self._port is not None:
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


def _kind(endpoint: str) -> str:
    try:
        return split_endpoint(endpoint)[0].strip().lower()
    except ValueError:
        return ""


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
