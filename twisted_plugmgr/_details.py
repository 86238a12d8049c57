"""
What the manager knows of one plugin beyond its table row: what it requires
and what requires it, the source files that run and their hashes, its
restart policy, and its old versions still alive. Plain data, read from the
records; no I/O (comparing the files with the disk is for the caller, off
the reactor thread).
"""

from __future__ import annotations

from typing import List, Mapping, Tuple

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
    """

    info: PluginInfo
    requires: Tuple[str, ...]
    dependents: Tuple[str, ...]
    files: Mapping[str, str]
    policy: RestartPolicy
    old_versions: Tuple[str, ...]


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
    )
