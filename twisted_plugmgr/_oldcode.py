"""
Old code that outlives its plugin version (Erlang's C{check_old_code}).

When a plugin version goes (an unload, or the old version after a reload),
the manager gives its module and class to L{OldCode.retired}, which keeps
only weak references to them and looks again C{grace} seconds later, on the
manager's reactor: if the old module or class is still alive after a
C{gc.collect()}, it broadcasts (through the C{warn} callable it was given)
one line saying which old version is still referenced and, where that can be
found cheaply, by what: a delayed call on the global reactor, a listener
registered with a manager, a module global, a class attribute or subclass,
an attribute of some other object.

What holds the old code is looked for with C{gc.get_referrers}, up from the
old code's own objects (its modules, classes and functions) a bounded number
of levels, each level one scan of the heap with a bounded number of
targets. The check runs in a delayed call of its own, never on the dispatch
path; it costs one C{gc.collect()}, and the scans only when something is
still alive.
"""

from __future__ import annotations

import bisect
import gc
import types
from typing import Callable, Dict, List, Mapping, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._references import (  # the search, and the small helpers it shares with the check
    _NO_MODULES,
    _SEARCHES,
    MAX_SENTENCE,
    _clip,
    _declared_version,
    _is,
    _module_dict,
    _Retired,
    _Search,
    _weak,
)

__all__ = ["OldCode", "DEFAULT_GRACE", "MAX_SENTENCE"]

#: Seconds after a version goes before its code is looked for.
DEFAULT_GRACE = 30.0

class OldCode:
    """
    Watches the code of the plugin versions that went, and warns about the
    code still alive C{grace} seconds later.

    It keeps only weak references to that code: watching never keeps it
    alive.

    @param reactor: the reactor the checks run on (the manager's).
    @param warn: called as C{warn(plugin_name, sentence)} about each old
        version still alive at its check (the manager's
        C{Reporter.warning}).
    @param grace: seconds between a version going and its check; L{None}
        checks nothing (the versions are still listed by L{alive}).
    @param depth: how many levels of referrers the search for what holds
        old code goes up (each one scan of the heap).
    @param width: how many objects one scan looks for at once.
    """

    log = Logger()

    def __init__(self, reactor: IReactorTime, warn: Callable[[str, str], None],
                 grace: Optional[float] = DEFAULT_GRACE, *, depth: int = 6,
                 width: int = 64) -> None:
        if grace is not None and not (isinstance(grace, (int, float)) and 0 <= grace < float("inf")):
            raise ValueError(f"invalid grace {grace!r}: expected a number of seconds or None")
        if depth < 0 or width < 1:
            raise ValueError(f"invalid depth {depth!r} or width {width!r}")
        self._reactor = reactor
        self._warn = warn
        self.grace = grace
        self._depth = depth
        self._width = width
        self._retired: Dict[str, List[_Retired]] = {}
        self._due: List[_Retired] = []
        self._call: Optional[IDelayedCall] = None

    def retired(self, name: str, module: types.ModuleType, cls: type,
                modules: Mapping[str, types.ModuleType] = _NO_MODULES, *,
                version: Optional[str] = None) -> None:
        """
        Plugin C{name}'s version whose module is C{module} and whose plugin
        class is C{cls} went (it was unloaded, or replaced by a reload):
        check C{grace} seconds from now that its code is gone.

        @param modules: every module of that version by name, its
            submodules with it (the modules L{_source.purge} removed).
        @param version: the version it declared; read from C{cls} without
            one.
        """
        module_ref, cls_ref = _weak(module), _weak(cls)
        others = tuple(ref for ref in (_weak(m) for m in modules.values() if m is not module)
                       if ref is not None)
        if module_ref is None and cls_ref is None:
            return
        module_name = dict.get(_module_dict(module), "__name__") if _is(
            module, types.ModuleType) else None
        now = self._reactor.seconds()
        entry = _Retired(
            name, module_name if type(module_name) is str else "?",
            _clip(version, 20) if version else _declared_version(cls), now,
            now + (self.grace if self.grace is not None else 0.0), module_ref, cls_ref, others)
        entries = self._prune(name)
        if any(e.module is not None and e.module() is module and e.cls is not None
               and e.cls() is cls for e in entries):
            return  # told twice
        self._retired[name] = [*entries, entry]
        if self.grace is not None:
            bisect.insort(self._due, entry, key=lambda e: e.due)
            self._arm()

    def alive(self, name: str, collect: bool = False) -> List[str]:
        """
        Plugin C{name}'s old versions whose module or class is still alive,
        oldest first, each as C{"<module name> <version>, retired N s
        ago"} (the module name is the same for every version of a plugin).

        @param collect: run C{gc.collect()} first; without it, old code
            that only garbage cycles hold counts until the next collection.
        """
        if collect:
            gc.collect()
        now = self._reactor.seconds()
        return [entry.label(now) for entry in self._prune(name)]

    def stop(self) -> None:
        """
        Cancel the checks to come (the versions are still listed by
        L{alive}); a version that goes later is checked again.
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._due = []

    def _prune(self, name: str) -> List[_Retired]:
        """
        Forget plugin C{name}'s versions whose code is gone, and return the
        others.
        """
        entries = [entry for entry in self._retired.pop(name, ()) if entry.alive]
        if entries:
            self._retired[name] = entries
        return entries

    def _arm(self) -> None:
        if self._call is None and self._due:
            delay = max(0.0, self._due[0].due - self._reactor.seconds())
            self._call = self._reactor.callLater(delay, self._check)

    def _check(self) -> None:
        """
        Check the versions whose grace period is over.
        """
        self._call = None
        now = self._reactor.seconds()
        cut = bisect.bisect_right(self._due, now, key=lambda e: e.due)
        due, self._due = self._due[:cut], self._due[cut:]
        try:
            if any(entry.alive for entry in due):  # what refcounting freed needs no collection
                gc.collect()
            searches = 0
            for entry in due:
                if not entry.alive:
                    continue
                searched = searches < _SEARCHES and self._depth > 0
                holders: List[str] = []
                if searched:
                    searches += 1
                    holders = self._search(entry)
                self._say(entry, now, holders, searched)
            for name in {entry.name for entry in due}:
                self._prune(name)
        finally:
            self._arm()

    def _search(self, entry: _Retired) -> List[str]:
        try:
            return _Search(entry, self._reactor, self._depth, self._width).run()
        except Exception:
            # Its traceback would keep the search's objects, the old code among them.
            failure = Failure()
            failure.cleanFailure()
            self.log.failure("looking for what holds the old code of {plugin}", failure,
                             plugin=entry.name)
            return []

    def _say(self, entry: _Retired, now: float, holders: List[str], searched: bool) -> None:
        version = f" {entry.version}" if entry.version else ""
        head = (f"old version{version} ({_clip(entry.module_name, 60)}) still referenced "
                f"{now - entry.retired_at:.0f} s after it went")
        if not holders:
            sentence = head + (" (what holds it was not found cheaply)" if searched else "")
        else:
            sentence = head + ": by " + holders[0]
            for holder in holders[1:]:
                if len(sentence) + len(holder) + 6 > MAX_SENTENCE:
                    break
                sentence += "; by " + holder
        try:
            self._warn(entry.name, _clip(sentence, MAX_SENTENCE))
        except Exception:
            self.log.failure("warning about the old code of {plugin}", plugin=entry.name)
