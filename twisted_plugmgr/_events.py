"""
Events: what the manager tells its listeners, and the listener registry.

A listener is any callable that takes one L{PluginEvent}. Events reach the
listeners synchronously, in the order they happen, in registration order;
every event is also logged through C{twisted.logger} with its fields.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import attr
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ._errors import (
    AlreadyLoaded,
    CompileFailed,
    DependencyError,
    HandlerAbandoned,
    InitFailed,
    InvalidMetadata,
    InvalidName,
    ManagerStopped,
    NoSuchPlugin,
    PluginError,
)
from ._tracebacks import for_the_log

__all__ = [
    "PluginEvent",
    "Listener",
    "Listeners",
    "EVENT_KINDS",
    "FAILURE_KINDS",
    "LOAD_FAILURES",
    "Reporter",
]

#: Every kind of event the manager broadcasts.
EVENT_KINDS: Tuple[str, ...] = (
    "plugin_started",
    "plugin_compile_failed",
    "plugin_init_failed",
    "plugin_invalid_values",
    "plugin_error",
    "plugin_warning",
    "plugin_unloaded",
    "plugin_unload_failed",
    "plugin_waiting",
    "plugin_table",
    "plugin_manager_shutdown",
    "plugin_reloaded",
    "plugin_reload_failed",
    "plugin_available",
    "plugin_source_removed",
    "plugin_failed",
    "plugin_restarting",
    "plugin_quarantined",
)

#: The kinds of event that carry a Failure and are logged as failures.
FAILURE_KINDS = frozenset(
    {
        "plugin_compile_failed",
        "plugin_init_failed",
        "plugin_error",
        "plugin_unload_failed",
        "plugin_reload_failed",
        "plugin_failed",
        "plugin_quarantined",
    }
)

#: For each kind of load failure, most specific first: the event broadcast
#: and its C{reason}. POE's event names are kept; the reason tells apart the
#: causes that share C{plugin_compile_failed}.
LOAD_FAILURES: Tuple[Tuple[type, str, str], ...] = (
    (InvalidName, "plugin_compile_failed", "invalid_name"),
    (AlreadyLoaded, "plugin_compile_failed", "already_loaded"),
    (ManagerStopped, "plugin_compile_failed", "manager_stopped"),
    (NoSuchPlugin, "plugin_compile_failed", "not_found"),
    (CompileFailed, "plugin_compile_failed", "compile_error"),
    (InvalidMetadata, "plugin_invalid_values", "invalid_metadata"),
    (DependencyError, "plugin_init_failed", "dependency_failed"),
    (InitFailed, "plugin_init_failed", "init_failed"),
    (PluginError, "plugin_compile_failed", "error"),
)

_LEVELS: Mapping[str, LogLevel] = {
    # A refused unload is the caller's mistake, not a fault of the service.
    "plugin_unload_failed": LogLevel.warn,
    "plugin_warning": LogLevel.warn,
    "plugin_table": LogLevel.debug,
    "plugin_waiting": LogLevel.info,
    "plugin_restarting": LogLevel.warn,
}


#: The errors that are the caller's mistake, not a fault of a plugin.
_CALLER_MISTAKES: Tuple[type, ...] = (InvalidName, NoSuchPlugin, AlreadyLoaded, ManagerStopped)


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class PluginEvent:
    """
    Something that happened to a plugin or to the manager.

    @ivar kind: one of L{EVENT_KINDS}, such as C{"plugin_started"}.
    @ivar plugin: the name of the plugin concerned (as the caller gave it:
        it may be an invalid name), or L{None}.
    @ivar failure: what went wrong, for the failure kinds.
    @ivar quit_message: what the plugin's shutdown returned
        (C{plugin_unloaded}).
    @ivar count: plugins still pending (C{plugin_waiting}).
    @ivar missing: metadata attributes the plugin lacks
        (C{plugin_invalid_values}).
    @ivar table: name -> L{PluginInfo} (C{plugin_table}).
    @ivar message: a human sentence (warnings, details).
    @ivar old_version: the version replaced (C{plugin_reloaded}).
    @ivar new_version: the version now running (C{plugin_reloaded}).
    @ivar path: a source file (C{plugin_available},
        C{plugin_source_removed}).
    @ivar reason: why, as one of a few fixed words, for the events whose
        cause a program may want to tell apart (see L{LOAD_FAILURES} and
        L{_stopping.UNLOAD_REASONS}).
    @ivar cause: what kind of failure (C{plugin_failed}): C{"fail"},
        C{"error"}, C{"crash"}, C{"timeout"} or C{"start"}.
    @ivar attempt: which restart this is in the window (C{plugin_restarting}).
    @ivar delay: seconds before the restart (C{plugin_restarting}).
    @ivar restarts: restarts in the window when it was quarantined
        (C{plugin_quarantined}).
    """

    kind: str
    plugin: Any = None
    failure: Optional[Failure] = None
    quit_message: Any = None
    count: Optional[int] = None
    missing: Tuple[str, ...] = ()
    table: Optional[Mapping[str, Any]] = None
    message: Optional[str] = None
    old_version: Optional[str] = None
    new_version: Optional[str] = None
    path: Optional[str] = None
    reason: Optional[str] = None
    cause: Optional[str] = None
    attempt: Optional[int] = None
    delay: Optional[float] = None
    restarts: Optional[int] = None


def safe_repr(value: Any) -> str:
    """
    C{repr(value)}, or a placeholder when that raises (plugin objects may).
    """
    try:
        return repr(value)
    except BaseException:
        return f"<unrepresentable {type(value).__name__}>"


def safe_str(value: Any) -> Optional[str]:
    """
    C{str(value)} (L{None} stays L{None}), or a placeholder when that
    raises.
    """
    if value is None:
        return None
    try:
        return str(value)
    except BaseException:
        return f"<unprintable {type(value).__name__}>"


#: The type of a listener.
Listener = Callable[[PluginEvent], object]


class Listeners:
    """
    The listeners of one manager, in registration order.

    What is logged stays quiet: C{plugin_table} events (one each time
    someone reads the table: C{plugmgr status}, C{!plugins}, a dashboard)
    are not logged unless C{log_tables} is true (then at debug level); a
    plugin that only lacks optional metadata (C{plugin_invalid_values}) is
    logged at info level the first time for each plugin name, at debug level
    after (every event still reaches the listeners).

    @param log: where events are logged.
    @param log_tables: log C{plugin_table} events too.
    """

    def __init__(self, log: Optional[Logger] = None, *, log_tables: bool = False) -> None:
        self._listeners: List[Listener] = []
        self._log = log if log is not None else Logger(namespace="twisted_plugmgr.events")
        self.log_tables = log_tables
        self._told_missing: Set[str] = set()

    def register(self, listener: Listener) -> None:
        """
        Add C{listener}; registering the same listener twice is one
        registration.
        """
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {listener!r}")
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unregister(self, listener: Listener) -> None:
        """
        Remove C{listener}; removing one that is not registered does nothing.
        """
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def __len__(self) -> int:
        return len(self._listeners)

    def broadcast(self, event: PluginEvent) -> None:
        """
        Log C{event}, then give it to every listener in registration order.
        A listener that raises is logged and changes nothing else.
        """
        if event.kind != "plugin_table" or self.log_tables:
            self._logEvent(event)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except BaseException:
                # Deliberately broad: a listener's SystemExit must not take
                # the manager down either.
                failure = Failure()
                failure.cleanFailure()
                self._log.failure(
                    "listener {listener!r} raised on {kind} of {plugin!r}",
                    failure=for_the_log(failure) or failure,
                    listener=listener,
                    kind=event.kind,
                    plugin=event.plugin,
                )

    def _logEvent(self, event: PluginEvent) -> None:
        # Only plain values go into the log event: until logging begins,
        # Twisted buffers log events, and a buffered event that held a plugin
        # instance or a live traceback would keep an old plugin alive.
        fields: Dict[str, Any] = {
            "kind": event.kind,
            "plugin": event.plugin if isinstance(event.plugin, str) else safe_repr(event.plugin),
        }
        text = "{kind} {plugin}"
        for name in ("reason", "cause", "attempt", "delay", "restarts", "quit_message", "count",
                     "message", "old_version", "new_version", "path"):
            value = getattr(event, name)
            if value is not None:
                fields[name] = value if isinstance(value, (str, int, float)) else safe_repr(value)
                text += f" {name}={{{name}}}"
        if event.missing:
            fields["missing"] = ", ".join(event.missing)
            text += " missing={missing}"
        if event.table is not None:
            fields["plugins"] = ", ".join(sorted(event.table))
            text += " plugins=[{plugins}]"
        if event.failure is None:
            self._log.emit(self._level(event), text, **fields)
            return
        event.failure.cleanFailure()
        if "message" not in fields:
            fields["error"] = safe_str(event.failure.getErrorMessage())
            text += " error={error}"
        shown = for_the_log(event.failure)
        if shown is None:
            # An expected error, or one whose cause the message names: one
            # line, no traceback through the manager.
            self._log.emit(self._level(event), text, **fields)
        else:
            # The traceback of the plugin's own code (see for_the_log).
            self._log.failure(text, failure=shown, level=self._level(event), **fields)

    def _level(self, event: PluginEvent) -> LogLevel:
        """
        The level of C{event}'s log line: a caller's mistake (a bad or
        unknown name, a plugin loaded already, a manager that shut down) is a
        warning; other failures are errors; the rest as L{_LEVELS} says.
        """
        if event.failure is not None and event.failure.check(*_CALLER_MISTAKES) and not \
                event.failure.check(HandlerAbandoned):
            return LogLevel.warn
        if event.kind == "plugin_invalid_values" and event.failure is None:
            # Only optional metadata missing: worth one line per plugin.
            key = event.plugin if isinstance(event.plugin, str) else safe_repr(event.plugin)
            first = key not in self._told_missing
            self._told_missing.add(key)
            return LogLevel.info if first else LogLevel.debug
        default = LogLevel.error if event.failure is not None else LogLevel.info
        return _LEVELS.get(event.kind, default)


class Reporter:
    """
    How the manager and its helpers say what happened: each method builds
    one L{PluginEvent} and gives it to the L{Listeners}.
    """

    def __init__(self, listeners: Listeners) -> None:
        self.listeners = listeners

    def broadcast(self, kind: str, plugin: Any = None, **fields: Any) -> None:
        """
        Broadcast an event of C{kind} about C{plugin} with C{fields}.
        """
        self.listeners.broadcast(PluginEvent(kind=kind, plugin=plugin, **fields))

    def error(self, plugin: Any, failure: Failure) -> None:
        """
        Broadcast C{plugin_error}.
        """
        self.broadcast("plugin_error", plugin, failure=failure)

    def warning(self, plugin: Any, message: str) -> None:
        """
        Broadcast C{plugin_warning}.
        """
        self.broadcast("plugin_warning", plugin, message=message)

    def load_failed(self, plugin: Any, error: PluginError) -> None:
        """
        Broadcast the event of C{error}'s kind of load failure (see
        L{LOAD_FAILURES}), with its C{reason}.
        """
        for kind, event, reason in LOAD_FAILURES:
            if isinstance(error, kind):
                self.broadcast(event, plugin, failure=Failure(error), message=str(error),
                               reason=reason)
                return
