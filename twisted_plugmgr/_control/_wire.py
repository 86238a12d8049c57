"""
The control channel's wire protocol, as both ends see it: the JSON argument
type, how values and events become JSON, the errors a command answers with
(and the one table that says which L{PluginError} each reports), the
commands, and the quiet AMP base both ends are built on.

Every JSON value may be split over the keys C{name}, C{name.1}, C{name.2},
...::

    Authenticate(token)                      -> ()
    Status()                                 -> plugins: JSON list of rows
    Available()                              -> names: JSON list
    Load(name, data: JSON?, policy: JSON?, isolation: JSON?)
                                             -> plugin: JSON
    Unload(name, mode?, reason?)             -> quit_message: JSON
    Reload(name, data: JSON?, mode?, isolation: JSON?)
                                             -> plugin: JSON
    ReloadMany(names: JSON, data: JSON?, mode?)
                                             -> versions: JSON {name: version}
    ReloadChanged()                          -> results: JSON {name: outcome}
    Reset(name)                              -> plugin: JSON
    Shutdown(mode?)                          -> ()
    Subscribe()                              -> ()   then server -> client:
    Event(event: JSON)                       -> ()
    Info(name)                               -> details: JSON
    Catalog()                                -> plugins: JSON list
    Call(name, event, args: JSON?)           -> result: JSON
    Emit(event, args: JSON?)                 -> results: JSON list
    Reconfig()                               -> outcome: JSON
    Ready()                                  -> ready: JSON, plugins: JSON

The last six are newer than the others: a manager that does not know one
answers it with AMP's C{UNHANDLED} error, which the CLI reports as "not
supported by this manager".

C{Info} is everything the manager knows of a plugin
(L{IPluginManager.details}: C{info}, its row; C{requires}, C{dependents},
C{policy}, C{old_versions}) and C{files}: each source file that runs,
C{{path, status, compile_error}}, C{status} C{"unchanged"}, C{"changed"}
or C{"missing"} (compared with the disk off the reactor thread, compiled
when changed, never imported). C{Catalog} is each plugin that could be
loaded, C{{name, status, path, error}}, C{status} C{"loaded"}, C{"not
loaded"} or C{"broken"} (its file does not compile; C{error} says why).

C{Call} and C{Emit} take the handler's positional arguments as a JSON
array; a result is C{{"value": V}}, or C{{"repr": R}} when it is not
JSON-serialisable. A handler that raises is answered with
L{PluginFailedError}, naming it.

C{Reconfig} does what SIGHUP does and answers C{{loaded, unloaded,
reloaded, policy, manager_policy, changed}}; refused (the file is invalid,
or a step failed: nothing changed) with L{ReconfigRefusedError}.
C{Ready} answers whether every plugin the config file enables is running,
and each one's state (C{plugins}: name -> state or C{"not loaded"});
without a config file, every loaded plugin. A manager started without a
config file answers C{Reconfig} with L{NotAvailableError}.

A plugin is described as C{{name, version, longname, restarts,
last_failure, isolated, pid}}; a row of C{Status} is the whole
L{PluginInfo}. A C{policy} is an object of restart policy keys
(L{twisted_plugmgr._policy.POLICY_KEYS}; null: not given), checked by the
server before anything is done. So is an C{isolation}, an object of
isolation options (C{isolate}, C{call_deadline}, C{limits}, as in a
plugin's config section). Given to C{Load}, a null option is not given;
given to C{Reload}, the options change those given before (at load, by the
config file or by an earlier reload), a null one dropping its value (the
class's own then applies), the others kept. A manager older than
C{isolation} ignores it: the description's C{isolated} is then absent.

C{ReloadMany} reloads running plugins in one transaction, applied completely
or not at all (L{IPluginManager.reload_many}): C{names} is an array of
plugin names (empty: nothing to do, answered with C{{}}), C{data} an object
of name -> new data for those whose data changes. A failure is answered
with L{ReloadFailedError}, its description naming the plugin that failed;
every plugin then runs what it ran before.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, Optional, Tuple, Type

import attr
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._errors import (
    AlreadyLoaded,
    AmbiguousPlugin,
    CallTimedOut,
    CompileFailed,
    DependencyError,
    InitFailed,
    InvalidData,
    InvalidMetadata,
    InvalidName,
    InvalidTransition,
    ManagerStopped,
    NoSuchPlugin,
    PluginCrashed,
    PluginError,
    PluginQuarantined,
    ReloadFailed,
)
from .._events import PluginEvent

__all__ = [
    "JSON",
    "to_json",
    "event_to_json",
    "ControlError",
    "NoSuchPluginError",
    "InvalidNameError",
    "AlreadyLoadedError",
    "CompileFailedError",
    "InitFailedError",
    "InvalidMetadataError",
    "InvalidDataError",
    "AmbiguousPluginError",
    "DependencyFailedError",
    "ManagerStoppedError",
    "InvalidTransitionError",
    "PluginQuarantinedError",
    "ReloadFailedError",
    "PluginFailedError",
    "CallTimedOutError",
    "PluginCrashedError",
    "BadRequestError",
    "InternalError",
    "AuthenticationRequired",
    "AuthenticationFailed",
    "WireError",
    "WIRE_ERRORS",
    "reported_as",
    "Authenticate",
    "Status",
    "Available",
    "Load",
    "Unload",
    "Reload",
    "ReloadMany",
    "ReloadChanged",
    "Reset",
    "Shutdown",
    "Subscribe",
    "Event",
    "Info",
    "Catalog",
    "Call",
    "Emit",
    "Reconfig",
    "Ready",
    "ReconfigRefusedError",
    "NotAvailableError",
    "QuietAMP",
]

#: The most bytes of encoded JSON in one AMP value (AMP allows 65,535).
_CHUNK = 65000

#: The optional fields of a L{PluginEvent} that L{event_to_json} carries
#: when they are set.
_EVENT_FIELDS = ("quit_message", "count", "message", "old_version", "new_version", "path",
                 "reason", "cause", "attempt", "delay", "restarts")


# --- JSON values ---------------------------------------------------------------


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
                             default=to_json).encode("utf-8")
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


def to_json(value: Any) -> Any:
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
    The JSON form of a L{PluginEvent}: C{kind}, C{plugin}, C{time} (when
    given), and the fields it carries (a failure as C{"Type: message"}, a
    table as name -> row); a field that is not set is left out.
    """
    result: Dict[str, Any] = {
        "kind": event.kind,
        "plugin": event.plugin if isinstance(event.plugin, (str, type(None)))
        else repr(event.plugin),
    }
    if when is not None:
        result["time"] = when
    for name in _EVENT_FIELDS:
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


# --- errors ----------------------------------------------------------------------


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


class InvalidDataError(ControlError):
    """The data given to a plugin does not fit its C{Config} schema."""
    code = b"INVALID_DATA"


class AmbiguousPluginError(ControlError):
    """A plugin name is both an entry point and in the packages or paths."""
    code = b"AMBIGUOUS_PLUGIN"


class DependencyFailedError(ControlError):
    """A plugin's requirements cannot be met, or others require it."""

    code = b"DEPENDENCY_ERROR"


class ManagerStoppedError(ControlError):
    """The manager has shut down."""

    code = b"MANAGER_STOPPED"


class InvalidTransitionError(ControlError):
    """The plugin is in a state where that operation is impossible."""

    code = b"INVALID_TRANSITION"


class PluginQuarantinedError(ControlError):
    """The plugin failed too often and is quarantined until it is reset."""

    code = b"PLUGIN_QUARANTINED"


class ReloadFailedError(ControlError):
    """
    A reload of several plugins in one transaction failed; its description
    names the plugin that failed. Nothing of it remains: every plugin runs
    what it ran before.
    """

    code = b"RELOAD_FAILED"


class ReconfigRefusedError(ControlError):
    """
    A reconfig changed nothing: the config file is invalid, or a step of it
    failed and was rolled back; the description says which.
    """

    code = b"RECONFIG_REFUSED"


class NotAvailableError(ControlError):
    """
    The manager cannot do that command as it was started (a reconfig of a
    manager started without a config file).
    """

    code = b"NOT_AVAILABLE"


class CallTimedOutError(ControlError):
    """
    A handler of an isolated plugin gave no answer within its
    C{call_deadline}: its worker was killed, and the plugin failed.
    """

    code = b"CALL_TIMED_OUT"


class PluginCrashedError(ControlError):
    """The worker process of an isolated plugin ended while it was wanted."""

    code = b"PLUGIN_CRASHED"


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


@attr.s(frozen=True, slots=True, auto_attribs=True)
class WireError:
    """
    One row of L{WIRE_ERRORS}: an error a command may answer with.

    @ivar error: the exception class (its C{code} is what goes on the wire).
    @ivar reports: the L{PluginError} class the server reports as C{error}
        (subclasses included, unless they have a row of their own), or
        L{None} for the errors of the channel itself.
    @ivar fatal: whether the server closes the connection after answering
        with it.
    """

    error: Type[ControlError]
    reports: Optional[Type[PluginError]] = None
    fatal: bool = False

    @property
    def code(self) -> bytes:
        """
        The AMP error code.
        """
        return self.error.code


#: Every error a command answers with, each once. The commands' C{errors}
#: and C{fatalErrors}, and what the server reports a L{PluginError} as
#: (L{reported_as}), all come from this table.
WIRE_ERRORS: Tuple[WireError, ...] = (
    WireError(NoSuchPluginError, NoSuchPlugin),
    WireError(InvalidNameError, InvalidName),
    WireError(AlreadyLoadedError, AlreadyLoaded),
    WireError(CompileFailedError, CompileFailed),
    WireError(InitFailedError, InitFailed),
    WireError(InvalidMetadataError, InvalidMetadata),
    WireError(InvalidDataError, InvalidData),
    WireError(AmbiguousPluginError, AmbiguousPlugin),
    WireError(DependencyFailedError, DependencyError),
    WireError(ManagerStoppedError, ManagerStopped),
    WireError(InvalidTransitionError, InvalidTransition),
    WireError(PluginQuarantinedError, PluginQuarantined),
    WireError(ReloadFailedError, ReloadFailed),
    WireError(CallTimedOutError, CallTimedOut),
    WireError(PluginCrashedError, PluginCrashed),
    WireError(PluginFailedError, PluginError),
    WireError(ReconfigRefusedError),
    WireError(NotAvailableError),
    WireError(BadRequestError),
    WireError(InternalError),
    WireError(AuthenticationRequired, fatal=True),
    WireError(AuthenticationFailed, fatal=True),
)


def reported_as(error: BaseException) -> Optional[Type[ControlError]]:
    """
    The error the server answers with for C{error}: the row of
    L{WIRE_ERRORS} that reports its nearest class, or L{None} when no row
    does (it is not a L{PluginError}).
    """
    reports = {row.reports: row.error for row in WIRE_ERRORS if row.reports is not None}
    for cls in type(error).__mro__:
        if cls in reports:
            return reports[cls]
    return None


def _amp_errors(fatal: bool) -> Dict[Type[Exception], bytes]:
    """
    C{errors} (or C{fatalErrors}) for AMP commands, from L{WIRE_ERRORS}.
    """
    return {row.error: row.code for row in WIRE_ERRORS if row.fatal is fatal}


# --- commands ----------------------------------------------------------------------


class _Command(amp.Command):
    errors = _amp_errors(fatal=False)
    fatalErrors = _amp_errors(fatal=True)


class Authenticate(_Command):
    """Present the token; required first on non-UNIX endpoints."""

    arguments = [(b"token", amp.Unicode())]
    response = []


class Status(_Command):
    """The plugin table: a list of rows (dicts), sorted by name."""

    arguments = []
    response = [(b"plugins", JSON())]


class Available(_Command):
    """The sorted names of the plugins that could be loaded."""

    arguments = []
    response = [(b"names", JSON())]


class Load(_Command):
    """
    Load and start a plugin, constructed with C{data}, under the restart
    policy keys of C{policy} and with the isolation options of
    C{isolation} (objects; absent: none given).
    """

    arguments = [
        (b"name", amp.Unicode()),
        (b"data", JSON(optional=True)),
        (b"policy", JSON(optional=True)),
        (b"isolation", JSON(optional=True)),
    ]
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
    """
    Reload a plugin from its source (with new C{data} if given; the
    isolation options of C{isolation} changed, null dropping one).
    """

    arguments = [
        (b"name", amp.Unicode()),
        (b"data", JSON(optional=True)),
        (b"mode", amp.Unicode(optional=True)),
        (b"isolation", JSON(optional=True)),
    ]
    response = [(b"plugin", JSON())]


class ReloadMany(_Command):
    """
    Reload the running plugins C{names} (an array of names) in one
    transaction, with the new data of C{data} (an object: name -> data) for
    those it names; answers {name: new version}.
    """

    arguments = [
        (b"names", JSON()),
        (b"data", JSON(optional=True)),
        (b"mode", amp.Unicode(optional=True)),
    ]
    response = [(b"versions", JSON())]


class ReloadChanged(_Command):
    """Reload every plugin whose source changed; answers name -> outcome."""

    arguments = []
    response = [(b"results", JSON())]


class Reset(_Command):
    """
    Clear a plugin's restart count; a quarantined plugin is started afresh.
    """

    arguments = [(b"name", amp.Unicode())]
    response = [(b"plugin", JSON())]


class Shutdown(_Command):
    """Shut every plugin down; then the process stops."""

    arguments = [(b"mode", amp.Unicode(optional=True))]
    response = []


class Subscribe(_Command):
    """Stream every event to this connection, as L{Event} commands."""

    arguments = []
    response = []


class Event(amp.Command):
    """Server -> client: one event (see L{event_to_json})."""

    arguments = [(b"event", JSON())]
    response = []


class Info(_Command):
    """Everything the manager knows of one plugin, its files checked on disk."""

    arguments = [(b"name", amp.Unicode())]
    response = [(b"details", JSON())]


class Catalog(_Command):
    """Each plugin that could be loaded: loaded, not loaded or broken."""

    arguments = []
    response = [(b"plugins", JSON())]


class Call(_Command):
    """Call a plugin's handler of C{event} with the positional C{args}."""

    arguments = [
        (b"name", amp.Unicode()),
        (b"event", amp.Unicode()),
        (b"args", JSON(optional=True)),
    ]
    response = [(b"result", JSON())]


class Emit(_Command):
    """Call every handler of C{event} with the positional C{args}."""

    arguments = [
        (b"event", amp.Unicode()),
        (b"args", JSON(optional=True)),
    ]
    response = [(b"results", JSON())]


class Reconfig(_Command):
    """Re-read the config file and apply it, as SIGHUP does."""

    arguments = []
    response = [(b"outcome", JSON())]


class Ready(_Command):
    """Whether every enabled plugin is running, and each one's state."""

    arguments = []
    response = [(b"ready", JSON()), (b"plugins", JSON())]


# --- the AMP base of both ends ------------------------------------------------------


class QuietAMP(amp.AMP):
    """
    An L{amp.AMP} that logs the opening and closing of its connection at
    debug level, where AMP logs both at info: a control channel sees a
    connection per command line run, and operators need not read them.
    """

    _log = Logger()

    def makeConnection(self, transport: ITransport) -> None:
        """
        Connect, logging at debug level.
        """
        self._log.debug("{protocol} connection made (peer {peer})",
                        protocol=type(self).__name__, peer=transport.getPeer())
        # What amp.AMP.makeConnection does, but its info-level line.
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Disconnect, logging at debug level.
        """
        self._log.debug("{protocol} connection lost ({reason})",
                        protocol=type(self).__name__, reason=reason.getErrorMessage())
        # What amp.AMP.connectionLost does, but its info-level line.
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
