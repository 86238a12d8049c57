"""
Tests for L{twisted_plugmgr._tap}: the twistd/twist options, the top
service (start, stop, control channel, IRC wiring, signals) and reconfig,
in process, with real plugin files and a real UNIX socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import Any, Dict, List

import pytest
import pytest_twisted
from _processes import BASE, REPO, TextWaiters, make_home, timeout, write_config, write_plugin
from twisted.application.service import IServiceMaker, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_plugmgr import CompileFailed, _tap
from twisted_plugmgr._control import connect
from twisted_plugmgr._lifecycle import ShutdownMode
from twisted_plugmgr._tap import Options, PlugmgrService, StartupError, makeService

#: A shutdown that tells the test it began, with the mode and a Deferred the
#: test fires to let it finish: the test sets C{on_shutdown} (a Deferred) on
#: the plugin's class first.
GATED_SHUTDOWN = """
def shutdown(self, mode, reason):
    from twisted.internet.defer import Deferred

    finish = Deferred()
    type(self).on_shutdown.callback((mode.value, finish))
    return finish.addCallback(lambda _: "slowly done")
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    make_home(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def options(*argv) -> Options:
    o = Options()
    o.parseOptions(list(argv))
    return o


class LogCapture:
    """
    The lines logged, which can be waited for.
    """

    def __init__(self):
        self.lines: List[str] = []
        self.waiters = TextWaiters(lambda: "\n".join(self.lines))

    def __call__(self, event):
        self.lines.append(formatEvent(event) or "")
        # Waiters fire on a later reactor turn, not inside the code that logs
        # (which may run in any thread).
        reactor.callFromThread(self.waiters.check)

    def has(self, text):
        return any(text in line for line in self.lines)

    def wait_for(self, text) -> Deferred:
        """
        Fire once C{text} was logged.
        """
        return self.waiters.wait_for(text)


@pytest.fixture
def log():
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    yield capture
    globalLogPublisher.removeObserver(capture)


class Running:
    """
    A started service, stopped at teardown.
    """

    def __init__(self, config_file, *argv, handle_signals=False):
        #: One True per time the service asked to stop the process.
        self.stops: List[Any] = []
        #: Fires when the service first asks to stop the process.
        self.stop_requested: Deferred = Deferred()
        args = ["--config", config_file] if config_file else []
        self.options = options(*args, *argv)
        self.service = PlugmgrService(self.options["settings"], reactor,
                                      handle_signals=handle_signals,
                                      stop=self.request_stop)
        self.manager = self.service.manager

    def request_stop(self):
        self.stops.append(True)
        if not self.stop_requested.called:
            self.stop_requested.callback(None)

    async def start(self):
        self.service.startService()
        return await timeout(self.service.ready)

    def table(self) -> Dict[str, Any]:
        return self.manager.plugin_table()

    def instance(self, name):
        return self.manager.getServiceNamed(name)

    def stop(self):
        if self.service.running:
            return timeout(self.service.stopService())
        return Deferred.fromCoroutine(nothing())


async def nothing():
    return None


@pytest.fixture
def running():
    started: List[Running] = []

    def make(*a, **kw):
        r = Running(*a, **kw)
        started.append(r)
        return r

    yield make
    for r in started:
        pytest_twisted.blockon(r.stop())


# --- options ----------------------------------------------------------------------


def test_defaults_without_config(home):
    settings = options()["settings"]
    assert settings.config_file is None
    assert settings.control == f"unix:path={home}/plugmgr.sock"
    assert settings.config.plugins == {}
    assert settings.token is None


def test_config_file(home):
    settings = options("--config", write_config(home, BASE))["settings"]
    assert settings.config.manager.paths == (str(home / "plugins"),)
    assert settings.config.enabled() == ("alpha", "beta")
    assert settings.control == f"unix:path={home}/plugmgr.sock"


def test_command_line_overrides_the_file(home):
    (home / "other").mkdir()
    config = write_config(home, BASE.replace(
        "[manager]\n", '[manager]\nshutdown_mode = "smart"\npackages = ["somepkg"]\n'))
    settings = options(
        "--config", config, "--package", "a.b", "--package", "c", "--path", "other",
        "--load", "gamma", "--load", "delta", "--watch", "--control", "unix:path=x.sock",
        "--shutdown-mode", "lazy",
    )["settings"]
    m = settings.config.manager
    assert m.packages == ("a.b", "c")
    assert m.paths == (str(home / "other"),)
    assert m.watch is True
    assert m.shutdown_mode is ShutdownMode.LAZY
    assert settings.control == "unix:path=x.sock"
    # --load adds to the enabled plugins, and enables a disabled one.
    assert settings.config.enabled() == ("alpha", "beta", "gamma", "delta")


def test_usage_error_names_file_and_key(home):
    config = write_config(home, '[plugins.alpha]\nenabled = "yes"\n')
    with pytest.raises(usage.UsageError) as info:
        options("--config", config)
    assert str(info.value) == (f"{config}: plugins.alpha.enabled: expected true or false, "
                               "got a string 'yes'")


def test_missing_config_file(home):
    with pytest.raises(usage.UsageError) as info:
        options("--config", "nope.toml")
    assert str(info.value) == "nope.toml: cannot read the file (No such file or directory)"


def test_invalid_shutdown_mode_option(home):
    with pytest.raises(usage.UsageError) as info:
        options("--shutdown-mode", "fast")
    assert "--shutdown-mode: invalid shutdown mode 'fast'" in str(info.value)


def test_invalid_load_name(home):
    with pytest.raises(usage.UsageError) as info:
        options("--load", "../x")
    assert "--load: " in str(info.value) and "invalid plugin name" in str(info.value)


def test_invalid_package_option(home):
    with pytest.raises(usage.UsageError) as info:
        options("--package", "my-pkg")
    assert "--package: expected a dotted Python package name" in str(info.value)


def test_path_that_does_not_exist(home):
    config = write_config(home, '[manager]\npaths = ["missing"]\n')
    with pytest.raises(usage.UsageError) as info:
        options("--config", config)
    assert str(info.value) == (f"{config}: manager.paths[0]: expected an existing directory, "
                               f"got '{home}/missing'")


def test_tcp_control_needs_a_token(home):
    config = write_config(home, '[manager]\ncontrol = "tcp:8123"\n')
    with pytest.raises(usage.UsageError) as info:
        options("--config", config)
    assert "manager.control: a control endpoint that is not a UNIX socket needs" in \
        str(info.value)


def test_tcp_control_on_the_command_line_needs_a_token(home):
    with pytest.raises(usage.UsageError) as info:
        options("--control", "tcp:8123")
    assert "<command line>: manager.control" in str(info.value)


def test_token_file_is_read(home):
    (home / "token").write_text("s3cret\n")
    config = write_config(home, '[manager]\ncontrol = "tcp:8123:interface=127.0.0.1"\n'
                          'control_token_file = "token"\n')
    assert options("--config", config)["settings"].token == "s3cret"


def test_empty_token_file(home):
    (home / "token").write_text("\n")
    config = write_config(home, '[manager]\ncontrol_token_file = "token"\n')
    with pytest.raises(usage.UsageError) as info:
        options("--config", config)
    assert "manager.control_token_file: a file holding the token, got an empty file" in \
        str(info.value)


def test_invalid_endpoint(home):
    with pytest.raises(usage.UsageError) as info:
        options("--control", "bogus:1")
    assert "expected a Twisted server endpoint string" in str(info.value)


def test_make_service_configures_the_manager(home):
    config = write_config(home, BASE.replace(
        "[manager]\n", '[manager]\nshutdown_mode = "lazy"\nstart_deadline = 3\n'
        "deadlines = { smart = 4 }\n"))
    service = makeService(options("--config", config), reactor)
    manager = service.getServiceNamed("manager")
    assert manager.paths == (str(home / "plugins"),)
    assert manager.deadlines[ShutdownMode.SMART] == 4.0
    assert manager.stop_mode is ShutdownMode.LAZY
    assert manager.start_deadline == 3.0
    assert service.getServiceNamed("control").description == f"unix:path={home}/plugmgr.sock"


# --- the service -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_start_loads_enabled_plugins_and_listens(home, running):
    r = running(write_config(home, BASE))
    outcome = await r.start()
    assert outcome == {"alpha": True, "beta": True}
    assert sorted(r.table()) == ["alpha", "beta"]
    assert r.instance("alpha").data == {"n": 1}
    assert r.instance("beta").data is None
    client = await timeout(connect(reactor, f"unix:path={home}/plugmgr.sock"))
    rows = await timeout(client.status())
    assert [row["name"] for row in rows] == ["alpha", "beta"]
    await client.close()
    await r.stop()
    assert not os.path.exists(home / "plugmgr.sock")
    assert r.table() == {}


@pytest_twisted.ensureDeferred
async def test_a_plugin_failing_at_start_does_not_stop_the_others(home, running,
                                                                   logged_failures):
    (home / "plugins" / "broken.py").write_text("this is not python\n")
    r = running(write_config(home, BASE + "\n[plugins.broken]\n"))
    outcome = await r.start()
    assert outcome["alpha"] is True and outcome["beta"] is True
    assert outcome["broken"].check(CompileFailed)
    assert sorted(r.table()) == ["alpha", "beta"]
    logged_failures.flush(CompileFailed, SyntaxError)


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_a_slow_shutdown(home, running):
    write_plugin(home / "plugins", "slow", body=GATED_SHUTDOWN)
    r = running(write_config(home, '[manager]\npaths = ["plugins"]\nshutdown_mode = "lazy"\n'
                             "[plugins.slow]\n"))
    await r.start()
    type(r.instance("slow")).on_shutdown = Deferred()
    stopped: List[Any] = []
    d = r.service.stopService().addBoth(lambda result: stopped.append(True) or result)
    mode, finish = await timeout(type(r.instance("slow")).on_shutdown)
    assert mode == "lazy"
    assert stopped == []
    finish.callback(None)
    await timeout(d)
    assert stopped == [True]
    assert r.table() == {}


@pytest_twisted.ensureDeferred
async def test_control_shutdown_stops_the_process(home, running):
    r = running(write_config(home, BASE))
    await r.start()
    client = await timeout(connect(reactor, f"unix:path={home}/plugmgr.sock"))
    await timeout(client.shutdown())
    assert r.table() == {}
    await timeout(r.stop_requested)
    assert r.stops == [True]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_socket_in_use_stops_everything_before_it_starts(home, running, log):
    first = running(write_config(home, BASE))
    await first.start()
    second = running(str(home / "plugmgr.toml"))
    with pytest.raises(StartupError) as info:
        second.service.startService()
    assert "in use by a running process" in str(info.value)
    assert isinstance(info.value, SystemExit) and isinstance(info.value, Exception)
    assert not second.manager.running
    assert second.table() == {}
    assert log.has("cannot start: ")


# --- reconfig -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reconfig_loads_unloads_and_reloads(home, running, log):
    config = write_config(home, BASE + "\n[plugins.delta]\n")
    r = running(config)
    await r.start()
    await timeout(r.manager.load("gamma"))  # loaded by hand; the file disables it
    beta = r.instance("beta")
    write_config(home, """
        [manager]
        paths = ["plugins"]

        [plugins.alpha]
        data = { n = 2 }      # changed: reloaded with the new data

        [plugins.beta]        # unchanged: left alone

        [plugins.gamma]
        enabled = false       # disabled: unloaded

        # delta removed: unloaded

        [plugins.epsilon]     # new: loaded
        data = "e"
    """)
    write_plugin(home / "plugins", "epsilon")
    await timeout(r.service.reconfig())
    assert sorted(r.table()) == ["alpha", "beta", "epsilon"]
    assert r.instance("alpha").data == {"n": 2}
    assert r.table()["alpha"].reloads == 1
    assert r.instance("beta") is beta
    assert r.instance("epsilon").data == "e"
    assert log.has("reconfig done")


@pytest_twisted.ensureDeferred
async def test_reconfig_leaves_plugins_loaded_by_hand(home, running):
    r = running(write_config(home, BASE))
    await r.start()
    await timeout(r.manager.load("delta"))
    await timeout(r.service.reconfig())
    assert sorted(r.table()) == ["alpha", "beta", "delta"]


@pytest_twisted.ensureDeferred
async def test_reconfig_with_a_broken_file_changes_nothing(home, running, log):
    config = write_config(home, BASE)
    r = running(config)
    await r.start()
    alpha = r.instance("alpha")
    write_config(home, BASE.replace("[plugins.beta]", "[plugins.beta]\nenabled = 3"))
    await timeout(r.service.reconfig())
    assert log.has(f"reconfig aborted, nothing changed: {config}: plugins.beta.enabled: "
                   "expected true or false, got an integer 3")
    assert sorted(r.table()) == ["alpha", "beta"]
    assert r.instance("alpha") is alpha


@pytest_twisted.ensureDeferred
async def test_reconfig_during_a_reconfig_runs_once_after(home, running, monkeypatch):
    r = running(write_config(home, BASE))
    await r.start()
    reads = []
    real = _tap.read_config

    def counting(*a):
        reads.append(a)
        return real(*a)

    monkeypatch.setattr(_tap, "read_config", counting)
    first = r.service.reconfig()
    second = r.service.reconfig()
    third = r.service.reconfig()
    await timeout(first)
    await timeout(second)
    await timeout(third)
    assert len(reads) == 2


@pytest_twisted.ensureDeferred
async def test_reconfig_without_a_file_does_nothing(home, running, log):
    r = running(None, "--path", "plugins", "--load", "alpha")
    await r.start()
    await timeout(r.service.reconfig())
    assert log.has("reconfig: no config file")
    assert sorted(r.table()) == ["alpha"]


# --- signals ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_signal_handlers_installed_and_restored(home, running):
    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    r = running(write_config(home, BASE), handle_signals=True)
    await r.start()
    for s in before:
        installed = signal.getsignal(s)
        assert callable(installed) and installed != before[s]
    await r.stop()
    assert {s: signal.getsignal(s) for s in before} == before


@pytest_twisted.ensureDeferred
async def test_sighup_reconfigures(home, running, log):
    r = running(write_config(home, BASE), handle_signals=True)
    await r.start()
    write_config(home, BASE + "\n[plugins.delta]\n")
    os.kill(os.getpid(), signal.SIGHUP)
    await log.wait_for("reconfig done")
    assert "delta" in r.table()
    assert log.has("received SIGHUP, reconfiguring")


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_the_reactor(home, running, log):
    """
    SIGTERM asks to stop the reactor, which waits for the staged shutdown.
    (That the process then exits with status 0, not with the signal, is
    test_process's.)
    """
    r = running(write_config(home, BASE), handle_signals=True)
    await r.start()
    os.kill(os.getpid(), signal.SIGTERM)
    await timeout(r.stop_requested)
    assert r.stops == [True]
    assert log.has("received SIGTERM, shutting down (smart)")


# --- the IRC bot -------------------------------------------------------------------------


class FakeBot(Service):
    def __init__(self, record):
        self.record = record

    def startService(self):
        Service.startService(self)
        self.record.append("bot started")

    def stopService(self):
        Service.stopService(self)
        self.record.append("bot stopped")


@pytest_twisted.ensureDeferred
async def test_irc_section_starts_the_bot_after_the_manager(home, running, monkeypatch):
    import twisted_plugmgr.irc as irc

    record: List[str] = []
    made: List[tuple] = []

    def make_bot_service(manager, irc_config, reactor_):
        made.append((manager, irc_config, reactor_))
        record.append(f"manager running: {bool(manager.running)}")
        return FakeBot(record)

    monkeypatch.setattr(irc, "make_bot_service", make_bot_service)
    r = running(write_config(home, BASE + '\n[irc]\nserver = "tcp:localhost:6667"\n'
                             'nick = "bot"\n'))
    assert made[0][0] is r.manager
    assert made[0][1].nick == "bot"
    assert made[0][2] is reactor
    await r.start()
    await r.stop()
    assert record == ["manager running: False", "bot started", "bot stopped"]


def test_irc_bot_missing_is_only_a_warning(home, monkeypatch, log):
    monkeypatch.setitem(sys.modules, "twisted_plugmgr.irc", None)
    config = write_config(home, BASE + '\n[irc]\nserver = "tcp:localhost:6667"\nnick = "b"\n')
    service = makeService(options("--config", config), reactor)
    assert service.bot is None
    assert log.has("[irc] ignored")


# --- the drop-in --------------------------------------------------------------------------


def test_dropin_lists_plugmgr_with_a_read_only_cache(tmp_path, monkeypatch, log):
    """
    The drop-in is found even where dropin.cache cannot be written; that
    costs a log line, nothing else.
    """
    root = tmp_path / "root"
    dropins = root / "plugmgr_test_dropins"
    dropins.mkdir(parents=True)
    (dropins / "__init__.py").write_text("")
    shutil.copy(os.path.join(REPO, "twisted", "plugins", "plugmgr_plugin.py"), dropins)
    monkeypatch.syspath_prepend(str(root))
    for name in ("plugmgr_test_dropins", "plugmgr_test_dropins.plugmgr_plugin"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import plugmgr_test_dropins as package

    monkeypatch.setitem(sys.modules, "plugmgr_test_dropins", package)
    real = FilePath.setContent

    def read_only(self, content, ext=b".new"):
        if self.basename() == "dropin.cache":
            raise PermissionError(13, "Permission denied", self.path)
        return real(self, content, ext)

    monkeypatch.setattr(FilePath, "setContent", read_only)
    try:
        makers = list(getPlugins(IServiceMaker, package))
    finally:
        sys.modules.pop("plugmgr_test_dropins.plugmgr_plugin", None)
    assert [m.tapname for m in makers] == ["plugmgr"]
    assert makers[0].options is Options
    assert not (dropins / "dropin.cache").exists()
    assert log.has("Unable to write to plugin cache")
