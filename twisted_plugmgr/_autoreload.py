"""
Reload on file change: which directories to watch for the plugins loaded,
which plugins a change concerns, and the plugin files that appear in or
disappear from the configured paths. The watching itself is
L{_watch.SourceWatcher}'s.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Set

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import _source
from ._events import Reporter
from ._registry import Registry

__all__ = ["AutoReload", "touches"]


def touches(imported: _source.ImportedPlugin, changed: Set[str]) -> bool:
    """
    Whether a change to the files C{changed} concerns the plugin
    C{imported}: one of its own files, or (for a package plugin) any Python
    file inside its directory.
    """
    if any(os.path.abspath(p) in changed for p in imported.hashes):
        return True
    if imported.source.is_package:
        top = os.path.abspath(imported.source.directory) + os.sep
        return any(p.startswith(top) and p.endswith(".py") for p in changed)
    return False


class AutoReload:
    """
    Watches the source files of one manager's plugins.

    @param reactor: the reactor the watcher runs in.
    @param paths: gives the manager's configured plugin directories.
    @param registry: the manager's records.
    @param reporter: where C{plugin_available} and C{plugin_source_removed}
        are broadcast.
    @param reload_changed: reloads those of the names given whose files
        changed.
    """

    log = Logger()

    def __init__(self, reactor: IReactorTime, paths: Callable[[], Sequence[str]], registry: Registry,
                 reporter: Reporter,
                 reload_changed: Callable[[Iterable[str]], Deferred[Any]]) -> None:
        self._reactor = reactor
        self._paths = paths
        self._registry = registry
        self._reporter = reporter
        self._reload_changed = reload_changed
        self._watcher: Any = None
        self._known: Optional[Set[str]] = None

    @property
    def mode(self) -> Optional[str]:
        """
        C{"inotify"} or C{"polling"} while watching, else L{None}.
        """
        return self._watcher.mode if self._watcher is not None else None

    def start(self, debounce: float, **options: Any) -> None:
        """
        Start watching (again, with these settings, if already watching).
        """
        from ._watch import SourceWatcher

        self.stop()
        self._known = set(self._available())
        self._watcher = SourceWatcher(self._reactor, self._files_changed, debounce=debounce,
                                      **options)
        self.update()
        self._watcher.start()

    def stop(self) -> None:
        """
        Stop watching.
        """
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def update(self) -> None:
        """
        Watch the directories of the plugins loaded now (after a load, a
        reload or an unload).
        """
        if self._watcher is None:
            return
        directories = {os.path.abspath(p) for p in self._paths() if os.path.isdir(p)}
        for record in self._registry:
            if record.version is not None:
                for path in record.version.imported.hashes:
                    directories.add(os.path.dirname(os.path.abspath(path)))
        self._watcher.set_targets(sorted(directories))

    def _available(self) -> Dict[str, str]:
        """
        Plugin name -> the configured path it would load from.
        """
        found: Dict[str, str] = {}
        for directory in self._paths():
            for name in _source.available((), (directory,)):
                found.setdefault(name, directory)
        return found

    def _files_changed(self, paths: Iterable[str]) -> None:
        changed = {os.path.abspath(p) for p in paths}
        affected = [
            record.name for record in self._registry
            if record.version is not None and touches(record.version.imported, changed)
        ]
        if affected:
            self._reload_changed(affected).addErrback(
                lambda f: self.log.failure("reload on file change failed", failure=f))
        if self._known is not None:
            now = self._available()
            for name in sorted(set(now) - self._known):
                self._reporter.broadcast("plugin_available", name, path=now[name])
            for name in sorted(self._known - set(now)):
                self._reporter.broadcast("plugin_source_removed", name)
            self._known = set(now)
