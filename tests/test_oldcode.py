"""
OldCode (Erlang's check_old_code): a plugin version that went is looked at
again after a grace period, and a warning names its module or class still
alive and, where that is cheap to find, what holds it. Plugin modules are
real files in a temporary directory imported with importlib (or
types.ModuleType with a class defined in them); the grace period runs on a
task.Clock.

Benchmark note (no timed assertions here). The check runs off the dispatch
path: L{OldCode.retired} only takes weak references and schedules (or
shares) one reactor callLater C{grace} seconds later; that call runs one
C{gc.collect()} (none if every old module and class is already gone) and,
only when old code is still alive, at most C{depth} (6) scans of the heap,
C{gc.get_referrers} on at most 128 objects, then on at most C{width} (64).
Measured once by hand: on a 790,000-object heap with 50,000 instances of
the old class held, the whole check took about 0.4 s (0.02 to 0.09 s a
scan); with nothing left alive, one collection, 0.03 s on a
235,000-object heap. The tests below count the scans instead of timing
them.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import re
import sys
import types
import weakref
from typing import Any, List, Tuple

import pytest
from twisted.internet.task import Clock, LoopingCall

from twisted_plugmgr._events import Listeners
from twisted_plugmgr._oldcode import MAX_SENTENCE, OldCode
from twisted_plugmgr.testing import write_plugin

GRACE = 30.0

_names = itertools.count()

BODY = """
@handler()
def greet(self, who):
    return ("hello", who)

def on_event(self, event):
    return event
"""

HEADER = """
def tick():
    return "tick"
"""


class Warnings:
    """
    What an OldCode warned about, as (plugin name, sentence) pairs.
    """

    def __init__(self) -> None:
        self.seen: List[Tuple[str, str]] = []

    def __call__(self, name: str, sentence: str) -> None:
        self.seen.append((name, sentence))

    @property
    def sentences(self) -> List[str]:
        return [sentence for _, sentence in self.seen]


@pytest.fixture
def clock():
    clock = Clock()
    yield clock
    assert clock.getDelayedCalls() == [], "a check was left on the clock"


@pytest.fixture
def warnings() -> Warnings:
    return Warnings()


@pytest.fixture
def oldcode(clock, warnings) -> OldCode:
    return OldCode(clock, warnings, GRACE)


def private_name(name: str = "hello") -> str:
    return f"_plugmgr_test{next(_names)}__{name}"


def import_plugin(tmp_path, name: str = "hello", version: str = "1.0") -> types.ModuleType:
    """
    Write plugin C{name} into C{tmp_path} and import it under a private
    name, as the manager does; like a plugin that went, it is not left in
    C{sys.modules}.
    """
    path = write_plugin(tmp_path, name, BODY, header=HEADER, version=version)
    spec = importlib.util.spec_from_file_location(private_name(name), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic(source: str = "", **namespace: Any) -> types.ModuleType:
    """
    A module made with types.ModuleType: class C{Hello} (version 2.0),
    function C{tick}, and C{source}, run with C{namespace}.
    """
    module = types.ModuleType(private_name())
    module.__dict__.update(namespace)
    exec(
        "class Hello(*BASES):\n"
        "    version = '2.0'\n"
        "    def on_event(self, event):\n"
        "        return super().__init__\n"
        "def tick():\n"
        "    return Hello\n" + source,
        module.__dict__,
    )
    return module


def synthetic_plain(**namespace: Any) -> types.ModuleType:
    return synthetic(BASES=(), **namespace)


def retire(oldcode: OldCode, module: types.ModuleType, name: str = "hello") -> None:
    cls = module.P_hello if hasattr(module, "P_hello") else module.Hello
    oldcode.retired(name, module, cls, {module.__name__: module})


def test_a_delayed_call_on_the_global_reactor(tmp_path, oldcode, clock, warnings):
    """
    A delayed call on the global reactor holding a function of the old
    module is named, with when it is due and what it calls.
    """
    from twisted.internet import reactor

    module = import_plugin(tmp_path)
    call = reactor.callLater(100, module.tick)
    try:
        retire(oldcode, module)
        del module
        clock.advance(GRACE)
        [(name, sentence)] = warnings.seen
        assert name == "hello"
        assert sentence.startswith("old version 1.0 (_plugmgr_test")
        assert "still referenced 30 s after it went" in sentence
        assert re.search(r"by a delayed call on the global reactor, due in (99|100) s, calling tick",
                         sentence), sentence
    finally:
        call.cancel()


def test_a_delayed_call_on_the_managers_reactor(oldcode, clock, warnings):
    """
    A delayed call on the reactor OldCode was given (the manager's) is
    named as such.
    """
    module = synthetic_plain()
    call = clock.callLater(100, module.tick)
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    assert "by a delayed call on the manager's reactor, due in 70 s, calling tick" in (
        warnings.sentences[0])
    call.cancel()


def test_a_looping_call(oldcode, clock, warnings):
    """
    A running LoopingCall of an old function is named as one, with where
    it runs.
    """
    module = synthetic_plain()
    loop = LoopingCall(module.tick)
    loop.clock = clock
    loop.start(100, now=False)
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by a LoopingCall on the manager's reactor, every 100 s, calling tick"), (
        sentence)
    loop.stop()


@pytest.mark.parametrize("registered", [True, False], ids=["in sys.modules", "not in sys.modules"])
def test_another_modules_global(tmp_path, oldcode, clock, warnings, monkeypatch, registered):
    """
    A global of another module holding the old class is named, with the
    module's name.
    """
    other = types.ModuleType("holder_module")
    if registered:
        monkeypatch.setitem(sys.modules, "holder_module", other)
    module = import_plugin(tmp_path)
    other.Saved = module.P_hello
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by module holder_module's global Saved"), sentence


def test_a_listener_holding_a_bound_method(tmp_path, oldcode, clock, warnings):
    """
    A listener list holding a bound method of an old instance is named.
    """
    module = import_plugin(tmp_path)
    listeners = Listeners()
    listeners.register(module.P_hello(None).on_event)
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by a listener registered with a manager (P_hello.on_event)"), sentence
    assert len(listeners) == 1


def test_a_dict_held_by_an_object(oldcode, clock, warnings):
    """
    A dict holding a bound method is named by its owner's type and
    attribute.
    """

    class Handlers:
        def __init__(self) -> None:
            self.table: dict = {}

    holder = Handlers()
    module = synthetic_plain()
    holder.table["greet"] = module.Hello().on_event
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by a Handlers's attribute table['greet']"), sentence


def test_a_class_registration(oldcode, clock, warnings):
    """
    A registry of subclasses on a class that stays (the old class
    registered itself when it was defined) is named.
    """

    class Base:
        registry: List[type] = []

        def __init_subclass__(cls) -> None:
            Base.registry.append(cls)

    module = synthetic(BASES=(Base,))
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.startswith("old version 2.0 (")
    assert sentence.endswith(": by class Base's attribute registry[0]"), sentence
    Base.registry.clear()


def test_a_subclass(oldcode, clock, warnings):
    """
    A class derived from the old class keeps it, and is named.
    """
    module = synthetic_plain()

    class Derived(module.Hello):  # type: ignore[name-defined]
        pass

    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(f": by a subclass Derived (module {__name__})"), sentence
    del Derived


def test_through_a_closure(oldcode, clock, warnings):
    """
    A function holding old code in its closure is named on the way to its
    holder.
    """
    module = synthetic_plain()

    def listener_of(tick: Any) -> Any:
        return lambda event: tick

    listeners = Listeners()
    listeners.register(listener_of(module.tick))
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by a listener registered with a manager (listener_of.<lambda>)"), sentence


def test_no_warning_when_nothing_holds_it(tmp_path, oldcode, clock, warnings):
    """
    Old code that nothing holds is collected, and nothing is said.
    """
    module = import_plugin(tmp_path)
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    assert warnings.seen == []
    assert oldcode.alive("hello") == []


def test_no_warning_for_a_synthetic_module_nothing_holds(oldcode, clock, warnings):
    module = synthetic_plain()
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    assert warnings.seen == []


def test_the_check_is_at_the_end_of_the_grace_period(tmp_path, oldcode, clock, warnings):
    """
    Old code is looked at once its grace period is over, not before.
    """
    module = import_plugin(tmp_path)
    holder = types.ModuleType("holder_module")
    holder.Saved = module.P_hello
    retire(oldcode, module)
    del module
    clock.advance(GRACE - 0.01)
    assert warnings.seen == []
    clock.advance(0.01)
    assert len(warnings.seen) == 1
    clock.advance(GRACE)
    assert len(warnings.seen) == 1  # once


def test_each_version_is_checked_at_its_own_time(oldcode, clock, warnings):
    holder = types.ModuleType("holder_module")
    first, second = synthetic_plain(), synthetic_plain()
    holder.kept = [first.Hello, second.Hello]
    retire(oldcode, first, "one")
    clock.advance(10)
    retire(oldcode, second, "two")
    del first, second
    clock.advance(GRACE - 10)
    assert [name for name, _ in warnings.seen] == ["one"]
    clock.advance(10)
    assert [name for name, _ in warnings.seen] == ["one", "two"]


def test_no_grace_schedules_nothing(clock, warnings):
    """
    Without a grace period nothing is checked, but the versions still
    alive are listed.
    """
    oldcode = OldCode(clock, warnings, None)
    module = synthetic_plain()
    retire(oldcode, module)
    assert clock.getDelayedCalls() == []
    assert len(oldcode.alive("hello")) == 1
    del module


def test_stop_leaves_nothing_on_the_clock(oldcode, clock, warnings):
    """
    stop() cancels the checks to come; a version that goes later is
    checked again.
    """
    first, second = synthetic_plain(), synthetic_plain()
    retire(oldcode, first, "one")
    clock.advance(1)
    retire(oldcode, second, "two")
    oldcode.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(GRACE)
    assert warnings.seen == []
    retire(oldcode, synthetic_plain(), "three")
    assert len(clock.getDelayedCalls()) == 1
    oldcode.stop()
    oldcode.stop()  # twice is once
    assert clock.getDelayedCalls() == []
    del first, second


def test_holds_no_strong_reference(tmp_path, oldcode, clock, warnings):
    """
    OldCode keeps only weak references: the old code goes as soon as
    nothing else holds it, its check still pending.
    """
    module = import_plugin(tmp_path)
    refs = [weakref.ref(module), weakref.ref(module.P_hello), weakref.ref(module.tick)]
    retire(oldcode, module)
    del module
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(GRACE)
    assert warnings.seen == []


def test_holds_no_strong_reference_after_a_search(oldcode, clock, warnings):
    """
    Looking for what holds old code keeps none of it afterwards.
    """
    module = synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.Saved = [module.Hello(), module.tick]
    refs = [weakref.ref(module.Hello), weakref.ref(module.tick)]
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    assert len(warnings.seen) == 1
    assert len(oldcode.alive("hello")) == 1
    del holder.Saved
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
    assert oldcode.alive("hello") == []


def test_alive_lists_the_old_versions_still_alive(oldcode, clock, warnings):
    """
    alive() names each old version still alive: its module, its version,
    how long ago it went.
    """
    held, dropped = synthetic_plain(), synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.Saved = held.Hello
    retire(oldcode, held)
    retire(oldcode, dropped)
    name = held.__name__
    del held, dropped
    clock.advance(5)
    assert oldcode.alive("hello", collect=True) == [f"{name} 2.0, retired 5 s ago"]
    assert oldcode.alive("other") == []
    oldcode.stop()


def test_the_module_already_collected(oldcode, clock, warnings):
    """
    The old module object may be gone while its class lives on: that is
    still old code, and its holder is still found.
    """
    module = synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.Saved = module.Hello
    module_ref = weakref.ref(module)
    retire(oldcode, module)
    del module
    gc.collect()
    assert module_ref() is None
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by module holder_module's global Saved"), sentence


def test_everything_collected_before_the_check(oldcode, clock, warnings):
    module = synthetic_plain()
    retire(oldcode, module)
    del module
    gc.collect()
    assert oldcode.alive("hello") == []
    clock.advance(GRACE)
    assert warnings.seen == []


class Hostile:
    """
    An object whose every method of its own raises.
    """

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError(f"getattribute {name}")

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("__class__")


def test_a_holder_whose_code_raises(oldcode, clock, warnings, logged_failures):
    """
    A holder whose repr, comparison, attribute lookup and __class__ raise is
    named all the same, and nothing is logged.
    """
    module = synthetic_plain()
    hostile = Hostile()
    object.__setattr__(hostile, "kept", module.Hello)
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith(": by a Hostile's attribute kept"), sentence
    assert logged_failures.failures == []


def test_cycles(oldcode, clock, warnings):
    """
    Old code in a cycle with its holder, itself held by a module global.
    """
    module = synthetic_plain()
    holder = types.ModuleType("holder_module")
    ring: List[Any] = []
    instance = module.Hello()
    instance.ring = ring
    ring.extend([ring, instance])
    holder.ring = ring
    del instance
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert "by module holder_module's global ring[1]" in sentence, sentence


def test_a_huge_graph_is_searched_within_bounds(oldcode, clock, warnings, monkeypatch):
    """
    Thousands of old instances and bound methods: the heap is scanned at
    most depth times, each time for a bounded number of objects, and what
    holds them is still named.
    """
    module = synthetic_plain(source="\n".join(f"def f{i}(): pass" for i in range(300)))
    holder = types.ModuleType("holder_module")
    monkeypatch.setitem(sys.modules, "holder_module", holder)
    holder.instances = [module.Hello() for _ in range(20_000)]
    holder.handlers = {i: [holder.instances[i].on_event] for i in range(5_000)}
    scans: List[int] = []
    get_referrers = gc.get_referrers

    def counted(*objects: Any) -> List[Any]:
        scans.append(len(objects))
        return get_referrers(*objects)

    monkeypatch.setattr(gc, "get_referrers", counted)
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    monkeypatch.setattr(gc, "get_referrers", get_referrers)
    assert 0 < len(scans) <= 6 and max(scans) <= 128, scans
    [sentence] = warnings.sentences
    assert "by module holder_module's global instances[" in sentence, sentence
    assert "by module holder_module's global handlers[" in sentence, sentence


def test_the_sentence_is_one_short_line(oldcode, clock, warnings):
    """
    However many holders and however long their names, the warning is one
    line shorter than 200 characters.
    """
    module = synthetic_plain()
    long_name = "a_very_long_attribute_name_" * 10
    holders = [types.ModuleType(f"holder\n{i}_" + "x" * 100) for i in range(5)]
    for holder in holders:
        setattr(holder, long_name, module.Hello)
    retire(oldcode, module, name="hello")
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert len(sentence) <= MAX_SENTENCE < 200 and "\n" not in sentence, sentence


def test_nothing_found_within_the_depth(clock, warnings):
    """
    A holder further up than the search goes: the warning says so.
    """
    oldcode = OldCode(clock, warnings, GRACE, depth=1)
    module = synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.nested = [[[module.Hello]]]
    retire(oldcode, module)
    del module
    clock.advance(GRACE)
    [sentence] = warnings.sentences
    assert sentence.endswith("after it went (what holds it was not found cheaply)"), sentence


def test_code_back_in_sys_modules_is_not_old(oldcode, clock, warnings, monkeypatch):
    """
    A module in sys.modules under its name again (a plugin restarted with
    its own code) is no old code.
    """
    module = synthetic_plain()
    retire(oldcode, module)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    clock.advance(GRACE)
    assert warnings.seen == []
    assert oldcode.alive("hello") == []


def test_retired_twice_is_one_version(oldcode, clock, warnings):
    module = synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.Saved = module.Hello
    retire(oldcode, module)
    retire(oldcode, module)
    del module
    assert len(oldcode.alive("hello")) == 1
    clock.advance(GRACE)
    assert len(warnings.seen) == 1


def test_a_warn_that_raises_is_logged(clock, logged_failures):
    """
    A warn callable that raises is logged, and the other versions are
    still checked.
    """
    said: List[str] = []

    def warn(name: str, sentence: str) -> None:
        said.append(name)
        if name == "one":
            raise RuntimeError("the listener broke")

    oldcode = OldCode(clock, warn, GRACE)
    first, second = synthetic_plain(), synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.kept = [first.Hello, second.Hello]
    retire(oldcode, first, "one")
    retire(oldcode, second, "two")
    del first, second
    clock.advance(GRACE)
    assert said == ["one", "two"]
    assert len(logged_failures.flush(RuntimeError)) == 1


def test_a_search_that_fails_is_logged(oldcode, clock, warnings, monkeypatch, logged_failures):
    """
    If looking for what holds old code fails, that is logged and the
    warning is still given, without holders.
    """

    def broken(*objects: Any) -> List[Any]:
        raise RuntimeError("no referrers today")

    module = synthetic_plain()
    holder = types.ModuleType("holder_module")
    holder.Saved = module.Hello
    retire(oldcode, module)
    del module
    monkeypatch.setattr(gc, "get_referrers", broken)
    clock.advance(GRACE)
    monkeypatch.undo()
    [sentence] = warnings.sentences
    assert sentence.endswith("after it went (what holds it was not found cheaply)"), sentence
    assert len(logged_failures.flush(RuntimeError)) == 1


@pytest.mark.parametrize("grace", [-1, float("inf"), float("nan"), "30"])
def test_invalid_grace(clock, warnings, grace):
    with pytest.raises(ValueError, match="invalid grace"):
        OldCode(clock, warnings, grace)
