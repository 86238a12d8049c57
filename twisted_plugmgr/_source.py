"""
Where a plugin's code lives, and how it is imported and forgotten.

Pure functions and the import itself; nothing here knows the reactor or the
manager. The rules:

  - a plugin name is a Python identifier, checked before anything is
    imported (L{check_name});
  - a plugin is looked for inside the configured packages and paths, by
    looking at the files themselves (no import-system caches, no
    C{sys.path}), and a file that resolves (through a symlink) outside the
    place it was found in is refused (L{locate});
  - when asked, a plugin is also looked for in the entry points of the
    installed distributions (group L{ENTRY_POINT_GROUP}, C{name =
    "package.module"}): their metadata is read afresh every time, and the
    module's file is found without running it (only its parent packages
    are imported, as for a plugin of a configured package); a name found
    in two places is refused (L{AmbiguousPlugin});
  - a plugin found in a path is imported under a private module name, so
    that a plugin file named like another module (C{json.py}) never replaces
    it in C{sys.modules};
  - a plugin's source is compiled from the file every time it is imported,
    never from a C{.pyc} that may be stale, and the hash of what was
    compiled is kept (L{import_plugin});
  - after a failed import, an unload or a reload, nothing of the old
    modules stays in C{sys.modules} (L{purge}).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import keyword
import os
import re
import sys
from types import ModuleType
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import attr
from twisted.python.failure import Failure
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyClass

from ._errors import AmbiguousPlugin, CompileFailed, InvalidMetadata, InvalidName, NoSuchPlugin
from ._interfaces import IPlugin

__all__ = [
    "check_name",
    "PluginSource",
    "ImportedPlugin",
    "locate",
    "available",
    "import_plugin",
    "purge",
    "take_modules",
    "restore_modules",
    "hash_file",
    "hash_files",
    "find_plugin_class",
    "check_metadata",
    "OPTIONAL_METADATA",
    "ENTRY_POINT_GROUP",
]

#: Metadata a plugin should have; its absence is only reported.
OPTIONAL_METADATA: Tuple[str, ...] = ("longname", "license", "author")

#: The entry-point group in which an installed distribution declares its
#: plugins, each as C{name = "package.module"}.
ENTRY_POINT_GROUP = "twisted_plugmgr.plugins"


def check_name(name: object) -> str:
    """
    Return C{name} if it is a valid plugin name: a string that is a Python
    identifier and not a keyword.

    @raise InvalidName: otherwise, naming the value.
    """
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or (name.startswith("__") and name.endswith("__"))  # __init__, __main__: not plugins
    ):
        raise InvalidName(name)
    return name


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PluginSource:
    """
    Where a plugin's code was found.

    @ivar name: the plugin name.
    @ivar module_name: the name its module has in C{sys.modules}.
    @ivar origin: the path of its module file (C{.py} or C{__init__.py}).
    @ivar is_package: whether the plugin is a package (a directory).
    @ivar root: the directory it was found in (a configured path, a
        directory of a configured package, or the directory holding the
        module or package an entry point names).
    @ivar entry_point: for a plugin declared by an installed distribution,
        its entry point, described for a person (C{"entry point greet =
        acme_greet.greet (distribution acme-greet 1.0)"}); L{None} for one
        found in a configured package or path.
    """

    name: str
    module_name: str
    origin: str
    is_package: bool
    root: str
    entry_point: Optional[str] = None

    @property
    def directory(self) -> str:
        """
        The directory holding the plugin's source files.
        """
        return os.path.dirname(self.origin)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ImportedPlugin:
    """
    The result of importing a plugin's source.

    @ivar source: where it was found.
    @ivar module: its module object.
    @ivar modules: every module it brought into C{sys.modules}, by name
        (the module itself and its submodules).
    @ivar hashes: source path -> SHA-256 of the bytes that were compiled.
    """

    source: PluginSource
    module: ModuleType
    modules: Mapping[str, ModuleType]
    hashes: Mapping[str, str]


def _inside(path: str, root: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _candidate(directory: str, name: str) -> Optional[Tuple[str, bool]]:
    """
    The module file of C{name} in C{directory}, and whether it is a package.
    Only files that really live inside C{directory} count.
    """
    package_init = os.path.join(directory, name, "__init__.py")
    module_file = os.path.join(directory, name + ".py")
    for path, is_package in ((package_init, True), (module_file, False)):
        if os.path.isfile(path) and _inside(path, directory):
            return path, is_package
    return None


def _package_dirs(package: str) -> List[str]:
    module = importlib.import_module(package)
    return list(getattr(module, "__path__", ()))


def _in_files(name: str, packages: Sequence[str], paths: Sequence[str],
              private_prefix: str) -> Optional[Tuple[PluginSource, str]]:
    """
    Plugin C{name} in C{packages} (first) or C{paths}, and a description of
    where it was found (C{"path /srv/plugins (greet.py)"}).
    """
    for package in packages:
        for directory in _package_dirs(package):
            found = _candidate(directory, name)
            if found:
                where = f"package {package} ({os.path.relpath(found[0], directory)})"
                return PluginSource(name, f"{package}.{name}", found[0], found[1], directory), where
    for directory in paths:
        found = _candidate(directory, name)
        if found:
            where = f"path {directory} ({os.path.relpath(found[0], directory)})"
            return PluginSource(name, f"{private_prefix}{name}", found[0], found[1], directory), where
    return None


def locate(name: str, packages: Sequence[str], paths: Sequence[str], private_prefix: str,
           entry_points: bool = False) -> PluginSource:
    """
    Find plugin C{name} in C{packages} (dotted package names, searched
    first) then C{paths} (directories), and, if C{entry_points}, in the
    entry points of the installed distributions (L{ENTRY_POINT_GROUP}).
    No plugin module is imported; the parent packages of an entry point's
    module are.

    @param private_prefix: the prefix of the private module names of
        plugins found in paths.
    @param entry_points: whether to look at the installed distributions'
        entry points too.
    @raise InvalidName: for a bad name, before anything else.
    @raise AmbiguousPlugin: when the name is declared by an entry point and
        found in a package or path too, or declared by two entry points;
        it names every place.
    @raise NoSuchPlugin: when no place has it, or the module an entry point
        names does not exist.
    @raise InvalidMetadata: when an entry point does not name a module of
        Python source (C{module:attribute}, an extension module, a
        namespace package).
    @raise CompileFailed: when a parent package of an entry point's module
        raised while being imported.
    """
    check_name(name)
    found = _in_files(name, packages, paths, private_prefix)
    if entry_points:
        points = _declared().get(name, [])
        places = [_describe(point) for point in points] + ([found[1]] if found else [])
        if len(places) > 1:
            raise AmbiguousPlugin(name, places)
        if points:
            return _entry_point_source(name, points[0])
    if found:
        return found[0]
    places = [f"package {p}" for p in packages] + [f"path {d}" for d in paths]
    if entry_points:
        places.append(f"the installed distributions' entry points ({ENTRY_POINT_GROUP})")
    raise NoSuchPlugin(name, "not found in " + (", ".join(places) or "any package or path (none configured)"))


def available(packages: Sequence[str], paths: Sequence[str], entry_points: bool = False) -> List[str]:
    """
    The sorted names of the plugins that could be loaded from C{packages}
    and C{paths} (found by looking at the files) and, if C{entry_points},
    declared in the installed distributions' entry points (found in their
    metadata). No plugin is imported.
    """
    directories = [d for p in packages for d in _package_dirs(p)] + list(paths)
    names = set()
    for directory in directories:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            stem = entry[:-3] if entry.endswith(".py") else entry
            if stem == "__init__":
                continue
            try:
                check_name(stem)
            except InvalidName:
                continue
            if _candidate(directory, stem):
                names.add(stem)
    if entry_points:
        for name in _declared():
            try:
                names.add(check_name(name))
            except InvalidName:
                continue
    return sorted(names)


# -- entry points ---------------------------------------------------------


def _entry_points() -> List[importlib.metadata.EntryPoint]:
    """
    The entry points of L{ENTRY_POINT_GROUP}, read afresh (a distribution
    installed since the last look is seen), of the first distribution of
    each name on C{sys.path} only (the one its modules are imported from).
    """
    _forget_listings()
    try:
        return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except (TypeError, ValueError):
        # A distribution's entry_points.txt cannot be parsed (a line without
        # "=", a file that is not UTF-8): read them one by one, without it.
        return list(_readable_entry_points())


def _readable_entry_points() -> Iterator[importlib.metadata.EntryPoint]:
    """
    L{_entry_points}, slowly: the distributions whose metadata cannot be
    read or parsed are left out.
    """
    seen = set()
    for dist in importlib.metadata.distributions():
        try:
            key = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
            points = [p for p in dist.entry_points if p.group == ENTRY_POINT_GROUP]
        except (TypeError, ValueError):
            continue
        if key:
            if key in seen:
                continue
            seen.add(key)
        yield from points


def _forget_listings() -> None:
    """
    Forget what the import system and C{importlib.metadata} remember of the
    directories of C{sys.path}, so that what was installed since is seen.
    """
    importlib.invalidate_caches()
    if sys.version_info < (3, 13):
        # Before 3.13, importlib.invalidate_caches leaves importlib.metadata's
        # cache alone, and its invalidate_caches is a function taking the
        # class, not a classmethod.
        finder: Any = importlib.metadata.MetadataPathFinder
        finder.invalidate_caches(finder)


def _declared() -> Dict[str, List[importlib.metadata.EntryPoint]]:
    """
    Entry-point name -> the entry points of L{ENTRY_POINT_GROUP} of that
    name, in C{sys.path} order (one per distribution and value). A
    distribution whose entry-point metadata cannot be parsed declares none.
    """
    found: Dict[str, List[importlib.metadata.EntryPoint]] = {}
    for point in _entry_points():
        same = found.setdefault(point.name, [])
        if all(_describe(p) != _describe(point) for p in same):
            same.append(point)
    return found


def _describe(point: importlib.metadata.EntryPoint) -> str:
    """
    C{point} for a person: C{"entry point greet = acme_greet.greet
    (distribution acme-greet 1.0)"}.
    """
    dist = getattr(point, "dist", None)
    try:
        metadata = dist.metadata if dist is not None else None
    except ValueError:  # not UTF-8
        metadata = None
    if metadata is not None and metadata["Name"]:
        owner = f"distribution {metadata['Name']} {metadata['Version']}"
    else:
        owner = "a distribution without a readable name"
    return f"entry point {point.name} = {point.value} ({owner})"


def _entry_point_source(name: str, point: importlib.metadata.EntryPoint) -> PluginSource:
    """
    The source of plugin C{name}, declared by C{point}: the module it names
    (a module or a package of Python source), found without running it.
    """
    where = _describe(point)
    module_name = point.value.strip()
    if ":" in module_name:
        raise InvalidMetadata(name, [
            f"{where}: names an attribute; a plugin's entry point names a module "
            f"(name = \"package.module\")"])
    parts = module_name.split(".")
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
        raise InvalidMetadata(name, [f"{where}: {module_name!r} is not a module name"])
    spec = _find_spec(name, module_name, where)
    origin = spec.origin
    if spec.submodule_search_locations is not None and not origin:
        raise InvalidMetadata(name, [
            f"{where}: {module_name} is a namespace package (no __init__.py), not a plugin module"])
    if not origin or not spec.has_location or not origin.endswith(".py") or not os.path.isfile(origin):
        raise InvalidMetadata(name, [
            f"{where}: {module_name} is not a module of Python source ({origin or 'no file'})"])
    is_package = spec.submodule_search_locations is not None
    directory = os.path.dirname(origin)
    root = os.path.dirname(directory) if is_package else directory
    return PluginSource(name, module_name, origin, is_package, root, where)


def _find_spec(name: str, module_name: str, where: str) -> importlib.machinery.ModuleSpec:
    """
    The spec of module C{module_name} as an import would find it now (its
    parent packages imported, not the module itself, and never the one that
    may stand in C{sys.modules}).
    """
    parent_name = module_name.rpartition(".")[0]
    search = None
    if parent_name:
        try:
            parent = importlib.import_module(parent_name)
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if missing == parent_name or parent_name.startswith(missing + "."):
                raise NoSuchPlugin(name, f"{where}: no module {missing!r}") from None
            raise CompileFailed(name, f"{where}: package {parent_name}", failure=Failure()) from None
        except BaseException:  # the distribution's code: SystemExit, KeyboardInterrupt too
            raise CompileFailed(name, f"{where}: package {parent_name}", failure=Failure()) from None
        search = getattr(parent, "__path__", None)
        if search is None:
            raise NoSuchPlugin(name, f"{where}: {parent_name} is not a package")
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = find(module_name, search) if find is not None else None
        if spec is not None:
            return spec
    raise NoSuchPlugin(name, f"{where}: no module {module_name!r}")


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """
    A source loader that compiles the file itself every time (never a
    C{.pyc}, which a same-size edit within one second would leave looking
    fresh) and records the hash of what it compiled.
    """

    def __init__(self, fullname: str, path: str, hashes: Dict[str, str]) -> None:
        super().__init__(fullname, path)
        self._hashes = hashes

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        data = self.get_data(path)
        self._hashes[path] = hashlib.sha256(data).hexdigest()
        return self.source_to_code(data, path)


class _PluginFinder(importlib.abc.MetaPathFinder):
    """
    Finds the submodules of one plugin while it is being imported, so that
    they too are compiled fresh and hashed.
    """

    def __init__(self, root: str, hashes: Dict[str, str]) -> None:
        self._root = root
        self._hashes = hashes

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not fullname.startswith(self._root + ".") or not path:
            return None
        tail = fullname.rpartition(".")[2]
        for directory in path:
            found = _candidate(directory, tail)
            if found:
                origin, is_package = found
                return importlib.util.spec_from_file_location(
                    fullname,
                    origin,
                    loader=_FreshSourceLoader(fullname, origin, self._hashes),
                    submodule_search_locations=[os.path.dirname(origin)] if is_package else None,
                )
        # Authoritative for the plugin's own modules: no other finder may
        # load one from elsewhere (a symlink leading out of the plugin, say).
        raise ModuleNotFoundError(
            f"no module {fullname!r} inside the plugin's directory", name=fullname
        )


def _owned(module_name: str) -> List[str]:
    """
    The names in C{sys.modules} of module C{module_name} and its
    submodules. Scans C{sys.modules} only when the module is a package.
    """
    module = sys.modules.get(module_name)
    if module is not None and not hasattr(module, "__path__"):
        return [module_name]
    prefix = module_name + "."
    return [n for n in list(sys.modules) if n == module_name or n.startswith(prefix)]


def purge(module_name: str) -> Dict[str, ModuleType]:
    """
    Remove module C{module_name} and its submodules from C{sys.modules}, and
    the attribute its parent package holds for it.

    @return: what was removed, by name.
    """
    removed = {n: sys.modules.pop(n) for n in _owned(module_name)}
    parent_name, _, attribute = module_name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is not None and module_name in removed:
        if getattr(parent, attribute, None) is removed[module_name]:
            try:
                delattr(parent, attribute)
            except AttributeError:
                pass
    return removed


#: Take a plugin's modules out of C{sys.modules}, to put them back later.
take_modules = purge


def restore_modules(module_name: str, modules: Mapping[str, ModuleType]) -> None:
    """
    Put back C{modules} (as returned by L{purge}) after removing whatever
    now stands under C{module_name}.
    """
    purge(module_name)
    sys.modules.update(modules)
    parent_name, _, attribute = module_name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is not None and module_name in modules:
        setattr(parent, attribute, modules[module_name])


def import_plugin(source: PluginSource) -> ImportedPlugin:
    """
    Import the plugin at C{source} afresh, from its files.

    Whatever stood under its module name is replaced; if the import raises,
    nothing of it stays in C{sys.modules} and the exception propagates.
    """
    hashes: Dict[str, str] = {}
    loader = _FreshSourceLoader(source.module_name, source.origin, hashes)
    spec = importlib.util.spec_from_file_location(
        source.module_name,
        source.origin,
        loader=loader,
        submodule_search_locations=[source.directory] if source.is_package else None,
    )
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    finder = _PluginFinder(source.module_name, hashes)
    if source.is_package or source.module_name in sys.modules:
        purge(source.module_name)
    sys.modules[source.module_name] = module
    sys.meta_path.insert(0, finder)
    try:
        loader.exec_module(module)
    except BaseException:
        purge(source.module_name)
        raise
    finally:
        sys.meta_path.remove(finder)
    parent_name, _, attribute = source.module_name.rpartition(".")
    if parent_name in sys.modules:
        setattr(sys.modules[parent_name], attribute, module)
    modules = {n: sys.modules[n] for n in _owned(source.module_name)}
    return ImportedPlugin(source, module, modules, dict(hashes))


def hash_file(path: str) -> Optional[str]:
    """
    The SHA-256 of the file at C{path}, or L{None} if it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def hash_files(paths: Iterable[str]) -> Dict[str, Optional[str]]:
    """
    L{hash_file} of every path. Blocking: run it in a thread.
    """
    return {path: hash_file(path) for path in paths}


def find_plugin_class(name: str, module: ModuleType) -> type:
    """
    The one class defined in C{module} (or its submodules) that implements
    L{IPlugin}.

    @raise InvalidMetadata: naming the module and the classes found, when
        there is none or several.
    """
    prefix = module.__name__ + "."
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and (obj.__module__ == module.__name__ or obj.__module__.startswith(prefix))
        and IPlugin.implementedBy(obj)
    ]
    found = list(dict.fromkeys(found))
    if len(found) != 1:
        listed = ", ".join(c.__qualname__ for c in found) or "none"
        raise InvalidMetadata(
            name,
            [f"module {module.__name__} must define exactly one IPlugin class; found {listed}"],
        )
    return found[0]


def check_metadata(name: str, cls: type) -> Tuple[str, ...]:
    """
    Check the metadata of plugin class C{cls}, loaded as C{name}.

    @return: the optional attributes (L{OPTIONAL_METADATA}) it lacks.
    @raise InvalidMetadata: listing every problem, when C{name} is missing
        or different from the loaded name, C{version} is missing, or
        C{requires} is not a sequence of plugin names.
    """
    problems = []
    declared = getattr(cls, "name", None)
    if not declared:
        problems.append(f"{cls.__qualname__} has no 'name'")
    elif declared != name:
        problems.append(f"{cls.__qualname__}.name is {declared!r}, not the loaded name {name!r}")
    version = getattr(cls, "version", None)
    if version is None or version == "":
        problems.append(f"{cls.__qualname__} has no 'version'")
    requires = getattr(cls, "requires", ())
    if isinstance(requires, str) or not isinstance(requires, (tuple, list)):
        problems.append(f"{cls.__qualname__}.requires must be a tuple of plugin names, not {requires!r}")
    else:
        for required in requires:
            try:
                check_name(required)
            except InvalidName:
                problems.append(f"{cls.__qualname__}.requires holds an invalid name {required!r}")
            if required == name:
                problems.append(f"{cls.__qualname__} requires itself")
    try:
        verifyClass(IPlugin, cls)
    except Invalid as e:
        problems.append(f"{cls.__qualname__} does not implement IPlugin: {e}")
    if problems:
        raise InvalidMetadata(name, problems)
    return tuple(a for a in OPTIONAL_METADATA if not getattr(cls, a, None))
