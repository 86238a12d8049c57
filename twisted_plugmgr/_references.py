"""
Finding what still holds an old plugin version's code: a bounded search up
the garbage collector's referrers from the old module, class and
functions, naming recognisable holders (a delayed call, a looping call, a
listener, a module global, a class registry) without running their code.
Used by L{_oldcode.OldCode}, off the dispatch path.
"""

from __future__ import annotations

import functools
import gc
import inspect
import itertools
import sys
import types
import weakref
from collections import deque
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface.declarations import Declaration

from ._events import Listeners

__all__ = ["MAX_SENTENCE"]

#: Seconds after a version goes before its code is looked for.
#: The longest warning sentence.
MAX_SENTENCE = 199

_NO_MODULES: Mapping[str, types.ModuleType] = types.MappingProxyType({})

# How much one check may do: items looked at in one container, holders named
# in one sentence, retired versions whose holders one check looks for (the
# others are only said to be alive), old functions and classes the search
# starts from, and referrers looked at on one level.
_ITEMS = 10_000
_HOLDERS = 3
_SEARCHES = 4
_ROOTS = 128
_REFERRERS = 20_000

_type_dict = type.__dict__["__dict__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_bases = type.__dict__["__bases__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_name = type.__dict__["__name__"].__get__
_type_module = type.__dict__["__module__"].__get__
_module_dict = vars(types.ModuleType)["__dict__"].__get__

# Containers a path goes through on its way to a holder worth naming.
_GOING_THROUGH = (dict, list, tuple, set, frozenset, deque, types.CellType, types.MethodType,
                  types.FunctionType, functools.partial, staticmethod, classmethod, property,
                  types.FrameType, types.TracebackType, types.GeneratorType, types.CoroutineType,
                  types.AsyncGeneratorType)


def _is(obj: Any, kinds: Any) -> bool:
    """
    C{isinstance(obj, kinds)} that never runs C{obj}'s code (C{isinstance}
    may ask an object for its C{__class__}).
    """
    return issubclass(type(obj), kinds)


def _one_of(kind: type, kinds: Tuple[type, ...]) -> bool:
    """
    Whether C{kind} is one of C{kinds} (by identity: a metaclass's C{__eq__}
    is its own code).
    """
    return any(kind is k for k in kinds)


def _clip(text: str, limit: int = 40) -> str:
    """
    C{text} on one line, at most C{limit} characters long.
    """
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _type_named(cls: Any) -> str:
    """
    The name of class C{cls}, without running any of its code.
    """
    try:
        return _clip(_type_name(cls))
    except Exception:
        return "?"


def _short(qualname: Any) -> str:
    """
    The last two parts of C{qualname} that are not C{<locals>}:
    C{"test.<locals>.make.<locals>.<lambda>"} is C{"make.<lambda>"}.
    """
    if type(qualname) is not str:
        return "?"
    return _clip(".".join([part for part in qualname.split(".") if part != "<locals>"][-2:]), 50)


def _qualname(obj: Any) -> str:
    """
    The qualified name of a function, class or other callable (its last two
    parts), without running any of its code.
    """
    try:
        if _is(obj, type):
            return _short(_type_qualname(obj))
        kind = type(obj)
        if kind is types.MethodType:
            return _qualname(obj.__func__)
        if kind is functools.partial:
            return f"partial({_qualname(obj.func)})"
        if kind is LoopingCall:
            return f"LoopingCall({_qualname(obj.f)})"
        if _one_of(kind, (types.FunctionType, types.BuiltinFunctionType, types.GeneratorType,
                          types.CoroutineType, types.AsyncGeneratorType)):
            return _short(obj.__qualname__)
        if kind is types.FrameType:
            return _qualname(obj.f_code)
        if kind is types.CodeType:
            return _short(obj.co_qualname)
        return _short(_type_qualname(kind))
    except Exception:
        return "?"


def _declared_version(cls: type) -> Optional[str]:
    """
    The C{version} C{cls} declares, read without running its code.
    """
    try:
        value = inspect.getattr_static(cls, "version", None)
    except Exception:
        return None
    if type(value) is str:
        return _clip(value, 20)
    if _one_of(type(value), (int, float)):
        return str(value)
    return None


def _items(container: Any) -> Iterator[Tuple[Any, Any]]:
    """
    (key, value) pairs of a dict, or (index, item) of a sequence, at most
    L{_ITEMS} of them, read without running any code of a subclass.
    """
    if _is(container, dict):
        return itertools.islice(dict.items(container), _ITEMS)
    for kind in (list, tuple, deque):
        if _is(container, kind):
            return enumerate(itertools.islice(kind.__iter__(container), _ITEMS))
    return iter(())


def _key_segment(key: Any) -> str:
    if type(key) is str:
        return f"[{_clip(repr(key), 30)}]"
    if _one_of(type(key), (int, bool)):
        return f"[{key}]"
    return f"[<{_qualname(key)}>]"


def _namespace(obj: Any) -> Optional[dict]:
    """
    The C{__dict__} of an instance, without running any of its code.
    """
    for klass in _type_mro(type(obj)):
        descriptor = _type_dict(klass).get("__dict__")
        if type(descriptor) is types.GetSetDescriptorType:
            try:
                namespace = descriptor.__get__(obj, type(obj))
            except Exception:
                return None
            return namespace if _is(namespace, dict) else None
    return None


def _edge(holder: Any, child: Any) -> str:
    """
    How C{holder} reaches C{child}: C{".name"} for an attribute,
    C{"[key]"} for an item, C{"."} for the holder's own namespace (whose
    key comes next), C{""} when there is nothing to say.
    """
    try:
        if _is(holder, (dict, list, tuple, deque)):
            for key, value in _items(holder):
                if value is child:
                    return _key_segment(key) if _is(holder, dict) else f"[{key}]"
                if key is child:
                    return "[key]"
            return ""
        if _is(holder, type):
            return "." if any(part is child for part in gc.get_referents(_type_dict(holder))) else ""
        if _is(holder, types.ModuleType):
            return "." if child is _module_dict(holder) else ""
        if _is(holder, _GOING_THROUGH):
            return ""
        namespace = _namespace(holder)
        if namespace is not None:
            if namespace is child:
                return "."
            for key, value in _items(namespace):
                if value is child and type(key) is str:
                    return "." + _clip(key, 30)
        for klass in _type_mro(type(holder)):
            for name, slot in _type_dict(klass).items():
                if type(slot) is types.MemberDescriptorType:
                    try:
                        if slot.__get__(holder, type(holder)) is child:
                            return "." + _clip(name, 30)
                    except AttributeError:
                        continue
    except Exception:
        return ""
    return ""


def _path(segments: Sequence[str]) -> str:
    """
    The attribute path of C{segments} (from a holder down to the old
    code): C{[".", "['x']", "[0]"]} is C{"x[0]"}.
    """
    text, namespace = "", False
    for segment in segments:
        if segment == ".":
            namespace = True
            continue
        if namespace and segment.startswith("['") and segment[2:-2].isidentifier():
            segment = "." + segment[2:-2]
        namespace = False
        text += segment
    return _clip(text.lstrip("."), 60)


class _Retired:
    """
    One plugin version that went: weak references to its code.
    """

    __slots__ = ("name", "module_name", "version", "retired_at", "due", "module", "cls",
                 "modules")

    def __init__(self, name: str, module_name: str, version: Optional[str], retired_at: float,
                 due: float, module: Optional[weakref.ref[Any]], cls: Optional[weakref.ref[Any]],
                 modules: Tuple[weakref.ref[Any], ...]) -> None:
        self.name = name
        self.module_name = module_name
        self.version = version
        self.retired_at = retired_at
        self.due = due
        self.module = module
        self.cls = cls
        self.modules = modules

    @property
    def alive(self) -> bool:
        """
        Whether its module or its class is still alive, and its module is
        not in C{sys.modules} again (as the code of a plugin restarted with
        its state is: it is no old code).
        """
        module = self.module() if self.module is not None else None
        if module is not None and sys.modules.get(self.module_name) is module:
            return False
        return module is not None or (self.cls is not None and self.cls() is not None)

    def label(self, now: float) -> str:
        """
        The version, as L{OldCode.alive} names it.
        """
        version = f" {self.version}" if self.version else ""
        return f"{_clip(self.module_name, 80)}{version}, retired {now - self.retired_at:.0f} s ago"


def _weak(obj: Any) -> Optional[weakref.ref[Any]]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


class _Search:
    """
    One look for what holds a retired version's code: up from its objects,
    through containers, to the first holders worth naming.

    Every object the search keeps (to call C{gc.get_referrers} on it, or as
    part of its bookkeeping) is kept in C{_kept}, so that the ids it
    remembers are those of the same objects until it is over; its own
    containers are never holders.
    """

    def __init__(self, entry: _Retired, reactor: IReactorTime, depth: int, width: int) -> None:
        self._reactor = reactor
        self._depth = depth
        self._width = width
        self.holders: List[str] = []
        self._kept: List[Any] = []
        self._internal: Set[int] = {id(self._kept)}
        self._old_classes: Set[int] = set()
        self._module_dicts: Optional[Dict[int, str]] = None
        self._pending: Optional[Dict[int, str]] = None
        self._roots = self._old_code(entry)

    def _keep(self, obj: Any) -> Any:
        self._kept.append(obj)
        self._internal.add(id(obj))
        return obj

    def _old_code(self, entry: _Retired) -> List[Any]:
        """
        The objects the search starts from: the version's modules and
        classes, and the functions and classes they define. What they are
        made of (their namespaces, closures, method resolution orders,
        descriptors) is theirs, never a holder.
        """
        roots: List[Any] = self._keep([])
        seen: Set[int] = set()
        names: Set[str] = {entry.module_name}
        namespaces: List[dict] = self._keep([])

        def root(obj: Any) -> bool:
            if id(obj) in seen or len(roots) >= _ROOTS:
                return False
            seen.add(id(obj))
            roots.append(obj)
            self._keep(obj)
            return True

        def namespace(candidate: Any) -> None:
            if _is(candidate, dict) and id(candidate) not in self._internal:
                name = dict.get(candidate, "__name__")
                if type(name) is str and name in names:
                    namespaces.append(candidate)
                    self._keep(candidate)

        def function(fn: Any) -> None:
            if type(fn) is types.FunctionType and root(fn):
                namespace(fn.__globals__)
                for part in gc.get_referents(fn):
                    if part is getattr(fn, "__builtins__", None) or part is fn.__globals__:
                        continue
                    self._keep(part)
                    if type(part) is tuple:  # a closure: its cells are the function's too
                        for cell in part:
                            if type(cell) is types.CellType:
                                self._keep(cell)

        def klass(cls: Any) -> None:
            if not _is(cls, type) or not root(cls):
                return
            self._old_classes.add(id(cls))
            attributes = _type_dict(cls)
            for part in (_type_mro(cls), _type_bases(cls), *gc.get_referents(attributes)):
                self._keep(part)
            for value in itertools.islice(attributes.values(), _ITEMS):
                if _is(value, (staticmethod, classmethod)):
                    self._keep(value)
                    function(value.__func__)
                elif _is(value, property):
                    self._keep(value)
                    for accessor in (value.fget, value.fset, value.fdel):
                        function(accessor)
                elif _is(value, (types.GetSetDescriptorType, types.MemberDescriptorType,
                                 Declaration)):
                    self._keep(value)  # they name the class, as zope's declarations do
                else:
                    function(value)

        for ref in (entry.cls, entry.module, *entry.modules):
            obj = ref() if ref is not None else None
            if obj is None:
                continue
            if _is(obj, types.ModuleType):
                root(obj)
                space = _module_dict(obj)
                name = dict.get(space, "__name__")
                if type(name) is str:
                    names.add(name)
                namespace(space)
            else:
                klass(obj)
        done = 0
        while done < len(namespaces):
            space, done = namespaces[done], done + 1
            module_name = dict.get(space, "__name__")
            for value in itertools.islice(dict.values(space), _ITEMS):
                if type(value) is types.FunctionType and value.__globals__ is space:
                    function(value)
                elif _is(value, type) and type(module_name) is str:
                    defined_in = _type_module(value)
                    if type(defined_in) is str and defined_in == module_name:
                        klass(value)
        return roots

    def run(self) -> List[str]:
        """
        Look, level by level, and return the holders found.
        """
        nodes: List[Any] = self._keep(list(self._roots))
        paths: List[Tuple[str, ...]] = [()] * len(nodes)
        trails: List[Tuple[Any, ...]] = self._keep([()] * len(nodes))
        for _ in range(self._depth):
            if not nodes or len(self.holders) >= _HOLDERS:
                break
            nodes, paths, trails = self._level(nodes, paths, trails)
        return self.holders

    def _level(self, nodes: List[Any], paths: List[Tuple[str, ...]], trails: List[Tuple[Any, ...]],
               ) -> Tuple[List[Any], List[Tuple[str, ...]], List[Tuple[Any, ...]]]:
        """
        One scan of the heap for the referrers of C{nodes}: the holders
        among them are named, the containers (at most C{width}) are the
        next level's nodes.

        @param paths: for each node, how it reaches the old code.
        @param trails: for each node, the objects between it and the old
            code, nearest first.
        """
        skip = self._internal  # the old code's parts, this search's own objects, what was seen
        index = {id(node): i for i, node in enumerate(nodes)}
        referrers = self._keep(gc.get_referrers(*nodes))
        up: List[Any] = self._keep([])
        up_paths: List[Tuple[str, ...]] = []
        up_trails: List[Tuple[Any, ...]] = self._keep([])
        kinds: Dict[Tuple[int, int], int] = {}
        per_kind = max(1, self._width // 4)
        for referrer in itertools.islice(referrers, _REFERRERS):
            if id(referrer) in skip:
                continue
            i = next((index[id(part)] for part in gc.get_referents(referrer)
                      if id(part) in index), None)
            if i is None:
                continue
            child = nodes[i]
            if _through_globals(referrer, child):
                continue
            path = (_edge(referrer, child), *paths[i])
            trail = self._keep((child, *trails[i]))
            via, depth = _via(trail)
            phrase = self._holder(referrer, path[:depth], trail)
            if phrase is not None:
                # Not visited: it may hold more, found later by another path.
                if via and via.partition(" ")[2] not in phrase:  # not the callable it names
                    phrase += f" (via {via})"
                if phrase not in self.holders:
                    self.holders.append(phrase)
                    if len(self.holders) >= _HOLDERS:
                        break
                continue
            skip.add(id(referrer))
            # At most a quarter of the next level of one type holding one
            # other type, so that a class's thousands of instances, or
            # thousands of lists of bound methods, do not hide the one list
            # beside them.
            kind = (id(type(referrer)), id(type(child)))
            if len(up) < self._width and kinds.get(kind, 0) < per_kind:
                kinds[kind] = kinds.get(kind, 0) + 1
                up.append(self._keep(referrer))
                up_paths.append(path)
                up_trails.append(trail)
        return up, up_paths, up_trails

    def _module_name_of(self, namespace: dict) -> Optional[str]:
        """
        The name in C{sys.modules} of the module whose namespace is
        C{namespace}.
        """
        if self._module_dicts is None:
            self._module_dicts = {}
            for name, module in list(sys.modules.items()):
                if _is(module, types.ModuleType) and type(name) is str:
                    self._module_dicts[id(_module_dict(module))] = name
        return self._module_dicts.get(id(namespace))

    def _pending_on(self, call: Any) -> Optional[str]:
        """
        Which reactor C{call} is pending on: the global one, the manager's.
        """
        if self._pending is None:
            self._pending = {}
            installed = sys.modules.get("twisted.internet.reactor")
            for where, reactor in (("the manager's reactor", self._reactor),
                                   ("the global reactor", installed)):
                pending = getattr(type(reactor), "getDelayedCalls", None)
                if reactor is not None and pending is not None:
                    for delayed in pending(reactor):
                        self._pending[id(delayed)] = where
        return self._pending.get(id(call))

    def _holder(self, referrer: Any, path: Tuple[str, ...], trail: Tuple[Any, ...]) -> Optional[str]:
        """
        The phrase naming C{referrer} as a holder, or L{None} when it is a
        container to look further up from.
        """
        kind = type(referrer)
        if _is(referrer, DelayedCall):
            if referrer.cancelled or referrer.called:
                return None  # spent: what keeps it?
            where = self._pending_on(referrer)
            on = f" on {where}" if where else ""
            try:
                due = f", due in {max(0.0, referrer.getTime() - referrer.seconds()):.0f} s"
            except Exception:
                due = ""
            return f"a delayed call{on}{due}, calling {_qualname(referrer.func)}"
        if _is(referrer, LoopingCall):
            call = referrer.call
            if not referrer.running or not _is(call, DelayedCall):
                return None  # stopped: what keeps it?
            where = self._pending_on(call)
            on = f" on {where}" if where else ""
            return f"a LoopingCall{on}, every {referrer.interval:g} s, calling {_qualname(referrer.f)}"
        if _is(referrer, Listeners):
            listener = _qualname(trail[1]) if len(trail) > 1 else "?"
            return f"a listener registered with a manager ({listener})"
        if _is(referrer, dict):
            module = self._module_name_of(referrer)
            if module is None:
                return None
            return _global(module, path)
        if _is(referrer, types.ModuleType):
            name = dict.get(_module_dict(referrer), "__name__")
            return _global(name if type(name) is str else "?", path)
        if _is(referrer, type):
            if id(referrer) in self._old_classes:
                return None
            name = _type_named(referrer)
            bases = _type_bases(referrer)
            if trail[0] is _type_mro(referrer) or trail[0] is bases or any(
                    base is trail[0] for base in bases):
                module = _type_module(referrer)
                where = f" (module {_clip(module)})" if type(module) is str else ""
                return f"a subclass {name}{where}"
            attribute = _path(path)
            return f"class {name}'s attribute {attribute}" if attribute else f"class {name}"
        if id(kind) in self._old_classes or _is(referrer, _GOING_THROUGH):
            return None
        attribute = _path(path)
        name = _type_named(kind)
        return f"a {name}'s attribute {attribute}" if attribute else f"a {name}"


def _via(trail: Tuple[Any, ...]) -> Tuple[str, int]:
    """
    The code the path from a holder down C{trail} goes through, if any: a
    function (a closure, say), a suspended generator or coroutine, the one
    nearest the holder (the old code itself, the trail's last object,
    excluded); and how many steps of the path lead to it (what is below is
    the function's business).
    """
    for depth, obj in enumerate(trail[:-1], 1):
        kind = type(obj)
        if kind is types.FunctionType:
            return f"function {_qualname(obj)}", depth
        if _one_of(kind, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            what = "generator" if kind is types.GeneratorType else "coroutine"
            return f"{what} {_qualname(obj)}", depth
    return "", len(trail)


def _global(module: str, path: Tuple[str, ...]) -> str:
    attribute = _path((".", *path))
    return f"module {_clip(module)}'s global {attribute}" if attribute else f"module {_clip(module)}"


def _through_globals(referrer: Any, child: Any) -> bool:
    """
    Whether C{referrer} reaches C{child} only as the namespace it runs in
    (a function's or frame's globals or builtins): that holds the module's
    namespace, not what it holds.
    """
    kind = type(referrer)
    if kind is types.FunctionType:
        return child is referrer.__globals__ or child is getattr(referrer, "__builtins__", None)
    if kind is types.FrameType:
        return child is referrer.f_globals or child is referrer.f_builtins
    return False
