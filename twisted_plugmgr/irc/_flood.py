"""
Flood control: a token bucket per connection, and the queue of lines that
waits for tokens.

A server disconnects a client that sends too fast ("Excess Flood"). The
bot never writes to the connection directly: every line goes through an
L{OutgoingQueue}, which sends at once while the bucket has tokens and
otherwise waits, on the reactor's clock, for the next token. Time comes
from the L{IReactorTime} passed in, so tests drive it with a
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["TokenBucket", "OutgoingQueue", "QueueFull"]

# A token that is one but for rounding (after waiting exactly delay()
# seconds) counts as a token.
_ONE = 1.0 - 1e-9


class QueueFull(Exception):
    """
    The outgoing queue holds C{max_queue} lines already; the line was
    dropped.
    """


class TokenBucket:
    """
    A token bucket: holds up to C{burst} tokens, gains C{rate} tokens per
    second, and sending a line takes one token.

    @ivar rate: tokens gained per second (lines per second, sustained).
    @ivar burst: the most tokens it holds (lines sent back to back).
    """

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"flood rate must be a positive number of lines/s, not {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"flood burst must be a positive integer, not {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def _refill(self) -> None:
        now = self._clock.seconds()
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        """
        The tokens available now.
        """
        self._refill()
        return self._tokens

    def take(self) -> bool:
        """
        Take one token if there is one; return whether one was taken.
        """
        self._refill()
        if self._tokens >= _ONE:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def delay(self) -> float:
        """
        Seconds until a token is available (0 if one is now).
        """
        self._refill()
        if self._tokens >= _ONE:
            return 0.0
        return (1.0 - self._tokens) / self.rate


class OutgoingQueue:
    """
    The lines waiting to be sent on one connection.

    @param send: writes one complete wire line (bytes, CRLF included).
    @param bucket: the connection's L{TokenBucket}.
    @param clock: the reactor's time, for waiting for tokens.
    @param max_queue: the most lines that may wait; beyond that, lines are
        dropped (and logged) rather than kept without bound.
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        bucket: TokenBucket,
        clock: IReactorTime,
        max_queue: int = 1000,
    ) -> None:
        self._send = send
        self._bucket = bucket
        self._clock = clock
        self._lines: Deque[bytes] = deque()
        self._call: Optional[IDelayedCall] = None
        self.max_queue = max_queue
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def waiting(self) -> bool:
        """
        Whether a send is scheduled for when the next token comes.
        """
        return self._call is not None

    def put(self, line: bytes, urgent: bool = False) -> None:
        """
        Send C{line} now if a token is free and nothing waits before it;
        otherwise queue it.

        @param urgent: put it at the head of the queue (for C{PONG}: a
            server that waits too long for it drops the connection).
        @raise QueueFull: if C{max_queue} lines wait already (the line is
            dropped; urgent lines are never refused).
        """
        if not self._lines and self._bucket.take():
            self._send(line)
            return
        if urgent:
            self._lines.appendleft(line)
        elif len(self._lines) >= self.max_queue:
            self.dropped += 1
            raise QueueFull(f"{len(self._lines)} lines wait already; line dropped")
        else:
            self._lines.append(line)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and self._lines:
            self._call = self._clock.callLater(self._bucket.delay(), self._drain)

    def _drain(self) -> None:
        self._call = None
        while self._lines and self._bucket.take():
            self._send(self._lines.popleft())
        self._schedule()

    def clear(self) -> int:
        """
        Forget every waiting line and cancel the pending send (when the
        connection is lost); return how many lines were dropped.
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None
        count = len(self._lines)
        self._lines.clear()
        return count
