"""
The plugin-scoped reactor: what a plugin starts through it is the plugin's,
and whatever of that is still live when the plugin goes is cancelled or
closed -- the connections its listening ports accepted included.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from ._errors import PluginError

__all__ = ["PluginReactor"]


class _AcceptedConnection(ProtocolWrapper):
    """
    One connection a plugin's port accepted: a L{ProtocolWrapper} that
    lets the plugin's protocol see the connection lost before it counts as
    gone.
    """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Tell the plugin's protocol, then forget the connection.
        """
        try:
            self.wrappedProtocol.connectionLost(reason)
        finally:
            self.factory.unregisterProtocol(self)
            # Breaking the reference cycle, as ProtocolWrapper does.
            self.wrappedProtocol = None  # type: ignore[assignment]


class _Accepted(WrappingFactory):
    """
    The factory a plugin's listening port really uses: it builds the
    plugin's protocols through the plugin's factory and keeps each
    connection it accepted until that connection is lost. The plugin's
    protocols see a L{ProtocolWrapper} as their transport, which relays
    every call to the real one.
    """

    noisy = False  # the plugin's own factory says what it says
    protocol = _AcceptedConnection

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._gone: List[Deferred[None]] = []
        self._closing = False

    def buildProtocol(self, addr: Any) -> Any:
        """
        The plugin's protocol, wrapped; none (the connection is dropped)
        once the plugin's connections are being closed.
        """
        if self._closing:
            return None
        return super().buildProtocol(addr)

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        """
        A connection was lost: forget it, and say so once all are gone.
        """
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._gone = self._gone, []
            for waiter in waiters:
                waiter.callback(None)

    def close(self) -> Deferred[None]:
        """
        Close every connection it accepted (C{loseConnection}: what is
        buffered is sent first); the Deferred fires once all are lost.
        """
        self._closing = True
        d: Deferred[None] = Deferred()
        if not self.protocols:
            d.callback(None)
            return d
        self._gone.append(d)
        for connection in list(self.protocols):
            connection.loseConnection()
        return d

    def abort(self) -> None:
        """
        Abort the connections still open.
        """
        for connection in list(self.protocols):
            transport = connection.transport
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()


class PluginReactor:
    """
    A plugin's view of the reactor. What the plugin starts through it --
    delayed calls, looping calls (L{looping_call}), listening ports and
    client connections -- is recorded as the plugin's, and whatever of it is
    still live when the plugin is unloaded or reloaded is cancelled or
    closed by L{close}. Everything else is the reactor's own.
    """

    def __init__(self, reactor: IReactorTime, owner: str,
                 on_error: Optional[Callable[[Failure], object]] = None,
                 on_crash: Optional[Callable[[Failure], object]] = None) -> None:
        self._reactor = reactor
        self._owner = owner
        self._on_error = on_error
        self._on_crash = on_crash
        self._delayed: Set[IDelayedCall] = set()
        self._loops: List[LoopingCall] = []
        self._ports: List[Any] = []
        self._accepted: List[_Accepted] = []
        self._connectors: List[Any] = []
        self._closed = False
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _check_open(self) -> None:
        if self._closed:
            raise PluginError(self._owner, "the plugin is unloaded: it cannot start anything")

    def seconds(self) -> float:
        """
        The reactor's time.
        """
        return self._reactor.seconds()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        """
        Schedule C{f(*args, **kw)} in C{delay} seconds, as the plugin's.
        A C{deferLater} through this reactor schedules its Deferred's
        C{callback}: what its callable raises is also given to C{on_crash}
        (the Deferred's holder still gets the failure).
        """
        self._check_open()
        fired = getattr(f, "__self__", None)
        if (self._on_crash is not None and isinstance(fired, Deferred)
                and getattr(f, "__func__", None) is Deferred.callback):
            on_crash = self._on_crash

            def crashed(failure: Failure) -> Failure:
                on_crash(failure)
                return failure

            fired.addErrback(crashed)
        holder: List[IDelayedCall] = []

        def fire() -> Any:
            self._delayed.discard(holder[0])
            return self._guarded(f, args, kw)

        call = self._reactor.callLater(delay, fire)
        holder.append(call)
        if len(self._delayed) > 64:
            self._delayed = {c for c in self._delayed if c.active()}
        self._delayed.add(call)
        return call

    def _guarded(self, f: Callable[..., Any], args: tuple, kw: dict) -> Any:
        """
        Call C{f} for a timer or a looping call: what it raises, or a
        Deferred it returns fails with, is the plugin's error (reported
        through C{on_error}), not the reactor's; a looping call goes on.
        """
        if self._on_error is None:
            return f(*args, **kw)
        try:
            result = f(*args, **kw)
        except BaseException:
            self._on_error(Failure())
            return None
        if isinstance(result, Deferred):
            return result.addErrback(self._on_error)
        return result

    def getDelayedCalls(self) -> List[IDelayedCall]:
        """
        The plugin's own delayed calls that are still pending.
        """
        return [c for c in self._delayed if c.active()]

    def looping_call(self, f: Callable[..., Any], *args: Any, **kw: Any) -> LoopingCall:
        """
        A L{LoopingCall} of C{f} on the reactor's clock, owned by the plugin.
        """
        self._check_open()
        loop = LoopingCall(self._guarded, f, args, kw)
        loop.clock = self._reactor
        self._loops.append(loop)
        return loop

    def _port(self, method: str, *args: Any, **kw: Any) -> Any:
        self._check_open()
        port = getattr(self._reactor, method)(*args, **kw)
        self._ports.append(port)
        return port

    def _stream_port(self, method: str, *args: Any, **kw: Any) -> Any:
        """
        Listen with the plugin's factory wrapped, so that the connections
        the port accepts are the plugin's too.
        """
        self._check_open()
        if "factory" in kw:
            kw["factory"] = accepted = _Accepted(kw["factory"])
        elif len(args) > 1:
            accepted = _Accepted(args[1])
            args = (args[0], accepted) + args[2:]
        else:  # let the reactor say what is missing
            return self._port(method, *args, **kw)
        port = getattr(self._reactor, method)(*args, **kw)
        self._accepted.append(accepted)
        self._ports.append(port)
        return port

    def _connect(self, method: str, *args: Any, **kw: Any) -> Any:
        self._check_open()
        connector = getattr(self._reactor, method)(*args, **kw)
        self._connectors.append(connector)
        return connector

    def listenTCP(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorTCP.listenTCP<twisted.internet.interfaces.IReactorTCP.listenTCP>},
        the port owned by the plugin.
        """
        return self._stream_port("listenTCP", *args, **kw)

    def listenUDP(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorUDP.listenUDP<twisted.internet.interfaces.IReactorUDP.listenUDP>},
        the port owned by the plugin.
        """
        return self._port("listenUDP", *args, **kw)

    def listenUNIX(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorUNIX.listenUNIX<twisted.internet.interfaces.IReactorUNIX.listenUNIX>},
        the port owned by the plugin.
        """
        return self._stream_port("listenUNIX", *args, **kw)

    def listenSSL(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorSSL.listenSSL<twisted.internet.interfaces.IReactorSSL.listenSSL>},
        the port owned by the plugin.
        """
        return self._stream_port("listenSSL", *args, **kw)

    def connectTCP(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorTCP.connectTCP<twisted.internet.interfaces.IReactorTCP.connectTCP>},
        the connection owned by the plugin.
        """
        return self._connect("connectTCP", *args, **kw)

    def connectUNIX(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorUNIX.connectUNIX<twisted.internet.interfaces.IReactorUNIX.connectUNIX>},
        the connection owned by the plugin.
        """
        return self._connect("connectUNIX", *args, **kw)

    def connectSSL(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorSSL.connectSSL<twisted.internet.interfaces.IReactorSSL.connectSSL>},
        the connection owned by the plugin.
        """
        return self._connect("connectSSL", *args, **kw)

    def close(self, grace: Optional[float] = None) -> Tuple[Deferred, List[str]]:
        """
        Cancel or close whatever the plugin left live, and refuse anything
        new. The connections its ports accepted are closed with
        C{loseConnection}, and aborted if they are still open C{grace}
        seconds later (at once when C{grace} is L{None} or not positive).

        @return: a Deferred firing when every port has stopped listening and
            every accepted connection is gone, and a sentence for each kind
            of thing that was left live.
        """
        self._closed = True
        left: List[str] = []
        timers = [c for c in self._delayed if c.active()]
        for call in timers:
            call.cancel()
        self._delayed = set()
        loops = [loop for loop in self._loops if loop.running]
        for loop in loops:
            loop.stop()
        self._loops = []
        waits = []
        ports = self._ports
        self._ports = []
        open_ports = 0
        for port in ports:
            if getattr(port, "connected", True) and not getattr(port, "disconnected", False):
                open_ports += 1
                waits.append(maybeDeferred(port.stopListening))
        connectors = self._connectors
        self._connectors = []
        open_connections = 0
        for connector in connectors:
            if getattr(connector, "state", "disconnected") != "disconnected":
                open_connections += 1
                connector.disconnect()
        accepted_count, gone = self._close_accepted(grace)
        waits.extend(gone)
        for count, what in (
            (len(timers), "timer"),
            (len(loops), "looping call"),
            (open_ports, "listening port"),
            (open_connections, "connection"),
            (accepted_count, "accepted connection"),
        ):
            if count:
                verb = "running" if what in ("timer", "looping call") else "open"
                left.append(f"left {count} {what}{'s' if count > 1 else ''} {verb}")
        d = gatherResults(waits, consumeErrors=True) if waits else Deferred()
        if not waits:
            d.callback([])
        return d, left

    def _close_accepted(self, grace: Optional[float]) -> Tuple[int, List[Deferred[None]]]:
        """
        Close the connections the plugin's ports accepted; abort those still
        open after C{grace} seconds.

        @return: how many were open, and a Deferred for each port's
            connections being gone.
        """
        factories, self._accepted = self._accepted, []
        count = sum(len(factory.protocols) for factory in factories)
        gone = [factory.close() for factory in factories]
        if not count:
            return 0, []
        if grace is None or grace <= 0:
            for factory in factories:
                factory.abort()
            return count, gone
        def abort_all() -> None:
            for factory in factories:
                factory.abort()

        abort = self._reactor.callLater(grace, abort_all)

        def all_gone(result: Any) -> Any:
            if abort.active():
                abort.cancel()
            return result

        gatherResults(gone, consumeErrors=True).addBoth(all_gone)
        return count, gone
