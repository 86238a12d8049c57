"""
The offline check of a config file's plugins (C{plugmgr checkconfig
--plugins}): each enabled plugin imported in the checking process, with the
file's packages, paths and entry points, under a private module name of the
check's own, its metadata checked and its data validated against its
C{Config}; then its modules purged. No manager is asked, none is needed.

What is wrong is a list of plain values (JSON-serialisable dicts), one a
problem, each naming the plugin; L{twisted_plugmgr._cli_format} prints
them for people.

Blocking, and it runs plugin code (the module's top level, its C{Config}):
run it in the checking process, never in a running manager.
"""

from __future__ import annotations

import linecache
import os
import traceback
from itertools import zip_longest
from typing import Any, Dict, List, Optional, Tuple

import attr
from twisted.python.failure import Failure

from . import _source
from ._config import Config
from ._errors import (
    AmbiguousPlugin,
    CompileFailed,
    DependencyError,
    InvalidData,
    InvalidMetadata,
    InvalidName,
    NoSuchPlugin,
    PluginError,
)
from ._instance import import_version
from ._schema import data_for
from ._tracebacks import plugin_cause, plugin_frames

__all__ = ["PluginsReport", "check_plugins", "check_plugin", "check_prefix", "requires_cycles"]

#: The kind of a problem, by the error that says it (the first that matches).
_KINDS = (
    (InvalidName, "invalid name"),
    (AmbiguousPlugin, "ambiguous"),
    (NoSuchPlugin, "not found"),
    (CompileFailed, "compile failed"),
    (InvalidMetadata, "invalid metadata"),
    (InvalidData, "invalid data"),
    (DependencyError, "dependency cycle"),
)


def check_prefix() -> str:
    """
    The prefix of the private module names the check imports plugins
    under: one of its own (no manager's), per process.
    """
    return f"_plugmgr_check_{os.getpid()}__"


def _traceback(error: PluginError) -> Optional[str]:
    """
    The traceback of the plugin code that caused C{error}: its frames only,
    as the manager logs it (see L{plugin_frames}), then what it raised, as
    Python prints it (a C{SyntaxError} with its line and caret); L{None}
    when no plugin code raised.
    """
    cause = plugin_cause(error)
    if cause is None:
        return None
    value = cause.value
    frames = plugin_frames(cause)
    if isinstance(value, SyntaxError) and frames:
        frames = frames[:-1]  # its place, which format_exception_only shows
    lines = ["Traceback (most recent call last):\n"] if frames else []
    for function, filename, lineno, _, _ in frames:
        lines.append(f'  File "{filename}", line {lineno}, in {function}\n')
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"    {source}\n")
    lines.extend(traceback.format_exception_only(type(value), value))
    return "".join(lines).rstrip("\n")


def _problem(name: str, kind: str, message: str, key: Optional[str] = None,
             shown: Optional[str] = None) -> Dict[str, Any]:
    return {"plugin": name, "kind": kind, "message": message, "key": key, "traceback": shown,
            "required_by": None}


def _from_error(name: str, error: PluginError) -> List[Dict[str, Any]]:
    """
    The problems C{error} says: one a bad key for L{InvalidData}, else one.
    """
    if isinstance(error, InvalidData) and error.problems:
        return [_problem(name, "invalid data", f"plugin {name!r}: invalid data: {sentence}",
                         key=key)
                for sentence, key in zip_longest(error.problems, error.keys[:len(error.problems)])]
    kind = next((k for cls, k in _KINDS if isinstance(error, cls)), "error")
    return [_problem(name, kind, str(error), shown=_traceback(error))]


def check_plugin(name: str, config: Config, prefix: str,
                 data: Any = None) -> Tuple[List[Dict[str, Any]], Tuple[str, ...]]:
    """
    Import plugin C{name} as C{config} says (its C{[manager]} packages,
    paths and C{entry_points}), check its class and validate C{data}
    against its C{Config}, then purge its modules.

    @param prefix: the prefix of the private module names to import under.
    @return: the problems found (empty when it would load): dicts of
        C{plugin}, C{kind} (C{"not found"}, C{"compile failed"},
        C{"invalid metadata"}, C{"invalid data"}, ...), C{message} (one
        line, naming the plugin), C{key} (the data key, for invalid data)
        C{traceback} (of the plugin's code, or L{None}) and C{required_by}
        (L{None} here; see L{check_plugins}); and the names of the plugins
        its class requires (when it could be imported).
    """
    manager = config.manager
    try:
        version, _, displaced = import_version(name, manager.packages, manager.paths, prefix,
                                               entry_points=manager.entry_points)
    except PluginError as e:
        return _from_error(name, e), ()
    except Exception as e:  # a configured package that does not import, say
        return [_problem(name, "not found", f"plugin {name!r}: cannot be looked for: "
                         f"{type(e).__name__}: {e}")], ()
    try:
        requires = version.requires
        data_for(name, version.cls, data)
    except PluginError as e:
        return _from_error(name, e), requires
    except BaseException as e:  # plugin code: its Config's own checks
        error = InvalidData(name, [f"building its Config raised {e!r}"], [""],
                            failure=Failure())
        return [_problem(name, "invalid data", f"plugin {name!r}: invalid data: building its "
                         f"Config raised {e!r}", key="", shown=_traceback(error))], requires
    finally:
        _source.purge(version.module_name)
        if displaced:
            _source.restore_modules(version.module_name, displaced)
    return [], requires


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PluginsReport:
    """
    What the check of a config file's plugins found.

    @ivar checked: the plugins checked: the enabled ones in file order,
        then the plugins they require that the file does not enable (a
        manager loads those with them), in the order they were found.
    @ivar problems: every problem, in that order (see L{check_plugin}); a
        required plugin's carries C{required_by}, the plugin requiring it.
    """

    checked: List[str]
    problems: List[Dict[str, Any]]

    @property
    def ok(self) -> bool:
        """
        Whether every plugin checked would load.
        """
        return not self.problems

    @property
    def failed(self) -> List[str]:
        """
        The plugins with a problem, in the order they were checked.
        """
        names = {p["plugin"] for p in self.problems}
        return [name for name in self.checked if name in names]


def check_plugins(config: Config, prefix: Optional[str] = None) -> PluginsReport:
    """
    Check every plugin C{config} enables, with the data of its section (see
    L{check_plugin}), then each plugin they require that it does not
    enable, with no data (as a manager loads a requirement). The disabled
    ones are not imported, unless an enabled one requires them.

    @param prefix: the prefix of the private module names (default:
        L{check_prefix}).
    """
    prefix = prefix if prefix is not None else check_prefix()
    queue: List[Tuple[str, Optional[str]]] = [(name, None) for name in config.enabled()]
    checked: List[str] = []
    problems: List[Dict[str, Any]] = []
    graph: Dict[str, Tuple[str, ...]] = {}
    while queue:
        name, required_by = queue.pop(0)
        if name in checked:
            continue
        checked.append(name)
        section = config.plugins.get(name)
        data = section.data if section is not None and required_by is None else None
        found, requires = check_plugin(name, config, prefix, data)
        for problem in found:
            if required_by is not None:
                problem.update(required_by=required_by,
                               message=f"{problem['message']} (required by {required_by!r})")
            problems.append(problem)
        graph[name] = tuple(r for r in requires if isinstance(r, str))
        queue.extend((required, name) for required in graph[name] if required not in checked)
    cycles = requires_cycles(graph, checked)
    in_cycle = {name: cycle for cycle in cycles for name in cycle}
    for cycle in cycles:
        error = DependencyError(cycle[0], cycle, "dependency cycle: " + " -> ".join(cycle))
        problems.extend(_from_error(cycle[0], error))
    for name in config.enabled():
        reached = _reaches(graph, name, in_cycle) if name not in in_cycle else None
        if reached is not None:
            cycle = in_cycle[reached]
            error = DependencyError(name, (name, reached), f"it requires {reached}, in the "
                                    f"dependency cycle {' -> '.join(cycle)}")
            problems.extend(_from_error(name, error))
    order = {name: i for i, name in enumerate(checked)}
    problems.sort(key=lambda problem: order.get(problem["plugin"], len(order)))  # stable
    return PluginsReport(checked, problems)


def _reaches(graph: Dict[str, Tuple[str, ...]], name: str,
             targets: Dict[str, Any]) -> Optional[str]:
    """
    The first of C{targets} that plugin C{name} requires, directly or not
    (breadth first), or L{None}.
    """
    queue, seen = list(graph.get(name, ())), {name}
    while queue:
        required = queue.pop(0)
        if required in targets:
            return required
        if required not in seen:
            seen.add(required)
            queue.extend(graph.get(required, ()))
    return None


def requires_cycles(graph: Dict[str, Tuple[str, ...]],
                    order: List[str]) -> List[Tuple[str, ...]]:
    """
    The cycles of C{requires} in C{graph} (name -> the names it requires),
    one per set of plugins, each from the plugin that comes first in
    C{order} back to it (C{("a", "b", "a")}; C{("a", "a")} for a plugin
    that requires itself): the loads a manager refuses with a
    L{DependencyError}.
    """
    cycles: List[Tuple[str, ...]] = []
    seen: set = set()
    done: set = set()

    def walk(name: str, path: List[str]) -> None:
        path.append(name)
        for required in graph.get(name, ()):
            if required in path:
                cycle = path[path.index(required):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    first = min(cycle, key=lambda n: order.index(n) if n in order else len(order))
                    start = cycle.index(first)
                    rotated = cycle[start:] + cycle[:start]
                    cycles.append(tuple(rotated) + (first,))
            elif required not in done:
                walk(required, path)
        path.pop()
        done.add(name)

    for name in order:
        if name not in done:
            walk(name, [])
    return cycles
