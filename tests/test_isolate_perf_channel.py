"""
The isolate channel's transport and protocol on real sockets in the real
reactor: L{_stream.Stream} writes at once (partial writes and a full
socket, EAGAIN, finished by the reactor in order; a lost peer reported as a
lost connection; loseConnection and abortConnection), and
L{_channel.ChannelAMP} carries AMP calls through two channel ends -- many
in flight, answered in order and out of order, values of several writes,
calls failed when the connection goes -- and to and from a stock AMP peer.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Dict, List, Tuple

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionAborted, ConnectionClosed, ConnectionDone
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from twisted_plugmgr._isolate._channel import ChannelAMP
from twisted_plugmgr._isolate._stream import Stream
from twisted_plugmgr._isolate._wire import Notify, Request

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="AF_UNIX socket buffers: Linux")


class Collect(Protocol):
    """Keeps what it reads; C{lost} fires once its connection ended, C{reason} says why."""

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.lost: Deferred[None] = Deferred()
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.reason = reason
        self.lost.callback(None)

    def received(self) -> bytes:
        return b"".join(self.data)


def adopt(sock: socket.socket, protocol: Any) -> Any:
    """Put a copy of C{sock} in the reactor with C{protocol}, on Twisted's own transport."""
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX,  # type: ignore[attr-defined]
                                  Factory.forProtocol(lambda: protocol))
    return protocol.transport


def small_pair() -> Tuple[socket.socket, socket.socket]:
    """A socketpair whose buffers hold a few KiB only."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


async def until_received(collect: Collect, size: int, seconds: float = 10.0) -> bytes:
    waited = 0.0
    while len(collect.received()) < size:
        if waited > seconds:
            raise AssertionError(f"{len(collect.received())} of {size} bytes arrived")
        await deferLater(reactor, 0.005, lambda: None)
        waited += 0.005
    return collect.received()


def stream(sock: socket.socket, protocol: Any) -> Stream:
    """C{sock} in the reactor with C{protocol}, on the channel's transport (which owns it)."""
    return Stream(sock, protocol, reactor)


def close(*things: Any) -> None:
    for thing in things:
        if isinstance(thing, socket.socket):
            thing.close()
        elif thing is not None:
            thing.abortConnection()


# -- the transport -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bytes_are_on_the_socket_before_the_reactor_turns():
    """
    On an idle transport, what C{write} is given is in the socket when it
    returns (Twisted's C{write} would wait for the next reactor turn).
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    transport = stream(ours, Collect())
    try:
        verifyObject(ITransport, transport)
        transport.write(b"hello")
        theirs.setblocking(False)
        assert theirs.recv(100) == b"hello"
    finally:
        close(transport, ours, theirs)


@pytest_twisted.ensureDeferred
async def test_partial_write_sends_the_rest_in_order():
    """
    More than the socket takes: C{write} returns at once, the reactor
    writes the rest, and bytes written after it come after it -- also
    when the socket has room again before the reactor's turn.
    """
    ours, theirs = small_pair()
    transport = stream(ours, Collect())
    theirs.setblocking(False)
    payload = os.urandom(2_000_000)
    try:
        started = time.monotonic()
        transport.write(payload)
        assert time.monotonic() - started < 1.0  # it did not wait for the peer
        got = [theirs.recv(65536)]  # room in the socket, the reactor not turned yet
        transport.write(b"tail")
        assert await until_read(theirs, got, len(payload) + 4) == payload + b"tail"
    finally:
        close(transport, ours, theirs)


async def until_read(sock: socket.socket, got: List[bytes], size: int,
                     seconds: float = 10.0) -> bytes:
    """Read the non-blocking C{sock} (the reactor turning) until C{size} bytes came."""
    waited = 0.0
    while sum(map(len, got)) < size:
        if waited > seconds:
            raise AssertionError(f"{sum(map(len, got))} of {size} bytes arrived")
        try:
            got.append(sock.recv(65536))
            continue
        except BlockingIOError:
            pass
        await deferLater(reactor, 0.002, lambda: None)
        waited += 0.002
    return b"".join(got)


@pytest_twisted.ensureDeferred
async def test_full_socket_buffers_and_sends_later():
    """
    A socket that takes nothing (EAGAIN) while the transport's buffer is
    empty: the bytes wait in the transport and follow what filled it.
    """
    ours, theirs = small_pair()
    transport = stream(ours, Collect())
    filler = socket.socket(fileno=os.dup(transport.fileno()))
    filler.setblocking(False)
    filled = 0
    while True:
        try:
            filled += filler.send(b"f" * 1024)
        except BlockingIOError:
            break
    filler.close()
    peer = Collect()
    try:
        transport.write(b"after")
        peer_transport = adopt(theirs, peer)
        try:
            expected = b"f" * filled + b"after"
            assert await until_received(peer, len(expected)) == expected
        finally:
            close(peer_transport)
    finally:
        close(transport, ours, theirs)


@pytest_twisted.ensureDeferred
async def test_write_to_a_closed_peer_loses_the_connection():
    """
    The peer is gone: C{write} raises nothing, the connection is reported
    lost, and the socket is closed.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    protocol = Collect()
    transport = stream(ours, protocol)
    theirs.close()
    transport.write(b"x" * 100_000)
    await protocol.lost.addTimeout(5, reactor)
    assert protocol.reason.check(ConnectionClosed)
    assert ours.fileno() == -1


@pytest_twisted.ensureDeferred
async def test_lose_connection_writes_what_waits_first():
    """
    C{loseConnection} with bytes still buffered (the socket was full):
    they all arrive, then the end of the stream; the connection is done
    cleanly on both sides.
    """
    ours, theirs = small_pair()
    protocol = Collect()
    transport = stream(ours, protocol)
    payload = os.urandom(1_000_000)
    transport.write(payload)
    transport.loseConnection()
    peer = Collect()
    peer_transport = adopt(theirs, peer)
    try:
        await peer.lost.addTimeout(10, reactor)
        assert peer.received() == payload
        await protocol.lost.addTimeout(5, reactor)
        assert protocol.reason.check(ConnectionDone)
        assert ours.fileno() == -1
    finally:
        close(peer_transport, theirs)


@pytest_twisted.ensureDeferred
async def test_abort_connection_drops_what_waits():
    """
    C{abortConnection}: the connection is lost (C{ConnectionAborted}) on
    the next reactor turn, once, without writing what waits; the peer
    sees the stream end; writes afterwards are ignored.
    """
    ours, theirs = small_pair()
    protocol = Collect()
    transport = stream(ours, protocol)
    transport.write(os.urandom(1_000_000))
    transport.abortConnection()
    transport.abortConnection()
    assert not protocol.lost.called  # on the next turn
    await protocol.lost.addTimeout(5, reactor)
    assert protocol.reason.check(ConnectionAborted)
    transport.write(b"ignored")
    peer = Collect()
    peer_transport = adopt(theirs, peer)
    try:
        await peer.lost.addTimeout(5, reactor)
        assert len(peer.received()) < 1_000_000
    finally:
        close(peer_transport, theirs)


@pytest_twisted.ensureDeferred
async def test_it_reads_what_arrives_and_the_end_of_the_stream():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    protocol = Collect()
    stream(ours, protocol)
    theirs.sendall(b"one ")
    theirs.sendall(b"two")
    assert await until_received(protocol, 7) == b"one two"
    theirs.close()
    await protocol.lost.addTimeout(5, reactor)
    assert protocol.reason.check(ConnectionDone)
    assert ours.fileno() == -1



# -- two channel ends ------------------------------------------------------------


class End(ChannelAMP):
    """
    A channel end that answers a request of C{p} with C{p} reversed, at
    once, or, for a C{p} starting with C{b"later"}, when L{release} says;
    and keeps what it is told.
    """

    def __init__(self) -> None:
        super().__init__()
        self.later: List[Tuple[bytes, Deferred[bytes]]] = []
        self.heard: List[bytes] = []

    def asked(self, p: bytes, tag: bytes) -> Any:
        if p.startswith(b"later"):
            d: Deferred[bytes] = Deferred()
            self.later.append((p, d))
            return d
        if p == b"raise":
            raise ValueError("a bug in a responder")
        return p[::-1]

    def told(self, p: bytes) -> None:
        self.heard.append(p)

    def release(self, order: List[int]) -> None:
        held = self.later
        self.later = []
        for i in order:
            p, d = held[i]
            d.callback(p[::-1])


def ends(small: bool = False) -> Tuple[End, End, List[Any]]:
    a, b = small_pair() if small else socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = End(), End()
    return left, right, [stream(a, left), stream(b, right)]


def ask(end: End, p: bytes) -> Deferred[bytes]:
    return end.send_request(p)


@pytest_twisted.ensureDeferred
async def test_many_calls_in_flight_answered_in_order():
    left, right, opened = ends()
    try:
        values = [b"call %d" % i for i in range(300)]
        answers = await gatherResults([ask(left, v) for v in values]).addTimeout(10, reactor)
        assert answers == [v[::-1] for v in values]
    finally:
        close(*opened)


@pytest_twisted.ensureDeferred
async def test_many_calls_in_flight_answered_out_of_order():
    left, right, opened = ends()
    try:
        values = [b"later %d" % i for i in range(100)]
        pending = [ask(left, v) for v in values]
        await until_true(lambda: len(right.later) == 100)
        order = list(range(100))
        order = order[1::2][::-1] + order[0::2]  # odd ones last first, then the even
        right.release(order)
        answers = await gatherResults(pending).addTimeout(10, reactor)
        assert answers == [v[::-1] for v in values]
    finally:
        close(*opened)


@pytest_twisted.ensureDeferred
async def test_calls_both_ways_at_once():
    left, right, opened = ends()
    try:
        there = [ask(left, b"to the right %d" % i) for i in range(50)]
        back = [ask(right, b"to the left %d" % i) for i in range(50)]
        got = await gatherResults(there + back).addTimeout(10, reactor)
        assert got[:50] == [(b"to the right %d" % i)[::-1] for i in range(50)]
        assert got[50:] == [(b"to the left %d" % i)[::-1] for i in range(50)]
    finally:
        close(*opened)


@pytest_twisted.ensureDeferred
async def test_values_of_many_writes_cross_whole():
    """
    Values of megabytes (many AMP keys, many writes on small socket
    buffers), both ways, beside small calls.
    """
    left, right, opened = ends(small=True)
    try:
        big = os.urandom(3_000_000)
        pending = [ask(left, big), ask(left, b"small"), ask(right, big[:1_000_000])]
        got = await gatherResults(pending).addTimeout(20, reactor)
        assert got == [big[::-1], b"llams", big[:1_000_000][::-1]]
    finally:
        close(*opened)


@pytest_twisted.ensureDeferred
async def test_calls_in_flight_fail_when_the_connection_goes():
    left, right, opened = ends()
    try:
        pending = ask(left, b"later, never")
        await until_true(lambda: len(right.later) == 1)
        opened[1].abortConnection()
        with pytest.raises(ConnectionClosed):
            await pending.addTimeout(5, reactor)
        with pytest.raises(ConnectionClosed):
            await ask(left, b"after the end").addTimeout(5, reactor)
    finally:
        close(*opened)


async def until_true(predicate: Any, seconds: float = 10.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > seconds:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.005, lambda: None)
        waited += 0.005


def test_box_errors_still_answer_as_amp_does():
    """
    An unknown command is answered with AMP's error box (the fallback
    path of the channel), over a test transport.
    """
    end = End()
    transport = StringTransport()
    end.makeConnection(transport)
    end.dataReceived(amp.AmpBox(_command=b"Nope", _ask=b"7").serialize())
    answer = amp.AmpBox(dict(parse_boxes(transport.value())[0]))
    assert answer[b"_error"] == b"7"
    assert answer[b"_error_code"] == amp.UNHANDLED_ERROR_CODE


def parse_boxes(data: bytes) -> List[Dict[bytes, bytes]]:
    """The AMP boxes in C{data}, parsed by Twisted's own parser."""
    boxes: List[Dict[bytes, bytes]] = []

    class Receiver:
        def startReceivingBoxes(self, sender: Any) -> None:
            pass

        def ampBoxReceived(self, box: Dict[bytes, bytes]) -> None:
            boxes.append(dict(box))

        def stopReceivingBoxes(self, reason: Any) -> None:
            pass

    parser = amp.BinaryBoxProtocol(Receiver())
    parser.makeConnection(StringTransport())
    parser.dataReceived(data)
    return boxes


# -- still AMP: a stock AMP peer -------------------------------------------------


class Stock(amp.AMP):
    """Twisted's own AMP, with responders for the two commands of the channel."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: List[bytes] = []

    @Request.responder
    def request(self, p: bytes) -> Dict[str, bytes]:
        return {"p": p[::-1]}

    @Notify.responder
    def notified(self, p: bytes) -> Dict[str, bytes]:
        self.heard.append(p)
        return {}


def with_stock() -> Tuple[End, Stock, List[Any]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    end, stock = End(), Stock()
    opened = [stream(a, end), adopt(b, stock)]
    b.close()  # the reactor has its own copy of Twisted's end
    return end, stock, opened


@pytest_twisted.ensureDeferred
async def test_a_stock_amp_peer_answers_and_asks():
    """
    The channel speaks AMP: Twisted's own AMP answers its requests and
    hears its one-way messages, and the channel answers and hears the
    stock peer's -- values of one key and of many (L{Chunks}) both ways.
    """
    end, stock, opened = with_stock()
    big = os.urandom(300_000)
    try:
        assert await end.send_request(b"abc").addTimeout(5, reactor) == b"cba"
        assert await end.send_request(big).addTimeout(5, reactor) == big[::-1]
        box = await stock.callRemote(Request, p=big).addTimeout(5, reactor)
        assert box["p"] == big[::-1]
        end.send_notify(b"one way")
        end.send_notify(big)
        stock.callRemote(Notify, p=b"the other way")
        await until_true(lambda: len(stock.heard) == 2 and end.heard == [b"the other way"])
        assert stock.heard == [b"one way", big]
    finally:
        close(*opened)


@pytest_twisted.ensureDeferred
async def test_an_error_of_the_responder_reaches_a_stock_peer_as_amp_says(logged_failures):
    """
    A request the channel cannot answer: a C{RemoteAmpError} raised by its
    C{asked} is the peer's error (the connection stays); anything else is
    logged and answered with AMP's unknown error, ending the connection (as
    AMP's own responders do).
    """
    class Picky(End):
        def asked(self, p: bytes, tag: bytes) -> Any:
            if p == b"refuse":
                raise amp.RemoteAmpError(b"REFUSED", "not that one")
            return End.asked(self, p, tag)

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    picky, stock = Picky(), Stock()
    opened = [adopt(a, picky), adopt(b, stock)]
    a.close()
    b.close()
    try:
        with pytest.raises(amp.RemoteAmpError) as info:
            await stock.callRemoteString(b"Request", p=b"refuse").addTimeout(5, reactor)
        assert (info.value.errorCode, info.value.description) == (b"REFUSED", "not that one")
        assert (await stock.callRemote(Request, p=b"still here"))["p"] == b"ereh llits"
        with pytest.raises(amp.UnknownRemoteError):
            await stock.callRemote(Request, p=b"raise").addTimeout(5, reactor)
        with pytest.raises(ConnectionClosed):
            await stock.callRemote(Request, p=b"after").addTimeout(5, reactor)
        assert [f.value.args for f in logged_failures.flush(ValueError)] == [
            ("a bug in a responder",)]
    finally:
        close(*opened)


def test_boxes_read_a_byte_at_a_time():
    """
    Boxes cut anywhere (here: one byte per read) are read whole, values of
    many keys and empty values included.
    """
    end = End()
    transport = StringTransport()
    end.makeConnection(transport)
    big = b"z" * 130_000
    data = b"".join(amp.AmpBox(box).serialize() for box in (
        {b"_command": b"Request", b"_ask": b"1", b"p": b"abc"},
        {b"_command": b"Notify", b"p": b""},
        {b"_command": b"Request", b"_ask": b"2", b"p": big[:60000], b"p.1": big[60000:120000],
         b"p.2": big[120000:]},
    ))
    for i in range(len(data)):
        end.dataReceived(data[i:i + 1])
    answers = parse_boxes(transport.value())
    assert [(box[b"_answer"], box[b"p"]) for box in answers[:1]] == [(b"1", b"cba")]
    assert answers[1][b"_answer"] == b"2"
    assert b"".join(answers[1][k] for k in (b"p", b"p.1", b"p.2")) == big[::-1]
    assert end.heard == [b""]


def test_a_key_too_long_ends_the_connection():
    end = End()
    transport = StringTransport()
    end.makeConnection(transport)
    end.dataReceived(b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00")
    assert transport.disconnecting
    assert end.heard == [] and transport.value() == b""


def test_the_channels_own_boxes_cut_anywhere():
    """
    What a channel end writes (requests, one-way messages, answers; of one
    key and of many), cut at every place into two reads, or read a byte at
    a time, is read whole by the other end.
    """
    sender = End()
    sent = StringTransport()
    sender.makeConnection(sent)
    big = bytes(range(256)) * 500  # 128,000 bytes: three keys
    answers: List[bytes] = []
    for p in (b"abc", b"", big):
        sender.send_request(p).addCallback(answers.append)
    sender.send_notify(b"told")
    sender.send_notify(big)
    requests = sent.value()

    def read(pieces: List[bytes]) -> Tuple[bytes, List[bytes]]:
        receiver = End()
        transport = StringTransport()
        receiver.makeConnection(transport)
        for piece in pieces:
            receiver.dataReceived(piece)
        return transport.value(), receiver.heard

    replies, heard = read([requests])
    assert heard == [b"told", big]
    assert [box[b"p"] for box in parse_boxes(replies)[:2]] == [b"cba", b""]
    for cut in list(range(0, 200)) + list(range(len(requests) - 200, len(requests))):
        assert read([requests[:cut], requests[cut:]]) == (replies, heard)
    assert read([requests[i:i + 1] for i in range(len(requests))]) == (replies, heard)
    # The answers, as the receiver wrote them, back to the sender a byte at a time.
    for i in range(len(replies)):
        sender.dataReceived(replies[i:i + 1])
    assert answers == [b"cba", b"", big[::-1]]
