"""
The server's answers to an operator's questions, beyond loading and
unloading: L{Info} (a plugin in full, its files checked on disk), L{Catalog}
(what could be loaded, and what is broken), L{Call} and L{Emit} (a
handler's answers), L{Reconfig} (what SIGHUP does) and L{Ready} (for a
readiness probe).

L{OperatorCommands} is the base of the server's protocol: it holds these
responders and how any responder's failure becomes an answer
(L{OperatorCommands._call}): a L{PluginError} is answered as the row of
L{WIRE_ERRORS<twisted_plugmgr._control._wire.WIRE_ERRORS>} that reports it,
without a traceback in the log (the manager has reported it already);
anything else is an L{InternalError}, logged once as a Failure.

Files are read and compiled off the reactor thread (L{run_blocking}), never
imported.

The reconfig is the daemon's (C{twisted_plugmgr._reconfig}, which imports
the settings, which import this package): it is known here by its shape
only, an outcome with the fields of C{ReconfigOutcome}, a refusal an
exception with a one-line C{reason} (C{ReconfigRefused}).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, cast

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._deferreds import run_blocking
from .._inspect import catalog, check_files
from .._interfaces import IPluginManager
from ._wire import (
    BadRequestError,
    Call,
    Catalog,
    ControlError,
    Emit,
    Info,
    InternalError,
    NotAvailableError,
    PluginFailedError,
    QuietAMP,
    Ready,
    Reconfig,
    ReconfigRefusedError,
    reported_as,
    to_json,
)

__all__ = ["OperatorCommands", "Hooks", "NO_RECONFIG", "MAX_DESCRIPTION"]

#: The longest error description sent to a client.
MAX_DESCRIPTION = 4000

#: The longest C{repr} of a result that is not JSON-serialisable.
_MAX_REPR = 4000

#: The answer to L{Reconfig} of a manager without a config file.
NO_RECONFIG = "reconfig is not available: this manager was not started from a config file"

#: The state of a plugin that serves.
_RUNNING = "running"


class Hooks(Protocol):
    """
    What L{OperatorCommands} needs of its factory (a L{ControlFactory}).

    @ivar manager: the manager.
    @ivar reactor: the reactor (its thread pool reads the files).
    @ivar reconfig: the daemon's reconfig, or L{None}.
    @ivar readiness: the daemon's readiness, or L{None}.
    """

    manager: IPluginManager
    reactor: IReactorTime
    reconfig: Optional[Callable[[], Deferred[Any]]]
    readiness: Optional[Callable[[], Mapping[str, str]]]


def _answer(value: Any) -> Dict[str, Any]:
    """
    A handler's result on the wire: C{{"value": value}}, or C{{"repr":
    ...}} when it is not JSON-serialisable.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except Exception as e:  # plugin code: its __repr__ may raise
            text = f"<unrepresentable {type(value).__name__}: {type(e).__name__}>"
        return {"repr": text[:_MAX_REPR]}
    return {"value": value}


#: The fields of a reconfig's outcome (C{ReconfigOutcome}).
_OUTCOME_FIELDS = ("loaded", "unloaded", "reloaded", "policy", "failed", "manager_policy")


def _outcome(result: Any) -> Dict[str, Any]:
    """
    The JSON form of a reconfig's outcome, with C{changed}.
    """
    fields = {name: to_json(getattr(result, name, None)) for name in _OUTCOME_FIELDS}
    for name in _OUTCOME_FIELDS[:-1]:
        fields[name] = list(fields[name] or ())
    fields["manager_policy"] = bool(fields["manager_policy"])
    changed = getattr(result, "changed", None)
    fields["changed"] = (bool(changed) if changed is not None
                         else any(v for k, v in fields.items() if k != "failed"))
    return fields


def _refusal(error: BaseException) -> Optional[str]:
    """
    The reason of a reconfig's refusal (an exception with a C{reason}
    string), in one line, or L{None} for any other error.
    """
    reason = getattr(error, "reason", None)
    return " ".join(reason.split()) if isinstance(reason, str) else None


def _arguments(args: Any) -> List[Any]:
    """
    The positional arguments of L{Call} or L{Emit} (absent: none).

    @raise BadRequestError: when C{args} is not an array.
    """
    if args is None:
        return []
    if not isinstance(args, list):
        raise BadRequestError("invalid args: expected an array of the handler's arguments")
    return args


class OperatorCommands(QuietAMP):
    """
    The responders of L{Info}, L{Catalog}, L{Call}, L{Emit}, L{Reconfig}
    and L{Ready}, and the error mapping of every responder.

    @ivar factory: the factory, providing what L{Hooks} describes.
    """

    _log = Logger()

    @property
    def hooks(self) -> Hooks:
        """
        The factory, as what these responders need of it.
        """
        return cast(Hooks, self.factory)

    def _peer(self) -> str:
        """
        Who is connected, for the log: C{host:port} over TCP, C{the UNIX
        socket} (a local peer has no address), else the address as text.
        """
        try:
            peer = self.transport.getPeer() if self.transport is not None else None
        except Exception:
            return "?"
        if peer is None:
            return "?"
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is not None and port is not None:
            return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        if hasattr(peer, "name"):
            name = peer.name
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            return f"the UNIX socket{' ' + name if name else ''}"
        return str(peer)

    def _map_error(self, failure: Failure, command: str, plugin: Any = None) -> Failure:
        if failure.check(ControlError):
            return failure
        wire = reported_as(failure.value)
        if wire is not None:
            return Failure(wire(str(failure.value)[:MAX_DESCRIPTION]))
        self._log.failure("control: {command} of {plugin!r} failed unexpectedly",
                          failure=failure, command=command, plugin=plugin)
        return Failure(InternalError(
            f"{command} failed: {failure.type.__name__}: {failure.getErrorMessage()}"
            [:MAX_DESCRIPTION]
        ))

    def _call(self, command: str, plugin: Any, f: Callable[..., Any], *a: Any,
              **kw: Any) -> Deferred[Any]:
        d = maybeDeferred(f, *a, **kw)
        d.addErrback(self._map_error, command, plugin)
        return d

    @Info.responder
    def plugin_info(self, name: str) -> Deferred[Dict[str, Any]]:
        """
        A plugin in full; its files compared with the disk, in a thread.
        """
        def checked(details: Any) -> Deferred[Dict[str, Any]]:
            described = to_json(details)
            d = run_blocking(self.hooks.reactor, check_files, dict(details.files))

            def answer(checks: Any) -> Dict[str, Any]:
                described["files"] = to_json(checks)
                return {"details": described}
            return d.addCallback(answer)

        d = self._call("info", name, self.hooks.manager.details, name)
        d.addCallback(checked)
        return d.addErrback(self._map_error, "info", name)

    @Catalog.responder
    def catalog(self) -> Deferred[Dict[str, Any]]:
        """
        Each plugin that could be loaded, and whether its file compiles.
        """
        manager = self.hooks.manager

        def look(_: Any) -> Deferred[Any]:
            table = manager.plugin_table()
            loaded = {name: getattr(row, "source", None) for name, row in table.items()}
            names = sorted(set(manager.available()) | set(loaded))
            packages: Sequence[str] = tuple(getattr(manager, "packages", ()))
            paths: Sequence[str] = tuple(getattr(manager, "paths", ()))
            return run_blocking(self.hooks.reactor, catalog, names, loaded, packages, paths)

        d = self._call("catalog", None, look, None)
        d.addCallback(lambda entries: {"plugins": to_json(entries)})
        return d.addErrback(self._map_error, "catalog", None)

    def _handler_failed(self, failure: Failure, name: Optional[str], event: str) -> Failure:
        """
        A handler's own failure is the plugin's (the manager broadcast it
        as C{plugin_error}): answered naming it, not logged again.
        """
        if failure.check(ControlError) or reported_as(failure.value) is not None:
            return self._map_error(failure, "call" if name else "emit", name)
        where = f"plugin {name!r}: handler of {event!r}" if name else f"handler of {event!r}"
        text = " ".join(f"{where} raised {failure.type.__name__}: "
                        f"{failure.getErrorMessage()}".split())
        return Failure(PluginFailedError(text[:MAX_DESCRIPTION]))

    @Call.responder
    def call(self, name: str, event: str, args: Any = None) -> Deferred[Dict[str, Any]]:
        """
        Call plugin C{name}'s handler of C{event}; answer its result.
        """
        try:
            arguments = _arguments(args)
        except ControlError:
            return fail()
        d = maybeDeferred(self.hooks.manager.call, name, event, *arguments)
        d.addCallbacks(lambda value: {"result": _answer(value)}, self._handler_failed,
                       errbackArgs=(name, event))
        return d

    @Emit.responder
    def emit(self, event: str, args: Any = None) -> Deferred[Dict[str, Any]]:
        """
        Call every handler of C{event}; answer their results, in order.
        """
        try:
            arguments = _arguments(args)
        except ControlError:
            return fail()
        d = maybeDeferred(self.hooks.manager.emit, event, *arguments)
        d.addCallbacks(lambda values: {"results": [_answer(v) for v in values]},
                       self._handler_failed, errbackArgs=(None, event))
        return d

    @Reconfig.responder
    def reconfig(self) -> Deferred[Dict[str, Any]]:
        """
        Apply the config file again; answer what changed.
        """
        hook = self.hooks.reconfig
        if hook is None:
            return fail(NotAvailableError(NO_RECONFIG))
        self._log.info("control: reconfig from {peer}", peer=self._peer())

        def refused(failure: Failure) -> Failure:
            reason = _refusal(failure.value)
            if reason is not None:
                return Failure(ReconfigRefusedError(reason[:MAX_DESCRIPTION]))
            return failure

        d: Deferred[Any] = maybeDeferred(hook)
        d.addCallbacks(lambda result: {"outcome": _outcome(result)}, refused)
        return d.addErrback(self._map_error, "reconfig", None)

    @Ready.responder
    def ready(self) -> Deferred[Dict[str, Any]]:
        """
        Whether every enabled plugin (without a config file: every loaded
        one) is running, and each one's state.
        """
        def states(_: Any) -> Dict[str, Any]:
            hook = self.hooks.readiness
            if hook is None:
                table = self.hooks.manager.plugin_table()
                found = {name: str(to_json(row.state)) for name, row in table.items()}
            else:
                found = {str(name): str(state) for name, state in hook().items()}
            plugins = dict(sorted(found.items()))
            return {"ready": all(s == _RUNNING for s in plugins.values()), "plugins": plugins}

        return self._call("ready", None, states, None)
