"""
Delivery: post, call and emit, each reaching a handler through
L{Delivery.invoke}, the one function that runs a handler and times it; the
inboxes that hold messages until their plugin runs; and the answers still
waiting on a handler's Deferred; and L{HandlerMetrics}, what is counted of
those calls while metrics are on (nothing is, and nothing costs, while
they are off).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Dict, List, Mapping, Tuple

import attr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ._deferreds import pass_result
from ._dispatch import STOP, HandlerIndex
from ._errors import HandlerAbandoned, NoSuchHandler, NoSuchPlugin, PluginError, PluginQuarantined
from ._events import Reporter
from ._registry import HANDLER_BUCKETS, PluginInfo, Record, Registry

__all__ = ["Delivery", "HandlerMetrics", "PluginMetrics", "RELOAD_BUCKETS"]

assert HANDLER_BUCKETS[0] == 0.0001  # invoke_counted compares with it as a constant

#: The upper bounds, in seconds, of the buckets reload times are counted in
#: (a last bucket, unbounded, follows).
RELOAD_BUCKETS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class PluginMetrics:
    """
    What the metrics say of one plugin, at one moment.

    @ivar info: its row of the plugin table.
    @ivar held: messages held in its inbox until it runs.
    @ivar calls: event -> handler calls counted while metrics were on.
    @ivar buckets: those calls per bucket of L{HANDLER_BUCKETS} (not
        cumulative; the last one unbounded).
    @ivar seconds: the time they took, in all.
    @ivar errors: those that raised or whose Deferred failed.
    """

    info: PluginInfo
    held: int
    calls: Mapping[str, int]
    buckets: Tuple[int, ...]
    seconds: float
    errors: int


class HandlerMetrics:
    """
    What a manager counts of its handler calls and reloads for metrics,
    only while at least one user has turned it on with L{enable}: off, the
    delivery path is the same as without metrics.

    @ivar reload_buckets: reloads (L{timed}) per bucket of
        L{RELOAD_BUCKETS} (not cumulative; the last one unbounded).
    @ivar reload_seconds: the time those reloads took, in all.
    """

    def __init__(self, delivery: Delivery, reactor: IReactorTime, events_of: Callable[[str], Any]
                 ) -> None:
        self._delivery = delivery
        self._reactor = reactor
        self._events_of = events_of
        self._users = 0
        self.reload_buckets: List[int] = [0] * (len(RELOAD_BUCKETS) + 1)
        self.reload_seconds = 0.0

    @property
    def enabled(self) -> bool:
        """
        Whether calls are counted now.
        """
        return self._users > 0

    def enable(self) -> None:
        """
        Count from now on (one more user: counting goes on until each user
        has called L{disable}).
        """
        self._users += 1
        if self._users == 1:
            for record in self._delivery.registry:
                record.counts.resume(record.busy_time)
            self._delivery.invoke = self._delivery.invoke_counted

    def disable(self) -> None:
        """
        One user less; the last one stops the counting (what was counted
        is kept).
        """
        if not self._users:
            return
        if self._users == 1:
            self._delivery.invoke = self._delivery.invoke_plain
            for record in self._delivery.registry:
                self._settle(record)
                record.counts.pause(record.busy_time)
        self._users -= 1

    def _settle(self, record: Record) -> None:
        # A record created while counting was on has counted all along.
        if self._users and record.counts.paused_at is not None:
            record.counts.offset = 0.0
            record.counts.paused_at = None

    def plugins(self) -> Dict[str, PluginMetrics]:
        """
        Name -> L{PluginMetrics} of every plugin loaded (or loading), in
        load order. Broadcasts nothing (unlike C{plugin_table}).
        """
        out: Dict[str, PluginMetrics] = {}
        for record in self._delivery.registry.in_order():
            self._settle(record)
            counts = record.counts
            out[record.name] = PluginMetrics(
                info=record.info(self._events_of(record.name)), held=len(record.inbox),
                calls=dict(record.event_calls),
                buckets=counts.histogram(sum(record.event_calls.values())),
                seconds=counts.seconds(record.busy_time), errors=counts.errors)
        return out

    def timed(self, reload: Deferred[Any]) -> Deferred[Any]:
        """
        Count the time C{reload} (a reload's Deferred, just asked for)
        takes, if metrics are on; return it.
        """
        if self._users:
            started = self._reactor.seconds()

            def done(result: Any) -> Any:
                elapsed = max(0.0, self._reactor.seconds() - started)
                self.reload_buckets[bisect_left(RELOAD_BUCKETS, elapsed)] += 1
                self.reload_seconds += elapsed
                return result

            reload.addBoth(done)
        return reload


class Delivery:
    """
    Delivers one manager's messages to its plugins.

    @param registry: the manager's records.
    @param index: which plugins handle which event.
    @param reactor: where posts wait for their turn.
    @param reporter: where handler errors and slow calls are reported.
    @param timer: the clock handler calls are measured with.
    @param slow_call: a handler call longer than this many seconds is
        reported as a warning.
    """

    def __init__(self, registry: Registry, index: HandlerIndex, reactor: IReactorTime,
                 reporter: Reporter, timer: Callable[[], float], slow_call: float) -> None:
        self._records = registry.records
        self._registry = registry
        self._index = index
        self._reactor = reactor
        self._reporter = reporter
        self._timer = timer
        self.slow_call = slow_call
        self._nested: List[float] = []  # time spent in the handlers a handler calls
        #: L{invoke_plain}, or L{invoke_counted} while metrics are on.
        self.invoke: Callable[[Record, Callable[..., Any], tuple, dict, str], Any] = \
            self.invoke_plain
        #: What is counted for metrics, and the switch that turns it on.
        self.metrics = HandlerMetrics(self, reactor, index.events_of)

    @property
    def registry(self) -> Registry:
        """
        The manager's records.
        """
        return self._registry

    # -- running one handler ---------------------------------------------

    def invoke_plain(self, record: Record, method: Callable[..., Any], args: tuple, kw: dict,
                     event: str) -> Any:
        """
        Call one handler of C{record} (for C{event}), timing it (less the
        time spent in the handlers it calls in turn) into C{record}'s
        counters. Raises what it raises.
        """
        timer = self._timer
        nested = self._nested
        nested.append(0.0)
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
                self._slow(record, method, elapsed)

    def invoke_counted(self, record: Record, method: Callable[..., Any], args: tuple, kw: dict,
                       event: str) -> Any:
        """
        L{invoke_plain}, also counting the call (per event in
        C{record.event_calls}; in C{record.counts}: the time histogram past
        its first bucket, and as an error if it raises).
        """
        timer = self._timer
        nested = self._nested
        nested.append(0.0)
        started = timer()
        try:
            return method(*args, **kw)
        except BaseException:
            record.counts.errors += 1
            raise
        finally:
            total = timer() - started
            elapsed = total - nested.pop()
            if nested:
                nested[-1] += total
            record.busy_time += elapsed  # the call itself: in event_calls
            if elapsed > record.longest_call:
                record.longest_call = elapsed
            events = record.event_calls
            try:
                events[event] += 1
            except KeyError:
                events[event] = 1
            version = record.version
            if version is not None and version.isolated:
                # Bucketed by the time it takes in its worker, when it
                # answers (Host.charge), not by its send here: counting is
                # on for its record (it may have been created while it was).
                counts = record.counts
                if counts.paused_at is not None:
                    counts.offset, counts.paused_at = 0.0, None
            elif elapsed > 0.0001:  # HANDLER_BUCKETS[0]; most calls are not: nothing to search
                record.counts.buckets[bisect_left(HANDLER_BUCKETS, elapsed)] += 1
            if elapsed > self.slow_call:
                self._slow(record, method, elapsed)

    def _slow(self, record: Record, method: Any, elapsed: float) -> None:
        self._reporter.warning(
            record.name,
            f"handler {getattr(method, '__name__', method)} blocked the reactor "
            f"for {elapsed:.3f}s",
        )

    def _count_error(self, name: str) -> None:
        """
        Count a handler's failed Deferred as an error, while metrics are on.
        """
        if self.metrics.enabled:
            record = self._records.get(name)
            if record is not None:
                record.counts.errors += 1

    def deliver(self, record: Record, event: str, args: tuple, kw: dict) -> Deferred[Any]:
        """
        Call C{record}'s handler of C{event} (or its C{default}); a failure
        is reported as C{plugin_error} and returned.
        """
        version = record.version
        assert version is not None
        instance = version.instance
        attribute = version.handlers.get(event)
        try:
            if attribute is not None:
                method, call_args = getattr(instance, attribute), args
            else:
                default = getattr(instance, "default", None)
                if default is None or not callable(default):
                    return fail(NoSuchHandler(record.name, event))
                method, call_args = default, (event,) + args
            result = self.invoke(record, method, call_args, kw, event)
        except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
            failure = Failure()
            self._reporter.error(record.name, failure)
            return fail(failure)
        if isinstance(result, Deferred):
            return self.track(record, result).addErrback(self._handler_failed, record.name)
        return succeed(result)

    def track(self, record: Record, result: Deferred[Any]) -> Deferred[Any]:
        """
        A Deferred with the outcome of a handler's Deferred C{result}, which
        fails with L{HandlerAbandoned} if the plugin is unloaded or reloaded
        before the handler answers (its timers are cancelled then: the
        answer might never come).
        """
        answer: Deferred[Any] = Deferred()
        record.waiting.add(answer)

        def done(outcome: Any) -> None:
            record.waiting.discard(answer)
            if not answer.called:
                pass_result(answer, outcome)
            elif isinstance(outcome, Failure):
                self._count_error(record.name)
                self._reporter.error(record.name, outcome)

        result.addBoth(done)
        return answer

    def abandon(self, record: Record, why: str) -> None:
        """
        Fail every answer still waiting on a handler of C{record}.
        """
        waiting, record.waiting = record.waiting, set()
        for answer in waiting:
            if not answer.called:
                answer.errback(Failure(HandlerAbandoned(record.name, why)))

    def _handler_failed(self, failure: Failure, name: str) -> Failure:
        if not failure.check(HandlerAbandoned):  # not the plugin's fault
            self._count_error(name)
            self._reporter.error(name, failure)
        return failure

    # -- post and call -----------------------------------------------------

    def call(self, plugin: Any, event: str, args: tuple, kw: dict) -> Deferred[Any]:
        """
        L{PluginManager.call}.
        """
        try:
            record = self._registry.addressable(plugin)
        except NoSuchPlugin as error:
            return fail(self._quarantined(plugin) or error)
        if not record.inbox and record.lifecycle.serving:
            return self.deliver(record, event, args, kw)
        d: Deferred[Any] = Deferred()
        record.inbox.append((event, args, kw, d))
        self.schedule(record)
        return d

    def post(self, plugin: Any, event: str, args: tuple, kw: dict) -> None:
        """
        L{PluginManager.post}.
        """
        try:
            record = self._registry.addressable(plugin)
        except NoSuchPlugin:
            quarantined = self._quarantined(plugin)
            if quarantined is None:
                raise
            self._reporter.error(plugin, Failure(quarantined))
            return
        record.inbox.append((event, args, kw, None))
        self.schedule(record)

    def _quarantined(self, plugin: Any) -> Any:
        """
        A L{PluginQuarantined} if C{plugin} is quarantined, else L{None}.
        """
        record = self._registry.get(plugin)
        if record is None or not record.lifecycle.quarantined:
            return None
        return PluginQuarantined(plugin, "it failed too often: it answers nothing until it is "
                                         "loaded, reset or reloaded")

    def schedule(self, record: Record) -> None:
        """
        Deliver C{record}'s inbox on the next reactor turn, if it runs.
        """
        if record.inbox and record.drain_call is None and record.lifecycle.serving:
            record.drain_call = self._reactor.callLater(0, self.drain, record)

    def cancel(self, record: Record) -> None:
        """
        Cancel the delivery of C{record}'s inbox planned for the next turn.
        """
        if record.drain_call is not None and record.drain_call.active():
            record.drain_call.cancel()
        record.drain_call = None

    def drain(self, record: Record) -> None:
        """
        Deliver what C{record}'s inbox held before this turn, while it runs:
        a handler that posts to its own plugin gets its post delivered on a
        later turn.
        """
        self.cancel(record)
        for _ in range(len(record.inbox)):
            if not record.inbox or not record.lifecycle.serving:
                break
            event, args, kw, answer = record.inbox.popleft()
            d = self.deliver(record, event, args, kw)
            if answer is not None:
                d.chainDeferred(answer)
            else:
                d.addErrback(self._post_failed, record.name)

    def _post_failed(self, failure: Failure, name: str) -> None:
        if failure.check(HandlerAbandoned):
            return  # delivered: its handler just never answered
        if failure.check(NoSuchHandler, NoSuchPlugin):
            self._reporter.error(name, failure)
        # Anything else was reported when the handler failed.

    def fail_inbox(self, record: Record, error: PluginError) -> None:
        """
        Fail every message C{record} held: calls with C{error}, posts as a
        C{plugin_error}.
        """
        while record.inbox:
            event, args, kw, answer = record.inbox.popleft()
            if answer is not None:
                answer.errback(Failure(error))
            else:
                self._reporter.error(record.name, Failure(error))

    # -- emit --------------------------------------------------------------

    def emit(self, event: Any, args: tuple, kw: dict) -> Deferred[Any]:
        """
        L{PluginManager.emit}.
        """
        try:
            names = self._index.plugins_for(event)
        except TypeError:  # unhashable
            names = ()
        if not names and not isinstance(event, str):  # checked off the hot path
            return fail(TypeError(f"an event name is a string, not {type(event).__name__}"))
        return self._emit_from(names, 0, event, args, kw, [])

    def _emit_from(self, names: Tuple[str, ...], i: int, event: str, args: tuple, kw: dict,
                   results: List[Any]) -> Deferred[Any]:
        records = self._records
        while i < len(names):
            record = records.get(names[i])
            i += 1
            if record is None:
                continue
            lifecycle = record.lifecycle
            if not lifecycle.serving:
                if lifecycle.reloading:  # called once the reload is over
                    return record.when_settled().addCallback(
                        self._emit_resumed, names, i - 1, event, args, kw, results)
                continue
            version = record.version
            attribute = version.handlers.get(event) if version is not None else None
            if attribute is None:
                continue
            try:
                method = getattr(version.instance, attribute)  # type: ignore[union-attr]
                result = self.invoke(record, method, args, kw, event)
            except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
                self._reporter.error(record.name, Failure())
                continue
            if isinstance(result, Deferred):
                return self.track(record, result).addCallbacks(
                    self._emit_async_result, self._emit_async_failure,
                    callbackArgs=(names, i, event, args, kw, results),
                    errbackArgs=(record.name, names, i, event, args, kw, results),
                )
            if result is STOP:
                return succeed(results)
            results.append(result)
        return succeed(results)

    def _emit_resumed(self, _: Any, names: Tuple[str, ...], i: int, event: str, args: tuple,
                      kw: dict, results: List[Any]) -> Deferred[Any]:
        return self._emit_from(names, i, event, args, kw, results)

    def _emit_async_result(self, value: Any, names: Tuple[str, ...], i: int, event: str,
                           args: tuple, kw: dict, results: List[Any]) -> Any:
        if value is STOP:
            return results
        results.append(value)
        return self._emit_from(names, i, event, args, kw, results)

    def _emit_async_failure(self, failure: Failure, name: str, names: Tuple[str, ...], i: int,
                            event: str, args: tuple, kw: dict, results: List[Any]) -> Any:
        if not failure.check(HandlerAbandoned):  # not the plugin's fault
            self._count_error(name)
            self._reporter.error(name, failure)
        return self._emit_from(names, i, event, args, kw, results)
