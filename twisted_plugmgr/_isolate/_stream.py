"""
The transport of an isolated plugin's channel, the same at both ends: one
end of a socketpair in the reactor, a L{FileDescriptor} (Twisted's base of
its own transports) that reads with C{recv} and writes at once.

Twisted's UNIX socket transport reads with C{recvmsg}, for the file
descriptors a peer may pass, and its C{write} only buffers, the bytes going
out on the next reactor turn. A channel passes no descriptors, and a call
costs a message each way: here a read is one C{recv}, and a write goes to
the socket at once when nothing waits in the buffer (what the socket does
not take is buffered, for the reactor to write when it can take more, as
any transport's; the order of the bytes is kept, and it never blocks).
"""

from __future__ import annotations

import socket
from typing import Any, Optional, cast

from twisted.internet import main
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = ["Stream"]


class Stream(FileDescriptor):
    """
    A connected stream socket C{sock} in C{reactor} (an
    L{twisted.internet.interfaces.IReactorFDSet} and L{IReactorTime}),
    carrying C{protocol} (connected at once); the socket is closed with
    the connection.

    @ivar socket: the socket.
    @ivar protocol: the protocol, until the connection is lost.
    """

    bufferSize = 65536

    def __init__(self, sock: socket.socket, protocol: Any, reactor: Any) -> None:
        super().__init__(reactor)
        sock.setblocking(False)
        self.socket = sock
        self.protocol: Optional[Any] = protocol
        #: whether the reactor was asked to write (something is buffered,
        #: or a loseConnection waits for its turn).
        self._writing = False
        self._aborting = False
        self.connected = 1
        protocol.makeConnection(self)
        self.startReading()

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self.socket.fileno()

    def logPrefix(self) -> str:
        """What the reactor logs this under."""
        return "isolate-channel"

    def getHost(self) -> UNIXAddress:
        """A socketpair's end has no name."""
        return UNIXAddress(None)

    def getPeer(self) -> UNIXAddress:
        """A socketpair's end has no name."""
        return UNIXAddress(None)

    def doRead(self) -> Any:
        """Give what the socket holds to the protocol."""
        try:
            data = self.socket.recv(self.bufferSize)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        if self._aborting:
            return None
        self.protocol.dataReceived(data)  # type: ignore[union-attr]
        return None

    def writeSomeData(self, data: bytes) -> Any:
        """As much of C{data} as the socket takes now: how much it took."""
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0
        except OSError as e:
            return ConnectionLost(str(e))

    def write(self, data: bytes) -> None:
        """
        Write C{data}: at once, as much as the socket takes, when nothing
        waits to be written; the rest buffered (see the module's
        docstring).
        """
        if not self._writing and self.connected and not self.disconnecting and data:
            try:
                sent = self.socket.send(data)
            except OSError:
                # Nothing taken (EAGAIN), or an error: buffered, the next
                # doWrite sends it or reports the connection lost.
                sent = 0
            if sent >= len(data):
                return
            data = data[sent:]
        super().write(data)

    def startWriting(self) -> None:
        """Ask the reactor to write (see L{write})."""
        self._writing = True
        super().startWriting()

    def stopWriting(self) -> None:
        """Nothing more to write (see L{write})."""
        self._writing = False
        super().stopWriting()

    def abortConnection(self) -> None:
        """
        Close now, whatever waits to be written: the connection is lost
        (C{ConnectionAborted}) on the next reactor turn.
        """
        if self.disconnected or self._aborting:
            return
        self._aborting = True
        self.stopReading()
        self.stopWriting()
        cast(IReactorTime, self.reactor).callLater(
            0, self.connectionLost, Failure(ConnectionAborted()))

    def connectionLost(self, reason: Failure) -> None:
        """Close the socket; tell the protocol (once)."""
        if self.disconnected:
            return
        super().connectionLost(reason)
        self.socket.close()
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)
