"""
Locating, importing and purging plugin code.
"""

import os
import sys

import pytest

from twisted_plugmgr import (
    AmbiguousPlugin,
    CompileFailed,
    InvalidMetadata,
    InvalidName,
    NoSuchPlugin,
    _source,
)
from twisted_plugmgr.testing import write_plugin

PREFIX = "_plugmgr_test_source__"


@pytest.mark.parametrize("name", ["hello", "_x", "Ünïcode"])
def test_good_names(name):
    assert _source.check_name(name) == name


@pytest.mark.parametrize("name", ["", "a.b", "../x", "/etc/passwd", "class", 1, None, b"x", "a b"])
def test_bad_names(name):
    with pytest.raises(InvalidName):
        _source.check_name(name)


def test_locate_prefers_packages_then_paths(tmp_path, monkeypatch):
    pkg = tmp_path / "srcpkg_a"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write_plugin(pkg, "both")
    other = tmp_path / "dir"
    other.mkdir()
    write_plugin(other, "both")
    write_plugin(other, "only")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = _source.locate("both", ["srcpkg_a"], [str(other)], PREFIX)
    assert found.module_name == "srcpkg_a.both"
    found = _source.locate("only", ["srcpkg_a"], [str(other)], PREFIX)
    assert found.module_name == PREFIX + "only" and not found.is_package
    with pytest.raises(NoSuchPlugin, match="package srcpkg_a, path"):
        _source.locate("none", ["srcpkg_a"], [str(other)], PREFIX)


def test_import_compiles_fresh_and_hashes(tmp_path):
    path = write_plugin(tmp_path, "fresh", header="TAG = 1\n")
    source = _source.locate("fresh", [], [str(tmp_path)], PREFIX)
    first = _source.import_plugin(source)
    assert first.module.TAG == 1
    stat = os.stat(path)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("TAG = 1", "TAG = 2"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = _source.import_plugin(source)
    assert second.module.TAG == 2
    assert first.hashes[path] != second.hashes[path] == _source.hash_file(path)
    assert sys.modules[PREFIX + "fresh"] is second.module
    assert not os.path.exists(tmp_path / "__pycache__")
    _source.purge(PREFIX + "fresh")
    assert PREFIX + "fresh" not in sys.modules


def test_take_and_restore(tmp_path):
    write_plugin(tmp_path, "kept")
    source = _source.locate("kept", [], [str(tmp_path)], PREFIX)
    imported = _source.import_plugin(source)
    taken = _source.take_modules(source.module_name)
    assert source.module_name not in sys.modules
    _source.restore_modules(source.module_name, taken)
    assert sys.modules[source.module_name] is imported.module
    _source.purge(source.module_name)


def test_hash_of_missing_file_is_none(tmp_path):
    assert _source.hash_files([str(tmp_path / "gone.py")]) == {str(tmp_path / "gone.py"): None}


def test_check_metadata_lists_every_problem():
    class Bad:
        name = "other"
        requires = ("ok", "not ok", "bad")

    with pytest.raises(InvalidMetadata) as info:
        _source.check_metadata("bad", Bad)
    problems = info.value.problems
    assert any("not the loaded name" in p for p in problems)
    assert any("no 'version'" in p for p in problems)
    assert any("'not ok'" in p for p in problems)
    assert any("requires itself" in p for p in problems)
    assert any("does not implement IPlugin" in p for p in problems)


# --- entry points ------------------------------------------------------------------------------
#
# A distribution is what importlib.metadata finds on sys.path: a NAME-VERSION.dist-info
# directory with METADATA and entry_points.txt (tests/test_entry_points.py builds and
# pip-installs a real one).


def write_dist(site, name, points, version="1.0", group=_source.ENTRY_POINT_GROUP):
    """
    Declare the distribution C{name} in C{site}, its entry points C{points}
    (name -> value) in C{group}.
    """
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")


def write_package(site, package, *modules, init=""):
    """
    The package C{package} in C{site}, holding a plugin module for each of
    C{modules} (named as the module).
    """
    directory = site / package
    directory.mkdir()
    (directory / "__init__.py").write_text(init)
    for module in modules:
        write_plugin(directory, module)
    return directory


def from_site(site):
    """
    The names in sys.modules of the modules imported from C{site}.
    """
    top = str(site) + os.sep
    found = []
    for name, module in list(sys.modules.items()):
        places = [getattr(module, "__file__", None) or ""] + list(getattr(module, "__path__", None) or [])
        if any(str(p).startswith(top) for p in places):
            found.append(name)
    return sorted(found)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """
    An empty directory on sys.path, for distributions; at teardown, what
    was imported from it is forgotten.
    """
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    for name in from_site(directory):
        del sys.modules[name]


def test_available_lists_entry_points_without_importing(site, tmp_path):
    write_package(site, "srcep_av", "one", "two")
    write_dist(site, "srcep-av", {"one": "srcep_av.one", "two": "srcep_av.two",
                                  "not-a-name": "srcep_av.one", "class": "srcep_av.one"})
    write_dist(site, "srcep-other", {"three": "srcep_av.missing"})
    paths = tmp_path / "paths"
    paths.mkdir()
    write_plugin(paths, "four")
    assert _source.available([], [str(paths)], entry_points=True) == ["four", "one", "three", "two"]
    assert _source.available([], [str(paths)]) == ["four"]
    assert from_site(site) == []


def test_locate_an_entry_point_imports_only_its_package(site):
    write_package(site, "srcep_loc", "greet")
    write_dist(site, "srcep-loc", {"greet": "srcep_loc.greet"}, version="2.5")
    found = _source.locate("greet", [], [], PREFIX, entry_points=True)
    assert found == _source.PluginSource(
        "greet", "srcep_loc.greet", str(site / "srcep_loc" / "greet.py"), False,
        str(site / "srcep_loc"),
        "entry point greet = srcep_loc.greet (distribution srcep-loc 2.5)")
    assert from_site(site) == ["srcep_loc"]
    imported = _source.import_plugin(found)
    assert imported.module.__name__ == "srcep_loc.greet"
    assert sys.modules["srcep_loc"].greet is imported.module
    assert list(imported.hashes) == [found.origin]
    _source.purge("srcep_loc.greet")
    assert from_site(site) == ["srcep_loc"]


def test_an_entry_point_may_name_a_package(site):
    directory = site / "srcep_pkg"
    directory.mkdir()
    (directory / "__init__.py").write_text(
        "from .impl import P_whole\n")
    write_plugin(directory, "impl", cls="class P_whole(Plugin):\n    name = 'whole'\n"
                 "    version = '1'\n")
    write_dist(site, "srcep-pkg", {"whole": "srcep_pkg"})
    found = _source.locate("whole", [], [], PREFIX, entry_points=True)
    assert (found.module_name, found.is_package, found.origin, found.root) == (
        "srcep_pkg", True, str(directory / "__init__.py"), str(site))
    assert from_site(site) == []
    imported = _source.import_plugin(found)
    assert sorted(imported.modules) == ["srcep_pkg", "srcep_pkg.impl"]
    assert sorted(imported.hashes) == [str(directory / "__init__.py"), str(directory / "impl.py")]
    _source.purge("srcep_pkg")
    assert from_site(site) == []


def test_entry_points_off_are_ignored(site, tmp_path):
    write_package(site, "srcep_off", "greet")
    write_dist(site, "srcep-off", {"greet": "srcep_off.greet"})
    with pytest.raises(NoSuchPlugin, match="not found in any package or path") as info:
        _source.locate("greet", [], [], PREFIX)
    assert "entry point" not in str(info.value)
    paths = tmp_path / "paths"
    paths.mkdir()
    write_plugin(paths, "greet")
    assert _source.locate("greet", [], [str(paths)], PREFIX).module_name == PREFIX + "greet"
    assert from_site(site) == []


def test_not_found_says_where_it_looked(site, tmp_path):
    with pytest.raises(NoSuchPlugin) as info:
        _source.locate("nowhere", [], [str(tmp_path)], PREFIX, entry_points=True)
    assert str(info.value) == (
        f"plugin 'nowhere': no such plugin: not found in path {tmp_path}, "
        "the installed distributions' entry points (twisted_plugmgr.plugins)")


def test_a_name_in_a_path_and_an_entry_point_is_ambiguous(site, tmp_path):
    write_package(site, "srcep_amb", "greet")
    write_dist(site, "srcep-amb", {"greet": "srcep_amb.greet"})
    paths = tmp_path / "paths"
    paths.mkdir()
    write_plugin(paths, "greet")
    with pytest.raises(AmbiguousPlugin) as info:
        _source.locate("greet", [], [str(paths)], PREFIX, entry_points=True)
    assert info.value.plugin == "greet"
    assert info.value.places == (
        "entry point greet = srcep_amb.greet (distribution srcep-amb 1.0)",
        f"path {paths} (greet.py)")
    assert str(info.value) == (
        "plugin 'greet': ambiguous plugin name: found as entry point greet = srcep_amb.greet "
        f"(distribution srcep-amb 1.0) and as path {paths} (greet.py)")
    assert from_site(site) == []
    assert not [n for n in sys.modules if n.startswith(PREFIX)]


def test_a_name_in_a_package_and_an_entry_point_is_ambiguous(site, tmp_path, monkeypatch):
    write_package(site, "srcep_amb2", "greet")
    write_dist(site, "srcep-amb2", {"greet": "srcep_amb2.greet"})
    pkg = tmp_path / "srcpkg_amb"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "greet").mkdir()
    write_plugin(pkg / "greet", "__init__", cls="")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AmbiguousPlugin) as info:
        _source.locate("greet", ["srcpkg_amb"], [], PREFIX, entry_points=True)
    assert info.value.places[1] == "package srcpkg_amb (greet/__init__.py)"
    assert "srcpkg_amb.greet" not in sys.modules
    del sys.modules["srcpkg_amb"]


def test_one_name_declared_by_two_distributions_is_ambiguous(site):
    write_package(site, "srcep_two", "greet")
    write_dist(site, "srcep-first", {"greet": "srcep_two.greet"})
    write_dist(site, "srcep-second", {"greet": "srcep_two.greet"}, version="3")
    with pytest.raises(AmbiguousPlugin) as info:
        _source.locate("greet", [], [], PREFIX, entry_points=True)
    assert sorted(info.value.places) == [
        "entry point greet = srcep_two.greet (distribution srcep-first 1.0)",
        "entry point greet = srcep_two.greet (distribution srcep-second 3)"]
    assert from_site(site) == []


def test_a_shadowed_distribution_does_not_count(site, tmp_path, monkeypatch):
    write_package(site, "srcep_shadow", "greet")
    write_dist(site, "srcep-shadow", {"greet": "srcep_shadow.greet"}, version="2")
    later = tmp_path / "later"
    later.mkdir()
    write_dist(later, "srcep_shadow", {"greet": "srcep_shadow.greet"}, version="1")
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])
    found = _source.locate("greet", [], [], PREFIX, entry_points=True)
    assert found.entry_point == "entry point greet = srcep_shadow.greet (distribution srcep-shadow 2)"


@pytest.mark.parametrize("value, message", [
    ("srcep_bad.greet:P_greet",
     "entry point greet = srcep_bad.greet:P_greet (distribution srcep-bad 1.0): names an "
     'attribute; a plugin\'s entry point names a module (name = "package.module")'),
    ("srcep_bad.greet [extra]",
     "entry point greet = srcep_bad.greet [extra] (distribution srcep-bad 1.0): "
     "'srcep_bad.greet [extra]' is not a module name"),
    ("srcep_bad.native",
     "(distribution srcep-bad 1.0): srcep_bad.native is not a module of Python source"),
    ("srcep_bad.spaced",
     "(distribution srcep-bad 1.0): srcep_bad.spaced is a namespace package (no __init__.py)"),
])
def test_an_entry_point_that_is_not_a_source_module_is_refused(site, value, message):
    import importlib.machinery

    directory = write_package(site, "srcep_bad", "greet")
    (directory / ("native" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"not ELF")
    (directory / "spaced").mkdir()
    write_dist(site, "srcep-bad", {"greet": value})
    assert _source.available([], [], entry_points=True) == ["greet"]
    with pytest.raises(InvalidMetadata) as info:
        _source.locate("greet", [], [], PREFIX, entry_points=True)
    assert info.value.plugin == "greet"
    assert message in str(info.value)
    assert [n for n in from_site(site) if n != "srcep_bad"] == []


@pytest.mark.parametrize("value, missing", [
    ("srcep_miss.nothing", "'srcep_miss.nothing'"), ("srcep_nopkg.greet", "'srcep_nopkg'"),
])
def test_an_entry_point_naming_a_missing_module(site, value, missing):
    write_package(site, "srcep_miss")
    write_dist(site, "srcep-miss", {"greet": value})
    with pytest.raises(NoSuchPlugin) as info:
        _source.locate("greet", [], [], PREFIX, entry_points=True)
    assert str(info.value) == (
        f"plugin 'greet': no such plugin: entry point greet = {value} "
        f"(distribution srcep-miss 1.0): no module {missing}")


def test_an_entry_point_whose_package_raises(site):
    write_package(site, "srcep_raise", "greet", init="raise RuntimeError('package broken')\n")
    write_dist(site, "srcep-raise", {"greet": "srcep_raise.greet"})
    with pytest.raises(CompileFailed) as info:
        _source.locate("greet", [], [], PREFIX, entry_points=True)
    assert str(info.value) == (
        "plugin 'greet': module failed to import: entry point greet = srcep_raise.greet "
        "(distribution srcep-raise 1.0): package srcep_raise (RuntimeError: package broken)")
    assert from_site(site) == []


def test_a_distribution_with_broken_metadata_declares_nothing(site):
    write_package(site, "srcep_ok", "greet")
    write_dist(site, "srcep-ok", {"greet": "srcep_ok.greet"})
    broken = site / "srcep_broken-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: srcep-broken\nVersion: 1.0\n")
    (broken / "entry_points.txt").write_text(f"[{_source.ENTRY_POINT_GROUP}]\nno equals sign\n")
    assert _source.available([], [], entry_points=True) == ["greet"]
    assert _source.locate("greet", [], [], PREFIX, entry_points=True).module_name == "srcep_ok.greet"


def test_a_distribution_installed_later_is_seen(site):
    assert _source.available([], [], entry_points=True) == []
    with pytest.raises(NoSuchPlugin):
        _source.locate("late", [], [], PREFIX, entry_points=True)
    # The directory keeps its mtime: only a fresh look (no import-system
    # cache of its listing) finds what was added.
    stat = os.stat(site)
    write_package(site, "srcep_late", "late")
    write_dist(site, "srcep-late", {"late": "srcep_late.late"})
    os.utime(site, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _source.available([], [], entry_points=True) == ["late"]
    assert _source.locate("late", [], [], PREFIX, entry_points=True).module_name == "srcep_late.late"
