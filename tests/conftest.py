"""
Shared fixtures.

pytest-twisted does not fail a test when a Deferred dies with an unhandled
error or when something logs a Failure; the autouse fixture
L{logged_failures} does, as trial does. A test that expects failures to be
logged declares them with C{logged_failures.flush(SomeError, ...)}, which
returns them (as trial's C{flushLoggedErrors}).
"""

from __future__ import annotations

import gc
from typing import Any, Dict, List, Type

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import globalLogBeginner, globalLogPublisher
from twisted.python.failure import Failure

from twisted_plugmgr import ShutdownMode
from twisted_plugmgr.testing import clock_manager, plugin_modules, result_of


class LoggedFailures:
    """
    A log observer that keeps every Failure logged during one test.
    """

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []

    def __call__(self, event: Dict[str, Any]) -> None:
        if event.get("log_failure") is None and event.get("isError") and isinstance(
            event.get("failure"), Failure
        ):
            # Logged through the legacy API (twisted.python.log.err).
            event = dict(event, log_failure=event["failure"])
        if event.get("log_failure") is not None:
            self.events.append(event)

    @property
    def failures(self) -> List[Failure]:
        """
        The Failures logged so far and not flushed.
        """
        return [e["log_failure"] for e in self.events]

    def flush(self, *types: Type[BaseException]) -> List[Failure]:
        """
        Remove and return the logged Failures whose exception is one of
        C{types} (all of them, when no type is given).
        """
        kept, flushed = [], []
        for event in self.events:
            failure = event["log_failure"]
            if not types or failure.check(*types):
                flushed.append(failure)
            else:
                kept.append(event)
        self.events = kept
        return flushed


# Until logging begins, Twisted keeps up to 65,536 log events in memory (and
# with them whatever they hold): begin it, to no observer but the tests' own.
globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)


@pytest.fixture(autouse=True)
def logged_failures():
    """
    Fail the test if a Failure was logged (an unhandled error in a Deferred
    included) that the test did not flush.
    """
    observer = LoggedFailures()
    globalLogPublisher.addObserver(observer)
    try:
        yield observer
        # A Deferred that dies with an unhandled error logs it when it is
        # collected: collect now, so that it is blamed on this test.
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observer)
    if observer.events:
        lines = []
        for event in observer.events:
            failure = event["log_failure"]
            lines.append(
                f"{event.get('log_namespace')}: {failure.type.__name__}: "
                f"{failure.getErrorMessage()}\n{failure.getTraceback()}"
            )
        pytest.fail(
            "unexpected Failures were logged (flush the ones a test expects "
            "with logged_failures.flush(...)):\n" + "\n".join(lines),
            pytrace=False,
        )


@pytest.fixture
def plugdir(tmp_path):
    """
    An empty plugin directory.
    """
    d = tmp_path / "plugins"
    d.mkdir()
    return d


@pytest.fixture
def env(plugdir):
    """
    (manager, clock, events, plugdir): a started manager on a Clock whose
    path is C{plugdir}. At teardown it shuts down, and nothing may be left
    scheduled on the clock or imported from its plugins.
    """
    manager, clock, events = clock_manager(paths=[plugdir])
    yield manager, clock, events, plugdir
    d = manager.shutdown(ShutdownMode.IMMEDIATE)
    clock.advance(5)
    result_of(d)
    assert clock.getDelayedCalls() == []
    assert plugin_modules(manager) == []


@pytest.fixture
def daemons():
    """
    A list for the C{tests._processes.Daemon}s a test starts (it appends
    each one): those still running are killed at teardown.
    """
    started: List[Any] = []
    yield started
    for daemon in started:
        pytest_twisted.blockon(Deferred.fromCoroutine(daemon.kill()))
