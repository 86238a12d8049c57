"""
The supervisor: what happens when a running plugin fails or ends, by its
L{RestartPolicy} -- a fresh instance after a delay that doubles with each
restart in the window, quarantine when the window is full, or an unload --
and the plugins that require it restarted after it (OTP's C{rest_for_one}).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ._deferreds import Shared
from ._delivery import Delivery
from ._dispatch import HandlerIndex
from ._errors import InvalidData, NoSuchPlugin, PluginError, PluginQuarantined
from ._events import Reporter
from ._instance import VersionLife
from ._lifecycle import ShutdownMode
from ._policy import RestartPolicy, class_policy
from ._registry import Record, Registry

__all__ = ["Supervisor", "one_line"]


def one_line(failure: Failure) -> str:
    """
    C{failure} as one line: its type and message, at most 200 characters.
    """
    try:
        text = f"{failure.type.__name__}: {failure.getErrorMessage()}"
    except BaseException:
        text = "<a failure that cannot be shown>"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:199] + "…"


@attr.s(auto_attribs=True, eq=False)
class _Restart:
    """
    A restart under way: stopping the old instance, waiting for the delay,
    or starting the new one.
    """

    attempt: int
    delay: float
    call: Optional[IDelayedCall] = None
    cancelled: bool = False
    parked: Shared = attr.ib(factory=Shared)
    started: Shared = attr.ib(factory=Shared)
    answered: bool = False
    #: a revive's: puts back what it changed (data, policy, restarts) if
    #: the plugin refuses the data it was given.
    revert: Optional[Callable[[], None]] = None


class Supervisor:
    """
    Supervises one manager's plugins.

    @param registry: the manager's records.
    @param life: stops failed versions and starts fresh ones.
    @param index: the event index.
    @param delivery: holds and delivers messages, abandons answers.
    @param reporter: where C{plugin_failed}, C{plugin_restarting} and
        C{plugin_quarantined} go.
    @param reactor: the clock of delays and windows.
    @param defaults: the manager's policy.
    @param deadlines: seconds each L{ShutdownMode}'s stop may take.
    @param settle: called with a record once it has settled.
    @param unload: unloads a plugin by name (C{mode}, C{reason}, C{cascade},
        C{why}).
    @param dependents_restart: restarts, with their state, the running
        plugins that require the named one.
    @param accepting: whether the manager is open (nothing restarts while it
        shuts down).
    """

    def __init__(self, registry: Registry, life: VersionLife, index: HandlerIndex,
                 delivery: Delivery, reporter: Reporter, reactor: IReactorTime,
                 defaults: RestartPolicy, deadlines: Mapping[ShutdownMode, float],
                 settle: Callable[[Record], None], unload: Callable[..., Deferred[Any]],
                 dependents_restart: Callable[[str], Deferred[Any]],
                 accepting: Callable[[], bool]) -> None:
        self.registry = registry
        self.life = life
        self.index = index
        self.delivery = delivery
        self.reporter = reporter
        self.reactor = reactor
        self.defaults = defaults
        self.deadlines = deadlines
        self.settle = settle
        self.unload = unload
        self.dependents_restart = dependents_restart
        self.accepting = accepting
        self._restarts: Dict[Record, _Restart] = {}
        # Failures declared by a version before it ran, applied once it runs.
        self._deferred_failures: Dict[Record, Tuple[Any, Failure, str]] = {}

    # -- policies --------------------------------------------------------

    def policy_of(self, record: Record) -> RestartPolicy:
        """
        C{record}'s policy: the manager's, under its class's attributes,
        under what its load (or config) gave.
        """
        cls = record.version.cls if record.version is not None else None
        return self.defaults.over(class_policy(cls) if cls is not None else None, record.policy)

    def set_policy(self, record: Record, policy: Mapping[str, Any]) -> RestartPolicy:
        """
        Replace C{record}'s load/config-level policy keys with C{policy}.

        @raise ValueError: naming a bad key or value; nothing changes then.
        """
        RestartPolicy().evolve(**policy)
        record.policy = {k: v for k, v in policy.items() if v is not None}
        return self.policy_of(record)

    def fails_on_error(self, record: Record) -> bool:
        """
        Whether an error in one of C{record}'s timers is a failure.
        """
        return self.policy_of(record).fail_on_error

    # -- a plugin fails or ends --------------------------------------------

    def failed(self, record: Record, failure: Failure, cause: str) -> None:
        """
        C{record}'s plugin failed: broadcast C{plugin_failed}, then restart
        it, quarantine it or unload it. A plugin that is not running yet
        fails once it runs; one already on its way out is left alone.
        """
        starting = record.starting if record.starting is not None else record.version
        if not record.lifecycle.serving or record.starting is not None:
            if record.lifecycle.headed_for_running:
                self._deferred_failures.setdefault(record, (starting, failure, cause))
            return
        record.last_failure = one_line(failure)
        self.reporter.broadcast("plugin_failed", record.name, failure=failure, cause=cause,
                                message=record.last_failure)
        policy = self.policy_of(record)
        if not policy.restarts_after(clean=False) or not self.accepting():
            self._unload_failed(record, cause)
            return
        self._restart(record, policy, failure, ShutdownMode.IMMEDIATE, f"failed ({cause})")

    def _unload_failed(self, record: Record, cause: str) -> None:
        """
        Unload a failed plugin that its policy does not restart: it stops
        serving at once (stopped in immediate mode, its messages held), then
        it is unloaded, its dependents first; how its shutdown went is
        broadcast already.
        """
        def unload(_: Any = None) -> None:
            self.unload(record.name, ShutdownMode.IMMEDIATE, f"{record.name} failed ({cause})",
                        True, "failed").addErrback(lambda f: None)

        if not record.lifecycle.serving:
            unload()
            return
        record.lifecycle.fire("restart")  # not serving: its messages are held
        restart = self._restarts[record] = _Restart(0, 0.0, cancelled=True)

        def stopped(_: Any) -> None:
            self._park(record, restart)
            unload()

        self._stop_version(record, ShutdownMode.IMMEDIATE, f"failed ({cause})").addCallback(stopped)

    def settled(self, record: Record) -> None:
        """
        C{record} settled: a failure it declared before it ran takes effect.
        """
        pending = self._deferred_failures.get(record)
        if pending is None or record.starting is not None:
            return
        del self._deferred_failures[record]
        version, failure, cause = pending
        if record.lifecycle.serving and record.version is version:
            self.failed(record, failure, cause)

    def end(self, record: Record, reason: str, mode: ShutdownMode) -> Deferred[Any]:
        """
        C{record}'s plugin ends itself cleanly: with C{restart="always"} it
        is restarted, otherwise unloaded (C{plugin_unloaded} says
        C{stopped_itself}). The Deferred fires with the old instance's quit
        message.
        """
        policy = self.policy_of(record)
        if record.lifecycle.serving and policy.restarts_after(clean=True):
            return self._restart(record, policy, None, mode, reason)
        return self.unload(record.name, mode, reason, True, "stopped_itself")

    def _restart(self, record: Record, policy: RestartPolicy, failure: Optional[Failure],
                 mode: ShutdownMode, reason: str) -> Deferred[Any]:
        now = self.reactor.seconds()
        count = record.window.count(now, policy.restart_interval)
        if record.lifecycle.serving:
            record.lifecycle.fire("restart")  # holds messages from now on
        if count >= policy.restart_burst:
            restart = self._restarts[record] = _Restart(count, 0.0)
            return self._stop_version(record, mode, reason).addCallback(
                self._quarantine, record, restart, failure)
        record.window.add(now)
        restart = self._restarts[record] = _Restart(count + 1, policy.delay(count))
        return self._stop_version(record, mode, reason).addCallback(self._wait, record, restart)

    def _stop_version(self, record: Record, mode: ShutdownMode, reason: str) -> Deferred[Any]:
        """
        Stop the instance of C{record} that failed (or ended), close what it
        left open; its state is not taken. The Deferred fires with its quit
        message (L{None} if its shutdown failed).
        """
        version = record.version
        if version is None or version.instance is None:
            return succeed(None)
        name, instance = record.name, version.instance
        self.index.remove(name)
        seconds = self.deadlines[mode]
        until = self.life.seconds() + seconds

        def stopped(outcome: Any) -> Deferred[Any]:
            if isinstance(outcome, Failure):
                self.reporter.error(name, outcome)
                outcome = None
            self.life.mark_stopped(name, instance)
            self.life.release(name, instance)
            self.delivery.abandon(record, "restarted")
            record.version = version.fresh()
            return self.life.close(name, version, until).addCallback(lambda _: outcome)

        return self.life.shutdown(name, instance, mode, reason, seconds).addBoth(stopped)

    def _quarantine(self, quit_message: Any, record: Record, restart: _Restart,
                    failure: Optional[Failure]) -> Any:
        count = restart.attempt
        if self._restarts.get(record) is restart:
            del self._restarts[record]
        record.lifecycle.fire("quarantine")
        error = PluginQuarantined(record.name, f"{count} restarts within its restart_interval; "
                                               "load, reset or reload it")
        self.reporter.broadcast("plugin_quarantined", record.name, restarts=count,
                                failure=failure or Failure(error), message=str(error))
        self.delivery.fail_inbox(record, error)
        self.settle(record)
        restart.parked.fire(None)
        self._answer(restart, Failure(error))
        return quit_message

    def _wait(self, quit_message: Any, record: Record, restart: _Restart) -> Any:
        self.reporter.broadcast("plugin_restarting", record.name, attempt=restart.attempt,
                                delay=restart.delay)
        if restart.cancelled:
            self._park(record, restart)
        else:
            restart.call = self.reactor.callLater(restart.delay, self._start, record, restart)
        return quit_message

    def _park(self, record: Record, restart: _Restart) -> None:
        if self._restarts.get(record) is restart:
            del self._restarts[record]
        restart.parked.fire(None)
        self._answer(restart, Failure(NoSuchPlugin(record.name, "its restart was stopped")))
        record.settled()  # who waits for it to run asks again (and hears it will not)

    @staticmethod
    def _answer(restart: _Restart, outcome: Any) -> None:
        """
        Give who waits for C{restart}'s instance (a reset, a load) its
        outcome, once.
        """
        if not restart.answered:
            restart.answered = True
            restart.started.fire(outcome)

    def _start(self, record: Record, restart: _Restart) -> None:
        restart.call = None
        if restart.cancelled or not self.accepting() or not self.registry.current(record):
            restart.cancelled = True
            self._park(record, restart)
            return
        version = record.version
        assert version is not None
        record.starting = version
        try:
            self.life.construct(record.name, version, record.data)
        except PluginError as error:
            self._start_failed(Failure(error), record, restart)
            return
        self.life.adopt(record.name, version.instance)
        self.life.start(record.name, version).addCallbacks(
            self._started, self._start_failed, callbackArgs=(record, restart),
            errbackArgs=(record, restart))

    def _started(self, instance: Any, record: Record, restart: _Restart) -> None:
        record.starting = None
        version = record.version
        assert version is not None
        if self._restarts.get(record) is restart:
            del self._restarts[record]
        if restart.attempt:  # not a fresh start by load, reset or reload
            record.restarts += 1
        record.lifecycle.fire("started")
        self.index.set(record.name, record.sequence, version.specs)
        self.reporter.broadcast("plugin_started", record.name)
        self.delivery.schedule(record)
        self._answer(restart, instance)
        restart.parked.fire(None)
        self.settle(record)
        if not restart.cancelled:
            self.dependents_restart(record.name)

    def _start_failed(self, failure: Failure, record: Record, restart: _Restart) -> None:
        """
        The fresh instance did not start: a failure too (C{cause="start"}),
        counted toward the burst.
        """
        record.starting = None
        self._deferred_failures.pop(record, None)  # what that version declared goes with it
        if record.version is not None:
            record.version = record.version.fresh()
        if self._restarts.get(record) is restart:
            del self._restarts[record]
        if restart.revert is not None and failure.check(InvalidData) and not restart.cancelled:
            # A load, reset or reload of a quarantined plugin with data its
            # Config refuses: refused, and nothing changed (it stays
            # quarantined, with its data).
            restart.revert()
            record.lifecycle.fire("quarantine")
            restart.parked.fire(None)
            self._answer(restart, failure)
            return
        record.last_failure = one_line(failure)
        self.reporter.broadcast("plugin_failed", record.name, failure=failure, cause="start",
                                message=record.last_failure)
        if restart.cancelled or not self.registry.current(record):
            pass
        elif not self.policy_of(record).restarts_after(clean=False) or not self.accepting():
            self._unload_failed(record, "start")
        else:
            self._restart(record, self.policy_of(record), failure, ShutdownMode.IMMEDIATE,
                          "failed (start)")
        restart.parked.fire(None)
        self._answer(restart, failure)  # last: its caller may unload it

    # -- what operators do -------------------------------------------------

    def park(self, record: Record) -> Deferred[Any]:
        """
        Stop C{record}'s restart under way (for an unload or a shutdown):
        the Deferred fires once nothing more will happen to it -- at once
        when it waits for its delay, after the step under way otherwise.
        """
        restart = self._restarts.get(record)
        if restart is None:
            return succeed(None)
        restart.cancelled = True
        if restart.call is not None and restart.call.active():
            restart.call.cancel()
            restart.call = None
            self._park(record, restart)
            return succeed(None)
        return restart.parked.wait()

    def parked(self, record: Record) -> bool:
        """
        Whether no restart step is under way for C{record}.
        """
        return record not in self._restarts

    def revive(self, record: Record, data: Any, clear: bool,
               policy: Optional[Dict[str, Any]] = None) -> Deferred[Any]:
        """
        Start a quarantined plugin afresh (C{load}, C{reset}, C{reload}),
        with C{data} (and C{policy}, its load-level restart policy keys, if
        given); C{clear} forgets its restarts.

        @return: a Deferred with the instance once it started, or failing
            with why its start failed (its policy then goes on as for any
            restart) -- but for L{InvalidData}: data its C{Config} refuses
            changes nothing, the plugin stays quarantined.
        """
        if not record.lifecycle.quarantined:
            return fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
        before = (record.data, record.policy, record.window.copy(), record.restarts)

        def revert() -> None:
            record.data, record.policy, record.window, record.restarts = before

        if clear:
            record.window.clear()
            record.restarts = 0
        if policy is not None:
            record.policy = policy
        record.data = data
        record.lifecycle.fire("restart")
        restart = self._restarts[record] = _Restart(0, 0.0, revert=revert)
        d = restart.started.wait()
        self._start(record, restart)
        return d

    def reset(self, record: Record) -> Deferred[Any]:
        """
        Forget C{record}'s restarts; a quarantined plugin starts afresh.
        """
        if record.lifecycle.quarantined:
            return self.revive(record, record.data, clear=True)
        if not record.lifecycle.addressable:
            return fail(NoSuchPlugin(record.name, f"it is {record.state.value}"))
        record.window.clear()
        record.restarts = 0
        restart = self._restarts.get(record)
        if restart is not None:  # a restart under way: its instance, once started
            restart.attempt = 0  # a fresh start now: not counted
            return restart.started.wait()
        return succeed(record.instance)

    def forget(self, record: Record) -> None:
        """
        C{record} is gone: drop what was kept for it.
        """
        self._deferred_failures.pop(record, None)
        restart = self._restarts.pop(record, None)
        if restart is not None and restart.call is not None and restart.call.active():
            restart.call.cancel()
