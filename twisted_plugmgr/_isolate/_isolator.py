"""
The manager's isolation helper: at each import of a plugin, decide whether
it runs isolated -- from what its load (or config) gave, else from its
class's C{isolate} attribute, read from the source without running it --
and make the isolated version, or import the plugin in-process as usual.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet.interfaces import IReactorTime

from .. import _source
from .._errors import InvalidMetadata, PluginError
from .._instance import Version, import_version
from .._registry import Registry
from ._options import Isolation, check_options, read_static
from ._process import WorkerPool
from ._proxy import Code, IsolatedVersion, make_class, placeholder

__all__ = ["Isolator"]


class Isolator:
    """
    Imports one manager's plugins, each in-process or isolated.

    @param reactor: the manager's reactor (it must run processes for an
        isolated plugin to load).
    @param registry: the manager's records (each keeps the isolation
        options its load was given).
    @param spare: whether to keep a warm spare worker while any isolated
        plugin is loaded.
    """

    def __init__(self, reactor: IReactorTime, registry: Registry, spare: bool = True) -> None:
        self._reactor = reactor
        self._registry = registry
        self.pool = WorkerPool(reactor, self._wanted, spare)

    def _wanted(self) -> bool:
        return any(r.version is not None and r.version.isolated for r in self._registry)

    def import_version(self, name: str, packages: Sequence[str], paths: Sequence[str],
                       prefix: str, entry_points: bool = False,
                       ) -> Tuple[Version, Tuple[str, ...], Dict[str, Any]]:
        """
        L{_instance.import_version}, or, for a plugin that is to be isolated,
        an L{IsolatedVersion} (nothing of its code runs here: its worker
        imports it when it is constructed).

        @raise PluginError: as L{_instance.import_version}; L{InvalidMetadata}
            for an isolated plugin whose class attributes are not valid
            isolation options, or that is an IRC bot plugin.
        """
        record = self._registry.get(name)
        options: Dict[str, Any] = dict(record.isolation) if record is not None else {}
        source = _source.locate(name, packages, paths, prefix, entry_points=entry_points)
        static = self._static(source, name)
        isolate = options.get("isolate")
        if isolate is None:
            isolate = static.get("isolate") is True
        if not isolate:
            version, missing, displaced = import_version(name, packages, paths, prefix,
                                                         entry_points)
            if options.get("isolate") is None and _says_isolate(version.cls):
                where = f"{version.cls.__qualname__} in {_source_file(version.cls, source)}"
                _source.purge(source.module_name)
                if displaced:
                    _source.restore_modules(source.module_name, displaced)
                raise InvalidMetadata(name, [
                    f"isolate must be a literal in the class body of {where} (an inherited or "
                    f"computed isolate = True would run it in the manager's process)"])
            return version, missing, displaced
        if "BotPlugin" in static.get("bases", ()):
            raise InvalidMetadata(name, ["an IRC bot plugin (BotPlugin) cannot be isolated"])
        try:
            declared = check_options({k: static.get(k) for k in ("call_deadline", "limits")})
        except ValueError as e:
            raise InvalidMetadata(name, [str(e)]) from None
        requires = static.get("requires") or ()
        if not (isinstance(requires, tuple) and all(isinstance(r, str) for r in requires)):
            raise InvalidMetadata(name, ["an isolated plugin's requires must be a literal "
                                         "tuple of plugin names in its class body"])
        deadline: Optional[float] = options.get("call_deadline", declared.get("call_deadline"))
        limits = options.get("limits", declared.get("limits", {}))
        hashes: Dict[str, str] = {}
        code = Code(name, source, Isolation(deadline, limits), self.pool, self._reactor, hashes,
                    requires)
        return IsolatedVersion(placeholder(source, hashes), make_class(name, code), ()), (), {}

    @staticmethod
    def _static(source: _source.PluginSource, name: str) -> Dict[str, Any]:
        """
        What L{read_static} finds in the plugin's module file; for a
        package, in its C{__init__.py}, else in the first of its other
        C{.py} files (in sorted path order) with a class whose body says
        C{name = "<the plugin's name>"}.
        """
        found = read_static(_read(source.origin, name), name)
        if found or not source.is_package:
            return found
        package = os.path.dirname(source.origin)
        for path in _package_files(package):
            if path != source.origin:
                found = read_static(_read(path, name), name, named_only=True)
                if found:
                    return found
        return {}


def _read(path: str, name: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PluginError(name, f"cannot read {path} ({e})") from None


def _package_files(package: str) -> List[str]:
    """
    The C{.py} files under the directory C{package}, in sorted order
    (C{__pycache__} and hidden directories left out).
    """
    found: List[str] = []
    for directory, subdirs, files in os.walk(package):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "__pycache__")
        found.extend(os.path.join(directory, f) for f in sorted(files) if f.endswith(".py"))
    return found


def _says_isolate(cls: type) -> bool:
    """
    Whether the plugin class C{cls}, imported in the manager's process,
    asks to be isolated (an inherited or computed C{isolate = True}).
    """
    try:
        return getattr(cls, "isolate", False) is True
    except BaseException:  # plugin code: a descriptor
        return False


def _source_file(cls: type, source: _source.PluginSource) -> str:
    module = sys.modules.get(getattr(cls, "__module__", ""), None)
    return str(getattr(module, "__file__", None) or source.origin)
