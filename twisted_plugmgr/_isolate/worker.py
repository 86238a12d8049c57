"""
The main of an isolated plugin's worker process:
C{python -m twisted_plugmgr._isolate.worker}, started by the manager with
its end of a socketpair as file descriptor 3.

The worker runs its own reactor and speaks AMP (L{_wire}) on that socket.
It waits, warm (Twisted imported, no plugin), for the manager's C{load}:
then it applies the resource limits, imports the plugin's module from the
place the manager located (under the same private name), finds and checks
its class and constructs it, and reports what the manager needs to know.
Afterwards it runs the plugin's start, handlers, state hand-off and
shutdown as the manager asks, and forwards what the plugin sends back:
posts, calls and emits to other plugins, reports, log events.

It never outlives the manager: it exits when the socket closes (the
manager stopped, or was killed), and on Linux the kernel kills it with the
manager (C{PR_SET_PDEATHSIG}) even while a handler hangs.
"""

from __future__ import annotations

import os
import socket
import sys
from collections import deque
from time import perf_counter
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import LogLevel, globalLogBeginner, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from .._errors import InitFailed, InvalidMetadata, PluginError
from .._interfaces import IPluginHost
from ._channel import ChannelAMP
from ._stream import Stream
from ._wire import NO_STATE_MARK, decode_failure, dumps, encode_failure, loads

__all__ = ["main", "WorkerProtocol", "LIMITS"]

#: The C{limits} keys and the resource each one sets.
LIMITS = {"memory_mb": "RLIMIT_AS", "cpu_seconds": "RLIMIT_CPU", "open_files": "RLIMIT_NOFILE"}

#: Requests that arrive together run in one reactor turn while they take less
#: than this many seconds in all; past it, the next one waits for the next
#: turn, once the answers so far are written. (Quick calls are answered in
#: one write; a slow handler's answer is never held back by the next one.)
_TURN = 0.001

#: Log events below this level are forwarded only from the plugin's namespace.
_QUIET = LogLevel.warn


def apply_limits(limits: Dict[str, int]) -> None:
    """
    Apply C{limits} to this process with C{setrlimit} (soft and hard).
    """
    import resource

    for key, value in limits.items():
        which = getattr(resource, LIMITS[key])
        amount = value * 1024 * 1024 if key == "memory_mb" else value
        hard = amount + 1 if key == "cpu_seconds" else amount  # SIGXCPU, then SIGKILL
        resource.setrlimit(which, (amount, hard))


def _is_bot_plugin(cls: type) -> bool:
    return any(base.__name__ == "BotPlugin" and base.__module__.startswith("twisted_plugmgr.irc")
               for base in cls.__mro__)


class _RemoteManager:
    """
    The manager, as the plugin's API sees it from the worker: C{post},
    C{call} and C{emit} go to the manager over the channel.
    """

    def __init__(self, protocol: WorkerProtocol) -> None:
        self._protocol = protocol

    def post(self, plugin: str, event: str, *args: Any, **kw: Any) -> None:
        """
        L{PluginManager.post}, through the manager (a failure there is
        reported as this plugin's C{plugin_error}).
        """
        self._protocol.notify("post", (plugin, event, args, kw))

    def call(self, plugin: str, event: str, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        L{PluginManager.call}, through the manager.
        """
        return self._protocol.ask("call", (plugin, event, args, kw))

    def emit(self, event: str, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        L{PluginManager.emit}, through the manager.
        """
        return self._protocol.ask("emit", (event, args, kw))

    def removeService(self, service: Any) -> Deferred[Any]:
        """
        The plugin left its parent (C{disownServiceParent()}): it ends
        itself, as in the manager.
        """
        return self._protocol.ask("stop", (f"{self._protocol.name} was removed from its parent",
                                           "smart"))


@implementer(IPluginHost)
class _RemoteHost:
    """
    The plugin host, from the worker: reports go to the manager; a live
    reference reaches only the plugin of this process.
    """

    def __init__(self, protocol: WorkerProtocol) -> None:
        self._protocol = protocol

    def instance_of(self, name: str) -> Any:
        """
        The plugin of this worker when C{name} is its name; any other plugin
        lives in another process: refused.
        """
        protocol = self._protocol
        if name == protocol.name and protocol.plugin is not None:
            return protocol.plugin
        raise PluginError(protocol.name, f"api.plugin({name!r}) cannot reach across processes: "
                                         f"{protocol.name!r} runs isolated, {name!r} does not "
                                         f"run in its process; use api.call({name!r}, ...)")

    def report_error(self, name: str, failure: Failure) -> None:
        """Forward a C{plugin_error}."""
        self._protocol.notify("error", encode_failure(failure))

    def report_warning(self, name: str, message: str) -> None:
        """Forward a C{plugin_warning}."""
        self._protocol.notify("warning", str(message))

    def timer_error(self, name: str, api: Any, failure: Failure, report: bool = True) -> None:
        """Forward an error of a timer (the manager applies C{fail_on_error})."""
        self._protocol.notify("timer_error", (encode_failure(failure), report))

    def fail_plugin(self, name: str, api: Any, failure: Failure, cause: str) -> None:
        """Forward the plugin's failure (its supervisor decides)."""
        self._protocol.notify("fail", (encode_failure(failure), cause))

    def stop_plugin(self, name: str, api: Any, reason: str = "", mode: Any = "smart") -> Deferred:
        """Ask the manager to end this plugin."""
        return self._protocol.ask("stop", (reason, str(getattr(mode, "value", mode))))


class WorkerProtocol(ChannelAMP):
    """
    The worker's end of the channel: runs what the manager asks of the
    plugin and forwards what the plugin sends.

    @ivar name: the plugin's name, once loaded.
    @ivar plugin: the plugin's instance, once constructed.

    Requests run in the order they came, as soon as the read they came in
    is handled, their answers written together when they are done (see
    L{_TURN}): once the requests of a turn took a millisecond, the rest
    wait for the next reactor turn, and the answers so far are written
    before the next handler starts (the manager times a call from the
    answer of the one before it), never held back by a slow handler that
    arrived in the same read.

    @param on_lost: called once the channel closed.
    @param reactor: the worker's reactor.
    """

    def __init__(self, on_lost: Callable[[], None], reactor: IReactorTime) -> None:
        super().__init__()
        self.name = ""
        self.plugin: Any = None
        self._on_lost = on_lost
        self._reactor = reactor
        #: requests not run yet, in the order they came, with their tags.
        self._queue: Deque[Tuple[bytes, bytes]] = deque()
        self._turn: Optional[IDelayedCall] = None
        self._forwarding = False
        self._ops: Dict[str, Callable[[Any], Any]] = {
            "load": self._load, "set_state": self._set_state, "start": self._start,
            "get_state": self._get_state, "migrate_state": self._migrate, "call": self._call,
            "shutdown": self._shutdown,
        }

    # -- to the manager ----------------------------------------------------

    def notify(self, op: str, value: Any) -> None:
        """
        Send C{op} one way; a value that cannot be pickled is reported
        instead.
        """
        try:
            payload = dumps((op, value))
        except BaseException as e:
            payload = dumps(("error", encode_failure(Failure(PluginError(
                self.name, f"{op}: a value that cannot be pickled ({e!r})")))))
        self.send_notify(payload)

    def ask(self, op: str, value: Any) -> Deferred[Any]:
        """
        Send C{op} and wait for its answer (its result, or its error).
        """
        try:
            payload = dumps((op, value))
        except BaseException as e:
            return fail(PluginError(self.name, f"{_request(op, value)}: its arguments cannot "
                                               f"be pickled ({e!r})"))
        return self.send_request(payload).addCallback(self._answered)

    def _answered(self, p: bytes) -> Any:
        ok, value = loads(p)
        if ok:
            return value
        return decode_failure(self.name, value, loads)

    # -- from the manager --------------------------------------------------

    def asked(self, p: bytes, tag: bytes) -> None:
        """
        Queue the op pickled in C{p}, to run once the read it came in is
        handled (see L{read_done}); its result or its error is the answer
        to C{tag}.
        """
        self._queue.append((p, tag))
        if self._turn is None and not self.reading:
            self._turn = self._reactor.callLater(0, self._next)

    def read_done(self) -> None:
        """
        Run the requests of this read now, unless earlier ones wait for
        their turn (their answers are written with this read's).
        """
        if self._queue and self._turn is None:
            self._run_queue()

    def _next(self) -> None:
        """
        A turn of the requests queued (see L{_run_queue}); its answers are
        written together once it ends.
        """
        self._turn = None
        self.holding(self._run_queue)

    def _run_queue(self) -> None:
        """
        Run the requests queued, in order, while they take less than
        L{_TURN} in all; the rest in the next reactor turn (so that the
        answers so far are written first).
        """
        queue = self._queue
        began = perf_counter()
        while queue:
            p, tag = queue.popleft()
            result = self._run(p)
            if isinstance(result, Deferred):
                result.addCallbacks(self.send_answer, self.send_error, callbackArgs=(tag,),
                                    errbackArgs=(tag,))
            else:
                self.send_answer(result, tag)
            if queue and perf_counter() - began >= _TURN:
                self._turn = self._reactor.callLater(0, self._next)
                return

    def _run(self, p: bytes) -> Any:
        """
        Run the op pickled in C{p}: its answer, or a Deferred of it.
        """
        try:
            op, value = loads(p)
            result = self._ops[op](value)
        except BaseException:
            return self._error(Failure())
        if isinstance(result, Deferred):
            return result.addCallbacks(self._ok, self._error, callbackArgs=(op, value))
        return self._ok(result, op, value)

    def told(self, p: bytes) -> None:
        """The manager sends nothing one way yet."""

    def _ok(self, result: Any, op: str, value: Any) -> bytes:
        try:
            return dumps((True, result))
        except BaseException as e:
            what = f"handler {value[0]}" if op == "call" else op
            return self._error(Failure(PluginError(
                self.name, f"{what}: its result cannot be pickled ({e!r})")))

    def _error(self, failure: Failure) -> bytes:
        return dumps((False, encode_failure(failure)))

    # -- the operations --------------------------------------------------

    def _load(self, value: Any) -> Dict[str, Any]:
        from twisted.internet import reactor

        from .. import _source
        from .._dispatch import handler_specs
        from .._plugin import PluginAPI
        from .._policy import RestartPolicy, class_policy
        from .._schema import data_for

        (name, module_name, origin, is_package, root), path, limits, data, sources = value
        self.name = name
        sys.path[:] = path
        if limits:
            apply_limits(limits)
        self._start_forwarding_logs()
        source = _source.PluginSource(name, module_name, origin, is_package, root)
        try:
            imported, compiled = _import_from(source, sources)
        except BaseException:
            from .._errors import CompileFailed

            raise CompileFailed(name, origin, failure=Failure()) from None
        try:
            cls = _source.find_plugin_class(name, imported.module)
            missing = _source.check_metadata(name, cls)
            specs = handler_specs(cls)
            policy = class_policy(cls)
            RestartPolicy().evolve(**policy)
        except PluginError:
            raise
        except BaseException as e:
            raise InvalidMetadata(name, [f"looking at the plugin class raised {e!r}"]) from None
        if _is_bot_plugin(cls):
            raise InvalidMetadata(name, ["an IRC bot plugin (BotPlugin) cannot be isolated"])
        # Its Config is checked here, where its class is (the manager's is
        # a proxy): InvalidData (or InvalidMetadata) travels back as itself.
        data = data_for(name, cls, data)
        manager = _RemoteManager(self)
        api = PluginAPI(manager, name, reactor, host=_RemoteHost(self))
        try:
            self.plugin = cls(api, data)
        except BaseException:
            raise InitFailed(name, "the constructor raised", failure=Failure()) from None
        plugin = self.plugin
        try:
            # Its parent is its manager, as in the manager's process: its
            # stopService() and disownServiceParent() end it there.
            plugin.parent = manager
        except BaseException:
            pass  # a read-only parent: it ends itself with api.stop()

        def read(attribute: str) -> Any:
            try:
                return getattr(plugin, attribute, None)
            except BaseException:
                return None

        meta = {key: read(key) for key in ("name", "version", "longname", "license", "author",
                                           "state_version", "requires", "call_deadline")}
        meta["requires"] = tuple(meta["requires"] or ())
        callables = [key for key in ("default", "get_state", "set_state", "migrate_state")
                     if callable(read(key))]
        return {"specs": specs, "meta": meta, "policy": policy, "callables": callables,
                "missing": missing, "hashes": dict(imported.hashes), "pid": os.getpid(),
                "sources": compiled}

    def _set_state(self, state: Any) -> Any:
        set_state = getattr(self.plugin, "set_state", None)
        return set_state(state) if callable(set_state) else None

    def _start(self, value: Any) -> Any:
        return maybeDeferred(self.plugin.startService).addCallback(lambda _: None)

    def _get_state(self, value: Any) -> Any:
        get_state = getattr(self.plugin, "get_state", None)
        if not callable(get_state):
            return NO_STATE_MARK
        return get_state()

    def _migrate(self, value: Any) -> Any:
        old_version, state = value
        return self.plugin.migrate_state(old_version, state)

    def _call(self, value: Any) -> Any:
        """
        Call a handler; answer C{(seconds, result)}: the time its
        synchronous part took (as the manager times an in-process handler).
        """
        attribute, args, kw = value
        started = perf_counter()
        result = getattr(self.plugin, attribute)(*args, **kw)
        elapsed = perf_counter() - started
        if isinstance(result, Deferred):
            return result.addCallback(lambda outcome: (elapsed, outcome))
        return elapsed, result

    def _shutdown(self, value: Any) -> Any:
        from .._lifecycle import ShutdownMode

        mode, reason = value
        return self.plugin.shutdown(ShutdownMode.coerce(mode), reason)

    # -- logs ------------------------------------------------------------

    def _start_forwarding_logs(self) -> None:
        namespace = f"twisted_plugmgr.plugins.{self.name}"

        def forward(event: Dict[str, Any]) -> None:
            level = event.get("log_level")
            ns = str(event.get("log_namespace", ""))
            if self._forwarding or level is None:
                return
            if not ns.startswith(namespace) and level < _QUIET:
                return
            self._forwarding = True
            try:
                self.notify("log", _log_record(event))
            except BaseException:
                pass  # a log event that cannot travel is dropped, never fatal
            finally:
                self._forwarding = False

        globalLogPublisher.addObserver(forward)  # type: ignore[arg-type]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """The manager is gone: so is this worker (its queued requests with it)."""
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        self._queue.clear()
        super().connectionLost(reason)
        self._on_lost()


def _import_from(source: Any, sources: Dict[str, bytes]) -> Any:
    """
    Import the plugin at C{source} as L{_source.import_plugin} does, the
    files named in C{sources} compiled from the bytes given there (the
    code a restart or a rollback must run again: what the first worker of
    that version compiled), the others read from disk.

    @return: the L{_source.ImportedPlugin}, and path -> the bytes compiled.
    """
    from .. import _source

    compiled: Dict[str, bytes] = {}
    loader = _source._FreshSourceLoader
    read = loader.get_data

    def get_data(self: Any, path: str) -> bytes:
        data = sources[path] if path in sources else read(self, path)
        if path.endswith(".py"):
            compiled[path] = data
        return data

    # This process imports one plugin, once: its loader reads through
    # get_data above for the time of the import only.
    loader.get_data = get_data  # type: ignore[method-assign]
    try:
        return _source.import_plugin(source), compiled
    finally:
        loader.get_data = read  # type: ignore[method-assign]


def _request(op: str, value: Any) -> str:
    """
    How a request of the plugin to the manager is named in an error:
    C{api.call('other', 'event')}, C{api.emit('event')}, C{api.stop}.
    """
    if op == "call":
        return f"api.call({value[0]!r}, {value[1]!r})"
    if op == "emit":
        return f"api.emit({value[0]!r})"
    return f"api.{op}"


def _log_record(event: Dict[str, Any]) -> Dict[str, Any]:
    """
    What of a log event travels: its namespace, level, format, the fields
    that are plain values (others as their repr) and a failure's traceback.
    """
    fields: Dict[str, Any] = {}
    for key, value in event.items():
        if key.startswith("log_") or not isinstance(key, str):
            continue
        if isinstance(value, (str, int, float, bool, type(None))):
            fields[key] = value
        else:
            try:
                fields[key] = repr(value)
            except BaseException:
                fields[key] = "<unrepresentable>"
    failure = event.get("log_failure")
    return {
        "namespace": str(event.get("log_namespace", "")),
        "level": event["log_level"].name,
        "format": event.get("log_format"),
        "fields": fields,
        "failure": encode_failure(failure) if isinstance(failure, Failure) else None,
    }


def _leave_process_group() -> None:
    """
    Become the leader of a process group of this process alone (signals a
    terminal sends to its foreground group no longer reach it).
    """
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # a session leader already, or not permitted: stays where it is


def _die_with_parent(parent: int) -> None:
    """
    Have the kernel kill this process when its parent dies (Linux), and exit
    now if the parent is gone already.
    """
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except BaseException:
        pass  # not Linux: the closing socket still ends the worker
    if parent and os.getppid() != parent:
        os._exit(1)


def main(fd: int = 3) -> None:
    """
    Run a worker on the channel at file descriptor C{fd}.

    The worker leaves its manager's process group first: a Ctrl-C in the
    terminal (SIGINT to the foreground group), or a SIGHUP or SIGTSTP from
    it, reaches the manager only, whose staged shutdown then ends its
    plugins in order (their C{shutdown()} and state hand-off included).
    The closing socket and C{PR_SET_PDEATHSIG} still end the worker with
    its manager.
    """
    _leave_process_group()
    _die_with_parent(int(os.environ.get("PLUGMGR_PARENT_PID", "0")))
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False, discardBuffer=True)

    def lost() -> None:
        if reactor.running:
            reactor.stop()

    protocol = WorkerProtocol(lost, reactor)
    Stream(socket.socket(fileno=fd), protocol, reactor)
    reactor.callWhenRunning(protocol.notify, "ready", None)
    reactor.run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
