"""
The exceptions of twisted-plugmgr.

Every error is a L{PluginError}; each one carries the name of the plugin it
is about (C{plugin}) and, where something raised, the L{Failure} of what
went wrong (C{failure}), so that a caller or a listener can tell exactly
what failed without parsing a message.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from twisted.python.failure import Failure

__all__ = [
    "PluginError",
    "InvalidName",
    "NoSuchPlugin",
    "CompileFailed",
    "InitFailed",
    "AlreadyLoaded",
    "InvalidMetadata",
    "InvalidData",
    "AmbiguousPlugin",
    "ManagerStopped",
    "NoSuchHandler",
    "HandlerAbandoned",
    "DependencyError",
    "ShutdownFailed",
    "ShutdownTimedOut",
    "StartTimedOut",
    "InvalidTransition",
    "PluginQuarantined",
    "ReloadFailed",
    "CallTimedOut",
    "PluginCrashed",
    "RemoteError",
]


class PluginError(Exception):
    """
    Base class of every error raised by twisted-plugmgr.

    @ivar plugin: the name of the plugin concerned (as given by the caller,
        which may be a bad name), or L{None} when no plugin is concerned.
    @ivar failure: the L{Failure} that caused this error, if any.
    """

    def __init__(
        self,
        plugin: Any = None,
        detail: str = "",
        failure: Optional[Failure] = None,
    ) -> None:
        self.plugin = plugin
        self.detail = detail
        self.failure = failure
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"plugin {self.plugin!r}: {self.describe()}"
        if self.detail:
            text += f": {self.detail}"
        if self.failure is not None:
            text += f" ({self.failure.type.__name__}: {self.failure.getErrorMessage()})"
        return text

    def describe(self) -> str:
        """
        A short, human description of this kind of error.
        """
        return "plugin error"


class InvalidName(PluginError):
    """
    A plugin name is not a Python identifier (or not a string at all).
    Raised before anything is imported.
    """

    def describe(self) -> str:
        return "invalid plugin name (a plugin name is a Python identifier)"


class NoSuchPlugin(PluginError):
    """
    No plugin of that name: not found in the configured packages and paths,
    or not loaded.
    """

    def describe(self) -> str:
        return "no such plugin"


class HandlerAbandoned(NoSuchPlugin):
    """
    The plugin was unloaded or reloaded before its handler's Deferred
    answered; the caller of C{call} gets this, and an C{emit} goes on
    without that handler's result.
    """

    def describe(self) -> str:
        return "gone before its handler answered"


class CompileFailed(PluginError):
    """
    The plugin's module raised while being imported (C{SyntaxError}
    included); C{failure} holds what it raised.
    """

    def describe(self) -> str:
        return "module failed to import"


class InitFailed(PluginError):
    """
    The plugin's constructor or its C{startService} raised or failed;
    C{failure} holds what it raised.
    """

    def describe(self) -> str:
        return "plugin failed to initialise"


class AlreadyLoaded(PluginError):
    """
    A plugin of that name is already loaded.
    """

    def describe(self) -> str:
        return "already loaded"


class InvalidMetadata(PluginError):
    """
    The plugin's module or class does not describe a valid plugin: no plugin
    class or several, a C{name} missing or different from the loaded name,
    a missing C{version}, badly formed C{requires} or handlers.

    @ivar problems: the list of problems found, each a sentence.
    """

    def __init__(
        self, plugin: Any = None, problems: Iterable[str] = (), failure: Optional[Failure] = None
    ) -> None:
        self.problems = tuple(problems)
        super().__init__(plugin, "; ".join(self.problems), failure)

    def describe(self) -> str:
        return "invalid plugin metadata"


class InvalidData(PluginError):
    """
    The data a plugin was given does not fit the schema its class declares
    (its C{Config}): a required key missing, an unknown key, a value of the
    wrong type or not among the allowed ones. Raised before the plugin's
    constructor runs; nothing of the plugin is left.

    @ivar problems: each problem, a sentence naming the key and what was
        expected.
    @ivar keys: the key of each problem, in the same order (dotted for a
        nested table, C{"servers[1].port"}; C{""} for the data as a whole).
    """

    def __init__(
        self, plugin: Any = None, problems: Iterable[str] = (), keys: Iterable[str] = (),
        failure: Optional[Failure] = None,
    ) -> None:
        self.problems = tuple(problems)
        self.keys = tuple(keys)
        super().__init__(plugin, "; ".join(self.problems), failure)

    def describe(self) -> str:
        return "invalid data"


class AmbiguousPlugin(PluginError):
    """
    A plugin name is found in more than one kind of place: as an entry point
    of an installed distribution and in the manager's packages or paths.
    Nothing is imported.

    @ivar places: where it was found, each described for a person.
    """

    def __init__(self, plugin: Any = None, places: Iterable[str] = ()) -> None:
        self.places = tuple(places)
        super().__init__(plugin, "found as " + " and as ".join(self.places))

    def describe(self) -> str:
        return "ambiguous plugin name"


class ManagerStopped(PluginError):
    """
    The plugin manager has shut down (or is shutting down) and takes no new
    plugins.
    """

    def describe(self) -> str:
        return "the plugin manager has shut down"


class NoSuchHandler(PluginError):
    """
    A plugin was called with an event it has no handler for, and it has no
    C{default} method.

    @ivar event: the event name.
    """

    def __init__(self, plugin: Any = None, event: str = "") -> None:
        self.event = event
        super().__init__(plugin, f"no handler for event {event!r}")

    def describe(self) -> str:
        return "no such handler"


class DependencyError(PluginError):
    """
    A plugin's requirements cannot be met (missing or cyclic), or a plugin
    that others require cannot be unloaded alone.

    @ivar chain: the plugin names involved, in order.
    @ivar requirement: the requirement that could not be loaded, when that
        is what failed (its error is C{failure}: the first in the chain of
        requirements that is not itself a requirement failing).
    """

    def __init__(
        self, plugin: Any = None, chain: Iterable[str] = (), detail: str = "",
        failure: Optional[Failure] = None, requirement: Optional[str] = None,
    ) -> None:
        self.chain = tuple(chain)
        self.requirement = requirement
        text = detail or " -> ".join(self.chain)
        super().__init__(plugin, text, failure)

    def describe(self) -> str:
        return "dependency error"


class ShutdownFailed(PluginError):
    """
    A plugin's C{shutdown} raised or failed. The plugin was removed anyway;
    C{failure} holds what went wrong.
    """

    def describe(self) -> str:
        return "shutdown failed; the plugin was removed anyway"


class ShutdownTimedOut(ShutdownFailed):
    """
    A plugin's C{shutdown} did not finish within the deadline of its mode.
    The plugin was removed anyway.

    @ivar mode: the shutdown mode.
    @ivar seconds: the deadline that passed.
    """

    def __init__(self, plugin: Any = None, mode: Any = None, seconds: float = 0.0) -> None:
        self.mode = mode
        self.seconds = seconds
        super().__init__(plugin, f"no answer within {seconds:g}s in mode {getattr(mode, 'value', mode)!s}")

    def describe(self) -> str:
        return "shutdown timed out; the plugin was removed anyway"


class StartTimedOut(PluginError):
    """
    A plugin's C{startService} did not finish within the start deadline.

    @ivar seconds: the deadline that passed.
    """

    def __init__(self, plugin: Any = None, seconds: float = 0.0) -> None:
        self.seconds = seconds
        super().__init__(plugin, f"no answer within {seconds:g}s")

    def describe(self) -> str:
        return "start timed out"


class InvalidTransition(PluginError):
    """
    An operation was asked of a plugin in a state where it is impossible
    (for example: starting a plugin that is stopping).

    @ivar state: the state the plugin was in.
    @ivar transition: the transition that was refused.
    """

    def __init__(self, plugin: Any = None, state: Any = None, transition: str = "") -> None:
        self.state = state
        self.transition = transition
        super().__init__(
            plugin, f"cannot {transition} while {getattr(state, 'value', state)}"
        )

    def describe(self) -> str:
        return "invalid state transition"


class PluginQuarantined(PluginError):
    """
    The plugin failed more often than its restart policy allows within its
    window: it answers nothing until it is loaded again, reset, reloaded or
    unloaded.
    """

    def describe(self) -> str:
        return "plugin quarantined"


class ReloadFailed(PluginError):
    """
    A reload of several plugins in one transaction failed: C{plugin} names
    the plugin that failed, and nothing of the transaction remains (every
    plugin runs the version it ran before).
    """

    def describe(self) -> str:
        return "the transaction failed"


class CallTimedOut(PluginError):
    """
    A handler of an isolated plugin did not answer within its
    C{call_deadline}: its worker process was killed, and the plugin failed
    (C{cause="timeout"}).

    @ivar handler: the name of the handler method.
    @ivar seconds: the deadline that passed.
    """

    def __init__(self, plugin: Any = None, handler: str = "", seconds: float = 0.0) -> None:
        self.handler = handler
        self.seconds = seconds
        super().__init__(plugin, f"handler {handler} gave no answer within {seconds:g}s; "
                                 "its worker was killed")

    def describe(self) -> str:
        return "call timed out"


class PluginCrashed(PluginError):
    """
    The worker process of an isolated plugin ended while it was wanted (it
    exited, or a signal killed it): the calls in flight fail with this.

    @ivar exit_code: the worker's exit status, or L{None} if a signal ended it.
    @ivar signal: the number of the signal that ended it, or L{None}.
    """

    def __init__(self, plugin: Any = None, exit_code: Optional[int] = None,
                 signal: Optional[int] = None, detail: str = "") -> None:
        self.exit_code = exit_code
        self.signal = signal
        if not detail:
            detail = (f"killed by signal {signal}" if signal is not None
                      else f"exit status {exit_code}")
        super().__init__(plugin, f"its worker process ended ({detail})")

    def describe(self) -> str:
        return "isolated plugin crashed"


class RemoteError(PluginError):
    """
    An isolated plugin's code raised an exception that cannot travel back
    to the manager as itself (it cannot be pickled or unpickled).

    @ivar type_name: the qualified name of the exception's type.
    @ivar remote_traceback: the traceback, as text, from the worker.
    """

    def __init__(self, plugin: Any = None, type_name: str = "", message: str = "",
                 remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(plugin, f"{type_name}: {message}" if type_name else message)

    def describe(self) -> str:
        return "error in the isolated plugin"
