"""
What the manager knows of one plugin beyond its table row: what it requires
and what requires it, the source files that run and their hashes, its
restart policy, how it is isolated, and its old versions still alive. Plain data, read from the
records; no I/O (comparing the files with the disk is for the caller, off
the reactor thread).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import attr

from ._oldcode import OldCode
from ._policy import RestartPolicy
from ._registry import PluginInfo, Record, Registry

__all__ = ["PluginDetails", "describe"]


@attr.s(frozen=True, auto_attribs=True)
class PluginDetails:
    """
    One plugin, in full (L{PluginManager.details}).

    @ivar info: its row of the plugin table.
    @ivar requires: the plugins its running version requires.
    @ivar dependents: the plugins that require it, directly or not,
        dependents first.
    @ivar files: each source file of the running version (its module and
        submodules) -> the SHA-256 of the bytes that were compiled; empty
        while none runs.
    @ivar policy: its restart policy.
    @ivar old_versions: its old versions whose module or class is still
        referenced, oldest first, each as C{"<module> <version>, retired N s
        ago"}.
    @ivar isolation_options: the isolation options (C{isolate},
        C{call_deadline}, C{limits}) given at load, by the config file or by
        the last reload that gave some; its class's own attributes are not
        among them.
    @ivar call_deadline: while it runs isolated, the seconds a call to one
        of its handlers may take (as given, else as its class says, else
        the default); L{None} in the manager's process.
    @ivar limits: while it runs isolated, the resource limits of its worker
        (C{memory_mb}, C{cpu_seconds}, C{open_files}); else empty.
    """

    info: PluginInfo
    requires: Tuple[str, ...]
    dependents: Tuple[str, ...]
    files: Mapping[str, str]
    policy: RestartPolicy
    old_versions: Tuple[str, ...]
    isolation_options: Mapping[str, Any] = attr.Factory(dict)
    call_deadline: Optional[float] = None
    limits: Mapping[str, int] = attr.Factory(dict)


def describe(record: Record, registry: Registry, events: List[str], policy: RestartPolicy,
             oldcode: OldCode) -> PluginDetails:
    """
    The L{PluginDetails} of C{record}, which handles C{events} now and has
    restart policy C{policy}.
    """
    version = record.version
    files = dict(version.imported.hashes) if version is not None else {}
    return PluginDetails(
        info=record.info(events),
        requires=record.requires,
        dependents=tuple(registry.dependents(record.name)),
        files=files,
        policy=policy,
        old_versions=tuple(oldcode.alive(record.name)),
        isolation_options={key: dict(value) if isinstance(value, Mapping) else value
                           for key, value in record.isolation.items()},
        call_deadline=version.call_deadline if version is not None else None,
        limits=version.limits if version is not None else {},
    )
