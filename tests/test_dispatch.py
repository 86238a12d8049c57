"""
The handler decorator and the event index.
"""

import pickle

import pytest

from twisted_plugmgr import STOP, handler
from twisted_plugmgr._dispatch import HandlerIndex, HandlerSpec, handler_specs


class Base:
    @handler()
    def ping(self):
        pass

    @handler("renamed", priority=3)
    @handler("other")
    def method(self):
        pass


class Child(Base):
    @handler("ping", priority=9)
    def ping(self):
        pass


def test_specs():
    assert handler_specs(Base) == (
        HandlerSpec("other", 0, "method"),
        HandlerSpec("ping", 0, "ping"),
        HandlerSpec("renamed", 3, "method"),
    )
    assert HandlerSpec("ping", 9, "ping") in handler_specs(Child)


def test_two_methods_for_one_event_are_refused():
    class Twice:
        @handler("x")
        def a(self):
            pass

        @handler("x")
        def b(self):
            pass

    with pytest.raises(ValueError, match="'x' has two handlers in .*Twice: a and b"):
        handler_specs(Twice)


@pytest.mark.parametrize("bad", ["", 3])
def test_bad_handler_arguments(bad):
    with pytest.raises(TypeError):
        handler(bad)
    with pytest.raises(TypeError):
        handler("x", priority="high")


def test_bare_decorator():
    @handler
    def thing(self):
        pass

    class C:
        thing_ = thing

    assert handler_specs(C) == (HandlerSpec("thing", 0, "thing_"),)


def test_index_orders_by_priority_then_sequence():
    index = HandlerIndex()
    index.set("a", 1, (HandlerSpec("e", 0, "m"),))
    index.set("b", 2, (HandlerSpec("e", 5, "m"),))
    index.set("c", 3, (HandlerSpec("e", 0, "m"), HandlerSpec("f", 0, "m")))
    assert index.plugins_for("e") == ("b", "a", "c")
    assert index.plugins_for("f") == ("c",)
    assert index.plugins_for("nothing") == ()
    assert index.events_of("b") == {"e": 5}
    index.set("a", 1, (HandlerSpec("f", 0, "m"),))  # replaced in one step, load order kept
    assert index.plugins_for("e") == ("b", "c")
    assert index.plugins_for("f") == ("a", "c")
    index.remove("c")
    index.remove("missing")
    assert index.events() == ["e", "f"]
    index.remove("a")
    index.remove("b")
    assert index.events() == []


def test_stop_is_one_object():
    assert repr(STOP) == "STOP"
    assert type(STOP)() is STOP
    assert pickle.loads(pickle.dumps(STOP)) is STOP
