"""
Tests for L{twisted_plugmgr._notify}: the systemd notify protocol against a
real datagram socket the test binds (a path, and an abstract name), the
watchdog on a L{Clock}.
"""

from __future__ import annotations

import os
import socket
from typing import List

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from twisted_plugmgr._notify import Notifier, notify_address


class Receiver:
    """
    A bound datagram socket, read without blocking.
    """

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def received(self) -> List[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(str(tmp_path / "notify"))
    r.path = str(tmp_path / "notify")
    yield r
    r.close()


@pytest.fixture
def abstract():
    name = f"plugmgr-test-{os.getpid()}-{id(object())}"
    r = Receiver("\0" + name)
    r.path = "@" + name
    yield r
    r.close()


@pytest.fixture
def lines():
    logged: List[str] = []

    def observe(event):
        if event.get("log_namespace") == "twisted_plugmgr._notify.Notifier":
            logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield logged
    globalLogPublisher.removeObserver(observe)


def notifier(path, clock=None, **env) -> Notifier:
    return Notifier(clock or Clock(), environ={"NOTIFY_SOCKET": path, **env}, pid=4242,
                    monotonic_usec=lambda: 123456789)


def test_address_forms():
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == "\0abstract/name"
    assert notify_address(None) is None
    assert notify_address("") is None
    assert notify_address("vsock:2:1234") is None


def test_ready_to_a_path(receiver):
    n = notifier(receiver.path)
    n.ready("3 of 3 plugins loaded")
    assert receiver.received() == ["READY=1\nSTATUS=3 of 3 plugins loaded"]
    n.close()


def test_ready_to_an_abstract_socket(abstract):
    n = notifier(abstract.path)
    n.ready("up")
    assert abstract.received() == ["READY=1\nSTATUS=up"]
    n.close()


def test_reloading_carries_the_monotonic_clock(receiver):
    n = notifier(receiver.path)
    n.ready("up")
    receiver.received()
    n.reloading()
    n.reloaded("reconfig done: nothing needed to change")
    assert receiver.received() == [
        "RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reconfiguring",
        "READY=1\nSTATUS=reconfig done: nothing needed to change",
    ]
    n.close()


def test_the_default_clock_is_clock_monotonic(receiver):
    import time

    n = Notifier(Clock(), environ={"NOTIFY_SOCKET": receiver.path})
    n.ready("up")
    receiver.received()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (message,) = receiver.received()
    usec = int(message.split("\n")[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= after
    n.close()


def test_a_reload_before_ready_or_after_stopping_says_nothing(receiver):
    """
    A reconfig during the startup loads is part of the start for systemd;
    one after STOPPING=1 is not reported (and READY=1 is not sent again).
    """
    n = notifier(receiver.path)
    n.reloading()
    n.reloaded("reconfig done: loaded a")
    assert receiver.received() == []
    n.ready("1 of 1 plugins loaded")
    n.stopping()
    n.reloading()
    n.reloaded("reconfig refused, nothing changed: the manager is shutting down")
    n.ready("late")
    assert receiver.received() == ["READY=1\nSTATUS=1 of 1 plugins loaded",
                                   "STOPPING=1\nSTATUS=stopping"]
    n.close()


def test_stopping(receiver):
    n = notifier(receiver.path)
    n.stopping("stopping (lazy shutdown)")
    assert receiver.received() == ["STOPPING=1\nSTATUS=stopping (lazy shutdown)"]
    n.close()


def test_status_is_one_line(receiver):
    n = notifier(receiver.path)
    n.status("failed: a\nTraceback (most recent call last):\n  File")
    assert receiver.received() == ["STATUS=failed: a Traceback (most recent call last): File"]
    n.close()


def test_without_a_socket_nothing_is_sent_and_nothing_fails(lines):
    n = Notifier(Clock(), environ={})
    assert n.address is None
    assert n.send("READY=1") is False
    n.ready("x")
    n.reloading()
    n.stopping()
    n.start_watchdog()
    n.close()
    assert lines == []


def test_an_unsupported_socket_is_one_warning(lines):
    n = Notifier(Clock(), environ={"NOTIFY_SOCKET": "vsock:2:999"})
    assert n.address is None
    n.ready("x")
    assert lines == ["NOTIFY_SOCKET='vsock:2:999': not a socket path or an abstract name; "
                     "not notifying"]


def test_a_socket_nobody_listens_on_is_logged_once(tmp_path, lines):
    path = str(tmp_path / "gone")
    n = notifier(path)
    assert n.send("READY=1") is False
    assert n.send("WATCHDOG=1") is False
    assert lines == [f"systemd notify: cannot send to {path}: No such file or directory"]
    n.close()


def test_a_full_receiver_never_blocks(receiver, lines):
    """
    The receiver does not read: datagrams are dropped (and logged once)
    rather than blocking the sender.
    """
    n = notifier(receiver.path)
    sent = [n.send("WATCHDOG=1") for _ in range(5000)]
    assert sent[0] is True and sent[-1] is False
    assert len(lines) == 1 and lines[0].startswith(f"systemd notify: cannot send to "
                                                   f"{receiver.path}: ")
    received = receiver.received()
    assert received and set(received) == {"WATCHDOG=1"}
    # Once there is room again, it sends (and would warn again on a new loss).
    assert n.send("READY=1") is True
    n.close()


def test_watchdog_every_half_period(receiver):
    clock = Clock()
    n = notifier(receiver.path, clock, WATCHDOG_USEC="4000000", WATCHDOG_PID="4242")
    assert n.watchdog_interval == 2.0
    n.start_watchdog()
    assert receiver.received() == ["WATCHDOG=1"]
    clock.advance(1.9)
    assert receiver.received() == []
    clock.advance(0.1)
    assert receiver.received() == ["WATCHDOG=1"]
    clock.advance(2)
    clock.advance(2)
    assert receiver.received() == ["WATCHDOG=1", "WATCHDOG=1"]
    n.stopping()
    assert receiver.received() == ["STOPPING=1\nSTATUS=stopping"]
    clock.advance(10)
    assert receiver.received() == []
    assert clock.getDelayedCalls() == []
    n.close()


def test_watchdog_without_a_pid_is_ours(receiver):
    clock = Clock()
    n = notifier(receiver.path, clock, WATCHDOG_USEC="1000000")
    assert n.watchdog_interval == 0.5
    n.start_watchdog()
    n.start_watchdog()  # once only
    clock.advance(0.5)
    assert receiver.received() == ["WATCHDOG=1", "WATCHDOG=1"]
    n.close()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("env", [
    {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"},  # another process's
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "soon"},
    {},
])
def test_no_watchdog(receiver, env):
    clock = Clock()
    n = notifier(receiver.path, clock, **env)
    assert n.watchdog_interval is None
    n.start_watchdog()
    assert receiver.received() == []
    assert clock.getDelayedCalls() == []
    n.close()
