"""
The systemd notify protocol, spoken by the service itself: each message is
one datagram of C{KEY=VALUE} lines sent to the UNIX socket named by
C{$NOTIFY_SOCKET} (a path, or C{@name} for the abstract namespace), as
C{sd_notify(3)} describes. No socket in the environment: nothing is sent
and nothing fails. The messages::

    READY=1                  the startup loads are done (STATUS= says how
                             many loaded and which failed)
    RELOADING=1              a reconfig begins (with MONOTONIC_USEC=, as
    MONOTONIC_USEC=...       Type=notify-reload needs), then READY=1
    STOPPING=1               the shutdown begins
    WATCHDOG=1               every half of $WATCHDOG_USEC, when it is set
                             (and $WATCHDOG_PID, if given, is this process)

Sending never blocks the reactor: the socket is non-blocking, and a
datagram the receiver has no room for is dropped and logged (systemd reads
its socket promptly; a watchdog ping dropped once is sent again half a
period later).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Mapping, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Notifier", "notify_address"]


def notify_address(value: Optional[str]) -> Optional[str]:
    """
    The address to send to for C{$NOTIFY_SOCKET}'s C{value}: a filesystem
    path as it is, C{@name} as the abstract name C{"\\0name"}; L{None} when
    there is none or it is of a kind this module does not speak (C{vsock:}).
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """
    Tells systemd (or anything listening on C{$NOTIFY_SOCKET}) where the
    service is.

    @ivar address: the socket address datagrams go to, or L{None} (then
        every method does nothing).
    @ivar watchdog_interval: seconds between two C{WATCHDOG=1}, or L{None}
        when no watchdog is asked for.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        environ: Optional[Mapping[str, str]] = None,
        pid: Optional[int] = None,
        monotonic_usec: Callable[[], int] = lambda: time.monotonic_ns() // 1000,
    ) -> None:
        """
        @param reactor: keeps time for the watchdog.
        @param environ: where C{NOTIFY_SOCKET}, C{WATCHDOG_USEC} and
            C{WATCHDOG_PID} are read (C{os.environ} by default).
        @param pid: this process's id (C{os.getpid()} by default), compared
            with C{WATCHDOG_PID}.
        @param monotonic_usec: C{CLOCK_MONOTONIC} in microseconds, for
            C{MONOTONIC_USEC=} (systemd compares it with its own clock).
        """
        env = os.environ if environ is None else environ
        self._reactor = reactor
        self._monotonic_usec = monotonic_usec
        raw = env.get("NOTIFY_SOCKET")
        self.address = notify_address(raw)
        if raw and self.address is None:
            self.log.warn("NOTIFY_SOCKET={value!r}: not a socket path or an abstract name; "
                          "not notifying", value=raw)
        self.watchdog_interval = _watchdog_interval(
            env, os.getpid() if pid is None else pid) if self.address else None
        self._socket: Optional[socket.socket] = None
        self._watchdog: Optional[LoopingCall] = None
        self._dropped = False
        # READY=1 sent once: a reload's RELOADING=1 and READY=1 only make
        # sense after it, STOPPING=1 ends them.
        self._phase = "starting"

    def send(self, *lines: str) -> bool:
        """
        Send one datagram of C{lines} (each C{KEY=VALUE}).

        @return: whether it was sent (L{False} without a socket, or when it
            could not be: that is logged once, as a warning).
        """
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as e:
            if not self._dropped:
                self._dropped = True
                self.log.warn("systemd notify: cannot send to {socket}: {error}",
                              socket=self.address.replace("\0", "@"),
                              error=e.strerror or str(e))
            return False
        self._dropped = False
        return True

    def ready(self, status: str) -> None:
        """
        The service is ready (at start); C{status} is shown by C{systemctl
        status}. Nothing once stopping.
        """
        if self._phase == "stopping":
            return
        self._phase = "ready"
        self.send("READY=1", f"STATUS={_status(status)}")

    def reloading(self, status: str = "reconfiguring") -> None:
        """
        A reload begins: C{RELOADING=1} with C{MONOTONIC_USEC=} now. Only
        between L{ready} and L{stopping} (a reconfig asked for during the
        startup loads is part of the start, for systemd).
        """
        if self._phase != "ready":
            return
        self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}",
                  f"STATUS={_status(status)}")

    def reloaded(self, status: str) -> None:
        """
        A reload is done (applied or refused): C{READY=1} again, with
        C{status}. Only between L{ready} and L{stopping}.
        """
        if self._phase != "ready":
            return
        self.send("READY=1", f"STATUS={_status(status)}")

    def stopping(self, status: str = "stopping") -> None:
        """
        The shutdown begins; the watchdog stops.
        """
        self._phase = "stopping"
        self.stop_watchdog()
        self.send("STOPPING=1", f"STATUS={_status(status)}")

    def status(self, status: str) -> None:
        """
        Only a new C{STATUS=}.
        """
        self.send(f"STATUS={_status(status)}")

    def start_watchdog(self) -> None:
        """
        Send C{WATCHDOG=1} now and every L{watchdog_interval} seconds, if a
        watchdog is asked for.
        """
        if self.watchdog_interval is None or self._watchdog is not None:
            return
        self._watchdog = LoopingCall(self.send, "WATCHDOG=1")
        self._watchdog.clock = self._reactor
        self._watchdog.start(self.watchdog_interval, now=True)

    def stop_watchdog(self) -> None:
        """
        Stop sending C{WATCHDOG=1}.
        """
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.running:
            watchdog.stop()

    def close(self) -> None:
        """
        Stop the watchdog and close the socket.
        """
        self.stop_watchdog()
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


def _watchdog_interval(env: Mapping[str, str], pid: int) -> Optional[float]:
    """
    Half of C{$WATCHDOG_USEC} in seconds, when it is set (a positive whole
    number) and C{$WATCHDOG_PID}, if set, is C{pid}; else L{None}.
    """
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid.strip() != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


def _status(text: str) -> str:
    """
    C{text} on one line (a newline would end the C{STATUS=} field).
    """
    return " ".join(text.split())
