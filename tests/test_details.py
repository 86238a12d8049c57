"""
L{PluginManager.details}: everything the manager knows of one plugin.
"""

import hashlib

import pytest

from twisted_plugmgr import NoSuchPlugin, PluginDetails
from twisted_plugmgr.testing import clock_manager, result_of, write_plugin


def test_details_of_a_running_plugin(env):
    """
    The row, what it requires and what requires it, its file with the hash
    of what runs, and its restart policy.
    """
    manager, clock, events, plugdir = env
    base = write_plugin(plugdir, "base")
    write_plugin(plugdir, "top", "requires = ['base']\n")
    result_of(manager.load("top"))
    details = manager.details("base")
    assert isinstance(details, PluginDetails)
    assert details.info == manager.info("base")
    assert details.requires == ()
    assert details.dependents == ("top",)
    with open(base, "rb") as f:
        assert details.files == {base: hashlib.sha256(f.read()).hexdigest()}
    assert details.policy == manager.policy_of("base")
    assert details.old_versions == ()
    assert manager.details("top").requires == ("base",)


def test_details_lists_old_versions_still_referenced(plugdir):
    """
    An old version whose class something still holds is listed, with its
    version.
    """
    manager, clock, events = clock_manager(paths=[plugdir], old_code_grace=5.0)
    write_plugin(plugdir, "p", version="1.0")
    old = type(result_of(manager.load("p")))
    write_plugin(plugdir, "p", version="2.0")
    result_of(manager.reload("p"))
    (alive,) = manager.details("p").old_versions
    assert "1.0" in alive
    del old
    result_of(manager.unload("p"))
    clock.advance(10)


def test_details_of_an_unknown_plugin(env):
    """
    NoSuchPlugin, naming it; nothing is loaded by asking.
    """
    manager, clock, events, plugdir = env
    with pytest.raises(NoSuchPlugin) as e:
        manager.details("ghost")
    assert "ghost" in str(e.value)
    assert manager.plugin_table() == {}
