"""
What a worker sends the manager is read without importing anything new
(but the standard library): a value or an exception of a class of the
isolated plugin's own modules, which the manager never imports, fails
that one call (or arrives as a L{RemoteError}) with an error naming the
class, and the plugin's code stays out of the manager's process.

The plugin here is a package plugin (C{isopkg.thing}), whose module is
importable by its real name: a plain unpickling in the manager would
import it, and run its module code there.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, List

import pytest
import pytest_twisted
from _workers import shut_down, until
from twisted.internet import reactor

from twisted_plugmgr import PluginError, PluginManager, RemoteError, handler
from twisted_plugmgr._isolate._wire import NotImportedHere, dumps, read

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="worker processes are tested on Linux")

THING = '''
import os
from twisted_plugmgr import Plugin, handler

# Module code: it runs wherever this module is imported.
os.environ["ISOPKG_THING_IMPORTED_IN"] = str(os.getpid())


class Entry:
    def __init__(self, n):
        self.n = n


class Oops(Exception):
    pass


class Thing(Plugin):
    name = "thing"
    version = "{version}"
    isolate = True

    @handler()
    def make(self):
        return Entry(3)

    @handler()
    def oops(self):
        raise Oops("its own error")

    @handler()
    def pid(self):
        return os.getpid()

    @handler()
    def tell(self, target):
        # A post and a call to a plugin in the manager, with a value of
        # this module's class.
        self.api.post(target, "note", Entry(1))
        return self.api.call(target, "note", Entry(2)).addErrback(
            lambda f: f.getErrorMessage())

    def get_state(self):
        return Entry(7)
'''


class Listener:
    def __init__(self) -> None:
        self.errors: List[Any] = []

    def __call__(self, event: Any) -> None:
        if event.kind == "plugin_error":
            self.errors.append(event)


@pytest.fixture
def package(tmp_path, monkeypatch):
    root = tmp_path / "site"
    (root / "isopkg").mkdir(parents=True)
    (root / "isopkg" / "__init__.py").write_text("")
    (root / "isopkg" / "thing.py").write_text(textwrap.dedent(THING).format(version="1"))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("ISOPKG_THING_IMPORTED_IN", raising=False)
    yield root / "isopkg"
    for name in [n for n in sys.modules if n == "isopkg" or n.startswith("isopkg.")]:
        del sys.modules[name]


@pytest.fixture
def manager(package, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "sink.py").write_text(textwrap.dedent('''
        from twisted_plugmgr import Plugin, handler

        class Sink(Plugin):
            name = "sink"
            version = "1"

            @handler()
            def note(self, value):
                return "got it"
    '''))
    m = PluginManager(packages=["isopkg"], paths=[str(local)], reactor=reactor,
                      restart_delay=0.0, old_code_grace=None,
                      deadlines={"immediate": 0.5, "smart": 2, "lazy": 3})
    m.startService()
    yield m
    shut_down(m)


def not_imported_here() -> bool:
    """Nothing of the plugin's module ran in this process."""
    return ("isopkg.thing" not in sys.modules
            and os.environ.get("ISOPKG_THING_IMPORTED_IN") is None)


def test_the_manager_reads_only_what_it_has_imported_or_the_standard_library():
    import fractions

    assert read(dumps({"n": [1, 2.5, "x", fractions.Fraction(1, 3)]})) == {
        "n": [1, 2.5, "x", fractions.Fraction(1, 3)]}
    assert read(dumps(handler)) is handler  # twisted_plugmgr is imported here
    # A pickle naming a module that is not imported: refused, not imported.
    pickled = dumps(PluginError("x", "y")).replace(b"twisted_plugmgr._errors",
                                                   b"nowhere_imported_mod_23")  # as long
    with pytest.raises(NotImportedHere) as info:
        read(pickled)
    assert info.value.module == "nowhere_imported_mod_23"
    assert str(info.value) == (
        "it holds a nowhere_imported_mod_23.PluginError, and the manager does not import "
        "nowhere_imported_mod_23 (an isolated plugin's code runs only in its worker)")
    assert "nowhere_imported_mod_23" not in sys.modules


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_value_of_the_plugins_own_class_fails_that_call(manager, logged_failures):
    await manager.load("thing")
    pid = await manager.call("thing", "pid")
    assert pid != os.getpid() and not_imported_here()
    with pytest.raises(PluginError) as info:
        await manager.call("thing", "make")
    assert str(info.value) == (
        "plugin 'thing': plugin error: handler make: its answer cannot be read in the manager: "
        "it holds a isopkg.thing.Entry, and the manager does not import isopkg.thing (an "
        "isolated plugin's code runs only in its worker)")
    assert not_imported_here()
    assert await manager.call("thing", "pid") == pid  # the same worker goes on serving
    logged_failures.flush(PluginError)


@linux_only
@pytest_twisted.ensureDeferred
async def test_an_exception_of_the_plugins_own_class_arrives_as_remote_error(
        manager, logged_failures):
    await manager.load("thing")
    with pytest.raises(RemoteError) as info:
        await manager.call("thing", "oops")
    assert info.value.type_name == "isopkg.thing.Oops"
    assert "its own error" in str(info.value)
    assert 'raise Oops("its own error")' in info.value.remote_traceback
    assert not_imported_here()
    logged_failures.flush(RemoteError)


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_post_and_a_call_the_manager_cannot_read_are_refused(manager, logged_failures):
    errors = Listener()
    manager.register(errors)
    await manager.load("sink")
    await manager.load("thing")
    answer = await manager.call("thing", "tell", "sink")
    assert answer == (
        "plugin 'thing': plugin error: a request of its worker cannot be read in the "
        "manager: it holds a isopkg.thing.Entry, and the manager does not import "
        "isopkg.thing (an isolated plugin's code runs only in its worker)")
    await until(lambda: errors.errors, 5.0)
    [error] = errors.errors
    assert error.plugin == "thing"
    assert "a message of its worker cannot be read in the manager: it holds a " \
           "isopkg.thing.Entry" in error.failure.getErrorMessage()
    assert not_imported_here()
    assert await manager.call("sink", "note", 1) == "got it"
    logged_failures.flush(PluginError)


@linux_only
@pytest_twisted.ensureDeferred
async def test_a_state_the_manager_cannot_read_is_reported_and_not_handed_over(
        manager, package, logged_failures):
    # As when get_state raises: the reload goes on, without the state, and
    # the plugin's error says why.
    errors = Listener()
    manager.register(errors)
    await manager.load("thing")
    pid = await manager.call("thing", "pid")
    (package / "thing.py").write_text(textwrap.dedent(THING).format(version="2"))
    await manager.reload("thing")
    assert manager.info("thing").version == "2"
    assert await manager.call("thing", "pid") != pid
    [error] = errors.errors
    assert error.plugin == "thing"
    message = error.failure.getErrorMessage()
    assert message.startswith("plugin 'thing': plugin error: get_state: its answer cannot be "
                              "read in the manager: it holds a isopkg.thing.Entry"), message
    assert "\n" not in message
    assert not_imported_here()
    logged_failures.flush(PluginError)
