"""
An isolated plugin, as its manager sees it: an L{IsolatedVersion} whose
class is a L{PluginProxy} subclass made for that import, and whose instance
-- a child service of the manager like any plugin's -- forwards the
plugin's start, state, handlers and shutdown to its worker process, and
what the worker sends back (posts, calls, emits, reports, logs) to the
manager.

The manager's loading, delivery, reload, transaction, supervision and table
code paths stay the same: they see a version whose handler table, metadata,
requirements and restart policy attributes the worker reported after it
imported the class.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import _source
from .._deferreds import Shared
from .._dispatch import HandlerSpec
from .._errors import CallTimedOut, InvalidMetadata, PluginCrashed, PluginError, StartTimedOut
from .._instance import NO_STATE, Version
from .._interfaces import IIsolated
from .._lifecycle import DEFAULT_START_DEADLINE, ShutdownMode
from .._plugin import Plugin
from .._policy import POLICY_KEYS
from ._options import DEFAULT_CALL_DEADLINE, Isolation
from ._process import Exit, WorkerGone, WorkerPool
from ._wire import NO_STATE_MARK, NotImportedHere, decode_failure, dumps, read

__all__ = ["Code", "PluginProxy", "IsolatedVersion", "make_class"]


class _Call:
    """
    One call in flight to an isolated plugin's handler.

    @ivar attribute: the handler's method name.
    @ivar seconds: its deadline.
    @ivar started: the reactor time its deadline runs from, or L{None}
        while the call sent before it is in flight (the worker runs it
        after that one).
    @ivar successor: the call sent after it, if any.
    """

    __slots__ = ("attribute", "seconds", "started", "successor")

    def __init__(self, attribute: str, seconds: float) -> None:
        self.attribute = attribute
        self.seconds = seconds
        self.started: Optional[float] = None
        self.successor: Optional[_Call] = None


class Code:
    """
    One import of an isolated plugin: where its source is, how it is
    isolated, and what its worker reported (shared by the instances of that
    import: a restart constructs another).

    @ivar report: what the last worker reported after importing the class
        (handler specs, metadata, callables, policy...), or L{None}.
    """

    def __init__(self, name: str, source: _source.PluginSource, isolation: Isolation,
                 pool: WorkerPool, reactor: Any, hashes: Dict[str, str],
                 static_requires: Tuple[str, ...]) -> None:
        self.name = name
        self.source = source
        self.isolation = isolation
        self.pool = pool
        self.reactor = reactor
        self.hashes = hashes
        self.static_requires = static_requires
        self.report: Optional[Dict[str, Any]] = None
        #: path -> the bytes the first worker compiled: a restart or a
        #: rollback runs that code again, whatever is on disk by then.
        self.sources: Dict[str, bytes] = {}
        self.handlers: Dict[str, str] = {}
        self.specs: Tuple[HandlerSpec, ...] = ()

    def call_deadline(self) -> float:
        """
        The seconds a handler call may take: as given at load (or by the
        config, or a reload), else as its class says, else
        L{DEFAULT_CALL_DEADLINE}.
        """
        if self.isolation.call_deadline is not None:
            return self.isolation.call_deadline
        declared = (self.report or {}).get("meta", {}).get("call_deadline")
        if isinstance(declared, (int, float)) and not isinstance(declared, bool) and declared > 0:
            return float(declared)
        return DEFAULT_CALL_DEADLINE


@implementer(IIsolated)
class PluginProxy(Plugin):
    """
    The manager's stand-in for an isolated plugin's instance (see the
    module's docstring). Constructed as C{cls(api, data)} like any plugin:
    it takes a worker (the warm spare when there is one) and has it import
    and construct the plugin at once.
    """

    _code: Code
    isolate = True

    def __init__(self, api: Any, data: Any = None) -> None:
        super().__init__(api, data)
        code = self._code
        source = code.source
        try:
            dumps(data)
        except BaseException as e:
            raise PluginError(code.name, f"its data cannot be pickled ({e!r})") from None
        if not code.pool.usable():
            raise PluginError(code.name, "an isolated plugin needs a reactor that runs "
                                         "processes (IReactorProcess)")
        self._worker = worker = code.pool.take()
        self._logger = Logger(namespace=f"twisted_plugmgr.plugins.{code.name}")
        worker.log = self._logger
        worker.plugin = code.name
        worker.on_request = self._asked
        worker.on_notify = self._told
        worker.on_exit = self._crashed
        self._loaded = Shared()
        #: the calls in flight, in the order they were sent.
        self._inflight: Dict[Deferred[Any], _Call] = {}
        #: the call sent last, while in flight.
        self._last: Optional[_Call] = None
        self._expired: Dict[Deferred[Any], CallTimedOut] = {}
        self._sweep: Optional[IDelayedCall] = None
        load = ((code.name, source.module_name, source.origin, source.is_package, source.root),
                [p for p in sys.path if isinstance(p, str)], dict(code.isolation.limits), data,
                code.sources)
        # The import and constructor in the worker get the start deadline:
        # a reload waits for them before it stops the old version.
        seconds = float(getattr(api.manager, "start_deadline", DEFAULT_START_DEADLINE))
        self._load_timer: Optional[IDelayedCall] = code.reactor.callLater(
            seconds, self._load_timed_out, seconds)
        worker.request("load", load).addBoth(self._load_answered)

    def _load_timed_out(self, seconds: float) -> None:
        self._load_timer = None
        self._worker.kill()
        self._worker.ended().addCallback(lambda _: self._code.pool.released())
        self._loaded.fire(Failure(StartTimedOut(self._code.name, seconds)))

    # -- what the version asks -------------------------------------------

    def _ready(self) -> Deferred[Any]:
        """
        A Deferred firing once the worker imported and constructed the
        plugin; failing with why it did not.
        """
        return self._loaded.wait()

    def _end_worker(self, until: Optional[float]) -> Deferred[Any]:
        """
        End the worker: SIGTERM, then SIGKILL at the reactor time C{until}.
        """
        for timer in (self._sweep, self._load_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._sweep = self._load_timer = None
        d = self._worker.end(until)
        d.addCallback(lambda _: self._code.pool.released())
        return d

    def _load_answered(self, outcome: Any) -> None:
        code = self._code
        if self._load_timer is None:
            return  # too late: it timed out
        if self._load_timer.active():
            self._load_timer.cancel()
        self._load_timer = None
        if isinstance(outcome, Failure):
            self._loaded.fire(self._gone(outcome))
            return
        ok, value = outcome
        if not ok:
            self._loaded.fire(decode_failure(code.name, value))
            return
        requires = tuple(value["meta"].get("requires") or ())
        if requires != code.static_requires:
            self._loaded.fire(Failure(InvalidMetadata(code.name, [
                f"an isolated plugin's requires must be a literal in its class body "
                f"(read {code.static_requires!r}, its class says {requires!r})"])))
            return
        code.report = value
        if not code.sources:  # the first worker of this version: what it compiled
            code.sources = dict(value["sources"])
        code.specs = tuple(value["specs"])
        code.handlers = {spec.event: spec.attribute for spec in code.specs}
        code.hashes.update(value["hashes"])
        cls = type(self)
        for key, item in value["meta"].items():
            if key not in ("name", "requires"):
                setattr(cls, key, item)
        for key in POLICY_KEYS:
            if key in value["policy"]:
                setattr(cls, key, value["policy"][key])
        self._loaded.fire(value)

    def _gone(self, failure: Failure) -> Failure:
        if failure.check(WorkerGone):
            code, sig = failure.value.exit
            return Failure(PluginCrashed(self._code.name, code, sig))
        return failure

    def _ask(self, op: str, value: Any, what: str) -> Deferred[Any]:
        name = self._code.name
        try:
            d = self._worker.request(op, value)
        except BaseException as e:
            return fail(PluginError(name, f"{what}: its arguments cannot be pickled ({e!r})"))

        def answered(outcome: Tuple[bool, Any]) -> Any:
            ok, result = outcome
            return result if ok else decode_failure(name, result)

        def unreadable(failure: Failure) -> Failure:
            if not failure.check(NotImportedHere):
                return failure  # as it is: trap would raise it again, with our frames
            return Failure(PluginError(name, f"{what}: its answer cannot be read in the "
                                             f"manager: {failure.value}"))

        return d.addCallbacks(answered, self._gone).addErrback(unreadable)

    # -- the service -------------------------------------------------------

    def startService(self) -> Deferred[Any]:
        """
        Once the worker has constructed the plugin, its C{startService}.
        """
        self.running = 1
        return self._loaded.wait().addCallback(lambda _: self._ask("start", None, "startService"))

    def set_state(self, state: Any) -> Deferred[Any]:
        """
        The plugin's C{set_state(state)}, if it has one (the state pickled).
        """
        def given(report: Dict[str, Any]) -> Any:
            if "set_state" not in report["callables"]:
                return None
            return self._ask("set_state", state, "set_state")

        return self._loaded.wait().addCallback(given)

    def get_state(self) -> Deferred[Any]:
        """
        What the plugin's C{get_state()} returns (L{NO_STATE} without one).
        """
        return self._ask("get_state", None, "get_state").addCallback(
            lambda state: NO_STATE if state == NO_STATE_MARK else state)

    def migrate_state(self, old_version: Any, state: Any) -> Any:
        """
        The plugin's C{migrate_state(old_version, state)}; C{state} as it is
        without one.
        """
        report = self._code.report
        if report is None or "migrate_state" not in report["callables"]:
            return state
        return self._ask("migrate_state", (old_version, state), "migrate_state")

    def shutdown(self, mode: ShutdownMode, reason: str) -> Any:
        """
        The plugin's C{shutdown(mode, reason)} in its worker; a worker that
        is gone has nothing to shut down (C{reason} is the quit message).
        """
        if self._worker.exit is not None or self._worker.ending or self._code.report is None:
            return reason or f"{self._code.name} unloaded"
        return self._ask("shutdown", (ShutdownMode.coerce(mode).value, reason), "shutdown")

    # -- handlers ------------------------------------------------------------

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        code = type(self)._code
        report = code.report
        if report is None or not (attribute in code.handlers.values() or (
                attribute == "default" and "default" in report["callables"])):
            raise AttributeError(attribute)
        def method(*args: Any, **kw: Any) -> Deferred[Any]:
            return self._invoke(attribute, args, kw)

        method.__name__ = attribute
        # Kept on the instance: the next lookup finds it without this method
        # (a handler reported once stays: another import is another class).
        self.__dict__[attribute] = method
        return method

    def _invoke(self, attribute: str, args: tuple, kw: dict) -> Deferred[Any]:
        code, worker = self._code, self._worker
        if worker.exit is not None:
            return fail(PluginCrashed(code.name, *worker.exit))
        try:
            pending = worker.send("call", (attribute, args, kw))
        except BaseException as e:
            return fail(PluginError(code.name, f"handler {attribute}: its arguments cannot "
                                               f"be pickled ({e!r})"))
        # The worker runs its requests one after the other: a call's deadline
        # runs from when it was sent or, when the call sent before it is
        # still in flight, from that one's answer (not the time it waited
        # in the worker's queue).
        seconds = self._code.call_deadline()
        previous = self._last
        call = _Call(attribute, seconds)
        if previous is None:
            call.started = code.reactor.seconds()
        else:
            previous.successor = call
        self._last = self._inflight[pending] = call
        if self._sweep is None:
            self._sweep = code.reactor.callLater(seconds, self._check_deadlines)
        return pending.addCallbacks(self._answered, self._call_failed, callbackArgs=(pending,),
                                    errbackArgs=(pending,))

    def _done(self, pending: Deferred[Any]) -> None:
        """
        The call C{pending} answered (or failed): the one sent after it, if
        it waited, starts its deadline now.
        """
        call = self._inflight.pop(pending, None)
        if call is None:
            return
        successor = call.successor
        if successor is not None:
            if successor.started is None:
                successor.started = self._code.reactor.seconds()
        elif self._last is call:
            self._last = None

    def _answered(self, answer: bytes, pending: Deferred[Any]) -> Any:
        call = self._inflight.get(pending)
        self._done(pending)
        try:
            ok, value = read(answer)
        except NotImportedHere as e:
            handler = call.attribute if call is not None else "?"
            return Failure(PluginError(self._code.name, f"handler {handler}: its answer "
                                                        f"cannot be read in the manager: {e}"))
        if not ok:
            return decode_failure(self._code.name, value)
        elapsed, result = value
        charge = getattr(self.api.host, "charge", None)  # the time spent in the worker
        if charge is not None:
            charge(self._code.name, self.api, elapsed)
        return result

    def _call_failed(self, failure: Failure, pending: Deferred[Any]) -> Any:
        self._done(pending)
        expired = self._expired.pop(pending, None)
        if expired is not None:
            return Failure(expired)
        lost = self._worker.lost(failure)  # how the worker ended, once it has
        if isinstance(lost, Deferred):
            return lost.addErrback(self._gone)
        return self._gone(lost)

    def _check_deadlines(self) -> None:
        self._sweep = None
        reactor = self._code.reactor
        now = reactor.seconds()
        expired = []
        soonest: Optional[float] = None
        for pending, call in self._inflight.items():
            if call.started is None:
                continue  # still behind the call sent before it
            deadline = call.started + call.seconds
            if deadline <= now:
                expired.append((pending, call.attribute, call.seconds))
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if expired:
            self._timed_out(expired)
        elif soonest is not None:
            self._sweep = reactor.callLater(soonest - now, self._check_deadlines)

    def _timed_out(self, expired: List[Tuple[Deferred[Any], str, float]]) -> None:
        """
        Calls passed their deadline: the worker is killed, they fail with
        L{CallTimedOut} (the other calls in flight with L{PluginCrashed}),
        and the plugin fails (C{cause="timeout"}).
        """
        self._worker.kill()
        self._worker.ended().addCallback(lambda _: self._code.pool.released())
        for pending, attribute, seconds in expired:
            self._expired[pending] = CallTimedOut(self._code.name, attribute, seconds)
            pending.cancel()
        _, attribute, seconds = expired[0]
        self._fail(Failure(CallTimedOut(self._code.name, attribute, seconds)), "timeout")

    def _crashed(self, status: Exit) -> None:
        code, sig = status
        self._code.pool.released()
        self._fail(Failure(PluginCrashed(self._code.name, code, sig)), "crash")

    def _fail(self, failure: Failure, cause: str) -> None:
        self.api.host.fail_plugin(self._code.name, self.api, failure, cause)

    # -- what the worker sends ---------------------------------------------

    def _asked(self, op: str, value: Any) -> Any:
        api = self.api
        if op == "call":
            plugin, event, args, kw = value
            return api.call(plugin, event, *args, **kw)
        if op == "emit":
            event, args, kw = value
            return api.emit(event, *args, **kw)
        if op == "stop":
            reason, mode = value
            return api.stop(reason, mode)
        raise PluginError(self._code.name, f"unknown request {op!r} from its worker")

    def _told(self, op: str, value: Any) -> None:
        api, name = self.api, self._code.name
        host = api.host
        if op == "post":
            plugin, event, args, kw = value
            try:
                api.post(plugin, event, *args, **kw)
            except PluginError:
                host.report_error(name, Failure())
        elif op == "error":
            host.report_error(name, decode_failure(name, value))
        elif op == "warning":
            host.report_warning(name, str(value))
        elif op == "unreadable":  # a message (a post, say) the manager cannot read
            host.report_error(name, Failure(PluginError(
                name, f"a message of its worker cannot be read in the manager: {value}")))
        elif op == "timer_error":
            encoded, report = value
            host.timer_error(name, api, decode_failure(name, encoded), report)
        elif op == "fail":
            encoded, cause = value
            host.fail_plugin(name, api, decode_failure(name, encoded), str(cause))
        elif op == "log":
            self._relog(value)

    def _relog(self, record: Mapping[str, Any]) -> None:
        """
        Emit a log event of the worker under the plugin's namespace (events
        of other namespaces under C{<plugin namespace>.worker}).
        """
        name = self._code.name
        base = f"twisted_plugmgr.plugins.{name}"
        namespace = str(record.get("namespace", ""))
        fields = {k: v for k, v in dict(record.get("fields", {})).items()
                  if k not in ("format", "level")}
        fields["worker_pid"] = self._worker.pid
        if not namespace.startswith(base):
            fields["worker_namespace"] = namespace
            namespace = base + ".worker"
        if record.get("failure") is not None:
            fields["log_failure"] = decode_failure(name, record["failure"])
        try:
            level = LogLevel.levelWithName(str(record.get("level")))
        except Exception:
            level = LogLevel.info
        Logger(namespace=namespace).emit(level, record.get("format"), **fields)


class IsolatedVersion(Version):
    """
    A version of an isolated plugin: its class is a L{PluginProxy}
    subclass; its handler table is what its worker reported.
    """

    isolated = True

    @property
    def specs(self) -> Tuple[HandlerSpec, ...]:
        """The handlers its worker reported (none before it did)."""
        return self.cls._code.specs  # type: ignore[attr-defined]

    @specs.setter
    def specs(self, value: Tuple[HandlerSpec, ...]) -> None:
        pass  # reported by the worker

    @property
    def handlers(self) -> Dict[str, str]:
        """Event -> handler method name, as its worker reported."""
        return self.cls._code.handlers  # type: ignore[attr-defined]

    @handlers.setter
    def handlers(self, value: Dict[str, str]) -> None:
        pass  # reported by the worker

    @property
    def pid(self) -> Optional[int]:
        """The process id of its worker, once constructed."""
        return self.instance._worker.pid if self.instance is not None else None

    @property
    def call_deadline(self) -> Optional[float]:
        """The seconds a call to one of its handlers may take."""
        return self.cls._code.call_deadline()  # type: ignore[attr-defined]

    @property
    def limits(self) -> Dict[str, int]:
        """The resource limits its worker runs under."""
        return dict(self.cls._code.isolation.limits)  # type: ignore[attr-defined]

    def ready(self) -> Deferred[Any]:
        """Fires once its worker imported and constructed the plugin."""
        return self.instance._ready() if self.instance is not None else succeed(None)

    def end(self, until: Optional[float] = None) -> Deferred[Any]:
        """End its worker (SIGTERM, then SIGKILL at C{until})."""
        if self.instance is None:
            return succeed(None)
        return self.instance._end_worker(until)

    def purge(self) -> None:
        """Nothing of its code is in this process."""

    def retire_to(self, oldcode: Any, name: str) -> None:
        """Its code lived in its worker, which is gone: nothing to watch."""

    def fresh(self) -> IsolatedVersion:
        """The same import, not constructed yet: a new worker at construct."""
        return IsolatedVersion(self.imported, self.cls, ())


def make_class(name: str, code: Code) -> type:
    """
    The L{PluginProxy} subclass of one import of plugin C{name}.
    """
    return type(f"Isolated_{name}", (PluginProxy,), {
        "_code": code, "name": name, "requires": code.static_requires,
        "__module__": __name__, "__doc__": f"The isolated plugin {name!r}, in its worker."})


def placeholder(source: _source.PluginSource, hashes: Dict[str, str]) -> _source.ImportedPlugin:
    """
    What stands for the import of an isolated plugin in the manager: its
    source, an empty module never put in C{sys.modules}, its hashes (once
    its worker reported them).
    """
    return _source.ImportedPlugin(source, types.ModuleType(source.module_name), {}, hashes)
