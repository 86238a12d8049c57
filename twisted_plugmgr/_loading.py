"""
Loading: a plugin imported, its requirements loaded first, constructed,
and started once its requirements run; a failed attempt leaves nothing,
the requirements it loaded included.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from . import _source
from ._delivery import Delivery
from ._dispatch import HandlerIndex
from ._errors import AlreadyLoaded, DependencyError, ManagerStopped, NoSuchPlugin, PluginError
from ._events import Reporter
from ._instance import Version, VersionLife
from ._isolate._options import check_options, split_options
from ._lifecycle import ManagerLifecycle, ShutdownMode
from ._policy import RestartPolicy
from ._registry import Record, Registry

__all__ = ["Loader"]

#: Imports the named plugin (see L{_instance.import_version}).
Importer = Callable[[str], Tuple[Version, Tuple[str, ...], Dict[str, Any]]]


class Loader:
    """
    Loads and starts one manager's plugins.

    @param registry: the manager's records.
    @param life: constructs and starts versions.
    @param index: the event index, which a plugin joins once started.
    @param delivery: delivers what was held for a plugin once it runs.
    @param reporter: where outcomes are broadcast.
    @param importer: imports a plugin by name.
    @param reactor: gives the time a plugin is loaded at.
    @param phase: the manager's phase.
    @param running: whether the manager has started.
    @param teardown: removes every trace of a record (see
        L{_stopping.Stopper.teardown}).
    @param settle: called with a record once it has settled.
    @param unload: unloads a plugin by name (with C{mode}, C{reason} and
        C{why}), to take back the requirements of a failed load.
    @param changed: called after a plugin started (to watch its files).
    @param revive: starts a quarantined record afresh with new data (see
        L{_supervise.Supervisor.revive}).
    """

    def __init__(self, registry: Registry, life: VersionLife, index: HandlerIndex,
                 delivery: Delivery, reporter: Reporter, importer: Importer,
                 reactor: IReactorTime, phase: ManagerLifecycle, running: Callable[[], bool],
                 teardown: Callable[[Record, str, PluginError], None],
                 settle: Callable[[Record], None], unload: Callable[..., Deferred[Any]],
                 changed: Callable[[], None],
                 revive: Callable[..., Deferred[Any]]) -> None:
        self.registry = registry
        self.life = life
        self.index = index
        self.delivery = delivery
        self.reporter = reporter
        self.importer = importer
        self.reactor = reactor
        self.phase = phase
        self.running = running
        self.teardown = teardown
        self.settle = settle
        self.unload = unload
        self.changed = changed
        self.revive = revive

    def failed(self, name: Any, error: PluginError) -> Deferred[Any]:
        """
        Broadcast C{error} as the load failure it is, and return it as a
        failed Deferred.
        """
        self.reporter.load_failed(name, error)
        return fail(error)

    def load_with_policy(self, name: Any, data: Any, policy: Mapping[str, Any]) -> Deferred[Any]:
        """
        L{PluginManager.load}: C{policy} (restart policy keys, L{None} for
        not given) is checked first; a bad key or value fails the load with
        a L{PluginError} naming it.
        """
        policy, isolation = split_options(policy)
        try:
            RestartPolicy().evolve(**policy)
            isolation = check_options(isolation)
        except ValueError as e:
            return self.failed(name, PluginError(name, str(e)))
        return self.load(name, data, policy={k: v for k, v in policy.items() if v is not None},
                         isolation=isolation)

    def load(self, name: Any, data: Any, chain: Tuple[str, ...] = (),
             wait_start: bool = True, policy: Optional[Dict[str, Any]] = None,
             isolation: Optional[Dict[str, Any]] = None) -> Deferred[Any]:
        """
        L{PluginManager.load}; C{chain} is the requirements being loaded
        (for cycles), without C{wait_start} the Deferred fires once the
        plugin is constructed, and C{policy} is its restart policy keys. A
        quarantined plugin is started afresh.
        """
        try:
            if not self.phase.accepting:
                raise ManagerStopped(name)
            _source.check_name(name)
            existing = self.registry.get(name)
            if existing is not None and existing.lifecycle.quarantined:
                return self.revive(existing, data, True, dict(policy or {}))
            if existing is not None:
                if existing.lifecycle.stopping and existing.stop is not None:
                    return existing.stop.wait().addBoth(
                        lambda _: self.load(name, data, chain, wait_start, policy, isolation))
                raise AlreadyLoaded(name, f"its state is {existing.state.value}")
        except PluginError as error:
            return self.failed(name, error)
        record = self.registry.add(name, data, self.reactor.seconds())
        record.policy = dict(policy or {})
        record.isolation = dict(isolation or {})  # isolate, call_deadline, limits
        try:
            record.version, missing, record.displaced = self.importer(name)
            for required in record.requires:
                if required in chain or required == name:
                    cycle = chain + (name, required)
                    raise DependencyError(name, cycle, "dependency cycle: " + " -> ".join(cycle))
        except PluginError as error:
            return self.abandon(record, error)
        if missing:
            self.reporter.broadcast("plugin_invalid_values", name, missing=missing,
                                    message="missing " + ", ".join(missing))
        to_load = [r for r in record.requires if r not in self.registry]
        if not to_load:
            return self._construct_and_start(record, data, wait_start)
        return self._load_requirements(name, to_load, chain, "load_failed").addCallbacks(
            lambda _: self._construct_and_start(record, data, wait_start),
            lambda f: self.abandon(record, f.value))

    def abandon(self, record: Record, error: PluginError) -> Deferred[Any]:
        """
        C{record} failed before it was constructed (or while it was):
        nothing of it remains, and C{error} is broadcast and returned.
        """
        self.teardown(record, "fail", NoSuchPlugin(record.name, "it failed to load"))
        record.settled()
        return self.failed(record.name, error)

    def _load_requirements(self, name: str, names: List[str], chain: Tuple[str, ...],
                           why: str) -> Deferred[List[str]]:
        """
        Load C{names} one by one, as requirements of C{name} (C{chain} is
        what is being loaded, for cycles).

        @return: a Deferred with the names it loaded; or failing with
            L{DependencyError} once what it loaded is unloaded again (their
            C{plugin_unloaded} says C{why}).
        """
        loaded: List[str] = []
        names = list(names)
        result: Deferred[List[str]] = Deferred()

        def next_one(_: Any = None) -> None:
            while names and names[0] in self.registry:
                names.pop(0)
            if not names:
                result.callback(loaded)
                return
            required = names.pop(0)
            # Before the manager starts, a requirement is only constructed:
            # it starts with the manager, before what requires it.
            d = self.load(required, None, chain + (name,), wait_start=self.running())
            d.addCallbacks(done, failed, callbackArgs=(required,))

        def done(_: Any, required: str) -> None:
            loaded.append(required)
            next_one()

        def failed(failure: Failure) -> None:
            error = failure.value
            missing = getattr(error, "plugin", "?")
            chain_of = getattr(error, "chain", ()) or chain + (name, missing)
            # The cause, once: what failed at the end of the chain of
            # requirements (each level's message would repeat the next).
            cause = failure
            while isinstance(cause.value, DependencyError) and cause.value.requirement \
                    and cause.value.failure is not None:
                cause = cause.value.failure
            self.release(loaded, why).addBoth(lambda _: result.errback(Failure(DependencyError(
                name, chain_of, f"cannot load requirement {missing!r} (chain "
                f"{' -> '.join(chain_of)})", failure=cause, requirement=missing))))

        next_one()
        return result

    def release(self, names: List[str], why: str) -> Deferred[Any]:
        """
        Unload C{names} (requirements an attempt loaded before it failed),
        last loaded first; one that another plugin requires by now stays.
        """
        undo = [self.unload(n, ShutdownMode.IMMEDIATE, "requirement of a failed " +
                            ("load" if why == "load_failed" else "reload"), False, why)
                for n in reversed(names) if n in self.registry]
        return gatherResults(undo, consumeErrors=True) if undo else succeed(None)

    def require(self, name: str, names: Tuple[str, ...]) -> Deferred[List[str]]:
        """
        For a reload of C{name} whose new version requires C{names}: load
        those not loaded, and wait until all of them run.

        @return: a Deferred with the names it loaded; or failing with
            L{DependencyError} (a cycle, a requirement that cannot be loaded
            or does not start) once what it loaded is unloaded again.
        """
        dependents = self.registry.dependents(name)
        for required in names:
            if required == name or required in dependents:
                cycle = (name, required, name)
                return fail(DependencyError(name, cycle, "dependency cycle: " + " -> ".join(cycle)))
        missing = [r for r in names if r not in self.registry]
        loading = self._load_requirements(name, missing, (), "reload_failed")

        def running(loaded: List[str]) -> Deferred[List[str]]:
            waits = gatherResults([self._when_running(r) for r in names], consumeErrors=True)

            def not_running(failure: Failure) -> Deferred[Any]:
                error = getattr(failure.value, "subFailure", failure).value
                return self.release(loaded, "reload_failed").addBoth(
                    lambda _: Failure(DependencyError(
                        name, (name,) + names, f"a requirement did not start: {error}")))

            return waits.addCallbacks(lambda _: loaded, not_running)

        return loading.addCallback(running)

    def _construct_and_start(self, record: Record, data: Any, wait_start: bool) -> Deferred[Any]:
        assert record.version is not None
        try:
            if not self.phase.accepting:
                raise ManagerStopped(record.name)
            self.life.construct(record.name, record.version, data)
        except PluginError as error:
            return self.abandon(record, error)
        self.life.adopt(record.name, record.instance)
        record.lifecycle.fire("loaded")
        if self.running():
            return self.start(record)
        self.settle(record)
        return record.when_started() if wait_start else succeed(record.instance)

    def start(self, record: Record) -> Deferred[Any]:
        """
        Start C{record}'s instance, after its requirements have started.
        """
        waits = [self._when_running(r) for r in record.requires]
        if not waits:
            return self._start_now(record)

        def requirements_failed(failure: Failure) -> Any:
            if not (self.registry.current(record) and record.lifecycle.unstarted):
                # Unloaded while waiting for its requirements.
                return fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
            error = getattr(failure.value, "subFailure", failure).value
            return self._start_failed(record, DependencyError(
                record.name, (record.name,) + record.requires,
                f"a requirement did not start: {error}"))

        return gatherResults(waits, consumeErrors=True).addCallbacks(
            lambda _: self._start_now(record), requirements_failed)

    def _when_running(self, name: str) -> Deferred[Any]:
        record = self.registry.get(name)
        if record is None:
            return fail(NoSuchPlugin(name, "required but not loaded"))
        if record.lifecycle.serving:
            return succeed(record.instance)
        if record.lifecycle.restarting and not self.phase.accepting:
            # Nothing restarts once the manager shuts down.
            return fail(NoSuchPlugin(name, "required, but its restart was stopped"))
        if record.lifecycle.headed_for_running:
            return record.when_settled().addCallback(lambda _: self._when_running(name))
        return fail(NoSuchPlugin(name, f"required but {record.state.value}"))

    def _start_now(self, record: Record) -> Deferred[Any]:
        if not record.lifecycle.unstarted:
            # Unloaded (or failed) while waiting for its requirements.
            return fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
        version = record.version
        assert version is not None
        record.lifecycle.fire("start")

        def started(instance: Any) -> Any:
            record.lifecycle.fire("started")
            self.index.set(record.name, record.sequence, version.specs)
            self.reporter.broadcast("plugin_started", record.name)
            self.settle(record)
            record.started(instance)
            self.delivery.schedule(record)
            self.changed()
            return instance

        return self.life.start(record.name, version).addCallbacks(
            started, lambda f: self._start_failed(record, f.value))

    def _start_failed(self, record: Record, error: PluginError) -> Deferred[Any]:
        self.life.close(record.name, record.version)
        self.teardown(record, "fail", NoSuchPlugin(record.name, "it failed to start"))
        record.started(Failure(error))
        record.settled()
        return self.failed(record.name, error)
