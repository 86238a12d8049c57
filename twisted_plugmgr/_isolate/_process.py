"""
Worker processes, from the manager's side: one L{Worker} per process
(spawned with C{spawnProcess}, talking AMP over a socketpair, its stdout and
stderr logged line by line, its end observed), and the L{WorkerPool} that
keeps one warm spare ready while isolated plugins may need one.

Nothing here knows of plugins beyond a name to log under: the proxy
(L{_proxy}) gives a worker its meaning.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._errors import PluginError
from ._channel import ChannelAMP
from ._stream import Stream
from ._wire import NotImportedHere, dumps, encode_failure, read

__all__ = ["Worker", "WorkerPool", "Exit"]

#: How a worker ended: (exit status or None, signal number or None).
Exit = Tuple[Optional[int], Optional[int]]

_log = Logger(namespace="twisted_plugmgr.isolate")

#: Seconds after a worker is taken before the next spare starts.
SPARE_DELAY = 0.05


class _Channel(ChannelAMP):
    """
    The manager's end of a worker's channel; what the worker sends is given
    to the worker's C{on_request} and C{on_notify}.
    """

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def asked(self, p: bytes, tag: bytes) -> Any:
        """A request of the plugin (C{call}, C{emit}, C{stop})."""
        return self.worker.answer(p)

    def told(self, p: bytes) -> None:
        """A one-way message of the plugin (a post, a report, a log event)."""
        self.worker.notified(p)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """The channel closed (what was pending has failed): the process is ending."""
        super().connectionLost(reason)
        self.worker.channel_lost()


class Worker(ProcessProtocol):
    """
    One worker process.

    @ivar pid: its process id.
    @ivar ready: whether its reactor runs, Twisted imported (it said so).
    @ivar exit: how it ended, once it has (else L{None}).
    @ivar log: where its output lines go (renamed once a plugin is given
        to it).
    @ivar plugin: the name of the plugin given to it (L{None} before), the
        one its errors name.
    @ivar on_request: called with C{(op, value)} for each request of the
        worker; returns the result or a Deferred.
    @ivar on_notify: called with C{(op, value)} for each one-way message.
    @ivar on_exit: called with L{Exit} when the process ended on its own
        (not after L{end} or L{kill}).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.pid: Optional[int] = None
        self.exit: Optional[Exit] = None
        self.ending = False  # an end was asked for: its exit is no failure
        self.log = _log
        self.plugin: Optional[str] = None
        self.on_request: Callable[[str, Any], Any] = _refuse
        self.on_notify: Callable[[str, Any], None] = lambda op, value: None
        self.on_exit: Callable[[Exit], None] = lambda status: None
        self._channel = _Channel(self)
        self._buffers: Dict[int, bytes] = {1: b"", 2: b""}
        self._channel_open = True
        self._told = False
        self._waiting_exit: list = []
        self._kill_call: Optional[IDelayedCall] = None
        self.ready = False

    def spawn(self) -> None:
        """
        Start the process: C{python -m twisted_plugmgr._isolate.worker} with
        its end of a socketpair as fd 3 and this interpreter's C{sys.path}.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str))
        env["PYTHONUNBUFFERED"] = "1"
        env["PLUGMGR_PARENT_PID"] = str(os.getpid())
        try:
            transport = self._reactor.spawnProcess(
                self, sys.executable, [sys.executable, "-m", "twisted_plugmgr._isolate.worker"],
                env=env, childFDs={0: "w", 1: "r", 2: "r", 3: theirs.fileno()})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = transport.pid
        Stream(ours, self._channel, self._reactor)
        transport.closeStdin()

    # -- requests ----------------------------------------------------------

    def request(self, op: str, value: Any) -> Deferred[Any]:
        """
        Ask the worker C{op} with C{value} (pickled first: what cannot be
        pickled raises here, before anything is sent).

        @return: a Deferred with the answer, C{(True, result)} or C{(False,
            encoded error)}; failing with L{WorkerGone} if the process ends
            first. Cancelling it forgets the answer.
        """
        return self.send(op, value).addCallbacks(read, self.lost)

    def send(self, op: str, value: Any) -> Deferred[bytes]:
        """
        L{request}, its answer still pickled (the caller unpickles it, and
        gives a failure to L{lost}): one callback less per call.

        @raise pickle.PicklingError: (or anything else pickling raises) if
            C{value} cannot be pickled; nothing is sent.
        """
        payload = dumps((op, value))
        if self.exit is not None:
            return fail(WorkerGone(self.exit))
        return self._channel.send_request(payload)

    def lost(self, failure: Failure) -> Any:
        """
        Why a request of L{send} failed: a cancellation as it is, else
        L{WorkerGone} with how the process ended, once it has.
        """
        if failure.check(CancelledError, WorkerGone):
            return failure
        # The channel closed: fail with how the process ended, once it has.
        return self.ended().addCallback(lambda status: Failure(WorkerGone(status)))

    def notify(self, op: str, value: Any) -> None:
        """
        Send C{op} one way.
        """
        if self.exit is None:
            self._channel.send_notify(dumps((op, value)))

    def answer(self, p: bytes) -> Any:
        """
        Answer a request of the worker (see L{on_request}); a request the
        manager cannot read (see L{read}) is answered with a L{PluginError}
        saying why.
        """
        try:
            op, value = read(p)
        except NotImportedHere as e:
            return _error(Failure(PluginError(
                self.plugin, f"a request of its worker cannot be read in the manager: {e}")))
        try:
            outcome = self.on_request(op, value)
        except BaseException:
            return _error(Failure())
        if isinstance(outcome, Deferred):
            return outcome.addCallbacks(self._ok, _error, callbackArgs=(op,))
        return self._ok(outcome, op)

    def _ok(self, result: Any, op: str) -> bytes:
        try:
            return dumps((True, result))
        except BaseException as e:
            return _error(Failure(PluginError(
                self.plugin, f"api.{op}: its answer cannot be pickled ({e!r})")))

    def notified(self, p: bytes) -> None:
        """
        A one-way message of the worker (see L{on_notify}).
        """
        try:
            op, value = read(p)
        except NotImportedHere as e:
            self.on_notify("unreadable", str(e))
            return
        except BaseException:
            self.log.failure("a message from worker {pid} cannot be read", pid=self.pid)
            return
        if op == "ready":
            self.ready = True
            return
        self.on_notify(op, value)

    # -- the end -------------------------------------------------------------

    def kill(self) -> None:
        """
        SIGKILL the process now.
        """
        self.ending = True
        self._signal("KILL")

    def end(self, until: Optional[float] = None) -> Deferred[Exit]:
        """
        End the process: SIGTERM now, SIGKILL at the reactor time C{until}
        (at once without one, or if it has passed).

        @return: a Deferred firing with its L{Exit} once it ended.
        """
        self.ending = True
        if self.exit is None:
            grace = (until - self._reactor.seconds()) if until is not None else 0.0
            if grace > 0:
                self._signal("TERM")
                if self._kill_call is None:
                    self._kill_call = self._reactor.callLater(grace, self._signal, "KILL")
            else:
                self._signal("KILL")
        return self.ended()

    def ended(self) -> Deferred[Exit]:
        """
        A Deferred firing with its L{Exit} once the process has ended.
        """
        d: Deferred[Exit] = Deferred()
        if self.exit is not None:
            d.callback(self.exit)
        else:
            self._waiting_exit.append(d)
        return d

    def _signal(self, name: str) -> None:
        if self.exit is not None or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def channel_lost(self) -> None:
        """
        The channel closed; the process ends (it is killed if it lingers).
        """
        self._channel_open = False
        if self.exit is None:
            if self._kill_call is None:
                self._kill_call = self._reactor.callLater(1.0, self._signal, "KILL")
        else:
            self._gone()

    # -- ProcessProtocol ---------------------------------------------------

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Log what the worker writes to stdout and stderr, line by line.
        """
        buffered = self._buffers.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._buffers[childFD] = rest[-65536:]
        for line in lines:
            self._line(childFD, line)

    def _line(self, fd: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        stream = "stderr" if fd == 2 else "stdout"
        if fd == 2:
            self.log.warn("{stream}: {line}", stream=stream, line=text, worker_pid=self.pid)
        else:
            self.log.info("{stream}: {line}", stream=stream, line=text, worker_pid=self.pid)

    def processEnded(self, reason: Failure) -> None:
        """
        The process ended: fail what is pending, tell who waits.
        """
        for fd, rest in self._buffers.items():
            if rest:
                self._line(fd, rest)
        self._buffers = {}
        value = reason.value
        code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        self.exit = (code, sig)
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        waiting, self._waiting_exit = self._waiting_exit, []
        for d in waiting:  # what was pending when the channel closed, first
            d.callback(self.exit)
        if self._channel_open:
            # Its channel closes too (a child of the plugin may hold the
            # other end: abort it); its end is told once it has closed.
            transport = self._channel.transport
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]
        else:
            self._gone()

    def _gone(self) -> None:
        """
        The process and its channel have both ended: tell C{on_exit}, unless
        the end was asked for.
        """
        if not self.ending and not self._told:
            self._told = True
            assert self.exit is not None
            self.on_exit(self.exit)


def _error(failure: Failure) -> bytes:
    return dumps((False, encode_failure(failure)))


def _refuse(op: str, value: Any) -> Any:
    raise CancelledError(f"no plugin in this worker to answer {op}")


class WorkerGone(Exception):
    """
    The worker process ended before it answered.

    @ivar exit: how it ended (L{Exit}).
    """

    def __init__(self, exit: Exit) -> None:
        self.exit = exit
        super().__init__(f"the worker ended {exit!r}")


class WorkerPool:
    """
    Spawns workers, keeping one warm spare (interpreter started, Twisted
    imported, no plugin) ready while C{wanted()} says isolated plugins may
    need one, so that a restart does not pay for an interpreter start.

    @param reactor: a reactor providing L{IReactorProcess} and
        L{IReactorFDSet}.
    @param wanted: whether a spare is worth keeping now.
    @param spare: whether to keep spares at all.
    """

    def __init__(self, reactor: IReactorTime, wanted: Callable[[], bool],
                 spare: bool = True) -> None:
        self._reactor = reactor
        self._wanted = wanted
        self.keep_spare = spare
        self._spare: Optional[Worker] = None
        self._check: Optional[IDelayedCall] = None
        self._refill: Optional[IDelayedCall] = None

    def usable(self) -> bool:
        """
        Whether the reactor can run worker processes.
        """
        return IReactorProcess.providedBy(self._reactor) and IReactorFDSet.providedBy(
            self._reactor)

    def take(self) -> Worker:
        """
        A worker for a plugin: the spare if it is alive, else a new one;
        a new spare is started behind it.
        """
        worker, self._spare = self._spare, None
        if worker is None or worker.exit is not None:
            worker = self._spawn()
        if self.keep_spare and (self._refill is None or not self._refill.active()):
            # A little later: the new spare's start would compete for the
            # CPU with the plugin starting in the worker just taken.
            self._refill = self._reactor.callLater(SPARE_DELAY, self._make_spare)
        return worker

    def _make_spare(self) -> None:
        self._refill = None
        if self.keep_spare and self._spare is None and self._wanted():
            try:
                self._spare = self._spawn()
            except Exception:  # out of processes or file descriptors: no spare
                _log.failure("the warm spare worker could not start")

    def _spawn(self) -> Worker:
        worker = Worker(self._reactor)
        worker.spawn()
        return worker

    @property
    def spare_pid(self) -> Optional[int]:
        """The pid of the warm spare, once its reactor runs."""
        spare = self._spare
        return spare.pid if spare is not None and spare.ready and spare.exit is None else None

    def released(self) -> None:
        """
        A worker ended, or a plugin went: on the next reactor turn, the
        spare goes if it is no longer wanted. (No spare: nothing to do; one
        about to start checks for itself.)
        """
        if self._spare is None:
            return
        if self._check is None or not self._check.active():
            self._check = self._reactor.callLater(0, self._idle)

    def _idle(self) -> None:
        self._check = None
        if self._spare is not None and not self._wanted():
            self.close()

    def close(self) -> Deferred[Any]:
        """
        End the spare, if any (and one about to start).
        """
        if self._refill is not None and self._refill.active():
            self._refill.cancel()
        self._refill = None
        spare, self._spare = self._spare, None
        if spare is None:
            d: Deferred[Any] = Deferred()
            d.callback(None)
            return d
        return spare.end()
