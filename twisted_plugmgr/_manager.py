"""
The plugin manager: a L{MultiService} whose children are plugins.

It composes the lower rooms: L{_source} finds and imports plugin code,
L{_lifecycle} says which transitions are possible, L{_dispatch} says which
plugin handles which event, L{_events} tells the listeners. This module owns
what needs the reactor: ordering, deadlines, holding messages while a
plugin is not ready, and reload.

Operations on one plugin never interleave: an operation asked for while
another is under way on the same plugin waits for it to settle (see
L{PluginManager.unload} and L{PluginManager.load} for the defined outcomes).
"""

from __future__ import annotations

import collections
import os
import sys
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import attr
from twisted.application.service import MultiService, Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _source
from ._dispatch import STOP, HandlerIndex, HandlerSpec, handler_specs
from ._errors import (
    AlreadyLoaded,
    CompileFailed,
    DependencyError,
    HandlerAbandoned,
    InitFailed,
    InvalidMetadata,
    ManagerStopped,
    NoSuchHandler,
    NoSuchPlugin,
    PluginError,
    ShutdownFailed,
    ShutdownTimedOut,
    StartTimedOut,
)
from ._events import Listener, Listeners, PluginEvent, safe_str
from ._interfaces import IPluginManager
from ._lifecycle import (
    DEFAULT_START_DEADLINE,
    Lifecycle,
    PluginState,
    ShutdownMode,
    coerce_deadlines,
)
from ._plugin import PluginAPI

__all__ = ["PluginManager", "PluginInfo"]

_UNCHANGED: Any = object()

#: The event broadcast for each kind of load failure.
_LOAD_FAILURE_EVENTS: Tuple[Tuple[type, str], ...] = (
    (InvalidMetadata, "plugin_invalid_values"),
    (InitFailed, "plugin_init_failed"),
    (DependencyError, "plugin_init_failed"),
    (PluginError, "plugin_compile_failed"),
)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PluginInfo:
    """
    One row of the plugin table.

    @ivar name: the name the plugin was loaded under (never what it claims).
    @ivar longname: its one-line description.
    @ivar license: its license.
    @ivar version: its version.
    @ivar author: its author.
    @ivar module: the name of its module in C{sys.modules}.
    @ivar state: its L{PluginState}.
    @ivar loaded_at: the reactor time it was loaded at.
    @ivar reloads: how many times it was reloaded.
    @ivar source: the path of its module file.
    @ivar calls: how many handler calls it served.
    @ivar busy_time: seconds spent in its handlers, in all.
    @ivar longest_call: the longest time one handler call took, in seconds.
    """

    name: str
    longname: Optional[str]
    license: Optional[str]
    version: Optional[str]
    author: Optional[str]
    module: Optional[str]
    state: PluginState
    loaded_at: float
    reloads: int = 0
    source: Optional[str] = None
    calls: int = 0
    busy_time: float = 0.0
    longest_call: float = 0.0


@attr.s(auto_attribs=True, eq=False)
class _Pending:
    """
    A reload waiting for the plugin to settle; later requests collapse into
    it.
    """

    data: Any
    mode: ShutdownMode
    dependents: bool
    waiters: List[Deferred] = attr.ib(factory=list)


@attr.s(auto_attribs=True, eq=False, repr=False)
class _Record:
    """
    Everything the manager knows of one plugin. Private: the plugin table is
    the public view.
    """

    name: str
    sequence: int
    lifecycle: Lifecycle
    data: Any
    loaded_at: float
    imported: Optional[_source.ImportedPlugin] = None
    cls: Optional[type] = None
    instance: Any = None
    api: Optional[PluginAPI] = None
    handlers: Dict[str, str] = attr.ib(factory=dict)
    specs: Tuple[HandlerSpec, ...] = ()
    inbox: Deque[Tuple[str, tuple, dict, Optional[Deferred]]] = attr.ib(factory=collections.deque)
    drain_call: Any = None
    settle_waiters: List[Deferred] = attr.ib(factory=list)
    start_waiters: List[Deferred] = attr.ib(factory=list)
    stopping: Optional[_Shared] = None
    pending_reload: Optional[_Pending] = None
    waiting: set = attr.ib(factory=set)  # answers still waiting on a handler's Deferred
    displaced: Dict[str, Any] = attr.ib(factory=dict)  # modules the load took aside
    reloads: int = 0
    calls: int = 0
    busy_time: float = 0.0
    longest_call: float = 0.0

    @property
    def state(self) -> PluginState:
        return self.lifecycle.state

    @property
    def requires(self) -> Tuple[str, ...]:
        return tuple(getattr(self.cls, "requires", ()) or ())

    def __repr__(self) -> str:
        return f"<_Record {self.name!r} {self.state.value}>"


class _Shared:
    """
    One outcome that any number of callers wait for, each with a Deferred of
    its own (so that each consumes its own copy of a failure).
    """

    _PENDING: Any = object()

    def __init__(self) -> None:
        self._result: Any = self._PENDING
        self._waiters: List[Deferred] = []

    def fire(self, result: Any) -> None:
        """
        Set the outcome (a value or a Failure) and pass it to every waiter.
        """
        self._result = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _pass(waiter, result)

    def wait(self) -> Deferred:
        """
        A Deferred with the outcome.
        """
        d: Deferred = Deferred()
        if self._result is self._PENDING:
            self._waiters.append(d)
        else:
            _pass(d, self._result)
        return d


def _pass(d: Deferred, result: Any) -> None:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


def _fan_out(d: Deferred, waiters: List[Deferred]) -> None:
    """
    Give C{d}'s outcome to every one of C{waiters}; C{d} itself ends
    handled.
    """

    def give(result: Any) -> None:
        for waiter in waiters:
            _pass(waiter, result)

    d.addBoth(give)


@implementer(IPluginManager)
class PluginManager(MultiService):
    """
    A L{MultiService} that loads plugins by name, runs each as a child
    service, addresses them by event name, reloads them transactionally and
    shuts them down in stages with deadlines.

    @param packages: dotted names of packages whose modules are plugins.
    @param paths: directories whose modules and packages are plugins.
    @param deadlines: seconds per L{ShutdownMode} (keys are modes or their
        names), over the defaults (1, 10 and 120 s).
    @param reactor: the reactor (or a L{twisted.internet.task.Clock});
        the global reactor by default.
    @param start_deadline: seconds a plugin's C{startService} may take.
    @param stop_mode: the mode L{stopService} shuts down in.
    @param slow_call: a handler call longer than this many seconds
        broadcasts C{plugin_warning}.
    @param timer: the clock handler calls are measured with.
    """

    log = Logger()

    def __init__(
        self,
        packages: Iterable[str] = (),
        paths: Iterable[str] = (),
        deadlines: Optional[Mapping[Union[ShutdownMode, str], float]] = None,
        reactor: Any = None,
        *,
        start_deadline: float = DEFAULT_START_DEADLINE,
        stop_mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
        slow_call: float = 0.25,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _global_reactor

            reactor = _global_reactor
        if isinstance(packages, str) or isinstance(paths, str):
            raise TypeError("packages and paths are sequences of names, not one string")
        self.packages: Tuple[str, ...] = tuple(packages)
        self.paths: Tuple[str, ...] = tuple(str(p) for p in paths)
        self.deadlines = coerce_deadlines(deadlines)
        if not start_deadline > 0:
            raise ValueError(f"invalid start_deadline {start_deadline!r}: expected a positive number")
        self.start_deadline = float(start_deadline)
        self.stop_mode = ShutdownMode.coerce(stop_mode)
        self.slow_call = float(slow_call)
        self._timer = timer
        self._nested: List[float] = []
        self._reactor = reactor
        self._listeners = Listeners(Logger(namespace="twisted_plugmgr.events"))
        self._records: Dict[str, _Record] = {}
        self._index = HandlerIndex()
        self._sequence = 0
        self._private_prefix = f"_plugmgr_{id(self):x}__"
        self._shutdown: Optional[_Shared] = None
        self._stopped = False
        self._watcher: Any = None
        self._known_available: Optional[set] = None

    @property
    def module_prefix(self) -> str:
        """
        The prefix of the private names this manager's plugins are imported
        under in C{sys.modules} (each manager has its own).
        """
        return self._private_prefix

    def add_package(self, package: str) -> None:
        """
        Look for plugins in the package named C{package} too, after the
        packages given at construction; adding one already there does
        nothing.
        """
        if not isinstance(package, str) or not package:
            raise TypeError(f"a package is a dotted name, not {package!r}")
        if package not in self.packages:
            self.packages = self.packages + (package,)

    # -- listeners and events -------------------------------------------

    def register(self, listener: Listener) -> None:
        """
        Add C{listener}, a callable taking a L{PluginEvent}. Registering
        twice is one registration.
        """
        self._listeners.register(listener)

    def unregister(self, listener: Listener) -> None:
        """
        Remove C{listener}.
        """
        self._listeners.unregister(listener)

    def _broadcast(self, kind: str, plugin: Any = None, **fields: Any) -> None:
        self._listeners.broadcast(PluginEvent(kind=kind, plugin=plugin, **fields))

    def _report_warning(self, name: str, message: str) -> None:
        self._broadcast("plugin_warning", name, message=message)

    def _report_error(self, name: str, failure: Failure) -> None:
        self._broadcast("plugin_error", name, failure=failure)

    # -- the table ------------------------------------------------------

    def _info(self, record: _Record) -> PluginInfo:
        source = record.imported.source if record.imported else None
        meta = record.instance if record.instance is not None else record.cls
        return PluginInfo(
            name=record.name,
            longname=_text(_attribute(meta, "longname")),
            license=_text(_attribute(meta, "license")),
            version=_text(_attribute(meta, "version")),
            author=_text(_attribute(meta, "author")),
            module=source.module_name if source else None,
            state=record.state,
            loaded_at=record.loaded_at,
            reloads=record.reloads,
            source=source.origin if source else None,
            calls=record.calls,
            busy_time=record.busy_time,
            longest_call=record.longest_call,
        )

    def plugin_table(self) -> Dict[str, PluginInfo]:
        """
        Name -> L{PluginInfo} of every plugin loaded (or loading); also
        broadcast as C{plugin_table}.
        """
        table = {name: self._info(record) for name, record in self._records.items()}
        self._broadcast("plugin_table", table=table)
        return table

    def available(self) -> List[str]:
        """
        The sorted names of the plugins that could be loaded from
        C{packages} and C{paths}, found without importing them.
        """
        return _source.available(self.packages, self.paths)

    def _instance_of(self, name: str) -> Any:
        record = self._records.get(name)
        if record is None or record.instance is None or record.state in (
            PluginState.STOPPING,
            PluginState.LOADING,
        ):
            raise NoSuchPlugin(name, "not loaded")
        return record.instance

    # -- service --------------------------------------------------------

    def startService(self) -> Deferred:
        """
        Start the manager and every plugin loaded before it, requirements
        first. Returns a Deferred firing once they have all started or
        failed (failures are broadcast, not raised).
        """
        Service.startService(self)
        if self._stopped or self._shutdown is not None:
            return succeed(None)
        starts = [
            self._start(record)
            for record in sorted(self._records.values(), key=lambda r: r.sequence)
            if record.state is PluginState.LOADED
        ]
        return gatherResults([d.addErrback(lambda f: None) for d in starts])

    def stopService(self) -> Deferred:
        """
        L{shutdown} in the manager's C{stop_mode} (C{SMART} by default);
        twistd's reactor shutdown waits for it.
        """
        Service.stopService(self)
        return self.shutdown(self.stop_mode)

    # -- load -----------------------------------------------------------

    def load(self, name: str, data: Any = None) -> Deferred:
        """
        Load plugin C{name}, constructed as C{cls(api, data)}, after the
        plugins it C{requires}, and start it (now, or with the manager).

        A plugin that is stopping is loaded anew once it has stopped.

        @return: a Deferred firing with the started plugin, after
            C{plugin_started}; or failing with a L{PluginError} (also
            broadcast), after which nothing of the plugin remains.
        """
        try:
            return self._load(name, data, ())
        except BaseException:
            # A bug of ours, not a plugin's: never raise out of load().
            failure = Failure()
            record = self._records.get(name) if isinstance(name, str) else None
            if record is not None and record.state is PluginState.LOADING:
                self._forget(record)
            self.log.failure("load({name!r}) failed unexpectedly", failure=failure, name=name)
            return fail(failure)

    def _fail_load(self, name: Any, error: PluginError) -> Deferred:
        for kind, event in _LOAD_FAILURE_EVENTS:
            if isinstance(error, kind):
                self._broadcast(event, name, failure=Failure(error), message=str(error))
                break
        return fail(error)

    def _load(self, name: Any, data: Any, chain: Tuple[str, ...], wait_start: bool = True) -> Deferred:
        try:
            if self._stopped or self._shutdown is not None:
                raise ManagerStopped(name)
            _source.check_name(name)
            existing = self._records.get(name)
            if existing is not None:
                if existing.stopping is not None:
                    return existing.stopping.wait().addBoth(
                        lambda _: self._load(name, data, chain, wait_start))
                raise AlreadyLoaded(name, f"its state is {existing.state.value}")
        except PluginError as error:
            return self._fail_load(name, error)

        self._sequence += 1
        record = _Record(name, self._sequence, Lifecycle(name), data, self._reactor.seconds())
        self._records[name] = record
        try:
            cls, specs, missing = self._import(record)
            for required in record.requires:
                if required in chain or required == name:
                    raise DependencyError(name, chain + (name, required), "dependency cycle: "
                                          + " -> ".join(chain + (name, required)))
        except PluginError as error:
            self._forget(record)
            return self._fail_load(name, error)
        if missing:
            self._broadcast("plugin_invalid_values", name, missing=missing,
                            message="missing " + ", ".join(missing))
        to_load = [r for r in record.requires if r not in self._records]
        if not to_load:
            return self._construct_and_start(record, data, wait_start)
        return self._load_requirements(record, to_load, chain).addCallback(
            lambda _: self._construct_and_start(record, data, wait_start)
        )

    def _load_requirements(self, record: _Record, names: List[str], chain: Tuple[str, ...]) -> Deferred:
        loaded: List[str] = []
        result: Deferred = Deferred()

        def next_one(_: Any = None) -> None:
            if not names:
                result.callback(None)
                return
            required = names.pop(0)
            if required in self._records:
                next_one()
                return
            # Before the manager starts, a requirement is only constructed:
            # it starts with the manager, before what requires it.
            d = self._load(required, None, chain + (record.name,), wait_start=self.running)
            d.addCallbacks(lambda _: (loaded.append(required), next_one()), failed)

        def failed(failure: Failure) -> None:
            # Take back what this attempt loaded, then fail.
            error = failure.value
            chain_of = getattr(error, "chain", ()) or chain + (record.name, getattr(error, "plugin", "?"))
            undo = [self.unload(n, ShutdownMode.IMMEDIATE, "requirement of a failed load")
                    for n in reversed(loaded) if n in self._records]
            done = gatherResults(undo, consumeErrors=True) if undo else succeed(None)

            def finish(_: Any) -> None:
                self._forget(record)
                result.errback(Failure(DependencyError(
                    record.name, chain_of,
                    f"cannot load requirement {getattr(error, 'plugin', '?')!r} "
                    f"(chain {' -> '.join(chain_of)}): {error}",
                    failure=failure,
                )))

            done.addBoth(finish)

        next_one()
        return result.addErrback(lambda f: self._fail_load(record.name, f.value))

    def _import(self, record: _Record) -> Tuple[type, Tuple[HandlerSpec, ...], Tuple[str, ...]]:
        """
        Locate and import C{record}'s source, find and check its class.
        On failure nothing of the import remains in C{sys.modules}.
        """
        source = _source.locate(record.name, self.packages, self.paths, self._private_prefix)
        if source.module_name in sys.modules:
            # Something else imported that module (a helper of a configured
            # package, say): keep it aside, to put back if this load fails.
            record.displaced = _source.take_modules(source.module_name)
        try:
            imported = _source.import_plugin(source)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            raise CompileFailed(record.name, source.origin, failure=Failure()) from None
        record.imported = imported
        try:
            cls = _source.find_plugin_class(record.name, imported.module)
            missing = _source.check_metadata(record.name, cls)
            specs = handler_specs(cls)
        except PluginError:
            raise
        except ValueError as e:
            raise InvalidMetadata(record.name, [str(e)]) from None
        except BaseException as e:  # plugin code: a descriptor, a metaclass...
            raise InvalidMetadata(
                record.name, [f"looking at the plugin class raised {e!r}"], failure=Failure()
            ) from None
        record.cls = cls
        record.specs = specs
        return cls, specs, missing

    def _construct(self, record: _Record, cls: type, data: Any) -> Tuple[Any, PluginAPI]:
        api = PluginAPI(self, record.name, self._reactor)
        try:
            instance = cls(api, data)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            failure = Failure()
            api.reactor.close()
            raise InitFailed(record.name, "the constructor raised", failure=failure) from None
        return instance, api

    def _construct_and_start(self, record: _Record, data: Any, wait_start: bool = True) -> Deferred:
        if self._stopped or self._shutdown is not None:
            self._forget(record)
            return self._fail_load(record.name, ManagerStopped(record.name))
        try:
            assert record.cls is not None
            instance, api = self._construct(record, record.cls, data)
        except PluginError as error:
            self._forget(record)
            return self._fail_load(record.name, error)
        record.instance, record.api = instance, api
        record.handlers = {s.event: s.attribute for s in record.specs}
        self._adopt(record.name, instance)
        record.lifecycle.fire("loaded")
        if self.running:
            return self._start(record)
        self._settle(record)
        if not wait_start:
            return succeed(record.instance)
        return self._unstarted_waiter(record)

    def _adopt(self, name: str, instance: Any) -> None:
        # MultiService.addService would start the child itself and ignore
        # the Deferred of its start: the manager keeps the bookkeeping and
        # owns the order of startService and shutdown. The child is named
        # by the name it was loaded under, whatever it claims.
        instance.parent = self
        self.services.append(instance)
        self.namedServices[name] = instance

    def _release(self, name: str, instance: Any) -> None:
        if instance in self.services:
            self.services.remove(instance)
        if self.namedServices.get(name) is instance:
            del self.namedServices[name]
        if getattr(instance, "parent", None) is self:
            instance.parent = None

    def _forget(self, record: _Record) -> None:
        """
        Remove every trace of a plugin that failed to load or start: its
        record, its child service, its modules.
        """
        if self._records.get(record.name) is record:
            del self._records[record.name]
        self._index.remove(record.name)
        if record.instance is not None:
            self._release(record.name, record.instance)
        if record.imported is not None:
            _source.purge(record.imported.source.module_name)
        if record.displaced:
            _source.restore_modules(_root_of(record.displaced), record.displaced)
            record.displaced = {}
        if record.drain_call is not None and record.drain_call.active():
            record.drain_call.cancel()
        record.drain_call = None
        if record.lifecycle.can("fail"):
            record.lifecycle.fire("fail")
        self._fail_inbox(record, NoSuchPlugin(record.name, "it failed to load"))
        self._settle(record)

    def _start(self, record: _Record) -> Deferred:
        """
        Start C{record}'s instance, after its requirements have started.
        """
        waits = [self._when_running(r) for r in record.requires]
        if not waits:
            return self._start_now(record)
        gate = gatherResults(waits, consumeErrors=True)

        def requirements_failed(failure: Failure) -> Any:
            error = failure.value
            if isinstance(error, Exception) and hasattr(error, "subFailure"):
                error = error.subFailure.value  # type: ignore[attr-defined]
            return self._start_failed(record, DependencyError(
                record.name, (record.name,) + record.requires,
                f"a requirement did not start: {error}"))

        return gate.addCallbacks(lambda _: self._start_now(record), requirements_failed)

    def _when_running(self, name: str) -> Deferred:
        record = self._records.get(name)
        if record is None:
            return fail(NoSuchPlugin(name, "required but not loaded"))
        if record.state is PluginState.RUNNING:
            return succeed(record.instance)
        if record.state in (PluginState.LOADED, PluginState.STARTING, PluginState.LOADING,
                            PluginState.RELOADING):
            return self._when_settled(record).addCallback(lambda _: self._when_running(name))
        return fail(NoSuchPlugin(name, f"required but {record.state.value}"))

    def _start_now(self, record: _Record) -> Deferred:
        if record.state is not PluginState.LOADED:
            # Unloaded (or failed) while waiting for its requirements.
            return fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
        record.lifecycle.fire("start")
        d = self._call_with_deadline(record.instance.startService, (), self.start_deadline)

        def started(_: Any) -> Any:
            record.lifecycle.fire("started")
            self._index.set(record.name, record.sequence, record.specs)
            self._broadcast("plugin_started", record.name)
            self._settle(record)
            for waiter in record.start_waiters:
                waiter.callback(record.instance)
            record.start_waiters = []
            self._schedule_drain(record)
            if self._watcher is not None:
                self._update_watch()
            return record.instance

        def failed(failure: Failure) -> Any:
            if failure.check(TimeoutError):
                error: PluginError = StartTimedOut(record.name, self.start_deadline)
                failure = Failure(error)
            return self._start_failed(
                record, InitFailed(record.name, "startService failed", failure=failure)
            )

        return d.addCallbacks(started, failed)

    def _start_failed(self, record: _Record, error: PluginError) -> Deferred:
        if record.instance is not None:
            self._mark_stopped(record.name, record.instance)
        if record.api is not None:
            self._close_owned(record.name, record.api)
        self._forget(record)
        for waiter in record.start_waiters:
            waiter.errback(Failure(error))
        record.start_waiters = []
        return self._fail_load(record.name, error)

    def _call_with_deadline(self, f: Callable[..., Any], args: tuple, seconds: float) -> Deferred:
        try:
            result = f(*args)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            return fail()
        if not isinstance(result, Deferred):
            return succeed(result)
        return result.addTimeout(seconds, self._reactor)

    # -- settling -------------------------------------------------------

    def _when_settled(self, record: _Record) -> Deferred:
        d: Deferred = Deferred()
        record.settle_waiters.append(d)
        return d

    def _settle(self, record: _Record) -> None:
        waiters, record.settle_waiters = record.settle_waiters, []
        for waiter in waiters:
            waiter.callback(record.state)
        pending = record.pending_reload
        if pending is not None and record.lifecycle.settled:
            record.pending_reload = None
            if self._records.get(record.name) is record and record.state is PluginState.RUNNING:
                d = self._reload_now(record, pending.data, pending.mode, pending.dependents)
            else:
                d = fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
            _fan_out(d, pending.waiters)

    # -- unload and shutdown ---------------------------------------------

    def _dependents(self, name: str) -> List[str]:
        """
        The plugins that require C{name}, directly or not, dependents first.
        """
        found: List[str] = []

        def visit(target: str) -> None:
            for record in self._records.values():
                # A plugin still loading is not a dependent yet: it fails to
                # start if what it requires is gone by then.
                if record.state is PluginState.LOADING:
                    continue
                if target in record.requires and record.name not in found:
                    visit(record.name)
                    if record.name not in found:
                        found.append(record.name)

        visit(name)
        return found

    def unload(
        self,
        name: str,
        mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
        reason: str = "",
        cascade: bool = True,
    ) -> Deferred:
        """
        Shut plugin C{name} down in C{mode} (with the mode's deadline), remove
        it as a child and drop its modules from C{sys.modules}. The plugins
        that require it are unloaded first, unless C{cascade} is false, in
        which case the unload fails with L{DependencyError}.

        A plugin that is starting or reloading is unloaded once that
        finishes; unloading a plugin that is stopping joins that stop.

        @return: a Deferred firing with the quit message, after
            C{plugin_unloaded}; failing with L{NoSuchPlugin} (broadcast as
            C{plugin_unload_failed}) for an unknown name, or with
            L{ShutdownFailed} when the plugin's shutdown raised or timed out
            (it was removed anyway).
        """
        try:
            mode = ShutdownMode.coerce(mode)
            _source.check_name(name)
            record = self._records.get(name)
            if record is None or record.state is PluginState.LOADING:
                raise NoSuchPlugin(name, "not loaded")
            dependents = self._dependents(name)
            if dependents and not cascade:
                raise DependencyError(name, dependents, "required by " + ", ".join(dependents))
        except (PluginError, ValueError) as error:
            if not isinstance(error, PluginError):
                error = PluginError(name, str(error))
            self._broadcast("plugin_unload_failed", name, failure=Failure(error), message=str(error))
            return fail(error)
        if not dependents:
            return self._stop(record, mode, reason)
        result: Deferred = Deferred()
        order = list(dependents)

        def next_one(_: Any = None) -> None:
            while order and order[0] not in self._records:
                order.pop(0)
            if order:
                dependent = self._records[order.pop(0)]
                self._stop(dependent, mode, reason or f"{name} is unloaded").addBoth(next_one)
            else:
                current = self._records.get(name)
                if current is None:
                    result.errback(Failure(NoSuchPlugin(name, "not loaded")))
                else:
                    self._stop(current, mode, reason).chainDeferred(result)

        next_one()
        return result

    def _stop(self, record: _Record, mode: ShutdownMode, reason: str) -> Deferred:
        """
        Shut C{record} down and remove it; the Deferred fires with the quit
        message or fails with L{ShutdownFailed} (the plugin is gone either
        way).
        """
        if record.stopping is not None:
            return record.stopping.wait()
        if not record.lifecycle.settled:
            return self._when_settled(record).addCallback(
                lambda _: self._stop(record, mode, reason)
                if self._records.get(record.name) is record
                else fail(NoSuchPlugin(record.name, "it failed to start"))
            )
        if self._records.get(record.name) is not record:
            return fail(NoSuchPlugin(record.name, "not loaded"))
        was_running = record.state is PluginState.RUNNING
        if was_running:
            self._drain(record)
            if record.stopping is not None:
                # A handler delivered just now unloaded its own plugin...
                return record.stopping.wait()
            if record.state is not PluginState.RUNNING:
                # ... or started its reload: stop once that is over.
                return self._stop(record, mode, reason)
        record.lifecycle.fire("stop")
        self._index.remove(record.name)
        seconds = self.deadlines[mode]
        if was_running:
            d = self._call_with_deadline(record.instance.shutdown, (mode, reason), seconds)
        else:
            d = succeed(reason or f"{record.name} unloaded")
        record.stopping = stopping = _Shared()

        def stopped(quit_message: Any) -> None:
            def closed(_: Any) -> None:
                self._finish_stop(record, quit_message)
                stopping.fire(quit_message)

            self._close_owned(record.name, record.api).addCallback(closed)

        def failed(failure: Failure) -> None:
            if failure.check(TimeoutError, CancelledError):
                error: ShutdownFailed = ShutdownTimedOut(record.name, mode, seconds)
                failure = Failure(error)
            else:
                error = ShutdownFailed(record.name, failure=failure)
            self._report_error(record.name, failure)

            def closed(_: Any) -> None:
                self._finish_stop(record, None)
                stopping.fire(Failure(error))

            self._close_owned(record.name, record.api).addCallback(closed)

        d.addCallbacks(stopped, failed)
        return stopping.wait()

    def _mark_stopped(self, name: str, instance: Any) -> None:
        """
        Say the instance is no longer running, as C{Service.stopService}
        would (the manager calls C{shutdown} instead).
        """
        try:
            instance.running = 0
        except BaseException:  # a read-only property, say
            self._report_error(name, Failure())

    def _close_owned(self, name: str, api: Optional[PluginAPI]) -> Deferred:
        """
        Cancel or close what the plugin left live (reporting each kind);
        the Deferred fires once its ports have stopped listening.
        """
        if api is None:
            return succeed(None)
        closed, left = api.reactor.close()
        for sentence in left:
            self._report_warning(name, sentence)
        return closed.addErrback(lambda f: self._report_error(name, f))

    def _finish_stop(self, record: _Record, quit_message: Any) -> None:
        instance = record.instance
        if instance is not None:
            self._mark_stopped(record.name, instance)
            self._release(record.name, instance)
        if record.imported is not None:
            _source.purge(record.imported.source.module_name)
        if record.displaced:  # what the load took aside goes back
            _source.restore_modules(_root_of(record.displaced), record.displaced)
            record.displaced = {}
        if record.drain_call is not None and record.drain_call.active():
            record.drain_call.cancel()
        record.drain_call = None
        record.lifecycle.fire("stopped")
        if self._records.get(record.name) is record:
            del self._records[record.name]
        self._abandon(record, "unloaded")
        self._fail_inbox(record, NoSuchPlugin(record.name, "it was unloaded"))
        error = ManagerStopped(record.name) if self._shutdown is not None else NoSuchPlugin(
            record.name, "unloaded before it started")
        for waiter in record.start_waiters:
            waiter.errback(Failure(error))
        record.start_waiters = []
        if record.pending_reload is not None:
            pending, record.pending_reload = record.pending_reload, None
            for waiter in pending.waiters:
                waiter.errback(Failure(NoSuchPlugin(record.name, "it was unloaded")))
        record.instance = None
        record.api = None
        self._broadcast("plugin_unloaded", record.name, quit_message=quit_message)
        self._settle(record)
        if self._watcher is not None and self._shutdown is None:
            self._update_watch()

    def shutdown(self, mode: Union[ShutdownMode, str] = ShutdownMode.SMART) -> Deferred:
        """
        Shut every plugin down in C{mode}, in stages: a plugin that others
        require stops after them; plugins with no order between them stop
        concurrently. C{plugin_waiting} is broadcast each time the count of
        plugins still pending drops while above zero, then
        C{plugin_manager_shutdown}. Every stop has the mode's deadline, so
        the shutdown always finishes. Afterwards, loads are refused;
        another shutdown is harmless.

        @return: a Deferred firing with L{None} when all is done.
        """
        mode = ShutdownMode.coerce(mode)
        if self._shutdown is not None:
            return self._shutdown.wait()
        self._shutdown = done = _Shared()
        self.unwatch()
        last_count = [len(self._records)]

        def one_done(_: Any) -> None:
            count = len(self._records)
            if 0 < count < last_count[0]:
                self._broadcast("plugin_waiting", count=count)
            last_count[0] = count

        def next_stage(_: Any = None) -> None:
            records = list(self._records.values())
            if not records:
                self._stopped = True
                self._broadcast("plugin_manager_shutdown")
                done.fire(None)
                return
            required = {r for record in records for r in record.requires}
            stage = [record for record in records if record.name not in required] or records
            stops = []
            for record in stage:
                d = self._stop(record, mode, "manager shutdown")
                d.addErrback(lambda f: None)  # broadcast as plugin_error already
                d.addCallback(one_done)
                stops.append(d)
            gatherResults(stops).addCallback(next_stage)

        next_stage()
        return done.wait()

    # -- addressing -----------------------------------------------------

    def _invoke(self, record: _Record, method: Callable[..., Any], args: tuple, kw: dict) -> Any:
        """
        Call one handler, measuring it. Raises what it raises.
        """
        timer = self._timer
        nested = self._nested
        nested.append(0.0)  # time spent in the handlers this one calls
        started = timer()
        try:
            return method(*args, **kw)
        finally:
            total = timer() - started
            elapsed = total - nested.pop()
            if nested:
                nested[-1] += total
            record.calls += 1
            record.busy_time += elapsed
            if elapsed > record.longest_call:
                record.longest_call = elapsed
            if elapsed > self.slow_call:
                self._report_warning(
                    record.name,
                    f"handler {getattr(method, '__name__', method)} blocked the reactor "
                    f"for {elapsed:.3f}s",
                )

    def _deliver(self, record: _Record, event: str, args: tuple, kw: dict) -> Deferred:
        """
        Call C{record}'s handler of C{event} (or its C{default}); a failure
        is broadcast as C{plugin_error} and returned.
        """
        instance = record.instance
        attribute = record.handlers.get(event)
        try:
            if attribute is not None:
                method, call_args = getattr(instance, attribute), args
            else:
                default = getattr(instance, "default", None)
                if default is None or not callable(default):
                    return fail(NoSuchHandler(record.name, event))
                method, call_args = default, (event,) + args
            result = self._invoke(record, method, call_args, kw)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            failure = Failure()
            self._report_error(record.name, failure)
            return fail(failure)
        if isinstance(result, Deferred):
            return self._track(record, result).addErrback(self._handler_failed, record.name)
        return succeed(result)

    def _track(self, record: _Record, result: Deferred) -> Deferred:
        """
        A Deferred with the outcome of a handler's Deferred C{result}, which
        fails with L{NoSuchPlugin} if the plugin is unloaded or reloaded
        before the handler answers (its timers are cancelled then: the
        answer might never come).
        """
        answer: Deferred = Deferred()
        record.waiting.add(answer)

        def done(outcome: Any) -> None:
            record.waiting.discard(answer)
            if not answer.called:
                _pass(answer, outcome)
            elif isinstance(outcome, Failure):
                self._report_error(record.name, outcome)

        result.addBoth(done)
        return answer

    def _abandon(self, record: _Record, why: str) -> None:
        """
        Fail every answer still waiting on a handler of C{record}.
        """
        waiting, record.waiting = record.waiting, set()
        for answer in waiting:
            if not answer.called:
                answer.errback(Failure(HandlerAbandoned(record.name, why)))

    def _handler_failed(self, failure: Failure, name: str) -> Failure:
        if not failure.check(HandlerAbandoned):  # not the plugin's fault
            self._report_error(name, failure)
        return failure

    def call(self, plugin: str, event: str, *args: Any, **kw: Any) -> Deferred:
        """
        Call C{plugin}'s handler of C{event} (or its C{default(event, ...)}).
        A plugin that is starting or reloading is called once it runs.

        @return: a Deferred with the handler's result; failing with
            L{NoSuchPlugin}, L{NoSuchHandler}, or what the handler raised
            (also broadcast as C{plugin_error}).
        """
        record = self._records.get(plugin) if isinstance(plugin, str) else None
        if record is None or record.state in (PluginState.STOPPING, PluginState.LOADING):
            return fail(NoSuchPlugin(plugin, "not loaded"))
        if record.state is PluginState.RUNNING and not record.inbox:
            return self._deliver(record, event, args, kw)
        d: Deferred = Deferred()
        record.inbox.append((event, args, kw, d))
        self._schedule_drain(record)
        return d

    def post(self, plugin: str, event: str, *args: Any, **kw: Any) -> None:
        """
        Deliver C{event} to C{plugin} on a later reactor turn, in FIFO order
        per target. A delivery that fails (the handler raised, the plugin
        has no handler, or it was unloaded first) is broadcast as
        C{plugin_error}.

        @raise NoSuchPlugin: if no plugin of that name is loaded now.
        """
        record = self._records.get(plugin) if isinstance(plugin, str) else None
        if record is None or record.state in (PluginState.STOPPING, PluginState.LOADING):
            raise NoSuchPlugin(plugin, "not loaded")
        record.inbox.append((event, args, kw, None))
        self._schedule_drain(record)

    def _schedule_drain(self, record: _Record) -> None:
        if record.inbox and record.drain_call is None and record.state is PluginState.RUNNING:
            record.drain_call = self._reactor.callLater(0, self._drain, record)

    def _drain(self, record: _Record) -> None:
        if record.drain_call is not None and record.drain_call.active():
            record.drain_call.cancel()
        record.drain_call = None
        # Only what was queued before this turn: a handler that posts to its
        # own plugin gets its post delivered on a later turn.
        for _ in range(len(record.inbox)):
            if record.state is not PluginState.RUNNING or not record.inbox:
                break
            event, args, kw, answer = record.inbox.popleft()
            d = self._deliver(record, event, args, kw)
            if answer is not None:
                d.chainDeferred(answer)
            else:
                d.addErrback(self._post_failed, record.name)

    def _post_failed(self, failure: Failure, name: str) -> None:
        if failure.check(HandlerAbandoned):
            return  # delivered: its handler just never answered
        if failure.check(NoSuchHandler, NoSuchPlugin):
            self._report_error(name, failure)
        # Anything else was broadcast when the handler failed.

    def _fail_inbox(self, record: _Record, error: PluginError) -> None:
        while record.inbox:
            event, args, kw, answer = record.inbox.popleft()
            if answer is not None:
                answer.errback(Failure(error))
            else:
                self._report_error(record.name, Failure(error))

    def emit(self, event: str, *args: Any, **kw: Any) -> Deferred:
        """
        Call every handler of C{event}, by priority then load order. Only
        the plugins that handle C{event} are touched. A handler that returns
        L{STOP} ends the emit; a failing handler is broadcast as
        C{plugin_error} and adds nothing. A plugin that is reloading is
        called once its reload is over (exactly one version of it).

        @return: a Deferred firing with the list of the handlers' results.
        """
        return self._emit_from(self._index.plugins_for(event), 0, event, args, kw, [])

    def _emit_from(self, names: Tuple[str, ...], i: int, event: str, args: tuple, kw: dict,
                   results: List[Any]) -> Deferred:
        records = self._records
        while i < len(names):
            record = records.get(names[i])
            i += 1
            if record is None:
                continue
            state = record.state
            if state is PluginState.RELOADING:
                return self._when_settled(record).addCallback(
                    lambda _, i=i - 1: self._emit_from(names, i, event, args, kw, results))
            if state is not PluginState.RUNNING:
                continue
            attribute = record.handlers.get(event)
            if attribute is None:
                continue
            try:
                method = getattr(record.instance, attribute)
                result = self._invoke(record, method, args, kw)
            except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
                self._report_error(record.name, Failure())
                continue
            if isinstance(result, Deferred):
                return self._track(record, result).addCallbacks(
                    self._emit_async_result, self._emit_async_failure,
                    callbackArgs=(names, i, event, args, kw, results),
                    errbackArgs=(record.name, names, i, event, args, kw, results),
                )
            if result is STOP:
                return succeed(results)
            results.append(result)
        return succeed(results)

    def _emit_async_result(self, value: Any, names: Tuple[str, ...], i: int, event: str,
                           args: tuple, kw: dict, results: List[Any]) -> Any:
        if value is STOP:
            return results
        results.append(value)
        return self._emit_from(names, i, event, args, kw, results)

    def _emit_async_failure(self, failure: Failure, name: str, names: Tuple[str, ...], i: int,
                            event: str, args: tuple, kw: dict, results: List[Any]) -> Any:
        if not failure.check(HandlerAbandoned):  # not the plugin's fault
            self._report_error(name, failure)
        return self._emit_from(names, i, event, args, kw, results)

    # -- reload ---------------------------------------------------------

    def reload(
        self,
        name: str,
        data: Any = _UNCHANGED,
        mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
        dependents: bool = False,
    ) -> Deferred:
        """
        Replace plugin C{name} with a fresh import of its source,
        transactionally: the old instance keeps serving until the new one
        has imported, passed its checks and been constructed; then the old
        one is shut down in C{mode}, its C{get_state()} handed to the new
        one's C{set_state()}, and the new one started. If the new one fails
        to start, a fresh instance of the old class takes its place with the
        state. Posts and calls made meanwhile are held and delivered to
        whichever instance ends up running; an emit reaches exactly one.

        One reload at a time per plugin: a reload asked for during another
        waits for it, and several waiting collapse into one.

        @param data: the new instance's data (the current data by default).
        @param dependents: also reload, after it, the plugins that require
            it, in dependency order.
        @return: a Deferred firing with the new instance, after
            C{plugin_reloaded}; or failing with L{NoSuchPlugin},
            L{CompileFailed}, L{InvalidMetadata} or L{InitFailed} (after
            C{plugin_reload_failed}), the plugin still serving.
        """
        try:
            return self._reload(name, data, mode, dependents)
        except BaseException:
            # A bug of ours, not a plugin's: never raise out of reload().
            failure = Failure()
            self.log.failure("reload({name!r}) failed unexpectedly", failure=failure, name=name)
            return fail(failure)

    def _reload(self, name: str, data: Any, mode: Union[ShutdownMode, str],
                dependents: bool) -> Deferred:
        try:
            mode = ShutdownMode.coerce(mode)
            _source.check_name(name)
            if self._shutdown is not None:
                raise ManagerStopped(name)
            record = self._records.get(name)
            if record is None or record.state in (PluginState.STOPPING, PluginState.LOADING):
                raise NoSuchPlugin(name, "not loaded")
        except (PluginError, ValueError) as error:
            if not isinstance(error, PluginError):
                error = PluginError(name, str(error))
            self._broadcast("plugin_reload_failed", name, failure=Failure(error), message=str(error))
            return fail(error)
        if record.state is PluginState.RUNNING and record.pending_reload is None:
            return self._reload_now(record, data, mode, dependents)
        if record.state is PluginState.LOADED:
            return self._reload_unstarted(record, data)
        pending = record.pending_reload
        if pending is None:
            pending = record.pending_reload = _Pending(data, mode, dependents)
        else:
            if data is not _UNCHANGED:
                pending.data = data
            pending.mode = mode
            pending.dependents = pending.dependents or dependents
        waiter: Deferred = Deferred()
        pending.waiters.append(waiter)
        return waiter

    def _prepare_new(self, record: _Record, data: Any) -> Tuple[_Record, Any]:
        """
        Import C{record}'s source afresh beside the running version and
        construct the new instance. On failure, C{sys.modules} holds the
        old modules again and the error is raised.

        @return: a scratch record holding the new version, and the old
            modules (to restore on rollback).
        """
        old_source = record.imported.source if record.imported else None
        old_modules = _source.take_modules(old_source.module_name) if old_source else {}
        scratch = _Record(record.name, record.sequence, Lifecycle(record.name), data, record.loaded_at)
        try:
            cls, specs, _ = self._import(scratch)
            instance, api = self._construct(scratch, cls, data)
        except BaseException:
            if scratch.imported is not None:
                _source.purge(scratch.imported.source.module_name)
            if old_source is not None:
                _source.restore_modules(old_source.module_name, old_modules)
            raise
        scratch.instance, scratch.api = instance, api
        scratch.handlers = {s.event: s.attribute for s in specs}
        return scratch, old_modules

    def _reload_failed(self, name: str, error: PluginError) -> Deferred:
        self._broadcast("plugin_reload_failed", name, failure=Failure(error), message=str(error))
        return fail(error)

    def _reload_unstarted(self, record: _Record, data: Any) -> Deferred:
        data = record.data if data is _UNCHANGED else data
        try:
            scratch, _ = self._prepare_new(record, data)
        except PluginError as error:
            return self._reload_failed(record.name, error)
        old_version = _attribute(record.instance, "version")
        self._release(record.name, record.instance)
        self._close_owned(record.name, record.api)  # type: ignore[arg-type]
        self._swap_in(record, scratch, data)
        self._adopt(record.name, record.instance)
        record.reloads += 1
        self._broadcast("plugin_reloaded", record.name, old_version=_text(old_version),
                        new_version=_text(_attribute(record.instance, "version")))
        return succeed(record.instance)

    def _unstarted_waiter(self, record: _Record) -> Deferred:
        waiter: Deferred = Deferred()
        record.start_waiters.append(waiter)
        return waiter

    def _swap_in(self, record: _Record, scratch: _Record, data: Any) -> None:
        record.imported, record.cls, record.specs = scratch.imported, scratch.cls, scratch.specs
        record.instance, record.api, record.handlers = scratch.instance, scratch.api, scratch.handlers
        record.data = data

    def _reload_now(self, record: _Record, data: Any, mode: ShutdownMode, dependents: bool) -> Deferred:
        name = record.name
        new_data = record.data if data is _UNCHANGED else data
        try:
            scratch, old_modules = self._prepare_new(record, new_data)
        except PluginError as error:
            d = self._reload_failed(name, error)
            self._settle(record)  # run a reload that was queued meanwhile
            return d
        old_instance, old_api, old_cls = record.instance, record.api, record.cls
        old_imported, old_version = record.imported, _attribute(record.instance, "version")
        record.lifecycle.fire("reload")
        seconds = self.deadlines[mode]
        result: Deferred = Deferred()

        def old_stopped(outcome: Any) -> Deferred:
            if isinstance(outcome, Failure):
                if outcome.check(TimeoutError, CancelledError):
                    outcome = Failure(ShutdownTimedOut(name, mode, seconds))
                self._report_error(name, outcome)
            self._mark_stopped(name, old_instance)
            self._release(name, old_instance)
            self._abandon(record, "reloaded")
            # get_state may still use the old version's reactor; what it
            # left running is closed after.
            get_state = _attribute(old_instance, "get_state")
            if callable(get_state):
                got = self._call_with_deadline(get_state, (), self.start_deadline)
            else:
                got = succeed(_NO_STATE)
            return got.addErrback(state_lost).addCallback(close_then_start)

        def state_lost(failure: Failure) -> Any:
            # The old version is stopped and its state unreadable: the new
            # version starts without it.
            if failure.check(TimeoutError):
                failure = Failure(StartTimedOut(name, self.start_deadline))
            self._report_error(name, failure)
            return _NO_STATE

        def close_then_start(state: Any) -> Deferred:
            return self._close_owned(name, old_api).addCallback(lambda _: start_new(state))

        def start_new(state: Any) -> Deferred:
            return self._start_version(record, scratch, state).addCallbacks(
                succeeded, new_failed, errbackArgs=(state,))

        def succeeded(instance: Any) -> None:
            self._swap_in(record, scratch, new_data)
            record.reloads += 1
            record.lifecycle.fire("reloaded")
            self._index.set(name, record.sequence, record.specs)
            self._broadcast("plugin_reloaded", name, old_version=_text(old_version),
                            new_version=_text(_attribute(instance, "version")))
            result.callback(instance)
            self._after_reload(record)

        def new_failed(failure: Failure, state: Any) -> None:
            error = failure.value if isinstance(failure.value, PluginError) else InitFailed(
                name, "the new version failed to start", failure=failure)
            # Roll back to the old code: its modules, a fresh instance.
            _source.purge(scratch.imported.source.module_name)  # type: ignore[union-attr]
            if old_imported is not None:
                _source.restore_modules(old_imported.source.module_name, old_modules)
            rollback = _Record(name, record.sequence, Lifecycle(name), record.data, record.loaded_at)
            rollback.imported, rollback.cls, rollback.specs = old_imported, old_cls, record.specs
            rollback.handlers = dict(record.handlers)
            try:
                rollback.instance, rollback.api = self._construct(rollback, old_cls, record.data)  # type: ignore[arg-type]
            except PluginError as rollback_error:
                self._lost(record, rollback_error)
                self._reload_failed(name, error).chainDeferred(result)
                return
            d = self._start_version(record, rollback, state)

            def rolled_back(instance: Any) -> None:
                self._swap_in(record, rollback, record.data)
                record.lifecycle.fire("reloaded")
                self._index.set(name, record.sequence, record.specs)
                self._reload_failed(name, error).chainDeferred(result)
                self._after_reload(record)

            def rollback_failed(f: Failure) -> None:
                self._lost(record, f.value if isinstance(f.value, PluginError) else InitFailed(
                    name, "the old version failed to start again", failure=f))
                self._reload_failed(name, error).chainDeferred(result)

            d.addCallbacks(rolled_back, rollback_failed)

        d = self._call_with_deadline(old_instance.shutdown, (mode, "reloading"), seconds)
        d.addBoth(old_stopped)
        if dependents:
            return result.addCallback(self._reload_dependents, name, mode)
        return result

    def _start_version(self, record: _Record, version: _Record, state: Any) -> Deferred:
        """
        Hand C{state} to a new instance and start it. Fails with
        L{InitFailed}, having closed what the instance started.
        """
        instance = version.instance
        self._adopt(record.name, instance)
        set_state = _attribute(instance, "set_state")
        if state is not _NO_STATE and callable(set_state):
            given = self._call_with_deadline(set_state, (state,), self.start_deadline)
        else:
            given = succeed(None)

        def state_refused(failure: Failure) -> Any:
            self._release(record.name, instance)
            self._close_owned(record.name, version.api)
            if failure.check(TimeoutError):
                failure = Failure(StartTimedOut(record.name, self.start_deadline))
            return Failure(InitFailed(record.name, "set_state failed", failure=failure))

        def start(_: Any) -> Deferred:
            d = self._call_with_deadline(instance.startService, (), self.start_deadline)
            return d.addCallbacks(lambda _: instance, failed)

        def failed(failure: Failure) -> Any:
            self._mark_stopped(record.name, instance)
            self._release(record.name, instance)
            self._close_owned(record.name, version.api)  # type: ignore[arg-type]
            if failure.check(TimeoutError):
                failure = Failure(StartTimedOut(record.name, self.start_deadline))
            return Failure(InitFailed(record.name, "startService failed", failure=failure))

        return given.addCallbacks(start, state_refused)

    def _lost(self, record: _Record, error: PluginError) -> None:
        """
        Neither the new nor the old version could start: the plugin is gone.
        """
        self._broadcast("plugin_init_failed", record.name, failure=Failure(error), message=str(error))
        record.instance = None
        self._forget(record)

    def _after_reload(self, record: _Record) -> None:
        self._schedule_drain(record)
        self._settle(record)
        if self._watcher is not None:
            self._update_watch()

    def _reload_dependents(self, instance: Any, name: str, mode: ShutdownMode) -> Deferred:
        order = [n for n in reversed(self._dependents(name))]
        result: Deferred = Deferred()

        def next_one(_: Any = None) -> None:
            while order and order[0] not in self._records:
                order.pop(0)
            if not order:
                result.callback(instance)
                return
            self.reload(order.pop(0), mode=mode).addCallbacks(next_one, lambda f: next_one())

        next_one()
        return result

    def reload_changed(self) -> Deferred:
        """
        Reload every plugin whose source files (its module and submodules)
        changed since it was loaded, judged by content hash. Hashing runs
        off the reactor thread; imports run on it.

        @return: a Deferred firing with {name: new instance, or the Failure
            of its failed reload}.
        """
        return self._reload_changed(None)

    def _reload_changed(self, only: Optional[Iterable[str]]) -> Deferred:
        recorded = {
            name: dict(record.imported.hashes)
            for name, record in self._records.items()
            if record.imported is not None
            and record.state in (PluginState.RUNNING, PluginState.RELOADING, PluginState.LOADED)
            and (only is None or name in only)
        }
        paths = sorted({p for hashes in recorded.values() for p in hashes})
        d = self._blocking(_source.hash_files, paths)

        def compare(current: Dict[str, Optional[str]]) -> Deferred:
            changed = [
                name for name, hashes in recorded.items()
                if any(current.get(p) != h for p, h in hashes.items())
            ]
            changed.sort(key=lambda n: self._records[n].sequence if n in self._records else 0)
            outcome: Dict[str, Any] = {}
            reloads = []
            for name in changed:
                if name not in self._records:
                    continue
                r = self.reload(name)
                r.addBoth(lambda value, name=name: outcome.__setitem__(name, value))
                reloads.append(r)
            return gatherResults(reloads).addCallback(lambda _: outcome)

        return d.addCallback(compare)

    def _blocking(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run blocking C{f} in the reactor's thread pool, or right here when
        the reactor has no threads (a Clock in tests).
        """
        if IReactorThreads.providedBy(self._reactor):
            # An idle worker thread keeps its last job's Deferred until its
            # next job: hand the result over to a fresh Deferred, so that
            # what the caller chains (reloaded plugins) is not kept alive.
            result: Deferred = Deferred()
            threaded = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)
            threaded.addBoth(lambda outcome: _pass(result, outcome))
            return result
        try:
            return succeed(f(*args))
        except Exception:
            return fail()

    # -- watching -------------------------------------------------------

    def watch(self, debounce: float = 0.05, **options: Any) -> None:
        """
        Reload plugins when their source files change, after C{debounce}
        seconds of quiet; announce new and removed plugin files in the
        configured paths (C{plugin_available}, C{plugin_source_removed}).
        Uses inotify where it can, polling elsewhere. C{options} go to
        L{SourceWatcher} (C{poll_interval}, C{use_inotify}).
        """
        from ._watch import SourceWatcher

        if self._watcher is not None:
            self.unwatch()
        self._known_available = set(self._available_sources())
        self._watcher = SourceWatcher(self._reactor, self._files_changed, debounce=debounce, **options)
        self._update_watch()
        self._watcher.start()

    def unwatch(self) -> None:
        """
        Stop watching source files.
        """
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def _available_sources(self) -> Dict[str, str]:
        """
        Plugin name -> the configured path it would load from.
        """
        found: Dict[str, str] = {}
        for directory in self.paths:
            for name in _source.available((), (directory,)):
                found.setdefault(name, directory)
        return found

    def _update_watch(self) -> None:
        directories = set(os.path.abspath(p) for p in self.paths if os.path.isdir(p))
        for record in self._records.values():
            if record.imported is not None:
                for path in record.imported.hashes:
                    directories.add(os.path.dirname(os.path.abspath(path)))
        if self._watcher is not None:
            self._watcher.set_targets(sorted(directories))

    def _files_changed(self, paths: Any) -> None:
        changed = {os.path.abspath(p) for p in paths}
        affected = [
            name for name, record in self._records.items()
            if record.imported is not None and _touches(record.imported, changed)
        ]
        if affected:
            self._reload_changed(affected).addErrback(
                lambda f: self.log.failure("reload on file change failed", failure=f))
        if self._known_available is not None:
            now = self._available_sources()
            for name in sorted(set(now) - self._known_available):
                self._broadcast("plugin_available", name, path=now[name])
            for name in sorted(self._known_available - set(now)):
                self._broadcast("plugin_source_removed", name)
            self._known_available = set(now)


def _root_of(modules: Mapping[str, Any]) -> str:
    """
    The name of the top module of C{modules} (a module and its submodules).
    """
    return min(modules, key=len)


def _attribute(obj: Any, attribute: str) -> Any:
    """
    C{getattr(obj, attribute, None)}, for plugin objects: a lookup that
    raises anything (a property, a C{__getattr__}) gives L{None}.
    """
    try:
        return getattr(obj, attribute, None)
    except BaseException:
        return None


#: No state was taken from the old instance.
_NO_STATE: Any = object()


def _touches(imported: _source.ImportedPlugin, changed: set) -> bool:
    """
    Whether a change to the files C{changed} concerns the plugin
    C{imported}: one of its own files, or (for a package plugin) any
    Python file inside its directory.
    """
    if any(os.path.abspath(p) in changed for p in imported.hashes):
        return True
    if imported.source.is_package:
        top = os.path.abspath(imported.source.directory) + os.sep
        return any(p.startswith(top) and p.endswith(".py") for p in changed)
    return False


_text = safe_str
