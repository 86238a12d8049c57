"""
The reloader: one L{ReloadAttempt} object per reload of a plugin, the
reloads queued behind one under way, the reload of dependents after the
plugin they require, and L{Reloader.reload_changed}.

A reload is a transaction: the new version is imported and constructed
while the old one serves; only then does the old one stop, hand over its
state and make way. If the new version fails to start, a fresh instance of
the old one takes its place with the same state.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import attr
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from . import _source
from ._deferreds import call_with_deadline, fan_out, run_blocking
from ._dispatch import HandlerIndex
from ._errors import (
    InitFailed,
    InvalidData,
    ManagerStopped,
    NoSuchPlugin,
    PluginError,
    ReloadFailed,
    StartTimedOut,
)
from ._events import Reporter
from ._instance import NO_STATE, Version, VersionLife, attribute
from ._isolate._options import ISOLATION_KEYS, check_options
from ._lifecycle import ManagerLifecycle, ShutdownMode
from ._registry import Record, Registry
from ._supervise import one_line

__all__ = ["UNCHANGED", "Reloader", "ReloadAttempt"]

#: The data of a reload is the plugin's current data.
UNCHANGED: Any = object()

#: Imports a new version of the named plugin (see L{_instance.import_version}).
Importer = Callable[[str], Tuple[Version, Tuple[str, ...], Dict[str, Any]]]


@attr.s(auto_attribs=True, eq=False)
class _Queued:
    """
    A reload waiting for its plugin to settle; later requests collapse into
    it.
    """

    data: Any
    mode: ShutdownMode
    dependents: bool
    isolation: Optional[Dict[str, Any]] = None
    waiters: List[Deferred[Any]] = attr.ib(factory=list)


class Reloader:
    """
    Reloads one manager's plugins.

    @param registry: the manager's records.
    @param life: starts and stops versions.
    @param index: the event index, pointed at the new version on success.
    @param reporter: where outcomes are broadcast.
    @param importer: imports a new version of a plugin by name.
    @param deadlines: seconds each L{ShutdownMode}'s stop may take.
    @param reactor: where file hashing runs (in its thread pool, if any).
    @param abandon: fails the answers still waiting on a record's handlers
        (once its old version has stopped).
    @param require: loads the requirements a new version adds and waits
        until all of its requirements run (see L{_loading.Loader.require}).
    @param release: unloads the requirements an attempt loaded, when it
        fails (see L{_loading.Loader.release}).
    @param revive: starts a quarantined record afresh (see
        L{_supervise.Supervisor.revive}).
    @param phase: the manager's phase (a shut down manager reloads nothing).
    @param after: called with a record once its reload is over, whatever
        the outcome (the manager delivers what was held and settles it).
    @param lost: called with a record and the error when neither version
        could start (the manager removes the plugin).
    """

    def __init__(self, registry: Registry, life: VersionLife, index: HandlerIndex,
                 reporter: Reporter, importer: Importer, deadlines: Mapping[ShutdownMode, float],
                 reactor: IReactorTime, abandon: Callable[[Record, str], None],
                 require: Callable[[str, Tuple[str, ...]], Deferred[List[str]]],
                 release: Callable[[List[str], str], Deferred[Any]],
                 revive: Callable[[Record, Any, bool], Deferred[Any]],
                 after: Callable[[Record], None],
                 lost: Callable[[Record, PluginError], None], phase: ManagerLifecycle) -> None:
        self.registry = registry
        self.life = life
        self.index = index
        self.reporter = reporter
        self.importer = importer
        self.deadlines = deadlines
        self._reactor = reactor
        self.clock = reactor
        self.abandon = abandon
        self.require = require
        self.release = release
        self.revive = revive
        self.phase = phase
        self.oldcode: Any = None  # told of the old code of each reload (an OldCode)
        self.after = after
        self.lost = lost
        self._queued: Dict[Record, _Queued] = {}
        # name -> reloads under way because its source changed
        self._source_changed: Dict[str, int] = {}

    def failed(self, name: Any, error: PluginError) -> Deferred[Any]:
        """
        Broadcast C{plugin_reload_failed}, keep it as the plugin's last
        reload error, and return C{error} as a failed Deferred.
        """
        record = self.registry.get(name)
        if record is not None:
            record.last_reload_error = one_line(Failure(error))
            record.last_reload_error_at = self._reactor.seconds()
        self.reporter.broadcast("plugin_reload_failed", name, failure=Failure(error),
                                message=str(error), reason=self._reason(name))
        return fail(error)

    def reloaded(self, name: str, old_version: Optional[str],
                 new_version: Optional[str]) -> None:
        """
        Broadcast C{plugin_reloaded}.
        """
        self.reporter.broadcast("plugin_reloaded", name, old_version=old_version,
                                new_version=new_version, reason=self._reason(name))

    def _reason(self, name: Any) -> Optional[str]:
        """
        The C{reason} of a reload's event: C{"source_changed"} while
        L{reload_changed} reloads C{name} (the watcher, or
        C{reload_changed()}), else L{None} (a reload someone asked for).
        """
        changed = isinstance(name, str) and self._source_changed.get(name)
        return "source_changed" if changed else None

    def _for_change(self, names: List[str], start: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """
        Run C{start()}, the reload of C{names} because their source
        changed: their events say so (L{_reason}) until its Deferred fires.
        """
        for name in names:
            self._source_changed[name] = self._source_changed.get(name, 0) + 1

        def unmark(result: Any) -> Any:
            for name in names:
                left = self._source_changed.pop(name, 1) - 1
                if left > 0:
                    self._source_changed[name] = left
            return result

        return start().addBoth(unmark)

    def reload_named(self, name: Any, data: Any, mode: Any, dependents: bool,
                     reload: Callable[..., Deferred[Any]],
                     isolation: Optional[Mapping[str, Any]] = None) -> Deferred[Any]:
        """
        L{PluginManager.reload}, checked: a bad name, mode or isolation
        option, a manager that shut down, or a plugin that is not loaded
        fail with a L{PluginError}, broadcast as C{plugin_reload_failed}.
        """
        try:
            mode = ShutdownMode.coerce(mode)
            _source.check_name(name)
            if isolation is not None:
                if not isinstance(isolation, Mapping):
                    raise ValueError(f"invalid isolation {isolation!r}: expected a mapping of "
                                     + ", ".join(ISOLATION_KEYS))
                isolation = check_options(isolation)
            if not self.phase.accepting:
                raise ManagerStopped(name)
            record = self.registry.named(name)
            if not (record.lifecycle.addressable or record.lifecycle.quarantined):
                raise NoSuchPlugin(name, "not loaded")
        except (PluginError, ValueError) as error:
            if not isinstance(error, PluginError):
                error = PluginError(name, str(error))
            return self.failed(name, error)
        return self.request(record, data, mode, dependents, reload, isolation)

    def reload_many(self, names: Any, data: Optional[Mapping[str, Any]],
                    mode: Any) -> Deferred[Dict[str, Optional[str]]]:
        """
        L{PluginManager.reload_many}: every plugin named must run (and none
        be named twice); then one L{Transaction}.
        """
        from ._transaction import Transaction

        try:
            mode = ShutdownMode.coerce(mode)
            if isinstance(names, str):
                raise TypeError("names is a sequence of plugin names, not one string")
            names = list(names)
            if not names:
                return succeed({})
            if not self.phase.accepting:
                raise ManagerStopped(names[0])
            data = dict(data or {})
            records = []
            for name in names:
                _source.check_name(name)
                record = self.registry.named(name)
                if not record.lifecycle.serving or record in self._queued:
                    raise PluginError(name, f"it is {record.state.value}: a transaction "
                                            "reloads only running plugins")
                if record in records:
                    raise PluginError(name, "named twice")
                records.append(record)
            unknown = set(data) - set(names)
            if unknown:
                raise PluginError(sorted(unknown)[0], "data given for a plugin not in the set")
        except (PluginError, ValueError, TypeError) as error:
            plugin = getattr(error, "plugin", None)
            if not isinstance(error, PluginError):
                error = PluginError(plugin, str(error))
            return fail(ReloadFailed(error.plugin, failure=Failure(error)))
        return Transaction(self, records, data, mode).run()

    def request(self, record: Record, data: Any, mode: ShutdownMode, dependents: bool,
                reload: Callable[..., Deferred[Any]],
                isolation: Optional[Dict[str, Any]] = None) -> Deferred[Any]:
        """
        Reload C{record} now if it runs and nothing is queued for it;
        otherwise queue the reload until it runs and settles (collapsing it
        into the one queued already). A plugin loaded before its manager
        started is reloaded once it has started.

        @param reload: the manager's public C{reload}, for the dependents.
        @param isolation: its new isolation options (checked), replacing
            those of its load; L{None} keeps them.
        """
        if record.lifecycle.serving and record not in self._queued:
            return self._now(record, data, mode, dependents, reload, isolation)
        if record.lifecycle.quarantined:
            return self._revive(record, record.data if data is UNCHANGED else data, isolation)
        queued = self._queued.get(record)
        if queued is None:
            queued = self._queued[record] = _Queued(data, mode, dependents, isolation)
        else:
            if data is not UNCHANGED:
                queued.data = data
            if isolation is not None:
                queued.isolation = isolation
            queued.mode = mode
            queued.dependents = queued.dependents or dependents
        waiter: Deferred[Any] = Deferred()
        queued.waiters.append(waiter)
        return waiter

    def settled(self, record: Record, reload: Callable[..., Deferred[Any]]) -> None:
        """
        C{record} settled: run the reload queued for it, if any.
        """
        queued = self._queued.get(record)
        if queued is None or not record.lifecycle.settled or record.lifecycle.unstarted:
            return  # a plugin waiting for its manager's start: after it
        del self._queued[record]
        if self.registry.current(record) and record.lifecycle.serving:
            d = self._now(record, queued.data, queued.mode, queued.dependents, reload,
                          queued.isolation)
        else:
            d = fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
        fan_out(d, queued.waiters)

    def dropped(self, record: Record, error: PluginError) -> None:
        """
        C{record} is gone: the reloads queued for it fail with C{error}.
        """
        queued = self._queued.pop(record, None)
        if queued is not None:
            for waiter in queued.waiters:
                waiter.errback(Failure(error))

    def _revive(self, record: Record, data: Any,
                isolation: Optional[Dict[str, Any]] = None) -> Deferred[Any]:
        """
        Reload a quarantined plugin: its source is imported afresh (with
        C{isolation}, if given), and the new version starts as a restart
        would (its restarts still count).
        """
        old = record.version
        assert old is not None
        old_isolation = record.isolation
        if isolation is not None:
            record.isolation = dict(isolation)
        old_modules = _source.take_modules(old.module_name)
        try:
            new, _, _ = self.importer(record.name)
        except PluginError as error:
            record.isolation = old_isolation
            _source.restore_modules(old.module_name, old_modules)
            return self.failed(record.name, error)

        def give_up(failure: Failure) -> Any:
            record.isolation = old_isolation
            new.purge()
            _source.restore_modules(old.module_name, old_modules)
            error = failure.value if isinstance(failure.value, PluginError) else InitFailed(
                record.name, "a requirement failed", failure=failure)
            return self.failed(record.name, error)

        def required(loaded: List[str]) -> Deferred[Any]:
            if not record.lifecycle.quarantined:  # unloaded meanwhile
                return give_up(Failure(NoSuchPlugin(record.name, f"it is {record.state.value}")))
            record.version = new
            return self.revive(record, data, False).addCallbacks(started, not_started,
                                                                 errbackArgs=(loaded,))

        def not_started(failure: Failure, loaded: List[str]) -> Deferred[Any]:
            if failure.check(InvalidData) and record.lifecycle.quarantined:
                # The data was refused: nothing changed, the old code stays.
                record.isolation = old_isolation
                new.purge()
                _source.restore_modules(old.module_name, old_modules)
                record.version = old.fresh()
            error = failure.value if isinstance(failure.value, PluginError) else InitFailed(
                record.name, "it did not start", failure=failure)
            return self.release(loaded, "reload_failed").addBoth(
                lambda _: self.failed(record.name, error))

        def started(instance: Any) -> Any:
            record.reloads += 1
            record.last_reload_error = record.last_reload_error_at = None
            self.reloaded(record.name, old.version, new.version)
            return instance

        return self.require(record.name, new.requires).addCallbacks(required, give_up)

    def restart_dependents(self, name: str) -> Deferred[Any]:
        """
        Restart, one by one in dependency order, the running plugins that
        require C{name}, with their state: a fresh instance of the same code
        each (OTP's C{rest_for_one}).
        """
        order = [n for n in reversed(self.registry.dependents(name))]
        result: Deferred[Any] = Deferred()

        def next_one(_: Any = None) -> None:
            while order:
                record = self.registry.get(order.pop(0))
                if record is not None and record.lifecycle.serving:
                    self.reporter.broadcast("plugin_restarting", record.name, attempt=0, delay=0.0,
                                            message=f"restarted after {name}")
                    attempt = ReloadAttempt(self, record, record.data, ShutdownMode.SMART,
                                            fresh=True)
                    attempt.run().addBoth(next_one)
                    return
            result.callback(None)

        next_one()
        return result

    def prepare(self, record: Record, data: Any) -> Tuple[Version, Dict[str, Any]]:
        """
        Import C{record}'s source afresh beside the running version and
        construct the new instance.

        @return: the new version, and the old version's modules, taken
            aside (to put back on rollback).
        @raise PluginError: the old modules are in C{sys.modules} again.
        """
        old = record.version
        old_modules = _source.take_modules(old.module_name) if old is not None else {}
        new: Optional[Version] = None
        try:
            new, _, _ = self.importer(record.name)
            record.starting = new  # what its API does is the plugin's from now on
            self.life.construct(record.name, new, data)
        except BaseException:
            record.starting = None
            if new is not None:
                new.purge()
            if old is not None:
                _source.restore_modules(old.module_name, old_modules)
            raise
        return new, old_modules

    def _now(self, record: Record, data: Any, mode: ShutdownMode, dependents: bool,
             reload: Callable[..., Deferred[Any]],
             isolation: Optional[Dict[str, Any]] = None) -> Deferred[Any]:
        result = ReloadAttempt(self, record, record.data if data is UNCHANGED else data, mode,
                               isolation=isolation).run()
        if dependents:
            return result.addCallback(self._reload_dependents, record.name, mode, reload)
        return result

    def _reload_dependents(self, instance: Any, name: str, mode: ShutdownMode,
                           reload: Callable[..., Deferred[Any]]) -> Deferred[Any]:
        order = list(reversed(self.registry.dependents(name)))
        result: Deferred[Any] = Deferred()

        def next_one(_: Any = None) -> None:
            while order and order[0] not in self.registry:
                order.pop(0)
            if not order:
                result.callback(instance)
                return
            reload(order.pop(0), mode=mode).addCallbacks(next_one, lambda f: next_one())

        next_one()
        return result

    def reload_changed(self, reload: Callable[..., Deferred[Any]],
                       only: Optional[Iterable[str]] = None) -> Deferred[Dict[str, Any]]:
        """
        Reload every plugin (of C{only}, if given) whose source files changed
        since it was loaded, judged by content hash; hashing runs off the
        reactor thread.

        @return: a Deferred firing with {name: new instance, or the Failure
            of its failed reload}.
        """
        names = set(only) if only is not None else None
        recorded = {
            record.name: dict(record.version.imported.hashes)
            for record in self.registry
            if record.version is not None and record.lifecycle.watched
            and (names is None or record.name in names)
        }
        paths = sorted({p for hashes in recorded.values() for p in hashes})

        def compare(current: Dict[str, Optional[str]]) -> Deferred[Dict[str, Any]]:
            changed = [
                name for name, hashes in recorded.items()
                if any(current.get(p) != h for p, h in hashes.items())
            ]
            records = self.registry.records
            changed.sort(key=lambda n: records[n].sequence if n in records else 0)
            outcome: Dict[str, Any] = {}
            reloads = []

            def keep(value: Any, name: str) -> None:
                outcome[name] = value

            # Several running plugins changed together (a git pull, a
            # checkout): one transaction; the others one by one.
            together = [n for n in changed if n in records and records[n].lifecycle.serving
                        and records[n] not in self._queued]
            if len(together) > 1:
                def committed(result: Any) -> None:
                    for name in together:
                        if isinstance(result, Failure):
                            outcome[name] = result
                        else:
                            record = self.registry.get(name)
                            outcome[name] = record.instance if record is not None else None

                reloads.append(self._for_change(
                    together, lambda: self.reload_many(together, None, ShutdownMode.SMART))
                    .addBoth(committed))
            else:
                together = []
            for name in changed:
                if name in records and name not in together:
                    reloads.append(self._for_change([name], partial(reload, name))
                                   .addBoth(keep, name))
            return gatherResults(reloads).addCallback(lambda _: outcome)

        return run_blocking(self._reactor, _source.hash_files, paths).addCallback(compare)


class ReloadAttempt:
    """
    One reload of one running plugin, step by step: prepare the new version
    (L{run}), load the requirements it adds and wait until all of its
    requirements run, stop the old one, take its state, close what it left
    open, start the new one. If a requirement fails, the old version never
    stopped (C{cancelled}); if the new version fails to start, a fresh
    instance of the old one takes its place (C{rolled_back}). Either way the
    requirements this attempt loaded are unloaded again.
    """

    def __init__(self, reloader: Reloader, record: Record, data: Any, mode: ShutdownMode,
                 fresh: bool = False, isolation: Optional[Dict[str, Any]] = None) -> None:
        self.reloader = reloader
        #: the new isolation options (in effect if it succeeds), and the old.
        self.isolation = isolation
        self.old_isolation = record.isolation
        self.fresh = fresh  # the same code, a fresh instance: a restart with state
        self.record = record
        self.name = record.name
        self.data = data
        self.mode = mode
        self.result: Deferred[Any] = Deferred()
        self.old = record.version
        self.new: Optional[Version] = None
        self.old_modules: Dict[str, Any] = {}
        self.loaded: List[str] = []  # requirements this attempt loaded

    def run(self) -> Deferred[Any]:
        """
        Start the attempt.

        @return: a Deferred firing with the new instance after
            C{plugin_reloaded}, or failing after C{plugin_reload_failed}.
        """
        reloader, record = self.reloader, self.record
        try:
            if self.fresh:
                assert self.old is not None
                self.new = record.starting = self.old.fresh()
                reloader.life.construct(self.name, self.new, self.data)
            else:
                if self.isolation is not None:
                    record.isolation = dict(self.isolation)  # what the import goes by
                self.new, self.old_modules = reloader.prepare(record, self.data)
        except PluginError as error:
            record.isolation = self.old_isolation
            record.starting = None
            d = reloader.failed(self.name, error)
            reloader.after(record)  # run a reload that was queued meanwhile
            return d
        assert self.old is not None and self.new is not None
        self.old_version = self.old.version
        record.lifecycle.fire("reload")
        # An isolated new version is ready once its worker imported and
        # constructed it: the old one never stops before.
        self.new.ready().addCallbacks(self._new_ready, self._requirement_failed)
        return self.result

    def _new_ready(self, _: Any) -> None:
        assert self.new is not None
        requires = self.new.requires
        if requires:
            self.reloader.require(self.name, requires).addCallbacks(
                self._required, self._requirement_failed)
        else:
            self._stop_old()

    def _required(self, loaded: List[str]) -> None:
        self.loaded = loaded
        self._stop_old()

    def _requirement_failed(self, failure: Failure) -> None:
        """
        A requirement of the new version cannot run: the old version, which
        never stopped, goes on serving.
        """
        reloader, new, old = self.reloader, self.new, self.old
        assert new is not None and old is not None
        reloader.life.close(self.name, new)
        self._old_code_back()
        self.record.starting = None
        self.record.lifecycle.fire("cancelled")
        error = failure.value if isinstance(failure.value, PluginError) else InitFailed(
            self.name, "a requirement failed", failure=failure)
        reloader.failed(self.name, error).chainDeferred(self.result)
        reloader.after(self.record)

    def _stop_old(self) -> None:
        reloader, old = self.reloader, self.old
        assert old is not None
        seconds = reloader.deadlines[self.mode]
        self.until = reloader.life.seconds() + seconds  # the old version's connections
        reloader.life.shutdown(self.name, old.instance, self.mode, "reloading", seconds).addBoth(
            self._old_stopped)

    def _fail(self, error: PluginError) -> None:
        """
        Unload the requirements this attempt loaded, then fail with C{error}.
        """
        self.reloader.release(self.loaded, "reload_failed").addBoth(
            lambda _: self.reloader.failed(self.name, error).chainDeferred(self.result))

    def _old_stopped(self, outcome: Any) -> Deferred[Any]:
        reloader, old = self.reloader, self.old
        assert old is not None
        if isinstance(outcome, Failure):
            reloader.reporter.error(self.name, outcome)
        reloader.life.mark_stopped(self.name, old.instance)
        reloader.life.release(self.name, old.instance)
        reloader.abandon(self.record, "reloaded")
        # get_state may still use the old version's reactor; what it left
        # running is closed after.
        return reloader.life.take_state(self.name, old.instance).addCallback(self._close_then_start)

    def _close_then_start(self, state: Any) -> Deferred[Any]:
        return self.reloader.life.close(self.name, self.old, self.until).addCallback(
            lambda _: self._migrate(state))

    def _migrate(self, state: Any) -> Deferred[Any]:
        """
        When the new version defines C{migrate_state(old_version, state)},
        the old instance's state goes through it (with the old instance's
        C{state_version}); a migration that fails fails the reload.
        """
        life, new, old = self.reloader.life, self.new, self.old
        assert new is not None and old is not None
        migrate = attribute(new.instance, "migrate_state")
        if state is NO_STATE or not callable(migrate):
            return self._start_new(state)

        def failed(failure: Failure) -> Any:
            life.close(self.name, new)
            return self._new_failed(Failure(InitFailed(
                self.name, "migrate_state failed", failure=failure)), state)

        d = call_with_deadline(migrate, (attribute(old.instance, "state_version"), state),
                               life.start_deadline, self.reloader.clock,
                               lambda: StartTimedOut(self.name, life.start_deadline))
        return d.addCallbacks(self._start_new, failed, callbackArgs=(state,))

    def _start_new(self, given: Any, original: Any = NO_STATE) -> Deferred[Any]:
        """
        Start the new version with C{given}; should it fail, the old one is
        given back C{original} (the state as the old version gave it).
        """
        original = given if original is NO_STATE else original
        return self._start(self.new, given).addCallbacks(
            self._succeeded, self._new_failed, errbackArgs=(original,))

    def _start(self, version: Optional[Version], state: Any) -> Deferred[Any]:
        assert version is not None
        self.reloader.life.adopt(self.name, version.instance)
        return self.reloader.life.start(self.name, version, state)

    def _swapped(self, version: Version, data: Any, transition: str) -> None:
        record = self.record
        record.starting = None
        record.version, record.data = version, data
        record.lifecycle.fire(transition)
        self.reloader.index.set(self.name, record.sequence, version.specs)

    def _old_code_back(self) -> None:
        """
        Put the old version's modules back in place of the new one's.
        """
        assert self.new is not None and self.old is not None
        if not self.fresh:  # a restart with state shares its code
            self.new.purge()
            _source.restore_modules(self.old.module_name, self.old_modules)
            self.record.isolation = self.old_isolation

    def _succeeded(self, instance: Any) -> None:
        assert self.new is not None
        self._swapped(self.new, self.data, "reloaded")
        self.record.last_reload_error = self.record.last_reload_error_at = None
        if self.fresh:
            self.record.restarts += 1
            self.reloader.reporter.broadcast("plugin_started", self.name)
        else:
            if self.old is not None and self.reloader.oldcode is not None:
                self.old.retire_to(self.reloader.oldcode, self.name)
            self.record.reloads += 1
            self.reloader.reloaded(self.name, self.old_version, self.new.version)
        self.result.callback(instance)
        self.reloader.after(self.record)

    def _new_failed(self, failure: Failure, state: Any) -> None:
        reloader, name, old = self.reloader, self.name, self.old
        assert self.new is not None and old is not None
        error = failure.value if isinstance(failure.value, PluginError) else InitFailed(
            name, "the new version failed to start", failure=failure)
        # Roll back to the old code: its modules, a fresh instance.
        self._old_code_back()
        rollback = self.record.starting = old.fresh()
        try:
            reloader.life.construct(name, rollback, self.record.data)
        except PluginError as rollback_error:
            self.record.starting = None
            reloader.lost(self.record, rollback_error)
            self._fail(error)
            return

        def rolled_back(instance: Any) -> None:
            self._swapped(rollback, self.record.data, "rolled_back")
            self._fail(error)
            reloader.after(self.record)

        def rollback_failed(f: Failure) -> None:
            self.record.starting = None
            reloader.lost(self.record, f.value if isinstance(f.value, PluginError) else InitFailed(
                name, "the old version failed to start again", failure=f))
            self._fail(error)

        self._start(rollback, state).addCallbacks(rolled_back, rollback_failed)
