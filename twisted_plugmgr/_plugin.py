"""
What a plugin is made of and what it is given: the L{Plugin} base class,
the L{PluginAPI} (with the plugin-scoped reactor of L{_reactor}), and live
references to other plugins.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import NoSuchPlugin, PluginError
from ._interfaces import IIsolated, IPlugin, IPluginAPI, IPluginHost
from ._lifecycle import ShutdownMode
from ._reactor import PluginReactor

__all__ = ["Plugin", "PluginAPI", "LiveReference", "cross_process"]


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
    state across a reload, C{migrate_state(old_version, state)} to turn the
    state of an older version (whose C{state_version} it is given) into its
    own, and C{default(event, *args, **kw)} to receive the events posted or
    called to it that it has no handler for.

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
    #: The version of the state C{get_state} gives (an int or a string);
    #: the next version's C{migrate_state(old_version, state)}, where it is
    #: defined, is given it.
    state_version: Any = None

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

    def _managed(self) -> bool:
        """
        Whether it is the child of the manager that loaded it.
        """
        api = getattr(self, "api", None)
        manager = getattr(api, "manager", None)
        return manager is not None and getattr(self, "parent", None) is manager

    def setServiceParent(self, parent: Any) -> None:
        """
        As L{Service.setServiceParent}, but refused while the plugin is the
        child of its manager: a plugin has one parent.

        @raise PluginError: naming the plugin, while its manager has it.
        """
        if self._managed():
            raise PluginError(self.api.name, "it is a child of its plugin manager and cannot be "
                                             "given another parent (api.stop() ends it)")
        Service.setServiceParent(self, parent)

    def stopService(self) -> Deferred:
        """
        A plugin that stops itself ends itself: while its manager runs it,
        this is L{PluginAPI.stop} (it is unloaded). Elsewhere, stop as a
        plain child service would: L{shutdown} in C{SMART} mode.
        """
        if self._managed() and self.running:
            return self.api.stop(f"{self.api.name} called stopService")
        Service.stopService(self)
        return maybeDeferred(self.shutdown, ShutdownMode.SMART, "service stopped")


def cross_process(caller: Optional[str], target: str) -> PluginError:
    """
    The error of a live reference from plugin C{caller} to C{target} across
    a process boundary (C{target} runs isolated in its own worker).
    """
    return PluginError(caller, f"api.plugin({target!r}) cannot reach across processes: "
                               f"{target!r} runs isolated in a worker process of its own, "
                               f"{caller!r} does not; use api.call({target!r}, ...)")


class LiveReference:
    """
    A reference to the plugin loaded under a name, whatever its instance:
    every attribute is looked up on the instance loaded now, so a reference
    held across a reload reaches the new instance.

    @raise NoSuchPlugin: on use, when no plugin of that name is loaded.
    """

    __slots__ = ("_manager", "_name", "_caller")

    def __init__(self, manager: IPluginHost, name: str, caller: Optional[str] = None) -> None:
        object.__setattr__(self, "_manager", manager)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_caller", caller)

    def _instance(self) -> Any:
        instance = self._manager.instance_of(self._name)
        if IIsolated.providedBy(instance):
            raise cross_process(self._caller, self._name)
        return instance

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._instance(), attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._instance(), attribute, value)

    def __repr__(self) -> str:
        return f"<LiveReference to plugin {self._name!r}>"


@implementer(IPluginAPI)
class PluginAPI:
    """
    What a plugin is given to talk to its manager and the other plugins.

    @ivar name: the name the plugin is loaded under.
    @ivar manager: the L{PluginManager} (it provides L{IPluginManager}, and
        L{IPluginHost} for this API).
    @ivar log: a L{Logger<twisted.logger.Logger>} namespaced to the plugin.
    @ivar reactor: the plugin-scoped L{PluginReactor}.
    """

    def __init__(self, manager: Any, name: str, reactor: IReactorTime,
                 host: Optional[IPluginHost] = None) -> None:
        self.name = name
        self.manager = manager
        self._host: IPluginHost = host if host is not None else manager
        self.log = Logger(namespace=f"twisted_plugmgr.plugins.{name}")
        self.reactor = PluginReactor(
            reactor, name, on_error=lambda failure: self._host.timer_error(name, self, failure),
            on_crash=lambda failure: self._host.timer_error(name, self, failure, report=False),
        )

    @property
    def host(self) -> IPluginHost:
        """
        The L{IPluginHost} this API reports to (what an isolated plugin's
        stand-in forwards its worker's reports to).
        """
        return self._host

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

        @raise PluginError: naming both plugins, when C{name} runs isolated
            in a worker process (use L{call}); also on use of the reference
            if it becomes so.
        """
        try:
            target = self._host.instance_of(name)
        except NoSuchPlugin:
            target = None
        if IIsolated.providedBy(target):
            raise cross_process(self.name, name)
        return LiveReference(self._host, name, self.name)

    def looping_call(self, f: Callable[..., Any], *args: Any, **kw: Any) -> LoopingCall:
        """
        L{PluginReactor.looping_call}.
        """
        return self.reactor.looping_call(f, *args, **kw)

    def fail(self, reason: Any = None) -> None:
        """
        Say this plugin is broken (its upstream is gone for good, its state
        is corrupt): C{plugin_failed} is broadcast (C{cause="fail"}) and its
        restart policy decides: a fresh instance after a delay, quarantine,
        or unload. It is never left running.

        @param reason: a Failure, an exception, or a sentence.
        """
        if isinstance(reason, Failure):
            failure = reason
        elif isinstance(reason, BaseException):
            failure = Failure(reason)
        else:
            failure = Failure(PluginError(self.name, str(reason) if reason else "it failed"))
        self._host.fail_plugin(self.name, self, failure, "fail")

    def stop(self, reason: str = "",
             mode: Union[ShutdownMode, str] = ShutdownMode.SMART) -> Deferred:
        """
        End this plugin: it is unloaded like any other plugin (those that
        require it first), in C{mode}, and C{plugin_unloaded} says
        C{reason="stopped_itself"}; its quit message is what its C{shutdown}
        returns (C{reason} is passed to it).

        @return: a Deferred firing with the quit message; failing with
            L{NoSuchPlugin} when this instance is no longer the one serving
            (it was reloaded or unloaded meanwhile).
        """
        return self._host.stop_plugin(self.name, self, reason, mode)
