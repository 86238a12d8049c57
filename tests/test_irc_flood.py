"""
Flood control: the token bucket and the queue, on a task.Clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from twisted_plugmgr.irc._flood import OutgoingQueue, QueueFull, TokenBucket


def make(rate=2.0, burst=3, max_queue=1000):
    clock = Clock()
    sent = []
    queue = OutgoingQueue(sent.append, TokenBucket(rate, burst, clock), clock, max_queue)
    return clock, sent, queue


@pytest.mark.parametrize("rate,burst", [(0, 1), (-1, 1), ("1", 1), (1, 0), (1, 1.5), (True, 1)])
def test_bad_settings_are_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, Clock())


def test_burst_goes_out_at_once():
    clock, sent, queue = make()
    for i in range(3):
        queue.put(b"%d" % i)
    assert sent == [b"0", b"1", b"2"]
    assert len(queue) == 0 and not queue.waiting


def test_beyond_the_burst_lines_wait_for_tokens():
    clock, sent, queue = make(rate=2.0, burst=3)
    for i in range(6):
        queue.put(b"%d" % i)
    assert sent == [b"0", b"1", b"2"]
    assert len(queue) == 3
    clock.advance(0.5)
    assert sent[3:] == [b"3"]
    clock.advance(0.49)
    assert sent[4:] == []
    clock.advance(0.01)
    assert sent[4:] == [b"4"]
    clock.advance(0.5)
    assert sent[5:] == [b"5"]
    assert not queue.waiting and not clock.getDelayedCalls()


def test_order_is_kept_when_tokens_return():
    clock, sent, queue = make(rate=1.0, burst=1)
    queue.put(b"a")
    queue.put(b"b")
    clock.advance(1)
    clock.advance(4)  # tokens came back, and nothing waits
    queue.put(b"c")  # queue empty, token free: at once
    assert sent == [b"a", b"b", b"c"]


def test_bucket_never_holds_more_than_burst():
    clock, sent, queue = make(rate=10.0, burst=2)
    clock.advance(1000)
    for i in range(4):
        queue.put(b"%d" % i)
    assert len(sent) == 2


def test_urgent_lines_jump_the_queue():
    clock, sent, queue = make(rate=1.0, burst=1)
    queue.put(b"a")
    queue.put(b"b")
    queue.put(b"PONG", urgent=True)
    clock.advance(1)
    assert sent == [b"a", b"PONG"]
    clock.advance(1)
    assert sent == [b"a", b"PONG", b"b"]


def test_a_full_queue_drops_and_says_so():
    clock, sent, queue = make(rate=1.0, burst=1, max_queue=2)
    queue.put(b"a")
    queue.put(b"b")
    queue.put(b"c")
    with pytest.raises(QueueFull):
        queue.put(b"d")
    assert queue.dropped == 1
    queue.put(b"PONG", urgent=True)  # never refused
    clock.pump([1] * 10)
    assert sent == [b"a", b"PONG", b"b", b"c"]


def test_clear_cancels_the_pending_send():
    clock, sent, queue = make(rate=1.0, burst=1)
    queue.put(b"a")
    queue.put(b"b")
    queue.put(b"c")
    assert queue.clear() == 2
    assert not clock.getDelayedCalls()
    clock.advance(10)
    assert sent == [b"a"]
