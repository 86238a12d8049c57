"""
Addressing plugins by event name: the C{handler} decorator, the C{STOP}
constant, and the index from event names to the plugins that handle them.

Plain code, no reactor: the manager calls the handlers; this module only
says which, in which order.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

import attr

__all__ = ["STOP", "handler", "HandlerSpec", "handler_specs", "HandlerIndex"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The attribute the decorator leaves on a handler function.
_MARK = "__plugmgr_handlers__"


class _Stop:
    """
    The type of L{STOP}.
    """

    _instance: Optional[_Stop] = None

    def __new__(cls) -> _Stop:
        # One STOP, even if this module is imported twice.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "STOP"

    def __reduce__(self) -> str:
        return "STOP"


#: Returned by a handler, ends an C{emit}: later handlers are not called,
#: and C{STOP} is not among the results.
STOP: Any = _Stop()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class HandlerSpec:
    """
    One declared handler.

    @ivar event: the event name it handles.
    @ivar priority: higher runs first.
    @ivar attribute: the name of the method on the plugin.
    """

    event: str
    priority: int
    attribute: str


def handler(event: Any = None, *, priority: int = 0) -> Any:
    """
    Mark a plugin method as the handler of C{event} (by default, of the
    event named like the method). C{priority} orders the handlers of one
    event across plugins: higher first, then load order.

    Usable as C{@handler}, C{@handler()}, C{@handler("event")} and
    C{@handler("event", priority=10)}; stack it to handle several events.
    """
    if callable(event):
        return handler()(event)
    if event is not None and (not isinstance(event, str) or not event):
        raise TypeError(f"handler() takes an event name (a non-empty str), not {event!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"handler() priority must be an int, not {priority!r}")

    def mark(function: _F) -> _F:
        marks = list(getattr(function, _MARK, ()))
        marks.append((event or function.__name__, priority))
        setattr(function, _MARK, tuple(marks))
        return function

    return mark


def handler_specs(cls: type) -> Tuple[HandlerSpec, ...]:
    """
    The handlers a plugin class declares (its bases' included, overridden
    methods replacing theirs).

    @raise ValueError: when one event has two handler methods in the class.
    """
    specs: Dict[str, HandlerSpec] = {}
    for attribute in dir(cls):
        function = getattr(cls, attribute, None)
        for event, priority in getattr(function, _MARK, ()):
            if event in specs and specs[event].attribute != attribute:
                raise ValueError(
                    f"event {event!r} has two handlers in {cls.__qualname__}: "
                    f"{specs[event].attribute} and {attribute}"
                )
            specs[event] = HandlerSpec(event, priority, attribute)
    return tuple(sorted(specs.values(), key=lambda s: s.event))


class HandlerIndex:
    """
    Event name -> the names of the plugins that handle it, in call order
    (priority, then load order). A lookup costs one dict access, whatever
    the number of plugins loaded; adding a plugin costs a binary insertion
    per event it handles.
    """

    def __init__(self) -> None:
        # event -> sorted [(-priority, load sequence, plugin)]
        self._by_event: Dict[str, List[Tuple[int, int, str]]] = {}
        # event -> the plugin names of _by_event[event], built when asked for
        self._names: Dict[str, Tuple[str, ...]] = {}
        self._by_plugin: Dict[str, Tuple[Tuple[str, Tuple[int, int, str]], ...]] = {}

    def set(self, plugin: str, sequence: int, specs: Tuple[HandlerSpec, ...]) -> None:
        """
        Make C{specs} the handlers of C{plugin} (loaded as number
        C{sequence}), replacing any it had, in one step.
        """
        self.remove(plugin)
        added = []
        for spec in specs:
            entry = (-spec.priority, sequence, plugin)
            bisect.insort(self._by_event.setdefault(spec.event, []), entry)
            self._names.pop(spec.event, None)
            added.append((spec.event, entry))
        if added:
            self._by_plugin[plugin] = tuple(added)

    def remove(self, plugin: str) -> None:
        """
        Forget every handler of C{plugin}.
        """
        for event, entry in self._by_plugin.pop(plugin, ()):
            entries = self._by_event[event]
            entries.pop(bisect.bisect_left(entries, entry))
            self._names.pop(event, None)
            if not entries:
                del self._by_event[event]

    def plugins_for(self, event: str) -> Tuple[str, ...]:
        """
        The plugins that handle C{event}, in call order.
        """
        names = self._names.get(event)
        if names is None:
            entries = self._by_event.get(event)
            if entries is None:
                return ()
            names = self._names[event] = tuple(entry[2] for entry in entries)
        return names

    def events(self) -> List[str]:
        """
        Every event some plugin handles, sorted.
        """
        return sorted(self._by_event)

    def events_of(self, plugin: str) -> Mapping[str, int]:
        """
        The events C{plugin} handles, with their priorities.
        """
        return {event: -entry[0] for event, entry in self._by_plugin.get(plugin, ())}
