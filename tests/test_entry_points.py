"""
Plugins declared by an installed distribution (entry-point group
C{twisted_plugmgr.plugins}): a real distribution, built from a
C{pyproject.toml} by setuptools and installed by pip.

Each test installs it into a directory of its own that it puts on
C{sys.path} (C{pip install --target}), never into the shared environment:
there it would change C{available()} for every test running at the same
time in other processes. The wheel is built once for the module; each test
installs it afresh, so that a test editing the installed files edits its
own copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from _processes import REPO, Daemon, make_home
from twisted.internet import reactor

from twisted_plugmgr import (
    AmbiguousPlugin,
    CompileFailed,
    NoSuchPlugin,
    PluginManager,
    ShutdownMode,
)
from twisted_plugmgr.testing import clock_manager, failure_of, plugin_modules, result_of, write_plugin

#: The distribution, file by file.
DISTRIBUTION = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "acme-greet"
        version = "1.0"

        [project.entry-points."twisted_plugmgr.plugins"]
        greet = "acme_greet.greet"
        broken = "acme_greet.broken"
        remote = "acme_greet.remote"

        [tool.setuptools]
        packages = ["acme_greet"]
    """,
    "acme_greet/__init__.py": "",
    "acme_greet/greet.py": """
        from twisted_plugmgr import Plugin, handler


        class Greet(Plugin):
            name = "greet"
            version = "1.0"
            longname = "Greets people"
            license = "MIT"
            author = "Acme"

            @handler()
            def hello(self, who):
                return f"hello {who}"
    """,
    "acme_greet/broken.py": """
        raise RuntimeError("acme_greet.broken is broken")
    """,
    "acme_greet/remote.py": """
        import os

        from twisted_plugmgr import Plugin, handler


        class Remote(Plugin):
            name = "remote"
            version = "1.0"
            longname = "Answers from its own process"
            license = "MIT"
            author = "Acme"
            isolate = True

            @handler()
            def pid(self):
                return os.getpid()
    """,
}

#: Every plugin the distribution declares.
DECLARED = ["broken", "greet", "remote"]


def pip(*args: str, why: str = "") -> None:
    """
    Run pip in this environment; fail the test with its output (and C{why})
    if it fails.
    """
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"pip {' '.join(args)} failed{why}:\n{done.stdout}{done.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """
    The distribution's wheel, built by setuptools in this environment.
    """
    source = tmp_path_factory.mktemp("acme-greet")
    for name, text in DISTRIBUTION.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    out = tmp_path_factory.mktemp("acme-greet-wheel")
    import setuptools

    pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source),
        why=f" (setuptools {setuptools.__version__}: before 70.1, building a wheel needs the "
        "'wheel' package, one of the test extra's)")
    [built] = os.listdir(out)
    return str(out / built)


def from_site(site) -> list:
    """
    The names in C{sys.modules} of the modules imported from C{site}.
    """
    top = str(site) + os.sep
    return sorted(
        name for name, module in list(sys.modules.items())
        if any(str(p).startswith(top)
               for p in [getattr(module, "__file__", None) or ""]
               + list(getattr(module, "__path__", None) or []))
    )


@pytest.fixture
def empty_site(tmp_path, monkeypatch):
    """
    A directory of this test's on C{sys.path}, for distributions; at
    teardown, nothing imported from it is left.
    """
    target = tmp_path / "site"
    target.mkdir()
    monkeypatch.syspath_prepend(str(target))
    yield target
    for name in from_site(target):
        del sys.modules[name]


def install(wheel: str, target) -> None:
    pip("install", "-q", "--no-deps", "--upgrade", "--target", str(target), wheel)


@pytest.fixture
def site(empty_site, wheel):
    """
    L{empty_site}, the distribution installed into it by pip.
    """
    install(wheel, empty_site)
    return empty_site


@pytest.fixture
def manager(site):
    """
    A started manager on a Clock, with entry points (and no package or
    path); at teardown it shuts down, leaving nothing scheduled.
    """
    m, clock, events = clock_manager(entry_points=True)
    yield m, events
    d = m.shutdown(ShutdownMode.IMMEDIATE)
    clock.advance(5)
    result_of(d)
    assert clock.getDelayedCalls() == []


def edit(path, old: str, new: str) -> None:
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def test_available_lists_them_without_importing(manager, site):
    m, events = manager
    assert m.available() == DECLARED
    assert from_site(site) == []


def test_a_distribution_installed_while_running_is_seen(empty_site, wheel, logged_failures):
    m, clock, events = clock_manager(entry_points=True)
    assert m.available() == []
    failure_of(m.load("greet"), NoSuchPlugin)
    install(wheel, empty_site)
    assert m.available() == DECLARED
    result_of(m.load("greet"))
    assert result_of(m.call("greet", "hello", "zed")) == "hello zed"
    logged_failures.flush(NoSuchPlugin)
    d = m.shutdown(ShutdownMode.IMMEDIATE)
    clock.advance(5)
    result_of(d)


def test_load_call_reload_unload(manager, site):
    m, events = manager
    result_of(m.load("greet"))
    assert result_of(m.call("greet", "hello", "ann")) == "hello ann"
    info = m.info("greet")
    assert (info.version, info.source) == ("1.0", str(site / "acme_greet" / "greet.py"))
    assert sys.modules["acme_greet.greet"].Greet is type(m.getServiceNamed("greet"))

    edit(site / "acme_greet" / "greet.py", '"hello', '"howdy')
    edit(site / "acme_greet" / "greet.py", 'version = "1.0"', 'version = "1.1"')
    result_of(m.reload("greet"))
    assert result_of(m.call("greet", "hello", "bob")) == "howdy bob"
    assert m.info("greet").version == "1.1"

    result_of(m.unload("greet", ShutdownMode.IMMEDIATE))
    assert "greet" not in m.plugin_table()
    assert from_site(site) == ["acme_greet"]  # its package stays, as a configured package does
    assert events.kinds("greet") == ["plugin_started", "plugin_reloaded", "plugin_unloaded"]


def test_reload_changed_sees_an_edit_of_the_installed_file(manager, site):
    m, events = manager
    result_of(m.load("greet"))
    assert result_of(m.reload_changed()) == {}
    edit(site / "acme_greet" / "greet.py", '"hello', '"hi')
    outcome = result_of(m.reload_changed())
    assert list(outcome) == ["greet"]
    assert result_of(m.call("greet", "hello", "cy")) == "hi cy"
    assert result_of(m.reload_changed()) == {}


def test_one_that_fails_to_import_leaves_the_others_working(manager, site, logged_failures):
    m, events = manager
    failure = failure_of(m.load("broken"), CompileFailed)
    assert str(failure.value) == (
        f"plugin 'broken': module failed to import: {site / 'acme_greet' / 'broken.py'} "
        "(RuntimeError: acme_greet.broken is broken)")
    assert "broken" not in m.plugin_table()
    assert "acme_greet.broken" not in sys.modules
    result_of(m.load("greet"))
    assert result_of(m.call("greet", "hello", "dee")) == "hello dee"
    assert m.available() == DECLARED
    logged_failures.flush(CompileFailed)


def test_a_name_also_in_a_path_is_refused_naming_both(site, tmp_path, logged_failures):
    paths = tmp_path / "plugins"
    paths.mkdir()
    write_plugin(paths, "greet")
    m, clock, events = clock_manager(paths=[paths], entry_points=True)
    failure = failure_of(m.load("greet"), AmbiguousPlugin)
    assert failure.value.places == (
        "entry point greet = acme_greet.greet (distribution acme-greet 1.0)",
        f"path {paths} (greet.py)")
    assert str(failure.value) == (
        "plugin 'greet': ambiguous plugin name: found as entry point greet = acme_greet.greet "
        f"(distribution acme-greet 1.0) and as path {paths} (greet.py)")
    assert m.plugin_table() == {}
    assert from_site(site) == [] and plugin_modules(m) == []
    assert m.available() == DECLARED  # listed once: the load says what is wrong
    logged_failures.flush(AmbiguousPlugin)
    result_of(m.shutdown(ShutdownMode.IMMEDIATE))


def test_entry_points_off_hides_them(site, logged_failures):
    m, clock, events = clock_manager(entry_points=False)
    assert m.available() == []
    failure = failure_of(m.load("greet"), NoSuchPlugin)
    assert str(failure.value) == (
        "plugin 'greet': no such plugin: not found in any package or path (none configured)")
    assert from_site(site) == []
    logged_failures.flush(NoSuchPlugin)
    result_of(m.shutdown(ShutdownMode.IMMEDIATE))


@pytest_twisted.ensureDeferred
async def test_an_isolated_one_answers_from_its_worker(site):
    m = PluginManager(reactor=reactor, entry_points=True, old_code_grace=None,
                      deadlines={"immediate": 1, "smart": 2, "lazy": 3})
    m.startService()
    try:
        await m.load("remote")
        pid = await m.call("remote", "pid")
        info = m.info("remote")
        assert pid != os.getpid()
        assert (info.isolated, info.pid, info.version) == (True, pid, "1.0")
        assert "acme_greet.remote" not in sys.modules  # nothing of its code ran here
    finally:
        await m.shutdown(ShutdownMode.IMMEDIATE)


# -- twist plugmgr ----------------------------------------------------------------------


def daemon_in(home, site, config: str) -> Daemon:
    make_home(home, config)
    return Daemon(home, "--config", "plugmgr.toml",
                  env={"PYTHONPATH": os.pathsep.join([REPO, str(site)])})


@pytest_twisted.ensureDeferred
async def test_twist_plugmgr_loads_one_enabled_by_name_and_watches_it(tmp_path, site, daemons):
    home = tmp_path / "home"
    home.mkdir()
    daemon = daemon_in(home, site, """
        [manager]
        paths = ["plugins"]
        watch = true

        [plugins.greet]
    """)
    daemons.append(daemon)
    await daemon.ready()
    code, out, err = await daemon.cli("call", "greet", "hello", "eve")
    assert (code, out.strip()) == (0, '"hello eve"'), err
    code, out, err = await daemon.cli("available")
    rows = [line.split(None, 1) for line in out.splitlines()]
    assert ["greet", "loaded"] in rows and ["remote", "not loaded"] in rows, out
    await daemon.proto.wait_for("Watching")
    edit(site / "acme_greet" / "greet.py", '"hello', '"ahoy')
    await daemon.proto.wait_for("plugin_reloaded")
    code, out, err = await daemon.cli("call", "greet", "hello", "eve")
    assert (code, out.strip()) == (0, '"ahoy eve"'), err


@pytest_twisted.ensureDeferred
async def test_twist_plugmgr_with_entry_points_off(tmp_path, site, daemons):
    home = tmp_path / "home"
    home.mkdir()
    daemon = daemon_in(home, site, """
        [manager]
        paths = ["plugins"]
        entry_points = false

        [plugins.greet]
    """)
    daemons.append(daemon)
    await daemon.ready()
    expected = f"plugin 'greet': no such plugin: not found in path {home / 'plugins'}"
    lines = [line for line in daemon.proto.text.splitlines() if expected in line]
    assert len(lines) == 1, daemon.proto.text
    assert "Traceback" not in daemon.proto.text
    assert "plugmgr ready: 0 of 1 plugins loaded; failed: greet" in daemon.proto.text
    code, out, err = await daemon.cli("available", "--names")
    assert (code, out.split()) == (0, ["alpha", "beta", "delta", "gamma"]), err
