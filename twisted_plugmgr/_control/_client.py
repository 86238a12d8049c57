"""
The client side of the control channel: L{connect} to a running manager,
and the L{ControlClient} whose methods send the commands of
L{_wire<twisted_plugmgr._control._wire>}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IAddress, IReactorCore
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure

from ._wire import (
    Authenticate,
    Available,
    Call,
    Catalog,
    Emit,
    Event,
    Info,
    Load,
    QuietAMP,
    Ready,
    Reconfig,
    Reload,
    ReloadChanged,
    ReloadMany,
    Reset,
    Shutdown,
    Status,
    Subscribe,
    Unload,
)

__all__ = ["ControlClientProtocol", "ControlClient", "connect"]


class ControlClientProtocol(QuietAMP):
    """
    One control connection, client side: the AMP protocol behind a
    L{ControlClient}, to connect in memory (C{twisted.test.iosim}) to a
    L{ControlFactory}'s protocol.

    @ivar on_event: called with every event (a dict) the server sends once
        subscribed, or L{None}.
    @ivar closed: a Deferred firing when the connection closes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.on_event: Optional[Callable[[Dict[str, Any]], object]] = None
        self.closed: Deferred[None] = Deferred()

    @Event.responder
    def event(self, event: Dict[str, Any]) -> Dict[str, Any]:
        """
        One event from the server: give it to C{on_event}.
        """
        if self.on_event is not None:
            self.on_event(event)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire C{closed}.
        """
        super().connectionLost(reason)
        self.closed.callback(None)


class _ClientFactory(Factory):
    """
    Builds the one protocol of a L{connect}, quietly (C{noisy} is false:
    no line for its start and stop, which are every connection's).
    """

    noisy = False

    def buildProtocol(self, addr: Optional[IAddress]) -> ControlClientProtocol:
        """
        A new connection.
        """
        return ControlClientProtocol()


class ControlClient:
    """
    A connection to a running manager's control channel. Every method
    returns a Deferred; a command the server refuses fails with a
    L{ControlError} subclass.

    @ivar closed: a Deferred firing when the connection closes.
    """

    def __init__(self, protocol: ControlClientProtocol) -> None:
        self._protocol = protocol
        self.closed = protocol.closed

    def authenticate(self, token: str) -> Deferred[Dict[str, Any]]:
        """Present the token."""
        return self._protocol.callRemote(Authenticate, token=token)

    def status(self) -> Deferred[List[Dict[str, Any]]]:
        """The plugin table: a list of rows (dicts)."""
        return self._protocol.callRemote(Status).addCallback(lambda r: r["plugins"])

    def available(self) -> Deferred[List[str]]:
        """The names of the plugins that could be loaded."""
        return self._protocol.callRemote(Available).addCallback(lambda r: r["names"])

    def load(self, name: str, data: Any = None, policy: Optional[Dict[str, Any]] = None,
             isolation: Optional[Dict[str, Any]] = None) -> Deferred[Dict[str, Any]]:
        """
        Load a plugin, under the restart policy keys of C{policy} and with
        the isolation options of C{isolation} if given; fires with {name,
        version, longname, restarts, last_failure, isolated, pid}.
        """
        return self._protocol.callRemote(Load, name=name, data=data, policy=policy,
                                         isolation=isolation) \
            .addCallback(lambda r: r["plugin"])

    def unload(self, name: str, mode: Optional[str] = None,
               reason: Optional[str] = None) -> Deferred[Any]:
        """Unload a plugin; fires with its quit message."""
        return self._protocol.callRemote(Unload, name=name, mode=mode, reason=reason) \
            .addCallback(lambda r: r["quit_message"])

    def reload(self, name: str, data: Any = None, mode: Optional[str] = None,
               isolation: Optional[Dict[str, Any]] = None) -> Deferred[Dict[str, Any]]:
        """
        Reload a plugin, the isolation options of C{isolation} changed if
        given (a L{None} value drops one); fires with its description, as
        L{load}.
        """
        return self._protocol.callRemote(Reload, name=name, data=data, mode=mode,
                                         isolation=isolation) \
            .addCallback(lambda r: r["plugin"])

    def reload_many(self, names: List[str], data: Optional[Dict[str, Any]] = None,
                    mode: Optional[str] = None) -> Deferred[Dict[str, Optional[str]]]:
        """
        Reload the running plugins C{names} in one transaction (C{data}:
        name -> new data, for those whose data changes); fires with {name:
        new version}, or fails with L{ReloadFailedError} naming the plugin
        that failed, every plugin as it was.
        """
        return self._protocol.callRemote(ReloadMany, names=names, data=data, mode=mode) \
            .addCallback(lambda r: r["versions"])

    def reset(self, name: str) -> Deferred[Dict[str, Any]]:
        """
        Clear a plugin's restart count (a quarantined one is started
        afresh); fires with its description, as L{load}.
        """
        return self._protocol.callRemote(Reset, name=name).addCallback(lambda r: r["plugin"])

    def reload_changed(self) -> Deferred[Dict[str, Dict[str, Any]]]:
        """Reload what changed; fires with name -> {ok, ...}."""
        return self._protocol.callRemote(ReloadChanged).addCallback(lambda r: r["results"])

    def info(self, name: str) -> Deferred[Dict[str, Any]]:
        """
        Everything the manager knows of plugin C{name}, its files checked on
        disk (see L{Info}).
        """
        return self._protocol.callRemote(Info, name=name).addCallback(lambda r: r["details"])

    def catalog(self) -> Deferred[List[Dict[str, Any]]]:
        """
        Each plugin that could be loaded: {name, status, path, error}.
        """
        return self._protocol.callRemote(Catalog).addCallback(lambda r: r["plugins"])

    def call(self, name: str, event: str, args: List[Any]) -> Deferred[Dict[str, Any]]:
        """
        Call plugin C{name}'s handler of C{event}; fires with {"value": V},
        or {"repr": R} for a result that is not JSON-serialisable.
        """
        return self._protocol.callRemote(Call, name=name, event=event, args=args) \
            .addCallback(lambda r: r["result"])

    def emit(self, event: str, args: List[Any]) -> Deferred[List[Dict[str, Any]]]:
        """
        Call every handler of C{event}; fires with their results, as L{call}.
        """
        return self._protocol.callRemote(Emit, event=event, args=args) \
            .addCallback(lambda r: r["results"])

    def reconfig(self) -> Deferred[Dict[str, Any]]:
        """
        Apply the config file again (what SIGHUP does); fires with what
        changed, or fails with L{ReconfigRefusedError} (nothing changed).
        """
        return self._protocol.callRemote(Reconfig).addCallback(lambda r: r["outcome"])

    def ready(self) -> Deferred[Dict[str, Any]]:
        """
        Whether every enabled plugin is running: {ready, plugins: name ->
        state}.
        """
        return self._protocol.callRemote(Ready)

    def shutdown(self, mode: Optional[str] = None) -> Deferred[Dict[str, Any]]:
        """Shut the manager (and its process) down."""
        return self._protocol.callRemote(Shutdown, mode=mode)

    def subscribe(self, on_event: Callable[[Dict[str, Any]], object]) -> Deferred[Dict[str, Any]]:
        """Call C{on_event} with every event (a dict) from now on."""
        self._protocol.on_event = on_event
        return self._protocol.callRemote(Subscribe)

    def close(self) -> Deferred[None]:
        """Close the connection; fires when closed."""
        if self._protocol.transport is not None:
            self._protocol.transport.loseConnection()
        return self.closed


def connect(reactor: IReactorCore, description: str,
            token: Optional[str] = None) -> Deferred[ControlClient]:
    """
    Connect to a control channel at the client endpoint C{description}
    (authenticating with C{token} if given).

    @return: a Deferred firing with a L{ControlClient}.
    """
    try:
        endpoint = clientFromString(reactor, description)
    except Exception as e:
        return fail(ValueError(f"invalid control endpoint {description!r}: {e}"))
    d: Deferred[Any] = endpoint.connect(_ClientFactory())
    d.addCallback(ControlClient)
    if token is not None:
        def authenticate(client: ControlClient) -> Deferred[ControlClient]:
            return client.authenticate(token).addCallback(lambda _: client)
        d.addCallback(authenticate)
    return d
