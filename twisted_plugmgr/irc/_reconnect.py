"""
The bot's reconnection lines: which server (host and port, not an
endpoint's repr), why the last attempt failed or the connection went
(C{connection refused}, C{connection lost: ...}), and when the next attempt
comes; one line per attempt.

L{ReconnectLog} sits between the bot and Twisted's C{ClientService}: it
wraps the endpoint (to learn why a connection attempt failed) and the retry
policy (to say so when the next attempt is scheduled).
L{QuietClientService} is a C{ClientService} without its own retry line,
which names the endpoint by its repr.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.internet import ClientService
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    Logger,
    PredicateResult,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["ReconnectLog", "QuietClientService", "endpoint_address", "why_failed"]


def endpoint_address(endpoint: Any) -> str:
    """
    Where C{endpoint} connects, for people: C{"HOST port PORT"} for TCP and
    TLS endpoints, C{"unix socket PATH"}, or its repr for another kind.
    """
    seen = 0
    while seen < 5 and getattr(endpoint, "_wrappedEndpoint", None) is not None:
        endpoint, seen = endpoint._wrappedEndpoint, seen + 1  # TLS around TCP
    host = next((getattr(endpoint, a) for a in ("_hostText", "_hostStr", "_host")
                 if isinstance(getattr(endpoint, a, None), str)), None)
    port = getattr(endpoint, "_port", None)
    if host is not None and isinstance(port, int):
        return f"{host} port {port}"
    path = getattr(endpoint, "_path", None)
    if isinstance(path, (str, bytes)):
        return f"unix socket {path.decode() if isinstance(path, bytes) else path}"
    return repr(endpoint)


def why_failed(failure: Failure) -> str:
    """
    Why a connection attempt failed, in a few words.
    """
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.DNSLookupError):
        return "host not found"
    if failure.check(error.TimeoutError, error.ConnectingCancelledError):
        return "timed out"
    if failure.check(error.NoRouteError):
        return "no route to host"
    return f"cannot connect: {failure.getErrorMessage()}"


@implementer(IStreamClientEndpoint)
class _Reporting:
    """
    An endpoint that tells C{failed} why a connection attempt failed.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> Deferred[Any]:
        """
        Connect through the wrapped endpoint.
        """
        def failed(failure: Failure) -> Failure:
            self._failed(failure)
            return failure

        return self._endpoint.connect(factory).addErrback(failed)


class ReconnectLog:
    """
    The reconnection lines of one bot.

    @param endpoint: the endpoint the bot connects with.
    @param policy: seconds before attempt N (Twisted's C{retryPolicy}).
    @param log: where the lines go.
    @ivar address: where the bot connects (L{endpoint_address}).
    @ivar why: why the last attempt failed or the last connection went.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, policy: Callable[[int], float],
                 log: Logger) -> None:
        self.address = endpoint_address(endpoint)
        self.endpoint: IStreamClientEndpoint = _Reporting(endpoint, self.connect_failed)
        self._policy = policy
        self._log = log
        self.why: Optional[str] = None

    def connect_failed(self, failure: Failure) -> None:
        """
        A connection attempt failed with C{failure}.
        """
        self.why = why_failed(failure)

    def lost(self, reason: Failure) -> None:
        """
        The connection went, for C{reason}.
        """
        self.why = f"connection lost: {reason.getErrorMessage()}"

    def policy(self, attempt: int) -> float:
        """
        The delay before attempt C{attempt}, said in one line with why.
        """
        delay = self._policy(attempt)
        self._log.info(
            "IRC server {address}: {why}; reconnecting in {delay:.3g} s (attempt {attempt})",
            address=self.address, why=self.why or "not connected", delay=delay,
            attempt=attempt,
        )
        return delay


@implementer(ILogFilterPredicate)
class _NotARetryLine:
    """
    Drops C{ClientService}'s retry lines.
    """

    def __call__(self, event: Any) -> PredicateResult:
        if str(event.get("log_format", "")).startswith("Scheduling retry"):
            return PredicateResult.no
        return PredicateResult.maybe


class QuietClientService(ClientService):
    """
    A C{ClientService} that leaves the retry lines to L{ReconnectLog}: its
    own name the endpoint by its repr, and say no why.
    """

    _log = Logger(observer=FilteringLogObserver(globalLogPublisher, [_NotARetryLine()]))
