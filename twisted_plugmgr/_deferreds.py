"""
Deferred helpers: one outcome for many waiters, plugin calls with a deadline
whose timeout becomes the right error, and blocking work run in a thread (or
inline on a reactor without threads, such as a
L{Clock<twisted.internet.task.Clock>}).

Nothing here knows of plugins or of the manager.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

__all__ = ["Shared", "pass_result", "fan_out", "call_with_deadline", "run_blocking"]


def pass_result(d: Deferred[Any], result: Any) -> None:
    """
    Fire C{d} with C{result}: errback for a L{Failure}, callback otherwise.
    """
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


def fan_out(d: Deferred[Any], waiters: List[Deferred[Any]]) -> None:
    """
    Give C{d}'s outcome to every one of C{waiters}; C{d} itself ends handled.
    """

    def give(result: Any) -> None:
        for waiter in waiters:
            pass_result(waiter, result)

    d.addBoth(give)


class Shared:
    """
    One outcome that any number of callers wait for, each with a Deferred of
    its own (so that each consumes its own copy of a failure).
    """

    _PENDING: Any = object()

    def __init__(self) -> None:
        self._result: Any = self._PENDING
        self._waiters: List[Deferred[Any]] = []

    def fire(self, result: Any) -> None:
        """
        Set the outcome (a value or a Failure) and pass it to every waiter.
        """
        self._result = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            pass_result(waiter, result)

    def wait(self) -> Deferred[Any]:
        """
        A Deferred with the outcome.
        """
        d: Deferred[Any] = Deferred()
        if self._result is self._PENDING:
            self._waiters.append(d)
        else:
            pass_result(d, self._result)
        return d


def call_with_deadline(
    f: Callable[..., Any],
    args: tuple,
    seconds: float,
    clock: IReactorTime,
    on_timeout: Optional[Callable[[], BaseException]] = None,
) -> Deferred[Any]:
    """
    Call plugin code C{f(*args)}, which may return a Deferred, and give it
    C{seconds} to answer on C{clock}.

    What C{f} raises (C{SystemExit} and C{KeyboardInterrupt} too: it is a
    plugin's code) becomes the failure of the returned Deferred. When the
    deadline passes, the Deferred C{f} returned is cancelled and the result
    fails with C{on_timeout()} (with Twisted's L{TimeoutError} when no
    C{on_timeout} is given).
    """
    try:
        result = f(*args)
    except BaseException:  # plugin code: SystemExit, KeyboardInterrupt too
        return fail()
    if not isinstance(result, Deferred):
        return succeed(result)
    result.addTimeout(seconds, clock)
    if on_timeout is None:
        return result

    def timed_out(failure: Failure) -> Failure:
        if failure.check(TimeoutError, CancelledError):
            return Failure(on_timeout())
        return failure

    return result.addErrback(timed_out)


def run_blocking(reactor: object, f: Callable[..., Any], *args: Any, **kw: Any) -> Deferred[Any]:
    """
    Run blocking C{f(*args, **kw)} in C{reactor}'s thread pool, or right
    here when the reactor has no threads (a
    L{Clock<twisted.internet.task.Clock>} in tests).

    The result is handed over to a fresh Deferred, so that an idle worker
    thread, which keeps its last job's Deferred until its next job, does
    not keep alive what the caller chains to it.
    """
    if IReactorThreads.providedBy(reactor):
        result: Deferred[Any] = Deferred()
        threaded = deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kw)
        threaded.addBoth(lambda outcome: pass_result(result, outcome))
        return result
    try:
        return succeed(f(*args, **kw))
    except Exception:
        return fail()
