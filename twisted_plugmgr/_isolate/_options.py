"""
The isolation options of a plugin -- C{isolate}, C{call_deadline},
C{limits} -- checked, and read from its source without running it.

Pure: no reactor, no process, no import of plugin code. The manager must
decide whether a plugin is isolated before any of its code runs, so a class
attribute is read with L{ast} from the plugin's module file: it counts when
it is a literal in the body of the plugin class (the class whose C{name} is
the plugin's name, or the only class that sets C{isolate}).
"""

from __future__ import annotations

import ast
import math
from typing import Any, Dict, Mapping, Optional

import attr

__all__ = ["ISOLATION_KEYS", "LIMIT_KEYS", "DEFAULT_CALL_DEADLINE", "Isolation",
           "check_options", "split_options", "read_static"]

#: The keys of the isolation options (load() arguments, config keys, class attributes).
ISOLATION_KEYS = ("isolate", "call_deadline", "limits")

#: The keys of C{limits}.
LIMIT_KEYS = ("memory_mb", "cpu_seconds", "open_files")

#: Seconds an isolated plugin's handler may take by default.
DEFAULT_CALL_DEADLINE = 30.0


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Isolation:
    """
    How one plugin runs in its worker.

    @ivar call_deadline: seconds a handler call may take, or L{None} for
        "what the class says, else the default".
    @ivar limits: C{memory_mb}, C{cpu_seconds}, C{open_files} (whole
        numbers), applied before the plugin is imported.
    """

    call_deadline: Optional[float] = None
    limits: Mapping[str, int] = attr.ib(factory=dict)


def check_options(options: Mapping[str, Any]) -> Dict[str, Any]:
    """
    C{options} (some of L{ISOLATION_KEYS}, L{None} meaning not given)
    checked and normalized.

    @raise ValueError: naming the key and what was expected.
    """
    found: Dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "isolate":
            if not isinstance(value, bool):
                raise ValueError(f"invalid isolate {value!r}: expected true or false")
        elif key == "call_deadline":
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"invalid call_deadline {value!r}: expected a positive "
                                 "number of seconds")
            value = float(value)
        elif key == "limits":
            if not isinstance(value, Mapping):
                raise ValueError(f"invalid limits {value!r}: expected a table of "
                                 + ", ".join(LIMIT_KEYS))
            limits = {}
            for name, amount in value.items():
                if name not in LIMIT_KEYS:
                    raise ValueError(f"invalid limits key {name!r}: expected one of "
                                     + ", ".join(LIMIT_KEYS))
                if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                    raise ValueError(f"invalid limits.{name} {amount!r}: expected a positive "
                                     "whole number")
                limits[name] = amount
            value = limits
        else:
            raise ValueError(f"unknown isolation option {key!r}")
        found[key] = value
    return found


def split_options(policy: Mapping[str, Any]) -> tuple[Dict[str, Any], Dict[str, Any]]:
    """
    C{policy} (what load() was given beside its data) split into its
    restart policy keys and its isolation options.
    """
    rest = {k: v for k, v in policy.items() if k not in ISOLATION_KEYS}
    options = {k: v for k, v in policy.items() if k in ISOLATION_KEYS}
    return rest, options


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def read_static(source: str, name: str, named_only: bool = False) -> Dict[str, Any]:
    """
    The literal class attributes C{isolate}, C{call_deadline}, C{limits},
    C{requires} and the base class names of plugin C{name}'s class, read
    from the module's C{source} text without running it (C{{}} when the
    text does not mention C{isolate}, or does not parse).

    @param named_only: whether only a class whose body says C{name = <name>}
        is the plugin's (else also the one class that mentions C{isolate}).
    """
    if "isolate" not in source:
        return {}
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return {}
    candidates = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        values: Dict[str, Any] = {}
        for statement in node.body:
            targets = []
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                targets, value = [statement.target], statement.value
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ISOLATION_KEYS + (
                        "requires", "name"):
                    values[target.id] = _literal(value)
        values["bases"] = tuple(b.id if isinstance(b, ast.Name) else
                                b.attr if isinstance(b, ast.Attribute) else "?"
                                for b in node.bases)
        candidates.append(values)
    named = [c for c in candidates if c.get("name") == name]
    isolating = [c for c in candidates if "isolate" in c]
    chosen = named[0] if named else None if named_only else isolating[0] if len(
        isolating) == 1 else None
    if chosen is None:
        return {}
    chosen.pop("name", None)
    return chosen
