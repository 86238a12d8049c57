"""
What a plugin is made of and what it is given: the L{Plugin} base class,
the L{PluginAPI}, the plugin-scoped reactor, and live references to other
plugins.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from ._errors import PluginError
from ._interfaces import IPlugin, IPluginAPI, IPluginHost
from ._lifecycle import ShutdownMode

__all__ = ["Plugin", "PluginAPI", "PluginReactor", "LiveReference"]


@implementer(IPlugin)
class Plugin(Service):
    """
    Base class of plugins: a L{Service} that provides L{IPlugin}.

    The manager constructs it as C{cls(api, data)}. Subclasses set the
    metadata as class attributes (C{name} and C{version} are required, and
    C{name} must be the name the plugin is loaded under), override
    C{startService} (which may return a Deferred; the manager waits for it)
    and L{shutdown}, and mark their handlers with
    L{twisted_plugmgr.handler}.

    A plugin may define C{get_state()} and C{set_state(state)} to carry its
    state across a reload, and C{default(event, *args, **kw)} to receive
    the events posted or called to it that it has no handler for.

    @ivar api: the L{PluginAPI} it was given.
    @ivar data: the data given to C{load} (L{None} by default).
    """

    # Twisted declares Service.name as None; a plugin's is its name.
    name: Optional[str] = None  # type: ignore[assignment]
    longname: Optional[str] = None
    license: Optional[str] = None
    version: Optional[str] = None
    author: Optional[str] = None
    requires: Tuple[str, ...] = ()

    def __init__(self, api: PluginAPI, data: Any = None) -> None:
        self.api = api
        self.data = data

    def shutdown(self, mode: ShutdownMode, reason: str) -> Any:
        """
        Stop the plugin in C{mode}, because of C{reason}. Override it to
        clean up; return the quit message, or a Deferred firing with it.
        The default quit message is C{reason}, or C{"<name> unloaded"}.
        """
        return reason or f"{self.name} unloaded"

    def stopService(self) -> Deferred:
        """
        Stop as a plain child service would: L{shutdown} in C{SMART} mode.
        """
        Service.stopService(self)
        return maybeDeferred(self.shutdown, ShutdownMode.SMART, "service stopped")


class PluginReactor:
    """
    A plugin's view of the reactor. What the plugin starts through it --
    delayed calls, looping calls (L{looping_call}), listening ports and
    client connections -- is recorded as the plugin's, and whatever of it is
    still live when the plugin is unloaded or reloaded is cancelled or
    closed by L{close}. Everything else is the reactor's own.
    """

    def __init__(self, reactor: IReactorTime, owner: str,
                 on_error: Optional[Callable[[Failure], object]] = None) -> None:
        self._reactor = reactor
        self._owner = owner
        self._on_error = on_error
        self._delayed: Set[IDelayedCall] = set()
        self._loops: List[LoopingCall] = []
        self._ports: List[Any] = []
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
        """
        self._check_open()
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

    def _connect(self, method: str, *args: Any, **kw: Any) -> Any:
        self._check_open()
        connector = getattr(self._reactor, method)(*args, **kw)
        self._connectors.append(connector)
        return connector

    def listenTCP(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorTCP.listenTCP}, the port owned by the plugin.
        """
        return self._port("listenTCP", *args, **kw)

    def listenUDP(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorUDP.listenUDP}, the port owned by the plugin.
        """
        return self._port("listenUDP", *args, **kw)

    def listenUNIX(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorUNIX.listenUNIX}, the port owned by the plugin.
        """
        return self._port("listenUNIX", *args, **kw)

    def listenSSL(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorSSL.listenSSL}, the port owned by the plugin.
        """
        return self._port("listenSSL", *args, **kw)

    def connectTCP(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorTCP.connectTCP}, the connection owned by the plugin.
        """
        return self._connect("connectTCP", *args, **kw)

    def connectUNIX(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorUNIX.connectUNIX}, the connection owned by the plugin.
        """
        return self._connect("connectUNIX", *args, **kw)

    def connectSSL(self, *args: Any, **kw: Any) -> Any:
        """
        L{IReactorSSL.connectSSL}, the connection owned by the plugin.
        """
        return self._connect("connectSSL", *args, **kw)

    def close(self) -> Tuple[Deferred, List[str]]:
        """
        Cancel or close whatever the plugin left live, and refuse anything
        new.

        @return: a Deferred firing when every port has stopped listening,
            and a sentence for each kind of thing that was left live.
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
        for count, what in (
            (len(timers), "timer"),
            (len(loops), "looping call"),
            (open_ports, "listening port"),
            (open_connections, "connection"),
        ):
            if count:
                verb = "open" if what in ("listening port", "connection") else "running"
                left.append(f"left {count} {what}{'s' if count > 1 else ''} {verb}")
        d = gatherResults(waits, consumeErrors=True) if waits else Deferred()
        if not waits:
            d.callback([])
        return d, left


class LiveReference:
    """
    A reference to the plugin loaded under a name, whatever its instance:
    every attribute is looked up on the instance loaded now, so a reference
    held across a reload reaches the new instance.

    @raise NoSuchPlugin: on use, when no plugin of that name is loaded.
    """

    __slots__ = ("_manager", "_name")

    def __init__(self, manager: IPluginHost, name: str) -> None:
        object.__setattr__(self, "_manager", manager)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._manager.instance_of(self._name), attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._manager.instance_of(self._name), attribute, value)

    def __repr__(self) -> str:
        return f"<LiveReference to plugin {self._name!r}>"


@implementer(IPluginAPI)
class PluginAPI:
    """
    What a plugin is given to talk to its manager and the other plugins.

    @ivar name: the name the plugin is loaded under.
    @ivar manager: the L{PluginManager} (it provides L{IPluginManager}, and
        L{IPluginHost} for this API).
    @ivar log: a L{Logger} namespaced to the plugin.
    @ivar reactor: the plugin-scoped L{PluginReactor}.
    """

    def __init__(self, manager: Any, name: str, reactor: IReactorTime) -> None:
        self.name = name
        self.manager = manager
        self._host: IPluginHost = manager
        self.log = Logger(namespace=f"twisted_plugmgr.plugins.{name}")
        self.reactor = PluginReactor(
            reactor, name, on_error=lambda failure: self._host.report_error(name, failure)
        )

    def warning(self, message: str) -> None:
        """
        Broadcast C{plugin_warning} with C{message}.
        """
        self._host.report_warning(self.name, str(message))

    def error(self, failure_or_exception: Any) -> None:
        """
        Broadcast C{plugin_error} with a Failure (an exception is wrapped;
        called with nothing inside an C{except} block, the current one).
        """
        if isinstance(failure_or_exception, Failure):
            failure = failure_or_exception
        else:
            failure = Failure(failure_or_exception)
        self._host.report_error(self.name, failure)

    def post(self, plugin: str, event: str, *args: Any, **kw: Any) -> None:
        """
        L{PluginManager.post}.
        """
        self.manager.post(plugin, event, *args, **kw)

    def call(self, plugin: str, event: str, *args: Any, **kw: Any) -> Deferred:
        """
        L{PluginManager.call}.
        """
        return self.manager.call(plugin, event, *args, **kw)

    def emit(self, event: str, *args: Any, **kw: Any) -> Deferred:
        """
        L{PluginManager.emit}.
        """
        return self.manager.emit(event, *args, **kw)

    def plugin(self, name: str) -> LiveReference:
        """
        A L{LiveReference} to the plugin loaded under C{name}.
        """
        return LiveReference(self.manager, name)

    def looping_call(self, f: Callable[..., Any], *args: Any, **kw: Any) -> LoopingCall:
        """
        L{PluginReactor.looping_call}.
        """
        return self.reactor.looping_call(f, *args, **kw)
