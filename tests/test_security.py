"""
Security: only modules inside the configured packages and paths can ever be
imported, whatever name, config file or control-channel input arrives.

Every escape is tried three ways -- C{manager.load}, a config file, the
control channel -- against a directory layout with code outside the plugin
path that records it ran if it is ever imported: C{..}, absolute paths,
symlinks (files, directories, submodules) pointing outside a plugin path,
dotted names reaching other packages. And the owner check of the IRC bot:
a hostmask pattern matches the whole C{nick!user@host}, nothing less.
"""

from __future__ import annotations

import os
import sys
import types

import pytest
from _profiles import budget
from hypothesis import given
from hypothesis import strategies as st
from twisted.protocols import amp
from twisted.test import iosim

from twisted_plugmgr import InvalidName, NoSuchPlugin, PluginError
from twisted_plugmgr._config import ConfigError, parse_config
from twisted_plugmgr._control import (
    AuthenticationRequired,
    ControlClientProtocol,
    ControlFactory,
    InvalidNameError,
    Load,
    NoSuchPluginError,
    Reload,
    Status,
    Unload,
)
from twisted_plugmgr.irc._hostmask import HostmaskPatterns
from twisted_plugmgr.testing import (
    clock_manager,
    failure_of,
    plugin_modules,
    result_of,
    write_plugin,
)

#: The code outside the plugin path appends to C{ran} if it is ever run.
MARKER = "plugmgr_security_marker"
marker = sys.modules.setdefault(MARKER, types.ModuleType(MARKER))

EVIL = f"""
import {MARKER}
{MARKER}.ran.append(__name__)
from twisted_plugmgr import Plugin

class P_evil(Plugin):
    name = "evil"
    version = "1"
"""


@pytest.fixture
def layout(tmp_path):
    """
    tmp/plugins: the plugin path, with one good plugin; tmp/outside: code
    that must never run, as C{evil.py}, a package C{evilpkg/} and a module
    C{secret.py}.
    """
    marker.ran = []
    plugins = tmp_path / "plugins"
    outside = tmp_path / "outside"
    plugins.mkdir()
    outside.mkdir()
    write_plugin(plugins, "good")
    (outside / "evil.py").write_text(EVIL)
    (outside / "evilpkg").mkdir()
    (outside / "evilpkg" / "__init__.py").write_text(EVIL)
    (outside / "secret.py").write_text(f"import {MARKER}\n{MARKER}.ran.append(__name__)\n")
    yield tmp_path, plugins, outside
    assert marker.ran == [], f"code outside the plugin path ran: {marker.ran}"


def escapes(outside):
    """
    Names that try to reach C{outside/evil.py} or other packages.
    """
    evil = str(outside / "evil.py")
    return [
        "..", "../outside/evil", "../outside/evil.py", "..%2Foutside%2Fevil",
        evil, evil[:-3], "/etc/passwd", "evil.py", "outside.evil", "./evil",
        "os.path", "os", "sys", "twisted_plugmgr", "twisted_plugmgr._manager", "tests",
        "", " ", "evil\x00", "\x00", "evil/", "evil\\..", "\u2024\u2024/evil",
        "evilpkg", "secret", "evil", "__main__", "builtins",
    ]


# -- through load ------------------------------------------------------------


def test_escapes_through_load(layout, logged_failures):
    tmp, plugins, outside = layout
    manager, clock, events = clock_manager(paths=[plugins])
    before = set(sys.modules)
    for name in escapes(outside):
        failure = failure_of(manager.load(name), InvalidName, NoSuchPlugin)
        assert failure.value.plugin == name
    assert set(sys.modules) == before
    assert manager.plugin_table() == {}
    assert manager.available() == ["good"]
    result_of(manager.load("good"))
    result_of(manager.shutdown())
    logged_failures.flush(InvalidName, NoSuchPlugin)


def test_escapes_through_unload_and_reload(layout, logged_failures):
    tmp, plugins, outside = layout
    manager, clock, events = clock_manager(paths=[plugins])
    result_of(manager.load("good"))
    before = set(sys.modules)
    for name in escapes(outside):
        failure_of(manager.unload(name), InvalidName, NoSuchPlugin)
        failure_of(manager.reload(name), InvalidName, NoSuchPlugin)
    assert set(sys.modules) == before
    assert list(manager.plugin_table()) == ["good"]
    result_of(manager.shutdown())
    logged_failures.flush(InvalidName, NoSuchPlugin)


def test_non_string_names(layout, logged_failures):
    tmp, plugins, outside = layout
    manager, clock, events = clock_manager(paths=[plugins])
    for name in (None, 3, b"good", ["good"], ("good",), object()):
        failure_of(manager.load(name), InvalidName)
    assert manager.plugin_table() == {}
    result_of(manager.shutdown())
    logged_failures.flush(InvalidName)


def test_symlinked_file_pointing_outside(layout, logged_failures):
    tmp, plugins, outside = layout
    (plugins / "evil.py").symlink_to(outside / "evil.py")
    (plugins / "relative.py").symlink_to(os.path.join("..", "outside", "evil.py"))
    manager, clock, events = clock_manager(paths=[plugins])
    failure_of(manager.load("evil"), NoSuchPlugin)
    failure_of(manager.load("relative"), NoSuchPlugin)
    assert manager.available() == ["good"]
    assert plugin_modules(manager) == []
    result_of(manager.shutdown())
    logged_failures.flush(NoSuchPlugin)


def test_symlinked_package_directory_pointing_outside(layout, logged_failures):
    tmp, plugins, outside = layout
    (plugins / "evilpkg").symlink_to(outside / "evilpkg", target_is_directory=True)
    manager, clock, events = clock_manager(paths=[plugins])
    failure_of(manager.load("evilpkg"), NoSuchPlugin)
    assert manager.available() == ["good"]
    result_of(manager.shutdown())
    logged_failures.flush(NoSuchPlugin)


def test_symlinked_plugin_path_is_the_operators_choice(layout):
    """
    The configured path itself may be a symlink: what it resolves to is
    the plugin path.
    """
    tmp, plugins, outside = layout
    link = tmp / "linked"
    link.symlink_to(plugins, target_is_directory=True)
    manager, clock, events = clock_manager(paths=[link])
    assert result_of(manager.load("good")).running
    result_of(manager.shutdown())


def test_symlinked_submodule_pointing_outside(layout, logged_failures):
    tmp, plugins, outside = layout
    pkg = plugins / "pkg"
    pkg.mkdir()
    (pkg / "secret.py").symlink_to(outside / "secret.py")
    write_plugin(pkg, "__init__", header="from . import secret\n",
                 meta="name = 'pkg'\nversion = '1'\n")
    manager, clock, events = clock_manager(paths=[plugins])
    try:
        failure_of(manager.load("pkg"), PluginError)
        assert marker.ran == []
    finally:
        marker.ran = []
        for name in plugin_modules(manager):
            del sys.modules[name]
        logged_failures.flush()


def test_init_is_not_a_plugin(layout, logged_failures):
    tmp, plugins, outside = layout
    (plugins / "__init__.py").write_text(f"import {MARKER}\n{MARKER}.ran.append(__name__)\n")
    manager, clock, events = clock_manager(paths=[plugins])
    try:
        failure_of(manager.load("__init__"), InvalidName, NoSuchPlugin)
        assert marker.ran == []
    finally:
        marker.ran = []
        result_of(manager.shutdown())
        logged_failures.flush()


@pytest.fixture
def package(layout, monkeypatch):
    """
    A configured package C{secpkg_plugins} (importable from C{tmp}) with one
    plugin and a symlink to the outside.
    """
    tmp, plugins, outside = layout
    pkg = tmp / "secpkg_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write_plugin(pkg, "inside")
    (pkg / "evil.py").symlink_to(outside / "evil.py")
    monkeypatch.syspath_prepend(str(tmp))
    yield tmp, outside
    for name in [n for n in sys.modules if n.startswith("secpkg_plugins")]:
        del sys.modules[name]


def test_dotted_names_do_not_reach_other_packages(package, logged_failures):
    tmp, outside = package
    manager, clock, events = clock_manager(packages=["secpkg_plugins"])
    assert manager.available() == ["inside"]  # imports the configured package itself
    before = set(sys.modules)
    for name in ("os", "sys", "secpkg_plugins", "evil", "outside", "secpkg_plugins.inside",
                 "inside.P_inside", "twisted_plugmgr", "tests"):
        failure_of(manager.load(name), InvalidName, NoSuchPlugin)
    assert set(sys.modules) == before
    plugin = result_of(manager.load("inside"))
    assert type(plugin).__module__ == "secpkg_plugins.inside"
    result_of(manager.shutdown())
    logged_failures.flush(InvalidName, NoSuchPlugin)


def test_failed_load_of_a_package_helper_leaves_it_imported(package, logged_failures):
    tmp, outside = package
    pkg = tmp / "secpkg_plugins"
    (pkg / "_helper.py").write_text("STATE = []\n")
    write_plugin(pkg, "user", "@handler()\ndef note(self):\n    _helper.STATE.append(1)\n"
                 "    return len(_helper.STATE)\n", header="from secpkg_plugins import _helper\n")
    manager, clock, events = clock_manager(packages=["secpkg_plugins"])
    result_of(manager.load("user"))
    helper = sys.modules["secpkg_plugins._helper"]
    failure_of(manager.load("_helper"), PluginError)
    assert sys.modules.get("secpkg_plugins._helper") is helper
    assert sys.modules["secpkg_plugins"]._helper is helper
    assert result_of(manager.call("user", "note")) == 1
    result_of(manager.shutdown())
    logged_failures.flush(PluginError)


# -- through the config file ---------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "os.path", "", "evil.py", "a b",
                                  "class", "evil\\u0000"])
def test_config_refuses_plugin_names_that_are_not_identifiers(name):
    text = f'[plugins."{name}"]\nenabled = true\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/plugmgr/plugmgr.toml")
    assert "plugins." in str(caught.value) and "invalid plugin name" in str(caught.value)


@pytest.mark.parametrize("package", ["../outside", "/outside", "outside/evil", "os..path",
                                     ".hidden", "a-b"])
def test_config_refuses_packages_that_are_not_dotted_names(package):
    text = f'[manager]\npackages = ["{package}"]\n'
    with pytest.raises(ConfigError, match=r"manager\.packages\[0\]"):
        parse_config(text, "/etc/plugmgr/plugmgr.toml")


def test_config_paths_are_relative_to_the_file_not_the_working_directory(
        layout, monkeypatch, logged_failures):
    tmp, plugins, outside = layout
    # A working directory that holds a "plugins" directory with the evil
    # code: a path resolved against it would load the outside.
    elsewhere = tmp / "elsewhere"
    (elsewhere / "plugins").mkdir(parents=True)
    (elsewhere / "plugins" / "evil.py").write_text(EVIL)
    monkeypatch.chdir(elsewhere)
    config_file = tmp / "plugmgr.toml"
    config_file.write_text('[manager]\npaths = ["plugins"]\n\n'
                           '[plugins.good]\n\n[plugins.evil]\n')
    config = parse_config(config_file.read_bytes(), str(config_file))
    assert config.manager.paths == (str(plugins),)
    manager, clock, events = clock_manager(paths=config.manager.paths)
    outcomes = {}
    for name in config.enabled():
        outcomes[name] = manager.load(name, config.plugins[name].data)
    assert result_of(outcomes["good"]).running
    failure_of(outcomes["evil"], NoSuchPlugin)
    result_of(manager.shutdown())
    logged_failures.flush(NoSuchPlugin)


# -- through the control channel ----------------------------------------------


def control(manager, clock, token=None):
    """
    An in-memory AMP connection to a control server for C{manager}, timed
    by C{clock}.

    @return: the client protocol, the server protocol and the pump.
    """
    factory = ControlFactory(manager, clock, token=token)
    return iosim.connectedServerAndClient(lambda: factory.buildProtocol(None),
                                          ControlClientProtocol)


def answer(client, pump, command, **arguments):
    """
    Send C{command} and pump until it is answered; the answer, or the
    Failure.
    """
    box = []
    client.callRemote(command, **arguments).addBoth(box.append)
    pump.flush()
    assert box, f"{command.__name__} was not answered"
    return box[0]


def test_escapes_through_the_control_channel(layout, logged_failures):
    tmp, plugins, outside = layout
    manager, clock, events = clock_manager(paths=[plugins])
    client, server, pump = control(manager, clock)
    before = set(sys.modules)
    for name in escapes(outside):
        for command, kw in ((Load, {}), (Reload, {}), (Unload, {})):
            result = answer(client, pump, command, name=name, **kw)
            assert result.check(InvalidNameError, NoSuchPluginError), (command, name, result)
    assert set(sys.modules) - before <= {n for n in sys.modules if n.startswith("twisted")}
    assert manager.plugin_table() == {}
    # The connection survived it all and still works.
    assert answer(client, pump, Load, name="good")["plugin"]["name"] == "good"
    assert [row["name"] for row in answer(client, pump, Status)["plugins"]] == ["good"]
    result_of(manager.shutdown())
    logged_failures.flush(InvalidName, NoSuchPlugin)


def test_unauthenticated_connection_cannot_load(layout, logged_failures):
    tmp, plugins, outside = layout
    manager, clock, events = clock_manager(paths=[plugins])
    client, server, pump = control(manager, clock, token="sesame")
    result = answer(client, pump, Load, name="good")
    assert result.check(AuthenticationRequired)
    pump.flush()
    assert client.closed.called
    assert manager.plugin_table() == {}
    clock.advance(60)
    result_of(manager.shutdown())


def test_raw_box_with_escape_name_is_refused(layout, logged_failures):
    """
    A hand-made box (not built by our client) naming an escape is answered
    with an error; nothing runs.
    """
    tmp, plugins, outside = layout
    manager, clock, events = clock_manager(paths=[plugins])
    client, server, pump = control(manager, clock)
    received = []
    client.ampBoxReceived = received.append
    for name in (b"../outside/evil", str(outside / "evil").encode(), b"os.path"):
        box = amp.AmpBox({b"_command": b"Load", b"_ask": b"1", b"name": name})
        client.transport.write(box.serialize())
        pump.flush()
    assert [b[b"_error_code"] for b in received] == [b"INVALID_NAME"] * 3
    assert manager.plugin_table() == {}
    result_of(manager.shutdown())
    logged_failures.flush(InvalidName)


# -- IRC owners ----------------------------------------------------------------

OWNER = "alice!alice@trusted.example"
hostmask_parts = st.text(
    alphabet=st.sampled_from("aliceAL!@*?[]{}\\|^~.trusted.exmpl- \r\n\x00"), max_size=20)


@budget("cheap")
@given(nick=hostmask_parts, user=hostmask_parts, host=hostmask_parts)
def test_owner_pattern_matches_the_whole_hostmask_only(nick, user, host):
    patterns = HostmaskPatterns([OWNER])
    mask = f"{nick}!{user}@{host}"
    expected = (nick.lower().translate(str.maketrans("[]\\~", "{}|^")) == "alice"
                and user.lower().translate(str.maketrans("[]\\~", "{}|^")) == "alice"
                and host.lower().translate(str.maketrans("[]\\~", "{}|^")) == "trusted.example")
    assert patterns.matches(mask) is expected


@budget("cheap")
@given(text=st.text(max_size=40))
def test_owner_pattern_never_matches_a_sender_without_user_or_host(text):
    patterns = HostmaskPatterns(["*!*@*"])
    if "!" not in text or "@" not in text.partition("!")[2]:
        assert not patterns.matches(text)


@pytest.mark.parametrize("pattern", ["alice", "alice!*", "*@host", "alice@host!user", "", 3])
def test_owner_patterns_must_name_all_three_parts(pattern):
    with pytest.raises(ValueError):
        HostmaskPatterns([pattern])
