"""
The plugin manager: a L{MultiService} whose children are plugins.

It keeps the public API, the order of things and the glue, and composes the
helpers that do the work: L{_source} and L{_instance} import and construct
a plugin version, L{_instance.VersionLife} starts and stops it with
deadlines, L{_registry} keeps the records, L{_lifecycle} says which
transitions are possible, L{_dispatch} which plugin handles which event,
L{_delivery} delivers posts, calls and emits, L{_reload} reloads,
L{_autoreload} watches files, and L{_events} tells the listeners. No helper
imports this module.

Operations on one plugin never interleave: an operation asked for while
another is under way on the same plugin waits for it to settle (see
L{PluginManager.unload} and L{PluginManager.load} for the defined outcomes).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _source
from ._autoreload import AutoReload
from ._delivery import Delivery, HandlerMetrics
from ._details import PluginDetails, describe
from ._dispatch import HandlerIndex
from ._errors import (
    NoSuchPlugin,
    PluginError,
)
from ._events import Listener, Listeners, Reporter
from ._host import Host
from ._instance import Version, VersionLife
from ._interfaces import IPluginManager
from ._isolate._isolator import Isolator
from ._lifecycle import (
    DEFAULT_START_DEADLINE,
    ManagerLifecycle,
    ShutdownMode,
    coerce_deadlines,
)
from ._loading import Loader
from ._manager_policy import PolicyMethods
from ._oldcode import OldCode
from ._policy import RestartPolicy
from ._registry import PluginInfo, Record, Registry
from ._reload import UNCHANGED, Reloader
from ._stopping import Stopper
from ._supervise import Supervisor

__all__ = ["PluginManager", "PluginInfo"]


@implementer(IPluginManager)
class PluginManager(PolicyMethods, MultiService):
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
        broadcasts C{plugin_warning}. @param timer: what handler calls are timed with.
    @param log_tables: log C{plugin_table} events too (at debug level).
    @param entry_points: also find plugins in the entry-point group
        C{twisted_plugmgr.plugins} of the installed distributions.
    @param old_code_grace: seconds after a plugin version goes (unload,
        reload) to warn if its module or class is still referenced (L{None}:
        never).
    @param policy: the restart policy of the plugins that do not say
        otherwise: C{restart}, C{restart_delay}, C{restart_delay_max},
        C{restart_burst}, C{restart_interval}, C{fail_on_error} (see
        L{RestartPolicy}; a bad value raises C{ValueError} naming the key).
    """

    log = Logger()

    def __init__(
        self,
        packages: Iterable[str] = (),
        paths: Iterable[str] = (),
        deadlines: Optional[Mapping[Union[ShutdownMode, str], float]] = None,
        reactor: Optional[IReactorTime] = None,
        *,
        start_deadline: float = DEFAULT_START_DEADLINE,
        stop_mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
        slow_call: float = 0.25,
        timer: Callable[[], float] = time.perf_counter,
        old_code_grace: Optional[float] = 5.0,
        log_tables: bool = False,
        entry_points: bool = True,
        **policy: Any,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _global_reactor

            reactor = cast(IReactorTime, _global_reactor)
        if isinstance(packages, str) or isinstance(paths, str):
            raise TypeError("packages and paths are sequences of names, not one string")
        self.packages: Tuple[str, ...] = tuple(packages)
        self.paths: Tuple[str, ...] = tuple(str(p) for p in paths)
        self.entry_points = bool(entry_points)
        self.deadlines = coerce_deadlines(deadlines)
        if not start_deadline > 0:
            raise ValueError(f"invalid start_deadline {start_deadline!r}: expected a positive number")
        self.stop_mode = ShutdownMode.coerce(stop_mode)
        self._reactor = reactor
        self._phase = ManagerLifecycle()
        self._listeners = Listeners(Logger(namespace="twisted_plugmgr.events"),
                                    log_tables=log_tables)
        self._reporter = reporter = Reporter(self._listeners)
        self._registry = registry = Registry()
        self._index = HandlerIndex()
        # Unique to this manager, also after it is gone: an id is reused by
        # the next object, and a plugin module of this one may outlive it.
        self._private_prefix = f"_plugmgr_{uuid.uuid4().hex[:12]}__"
        self._supervisor: Supervisor
        self._isolator = Isolator(reactor, registry)  # imports isolated plugins in workers
        host = Host(registry, reporter,
                    lambda record, reason, mode: self._supervisor.end(record, reason, mode),
                    lambda record, failure, cause: self._supervisor.failed(record, failure, cause),
                    lambda record: self._supervisor.fails_on_error(record))
        self._host = host
        self._life = VersionLife(self, reactor, reporter, float(start_deadline), host)
        self._delivery = Delivery(registry, self._index, reactor, reporter, timer, float(slow_call))
        self._autoreload = AutoReload(
            reactor, lambda: self.paths, registry, reporter,
            lambda names: self._reloader.reload_changed(self.reload, names))
        self._stopper = Stopper(
            registry, self._life, self._index, self._delivery, reporter, self.deadlines,
            self._phase, settle=self._settle,
            dropped=self._dropped, changed=self._autoreload.update,
            park=lambda record: self._supervisor.park(record),
            parked=lambda record: self._supervisor.parked(record),
            oldcode=OldCode(reactor, reporter.warning, old_code_grace))
        self._loader = Loader(
            registry, self._life, self._index, self._delivery, reporter, self._import, reactor,
            self._phase, running=lambda: bool(self.running), teardown=self._stopper.teardown,
            settle=self._settle, unload=self._stopper.unload_named, changed=self._autoreload.update,
            revive=lambda record, data, clear, policy=None: self._supervisor.revive(
                record, data, clear, policy))
        self._reloader = Reloader(
            registry, self._life, self._index, reporter, self._import, self.deadlines, reactor,
            abandon=self._delivery.abandon, require=self._loader.require,
            release=self._loader.release,
            revive=lambda record, data, clear: self._supervisor.revive(record, data, clear),
            after=self._after_reload, lost=self._stopper.lost, phase=self._phase)
        self._reloader.oldcode = self._stopper.oldcode
        self._supervisor = Supervisor(
            registry, self._life, self._index, self._delivery, reporter, reactor,
            RestartPolicy().evolve(**policy), self.deadlines, settle=self._settle,
            unload=self._stopper.unload_named,
            dependents_restart=self._reloader.restart_dependents,
            accepting=lambda: self._phase.accepting)

    @property
    def start_deadline(self) -> float:
        """Seconds a plugin's C{startService}, C{get_state}, C{set_state} may take."""
        return self._life.start_deadline

    @property
    def slow_call(self) -> float:
        """A handler call longer than this many seconds warns (C{plugin_warning})."""
        return self._delivery.slow_call

    @property
    def metrics(self) -> HandlerMetrics:
        """What is counted of handler calls and reloads while metrics are on."""
        return self._delivery.metrics

    @property
    def module_prefix(self) -> str:
        """
        The prefix of its plugins' private names in C{sys.modules}: one per
        manager, never that of another manager of this process.
        """
        return self._private_prefix

    @property
    def watch_mode(self) -> Optional[str]:
        """How files are watched: C{"inotify"} or C{"polling"}; L{None} before L{watch}."""
        return self._autoreload.mode

    def add_package(self, package: str) -> None:
        """
        Look for plugins in package C{package} too, after those given at
        construction (adding one already there does nothing).
        """
        if not isinstance(package, str) or not package:
            raise TypeError(f"a package is a dotted name, not {package!r}")
        if package not in self.packages:
            self.packages = self.packages + (package,)

    # -- listeners, and what plugin APIs report ---------------------------

    def register(self, listener: Listener) -> None:
        """Add C{listener}, a callable taking a L{PluginEvent} (twice is once)."""
        self._listeners.register(listener)

    def unregister(self, listener: Listener) -> None:
        """Remove C{listener}."""
        self._listeners.unregister(listener)

    def instance_of(self, name: str) -> Any:
        """
        The instance serving under C{name} (what a L{LiveReference} reaches).
        @raise NoSuchPlugin: when none is (loading, stopping, restarting...).
        """
        return self._host.instance_of(name)

    # -- supervision: restart_policy, set_restart_policy, policy_of,
    # set_policy and reset are PolicyMethods'.

    def _dropped(self, record: Record, error: PluginError) -> None:
        self._reloader.dropped(record, error)
        self._supervisor.forget(record)
        self._isolator.pool.released()  # the warm spare goes with the last isolated plugin

    # -- the table --------------------------------------------------------

    def plugin_table(self) -> Dict[str, PluginInfo]:
        """
        Name -> L{PluginInfo} of every plugin loaded (or loading); also
        broadcast as C{plugin_table}.
        """
        table = {record.name: self.info(record.name) for record in self._registry}
        self._reporter.broadcast("plugin_table", table=table)
        return table

    def info(self, name: str) -> PluginInfo:
        """The row of plugin C{name} (loading included). @raise NoSuchPlugin: if none."""
        record = self._registry.get(name)
        if record is None:
            raise NoSuchPlugin(name, "not loaded")
        return record.info(self._index.events_of(name))

    def details(self, name: str) -> PluginDetails:
        """
        All the manager knows of plugin C{name} (L{PluginDetails}: its row,
        requirements, dependents, files, policy, old versions still alive).
        @raise NoSuchPlugin: if it is not loaded.
        """
        record = self._registry.named(name)
        return describe(record, self._registry, list(self._index.events_of(name)),
                        self._supervisor.policy_of(record), self._stopper.oldcode)

    def available(self) -> List[str]:
        """
        The sorted names of the plugins that could be loaded from
        C{packages}, C{paths} and (if C{entry_points}) the installed
        distributions' entry points, found without importing them.
        """
        return _source.available(self.packages, self.paths, self.entry_points)

    # -- service ----------------------------------------------------------

    def startService(self) -> Deferred[Any]:
        """
        Start the manager and every plugin loaded before it, requirements
        first. Returns a Deferred firing once they have all started or
        failed (failures are broadcast, not raised).
        """
        Service.startService(self)
        if not self._phase.accepting:
            return succeed(None)
        starts = [self._loader.start(record) for record in self._registry.in_order()
                  if record.lifecycle.unstarted]
        return gatherResults([d.addErrback(lambda f: None) for d in starts])

    def stopService(self) -> Deferred[Any]:
        """
        L{shutdown} in the manager's C{stop_mode} (C{SMART} by default);
        twistd's reactor shutdown waits for it.
        """
        Service.stopService(self)
        return self.shutdown(self.stop_mode)

    # -- load -------------------------------------------------------------

    def load(self, name: str, data: Any = None, **policy: Any) -> Deferred[Any]:
        """
        Load plugin C{name}, constructed as C{cls(api, data)}, after the
        plugins it C{requires}, and start it (now, or with the manager). A
        plugin that is stopping is loaded anew once it has stopped; a
        quarantined one is started afresh. C{policy}: keys of its
        L{RestartPolicy} (L{None}: not given).

        @return: a Deferred firing with the started plugin, after
            C{plugin_started}; or failing with a L{PluginError} (broadcast,
            with a C{reason}), nothing of the plugin left.
        """
        try:
            return self._loader.load_with_policy(name, data, policy)
        except BaseException:
            # A bug of ours, not a plugin's: never raise out of load().
            failure = Failure()
            record = self._registry.get(name)
            if record is not None and record.lifecycle.loading:
                self._stopper.teardown(record, "fail", NoSuchPlugin(name, "it failed to load"))
                record.settled()
            self.log.failure("load({name!r}) failed unexpectedly", failure=failure, name=name)
            return fail(failure)

    def _import(self, name: str) -> Tuple[Version, Tuple[str, ...], Dict[str, Any]]:
        return self._isolator.import_version(name, self.packages, self.paths, self._private_prefix,
                                             self.entry_points)

    def _settle(self, record: Record) -> None:
        record.settled()
        self._reloader.settled(record, self.reload)
        self._supervisor.settled(record)

    # -- unload and shutdown ----------------------------------------------

    def unload(
        self,
        name: str,
        mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
        reason: str = "",
        cascade: bool = True,
    ) -> Deferred[Any]:
        """
        Shut plugin C{name} down in C{mode} (with the mode's deadline), remove
        it as a child and drop its modules. Those that require it go first,
        unless C{cascade} is false (then L{DependencyError}). One starting or
        reloading goes once that is over; one stopping: that stop.

        @return: a Deferred firing with the quit message, after
            C{plugin_unloaded}; failing with L{NoSuchPlugin} (broadcast as
            C{plugin_unload_failed}), or L{ShutdownFailed} when its shutdown
            raised or timed out (it was removed anyway).
        """
        return self._stopper.unload_named(name, mode, reason, cascade, "unloaded")

    def removeService(self, service: Any) -> Deferred[Any]:
        """
        A plugin removed from its manager (C{disownServiceParent()}) ends
        itself, as with L{PluginAPI.stop}; other services are removed as
        by L{MultiService}.
        """
        ended = self._host.removed(service)
        return ended if ended is not None else MultiService.removeService(self, service)

    def shutdown(self, mode: Union[ShutdownMode, str] = ShutdownMode.SMART) -> Deferred[Any]:
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
        d = self._stopper.shutdown(ShutdownMode.coerce(mode), self.unwatch)
        # The warm spare worker, if any, ends too (none is started again:
        # no plugin is left to want one).
        return d.addBoth(lambda outcome: self._isolator.pool.close().addBoth(lambda _: outcome))

    # -- addressing -------------------------------------------------------

    def call(self, plugin: str, event: str, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        Call C{plugin}'s handler of C{event} (or its C{default(event, ...)}).
        A plugin that is starting or reloading is called once it runs.

        @return: a Deferred with the handler's result; failing with
            L{NoSuchPlugin}, L{NoSuchHandler}, or what the handler raised
            (also broadcast as C{plugin_error}).
        """
        return self._delivery.call(plugin, event, args, kw)

    def post(self, plugin: str, event: str, *args: Any, **kw: Any) -> None:
        """
        Deliver C{event} to C{plugin} on a later reactor turn, in FIFO order
        per target. A delivery that fails (the handler raised, the plugin
        has no handler, or it was unloaded first) is broadcast as
        C{plugin_error}.

        @raise NoSuchPlugin: if no plugin of that name is loaded now.
        """
        self._delivery.post(plugin, event, args, kw)

    def emit(self, event: str, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        Call every handler of C{event}, by priority then load order. Only
        the plugins that handle C{event} are touched. A handler that returns
        L{STOP} ends the emit; a failing handler is broadcast as
        C{plugin_error} and adds nothing. A plugin that is reloading is
        called once its reload is over (exactly one version of it).

        @return: a Deferred firing with the list of the handlers' results.
        """
        return self._delivery.emit(event, args, kw)

    # -- reload -----------------------------------------------------------

    def reload(
        self,
        name: str,
        data: Any = UNCHANGED,
        mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
        dependents: bool = False,
        isolation: Optional[Mapping[str, Any]] = None,
    ) -> Deferred[Any]:
        """
        Replace plugin C{name} with a fresh import of its source,
        transactionally: the old instance serves until the new one is
        imported, checked and constructed; then the old one stops in C{mode},
        its C{get_state()} goes to the new one's C{set_state()}, and the new
        one starts -- or, if it fails to, a fresh instance of the old class,
        with the state. Messages meanwhile are held for whichever runs. One
        reload at a time per plugin; several waiting collapse into one.

        @param data: the new instance's data (the current data by default).
        @param dependents: also reload, after it, the plugins that require
            it, in dependency order.
        @param isolation: new isolation options (C{isolate},
            C{call_deadline}, C{limits}) in place of those given at load
            (C{{}}: none, the class's own apply); L{None} keeps them. A
            reload with C{{"isolate": True}} moves a running plugin into a
            worker process with its state (pickled), C{{"isolate": False}}
            back; they are in effect once the reload succeeded.
        @return: a Deferred with the new instance, after C{plugin_reloaded}; or failing with
            L{NoSuchPlugin}, L{CompileFailed}, L{InvalidMetadata} or L{InitFailed}, still serving.
        """
        try:
            return self.metrics.timed(self._reloader.reload_named(
                name, data, mode, dependents, self.reload, isolation))
        except BaseException:
            # A bug of ours, not a plugin's: never raise out of reload().
            failure = Failure()
            self.log.failure("reload({name!r}) failed unexpectedly", failure=failure, name=name)
            return fail(failure)

    def reload_many(self, names: Iterable[str], data: Optional[Mapping[str, Any]] = None,
                    mode: Union[ShutdownMode, str] = ShutdownMode.SMART) -> Deferred[Any]:
        """
        Reload the running plugins C{names} in one transaction (C{data}:
        name -> new data): all new versions are built first, then swapped in
        dependency order; any failure puts every one back as it was.

        @return: a Deferred with {name: new version}, after one
            C{plugin_reloaded} each; or failing with L{ReloadFailed}.
        """
        return self.metrics.timed(self._reloader.reload_many(names, data, mode))

    def _after_reload(self, record: Record) -> None:
        self._delivery.schedule(record)
        self._settle(record)
        self._autoreload.update()

    def reload_changed(self) -> Deferred[Any]:
        """
        Reload every plugin whose source files (its module and submodules)
        changed since it was loaded, judged by content hash. Hashing runs
        off the reactor thread; imports run on it.

        @return: a Deferred firing with {name: new instance, or the Failure
            of its failed reload}.
        """
        return self._reloader.reload_changed(self.reload)

    # -- watching ---------------------------------------------------------

    def watch(self, debounce: float = 0.005, **options: Any) -> None:
        """
        Reload plugins when their source files change, C{debounce} seconds
        after the last complete save; announce new and removed plugin files in the
        configured paths (C{plugin_available}, C{plugin_source_removed}).
        Uses inotify where it can, polling elsewhere. C{options} go to
        L{SourceWatcher} (C{poll_interval}, C{use_inotify}).
        """
        self._autoreload.start(debounce, **options)

    def unwatch(self) -> None:
        """Stop watching source files."""
        self._autoreload.stop()
