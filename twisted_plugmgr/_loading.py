"""
Loading: a plugin imported, its requirements loaded first, constructed,
and started once its requirements run; a failed attempt leaves nothing,
the requirements it loaded included.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from . import _source
from ._delivery import Delivery
from ._dispatch import HandlerIndex
from ._errors import AlreadyLoaded, DependencyError, ManagerStopped, NoSuchPlugin, PluginError
from ._events import Reporter
from ._instance import Version, VersionLife
from ._lifecycle import ManagerLifecycle, ShutdownMode
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
    """

    def __init__(self, registry: Registry, life: VersionLife, index: HandlerIndex,
                 delivery: Delivery, reporter: Reporter, importer: Importer,
                 reactor: IReactorTime, phase: ManagerLifecycle, running: Callable[[], bool],
                 teardown: Callable[[Record, str, PluginError], None],
                 settle: Callable[[Record], None], unload: Callable[..., Deferred[Any]],
                 changed: Callable[[], None]) -> None:
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

    def failed(self, name: Any, error: PluginError) -> Deferred[Any]:
        """
        Broadcast C{error} as the load failure it is, and return it as a
        failed Deferred.
        """
        self.reporter.load_failed(name, error)
        return fail(error)

    def load(self, name: Any, data: Any, chain: Tuple[str, ...] = (),
             wait_start: bool = True) -> Deferred[Any]:
        """
        L{PluginManager.load}; C{chain} is the requirements being loaded
        (for cycles), and without C{wait_start} the Deferred fires once the
        plugin is constructed.
        """
        try:
            if not self.phase.accepting:
                raise ManagerStopped(name)
            _source.check_name(name)
            existing = self.registry.get(name)
            if existing is not None:
                if existing.lifecycle.stopping and existing.stop is not None:
                    return existing.stop.wait().addBoth(
                        lambda _: self.load(name, data, chain, wait_start))
                raise AlreadyLoaded(name, f"its state is {existing.state.value}")
        except PluginError as error:
            return self.failed(name, error)
        record = self.registry.add(name, data, self.reactor.seconds())
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
        return self._load_requirements(record, to_load, chain).addCallback(
            lambda _: self._construct_and_start(record, data, wait_start))

    def abandon(self, record: Record, error: PluginError) -> Deferred[Any]:
        """
        C{record} failed before it was constructed (or while it was):
        nothing of it remains, and C{error} is broadcast and returned.
        """
        self.teardown(record, "fail", NoSuchPlugin(record.name, "it failed to load"))
        record.settled()
        return self.failed(record.name, error)

    def _load_requirements(self, record: Record, names: List[str],
                           chain: Tuple[str, ...]) -> Deferred[Any]:
        loaded: List[str] = []
        result: Deferred[Any] = Deferred()

        def next_one(_: Any = None) -> None:
            while names and names[0] in self.registry:
                names.pop(0)
            if not names:
                result.callback(None)
                return
            required = names.pop(0)
            # Before the manager starts, a requirement is only constructed:
            # it starts with the manager, before what requires it.
            d = self.load(required, None, chain + (record.name,), wait_start=self.running())
            d.addCallbacks(done, failed, callbackArgs=(required,))

        def done(_: Any, required: str) -> None:
            loaded.append(required)
            next_one()

        def failed(failure: Failure) -> None:
            # Take back what this attempt loaded, then fail.
            error = failure.value
            missing = getattr(error, "plugin", "?")
            chain_of = getattr(error, "chain", ()) or chain + (record.name, missing)
            undo = [self.unload(n, ShutdownMode.IMMEDIATE, "requirement of a failed load",
                                why="load_failed")
                    for n in reversed(loaded) if n in self.registry]
            done = gatherResults(undo, consumeErrors=True) if undo else succeed(None)
            done.addBoth(lambda _: result.errback(Failure(DependencyError(
                record.name, chain_of,
                f"cannot load requirement {missing!r} (chain {' -> '.join(chain_of)}): {error}",
                failure=failure))))

        next_one()
        return result.addErrback(lambda f: self.abandon(record, f.value))

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
