"""
The AMP protocol of an isolated plugin's channel, the same at both ends
(the manager's L{_process} and the worker's L{worker}): AMP on the wire
(the boxes of L{_wire.Request} and L{_wire.Notify}, readable and writable
by any AMP peer), without its per-connection log lines, and quick.

Quick in two ways, for a call costs a message each way (its transport, a
L{_stream.Stream}, also writes at once and reads with one C{recv}):

  - The boxes made while the boxes of one read are handled (the answers to
    several calls in flight, the calls they lead to) go out in one write
    at the end of that read.
  - The two commands are parsed, dispatched and answered here, without
    AMP's generic argument and responder machinery (a box is a few strings:
    its command, its tag and the chunks of one pickle); any other box
    (another command, an error box) goes through AMP as usual.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from ._wire import CHUNK

__all__ = ["ChannelAMP"]

_log = Logger(namespace="twisted_plugmgr.isolate")

#: What the box of a request starts with, and of a one-way message.
_REQUEST = b"\x00\x08_command\x00\x07Request\x00\x04_ask"
_NOTIFY = b"\x00\x08_command\x00\x06Notify"
#: What the box of an answer starts with.
_ANSWER = b"\x00\x07_answer"
#: What ends a box.
_END = b"\x00\x00"


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _pickle_keys(p: bytes) -> bytes:
    """C{p} as the keys of a L{_wire.Chunks} argument named C{p}."""
    if len(p) <= CHUNK:
        return b"\x00\x01p" + _string(p)
    parts = [b"\x00\x01p", _string(p[:CHUNK])]
    for i, start in enumerate(range(CHUNK, len(p), CHUNK), 1):
        parts.append(_string(b"p.%d" % i))
        parts.append(_string(p[start:start + CHUNK]))
    return b"".join(parts)


def _pickle_of(box: Dict[bytes, bytes]) -> bytes:
    """The C{p} of C{box} (a L{_wire.Chunks} argument), joined."""
    p = box.get(b"p", b"")
    if b"p.1" not in box:
        return p
    parts = [p]
    i = 1
    while True:
        piece = box.get(b"p.%d" % i)
        if piece is None:
            return b"".join(parts)
        parts.append(piece)
        i += 1


class ChannelAMP(amp.AMP):
    """
    C{amp.AMP} that logs nothing per connection (one channel per worker),
    writes each box at once, the boxes made while one read is handled in
    one write, and carries L{_wire.Request} and L{_wire.Notify} itself
    (see the module's docstring): L{send_request} and L{send_notify} send them, L{asked}
    and L{told} receive them.

    @ivar reading: whether the boxes of a read are being handled.
    """

    #: The boxes made while a read is handled, to write at its end; None
    #: outside a read.
    _held: Optional[List[bytes]] = None

    reading = False

    def __init__(self) -> None:
        super().__init__()
        #: tag -> the Deferred of a request sent with L{send_request}.
        self._waiting: Dict[bytes, Deferred[bytes]] = {}
        self._asked = 0
        #: why the connection ended, once it has.
        self._gone: Optional[Failure] = None
        #: what was read of a box not read whole yet: its strings so far
        #: (key, value, ...), and the bytes after them.
        self._strings: List[bytes] = []
        self._rest = b""

    # -- sending -----------------------------------------------------------

    def send_request(self, p: bytes) -> Deferred[bytes]:
        """
        Send a L{_wire.Request} of C{p}.

        @return: a Deferred firing with the C{p} of its answer, or failing
            with why the connection ended, or with the C{amp.RemoteAmpError}
            of an error box.
        """
        if self._gone is not None:
            return fail(self._gone)
        if self.transport is None:
            return fail(ConnectionLost())
        self._asked += 1
        tag = b"q%x" % self._asked  # never one of AMP's own tags (hex digits)
        d: Deferred[bytes] = Deferred()
        self._waiting[tag] = d
        self._send(b"".join((_REQUEST, _string(tag), _pickle_keys(p), _END)))
        return d

    def send_notify(self, p: bytes) -> None:
        """
        Send a L{_wire.Notify} of C{p} (no answer); nothing once the
        connection has ended.
        """
        if self._gone is None:
            self._send(b"".join((_NOTIFY, _pickle_keys(p), _END)))

    def sendBox(self, box: amp.AmpBox) -> None:
        """
        Send C{box}: at the end of the read being handled, else at once.

        @raise amp.ProtocolSwitched: if the protocol has been switched.
        @raise error.ConnectionLost: if the connection is lost.
        """
        if self._locked or self.transport is None or self._startingTLSBuffer is not None:
            amp.AMP.sendBox(self, box)
            return
        self._send(box.serialize())

    def _send(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    # -- receiving ---------------------------------------------------------

    def asked(self, p: bytes, tag: bytes) -> Union[None, bytes, Deferred[bytes]]:
        """
        Answer a L{_wire.Request} of C{p}: the C{p} of the answer, or a
        Deferred of it; or L{None} for an answer given later, with
        L{send_answer} (or L{send_error}) and C{tag}. (Subclasses answer;
        here: refused, with AMP's error box for a command without a
        responder.)
        """
        raise amp.RemoteAmpError(amp.UNHANDLED_ERROR_CODE, "no responder for Request")

    def told(self, p: bytes) -> None:
        """
        A L{_wire.Notify} of C{p} arrived. (Subclasses listen; here:
        ignored.)
        """

    def dataReceived(self, data: bytes) -> None:
        """
        Handle the boxes in C{data}, then L{read_done}; write what they made
        in one write.
        """
        if self._held is not None:  # re-entered: the outer read writes
            self._boxes(data)
            return
        held: List[bytes] = []
        self._held = held
        self.reading = True
        try:
            self._boxes(data)
            if self.transport is not None:
                self.read_done()
        finally:
            self.reading = False
            self._flush(held)

    def read_done(self) -> None:
        """
        The boxes of one read were handled (what they made is not written
        yet: it is, with what this makes, once this returns).
        """

    def holding(self, work: Any) -> None:
        """
        Call C{work()}, writing the boxes it makes in one write once it
        returns (or raises).
        """
        if self._held is not None:
            work()
            return
        held: List[bytes] = []
        self._held = held
        try:
            work()
        finally:
            self._flush(held)

    def _flush(self, held: List[bytes]) -> None:
        if self._held is held:
            self._held = None
        if held and self.transport is not None:
            self.transport.write(b"".join(held))

    def _boxes(self, data: bytes) -> None:
        """
        Read the strings of AMP boxes in C{data} (a two-byte length, then
        that many bytes; keys of at most 255 bytes; an empty key ends a
        box), handing each box read whole to L{_box}.
        """
        if self.innerProtocol is not None:  # switched: not AMP any more
            self.innerProtocol.dataReceived(data)
            return
        buf = self._rest + data if self._rest else data
        strings = self._strings
        size = len(buf)
        at = 0
        while size - at >= 2:
            if not strings:  # a box begins: one of ours, in one key?
                after = self._quick(buf, at, size)
                if after:
                    at = after
                    if self.transport is None or self._gone is not None:
                        return
                    continue
            end = at + 2 + ((buf[at] << 8) | buf[at + 1])
            if end > size:
                break
            if end == at + 2 and not len(strings) % 2:  # an empty key: the box is whole
                at = end
                box = dict(zip(strings[::2], strings[1::2], strict=True))
                strings.clear()
                self._box(box)
                if self.transport is None or self._gone is not None:
                    return
                continue
            if end - at - 2 > 255 and not len(strings) % 2:
                self.lengthLimitExceeded(end - at - 2)  # a key too long: AMP's answer
                return
            strings.append(buf[at + 2:end])
            at = end
        self._rest = buf[at:]

    def _quick(self, buf: bytes, at: int, size: int) -> int:
        """
        Handle the box at C{at} in C{buf} if it is a request, a one-way
        message or the answer to a L{send_request}, as this channel writes
        them, read whole, its pickle in one key (most are).

        @return: where the box ends, or 0 if it is not such a box (nothing
            was handled: L{_boxes} reads it string by string).
        """
        if buf.startswith(_ANSWER, at):
            kind, t = 0, at + len(_ANSWER)
        elif buf.startswith(_REQUEST, at):
            kind, t = 1, at + len(_REQUEST)
        elif buf.startswith(_NOTIFY, at):
            kind, t = 2, at + len(_NOTIFY)
        else:
            return 0
        tag = b""
        if kind != 2:
            if t + 2 > size:
                return 0
            k = t + 2 + ((buf[t] << 8) | buf[t + 1])
            tag = buf[t + 2:k]
        else:
            k = t
        if k + 5 > size or not buf.startswith(b"\x00\x01p", k):
            return 0
        v = k + 5
        end = v + ((buf[k + 3] << 8) | buf[k + 4])
        if not buf.startswith(_END, end):
            return 0  # more keys (chunks), or not read whole yet
        if kind == 0:
            d = self._waiting.pop(tag, None)
            if d is None:
                return 0  # not ours: AMP's own callRemote, perhaps
            d.callback(buf[v:end])
        elif kind == 1:
            self._answer_request(tag, buf[v:end])
        else:
            self.told(buf[v:end])
        return end + 2

    def _box(self, box: Dict[bytes, bytes]) -> None:
        """
        Handle one box: the answer to a L{send_request}, a request or a one-way
        message; anything else as AMP does.
        """
        command = box.get(b"_command")
        if command == b"Request" and b"_ask" in box:
            self._answer_request(box[b"_ask"], _pickle_of(box))
            return
        if command == b"Notify":
            self.told(_pickle_of(box))
            return
        if command is None:
            tag = box.get(b"_answer")
            if tag is not None:
                d = self._waiting.pop(tag, None)
                if d is not None:
                    d.callback(_pickle_of(box))
                    return
            else:
                tag = box.get(b"_error")
                d = self._waiting.pop(tag, None) if tag is not None else None
                if d is not None:
                    d.errback(amp.RemoteAmpError(
                        box.get(b"_error_code", amp.UNKNOWN_ERROR_CODE),
                        box.get(b"_error_description", b"").decode("utf-8", "replace")))
                    return
        amp.AMP.ampBoxReceived(self, amp.AmpBox(box))

    def _answer_request(self, tag: bytes, p: bytes) -> None:
        try:
            answer = self.asked(p, tag)
        except BaseException:
            self.send_error(Failure(), tag)
            return
        if isinstance(answer, bytes):
            self.send_answer(answer, tag)
        elif answer is not None:
            answer.addCallbacks(self.send_answer, self.send_error, callbackArgs=(tag,),
                                errbackArgs=(tag,))

    def send_answer(self, answer: bytes, tag: bytes) -> None:
        """
        Answer the request C{tag} with C{answer} (see L{asked}); nothing
        once the connection has ended.
        """
        if self.transport is not None:
            self._send(b"".join((_ANSWER, _string(tag), _pickle_keys(answer), _END)))

    def send_error(self, failure: Failure, tag: bytes) -> None:
        """
        The request C{tag} could not be answered: AMP's error box, as for a
        responder that raised (an unexpected error is logged and also ends
        the connection, as AMP's C{QuitBox} does).
        """
        if failure.check(amp.RemoteAmpError):
            code = failure.value.errorCode
            description = str(failure.value.description).encode("utf-8", "replace")
            quit = failure.value.fatal
        else:
            _log.failure("answering a request of the isolate channel", failure)
            code, description, quit = amp.UNKNOWN_ERROR_CODE, b"Unknown Error", True
        if self.transport is None:
            return
        self._send(amp.AmpBox({b"_error": tag, b"_error_code": code,
                               b"_error_description": description}).serialize())
        if quit:  # after what is held is written
            self.transport.loseConnection()

    # -- the connection ----------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        """Connect, without logging it."""
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def stopReceivingBoxes(self, reason: Failure) -> None:
        """
        The connection ended: what was asked with L{send_request} fails with
        C{reason}, and so does what is asked from now on.
        """
        self._gone = reason
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(reason)
        amp.AMP.stopReceivingBoxes(self, reason)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Disconnect, without logging it."""
        self._held = None
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
