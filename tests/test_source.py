"""
Locating, importing and purging plugin code.
"""

import os
import sys

import pytest

from twisted_plugmgr import InvalidMetadata, InvalidName, NoSuchPlugin, _source
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
