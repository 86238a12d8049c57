"""
The control channel: AMP commands, the server that answers them for an
L{IPluginManager}, and a small client.

The server listens on any Twisted server endpoint. A UNIX socket (the
default) is created with mode 0600, in a directory others cannot write to;
an existing socket that still answers is never taken over, and a stale one
(left by a crash: connecting is refused) is removed. Any other endpoint
(TCP, ...) needs a shared token: the first command of every connection must
be L{Authenticate}, and the token is compared with L{hmac.compare_digest}.

Malformed input (a box that is not an AMP command, a command without
C{_ask}, an argument that does not parse, a key or value too long, a box too
big) drops that connection only, with one line in the log; the service and
the other connections go on.

Wire protocol (AMP; every JSON value may be split over the keys C{name},
C{name.1}, C{name.2}, ...)::

    Authenticate(token)                      -> ()
    Status()                                 -> plugins: JSON list of rows
    Available()                              -> names: JSON list
    Load(name, data: JSON?)                  -> plugin: JSON
    Unload(name, mode?, reason?)             -> quit_message: JSON
    Reload(name, data: JSON?, mode?)         -> plugin: JSON
    ReloadChanged()                          -> results: JSON {name: outcome}
    Shutdown(mode?)                          -> ()
    Subscribe()                              -> ()   then server -> client:
    Event(event: JSON)                       -> ()
"""

from __future__ import annotations

import enum
import errno
import hmac
import json
import os
import socket
import stat
from typing import Any, Callable, Dict, List, Optional, Set

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from ._config import endpoint_kind, join_endpoint, split_endpoint
from ._errors import (
    AlreadyLoaded,
    CompileFailed,
    DependencyError,
    InitFailed,
    InvalidMetadata,
    InvalidName,
    InvalidTransition,
    ManagerStopped,
    NoSuchPlugin,
    PluginError,
)
from ._events import PluginEvent
from ._interfaces import IPluginManager
from ._lifecycle import ShutdownMode

__all__ = [
    "JSON",
    "ControlError",
    "NoSuchPluginError",
    "InvalidNameError",
    "AlreadyLoadedError",
    "CompileFailedError",
    "InitFailedError",
    "InvalidMetadataError",
    "DependencyFailedError",
    "ManagerStoppedError",
    "InvalidTransitionError",
    "PluginFailedError",
    "BadRequestError",
    "InternalError",
    "AuthenticationRequired",
    "AuthenticationFailed",
    "ControlChannelError",
    "Authenticate",
    "Status",
    "Available",
    "Load",
    "Unload",
    "Reload",
    "ReloadChanged",
    "Shutdown",
    "Subscribe",
    "Event",
    "ControlProtocol",
    "ControlFactory",
    "ControlService",
    "ControlClient",
    "connect",
    "event_to_json",
    "to_json",
    "check_unix_socket_path",
    "client_endpoint_for",
    "unix_socket_path",
    "MAX_BOX_BYTES",
    "MAX_BOX_KEYS",
]

#: The most bytes one incoming box may hold (keys and values).
MAX_BOX_BYTES = 4 * 1024 * 1024

#: The most keys one incoming box may hold.
MAX_BOX_KEYS = 128

#: Events sent to a subscriber and not yet acknowledged before it is
#: considered too slow and dropped.
MAX_UNACKNOWLEDGED_EVENTS = 1000

#: Seconds a connection that must authenticate has to do so.
AUTH_TIMEOUT = 10.0

#: Seconds the control service waits for its connections to close at stop.
CLOSE_TIMEOUT = 2.0

_CHUNK = 65000
_MAX_DESCRIPTION = 4000


# --- argument type -----------------------------------------------------------


class JSON(amp.Argument):
    """
    An AMP argument holding any JSON value, of any size: the encoded value
    is split over the keys C{name}, C{name.1}, C{name.2}, ... as AMP values
    are at most 65,535 bytes long. An optional argument that is absent is
    L{None}.
    """

    def toBox(self, name: bytes, strings: Any, objects: Dict[str, Any], proto: Any) -> None:
        """
        Encode C{objects[name]} as JSON into C{strings}.
        """
        value = objects.pop(name.decode("ascii"), None)
        if self.optional and value is None:
            return
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False,
                             default=_json_default).encode("utf-8")
        chunks = [encoded[i:i + _CHUNK] for i in range(0, len(encoded), _CHUNK)] or [b""]
        for index, chunk in enumerate(chunks):
            strings[name if index == 0 else b"%s.%d" % (name, index)] = chunk

    def fromBox(self, name: bytes, strings: Any, objects: Dict[str, Any], proto: Any) -> None:
        """
        Decode the JSON value of C{name} from C{strings} into C{objects}.

        @raise KeyError: when a required argument is missing.
        @raise ValueError: when the value is not JSON.
        """
        key = name.decode("ascii")
        first = strings.pop(name, None)
        if first is None:
            if self.optional:
                objects[key] = None
                return
            raise KeyError(name)
        pieces = [first]
        index = 1
        while True:
            piece = strings.pop(b"%s.%d" % (name, index), None)
            if piece is None:
                break
            pieces.append(piece)
            index += 1
        objects[key] = json.loads(b"".join(pieces).decode("utf-8"))


def _json_default(value: Any) -> Any:
    return to_json(value, _strict=False)


def to_json(value: Any, _strict: bool = True) -> Any:
    """
    Convert C{value} to something L{json.dumps} takes: enums become their
    value, attrs instances and mappings dicts, sequences lists, floats that
    are not finite strings, and anything else its C{str}.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else str(value)
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, Failure):
        return f"{value.type.__name__}: {value.getErrorMessage()}"
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if attr.has(type(value)):
        return {f.name: to_json(getattr(value, f.name)) for f in attr.fields(type(value))}
    if isinstance(value, dict) or hasattr(value, "items"):
        try:
            return {str(k): to_json(v) for k, v in value.items()}
        except Exception:
            return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    return str(value)


def event_to_json(event: PluginEvent, when: Optional[float] = None) -> Dict[str, Any]:
    """
    The JSON form of a L{PluginEvent}: C{kind}, C{plugin}, and the fields it
    carries (a failure as C{"Type: message"}, a table as name -> row).
    """
    result: Dict[str, Any] = {
        "kind": event.kind,
        "plugin": event.plugin if isinstance(event.plugin, (str, type(None)))
        else repr(event.plugin),
    }
    if when is not None:
        result["time"] = when
    for name in ("quit_message", "count", "message", "old_version", "new_version", "path"):
        value = getattr(event, name, None)
        if value is not None:
            result[name] = to_json(value)
    if event.missing:
        result["missing"] = list(event.missing)
    if event.table is not None:
        result["table"] = to_json(event.table)
    if event.failure is not None:
        result["failure"] = to_json(event.failure)
    return result


# --- errors ------------------------------------------------------------------


class ControlError(Exception):
    """
    An error the control server answered with. On the client, the exception
    a command fails with; on the server, what a responder raises.

    @cvar code: the AMP error code.
    @ivar message: the server's description.
    """

    code = b"ERROR"

    def __init__(self, message: str = "") -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self.message = message
        super().__init__(message)


class NoSuchPluginError(ControlError):
    """No plugin of that name (not loaded, or not found)."""

    code = b"NO_SUCH_PLUGIN"


class InvalidNameError(ControlError):
    """The plugin name is not a Python identifier."""

    code = b"INVALID_NAME"


class AlreadyLoadedError(ControlError):
    """A plugin of that name is already loaded."""

    code = b"ALREADY_LOADED"


class CompileFailedError(ControlError):
    """The plugin's module failed to import."""

    code = b"COMPILE_FAILED"


class InitFailedError(ControlError):
    """The plugin's constructor or start failed."""

    code = b"INIT_FAILED"


class InvalidMetadataError(ControlError):
    """The plugin's module or class does not describe a valid plugin."""

    code = b"INVALID_METADATA"


class DependencyFailedError(ControlError):
    """A plugin's requirements cannot be met, or others require it."""

    code = b"DEPENDENCY_ERROR"


class ManagerStoppedError(ControlError):
    """The manager has shut down."""

    code = b"MANAGER_STOPPED"


class InvalidTransitionError(ControlError):
    """The plugin is in a state where that operation is impossible."""

    code = b"INVALID_TRANSITION"


class PluginFailedError(ControlError):
    """Any other plugin error."""

    code = b"PLUGIN_ERROR"


class BadRequestError(ControlError):
    """The request is well formed but makes no sense (an unknown mode...)."""

    code = b"BAD_REQUEST"


class InternalError(ControlError):
    """The server failed unexpectedly; its log has the traceback."""

    code = b"INTERNAL_ERROR"


class AuthenticationRequired(ControlError):
    """A command came before L{Authenticate}; the connection is closed."""

    code = b"AUTH_REQUIRED"


class AuthenticationFailed(ControlError):
    """The token was wrong; the connection is closed."""

    code = b"AUTH_FAILED"


class ControlChannelError(Exception):
    """
    The control channel cannot listen: its socket is in use, sits in a
    directory others can write to, or the endpoint is invalid.

    @ivar endpoint: the endpoint string.
    @ivar reason: why, in words.
    """

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"control channel {endpoint!r}: {reason}")


#: Our exceptions -> the control errors they are reported as (most
#: specific first).
_PLUGIN_ERRORS = (
    (NoSuchPlugin, NoSuchPluginError),
    (InvalidName, InvalidNameError),
    (AlreadyLoaded, AlreadyLoadedError),
    (CompileFailed, CompileFailedError),
    (InitFailed, InitFailedError),
    (InvalidMetadata, InvalidMetadataError),
    (DependencyError, DependencyFailedError),
    (ManagerStopped, ManagerStoppedError),
    (InvalidTransition, InvalidTransitionError),
    (PluginError, PluginFailedError),
)

_ERROR_CLASSES = (
    NoSuchPluginError, InvalidNameError, AlreadyLoadedError, CompileFailedError,
    InitFailedError, InvalidMetadataError, DependencyFailedError, ManagerStoppedError,
    InvalidTransitionError, PluginFailedError, BadRequestError, InternalError,
    AuthenticationRequired, AuthenticationFailed,
)

_ERRORS = {cls: cls.code for cls in _ERROR_CLASSES}
_FATAL = {AuthenticationRequired: AuthenticationRequired.code,
          AuthenticationFailed: AuthenticationFailed.code}


# --- commands ------------------------------------------------------------------


class _Command(amp.Command):
    errors = _ERRORS
    fatalErrors = _FATAL


class Authenticate(_Command):
    """Present the token; required first on non-UNIX endpoints."""

    arguments = [(b"token", amp.Unicode())]
    response: List[Any] = []


class Status(_Command):
    """The plugin table: a list of rows (dicts), sorted by name."""

    arguments: List[Any] = []
    response = [(b"plugins", JSON())]


class Available(_Command):
    """The sorted names of the plugins that could be loaded."""

    arguments: List[Any] = []
    response = [(b"names", JSON())]


class Load(_Command):
    """Load and start a plugin, constructed with C{data}."""

    arguments = [(b"name", amp.Unicode()), (b"data", JSON(optional=True))]
    response = [(b"plugin", JSON())]


class Unload(_Command):
    """Shut a plugin down in C{mode} and remove it; answers its quit message."""

    arguments = [
        (b"name", amp.Unicode()),
        (b"mode", amp.Unicode(optional=True)),
        (b"reason", amp.Unicode(optional=True)),
    ]
    response = [(b"quit_message", JSON())]


class Reload(_Command):
    """Reload a plugin from its source (with new C{data} if given)."""

    arguments = [
        (b"name", amp.Unicode()),
        (b"data", JSON(optional=True)),
        (b"mode", amp.Unicode(optional=True)),
    ]
    response = [(b"plugin", JSON())]


class ReloadChanged(_Command):
    """Reload every plugin whose source changed; answers name -> outcome."""

    arguments: List[Any] = []
    response = [(b"results", JSON())]


class Shutdown(_Command):
    """Shut every plugin down; then the process stops."""

    arguments = [(b"mode", amp.Unicode(optional=True))]
    response: List[Any] = []


class Subscribe(_Command):
    """Stream every event to this connection, as L{Event} commands."""

    arguments: List[Any] = []
    response: List[Any] = []


class Event(amp.Command):
    """Server -> client: one event (see L{event_to_json})."""

    arguments = [(b"event", JSON())]
    response: List[Any] = []


# --- server ------------------------------------------------------------------


class _Malformed(Exception):
    """Input that breaks the protocol; the connection is dropped."""


def _describe_plugin(name: str, plugin: Any) -> Dict[str, Any]:
    def shown(attribute: str) -> Any:
        # Plugin code: a property may raise, a value may not convert.
        try:
            return to_json(getattr(plugin, attribute, None))
        except BaseException:
            return None

    return {"name": name, "version": shown("version"), "longname": shown("longname")}


def _mode(mode: Optional[str]) -> Optional[ShutdownMode]:
    if mode is None:
        return None
    try:
        return ShutdownMode.coerce(mode)
    except ValueError as e:
        raise BadRequestError(str(e)) from None


class ControlProtocol(amp.AMP):
    """
    One control connection, server side.

    @ivar factory: the L{ControlFactory} that built it.
    """

    _log = Logger()

    def __init__(self, factory: ControlFactory) -> None:
        super().__init__()
        self.factory = factory
        self._authenticated = factory.token is None
        self._dropped = False
        self._subscribed = False
        self._unacknowledged = 0
        self._box_bytes = 0
        self._box_keys = 0
        self._auth_timeout: Any = None
        self.closed: Deferred = Deferred()

    # connection

    def connectionMade(self) -> None:
        """
        Start the authentication timer, if a token is required.
        """
        super().connectionMade()
        if not self._authenticated:
            self._auth_timeout = self.factory.reactor.callLater(
                AUTH_TIMEOUT, self._drop, "no authentication in time"
            )

    def connectionLost(self, reason: Failure) -> None:
        """
        Unsubscribe, forget this connection.
        """
        if self._auth_timeout is not None and self._auth_timeout.active():
            self._auth_timeout.cancel()
        self._auth_timeout = None
        if self._subscribed:
            self._subscribed = False
            self.factory.manager.unregister(self._on_event)
        super().connectionLost(reason)
        self.factory.forget(self)
        closed, self.closed = self.closed, Deferred()
        closed.callback(None)

    def _peer(self) -> str:
        try:
            return str(self.transport.getPeer())
        except Exception:
            return "?"

    def _drop(self, reason: str) -> None:
        if self._dropped:
            return
        self._dropped = True
        self._log.info("control: dropping connection {peer}: {reason}",
                       peer=self._peer(), reason=reason)
        if self.transport is not None:
            self.transport.abortConnection()

    # input limits and malformed input

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}; malformed input drops this connection only.
        """
        if self._dropped:
            return
        try:
            super().dataReceived(data)
        except Exception as e:
            self._drop(f"malformed input ({type(e).__name__}: {e})"[:300])

    def proto_key(self, string: bytes) -> str:
        """
        A key (or the end of a box); count it against the box limits.
        """
        if self._dropped:
            return "init"
        if string:
            self._box_keys += 1
            self._box_bytes += len(string)
            if self._box_keys > MAX_BOX_KEYS:
                raise _Malformed(f"more than {MAX_BOX_KEYS} keys in one box")
        else:
            self._box_keys = self._box_bytes = 0
        return super().proto_key(string)

    def proto_value(self, string: bytes) -> str:
        """
        A value; count it against the box limits.
        """
        self._box_bytes += len(string)
        if self._box_bytes > MAX_BOX_BYTES:
            raise _Malformed(f"box larger than {MAX_BOX_BYTES} bytes")
        return super().proto_value(string)

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A key longer than AMP allows: drop the connection.
        """
        self._drop(f"key of {length} bytes")

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """
        Dispatch a box, unless the connection is being dropped.

        A command without C{_ask} drops the connection before it runs: every
        command of this channel is answered, and AMP would leave the failure
        of such a command (unknown, malformed, refused) to
        C{unhandledError}, which logs a traceback for anything a peer sends.
        """
        if self._dropped:
            return
        if (amp.COMMAND in box and amp.ASK not in box
                and amp.ANSWER not in box and amp.ERROR not in box):
            self._drop(f"{box[amp.COMMAND]!r} command without {amp.ASK.decode()}"[:300])
            return
        super().ampBoxReceived(box)

    def locateResponder(self, name: bytes) -> Any:
        """
        Refuse every command but L{Authenticate} until authenticated.
        """
        if not self._authenticated and name != Authenticate.commandName:
            def refuse(box: amp.AmpBox) -> Deferred:
                self._log.info("control: {peer} sent {command!r} before authenticating",
                               peer=self._peer(), command=name)
                return fail(amp.RemoteAmpError(
                    AuthenticationRequired.code,
                    "authenticate first (this control endpoint requires a token)",
                    fatal=True,
                ))
            return refuse
        return super().locateResponder(name)

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred:
        """
        Dispatch a command; arguments that do not parse drop the connection.
        """
        d = super().dispatchCommand(box)
        d.addErrback(self._dispatch_failed, box.get(amp.COMMAND))
        return d

    def _dispatch_failed(self, failure: Failure, command: Any) -> Failure:
        if failure.check(amp.RemoteAmpError):
            return failure
        if failure.check(amp.BadLocalReturn):
            self._log.failure("control: cannot encode the answer to {command!r}",
                              failure=failure, command=command)
            return Failure(amp.RemoteAmpError(InternalError.code, "internal error"))
        self._log.info(
            "control: dropping connection {peer}: malformed {command!r} command "
            "({error})", peer=self._peer(), command=command,
            error=f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300],
        )
        self._dropped = True
        return Failure(amp.RemoteAmpError(
            b"MALFORMED", f"malformed {command!r} command", fatal=True
        ))

    # error mapping

    def _map_error(self, failure: Failure, command: str, plugin: Any = None) -> Failure:
        if failure.check(ControlError):
            return failure
        for ours, theirs in _PLUGIN_ERRORS:
            if failure.check(ours):
                return Failure(theirs(str(failure.value)[:_MAX_DESCRIPTION]))
        self._log.failure("control: {command} of {plugin!r} failed unexpectedly",
                          failure=failure, command=command, plugin=plugin)
        return Failure(InternalError(
            f"{command} failed: {failure.type.__name__}: {failure.getErrorMessage()}"
            [:_MAX_DESCRIPTION]
        ))

    def _call(self, command: str, plugin: Any, f: Callable[..., Any], *a: Any,
              **kw: Any) -> Deferred:
        d = maybeDeferred(f, *a, **kw)
        d.addErrback(self._map_error, command, plugin)
        return d

    # responders

    @Authenticate.responder
    def authenticate(self, token: str) -> Dict[str, Any]:
        """
        Check the token (in constant time).
        """
        expected = self.factory.token
        if expected is not None and not hmac.compare_digest(
            token.encode("utf-8"), expected.encode("utf-8")
        ):
            self._log.warn("control: {peer} presented a wrong token", peer=self._peer())
            raise AuthenticationFailed("wrong token")
        self._authenticated = True
        if self._auth_timeout is not None and self._auth_timeout.active():
            self._auth_timeout.cancel()
        self._auth_timeout = None
        return {}

    @Status.responder
    def status(self) -> Deferred:
        """
        The plugin table.
        """
        def rows(table: Any) -> Dict[str, Any]:
            return {"plugins": [to_json(table[name]) for name in sorted(table)]}
        return self._call("status", None, self.factory.manager.plugin_table).addCallback(rows)

    @Available.responder
    def available(self) -> Deferred:
        """
        The plugins that could be loaded.
        """
        return self._call("available", None, self.factory.manager.available).addCallback(
            lambda names: {"names": list(names)}
        )

    @Load.responder
    def load(self, name: str, data: Any = None) -> Deferred:
        """
        Load a plugin.
        """
        self._log.info("control: load {plugin!r} from {peer}", plugin=name, peer=self._peer())
        d = self._call("load", name, self.factory.manager.load, name, data)
        return d.addCallback(lambda plugin: {"plugin": _describe_plugin(name, plugin)})

    @Unload.responder
    def unload(self, name: str, mode: Optional[str] = None,
               reason: Optional[str] = None) -> Deferred:
        """
        Unload a plugin.
        """
        try:
            kw: Dict[str, Any] = {"reason": reason or ""}
            if mode is not None:
                kw["mode"] = _mode(mode)
        except ControlError:
            return fail()
        self._log.info("control: unload {plugin!r} from {peer}", plugin=name, peer=self._peer())
        d = self._call("unload", name, self.factory.manager.unload, name, **kw)
        return d.addCallback(lambda quit_message: {"quit_message": to_json(quit_message)})

    @Reload.responder
    def reload(self, name: str, data: Any = None, mode: Optional[str] = None) -> Deferred:
        """
        Reload a plugin; C{data} is left unchanged when not given.
        """
        kw: Dict[str, Any] = {}
        try:
            if mode is not None:
                kw["mode"] = _mode(mode)
        except ControlError:
            return fail()
        if data is not None:
            kw["data"] = data
        self._log.info("control: reload {plugin!r} from {peer}", plugin=name, peer=self._peer())
        d = self._call("reload", name, self.factory.manager.reload, name, **kw)
        return d.addCallback(lambda plugin: {"plugin": _describe_plugin(name, plugin)})

    @ReloadChanged.responder
    def reload_changed(self) -> Deferred:
        """
        Reload what changed on disk.
        """
        def outcomes(results: Dict[str, Any]) -> Dict[str, Any]:
            out = {}
            for name, result in results.items():
                if isinstance(result, Failure):
                    out[name] = {"ok": False, "error": to_json(result)}
                else:
                    out[name] = {"ok": True, **_describe_plugin(name, result)}
            return {"results": out}
        return self._call("reload_changed", None,
                          self.factory.manager.reload_changed).addCallback(outcomes)

    @Shutdown.responder
    def shutdown(self, mode: Optional[str] = None) -> Deferred:
        """
        Shut the manager down, answer, then let the process stop.
        """
        try:
            chosen = _mode(mode) or ShutdownMode.SMART
        except ControlError:
            return fail()
        self._log.info("control: shutdown ({mode}) from {peer}", mode=chosen.value,
                       peer=self._peer())
        d = self._call("shutdown", None, self.factory.manager.shutdown, chosen)

        def done(_: Any) -> Dict[str, Any]:
            self.factory.shutdown_requested()
            return {}
        return d.addCallback(done)

    @Subscribe.responder
    def subscribe(self) -> Dict[str, Any]:
        """
        Stream events to this connection until it closes.
        """
        if not self._subscribed:
            self._subscribed = True
            self.factory.manager.register(self._on_event)
        return {}

    def _on_event(self, event: PluginEvent) -> None:
        if self._dropped or not self._subscribed:
            return
        if self._unacknowledged >= MAX_UNACKNOWLEDGED_EVENTS:
            self._drop(f"subscriber too slow ({self._unacknowledged} events unacknowledged)")
            return
        self._unacknowledged += 1
        d = self.callRemote(Event, event=event_to_json(event, self.factory.reactor.seconds()))

        def acknowledged(result: Any) -> None:
            self._unacknowledged -= 1

        def failed(failure: Failure) -> None:
            self._unacknowledged -= 1
            if not failure.check(ConnectionDone, ConnectionLost, amp.ProtocolSwitched):
                self._drop(f"event not accepted ({failure.getErrorMessage()})"[:300])
        d.addCallbacks(acknowledged, failed)


class ControlFactory(ServerFactory):
    """
    Builds L{ControlProtocol}s for one manager, and keeps track of them.

    @ivar manager: the L{IPluginManager} commands act on.
    @ivar reactor: the reactor (for timers).
    @ivar token: the shared secret a connection must present first, or
        L{None} when none is needed (UNIX sockets).
    """

    protocol = ControlProtocol  # type: ignore[assignment]

    def __init__(
        self,
        manager: IPluginManager,
        reactor: Any,
        token: Optional[str] = None,
        on_shutdown: Optional[Callable[[], object]] = None,
    ) -> None:
        self.manager = manager
        self.reactor = reactor
        self.token = token
        self._on_shutdown = on_shutdown
        self.connections: Set[ControlProtocol] = set()

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        """
        A new connection.
        """
        proto = ControlProtocol(self)
        self.connections.add(proto)
        return proto

    def forget(self, proto: ControlProtocol) -> None:
        """
        A connection closed.
        """
        self.connections.discard(proto)

    def shutdown_requested(self) -> None:
        """
        The manager was shut down through the channel: call C{on_shutdown}
        on a later reactor turn (so that the answer is sent first).
        """
        if self._on_shutdown is not None:
            self.reactor.callLater(0, self._on_shutdown)

    def close_all(self, timeout: float = CLOSE_TIMEOUT) -> Deferred:
        """
        Close every connection, flushing what is being sent; abort those
        still open after C{timeout} seconds.

        @return: a Deferred firing when all are closed.
        """
        waiting = [p.closed for p in self.connections]
        if not waiting:
            return succeed(None)
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.loseConnection()
        remaining = set(self.connections)
        done: Deferred = Deferred()

        def closed(_: Any, proto: ControlProtocol) -> None:
            remaining.discard(proto)
            if not remaining and not done.called:
                if timer.active():
                    timer.cancel()
                done.callback(None)

        def expire() -> None:
            for proto in list(remaining):
                if proto.transport is not None:
                    proto.transport.abortConnection()

        timer = self.reactor.callLater(timeout, expire)
        for proto in list(self.connections):
            proto.closed.addCallback(closed, proto)
        return done


# --- listening -----------------------------------------------------------------


def check_unix_socket_path(path: str, allow_shared_dir: bool = False) -> None:
    """
    Make C{path} ready for a control socket, or refuse.

    Refuses a directory that others can write to (unless
    C{allow_shared_dir}), a path that exists and is not a socket, and a
    socket that answers (another manager owns it). Removes a stale socket
    (connecting is refused). Synchronous but never blocks: the probe is a
    non-blocking connect on a local socket.

    @raise ControlChannelError: saying why.
    """
    endpoint = f"unix:path={path}"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)
    except OSError as e:
        raise ControlChannelError(endpoint, f"directory {directory}: {e.strerror}") from None
    if not allow_shared_dir:
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ControlChannelError(
                endpoint,
                f"directory {directory} is writable by other users (mode "
                f"{stat.S_IMODE(st.st_mode):o}); choose another place, or set "
                "manager.allow_shared_dir = true",
            )
        if st.st_uid not in (os.getuid(), 0):
            raise ControlChannelError(
                endpoint,
                f"directory {directory} belongs to another user (uid {st.st_uid}); choose "
                "another place, or set manager.allow_shared_dir = true",
            )
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ControlChannelError(endpoint, f"{path}: {e.strerror}") from None
    if not stat.S_ISSOCK(existing.st_mode):
        raise ControlChannelError(endpoint, f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        code = probe.connect_ex(path)
    finally:
        probe.close()
    if code == errno.ECONNREFUSED:
        os.unlink(path)
        Logger(namespace=__name__).info(
            "control: removed stale socket {path} (nothing answered)", path=path
        )
    elif code == errno.ENOENT:
        return
    else:
        # Connected (0), or busy (EAGAIN): someone is serving there.
        raise ControlChannelError(
            endpoint, f"{path} is in use by a running process; not taking it over"
        )


def unix_socket_path(description: str) -> Optional[str]:
    """
    The socket path of a C{unix:} endpoint string (server or client
    syntax: C{unix:PATH}, C{unix:address=PATH} or C{unix:path=PATH}), or
    L{None} if it has none or is not a C{unix:} endpoint.
    """
    if endpoint_kind(description) != "unix":
        return None
    kind, args, kwargs = split_endpoint(description)
    return kwargs.get("path") or kwargs.get("address") or (args[0] if args else None)


def client_endpoint_for(server: str) -> str:
    """
    The client endpoint string that reaches the server endpoint C{server}
    from this host (C{unix:} and C{tcp:}/C{tcp6:} only).

    @raise ValueError: for other kinds of endpoint.
    """
    kind, args, kwargs = split_endpoint(server)
    kind = kind.lower()
    if kind == "unix":
        path = unix_socket_path(server)
        if path is None:
            raise ValueError(f"{server!r} has no socket path")
        return join_endpoint("unix", [], {"path": path})
    if kind in ("tcp", "tcp6"):
        port = kwargs.get("port", args[0] if args else None)
        if port is None:
            raise ValueError(f"{server!r} has no port")
        interface = kwargs.get("interface", "")
        if interface in ("", "0.0.0.0"):
            interface = "127.0.0.1" if kind == "tcp" else "::1"
        elif interface == "::":
            interface = "::1"
        return join_endpoint("tcp", [], {"host": interface, "port": port})
    raise ValueError(f"cannot tell how to reach {server!r}; give the client endpoint")


class ControlService(Service):
    """
    Listens on the control endpoint while running.

    @ivar description: the server endpoint string.
    @ivar factory: the L{ControlFactory}.
    @ivar port: the listening port once listening, else L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        factory: ControlFactory,
        description: str,
        reactor: Any,
        allow_shared_dir: bool = False,
    ) -> None:
        kind = endpoint_kind(description)
        if kind != "unix" and not factory.token:
            raise ControlChannelError(
                description,
                "a control endpoint that is not a UNIX socket needs a token "
                "(manager.control_token or manager.control_token_file)",
            )
        self.factory = factory
        self.description = description
        self.reactor = reactor
        self.allow_shared_dir = allow_shared_dir
        self.port: Optional[IListeningPort] = None
        self._listening: Optional[Deferred] = None

    def privilegedStartService(self) -> None:
        """
        Listen (before privileges are dropped, under twistd).

        @raise ControlChannelError: if listening is impossible.
        """
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """
        Listen, unless already listening.

        @raise ControlChannelError: if listening is impossible.
        """
        Service.startService(self)
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        description = self.description
        unix = endpoint_kind(description) == "unix"
        if unix:
            try:
                kind, args, kwargs = split_endpoint(description)
            except ValueError as e:
                raise ControlChannelError(description, str(e)) from None
            path = unix_socket_path(description)
            if not path:
                raise ControlChannelError(description, "no socket path")
            check_unix_socket_path(path, self.allow_shared_dir)
            # Twisted's server syntax names the path "address"; accept "path"
            # too, as clients spell it.
            kwargs.pop("path", None)
            if args:
                args = args[1:]
            kwargs["address"] = path
            kwargs.setdefault("mode", "600")
            description = join_endpoint(kind, args, kwargs)
        try:
            endpoint = serverFromString(self.reactor, description)
        except Exception as e:
            raise ControlChannelError(
                self.description, f"invalid endpoint ({type(e).__name__}: {e})"
            ) from None
        old_umask = os.umask(0o177) if unix else None
        try:
            d = endpoint.listen(self.factory)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        self._listening = d
        outcome: List[Any] = []

        def record(result: Any) -> Any:
            outcome.append(result)
            return result

        d.addBoth(record)
        if outcome:
            if isinstance(outcome[0], Failure):
                self._listening = None
                failure = outcome[0]
                d.addErrback(lambda _: None)
                raise ControlChannelError(
                    self.description, f"cannot listen: {failure.getErrorMessage()}"
                )
            self._listened(outcome[0])
        else:
            # An endpoint that listens later: its failure goes to the log.
            def failed(failure: Failure) -> None:
                self._listening = None
                self._log.failure("control: cannot listen on {endpoint}", failure=failure,
                                  endpoint=self.description)
            d.addCallbacks(self._listened, failed)

    def _listened(self, port: IListeningPort) -> None:
        self.port = port
        self._log.info("control: listening on {endpoint}", endpoint=self.description)

    def stopService(self) -> Deferred:
        """
        Stop listening, then close the connections (flushing answers).
        """
        Service.stopService(self)
        port, self.port = self.port, None
        self._listening = None
        d = maybeDeferred(port.stopListening) if port is not None else succeed(None)
        d.addCallback(lambda _: self.factory.close_all())
        return d


# --- client --------------------------------------------------------------------


class _ClientProtocol(amp.AMP):
    def __init__(self) -> None:
        super().__init__()
        self.on_event: Optional[Callable[[Dict[str, Any]], object]] = None
        self.closed: Deferred = Deferred()

    @Event.responder
    def event(self, event: Dict[str, Any]) -> Dict[str, Any]:
        if self.on_event is not None:
            self.on_event(event)
        return {}

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.closed.callback(None)


class ControlClient:
    """
    A connection to a running manager's control channel. Every method
    returns a Deferred; a command the server refuses fails with a
    L{ControlError} subclass.

    @ivar closed: a Deferred firing when the connection closes.
    """

    def __init__(self, protocol: _ClientProtocol) -> None:
        self._protocol = protocol
        self.closed = protocol.closed

    def authenticate(self, token: str) -> Deferred:
        """Present the token."""
        return self._protocol.callRemote(Authenticate, token=token)

    def status(self) -> Deferred:
        """The plugin table: a list of rows (dicts)."""
        return self._protocol.callRemote(Status).addCallback(lambda r: r["plugins"])

    def available(self) -> Deferred:
        """The names of the plugins that could be loaded."""
        return self._protocol.callRemote(Available).addCallback(lambda r: r["names"])

    def load(self, name: str, data: Any = None) -> Deferred:
        """Load a plugin; fires with {name, version, longname}."""
        return self._protocol.callRemote(Load, name=name, data=data).addCallback(
            lambda r: r["plugin"])

    def unload(self, name: str, mode: Optional[str] = None,
               reason: Optional[str] = None) -> Deferred:
        """Unload a plugin; fires with its quit message."""
        return self._protocol.callRemote(Unload, name=name, mode=mode, reason=reason) \
            .addCallback(lambda r: r["quit_message"])

    def reload(self, name: str, data: Any = None, mode: Optional[str] = None) -> Deferred:
        """Reload a plugin; fires with {name, version, longname}."""
        return self._protocol.callRemote(Reload, name=name, data=data, mode=mode) \
            .addCallback(lambda r: r["plugin"])

    def reload_changed(self) -> Deferred:
        """Reload what changed; fires with name -> {ok, ...}."""
        return self._protocol.callRemote(ReloadChanged).addCallback(lambda r: r["results"])

    def shutdown(self, mode: Optional[str] = None) -> Deferred:
        """Shut the manager (and its process) down."""
        return self._protocol.callRemote(Shutdown, mode=mode)

    def subscribe(self, on_event: Callable[[Dict[str, Any]], object]) -> Deferred:
        """Call C{on_event} with every event (a dict) from now on."""
        self._protocol.on_event = on_event
        return self._protocol.callRemote(Subscribe)

    def close(self) -> Deferred:
        """Close the connection; fires when closed."""
        if self._protocol.transport is not None:
            self._protocol.transport.loseConnection()
        return self.closed


def connect(reactor: IReactorCore, description: str, token: Optional[str] = None) -> Deferred:
    """
    Connect to a control channel at the client endpoint C{description}
    (authenticating with C{token} if given).

    @return: a Deferred firing with a L{ControlClient}.
    """
    try:
        endpoint = clientFromString(reactor, description)
    except Exception as e:
        return fail(ValueError(f"invalid control endpoint {description!r}: {e}"))
    d = connectProtocol(endpoint, _ClientProtocol())
    d.addCallback(ControlClient)
    if token is not None:
        def authenticate(client: ControlClient) -> Deferred:
            return client.authenticate(token).addCallback(lambda _: client)
        d.addCallback(authenticate)
    return d

