"""
The records of the plugins a manager has loaded (or is loading): one
L{Record} per name, their order of loading, and who requires whom.

Plain data: nothing here touches the reactor, imports code or calls a
plugin.
"""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Set, Tuple

import attr
from twisted.internet.defer import Deferred

from ._deferreds import Shared, pass_result
from ._errors import NoSuchPlugin
from ._events import safe_str
from ._instance import Version, attribute
from ._lifecycle import Lifecycle, PluginState
from ._policy import RestartWindow

__all__ = ["PluginInfo", "Record", "Registry", "Message", "CallCounts", "HANDLER_BUCKETS"]

#: The upper bounds, in seconds, of the buckets handler call times are
#: counted in while metrics are on (a last bucket, unbounded, follows).
HANDLER_BUCKETS: Tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)

#: A message held for a plugin: (event, args, kw, the caller's Deferred or
#: None for a post).
Message = Tuple[str, tuple, dict, Optional["Deferred[Any]"]]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PluginInfo:
    """
    One row of the plugin table.

    @ivar name: the name the plugin was loaded under (never what it claims).
    @ivar longname: its one-line description.
    @ivar license: its license.
    @ivar version: its version.
    @ivar author: its author.
    @ivar module: the name of its module in C{sys.modules}.
    @ivar state: its L{PluginState}.
    @ivar loaded_at: the reactor time it was loaded at.
    @ivar reloads: how many times it was reloaded.
    @ivar source: the path of its module file.
    @ivar calls: how many handler calls it served.
    @ivar busy_time: seconds spent in its handlers, in all.
    @ivar longest_call: the longest time one handler call took, in seconds.
    @ivar events: the events its handlers are called for now (empty while
        it is not running), sorted.
    @ivar restarts: how many times its supervisor restarted it since it was
        loaded (or reset).
    @ivar last_failure: its last failure, in one line, or L{None}.
    @ivar last_reload_error: why its last reload failed, in one line, or
        L{None} (cleared by a reload that succeeds).
    @ivar last_reload_error_at: the reactor time of that failure, or L{None}.
    @ivar isolated: whether it runs in a worker process of its own.
    @ivar pid: the process id of its worker (isolated), or L{None}.
    """

    name: str
    longname: Optional[str]
    license: Optional[str]
    version: Optional[str]
    author: Optional[str]
    module: Optional[str]
    state: PluginState
    loaded_at: float
    reloads: int = 0
    source: Optional[str] = None
    calls: int = 0
    busy_time: float = 0.0
    longest_call: float = 0.0
    events: Tuple[str, ...] = ()
    restarts: int = 0
    last_failure: Optional[str] = None
    last_reload_error: Optional[str] = None
    last_reload_error_at: Optional[float] = None
    isolated: bool = False
    pid: Optional[int] = None


@attr.s(slots=True, auto_attribs=True, eq=False)
class CallCounts:
    """
    What is counted of one plugin's handler calls while metrics are on.
    Only what the record's own counters cannot say is counted per call
    (and the calls per event, in L{Record.event_calls}): the time spent is
    its C{busy_time} less what was spent while metrics were off, and the
    calls of the first bucket are all the calls less those of the others.

    @ivar buckets: calls per bucket of L{HANDLER_BUCKETS} (not cumulative),
        the last one for the calls longer than every bound; the first is
        not counted (see L{PluginMetrics}).
    @ivar errors: handler calls that raised or whose Deferred failed.
    @ivar offset: busy time spent while metrics were off.
    @ivar paused_at: the busy time when metrics were turned off, or
        L{None} while they are on.
    """

    buckets: List[int] = attr.ib(factory=lambda: [0] * (len(HANDLER_BUCKETS) + 1))
    errors: int = 0
    offset: float = 0.0
    paused_at: Optional[float] = 0.0

    def resume(self, busy: float) -> None:
        """
        Metrics are on again; C{busy} is the record's busy time now.
        """
        if self.paused_at is not None:
            self.offset += busy - self.paused_at
            self.paused_at = None

    def pause(self, busy: float) -> None:
        """
        Metrics are off; C{busy} is the record's busy time now.
        """
        if self.paused_at is None:
            self.paused_at = busy

    def seconds(self, busy: float) -> float:
        """
        The time the counted calls took, C{busy} being the busy time now.
        """
        return max(0.0, (busy if self.paused_at is None else self.paused_at) - self.offset)

    def histogram(self, counted: int) -> Tuple[int, ...]:
        """
        The calls per bucket (not cumulative), the first one included, for
        C{counted} calls in all.
        """
        rest = self.buckets[1:]
        return (max(0, counted - sum(rest)),) + tuple(rest)


@attr.s(auto_attribs=True, eq=False, repr=False)
class Record:
    """
    Everything a manager knows of one loaded plugin. Private: the plugin
    table is the public view.

    @ivar version: the version serving (or being loaded), once imported.
    @ivar displaced: the modules its first import took aside, put back when
        it goes.
    @ivar inbox: messages held until it runs.
    @ivar waiting: answers still waiting on a handler's Deferred.
    @ivar stop: the outcome of its stop, once its stop has begun.
    @ivar starting: the version being constructed and started in its place
        (by a reload or a restart), while that is under way.
    @ivar counts: its handler calls as counted while metrics are on.
    @ivar calls: its handler calls while metrics were off.
    @ivar event_calls: event -> its handler calls while metrics were on
        (on the record itself: read on every counted call).
    """

    name: str
    sequence: int
    lifecycle: Lifecycle
    data: Any
    loaded_at: float
    version: Optional[Version] = None
    starting: Optional[Version] = None
    displaced: Dict[str, Any] = attr.ib(factory=dict)
    inbox: Deque[Message] = attr.ib(factory=collections.deque)
    drain_call: Any = None
    waiting: Set[Deferred[Any]] = attr.ib(factory=set)
    settle_waiters: List[Deferred[Any]] = attr.ib(factory=list)
    start_waiters: List[Deferred[Any]] = attr.ib(factory=list)
    stop: Optional[Shared] = None
    policy: Dict[str, Any] = attr.ib(factory=dict)  # load/config-level policy keys
    isolation: Dict[str, Any] = attr.ib(factory=dict)  # load/config-level isolation options
    window: RestartWindow = attr.ib(factory=RestartWindow)
    restarts: int = 0
    last_failure: Optional[str] = None
    last_reload_error: Optional[str] = None
    last_reload_error_at: Optional[float] = None
    reloads: int = 0
    calls: int = 0
    busy_time: float = 0.0
    longest_call: float = 0.0
    counts: CallCounts = attr.ib(factory=CallCounts)
    event_calls: Dict[str, int] = attr.ib(factory=dict)

    @property
    def call_count(self) -> int:
        """
        Its handler calls: those of C{calls} (metrics off) and of
        C{event_calls} (metrics on), each call in one of them.
        """
        return self.calls + sum(self.event_calls.values())

    @property
    def state(self) -> PluginState:
        """
        Its L{PluginState}.
        """
        return self.lifecycle.state

    @property
    def instance(self) -> Any:
        """
        The instance serving, or L{None}.
        """
        return self.version.instance if self.version is not None else None

    @property
    def requires(self) -> Tuple[str, ...]:
        """
        The names of the plugins its version requires.
        """
        return self.version.requires if self.version is not None else ()

    def info(self, events: Iterable[str] = ()) -> PluginInfo:
        """
        Its row of the plugin table, with the C{events} it handles now.
        """
        version = self.version
        source = version.imported.source if version is not None else None
        meta = None
        if version is not None:
            meta = version.instance if version.instance is not None else version.cls
        return PluginInfo(
            name=self.name,
            longname=safe_str(attribute(meta, "longname")),
            license=safe_str(attribute(meta, "license")),
            version=safe_str(attribute(meta, "version")),
            author=safe_str(attribute(meta, "author")),
            module=source.module_name if source else None,
            state=self.state,
            loaded_at=self.loaded_at,
            reloads=self.reloads,
            source=source.origin if source else None,
            calls=self.call_count,
            busy_time=self.busy_time,
            longest_call=self.longest_call,
            events=tuple(sorted(events)),
            restarts=self.restarts,
            last_failure=self.last_failure,
            last_reload_error=self.last_reload_error,
            last_reload_error_at=self.last_reload_error_at,
            isolated=version.isolated if version is not None else False,
            pid=version.pid if version is not None else None,
        )

    def when_settled(self) -> Deferred[Any]:
        """
        A Deferred firing with its state once no operation is under way.
        """
        d: Deferred[Any] = Deferred()
        self.settle_waiters.append(d)
        return d

    def settled(self) -> None:
        """
        Fire every L{when_settled} waiter.
        """
        waiters, self.settle_waiters = self.settle_waiters, []
        for waiter in waiters:
            waiter.callback(self.state)

    def when_started(self) -> Deferred[Any]:
        """
        A Deferred firing with the instance once it has started (for a
        plugin loaded before its manager started).
        """
        d: Deferred[Any] = Deferred()
        self.start_waiters.append(d)
        return d

    def started(self, outcome: Any) -> None:
        """
        Give C{outcome} (the instance, or a Failure) to every
        L{when_started} waiter.
        """
        waiters, self.start_waiters = self.start_waiters, []
        for waiter in waiters:
            pass_result(waiter, outcome)

    def __repr__(self) -> str:
        return f"<Record {self.name!r} {self.state.value}>"


class Registry:
    """
    The records of one manager, by name.
    """

    def __init__(self) -> None:
        #: name -> L{Record}; read directly on the hot paths of delivery.
        self.records: Dict[str, Record] = {}
        self._sequence = 0

    def add(self, name: str, data: Any, loaded_at: float) -> Record:
        """
        A new record for C{name}, in the state C{loading}, after every
        record there is.
        """
        self._sequence += 1
        record = Record(name, self._sequence, Lifecycle(name), data, loaded_at)
        self.records[name] = record
        return record

    def remove(self, record: Record) -> None:
        """
        Forget C{record}, if it is still the one under its name.
        """
        if self.records.get(record.name) is record:
            del self.records[record.name]

    def get(self, name: Any) -> Optional[Record]:
        """
        The record of C{name} (any value: a bad name has none), or L{None}.
        """
        return self.records.get(name) if isinstance(name, str) else None

    def current(self, record: Record) -> bool:
        """
        Whether C{record} is still the one under its name.
        """
        return self.records.get(record.name) is record

    def named(self, name: Any) -> Record:
        """
        The record of C{name}, whatever its state, if it is loaded (not
        still loading).

        @raise NoSuchPlugin: otherwise.
        """
        record = self.get(name)
        if record is None or record.lifecycle.loading:
            raise NoSuchPlugin(name, "not loaded")
        return record

    def addressable(self, name: Any) -> Record:
        """
        The record of C{name} if posts and calls to it are accepted.

        @raise NoSuchPlugin: otherwise.
        """
        record = self.get(name)
        if record is None or not record.lifecycle.addressable:
            raise NoSuchPlugin(name, "not loaded")
        return record

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self.records.values()))

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def in_order(self) -> List[Record]:
        """
        The records in the order they were loaded.
        """
        return sorted(self.records.values(), key=lambda r: r.sequence)

    def dependents(self, name: str) -> List[str]:
        """
        The plugins that require C{name}, directly or not, dependents first.
        A plugin still loading is not a dependent yet: it fails to start if
        what it requires is gone by then.
        """
        found: List[str] = []

        def visit(target: str) -> None:
            for record in self.records.values():
                if record.lifecycle.loading:
                    continue
                if target in record.requires and record.name not in found:
                    visit(record.name)
                    if record.name not in found:
                        found.append(record.name)

        visit(name)
        return found

    def next_stage(self) -> List[Record]:
        """
        The records that may stop now in a shutdown: those no other record
        requires (or all of them, when requirements form a cycle).
        """
        records = list(self.records.values())
        required = {r for record in records for r in record.requires}
        return [record for record in records if record.name not in required] or records
