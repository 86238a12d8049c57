"""
A plugin's schema for its data: the C{Config} class attribute (a dataclass
or an attrs class), and the check that turns the data a plugin is given (a
mapping) into an instance of it, or an L{InvalidData} naming what is wrong.

The schema is read from the annotations first (an annotation this module
does not support is L{InvalidMetadata}, whatever the data), then the data
is checked against it, every problem collected, each named by its dotted
key (C{"servers[1].port"}).

Pure: nothing here imports a plugin, knows the manager or the reactor.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import sys
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr

from ._errors import InvalidData, InvalidMetadata

__all__ = ["data_for", "config_class"]

#: What the annotations of a C{Config} may be, for the error that names one
#: that is not.
SUPPORTED = ("str, int, float, bool, None, Optional/Union, Literal, list[X], Sequence[X], "
             "tuple[X, ...], tuple[X, Y], dict[str, X], Mapping[str, X], a dataclass or "
             "attrs class, Any")

_SEQUENCES = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def config_class(name: str, cls: type) -> Optional[type]:
    """
    The C{Config} that plugin C{name}'s class C{cls} declares (L{None}
    when it declares none, or C{Config = None}).

    @raise InvalidMetadata: when C{Config} is not a dataclass or an attrs
        class.
    """
    try:
        config = getattr(cls, "Config", None)
    except BaseException as e:  # plugin code: a descriptor
        raise InvalidMetadata(name, [f"reading {_qualname(cls)}.Config raised {e!r}"]) from None
    if config is None:
        return None
    if not isinstance(config, type) or not _is_table(config):
        what = _qualname(config) if isinstance(config, type) else _show(config)
        raise InvalidMetadata(name, [f"{_qualname(cls)}.Config ({what}) is not a dataclass or an "
                                     "attrs class"])
    return config


def data_for(name: str, cls: type, data: Any) -> Any:
    """
    The data to construct plugin C{name}'s class C{cls} with: C{data}
    itself when C{cls} declares no C{Config}; else an instance of its
    C{Config} built from C{data} (a mapping, or L{None} for no keys; an
    instance of C{Config} is taken as it is).

    @raise InvalidData: naming the plugin, and each bad key with what was
        expected (every problem, not the first).
    @raise InvalidMetadata: when C{Config} is not a dataclass or an attrs
        class, or one of its annotations (or a nested table's) is not
        supported or cannot be resolved.
    """
    config = config_class(name, cls)
    if config is None:
        return data
    if isinstance(data, config):
        return data
    # (An instance of the Config of the version before a reload is checked
    # as the table of its fields.)
    root = _Compiler(name, cls).table(config)
    problems = _Problems()
    value = root.check({} if data is None else data, "", problems)
    if problems.found:
        raise InvalidData(name, problems.sentences, problems.keys)
    return value


# -- the problems of one check -------------------------------------------------


class _Problems:
    """
    The problems found in one piece of data, in the order found.
    """

    def __init__(self) -> None:
        self.keys: List[str] = []
        self.sentences: List[str] = []

    @property
    def found(self) -> bool:
        return bool(self.keys)

    def add(self, key: str, what: str) -> None:
        where = f"key {key!r}" if key else "the data"
        self.keys.append(key)
        self.sentences.append(f"{where}: {what}")

    def expected(self, key: str, expected: str, value: Any) -> None:
        self.add(key, f"expected {expected}, got {_show(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, collections.abc.Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """A value, shortened, and what it is: C{'x' (a string)}."""
    try:
        text = repr(value)
    except BaseException:
        text = f"<a {type(value).__name__}>"
    if len(text) > 60:
        text = text[:57] + "..."
    kind = _kind(value)
    return f"{text} ({kind})" if kind else text


def _child(path: str, key: Any) -> str:
    """The dotted key of C{key} in the table or list at C{path}, as TOML spells it."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = key if isinstance(key, str) else repr(key)
    if not (text and all(c.isascii() and (c.isalnum() or c in "_-") for c in text)):
        text = json.dumps(text)  # a quoted key: servers."irc.libera.chat"
    return f"{path}.{text}" if path else text


def _qualname(cls: Any) -> str:
    return str(getattr(cls, "__qualname__", None) or repr(cls))


def _is_table(cls: Any) -> bool:
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or attr.has(cls))


# -- the schema: one node per annotation ---------------------------------------


class _Node:
    """
    What one annotation accepts: C{shape} says whether a value is of its
    kind at all (for a union to pick the member to blame), C{check} the
    value converted, or problems added.
    """

    expected = "anything"

    def shape(self, value: Any) -> bool:
        return True

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        return value


class _Scalar(_Node):
    def __init__(self, expected: str, accepts: Callable[[Any], bool],
                 convert: Callable[[Any], Any] = lambda v: v) -> None:
        self.expected = expected
        self._accepts = accepts
        self._convert = convert

    def shape(self, value: Any) -> bool:
        return self._accepts(value)

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        if not self._accepts(value):
            problems.expected(key, self.expected, value)
            return None
        return self._convert(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar(annotation: Any) -> Optional[_Scalar]:
    """The node of a scalar annotation (L{None} for any other)."""
    if annotation is str:
        return _Scalar("a string", lambda v: isinstance(v, str))
    if annotation is int:
        return _Scalar("an integer", _integer)
    if annotation is float:
        return _Scalar("a number", _number, float)
    if annotation is bool:
        return _Scalar("true or false", lambda v: isinstance(v, bool))
    if annotation is None or annotation is type(None):
        return _Scalar("None", lambda v: v is None)
    return None


class _Literal(_Node):
    def __init__(self, values: Sequence[Any]) -> None:
        self._values = tuple(values)
        self.expected = "one of " + ", ".join(repr(v) for v in self._values)

    def shape(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self._values)

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        if not self.shape(value):
            problems.expected(key, self.expected, value)
        return value


class _Union(_Node):
    def __init__(self, members: Sequence[_Node]) -> None:
        self._members = tuple(members)
        self.expected = " or ".join(m.expected for m in self._members)

    def shape(self, value: Any) -> bool:
        return any(m.shape(value) for m in self._members)

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        fitting = [m for m in self._members if m.shape(value)]
        for member in fitting:
            scratch = _Problems()
            result = member.check(value, key, scratch)
            if not scratch.found:
                return result
        if len(fitting) == 1:  # of the kind of one member only: its problems
            return fitting[0].check(value, key, problems)
        problems.expected(key, self.expected, value)
        return None


class _Sequence(_Node):
    """A list (a TOML array) of items of one kind; or of fixed items."""

    def __init__(self, make: type, item: Optional[_Node] = None,
                 items: Optional[Sequence[_Node]] = None) -> None:
        self._make = make
        self._item = item
        self._items = None if items is None else tuple(items)
        self.expected = "a list" if self._items is None else f"a list of {len(self._items)}"

    def shape(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        if not isinstance(value, (list, tuple)):
            problems.expected(key, self.expected, value)
            return None
        if self._items is not None:
            if len(value) != len(self._items):
                problems.expected(key, self.expected, value)
                return None
            nodes: Sequence[_Node] = self._items
        else:
            nodes = [self._item or _Node()] * len(value)
        return self._make(node.check(item, _child(key, i), problems)
                          for i, (node, item) in enumerate(zip(nodes, value, strict=True)))


class _Mapping(_Node):
    """A table of string keys to values of one kind."""

    expected = "a table"

    def __init__(self, value: _Node) -> None:
        self._value = value

    def shape(self, value: Any) -> bool:
        return isinstance(value, collections.abc.Mapping)

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        if not isinstance(value, collections.abc.Mapping):
            problems.expected(key, self.expected, value)
            return None
        result = {}
        for k, v in value.items():
            if not isinstance(k, str):
                problems.add(_child(key, k), "a key of this table must be a string")
                continue
            result[k] = self._value.check(v, _child(key, k), problems)
        return result


@dataclasses.dataclass
class _Field:
    """One key of a table: the argument it is given as, and its node."""

    argument: str
    node: Optional[_Node]  # None: an attrs converter decides
    required: bool


class _Table(_Node):
    """A dataclass or attrs class, from a table (a mapping) of its keys."""

    expected = "a table"

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.fields: Dict[str, _Field] = {}

    def shape(self, value: Any) -> bool:
        return isinstance(value, (collections.abc.Mapping, self.cls))

    def check(self, value: Any, key: str, problems: _Problems) -> Any:
        if isinstance(value, self.cls):
            return value
        if _is_table(type(value)) and type(value).__qualname__ == self.cls.__qualname__:
            value = _as_table(value)  # an instance of an older version's class: its keys
        if not isinstance(value, collections.abc.Mapping):
            problems.expected(key, self.expected, value)
            return None
        before = len(problems.keys)
        known = ", ".join(self.fields) or "none"
        arguments: Dict[str, Any] = {}
        for k, given in value.items():  # in the order given
            field = self.fields.get(k) if isinstance(k, str) else None
            if field is None:
                problems.add(_child(key, k), f"unknown (known keys: {known})")
            elif field.node is None:
                arguments[field.argument] = given
            else:
                arguments[field.argument] = field.node.check(given, _child(key, k), problems)
        for k, field in self.fields.items():
            if field.required and k not in value:
                what = field.node.expected if field.node is not None else "a value"
                problems.add(_child(key, k), f"missing (required: {what})")
        if len(problems.keys) > before:
            return None
        try:
            return self.cls(**arguments)
        except BaseException as e:  # its __post_init__ or validators: plugin code
            problems.add(key, f"refused by {_qualname(self.cls)}: {type(e).__name__}: {e}")
            return None


# -- from annotations to nodes -------------------------------------------------


class _Compiler:
    """
    Turns the C{Config} of one plugin class (and the tables it nests) into
    L{_Node}s, resolving the annotations with the plugin module's globals
    and the plugin class's namespace.
    """

    def __init__(self, name: str, plugin_cls: type) -> None:
        self._name = name
        self._plugin_cls = plugin_cls
        self._tables: Dict[type, _Table] = {}  # one node per class: recursion

    def _namespace(self) -> Dict[str, Any]:
        # The plugin class's namespace (and its own bases', not Twisted's
        # nor this package's): where a nested Config finds its siblings.
        namespace: Dict[str, Any] = {}
        for base in reversed(self._plugin_cls.__mro__):
            module = str(getattr(base, "__module__", ""))
            if base is object or module.split(".")[0] in ("twisted", "twisted_plugmgr"):
                continue
            namespace.update(vars(base))
        return namespace

    def _globals(self, cls: type) -> Dict[str, Any]:
        for owner in (cls, self._plugin_cls):
            module = sys.modules.get(getattr(owner, "__module__", ""), None)
            if module is not None:
                return dict(vars(module))
        return {}

    def _fail(self, problem: str) -> InvalidMetadata:
        return InvalidMetadata(self._name, [problem])

    def _hints(self, cls: type) -> Dict[str, Any]:
        localns = self._namespace()
        localns.setdefault(cls.__name__, cls)
        localns.setdefault(self._plugin_cls.__name__, self._plugin_cls)
        try:
            if attr.has(cls) and not dataclasses.is_dataclass(cls):
                attr.resolve_types(cls, self._globals(cls), localns)
                return {f.name: f.type for f in attr.fields(cls) if f.type is not None}
            return typing.get_type_hints(cls, self._globals(cls), localns)
        except BaseException as e:  # a name that is not defined, a bad string
            raise self._fail(f"{_qualname(cls)}: its annotations cannot be resolved "
                             f"({type(e).__name__}: {e})") from None

    def table(self, cls: type) -> _Table:
        """The node of dataclass or attrs class C{cls}."""
        if cls in self._tables:
            return self._tables[cls]
        node = self._tables[cls] = _Table(cls)
        hints = self._hints(cls)
        for argument, field_name, required, converted in _fields_of(cls):
            if converted:
                node.fields[argument] = _Field(argument, None, required)
                continue
            if field_name not in hints:
                raise self._fail(f"{_qualname(cls)} field {field_name!r}: no annotation")
            annotation = hints[field_name]
            node.fields[argument] = _Field(argument, self.node(cls, field_name, annotation),
                                           required)
        return node

    def node(self, cls: type, field_name: str, annotation: Any, whole: Any = None) -> _Node:
        """
        The node of C{annotation}: C{cls}'s field C{field_name}'s, or a part
        of it (of C{whole}, named in the error).
        """
        whole = annotation if whole is None else whole
        if annotation is typing.Any:
            return _Node()
        scalar = _scalar(annotation)
        if scalar is not None:
            return scalar
        if _is_table(annotation):
            return self.table(annotation)
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Literal:
            return _Literal(args)
        sub = [self.node(cls, field_name, a, whole) for a in args if a is not Ellipsis]
        if origin is typing.Union or origin is types.UnionType:
            return _Union(sub)
        if annotation in _SEQUENCES or origin in _SEQUENCES:
            return _Sequence(list, sub[0] if sub else None)
        if annotation is tuple or origin is tuple:
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                return _Sequence(tuple, sub[0] if sub else None)
            if Ellipsis not in args:
                return _Sequence(tuple, items=sub)
        if annotation in _MAPPINGS or origin in _MAPPINGS:
            if not args or args[0] is str:
                return _Mapping(sub[1] if args else _Node())
        part = "" if annotation is whole else f" ({_annotation(annotation)} in it)"
        raise self._fail(f"{_qualname(cls)} field {field_name!r}: annotation "
                         f"{_annotation(whole)} is not supported{part} (supported: {SUPPORTED})")


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _as_table(instance: Any) -> Dict[str, Any]:
    """The keys of a dataclass or attrs instance, as its constructor takes them."""
    return {argument: getattr(instance, field_name)
            for argument, field_name, _, _ in _fields_of(type(instance))}


def _fields_of(cls: type) -> List[Tuple[str, str, bool, bool]]:
    """
    The keys of dataclass or attrs class C{cls}, each as (the constructor's
    argument, the field's name, whether it is required, whether an attrs
    converter decides its value); fields that are not constructor
    arguments are not keys.
    """
    found: List[Tuple[str, str, bool, bool]] = []
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.init:
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                found.append((f.name, f.name, required, False))
        return found
    for a in attr.fields(cls):
        if a.init:
            argument = getattr(a, "alias", None) or a.name.lstrip("_")
            found.append((argument, a.name, a.default is attr.NOTHING, a.converter is not None))
    return found
