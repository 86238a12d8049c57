"""
Stopping: one plugin's stop with its mode's deadline, its dependents
stopped first, every plugin stopped in stages at shutdown, and the one
teardown that removes every trace of a plugin that stopped or failed.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.python.failure import Failure

from . import _source
from ._deferreds import Shared
from ._delivery import Delivery
from ._dispatch import HandlerIndex
from ._errors import (
    DependencyError,
    ManagerStopped,
    NoSuchPlugin,
    PluginError,
    ShutdownFailed,
    ShutdownTimedOut,
)
from ._events import Reporter
from ._instance import VersionLife
from ._lifecycle import ManagerLifecycle, ShutdownMode
from ._oldcode import OldCode
from ._registry import Record, Registry

__all__ = ["Stopper", "UNLOAD_REASONS"]

#: The C{reason} of a C{plugin_unloaded} event: why the plugin went.
UNLOAD_REASONS = {
    "unloaded": "unload() was asked for it",
    "stopped_itself": "the plugin ended itself (api.stop(), stopService(), disownServiceParent())",
    "requirement_unloaded": "a plugin it requires was unloaded",
    "shutdown": "the manager shut down",
    "load_failed": "it was loaded as a requirement of a load that failed",
    "reload_failed": "it was loaded as a requirement of a reload that failed",
    "failed": "it failed, and its restart policy does not restart it",
}


class Stopper:
    """
    Stops one manager's plugins and removes what is left of them.

    @param registry: the manager's records.
    @param life: stops versions and closes what they left open.
    @param index: the event index, which a stopping plugin leaves first.
    @param delivery: fails what a plugin held, or still waits on.
    @param reporter: where outcomes are broadcast.
    @param deadlines: seconds each L{ShutdownMode}'s stop may take.
    @param phase: the manager's phase.
    @param settle: called with a record once it has settled.
    @param dropped: called with a record that is gone and the error its
        queued operations fail with.
    @param changed: called after a plugin is gone, while the manager is
        open (to watch other files).
    @param park: stops a restart under way for a record (see
        L{_supervise.Supervisor.park}); C{parked} says whether one is.
    @param oldcode: told of the code of each plugin that goes, and stopped
        once the manager has shut down.
    """

    def __init__(self, registry: Registry, life: VersionLife, index: HandlerIndex,
                 delivery: Delivery, reporter: Reporter, deadlines: Mapping[ShutdownMode, float],
                 phase: ManagerLifecycle, settle: Callable[[Record], None],
                 dropped: Callable[[Record, PluginError], None],
                 changed: Callable[[], None], park: Callable[[Record], Deferred[Any]],
                 parked: Callable[[Record], bool], oldcode: OldCode) -> None:
        self.registry = registry
        self.life = life
        self.index = index
        self.delivery = delivery
        self.reporter = reporter
        self.deadlines = deadlines
        self.phase = phase
        self.settle = settle
        self.dropped = dropped
        self.changed = changed
        self.park = park
        self.parked = parked
        self.oldcode = oldcode
        self._shutdown = Shared()  # the outcome of the manager's shutdown

    def unload_named(self, name: Any, mode: Any, reason: str, cascade: bool = True,
                     why: str = "unloaded") -> Deferred[Any]:
        """
        L{PluginManager.unload}, checked: a bad name or mode, a plugin that
        is not loaded, or dependents with C{cascade} false fail with a
        L{PluginError}, broadcast as C{plugin_unload_failed}.
        """
        try:
            mode = ShutdownMode.coerce(mode)
            _source.check_name(name)
            record = self.registry.named(name)
            dependents = self.registry.dependents(name)
            if dependents and not cascade:
                raise DependencyError(name, dependents, "required by " + ", ".join(dependents))
        except (PluginError, ValueError) as error:
            if not isinstance(error, PluginError):
                error = PluginError(name, str(error))
            self.reporter.broadcast("plugin_unload_failed", name, failure=Failure(error),
                                    message=str(error))
            return fail(error)
        return self.unload(record, dependents, mode, reason, why)

    def unload(self, record: Record, dependents: List[str], mode: ShutdownMode,
               reason: str, why: str = "unloaded") -> Deferred[Any]:
        """
        Stop C{dependents} one by one (dependents first), then C{record};
        C{why} is the C{reason} of C{record}'s C{plugin_unloaded} (see
        L{UNLOAD_REASONS}).
        """
        name = record.name
        if not dependents:
            return self.stop(record, mode, reason, why)
        result: Deferred[Any] = Deferred()

        def next_one(_: Any = None) -> None:
            while dependents and dependents[0] not in self.registry:
                dependents.pop(0)
            if dependents:
                dependent = self.registry.records[dependents.pop(0)]
                self.stop(dependent, mode, reason or f"{name} is unloaded",
                          "requirement_unloaded").addBoth(next_one)
                return
            current = self.registry.get(name)
            if current is None:
                result.errback(Failure(NoSuchPlugin(name, "not loaded")))
            else:
                self.stop(current, mode, reason, why).chainDeferred(result)

        next_one()
        return result

    def stop(self, record: Record, mode: ShutdownMode, reason: str,
             why: str = "unloaded") -> Deferred[Any]:
        """
        Shut C{record} down and remove it; the Deferred fires with the quit
        message or fails with L{ShutdownFailed} (the plugin is gone either
        way). A plugin whose stop has begun is not stopped twice; one that
        is starting or reloading is stopped once that is over.
        """
        if record.lifecycle.leaving and record.stop is not None:
            return record.stop.wait()
        if record.lifecycle.restarting and not self.parked(record):
            # Nothing restarts after an unload: stop the restart first.
            return self.park(record).addCallback(lambda _: self.stop(record, mode, reason, why))
        if not record.lifecycle.settled and not record.lifecycle.restarting:
            return record.when_settled().addCallback(
                lambda _: self.stop(record, mode, reason, why) if self.registry.current(record)
                else fail(NoSuchPlugin(record.name, "it failed to start")))
        if not self.registry.current(record):
            return fail(NoSuchPlugin(record.name, "not loaded"))
        was_running = record.lifecycle.serving
        if was_running:
            self.delivery.drain(record)
            # A handler delivered just now may have unloaded its own plugin,
            # or started its reload.
            if not record.lifecycle.serving:
                return self.stop(record, mode, reason, why)
        record.lifecycle.fire("stop")
        record.stop = stopping = Shared()
        self.index.remove(record.name)
        seconds = self.deadlines[mode]
        until = self.life.seconds() + seconds  # connections left open are aborted then
        if was_running:
            d = self.life.shutdown(record.name, record.instance, mode, reason, seconds)
        else:
            d = succeed(reason or f"{record.name} unloaded")

        def finish(outcome: Any) -> None:
            quit_message = None if isinstance(outcome, Failure) else outcome
            if isinstance(outcome, Failure):
                self.reporter.error(record.name, outcome)
                if not outcome.check(ShutdownTimedOut):
                    outcome = Failure(ShutdownFailed(record.name, failure=outcome))

            def closed(_: Any) -> None:
                self._stopped(record, quit_message, why)
                stopping.fire(outcome)

            self.life.close(record.name, record.version, until).addCallback(closed)

        d.addBoth(finish)
        return stopping.wait()

    def _stopped(self, record: Record, quit_message: Any, why: str) -> None:
        if record.instance is not None:
            self.life.mark_stopped(record.name, record.instance)
        self.teardown(record, "stopped", NoSuchPlugin(record.name, "it was unloaded"))
        record.started(Failure(ManagerStopped(record.name) if not self.phase.accepting
                               else NoSuchPlugin(record.name, "unloaded before it started")))
        self.reporter.broadcast("plugin_unloaded", record.name, quit_message=quit_message,
                                reason=why)
        self.settle(record)
        if self.phase.accepting:
            self.changed()

    def teardown(self, record: Record, transition: str, error: PluginError) -> None:
        """
        Remove every trace of C{record}, which failed or stopped, and take
        C{transition} ("fail" or "stopped"): its record, its child service,
        its modules, its place in the index; the messages it held and the
        operations queued for it fail with C{error}.
        """
        self.registry.remove(record)
        self.index.remove(record.name)
        version, record.version = record.version, None
        if version is not None:
            if version.instance is not None:
                self.life.release(record.name, version.instance)
            version.purge()
            version.retire_to(self.oldcode, record.name)
        if record.displaced:  # what the load took aside goes back
            _source.restore_modules(min(record.displaced, key=len), record.displaced)
            record.displaced = {}
        self.delivery.cancel(record)
        record.lifecycle.fire(transition)
        self.delivery.abandon(record, "unloaded")
        self.delivery.fail_inbox(record, error)
        self.dropped(record, error)

    def lost(self, record: Record, error: PluginError) -> None:
        """
        Neither the new nor the old version of a reloaded plugin could
        start: the plugin is gone.
        """
        self.reporter.broadcast("plugin_init_failed", record.name, failure=Failure(error),
                                message=str(error), reason="init_failed")
        self.teardown(record, "fail", NoSuchPlugin(record.name, "it failed to start"))
        record.settled()

    def shutdown(self, mode: ShutdownMode, unwatch: Callable[[], None]) -> Deferred[None]:
        """
        L{PluginManager.shutdown}: the manager's phase goes to
        C{shutting_down}, files are no longer watched, every plugin stops
        (L{stop_all}), the phase goes to C{stopped} and
        C{plugin_manager_shutdown} is broadcast. A second shutdown waits for
        the first.
        """
        if not self.phase.accepting:
            return self._shutdown.wait()
        self.phase.fire("shutdown")
        unwatch()

        def stopped(_: Any) -> None:
            self.oldcode.stop()
            self.phase.fire("stopped")
            self.reporter.broadcast("plugin_manager_shutdown")
            self._shutdown.fire(None)

        self.stop_all(mode).addCallback(stopped)
        return self._shutdown.wait()

    def stop_all(self, mode: ShutdownMode) -> Deferred[None]:
        """
        Stop every plugin in C{mode}, in stages: a plugin that others
        require stops after them; plugins with no order between them stop
        concurrently. C{plugin_waiting} is broadcast each time the count of
        plugins still pending drops while above zero.
        """
        done: Deferred[None] = Deferred()
        last_count = [len(self.registry)]

        def one_done(_: Any) -> None:
            count = len(self.registry)
            if 0 < count < last_count[0]:
                self.reporter.broadcast("plugin_waiting", count=count)
            last_count[0] = count

        def next_stage(_: Any = None) -> None:
            if not len(self.registry):
                done.callback(None)
                return
            stops = []
            for record in self.registry.next_stage():
                d = self.stop(record, mode, "manager shutdown", "shutdown")
                d.addErrback(lambda f: None)  # broadcast as plugin_error already
                stops.append(d.addCallback(one_done))
            gatherResults(stops).addCallback(next_stage)

        next_stage()
        return done
