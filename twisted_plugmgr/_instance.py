"""
One plugin version's life: its code imported under a private name, its
instance constructed, given its state, started and stopped with deadlines,
what it left open closed, and its place as a child service taken and given
back.

Nothing here decides when: the manager and the reloader do, in the order
their lifecycle allows.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from . import _source
from ._deferreds import call_with_deadline
from ._dispatch import HandlerSpec, handler_specs
from ._errors import (
    CompileFailed,
    InitFailed,
    InvalidData,
    InvalidMetadata,
    PluginError,
    ShutdownTimedOut,
    StartTimedOut,
)
from ._events import Reporter, safe_str
from ._lifecycle import ShutdownMode
from ._plugin import PluginAPI
from ._policy import RestartPolicy, class_policy
from ._schema import data_for

__all__ = ["NO_STATE", "Version", "import_version", "attribute", "VersionLife"]

#: No state was taken from the old instance.
NO_STATE: Any = object()


def attribute(obj: Any, name: str) -> Any:
    """
    C{getattr(obj, name, None)}, for plugin objects: a lookup that raises
    anything (a property, a C{__getattr__}) gives L{None}.
    """
    try:
        return getattr(obj, name, None)
    except BaseException:
        return None


@attr.s(auto_attribs=True, eq=False, repr=False)
class Version:
    """
    One version of a plugin: its imported code and class, the handlers the
    class declares and, once constructed, its instance and API.

    @ivar handlers: event -> the name of the method handling it.
    """

    imported: _source.ImportedPlugin
    cls: type
    specs: Tuple[HandlerSpec, ...]
    instance: Any = None
    api: Optional[PluginAPI] = None
    handlers: Dict[str, str] = attr.ib(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.handlers = {spec.event: spec.attribute for spec in self.specs}

    @property
    def module_name(self) -> str:
        """
        The private name its module is imported under.
        """
        return self.imported.source.module_name

    @property
    def requires(self) -> Tuple[str, ...]:
        """
        The names of the plugins its class requires.
        """
        return tuple(attribute(self.cls, "requires") or ())

    @property
    def version(self) -> Optional[str]:
        """
        The version it declares (on its instance once there is one), as text.
        """
        return safe_str(attribute(self.instance if self.instance is not None else self.cls,
                                  "version"))

    def purge(self) -> None:
        """
        Drop its modules from C{sys.modules}.
        """
        _source.purge(self.module_name)

    def retire_to(self, oldcode: Any, name: str) -> None:
        """
        Tell C{oldcode} (an L{_oldcode.OldCode}) that this version's code
        went, so that it is checked for references left to it.
        """
        oldcode.retired(name, self.imported.module, self.cls, self.imported.modules,
                        version=self.version)

    def fresh(self) -> Version:
        """
        The same code and class, not constructed yet (to roll back to).
        """
        return Version(self.imported, self.cls, self.specs)

    #: Whether it runs in a worker process of its own (see L{_isolate}).
    isolated = False

    @property
    def pid(self) -> Optional[int]:
        """
        The process id of its worker, for an isolated version; L{None}.
        """
        return None

    @property
    def call_deadline(self) -> Optional[float]:
        """
        The seconds a call to one of its handlers may take, for an isolated
        version; L{None} (an in-process handler cannot be interrupted).
        """
        return None

    @property
    def limits(self) -> Dict[str, int]:
        """
        The resource limits of its worker, for an isolated version; none.
        """
        return {}

    def ready(self) -> Deferred[Any]:
        """
        A Deferred firing once its instance is ready to start (at once here;
        an isolated version's once its worker imported and constructed it).
        """
        return succeed(None)

    def end(self, until: Optional[float] = None) -> Deferred[Any]:
        """
        End what runs it beside this process (nothing here; an isolated
        version's worker), by the reactor time C{until}.
        """
        return succeed(None)

    def __repr__(self) -> str:
        return f"<Version {self.module_name}>"


def import_version(
    name: str, packages: Sequence[str], paths: Sequence[str], prefix: str,
    entry_points: bool = False,
) -> Tuple[Version, Tuple[str, ...], Dict[str, Any]]:
    """
    Locate and import plugin C{name}, find and check its class (in
    C{packages}, C{paths}, and the installed distributions' entry points if
    C{entry_points}).

    @return: the new L{Version}, the names of the metadata attributes it
        lacks (not fatal), and the modules that stood under its module's
        name before and were taken aside (to put back when it goes).
    @raise PluginError: L{InvalidName}, L{NoSuchPlugin}, L{CompileFailed}
        or L{InvalidMetadata}; nothing of the import is left in
        C{sys.modules} then.
    """
    source = _source.locate(name, packages, paths, prefix, entry_points=entry_points)
    # Something else may have imported that module (a helper of a
    # configured package, say): keep it aside, to put back if this fails.
    displaced = _source.take_modules(source.module_name) if source.module_name in sys.modules else {}
    imported: Optional[_source.ImportedPlugin] = None
    try:
        try:
            imported = _source.import_plugin(source)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            raise CompileFailed(name, source.origin, failure=Failure()) from None
        try:
            cls = _source.find_plugin_class(name, imported.module)
            missing = _source.check_metadata(name, cls)
            specs = handler_specs(cls)
            RestartPolicy().evolve(**class_policy(cls))  # its restart policy attributes
        except PluginError:
            raise
        except ValueError as e:
            raise InvalidMetadata(name, [str(e)]) from None
        except BaseException as e:  # plugin code: a descriptor, a metaclass...
            raise InvalidMetadata(
                name, [f"looking at the plugin class raised {e!r}"], failure=Failure()
            ) from None
    except PluginError:
        if imported is not None:
            _source.purge(source.module_name)
        if displaced:
            _source.restore_modules(source.module_name, displaced)
        raise
    return Version(imported, cls, specs), missing, displaced


class VersionLife:
    """
    Constructs, starts and stops plugin versions for one manager, each step
    with its deadline, each failure turned into the L{PluginError} that says
    which step failed, and each version's leftovers closed.

    @param parent: the manager: the versions' parent service, and the
        manager their L{PluginAPI} talks to.
    @param reactor: the reactor the deadlines run on (and that plugins
        reach through their plugin-scoped reactor).
    @param reporter: where errors and warnings go.
    @param start_deadline: seconds C{startService}, C{get_state} and
        C{set_state} may each take.
    @param host: what the versions' L{PluginAPI} reaches of the manager
        (an L{IPluginHost}).
    """

    def __init__(self, parent: Any, reactor: IReactorTime, reporter: Reporter,
                 start_deadline: float, host: Any = None) -> None:
        self._parent = parent
        self.host = host
        self._reactor = reactor
        self._reporter = reporter
        self.start_deadline = start_deadline

    def construct(self, name: str, version: Version, data: Any) -> None:
        """
        Construct C{version}'s instance as C{cls(api, data)}.

        @raise InitFailed: when the constructor raised (what its API
            started is closed).
        """
        data = data_for(name, version.cls, data)  # InvalidData before anything is made
        api = version.api = PluginAPI(self._parent, name, self._reactor, host=self.host)
        try:
            instance = version.cls(api, data)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            failure = Failure()
            api.reactor.close()
            version.api = None
            raise InitFailed(name, "the constructor raised", failure=failure) from None
        version.instance = instance

    def adopt(self, name: str, instance: Any) -> None:
        """
        Make C{instance} the parent's child named C{name}, without starting
        it: the manager owns the order of starts and stops.
        """
        # MultiService.addService would start the child itself and ignore
        # the Deferred of its start. The child is named by the name it was
        # loaded under, whatever it claims.
        parent = self._parent
        instance.parent = parent
        parent.services.append(instance)
        parent.namedServices[name] = instance

    def release(self, name: str, instance: Any) -> None:
        """
        Remove C{instance} from the parent's children.
        """
        parent = self._parent
        if instance in parent.services:
            parent.services.remove(instance)
        if parent.namedServices.get(name) is instance:
            del parent.namedServices[name]
        if getattr(instance, "parent", None) is parent:
            instance.parent = None

    def mark_stopped(self, name: str, instance: Any) -> None:
        """
        Say C{instance} is no longer running, as C{Service.stopService}
        would (the manager calls C{shutdown} instead).
        """
        try:
            instance.running = 0
        except BaseException:  # a read-only property, say
            self._reporter.error(name, Failure())

    def _timed_out(self, name: str) -> StartTimedOut:
        return StartTimedOut(name, self.start_deadline)

    def start(self, name: str, version: Version, state: Any = NO_STATE) -> Deferred[Any]:
        """
        Hand C{state} (if any) to C{version}'s C{set_state}, then call its
        C{startService}, each with the start deadline.

        @return: a Deferred firing with the instance; or failing with
            L{InitFailed} (what failed, with a L{StartTimedOut} where a
            deadline passed), the instance then stopped, released and its
            leftovers closed.
        """
        instance = version.instance
        def failed(failure: Failure, step: str) -> Failure:
            if step == "startService":
                self.mark_stopped(name, instance)
            self.release(name, instance)
            self.close(name, version)
            if version.isolated and failure.check(CompileFailed, InvalidMetadata, InvalidData, InitFailed):
                return failure  # its worker's import or constructor failed
            return Failure(InitFailed(name, f"{step} failed", failure=failure))

        def start(_: Any) -> Deferred[Any]:
            d = call_with_deadline(instance.startService, (), self.start_deadline, self._reactor,
                                   lambda: self._timed_out(name))
            return d.addCallbacks(lambda _: instance, failed, errbackArgs=("startService",))

        set_state = attribute(instance, "set_state")
        if state is NO_STATE or not callable(set_state):
            return start(None)
        given = call_with_deadline(set_state, (state,), self.start_deadline, self._reactor,
                                   lambda: self._timed_out(name))
        return given.addCallbacks(start, failed, errbackArgs=("set_state",))

    def take_state(self, name: str, instance: Any) -> Deferred[Any]:
        """
        What C{instance}'s C{get_state} returns (L{NO_STATE} without one, or
        when it failed or passed the start deadline: that is reported).
        """
        get_state = attribute(instance, "get_state")
        if not callable(get_state):
            return succeed(NO_STATE)

        def lost(failure: Failure) -> Any:
            self._reporter.error(name, failure)
            return NO_STATE

        d = call_with_deadline(get_state, (), self.start_deadline, self._reactor,
                               lambda: self._timed_out(name))
        return d.addErrback(lost)

    def shutdown(self, name: str, instance: Any, mode: ShutdownMode, reason: str,
                 seconds: float) -> Deferred[Any]:
        """
        Call C{instance.shutdown(mode, reason)} with a deadline of
        C{seconds}.

        @return: a Deferred with the quit message; or failing with
            L{ShutdownTimedOut}, or with what the shutdown raised.
        """
        return call_with_deadline(instance.shutdown, (mode, reason), seconds, self._reactor,
                                  lambda: ShutdownTimedOut(name, mode, seconds))

    def seconds(self) -> float:
        """
        The reactor's time (to count a stop's deadline from).
        """
        return self._reactor.seconds()

    def close(self, name: str, version: Optional[Version],
              until: Optional[float] = None) -> Deferred[None]:
        """
        Cancel or close what C{version} left live through its plugin-scoped
        reactor, reporting each kind as a warning. The connections its
        ports accepted are closed, and aborted if still open at the reactor
        time C{until} (at once without one).

        @return: a Deferred firing once its ports have stopped listening and
            its accepted connections are gone.
        """
        api = version.api if version is not None else None
        if api is None:
            return succeed(None)
        grace = until - self._reactor.seconds() if until is not None else None
        closed, left = api.reactor.close(grace)
        for sentence in left:
            self._reporter.warning(name, sentence)

        def report(failure: Failure) -> None:
            self._reporter.error(name, failure)

        assert version is not None
        return closed.addCallbacks(lambda _: None, report).addCallback(
            lambda _: version.end(until)).addCallbacks(lambda _: None, report)

