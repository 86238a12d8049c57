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

from twisted_plugmgr import CompileFailed, NoSuchPlugin, PluginError, PluginManager, _reconfig
from twisted_plugmgr._control import connect
from twisted_plugmgr._lifecycle import ShutdownMode
from twisted_plugmgr._policy import POLICY_KEYS, RestartPolicy
from twisted_plugmgr._reconfig import ReconfigOutcome, ReconfigRefused
from twisted_plugmgr._tap import Options, PlugmgrService, StartupError, makeService
from twisted_plugmgr.testing import EventRecorder

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

#: A handler that says the plugin is broken (its restart policy decides).
BROKE = """
@handler()
def broke(self):
    self.api.fail("upstream gone")
    return "said so"
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

    def __init__(self, config_file, *argv, handle_signals=False, manager_factory=None):
        #: One True per time the service asked to stop the process.
        self.stops: List[Any] = []
        #: Fires when the service first asks to stop the process.
        self.stop_requested: Deferred = Deferred()
        args = ["--config", config_file] if config_file else []
        self.options = options(*args, *argv)
        self.service = PlugmgrService(self.options["settings"], reactor,
                                      handle_signals=handle_signals,
                                      manager_factory=manager_factory,
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


class RecordingManager(PluginManager):
    """
    A real manager that also records how the service drives it: its restart
    policy arguments, and each load, reload (one of a transaction too),
    set_policy and set_restart_policy call.
    """

    def __init__(self, *a, **kw):
        self.created_with = {key: kw[key] for key in POLICY_KEYS if key in kw}
        self.calls: List[tuple] = []
        super().__init__(*a, **kw)

    def load(self, name, data=None, **policy):
        self.calls.append(("load", name, policy))
        return super().load(name, data, **policy)

    def reload(self, name, *a, **kw):
        self.calls.append(("reload", name))
        return super().reload(name, *a, **kw)

    def reload_many(self, names, *a, **kw):
        # A reconfig reloads what changed in one transaction.
        self.calls.extend(("reload", name) for name in names)
        return super().reload_many(names, *a, **kw)

    def set_policy(self, name, **policy):
        self.calls.append(("set_policy", name, policy))
        return super().set_policy(name, **policy)

    def set_restart_policy(self, **policy):
        self.calls.append(("set_restart_policy", policy))
        return super().set_restart_policy(**policy)


def next_event(manager, kind) -> Deferred:
    """
    Fire with the next event of C{kind} (a bounded wait).
    """
    d: Deferred = Deferred()

    def listener(event):
        if event.kind == kind and not d.called:
            manager.unregister(listener)
            d.callback(event)

    manager.register(listener)
    return timeout(d)


def section(name, *lines, data=None):
    """
    A C{[plugins.NAME]} section (or C{[manager]} with C{paths}) of C{lines}.
    """
    head = '[manager]\npaths = ["plugins"]\n' if name == "manager" else f"[plugins.{name}]\n"
    if data is not None:
        head += f"data = {data}\n"
    return head + "".join(line + "\n" for line in lines) + "\n"


def policy_config(manager=(), alpha=(), beta=(), alpha_data="{ n = 1 }", extra=""):
    """
    BASE, with restart policy lines in [manager], [plugins.alpha] and
    [plugins.beta].
    """
    return (section("manager", *manager) + section("alpha", *alpha, data=alpha_data)
            + section("beta", *beta) + "[plugins.gamma]\nenabled = false\n" + extra)


#: What a reconfig's summary line says when only restart policies changed.
NOTHING_RELOADED = "reconfig: unload [], reload [], load [], restart policy "


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
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome(loaded=("epsilon",), unloaded=("delta", "gamma"),
                                      reloaded=("alpha",))
    assert outcome.changed
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
    with pytest.raises(ReconfigRefused) as info:
        await timeout(r.service.reconfig())
    assert info.value.reason == (f"{config}: plugins.beta.enabled: expected true or false, "
                                 "got an integer 3")
    assert log.has(f"reconfig aborted, nothing changed: {info.value.reason}")
    assert sorted(r.table()) == ["alpha", "beta"]
    assert r.instance("alpha") is alpha


@pytest_twisted.ensureDeferred
async def test_reconfig_during_a_reconfig_runs_once_after(home, running, monkeypatch):
    r = running(write_config(home, BASE))
    await r.start()
    reads = []
    real = _reconfig.read_config

    def counting(*a):
        reads.append(a)
        settings = real(*a)
        if len(reads) == 1:
            # What the run the second and third are folded into reads.
            write_config(home, BASE)
        return settings

    monkeypatch.setattr(_reconfig, "read_config", counting)
    write_config(home, BASE + "\n[plugins.delta]\n")
    first = r.service.reconfig()
    second = r.service.reconfig()
    third = r.service.reconfig()
    # Each waiter gets the outcome of the run it was folded into.
    assert await timeout(first) == ReconfigOutcome(loaded=("delta",))
    assert await timeout(second) == ReconfigOutcome(unloaded=("delta",))
    assert await timeout(third) == ReconfigOutcome(unloaded=("delta",))
    assert len(reads) == 2


@pytest_twisted.ensureDeferred
async def test_reconfig_without_a_file_does_nothing(home, running, log):
    r = running(None, "--path", "plugins", "--load", "alpha")
    await r.start()
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome() and not outcome.changed
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


# --- restart policies --------------------------------------------------------------------


def test_policy_keys_reach_the_settings(home):
    config = write_config(home, policy_config(manager=['restart = "no"', "restart_burst = 2"],
                                              alpha=["fail_on_error = true"]))
    settings = options("--config", config)["settings"]
    assert settings.config.manager.policy() == {"restart": "no", "restart_burst": 2}
    assert settings.config.plugins["alpha"].policy() == {"fail_on_error": True}
    assert settings.config.plugins["beta"].policy() == {}


@pytest.mark.parametrize("where, line, message", [
    ("manager", "restart_burst = -1",
     "manager.restart_burst: expected a whole number >= 0, got an integer -1"),
    ("alpha", 'restart = "never"',
     "plugins.alpha.restart: expected one of 'no', 'on-failure', 'always', "
     "got a string 'never'"),
])
def test_a_bad_policy_key_is_a_usage_error(home, where, line, message):
    config = write_config(home, policy_config(**{where: [line]}))
    with pytest.raises(usage.UsageError) as info:
        options("--config", config)
    assert str(info.value) == f"{config}: {message}"


def test_the_manager_gets_the_files_default_policy(home):
    config = write_config(home, policy_config(
        manager=['restart = "always"', "restart_delay = 0.5", "restart_delay_max = 4",
                 "restart_burst = 2", "restart_interval = 60", "fail_on_error = true"]))
    service = PlugmgrService(options("--config", config)["settings"], reactor,
                             handle_signals=False, manager_factory=RecordingManager)
    assert service.manager.created_with == {
        "restart": "always", "restart_delay": 0.5, "restart_delay_max": 4.0,
        "restart_burst": 2, "restart_interval": 60.0, "fail_on_error": True,
    }
    assert service.manager.restart_policy == RestartPolicy(
        restart="always", restart_delay=0.5, restart_delay_max=4, restart_burst=2,
        restart_interval=60, fail_on_error=True)


def test_without_policy_keys_the_manager_keeps_its_defaults(home):
    service = PlugmgrService(options("--config", write_config(home, BASE))["settings"],
                             reactor, handle_signals=False, manager_factory=RecordingManager)
    assert service.manager.created_with == {}
    assert service.manager.restart_policy == RestartPolicy()


@pytest_twisted.ensureDeferred
async def test_start_loads_each_plugin_with_its_policy(home, running):
    write_plugin(home / "plugins", "beta", body="restart_burst = 7\n")
    r = running(write_config(home, policy_config(
        manager=["restart_delay = 2"], alpha=['restart = "no"', "fail_on_error = true"])),
        manager_factory=RecordingManager)
    await r.start()
    assert r.manager.calls == [
        ("load", "alpha", {"restart": "no", "fail_on_error": True}),
        ("load", "beta", {}),
    ]
    assert r.manager.policy_of("alpha") == RestartPolicy(
        restart="no", fail_on_error=True, restart_delay=2)
    # beta: its class's attribute over the manager's default.
    assert r.manager.policy_of("beta") == RestartPolicy(restart_burst=7, restart_delay=2)


@pytest_twisted.ensureDeferred
async def test_sighup_applies_a_policy_only_change_without_reloading(home, running, log,
                                                                      logged_failures):
    write_plugin(home / "plugins", "alpha", body=BROKE)
    r = running(write_config(home, policy_config()), handle_signals=True,
                manager_factory=RecordingManager)
    await r.start()
    alpha, beta = r.instance("alpha"), r.instance("beta")
    assert r.manager.policy_of("alpha").restart == "on-failure"
    events = EventRecorder()
    r.manager.register(events)
    del r.manager.calls[:]
    write_config(home, policy_config(alpha=['restart = "no"', "restart_burst = 1"]))
    os.kill(os.getpid(), signal.SIGHUP)
    await log.wait_for("reconfig done")
    assert r.manager.calls == [("set_policy", "alpha", {"restart": "no", "restart_burst": 1})]
    assert r.instance("alpha") is alpha and r.instance("beta") is beta
    assert r.table()["alpha"].reloads == 0
    # No plugin_reloaded; nothing stopped, started or restarted.
    assert [e.kind for e in events.events if e.kind != "plugin_table"] == []
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="no", restart_burst=1)
    assert r.manager.policy_of("beta") == RestartPolicy()
    assert log.has(NOTHING_RELOADED + "['alpha']")
    assert log.has("reconfig: restart policy of alpha: restart='no', restart_burst=1 "
                   "(not reloaded); in effect: restart='no', restart_delay=0.1, "
                   "restart_delay_max=30.0, restart_burst=1, restart_interval=10.0, "
                   "fail_on_error=False")
    assert not log.has("restart to apply")
    # In effect: a failure now unloads alpha instead of restarting it.
    unloaded = next_event(r.manager, "plugin_unloaded")
    assert await timeout(r.manager.call("alpha", "broke")) == "said so"
    assert (await unloaded).reason == "failed"
    assert "alpha" not in r.table() and events.of("plugin_restarting") == []
    logged_failures.flush(PluginError)


@pytest_twisted.ensureDeferred
async def test_reconfig_a_policy_key_removed_goes_back_to_the_class_or_the_manager(
        home, running, log):
    write_plugin(home / "plugins", "alpha", body="restart_burst = 7\n")
    r = running(write_config(home, policy_config(
        manager=["restart_delay = 2"],
        alpha=['restart = "always"', "restart_burst = 1", "restart_delay = 0"])),
        manager_factory=RecordingManager)
    await r.start()
    alpha = r.instance("alpha")
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="always", restart_burst=1,
                                                         restart_delay=0)
    del r.manager.calls[:]
    write_config(home, policy_config(manager=["restart_delay = 2"]))
    await timeout(r.service.reconfig())
    assert r.manager.calls == [("set_policy", "alpha", {})]
    assert r.instance("alpha") is alpha and r.table()["alpha"].reloads == 0
    # restart_burst: the class's; restart_delay: the manager's; restart: the default.
    assert r.manager.policy_of("alpha") == RestartPolicy(restart_burst=7, restart_delay=2)
    assert log.has("reconfig: restart policy of alpha: none given (not reloaded); "
                   "in effect: restart='on-failure', restart_delay=2.0, ")


@pytest_twisted.ensureDeferred
async def test_reconfig_a_data_and_policy_change_sets_the_policy_then_reloads(
        home, running, log):
    r = running(write_config(home, policy_config()), manager_factory=RecordingManager)
    await r.start()
    del r.manager.calls[:]
    write_config(home, policy_config(alpha=['restart = "always"'], alpha_data="{ n = 2 }"))
    await timeout(r.service.reconfig())
    assert r.manager.calls == [("set_policy", "alpha", {"restart": "always"}),
                               ("reload", "alpha")]
    assert r.instance("alpha").data == {"n": 2} and r.table()["alpha"].reloads == 1
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="always")
    assert log.has("reconfig: unload [], reload ['alpha'], load [], restart policy ['alpha']")
    assert log.has("reconfig: restart policy of alpha: restart='always' (before its reload)")
    assert log.has("reconfig done")


@pytest_twisted.ensureDeferred
async def test_reconfig_a_data_only_change_sets_no_policy(home, running):
    r = running(write_config(home, policy_config(alpha=['restart = "no"'])),
                manager_factory=RecordingManager)
    await r.start()
    del r.manager.calls[:]
    write_config(home, policy_config(alpha=['restart = "no"'], alpha_data="{ n = 2 }"))
    await timeout(r.service.reconfig())
    assert r.manager.calls == [("reload", "alpha")]
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="no")


@pytest_twisted.ensureDeferred
async def test_reconfig_loads_a_new_plugin_with_its_policy_and_unloads_without_one(
        home, running):
    r = running(write_config(home, policy_config()), manager_factory=RecordingManager)
    await r.start()
    del r.manager.calls[:]
    write_config(home, policy_config(beta=['restart = "no"'], extra="""
        [plugins.delta]
        restart = "always"
        restart_delay = 0
    """.replace("        ", "")).replace("[plugins.beta]\n", "[plugins.beta]\nenabled = false\n"))
    await timeout(r.service.reconfig())
    # beta is unloaded (its new policy is not set), delta loaded under its own.
    assert r.manager.calls == [("load", "delta", {"restart": "always", "restart_delay": 0.0})]
    assert sorted(r.table()) == ["alpha", "delta"]
    assert r.manager.policy_of("delta") == RestartPolicy(restart="always", restart_delay=0)


@pytest_twisted.ensureDeferred
async def test_reconfig_changes_the_managers_default_policy(home, running, log):
    r = running(write_config(home, policy_config(
        manager=["restart_burst = 2", "restart_delay = 0.5"], alpha=['restart = "always"'])),
        manager_factory=RecordingManager)
    await r.start()
    alpha, beta = r.instance("alpha"), r.instance("beta")
    del r.manager.calls[:]
    write_config(home, policy_config(
        manager=['restart = "no"', "restart_delay = 0.5", "watch = true"],
        alpha=['restart = "always"']))
    await timeout(r.service.reconfig())
    # Only the changes: restart_burst, no longer given, goes back to the default.
    assert r.manager.calls == [("set_restart_policy", {"restart": "no", "restart_burst": 5})]
    assert r.manager.restart_policy == RestartPolicy(restart="no", restart_delay=0.5)
    # At once for a plugin that does not say otherwise; alpha's own key stays.
    assert r.manager.policy_of("beta") == RestartPolicy(restart="no", restart_delay=0.5)
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="always", restart_delay=0.5)
    assert r.instance("alpha") is alpha and r.instance("beta") is beta
    assert log.has("reconfig: manager restart policy: restart='no', restart_burst=5; "
                   "in effect: restart='no', restart_delay=0.5, restart_delay_max=30.0, "
                   "restart_burst=5, restart_interval=10.0, fail_on_error=False")
    # watch still needs a restart; the policy does not.
    assert log.has("reconfig: watch changed; restart to apply")
    assert not any("restart_" in line and "restart to apply" in line for line in log.lines)
    # The same file again: nothing to set.
    del r.manager.calls[:]
    await timeout(r.service.reconfig())
    assert r.manager.calls == []


@pytest.mark.parametrize("where, line, message", [
    ("manager", "restart_interval = 0",
     "manager.restart_interval: expected a positive number of seconds, got an integer 0"),
    ("alpha", 'fail_on_error = "yes"',
     "plugins.alpha.fail_on_error: expected true or false, got a string 'yes'"),
])
@pytest_twisted.ensureDeferred
async def test_reconfig_with_a_bad_policy_key_changes_nothing(home, running, log, where, line,
                                                              message):
    r = running(write_config(home, policy_config(manager=['restart = "always"'],
                                                 alpha=["restart_burst = 3"])),
                manager_factory=RecordingManager)
    await r.start()
    alpha = r.instance("alpha")
    del r.manager.calls[:]
    config = write_config(home, policy_config(**{where: [line]}, extra="[plugins.delta]\n"))
    with pytest.raises(ReconfigRefused) as info:
        await timeout(r.service.reconfig())
    assert info.value.reason == f"{config}: {message}"
    assert log.has(f"reconfig aborted, nothing changed: {config}: {message}")
    assert r.manager.calls == []
    assert sorted(r.table()) == ["alpha", "beta"] and r.instance("alpha") is alpha
    assert r.manager.restart_policy == RestartPolicy(restart="always")
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="always", restart_burst=3)


@pytest.mark.parametrize("error", [NoSuchPlugin("alpha", "it is gone"),
                                   ValueError("invalid restart 'x'")])
@pytest_twisted.ensureDeferred
async def test_reconfig_a_policy_that_cannot_be_set_is_reported(home, running, log,
                                                                monkeypatch, error):
    r = running(write_config(home, policy_config(alpha=["restart_burst = 3"])))
    await r.start()
    alpha = r.instance("alpha")

    def refuse(name, **policy):
        raise error

    monkeypatch.setattr(r.manager, "set_policy", refuse)
    write_config(home, policy_config(alpha=['restart = "no"'], extra="[plugins.delta]\n"))
    await timeout(r.service.reconfig())
    assert log.has(f"reconfig: restart policy of alpha not applied: {error}")
    assert log.has("reconfig done; failed: policy alpha")
    assert r.instance("alpha") is alpha and r.table()["alpha"].reloads == 0
    assert r.manager.policy_of("alpha") == RestartPolicy(restart_burst=3)
    # The rest of the reconfig is done.
    assert sorted(r.table()) == ["alpha", "beta", "delta"]


@pytest_twisted.ensureDeferred
async def test_reconfig_a_manager_policy_that_cannot_be_set_is_tried_again(home, running, log,
                                                                         monkeypatch):
    r = running(write_config(home, policy_config()))
    await r.start()

    def refuse(**policy):
        raise ValueError("invalid restart 'x': expected one of 'no', 'on-failure', 'always'")

    monkeypatch.setattr(r.manager, "set_restart_policy", refuse)
    write_config(home, policy_config(manager=['restart = "no"']))
    await timeout(r.service.reconfig())
    assert log.has("reconfig: manager restart policy not applied: invalid restart 'x': ")
    assert log.has("reconfig done; failed: manager restart policy")
    assert r.manager.restart_policy == RestartPolicy()
    monkeypatch.undo()
    await timeout(r.service.reconfig())
    assert r.manager.restart_policy == RestartPolicy(restart="no")
    assert log.has("reconfig: manager restart policy: restart='no'; in effect: ")


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


@pytest_twisted.ensureDeferred
async def test_a_reconfig_with_one_failure_changes_nothing(home, running, log, logged_failures):
    """
    A reconfig that would load, unload and reload, where one reload fails,
    is one transaction: nothing is loaded, unloaded or reloaded.
    """
    config = write_config(home, BASE + "\n[plugins.delta]\n")
    r = running(config)
    await r.start()
    alpha, beta = r.instance("alpha"), r.instance("beta")
    write_config(home, """
        [manager]
        paths = ["plugins"]

        [plugins.alpha]
        data = { n = 2 }      # changed: would be reloaded

        [plugins.beta]
        data = "changed"      # changed too, but its new version cannot start

        # delta removed: would be unloaded

        [plugins.epsilon]     # new: would be loaded
    """)
    write_plugin(home / "plugins", "epsilon")
    write_plugin(home / "plugins", "beta", body="""
def startService(self):
    raise RuntimeError("beta 2 cannot start")
""")
    with pytest.raises(ReconfigRefused) as info:
        await timeout(r.service.reconfig())
    assert "beta" in info.value.reason and "beta 2 cannot start" in info.value.reason
    assert "\n" not in info.value.reason
    assert sorted(r.table()) == ["alpha", "beta", "delta"]
    assert r.instance("alpha") is not None and r.instance("alpha").data != {"n": 2}
    assert r.table()["alpha"].reloads == 0 and r.table()["beta"].reloads == 0
    assert r.instance("beta").running
    assert log.has("reconfig aborted, nothing changed")
    assert alpha is not None and beta is not None
    logged_failures.flush(Exception)


# --- reconfig outcomes and readiness -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reconfig_that_changes_nothing_says_so(home, running, log):
    r = running(write_config(home, BASE))
    await r.start()
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome() and not outcome.changed
    assert outcome.summary() == "nothing needed to change"
    assert log.has("reconfig done: nothing needed to change")


@pytest_twisted.ensureDeferred
async def test_reconfig_outcome_names_policy_changes(home, running):
    r = running(write_config(home, policy_config()))
    await r.start()
    write_config(home, policy_config(manager=['restart = "no"'], alpha=['restart = "always"']))
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome(policy=("alpha",), manager_policy=True)
    assert outcome.changed
    assert outcome.summary() == "new restart policy for alpha; new default restart policy"


@pytest_twisted.ensureDeferred
async def test_reconfig_with_an_unknown_plugin_is_refused_in_one_line(home, running, log,
                                                                     logged_failures):
    r = running(write_config(home, BASE))
    await r.start()
    alpha = r.instance("alpha")
    write_config(home, BASE + "\n[plugins.delta]\n\n[plugins.nosuch]\n")
    with pytest.raises(ReconfigRefused) as info:
        await timeout(r.service.reconfig())
    reason = info.value.reason
    assert "nosuch" in reason and "\n" not in reason
    # Nothing changed: delta, loaded before nosuch failed, is unloaded again.
    assert sorted(r.table()) == ["alpha", "beta"] and r.instance("alpha") is alpha
    aborted = [line for line in log.lines if line.startswith("reconfig aborted")]
    assert aborted == [f"reconfig aborted, nothing changed: {reason}"]
    assert not any("Traceback" in line for line in log.lines)
    logged_failures.flush(NoSuchPlugin)


@pytest_twisted.ensureDeferred
async def test_readiness_names_each_enabled_plugin(home, running, logged_failures):
    (home / "plugins" / "broken.py").write_text("this is not python\n")
    r = running(write_config(home, BASE + "\n[plugins.broken]\n"))
    await r.start()
    await timeout(r.manager.load("delta"))  # loaded by hand: not the config's
    assert r.service.readiness() == {"alpha": "running", "beta": "running",
                                     "broken": "not loaded"}
    await timeout(r.manager.unload("beta"))
    assert r.service.readiness()["beta"] == "not loaded"
    logged_failures.flush(CompileFailed, SyntaxError)


@pytest_twisted.ensureDeferred
async def test_readiness_follows_the_config_after_a_reconfig(home, running):
    r = running(write_config(home, BASE))
    await r.start()
    events = EventRecorder()
    r.manager.register(events)
    write_config(home, BASE.replace("[plugins.beta]\n", "[plugins.beta]\nenabled = false\n")
                 + "\n[plugins.delta]\n")
    await timeout(r.service.reconfig())
    assert r.service.readiness() == {"alpha": "running", "delta": "running"}
    # A probe asks often: it broadcasts nothing.
    del events.events[:]
    r.service.readiness()
    assert events.events == []


# --- systemd notify, through the service ------------------------------------------------


class NotifySocket:
    """
    A datagram socket the test binds, as systemd's notify socket; the
    datagrams it receives, in order.
    """

    def __init__(self, path):
        import socket as _socket

        self.path = str(path)
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: List[str] = []
        self.waiters = TextWaiters(lambda: "\n---\n".join(self.messages))
        reactor.addReader(self)

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.waiters.check()

    def logPrefix(self):
        return "NotifySocket"

    def connectionLost(self, reason):
        pass

    def wait_for(self, text, count=1) -> Deferred:
        return self.waiters.wait_for(text, count)

    def close(self):
        reactor.removeReader(self)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def notifier_for(sock, **env):
    from twisted_plugmgr._notify import Notifier

    return Notifier(reactor, environ={"NOTIFY_SOCKET": sock.path, **env})


@pytest_twisted.ensureDeferred
async def test_the_service_notifies_ready_reloading_and_stopping(home, notify_socket,
                                                                logged_failures):
    (home / "plugins" / "broken.py").write_text("this is not python\n")
    service = PlugmgrService(
        options("--config", write_config(home, BASE + "\n[plugins.broken]\n"))["settings"],
        reactor, handle_signals=False, stop=lambda: None, notifier=notifier_for(notify_socket))
    service.startService()
    try:
        await timeout(service.ready)
        await notify_socket.wait_for("READY=1")
        assert notify_socket.messages == [
            "READY=1\nSTATUS=2 of 3 plugins loaded; failed: broken"]
        write_config(home, BASE + "\n[plugins.delta]\n")
        await timeout(service.reconfig())
        await notify_socket.wait_for("READY=1", 2)
        reloading, ready = notify_socket.messages[1:]
        lines = reloading.split("\n")
        assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
        assert 0 < int(lines[1].split("=")[1]) <= time_usec()
        assert ready == "READY=1\nSTATUS=reconfig done: loaded delta"
    finally:
        await timeout(service.stopService())
    await notify_socket.wait_for("STOPPING=1")
    assert notify_socket.messages[-1] == "STOPPING=1\nSTATUS=stopping (smart shutdown)"
    logged_failures.flush(CompileFailed, SyntaxError)


def time_usec():
    import time

    return time.monotonic_ns() // 1000


@pytest_twisted.ensureDeferred
async def test_a_refused_reconfig_is_still_followed_by_ready(home, notify_socket):
    config = write_config(home, BASE)
    service = PlugmgrService(options("--config", config)["settings"], reactor,
                             handle_signals=False, stop=lambda: None,
                             notifier=notifier_for(notify_socket))
    service.startService()
    try:
        await timeout(service.ready)
        write_config(home, "[manager\n")
        with pytest.raises(ReconfigRefused):
            await timeout(service.reconfig())
        await notify_socket.wait_for("READY=1", 2)
        assert notify_socket.messages[-1].startswith(
            f"READY=1\nSTATUS=reconfig refused, nothing changed: {config}: invalid TOML")
    finally:
        await timeout(service.stopService())


# --- failures and help -------------------------------------------------------------------


def test_make_service_refuses_a_control_socket_in_use(home):
    """
    twistd builds the service before it forks: a socket in use is reported
    there, on the terminal, as one line.
    """
    import socket as _socket

    server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    server.bind(str(home / "plugmgr.sock"))
    server.listen(1)
    try:
        with pytest.raises(StartupError) as info:
            makeService(options("--config", write_config(home, BASE)), reactor)
    finally:
        server.close()
    assert str(info.value) == (f"plugmgr: control channel 'unix:path={home}/plugmgr.sock': "
                               f"{home}/plugmgr.sock is in use by a running process; "
                               "not taking it over")


def help_faults(text: str) -> List[str]:
    """
    The layout faults of a C{--help} text: lines over 79 columns, runs of
    spaces inside a description (a docstring's indentation), and options
    without a description.
    """
    faults = [f"too long: {line!r}" for line in text.splitlines() if len(line) > 79]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            option, _, description = stripped.partition("  ")
            if not description.strip():
                faults.append(f"no description: {line!r}")
            stripped = description.strip()
        if "  " in stripped:
            faults.append(f"spaces inside: {line!r}")
    return faults


def test_help_has_no_layout_faults(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    text = str(Options())
    assert help_faults(text) == []
    for option in ("--config=", "--control=", "--load=", "--package=", "--path=",
                   "--shutdown-mode=", "--watch"):
        assert option in text


def test_help_fits_a_narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert all(len(line) <= 59 for line in str(Options()).splitlines())


def test_help_faults_are_found():
    """
    The check above can fail: a docstring's indentation, a long line and an
    option without words are each a fault.
    """
    assert len(help_faults("  -x, --xx=   a\n      b        c\n" + "y" * 80 + "\n"
                           "  -z, --zz=\n")) == 3


# --- wiring: the control channel and the web dashboard ----------------------------------


@pytest_twisted.ensureDeferred
async def test_control_channel_reconfig_and_ready(home, running):
    r = running(write_config(home, BASE))
    await r.start()
    client = await timeout(connect(reactor, f"unix:path={home}/plugmgr.sock"))
    try:
        ready = await timeout(client.ready())
        assert ready["plugins"] == {"alpha": "running", "beta": "running"}
        write_config(home, BASE + "\n[plugins.delta]\n")
        answer = await timeout(client.reconfig())
        outcome = answer.get("outcome", answer)
        assert outcome["loaded"] == ["delta"] and outcome["changed"] is True
        assert sorted(r.table()) == ["alpha", "beta", "delta"]
    finally:
        await client.close()


class FakeWeb(Service):
    def __init__(self, record):
        self.record = record

    def startService(self):
        Service.startService(self)
        self.record.append("web started")

    def stopService(self):
        Service.stopService(self)
        self.record.append("web stopped")


WEB = '\n[web]\nendpoint = "tcp:0:interface=127.0.0.1"\n'


@pytest_twisted.ensureDeferred
async def test_web_section_starts_the_dashboard_after_the_bot(home, running, monkeypatch):
    import twisted_plugmgr.irc as irc
    import twisted_plugmgr.web as web

    record: List[str] = []
    made: List[tuple] = []

    def make_web_service(manager, web_config, token, reactor_, reconfig=None):
        made.append((manager, web_config, token, reactor_, reconfig))
        return FakeWeb(record)

    monkeypatch.setattr(irc, "make_bot_service", lambda *a: FakeBot(record))
    monkeypatch.setattr(web, "make_web_service", make_web_service)
    r = running(write_config(home, BASE + '\n[irc]\nserver = "tcp:localhost:6667"\n'
                             'nick = "bot"\n' + WEB + 'token = "w3b"\n'))
    (manager, web_config, token, reactor_, reconfig) = made[0]
    assert manager is r.manager and reactor_ is reactor and token == "w3b"
    assert web_config.endpoint.startswith("tcp:0")
    assert reconfig == r.service.reconfig
    assert r.service.getServiceNamed("web") is r.service.web
    await r.start()
    control_stops: List[str] = []
    real_stop = r.service.control.stopService

    def stop_control():
        control_stops.append(f"control stopped after {record[-1]}")
        return real_stop()

    monkeypatch.setattr(r.service.control, "stopService", stop_control)
    await r.stop()
    assert record == ["bot started", "web started", "bot stopped", "web stopped"]
    assert control_stops == ["control stopped after web stopped"]


def test_web_token_falls_back_to_the_control_token(home, monkeypatch):
    import twisted_plugmgr.web as web

    tokens: List[Any] = []
    monkeypatch.setattr(web, "make_web_service",
                        lambda m, c, token, r, reconfig=None: tokens.append(token) or Service())
    (home / "token").write_text("from-file\n")
    PlugmgrService(options("--config", write_config(
        home, BASE.replace("[manager]\n", '[manager]\ncontrol_token = "ctl"\n') + WEB)
    )["settings"], reactor, handle_signals=False)
    PlugmgrService(options("--config", write_config(home, BASE + WEB + 'token_file = "token"\n'))
                   ["settings"], reactor, handle_signals=False)
    assert tokens == ["ctl", "from-file"]


def test_a_web_service_that_refuses_is_a_startup_error(home, monkeypatch):
    import twisted_plugmgr.web as web

    def refuse(*a, **kw):
        raise ValueError("endpoint 'tcp:9180' ([web] endpoint): reachable from other hosts "
                         "without a token")

    monkeypatch.setattr(web, "make_web_service", refuse)
    config = write_config(home, BASE + WEB)
    with pytest.raises(StartupError) as info:
        makeService(options("--config", config), reactor)
    assert str(info.value) == (f"plugmgr: {config}: [web]: endpoint 'tcp:9180' ([web] "
                               "endpoint): reachable from other hosts without a token")
    assert not os.path.exists(home / "plugmgr.sock")


def test_an_empty_web_token_file_is_a_usage_error(home):
    (home / "token").write_text("\n")
    config = write_config(home, BASE + WEB + 'token_file = "token"\n')
    with pytest.raises(usage.UsageError) as info:
        options("--config", config)
    assert str(info.value) == (f"{config}: web.token_file: a file holding the token, "
                               "got an empty file")


#: A plugin whose start waits for the test: sys.modules["plugmgr_test_gate"].start.
GATED_START = """
def startService(self):
    import sys
    super().startService()
    return sys.modules["plugmgr_test_gate"].start
"""


@pytest.fixture
def gate(monkeypatch):
    import types

    g = types.SimpleNamespace(start=Deferred())
    monkeypatch.setitem(sys.modules, "plugmgr_test_gate", g)
    yield g
    if not g.start.called:
        g.start.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_reconfig_during_the_startup_loads_waits_for_them(home, running, gate):
    write_plugin(home / "plugins", "beta", body=GATED_START)
    r = running(write_config(home, BASE))
    r.service.startService()
    early = r.service.reconfig()
    assert not early.called
    gate.start.callback(None)
    await timeout(r.service.ready)
    # Compared with everything the start loaded, not with half of it.
    assert await timeout(early) == ReconfigOutcome()
    assert sorted(r.table()) == ["alpha", "beta"] and r.table()["alpha"].reloads == 0


@pytest_twisted.ensureDeferred
async def test_a_reconfig_waiting_for_the_start_is_refused_by_a_stop(home, running, gate):
    write_plugin(home / "plugins", "beta", body=GATED_START)
    r = running(write_config(home, BASE))
    r.service.startService()
    waiting = r.service.reconfig()
    stopped = r.service.stopService()
    with pytest.raises(ReconfigRefused) as info:
        await timeout(waiting)
    assert info.value.reason == "the manager is shutting down"
    gate.start.callback(None)
    await timeout(stopped)


@pytest_twisted.ensureDeferred
async def test_a_plugin_that_changes_its_data_does_not_change_the_next_reconfig(home, running):
    """
    Loaded or reloaded by a reconfig, a plugin gets its own copy of its
    data: changing it does not make the same file look changed.
    """
    mutate = """
@handler()
def mutate(self):
    self.data["n"] = 99
    return self.data
"""
    write_plugin(home / "plugins", "alpha", body=mutate)
    write_plugin(home / "plugins", "delta", body=mutate)
    r = running(write_config(home, BASE))
    await r.start()
    config = BASE.replace("{ n = 1 }", "{ n = 2 }") + "\n[plugins.delta]\ndata = { n = 3 }\n"
    write_config(home, config)
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome(loaded=("delta",), reloaded=("alpha",))
    assert await timeout(r.manager.call("alpha", "mutate")) == {"n": 99}
    assert await timeout(r.manager.call("delta", "mutate")) == {"n": 99}
    assert await timeout(r.service.reconfig()) == ReconfigOutcome()
    assert r.table()["alpha"].reloads == 1


@pytest_twisted.ensureDeferred
async def test_control_channel_reconfig_without_a_config_file_is_not_available(home, running):
    from twisted_plugmgr._control import NotAvailableError

    r = running(None, "--path", "plugins", "--load", "alpha")
    await r.start()
    client = await timeout(connect(reactor, f"unix:path={home}/plugmgr.sock"))
    try:
        with pytest.raises(NotAvailableError):
            await timeout(client.reconfig())
        assert (await timeout(client.ready()))["plugins"] == {"alpha": "running"}
    finally:
        await client.close()
    assert sorted(r.table()) == ["alpha"]


# --- a refused reconfig changes nothing; isolation options are applied -------------------


#: Handlers answering the process id of whoever serves them, and its soft
#: limit of open files.
PID = """
@handler()
def pid(self):
    import os
    return os.getpid()

@handler()
def open_files(self):
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
"""


@pytest_twisted.ensureDeferred
async def test_a_refused_reconfig_puts_the_policies_back_and_is_tried_again(
        home, running, log, logged_failures):
    """
    A reconfig that sets new restart policies (the manager's, and that of
    a plugin it reloads) and then fails puts them back; the same file read
    again is tried again, and applied once the failing plugin is fixed.
    """
    r = running(write_config(home, policy_config(manager=["restart_burst = 2"])))
    await r.start()
    settings = r.service.settings
    manager_policy = r.manager.restart_policy
    write_plugin(home / "plugins", "beta", body="""
def startService(self):
    raise RuntimeError("beta 2 cannot start")
""")
    write_config(home, policy_config(manager=['restart = "no"', "restart_burst = 2"],
                                     alpha=['restart = "always"'], alpha_data="{ n = 2 }",
                                     beta=['data = "changed"']))
    for _ in range(2):  # the second time, the same file is tried again
        with pytest.raises(ReconfigRefused) as info:
            await timeout(r.service.reconfig())
        assert "beta 2 cannot start" in info.value.reason
        assert r.manager.restart_policy == manager_policy == RestartPolicy(restart_burst=2)
        assert r.manager.policy_of("alpha") == RestartPolicy(restart_burst=2)
        # The transaction's old versions serve again.
        assert r.instance("alpha").data == {"n": 1} and r.table()["alpha"].reloads == 0
        assert r.service.settings == settings
    assert [line for line in log.lines if line.startswith("reconfig aborted")] == [
        f"reconfig aborted, nothing changed: {info.value.reason}"] * 2
    write_plugin(home / "plugins", "beta")
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome(reloaded=("alpha", "beta"), manager_policy=True)
    assert r.manager.restart_policy == RestartPolicy(restart="no", restart_burst=2)
    assert r.manager.policy_of("alpha") == RestartPolicy(restart="always", restart_burst=2)
    assert r.instance("alpha").data == {"n": 2} and r.instance("beta").data == "changed"
    assert r.service.settings.config.manager.restart == "no"
    logged_failures.flush(Exception)


@pytest_twisted.ensureDeferred
async def test_readiness_does_not_move_after_a_refused_reconfig(home, running,
                                                                 logged_failures):
    """
    A refused reconfig that would have loaded plugins leaves the config the
    service reports on as it was: readiness names no plugin it rolled back.
    """
    r = running(write_config(home, BASE))
    await r.start()
    before = r.service.readiness()
    write_config(home, BASE + "\n[plugins.delta]\n\n[plugins.nosuch]\n")
    with pytest.raises(ReconfigRefused):
        await timeout(r.service.reconfig())
    assert r.service.readiness() == before == {"alpha": "running", "beta": "running"}
    assert sorted(r.table()) == ["alpha", "beta"]
    logged_failures.flush(NoSuchPlugin)


def isolation_config(*alpha, data="{ n = 1 }"):
    """
    BASE, with C{alpha} lines (isolation options) in [plugins.alpha].
    """
    return BASE.replace("[plugins.alpha]\ndata = { n = 1 }\n",
                        "[plugins.alpha]\n" + "".join(line + "\n" for line in alpha)
                        + f"data = {data}\n")


#: A plugin body that counts, with its count as its state.
COUNTING = PID + """
count = 0

@handler()
def bump(self):
    self.count += 1
    return self.count

def get_state(self):
    return self.count

def set_state(self, state):
    self.count = state
"""


@pytest_twisted.ensureDeferred
async def test_reconfig_applies_new_isolation_options(home, running, log):
    """
    A plugin whose isolate, call_deadline or limits changed is reloaded
    with them (and its data), its state handed over: it moves into a
    worker, to a new one, and back; the log says what was done; the others
    are left alone.
    """
    write_plugin(home / "plugins", "alpha", body=COUNTING)
    r = running(write_config(home, isolation_config()))
    await r.start()
    beta = r.instance("beta")
    assert await timeout(r.manager.call("alpha", "pid")) == os.getpid()
    assert await timeout(r.manager.call("alpha", "bump")) == 1

    write_config(home, isolation_config("isolate = true"))
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome(reloaded=("alpha",))
    worker = await timeout(r.manager.call("alpha", "pid"))
    assert worker != os.getpid()
    assert (r.manager.info("alpha").isolated, r.manager.info("alpha").pid) == (True, worker)
    assert await timeout(r.manager.call("alpha", "echo")) == {"n": 1}
    assert await timeout(r.manager.call("alpha", "bump")) == 2  # its state came along
    assert log.has("reconfig: alpha reloaded with isolate=True (its state handed over)")
    assert r.instance("beta") is beta
    # Applied: the same file again changes nothing.
    assert await timeout(r.service.reconfig()) == ReconfigOutcome()

    write_config(home, isolation_config("isolate = true", "call_deadline = 5",
                                        data="{ n = 2 }"))
    assert await timeout(r.service.reconfig()) == ReconfigOutcome(reloaded=("alpha",))
    second = await timeout(r.manager.call("alpha", "pid"))
    assert second not in (worker, os.getpid())
    assert await timeout(r.manager.call("alpha", "echo")) == {"n": 2}
    assert log.has("reconfig: alpha reloaded with isolate=True, call_deadline=5.0 (its state")

    write_config(home, isolation_config("isolate = true", "call_deadline = 5",
                                        "limits = { open_files = 200 }", data="{ n = 2 }"))
    assert await timeout(r.service.reconfig()) == ReconfigOutcome(reloaded=("alpha",))
    assert await timeout(r.manager.call("alpha", "pid")) not in (worker, second, os.getpid())
    assert await timeout(r.manager.call("alpha", "open_files")) == 200
    assert log.has("with isolate=True, call_deadline=5.0, limits={'open_files': 200} (")

    write_config(home, isolation_config(data="{ n = 2 }"))
    assert await timeout(r.service.reconfig()) == ReconfigOutcome(reloaded=("alpha",))
    assert await timeout(r.manager.call("alpha", "pid")) == os.getpid()
    assert not r.manager.info("alpha").isolated
    assert await timeout(r.manager.call("alpha", "bump")) == 3
    assert log.has("reconfig: alpha reloaded with no isolation options (its state handed over)")
    assert r.instance("beta") is beta


@pytest_twisted.ensureDeferred
async def test_new_isolation_options_of_a_required_plugin_are_applied(home, running, log):
    """
    A plugin that others require moves into a worker too: a reload does
    not stop the plugins that require it.
    """
    write_plugin(home / "plugins", "alpha", body=COUNTING)
    write_plugin(home / "plugins", "beta", body='requires = ("alpha",)\n')
    r = running(write_config(home, isolation_config()))
    await r.start()
    beta = r.instance("beta")
    await timeout(r.manager.call("alpha", "bump"))
    write_config(home, isolation_config("isolate = true", data="{ n = 2 }"))
    outcome = await timeout(r.service.reconfig())
    assert outcome == ReconfigOutcome(reloaded=("alpha",))
    assert await timeout(r.manager.call("alpha", "pid")) != os.getpid()
    assert await timeout(r.manager.call("alpha", "echo")) == {"n": 2}
    assert await timeout(r.manager.call("alpha", "bump")) == 2
    assert r.instance("beta") is beta and sorted(r.table()) == ["alpha", "beta"]
    assert await timeout(r.service.reconfig()) == ReconfigOutcome()


@pytest_twisted.ensureDeferred
async def test_a_plugin_that_fails_with_new_isolation_options_serves_as_it_was(
        home, running, log, logged_failures):
    """
    A plugin that cannot start with its new isolation options: its reload
    rolls back, it serves as it was (old data, in the manager's process,
    its state kept); the outcome names it as failed, and the next reconfig
    tries again.
    """
    write_plugin(home / "plugins", "alpha", body=COUNTING + f"""
import os as _os
if _os.getpid() != {os.getpid()}:
    raise RuntimeError("alpha cannot run in a worker")
""")
    r = running(write_config(home, isolation_config()))
    await r.start()
    beta = r.instance("beta")
    await timeout(r.manager.call("alpha", "bump"))
    write_config(home, isolation_config("isolate = true", data="{ n = 2 }"))
    for attempt in (1, 2):
        outcome = await timeout(r.service.reconfig())
        assert outcome == ReconfigOutcome(failed=("isolation alpha",))
        assert await timeout(r.manager.call("alpha", "pid")) == os.getpid()
        assert await timeout(r.manager.call("alpha", "echo")) == {"n": 1}
        assert not r.manager.info("alpha").isolated and r.instance("beta") is beta
        lines = [x for x in log.lines if "new isolation options (isolate=True) are not" in x]
        assert len(lines) == attempt and "alpha cannot run in a worker" in lines[0]
        assert "it serves as it was" in lines[0] and "\n" not in lines[0]
    assert await timeout(r.manager.call("alpha", "bump")) == 2
    logged_failures.flush(Exception)
