"""
The server side of the control channel: one L{ControlProtocol} per
connection, answering the commands of
L{_wire<twisted_plugmgr._control._wire>} for an L{IPluginManager}, and the
L{ControlFactory} that builds them and closes them all at stop.

Malformed input (a box that is not an AMP command, a command without
C{_ask}, an argument that does not parse, a key or value too long, a box too
big) drops that connection only, with one line in the log; the service and
the other connections go on. A connection that must authenticate (a token
is set) may send nothing but L{Authenticate} first.

Input that parses but makes no sense (an unknown mode, a policy that is not
an object of valid restart policy keys, names that are not an array of
strings, data for several plugins that is not an object) is answered with
L{BadRequestError}, one line naming what is wrong, before the manager is
asked anything.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Dict, Mapping, Optional, Set

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport, ITransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._errors import NoSuchPlugin, PluginError
from .._events import PluginEvent
from .._interfaces import IPluginManager
from .._lifecycle import ShutdownMode
from ._arguments import (
    data_of_each,
    isolation_options,
    plugin_names,
    policy_keys,
    shutdown_mode,
)
from ._operations import OperatorCommands
from ._wire import (
    Authenticate,
    AuthenticationFailed,
    AuthenticationRequired,
    Available,
    ControlError,
    Event,
    InternalError,
    Load,
    Reload,
    ReloadChanged,
    ReloadMany,
    Reset,
    Shutdown,
    Status,
    Subscribe,
    Unload,
    event_to_json,
    to_json,
)

__all__ = [
    "ControlProtocol",
    "ControlFactory",
    "MAX_BOX_BYTES",
    "MAX_BOX_KEYS",
    "MAX_UNACKNOWLEDGED_EVENTS",
    "AUTH_TIMEOUT",
    "CLOSE_TIMEOUT",
]

#: The most bytes one incoming box may hold (keys and values).
MAX_BOX_BYTES = 4 * 1024 * 1024

#: The most keys one incoming box may hold.
MAX_BOX_KEYS = 128

#: Events sent to a subscriber and not yet acknowledged before it is
#: considered too slow and dropped (the default of a L{ControlFactory}).
MAX_UNACKNOWLEDGED_EVENTS = 1000

#: Seconds a connection that must authenticate has to do so.
AUTH_TIMEOUT = 10.0

#: Seconds the control service waits for its connections to close at stop.
CLOSE_TIMEOUT = 2.0

class _Malformed(Exception):
    """Input that breaks the protocol; the connection is dropped."""


def _describe_plugin(name: str, plugin: Any, row: Any = None) -> Dict[str, Any]:
    """
    The JSON description of C{plugin}, loaded as C{name}: its C{version}
    and C{longname} (from the instance), C{restarts}, C{last_failure},
    C{isolated} and C{pid} (from C{row}, its row of the plugin table;
    L{None} without one).
    """
    def shown(source: Any, attribute: str) -> Any:
        # Plugin code: a property may raise, a value may not convert.
        try:
            return to_json(getattr(source, attribute, None))
        except BaseException:
            return None

    return {"name": name, "version": shown(plugin, "version"),
            "longname": shown(plugin, "longname"), "restarts": shown(row, "restarts"),
            "last_failure": shown(row, "last_failure"), "isolated": shown(row, "isolated"),
            "pid": shown(row, "pid")}


def _abort(transport: Optional[ITransport]) -> None:
    """
    Close C{transport} now, without flushing what is being sent (when it can
    do that; otherwise close it as soon as it has).
    """
    if transport is None:
        return
    if ITCPTransport.providedBy(transport):
        ITCPTransport(transport).abortConnection()
    else:
        transport.loseConnection()


class ControlProtocol(OperatorCommands):
    """
    One control connection, server side.

    @ivar factory: the L{ControlFactory} that built it.
    @ivar closed: a Deferred firing when the connection has closed.
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
        self._auth_timeout: Optional[IDelayedCall] = None
        self.closed: Deferred[None] = Deferred()

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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Unsubscribe, forget this connection.
        """
        self._cancel_auth_timeout()
        if self._subscribed:
            self._subscribed = False
            self.factory.manager.unregister(self._on_event)
        super().connectionLost(reason)
        self.factory.forget(self)
        closed, self.closed = self.closed, Deferred()
        closed.callback(None)

    def _cancel_auth_timeout(self) -> None:
        if self._auth_timeout is not None and self._auth_timeout.active():
            self._auth_timeout.cancel()
        self._auth_timeout = None

    def _drop(self, reason: str) -> None:
        if self._dropped:
            return
        self._dropped = True
        self._log.info("control: dropping connection {peer}: {reason}",
                       peer=self._peer(), reason=reason)
        _abort(self.transport)

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
            def refuse(box: amp.AmpBox) -> Deferred[Any]:
                self._log.info("control: {peer} sent {command!r} before authenticating",
                               peer=self._peer(), command=name)
                return fail(amp.RemoteAmpError(
                    AuthenticationRequired.code,
                    "authenticate first (this control endpoint requires a token)",
                    fatal=True,
                ))
            return refuse
        return super().locateResponder(name)

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred[Any]:
        """
        Dispatch a command; arguments that do not parse drop the connection.
        """
        d: Deferred[Any] = super().dispatchCommand(box)
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

    def _info(self, name: str) -> Any:
        """
        The table row of C{name}, to describe a plugin with once a command
        is done (L{None} if the manager cannot give it: the command was
        done). Read without broadcasting C{plugin_table}.
        """
        try:
            return self.factory.manager.info(name)
        except NoSuchPlugin:
            return None
        except Exception:
            self._log.failure("control: cannot read the row of {plugin!r}", plugin=name)
            return None

    def _isolation_after(self, name: str, changes: Dict[str, Any]) -> Dict[str, Any]:
        """
        The isolation options plugin C{name} is to have: those given before
        with C{changes} made (a change to L{None} drops the option; a new
        C{limits} replaces the old one whole). When the manager cannot say
        what was given before (the plugin is not loaded, say), C{changes}
        alone: the reload then fails and says why.
        """
        try:
            before = dict(self.factory.manager.details(name).isolation_options)
        except PluginError:
            before = {}
        except Exception:
            self._log.failure("control: cannot read the isolation of {plugin!r}", plugin=name)
            before = {}
        before.update(changes)
        return {key: value for key, value in before.items() if value is not None}

    def _described(self, plugin: Any, name: str) -> Dict[str, Any]:
        """
        The answer of a command done to C{name}: C{plugin}, described.
        """
        return {"plugin": _describe_plugin(name, plugin, self._info(name))}

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
        self._cancel_auth_timeout()
        return {}

    @Status.responder
    def status(self) -> Deferred[Dict[str, Any]]:
        """
        The plugin table.
        """
        def rows(table: Any) -> Dict[str, Any]:
            return {"plugins": [to_json(table[name]) for name in sorted(table)]}
        return self._call("status", None, self.factory.manager.plugin_table).addCallback(rows)

    @Available.responder
    def available(self) -> Deferred[Dict[str, Any]]:
        """
        The plugins that could be loaded.
        """
        return self._call("available", None, self.factory.manager.available).addCallback(
            lambda names: {"names": list(names)}
        )

    @Load.responder
    def load(self, name: str, data: Any = None, policy: Any = None,
             isolation: Any = None) -> Deferred[Dict[str, Any]]:
        """
        Load a plugin, under the restart policy keys of C{policy} and with
        the isolation options of C{isolation} if given (checked first: a
        bad one is refused, and nothing is loaded).
        """
        try:
            keys = policy_keys(policy)
            options = isolation_options(isolation)
        except ControlError:
            return fail()
        self._log.info("control: load {plugin!r} from {peer}{policy}{isolation}", plugin=name,
                       peer=self._peer(), policy=f" (policy {keys})" if keys else "",
                       isolation=f" (isolation {options})" if options else "")
        d = self._call("load", name, self.factory.manager.load, name, data, **keys, **options)
        return d.addCallback(self._described, name)

    @Unload.responder
    def unload(self, name: str, mode: Optional[str] = None,
               reason: Optional[str] = None) -> Deferred[Dict[str, Any]]:
        """
        Unload a plugin.
        """
        try:
            kw: Dict[str, Any] = {"reason": reason or ""}
            if mode is not None:
                kw["mode"] = shutdown_mode(mode)
        except ControlError:
            return fail()
        self._log.info("control: unload {plugin!r} from {peer}", plugin=name, peer=self._peer())
        d = self._call("unload", name, self.factory.manager.unload, name, **kw)
        return d.addCallback(lambda quit_message: {"quit_message": to_json(quit_message)})

    @Reload.responder
    def reload(self, name: str, data: Any = None, mode: Optional[str] = None,
               isolation: Any = None) -> Deferred[Dict[str, Any]]:
        """
        Reload a plugin; C{data} is left unchanged when not given. The
        isolation options of C{isolation} change those given before (at
        load, by the config file or by a reload); a null one drops its
        value, the others stay.
        """
        kw: Dict[str, Any] = {}
        try:
            if mode is not None:
                kw["mode"] = shutdown_mode(mode)
            if isolation is not None:
                kw["isolation"] = self._isolation_after(
                    name, isolation_options(isolation, nulls=True))
        except ControlError:
            return fail()
        if data is not None:
            kw["data"] = data
        self._log.info("control: reload {plugin!r} from {peer}{isolation}", plugin=name,
                       peer=self._peer(), isolation=f" (isolation {kw['isolation']})"
                       if "isolation" in kw else "")
        d = self._call("reload", name, self.factory.manager.reload, name, **kw)
        return d.addCallback(self._described, name)

    @ReloadMany.responder
    def reload_many(self, names: Any, data: Any = None,
                    mode: Optional[str] = None) -> Deferred[Dict[str, Any]]:
        """
        Reload several plugins in one transaction; answer {name: version}.
        Bad arguments are refused before the manager is asked anything.
        """
        kw: Dict[str, Any] = {}
        try:
            chosen = plugin_names(names)
            kw["data"] = data_of_each(data)
            if mode is not None:
                kw["mode"] = shutdown_mode(mode)
        except ControlError:
            return fail()
        self._log.info("control: reload {plugins} in one transaction from {peer}",
                       plugins=", ".join(map(repr, chosen))[:300] or "nothing",
                       peer=self._peer())
        d = self._call("reload_many", chosen, self.factory.manager.reload_many, chosen, **kw)
        return d.addCallback(
            lambda versions: {"versions": {str(name): to_json(version)
                                           for name, version in versions.items()}})

    @Reset.responder
    def reset(self, name: str) -> Deferred[Dict[str, Any]]:
        """
        Clear a plugin's restart count; start a quarantined one afresh.
        """
        self._log.info("control: reset {plugin!r} from {peer}", plugin=name, peer=self._peer())
        d = self._call("reset", name, self.factory.manager.reset, name)
        return d.addCallback(self._described, name)

    @ReloadChanged.responder
    def reload_changed(self) -> Deferred[Dict[str, Any]]:
        """
        Reload what changed on disk.
        """
        def outcomes(results: Dict[str, Any]) -> Dict[str, Any]:
            out = {}
            for name, result in results.items():
                if isinstance(result, Failure):
                    out[name] = {"ok": False, "error": to_json(result)}
                else:
                    out[name] = {"ok": True, **_describe_plugin(name, result, self._info(name))}
            return {"results": out}
        return self._call("reload_changed", None,
                          self.factory.manager.reload_changed).addCallback(outcomes)

    @Shutdown.responder
    def shutdown(self, mode: Optional[str] = None) -> Deferred[Dict[str, Any]]:
        """
        Shut the manager down, answer, then let the process stop.
        """
        try:
            chosen = shutdown_mode(mode) or ShutdownMode.SMART
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
        if self._unacknowledged >= self.factory.max_unacknowledged:
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
    Quiet: it logs neither its start nor its stop (C{noisy} is false).

    @ivar manager: the L{IPluginManager} commands act on.
    @ivar reactor: the reactor (for timers).
    @ivar token: the shared secret a connection must present first, or
        L{None} when none is needed (UNIX sockets).
    @ivar max_unacknowledged: how many events a subscriber may leave
        unacknowledged before it is dropped as too slow.
    @ivar reconfig: what L{Reconfig} runs (the daemon's SIGHUP reconfig: a
        Deferred firing with a C{ReconfigOutcome}, failing with
        C{ReconfigRefused}), or L{None}: the manager was not started from a
        config file, and L{Reconfig} is answered with L{NotAvailableError}.
    @ivar readiness: what L{Ready} asks (each plugin the config file
        enables -> its state, C{"running"} when it serves), or L{None}:
        ready means every loaded plugin runs.
    @ivar connections: the open connections.
    """

    protocol = ControlProtocol
    noisy = False

    def __init__(
        self,
        manager: IPluginManager,
        reactor: IReactorTime,
        token: Optional[str] = None,
        on_shutdown: Optional[Callable[[], object]] = None,
        max_unacknowledged: int = MAX_UNACKNOWLEDGED_EVENTS,
        reconfig: Optional[Callable[[], Deferred[Any]]] = None,
        readiness: Optional[Callable[[], Mapping[str, str]]] = None,
    ) -> None:
        self.manager = manager
        self.reactor = reactor
        self.token = token
        self.max_unacknowledged = max_unacknowledged
        self.reconfig = reconfig
        self.readiness = readiness
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

    def close_all(self, timeout: float = CLOSE_TIMEOUT) -> Deferred[None]:
        """
        Close every connection, flushing what is being sent; abort those
        still open after C{timeout} seconds.

        @return: a Deferred firing when all are closed.
        """
        if not self.connections:
            return succeed(None)
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.loseConnection()
        remaining = set(self.connections)
        done: Deferred[None] = Deferred()

        def closed(_: Any, proto: ControlProtocol) -> None:
            remaining.discard(proto)
            if not remaining and not done.called:
                if timer.active():
                    timer.cancel()
                done.callback(None)

        def expire() -> None:
            for proto in list(remaining):
                _abort(proto.transport)

        timer = self.reactor.callLater(timeout, expire)
        for proto in list(self.connections):
            proto.closed.addCallback(closed, proto)
        return done
