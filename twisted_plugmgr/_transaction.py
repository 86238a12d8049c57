"""
Several plugins reloaded in one transaction (Erlang/OTP's release upgrade:
applied completely or not at all).

First every new version is imported and constructed while all the old ones
serve, so that most failures change nothing at all. Then each plugin is
swapped in dependency order, as a single reload swaps one: its old instance
stops, its state goes to the new one (through C{migrate_state} where the new
version defines it), which starts. If any step of any plugin fails, every
plugin already swapped is put back -- a fresh instance of its old class,
from its old modules, given the state it had handed over -- and the rest are
never touched. Messages to every plugin of the set are held until the
transaction ends; C{plugin_reloaded} is broadcast only once it committed.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import attr
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.python.failure import Failure

from . import _source
from ._deferreds import call_with_deadline
from ._dispatch import HandlerIndex
from ._errors import InitFailed, PluginError, ReloadFailed, StartTimedOut
from ._events import Reporter
from ._instance import NO_STATE, Version, VersionLife, attribute
from ._lifecycle import PluginState, ShutdownMode
from ._registry import Record, Registry


class TransactionHost(Protocol):
    """
    What a transaction needs of the reloader that runs it.
    """

    registry: Registry
    life: VersionLife
    index: HandlerIndex
    reporter: Reporter
    deadlines: Mapping[ShutdownMode, float]
    clock: Any
    abandon: Callable[[Record, str], None]
    after: Callable[[Record], None]
    lost: Callable[[Record, PluginError], None]
    oldcode: Any

    def prepare(self, record: Record, data: Any) -> Tuple[Version, Dict[str, Any]]:
        """Import and construct C{record}'s new version beside the old one."""

    def failed(self, name: Any, error: PluginError) -> Deferred[Any]:
        """Broadcast C{plugin_reload_failed} for C{name}."""

    def reloaded(self, name: str, old_version: Optional[str],
                 new_version: Optional[str]) -> None:
        """Broadcast C{plugin_reloaded} for C{name}."""

__all__ = ["Transaction", "dependency_order"]


def dependency_order(records: Sequence[Record]) -> List[Record]:
    """
    C{records} with each one after those of them it requires (load order
    between the others).
    """
    pending = sorted(records, key=lambda r: r.sequence)
    names = {r.name for r in pending}
    done: List[Record] = []
    placed: set = set()
    while pending:
        ready = [r for r in pending if all(n in placed or n not in names for n in r.requires)]
        if not ready:  # a cycle: load order
            ready = pending[:1]
        for record in ready:
            pending.remove(record)
            done.append(record)
            placed.add(record.name)
    return done


@attr.s(auto_attribs=True, eq=False)
class _Entry:
    """
    One plugin of a transaction.
    """

    record: Record
    data: Any
    old: Version
    new: Optional[Version] = None
    old_modules: Dict[str, Any] = attr.ib(factory=dict)
    state: Any = NO_STATE  # what the old version handed over
    old_version: Optional[str] = None


class Transaction:
    """
    One reload of several plugins (see the module's docstring).

    @param reloader: the manager's reloader (its helpers and reports).
    @param records: the plugins, all running.
    @param data: name -> new data, for those whose data changes.
    @param mode: the mode the old versions stop in.
    """

    def __init__(self, reloader: TransactionHost, records: Sequence[Record], data: Mapping[str, Any],
                 mode: ShutdownMode) -> None:
        self.reloader = reloader
        self.mode = mode
        self.entries = [
            _Entry(record, data.get(record.name, record.data), record.version)  # type: ignore[arg-type]
            for record in dependency_order(records)
        ]
        self.result: Deferred[Dict[str, Optional[str]]] = Deferred()

    # -- phase 1: every new version, beside the old ones --------------------

    def run(self) -> Deferred[Dict[str, Optional[str]]]:
        """
        Run the transaction.

        @return: a Deferred firing with {name: new version} once every
            plugin was swapped; or failing with L{ReloadFailed} naming the
            plugin that failed, everything as it was.
        """
        reloader = self.reloader
        for entry in self.entries:
            try:
                entry.new, entry.old_modules = reloader.prepare(entry.record, entry.data)
            except PluginError as error:
                return self._not_prepared(entry.record.name, error)
        # Reloading from now on: their messages are held, and an unload, a
        # reload or a shutdown asked meanwhile waits for the transaction.
        for entry in self.entries:
            entry.old_version = entry.old.version
            entry.record.lifecycle.fire("reload")
        # Isolated new versions: once their workers imported and constructed
        # them (at once for the others).
        ready = gatherResults([e.new.ready() for e in self.entries  # type: ignore[union-attr]
                               ], consumeErrors=True)
        ready.addCallbacks(self._prepared, self._not_ready).addErrback(self._broken)
        return self.result

    def _not_prepared(self, name: str, error: PluginError) -> Deferred[Any]:
        for done in self.entries:
            self._discard(done)
        return self._failed(name, error, touched=False)

    def _cancel(self, name: str, error: PluginError) -> None:
        """
        Plugin C{name} cannot be swapped (C{error}), before any old version
        stopped: every new version is discarded (its worker ended), every
        plugin serves on as it was, and the transaction fails.
        """
        for entry in self.entries:
            self._discard(entry)
            if self._reloading(entry):
                entry.record.lifecycle.fire("cancelled")
        self._failed(name, error, touched=False).chainDeferred(self.result)
        for entry in self.entries:
            if self.reloader.registry.current(entry.record):
                self.reloader.after(entry.record)  # what was asked meanwhile runs now

    def _reloading(self, entry: _Entry) -> bool:
        """
        Whether C{entry}'s plugin is still the one this transaction reloads.
        """
        record = entry.record
        return (self.reloader.registry.current(record) and record.version is entry.old
                and record.state is PluginState.RELOADING)

    def _not_ready(self, failure: Failure) -> None:
        first = getattr(failure.value, "subFailure", failure)
        index = getattr(failure.value, "index", 0)
        error = first.value if isinstance(first.value, PluginError) else InitFailed(
            self.entries[index].record.name, "its new version is not ready", failure=first)
        self._cancel(self.entries[index].record.name, error)

    def _broken(self, failure: Failure) -> None:
        """
        A fault of the transaction's own code while it prepared: reported
        as the transaction's failure, never left unhandled.
        """
        if not self.result.called:
            name = self.entries[0].record.name
            self.result.errback(Failure(ReloadFailed(name, failure=failure)))
        else:
            self.reloader.reporter.error(None, failure)

    def _prepared(self, _: Any) -> None:
        names = {e.record.name for e in self.entries}
        for entry in self.entries:
            if not self._reloading(entry):
                record = entry.record
                state = (record.state.value if self.reloader.registry.current(record)
                         else "unloaded")
                self._cancel(record.name, PluginError(
                    record.name, f"it is {state} now: the transaction was cancelled while its "
                                 "new versions were being prepared"))
                return
        for entry in self.entries:
            assert entry.new is not None
            missing = [r for r in entry.new.requires if r not in names and not self._running(r)]
            if missing:
                error = PluginError(entry.record.name, "it would require " + ", ".join(missing)
                                    + ", which is not running (load it first)")
                self._cancel(entry.record.name, error)
                return
        self._swap(0)

    def _failed(self, name: str, error: PluginError, touched: bool) -> Deferred[Any]:
        """
        Plugin C{name} failed before anything was swapped: nothing changed.
        """
        for entry in self.entries:
            why = error if entry.record.name == name else PluginError(
                entry.record.name, f"not reloaded: the transaction failed at {name!r}")
            self.reloader.failed(entry.record.name, why).addErrback(lambda f: None)
        return fail(ReloadFailed(name, failure=Failure(error)))

    def _running(self, name: str) -> bool:
        record = self.reloader.registry.get(name)
        return record is not None and record.lifecycle.serving

    def _discard(self, entry: _Entry) -> None:
        """
        Put back C{entry}'s old modules in place of a new version that never
        started.
        """
        if entry.new is not None:  # prepared: its old modules were taken aside
            self.reloader.life.close(entry.record.name, entry.new)
            entry.new.purge()
            entry.new = None
            _source.restore_modules(entry.old.module_name, entry.old_modules)
        entry.record.starting = None

    # -- phase 2: one swap after the other -----------------------------------

    def _swap(self, i: int) -> None:
        if i == len(self.entries):
            self._commit()
            return
        entry = self.entries[i]
        life, name = self.reloader.life, entry.record.name
        seconds = self.reloader.deadlines[self.mode]
        until = life.seconds() + seconds

        def old_stopped(outcome: Any) -> Deferred[Any]:
            if isinstance(outcome, Failure):
                self.reloader.reporter.error(name, outcome)
            life.mark_stopped(name, entry.old.instance)
            life.release(name, entry.old.instance)
            self.reloader.abandon(entry.record, "reloaded")
            return life.take_state(name, entry.old.instance).addCallback(closed_then_migrated)

        def closed_then_migrated(state: Any) -> Deferred[Any]:
            entry.state = state
            return life.close(name, entry.old, until).addCallback(lambda _: self._migrate(entry))

        def started(_: Any) -> None:
            self._swap(i + 1)

        def failed(failure: Failure) -> None:
            error = failure.value if isinstance(failure.value, PluginError) else InitFailed(
                name, "the new version failed to start", failure=failure)
            self._roll_back(i, error)

        d = life.shutdown(name, entry.old.instance, self.mode, "reloading", seconds)
        d.addBoth(old_stopped).addCallbacks(started, failed)

    def _migrate(self, entry: _Entry) -> Deferred[Any]:
        life, name, new = self.reloader.life, entry.record.name, entry.new
        assert new is not None
        migrate = attribute(new.instance, "migrate_state")
        if entry.state is NO_STATE or not callable(migrate):
            given: Deferred[Any] = succeed(entry.state)
        else:
            given = call_with_deadline(
                migrate, (attribute(entry.old.instance, "state_version"), entry.state),
                life.start_deadline, self.reloader.clock,
                lambda: StartTimedOut(name, life.start_deadline))

            def migration_failed(failure: Failure) -> Failure:
                life.close(name, new)
                return Failure(InitFailed(name, "migrate_state failed", failure=failure))

            given.addErrback(migration_failed)

        def start(state: Any) -> Deferred[Any]:
            life.adopt(name, new.instance)
            return life.start(name, new, state)

        return given.addCallback(start)

    def _commit(self) -> None:
        reloader = self.reloader
        versions: Dict[str, Optional[str]] = {}
        for entry in self.entries:
            record, new = entry.record, entry.new
            assert new is not None
            record.starting = None
            record.version, record.data = new, entry.data
            record.lifecycle.fire("reloaded")
            reloader.index.set(record.name, record.sequence, new.specs)
            record.reloads += 1
            record.last_reload_error = record.last_reload_error_at = None
            versions[record.name] = new.version
            if reloader.oldcode is not None:
                entry.old.retire_to(reloader.oldcode, record.name)
        for entry in self.entries:
            reloader.reloaded(entry.record.name, entry.old_version, versions[entry.record.name])
        self.result.callback(versions)
        for entry in self.entries:
            reloader.after(entry.record)

    # -- rollback ----------------------------------------------------------

    def _roll_back(self, failed_at: int, error: PluginError) -> None:
        """
        Plugin C{failed_at} failed: put back those swapped before it (and
        it), leave the others as they were, then fail.
        """
        name = self.entries[failed_at].record.name
        waits: List[Deferred[Any]] = []
        for i, entry in enumerate(self.entries):
            if i < failed_at:
                waits.append(self._stop_new(entry).addCallback(self._restored, entry))
            elif i == failed_at:
                # Its new version did not start: what it started is closed.
                if entry.new is not None:
                    entry.new.purge()
                _source.restore_modules(entry.old.module_name, entry.old_modules)
                waits.append(self._restore(entry))
            else:
                self._discard(entry)
                entry.record.lifecycle.fire("cancelled")

        def done(_: Any) -> None:
            for i, entry in enumerate(self.entries):
                why = error if i == failed_at else PluginError(
                    entry.record.name, f"rolled back: the transaction failed at {name!r}")
                self.reloader.failed(entry.record.name, why).addErrback(lambda f: None)
            self.result.errback(Failure(ReloadFailed(name, failure=Failure(error))))
            for entry in self.entries:
                if self.reloader.registry.current(entry.record):
                    self.reloader.after(entry.record)

        gatherResults(waits, consumeErrors=True).addBoth(done)

    def _stop_new(self, entry: _Entry) -> Deferred[Any]:
        """
        Stop a new version that was swapped in before the failure, and put
        its old modules back.
        """
        life, name, new = self.reloader.life, entry.record.name, entry.new
        assert new is not None
        seconds = self.reloader.deadlines[ShutdownMode.IMMEDIATE]
        until = life.seconds() + seconds

        def stopped(outcome: Any) -> Deferred[Any]:
            if isinstance(outcome, Failure):
                self.reloader.reporter.error(name, outcome)
            life.mark_stopped(name, new.instance)
            life.release(name, new.instance)
            self.reloader.abandon(entry.record, "reloaded")
            closed = life.close(name, new, until)
            new.purge()
            _source.restore_modules(entry.old.module_name, entry.old_modules)
            return closed

        return life.shutdown(name, new.instance, ShutdownMode.IMMEDIATE, "rolled back",
                             seconds).addBoth(stopped)

    def _restored(self, _: Any, entry: _Entry) -> Deferred[Any]:
        return self._restore(entry)

    def _restore(self, entry: _Entry) -> Deferred[Any]:
        """
        A fresh instance of C{entry}'s old version, given the state it had
        handed over, started.
        """
        reloader, record = self.reloader, entry.record
        rollback = record.starting = entry.old.fresh()
        try:
            reloader.life.construct(record.name, rollback, record.data)
        except PluginError as error:
            record.starting = None
            reloader.lost(record, error)
            return succeed(None)
        reloader.life.adopt(record.name, rollback.instance)

        def running(_: Any) -> None:
            record.starting = None
            record.version = rollback
            record.lifecycle.fire("rolled_back")
            reloader.index.set(record.name, record.sequence, rollback.specs)

        def lost(failure: Failure) -> None:
            record.starting = None
            reloader.lost(record, failure.value if isinstance(failure.value, PluginError)
                          else InitFailed(record.name, "the old version failed to start again",
                                          failure=failure))

        return reloader.life.start(record.name, rollback, entry.state).addCallbacks(running, lost)

