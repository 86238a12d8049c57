"""
Real processes and sockets: C{twist plugmgr} runs as a subprocess in a
temporary directory, and the C{plugmgr} CLI (also a subprocess) drives it.

Every wait is bounded and event-driven (log lines, process exit, the
CLI's answer); nothing sleeps.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import Callable, List, Optional, Tuple

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.utils import getProcessOutputAndValue

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 15


def environment() -> dict:
    env = dict(os.environ)
    # The repository on sys.path: the package, and the twisted/plugins
    # drop-in (Twisted finds drop-ins in twisted/plugins/ of sys.path entries).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    env.pop("PLUGMGR_CONTROL", None)
    env.pop("PLUGMGR_TOKEN", None)
    return env


def timeout(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    return d.addTimeout(seconds, reactor)


class Watched(ProcessProtocol):
    """
    A subprocess whose output can be waited for.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred = Deferred()
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self._waiters: List[Tuple[Callable[[], bool], Deferred]] = []

    @property
    def text(self) -> str:
        return (self.out + self.err).decode("utf-8", "replace")

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def _check(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate():
                self._waiters.remove(waiter)
                d.callback(None)

    def wait_for(self, text: str, count: int = 1, seconds: float = TIMEOUT) -> Deferred:
        """
        Fire once C{text} appeared C{count} times in the output.
        """
        def predicate() -> bool:
            return self.text.count(text) >= count

        d: Deferred = Deferred()
        if predicate():
            d.callback(None)
        else:
            self._waiters.append((predicate, d))

        def explain(failure):
            raise AssertionError(
                f"{text!r} not seen {count} time(s) within {seconds}s; output:\n{self.text}"
            )
        return timeout(d, seconds).addErrback(explain)

    def processEnded(self, reason) -> None:
        if reason.check(ProcessDone, ProcessTerminated):
            self.exit_code = reason.value.exitCode
            self.signal = reason.value.signal
        for _, d in self._waiters:
            d.errback(AssertionError(f"process ended; output:\n{self.text}"))
        self._waiters = []
        self.ended.callback(None)


class Daemon:
    """
    C{twist plugmgr} running in C{home}.
    """

    def __init__(self, home, *args: str, twistd: bool = False) -> None:
        self.home = home
        self.proto = Watched()
        if twistd:
            argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        else:
            argv = [sys.executable, "-m", "twisted", "--log-format=text", "plugmgr"]
        argv += list(args)
        self.transport = reactor.spawnProcess(
            self.proto, sys.executable, argv, env=environment(), path=str(home)
        )
        self.socket = str(home / "plugmgr.sock")

    def ready(self) -> Deferred:
        return self.proto.wait_for("plugmgr ready")

    def signal(self, name: str) -> None:
        self.transport.signalProcess(name)

    def ended(self) -> Deferred:
        return timeout(Deferred.fromCoroutine(self._ended()))

    async def _ended(self):
        await self.proto.ended
        return self.proto.exit_code

    async def kill(self) -> None:
        if self.proto.ended.called:
            return
        try:
            self.transport.signalProcess("KILL")
        except Exception:
            pass
        await timeout(self.proto.ended)

    async def cli(self, *args: str, control: Optional[str] = None) -> Tuple[int, str, str]:
        """
        Run the plugmgr CLI against this daemon: (exit status, stdout, stderr).
        """
        control = control or f"unix:path={self.socket}"
        out, err, code = await timeout(getProcessOutputAndValue(
            sys.executable, ["-m", "twisted_plugmgr.cli", "--control", control, *args],
            env=environment(), path=str(self.home),
        ))
        return code, out.decode(), err.decode()


def write_plugin(directory, name, version="1", shutdown=""):
    source = textwrap.dedent(f"""
        from twisted_plugmgr import Plugin, handler

        class Thing(Plugin):
            name = {name!r}
            version = {version!r}
            longname = "test plugin {name}"
            license = "MIT"
            author = "tests"

            @handler()
            def echo(self):
                return self.data
    """)
    if shutdown:
        source += textwrap.indent(textwrap.dedent(shutdown), "    ")
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


SLOW_SHUTDOWN = """
def shutdown(self, mode, reason):
    from twisted.internet.task import deferLater
    def done():
        with open(self.data["marker"], "w") as f:
            f.write(f"finished {mode.value}")
        return "slow done"
    return deferLater(self.api.reactor, 0.5, done)
"""


def make_home(tmp_path, config: str):
    os.chmod(tmp_path, 0o700)
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    for name in ("alpha", "beta", "gamma", "delta"):
        write_plugin(plugins, name)
    (tmp_path / "plugmgr.toml").write_text(textwrap.dedent(config))
    return tmp_path


BASE = """
[manager]
paths = ["plugins"]

[plugins.alpha]
data = { n = 1 }

[plugins.beta]
"""


async def start(tmp_path, config: str = BASE, *args: str) -> Daemon:
    home = make_home(tmp_path, config)
    daemon = Daemon(home, "--config", "plugmgr.toml", *args)
    await daemon.ready()
    return daemon


@pytest.fixture
def daemons():
    started: List[Daemon] = []
    yield started
    for daemon in started:
        pytest_twisted.blockon(Deferred.fromCoroutine(daemon.kill()))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """
    One daemon for the CLI tests that each use their own plugins.
    """
    home = make_home(tmp_path_factory.mktemp("shared"), BASE)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    pytest_twisted.blockon(daemon.ready())
    yield daemon
    pytest_twisted.blockon(Deferred.fromCoroutine(daemon.kill()))


# --- the CLI against a running manager ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_table(shared):
    code, out, err = await shared.cli("status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "beta"]
    assert "running" in lines[1]


@pytest_twisted.ensureDeferred
async def test_status_json(shared):
    code, out, err = await shared.cli("--json", "status")
    assert code == 0, err
    rows = json.loads(out)
    alpha = next(r for r in rows if r["name"] == "alpha")
    assert alpha["state"] == "running" and alpha["version"] == "1"


@pytest_twisted.ensureDeferred
async def test_available(shared):
    code, out, err = await shared.cli("available")
    assert code == 0, err
    assert out.split() == ["alpha", "beta", "delta", "gamma"]


@pytest_twisted.ensureDeferred
async def test_load_reload_unload(shared):
    code, out, err = await shared.cli("load", "gamma", "--data", '{"x": 1}')
    assert (code, out.strip()) == (0, "loaded gamma 1"), err
    write_plugin(shared.home / "plugins", "gamma", version="2")
    code, out, err = await shared.cli("reload", "gamma")
    assert (code, out.strip()) == (0, "reloaded gamma 2"), err
    code, out, err = await shared.cli("unload", "gamma", "--mode", "immediate",
                                      "--reason", "test over")
    assert (code, out.strip()) == (0, "unloaded gamma: test over"), err


@pytest_twisted.ensureDeferred
async def test_unload_unknown_plugin(shared):
    code, out, err = await shared.cli("unload", "nope")
    assert code == 1
    assert err.strip() == "plugmgr: unload: plugin 'nope': no such plugin: not loaded"


@pytest_twisted.ensureDeferred
async def test_load_invalid_name(shared):
    code, out, err = await shared.cli("load", "../etc")
    assert code == 1
    assert "plugmgr: load: plugin '../etc': invalid plugin name" in err


@pytest_twisted.ensureDeferred
async def test_cannot_connect(tmp_path):
    daemon = Daemon.__new__(Daemon)
    daemon.home = tmp_path
    daemon.socket = str(tmp_path / "none.sock")
    code, out, err = await daemon.cli("status")
    assert code == 3
    assert err.strip() == (f"plugmgr: cannot connect to unix:path={tmp_path}/none.sock: "
                           "No such file or directory (is the manager running?)")


@pytest_twisted.ensureDeferred
async def test_events_stream(shared):
    watcher = Watched()
    reactor.spawnProcess(
        watcher, sys.executable,
        [sys.executable, "-m", "twisted_plugmgr.cli", "--control", f"unix:path={shared.socket}",
         "--json", "events", "--count", "2"],
        env=environment(), path=str(shared.home),
    )
    await watcher.wait_for("subscribed")
    assert (await shared.cli("load", "delta"))[0] == 0
    assert (await shared.cli("unload", "delta"))[0] == 0
    await timeout(watcher.ended)
    assert watcher.exit_code == 0, watcher.text
    events = [json.loads(line) for line in watcher.out.decode().splitlines()]
    assert [(e["kind"], e["plugin"]) for e in events] == [
        ("plugin_started", "delta"), ("plugin_unloaded", "delta"),
    ]


class Raw(Protocol):
    def __init__(self):
        self.closed: Deferred = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_control_socket(shared):
    raw = await timeout(connectProtocol(UNIXClientEndpoint(reactor, shared.socket), Raw()))
    raw.transport.write(b"\x00\x05hello\x00\x03abc\x00\x00" + bytes(range(256)) * 20)
    await timeout(raw.closed)
    code, out, err = await shared.cli("status")
    assert code == 0, err
    assert "alpha" in out


# --- lifecycle ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sighup_with_a_changed_config(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    (tmp_path / "plugmgr.toml").write_text(textwrap.dedent("""
        [manager]
        paths = ["plugins"]

        [plugins.alpha]
        data = { n = 2 }

        [plugins.gamma]
    """))
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig done")
    code, out, err = await daemon.cli("--json", "status")
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == ["alpha", "gamma"]
    assert rows["alpha"]["reloads"] == 1


@pytest_twisted.ensureDeferred
async def test_sighup_with_a_broken_config(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    (tmp_path / "plugmgr.toml").write_text("[manager\n")
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig aborted, nothing changed")
    assert "plugmgr.toml: invalid TOML" in daemon.proto.text
    code, out, err = await daemon.cli("status")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["alpha", "beta"]


@pytest_twisted.ensureDeferred
async def test_sigterm_waits_for_a_slow_lazy_shutdown(tmp_path, daemons):
    marker = tmp_path / "marker"
    home = make_home(tmp_path, f"""
        [manager]
        paths = ["plugins"]
        shutdown_mode = "lazy"

        [plugins.slow]
        data = {{ marker = "{marker}" }}
    """)
    write_plugin(home / "plugins", "slow", shutdown=SLOW_SHUTDOWN)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    daemon.signal("TERM")
    assert await daemon.ended() == 0, daemon.proto.text
    assert marker.read_text() == "finished lazy"
    assert not os.path.exists(daemon.socket)


@pytest_twisted.ensureDeferred
async def test_sigint_exits_zero(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    daemon.signal("INT")
    assert await daemon.ended() == 0, daemon.proto.text


@pytest_twisted.ensureDeferred
async def test_shutdown_command_stops_the_process(tmp_path, daemons):
    daemon = await start(tmp_path)
    daemons.append(daemon)
    code, out, err = await daemon.cli("shutdown", "--mode", "immediate")
    assert (code, out.strip()) == (0, "manager shut down"), err
    assert await daemon.ended() == 0


@pytest_twisted.ensureDeferred
async def test_socket_in_use_is_not_taken_over(tmp_path, daemons):
    first = await start(tmp_path)
    daemons.append(first)
    second = Daemon(tmp_path, "--config", "plugmgr.toml")
    daemons.append(second)
    assert await second.ended() == 1
    assert "is in use by a running process; not taking it over" in second.proto.text
    code, out, err = await first.cli("status")
    assert code == 0, err


@pytest_twisted.ensureDeferred
async def test_stale_socket_is_removed(tmp_path, daemons):
    import socket

    make_home(tmp_path, BASE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "plugmgr.sock"))
    sock.close()
    daemon = await start(tmp_path)
    daemons.append(daemon)
    assert "removed stale socket" in daemon.proto.text
    assert (await daemon.cli("status"))[0] == 0


@pytest.mark.parametrize(
    "config, message",
    [
        ("[manager\n", "plugmgr.toml: invalid TOML"),
        ("[manager]\nwatched = true\n", "plugmgr.toml: manager.watched: unknown key"),
        ('[plugins.alpha]\nenabled = "yes"\n',
         "plugmgr.toml: plugins.alpha.enabled: expected true or false, got a string 'yes'"),
        ('[plugins."a.b"]\n', 'plugmgr.toml: plugins."a.b": invalid plugin name'),
        ('[manager]\nshutdown_mode = "fast"\n',
         "plugmgr.toml: manager.shutdown_mode: expected one of 'immediate', 'smart', 'lazy'"),
    ],
    ids=["toml", "unknown-key", "wrong-type", "invalid-name", "invalid-mode"],
)
@pytest_twisted.ensureDeferred
async def test_bad_config_exits_without_starting(tmp_path, daemons, config, message):
    home = make_home(tmp_path, config)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    code = await daemon.ended()
    assert code != 0
    assert message in daemon.proto.text
    assert not os.path.exists(daemon.socket)
    assert "plugmgr ready" not in daemon.proto.text


@pytest_twisted.ensureDeferred
async def test_twistd_nodaemon(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    daemon = Daemon(home, "--nodaemon", "--pidfile=", "--logfile=-", "plugmgr", "--config",
                    "plugmgr.toml", twistd=True)
    daemons.append(daemon)
    await daemon.ready()
    assert (await daemon.cli("status"))[0] == 0
    daemon.signal("TERM")
    assert await daemon.ended() == 0, daemon.proto.text


# --- watch -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_edited_plugin_is_reloaded(tmp_path, daemons):
    daemon = await start(tmp_path, BASE.replace("[manager]\n", "[manager]\nwatch = true\n"))
    daemons.append(daemon)
    await daemon.proto.wait_for("Watching")
    write_plugin(tmp_path / "plugins", "alpha", version="2")
    await daemon.proto.wait_for("plugin_reloaded")
    code, out, err = await daemon.cli("--json", "status")
    alpha = next(r for r in json.loads(out) if r["name"] == "alpha")
    assert (alpha["version"], alpha["reloads"]) == ("2", 1)



