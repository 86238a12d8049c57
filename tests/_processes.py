"""
What the tests that run plugmgr share, whether they run its top service in
the test process (test_tap) or C{twist plugmgr} as a subprocess
(test_process): a home directory with plugins and a config file, bounded
waits on the reactor, waits for text (log lines, process output), and the
subprocess itself.

Every wait is bounded and event-driven; nothing sleeps.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from typing import Callable, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

__all__ = [
    "REPO", "TIMEOUT", "BASE", "timeout", "environment", "write_plugin", "write_config",
    "make_home", "TextWaiters", "Watched", "Daemon",
]

#: The repository's root directory.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Seconds any one wait may take.
TIMEOUT = 15

#: A config file: alpha (with data) and beta enabled, gamma disabled, delta
#: not mentioned.
BASE = """
[manager]
paths = ["plugins"]

[plugins.alpha]
data = { n = 1 }

[plugins.beta]

[plugins.gamma]
enabled = false
"""


def timeout(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    """
    C{d}, failing with a timeout after C{seconds} on the reactor.
    """
    return d.addTimeout(seconds, reactor)


def environment() -> dict:
    """
    The environment of a subprocess: the repository on C{sys.path} (the
    package, and the twisted/plugins drop-in: Twisted finds drop-ins in
    twisted/plugins/ of sys.path entries), no control channel settings, no
    systemd notify socket or watchdog.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    env.pop("PLUGMGR_CONTROL", None)
    env.pop("PLUGMGR_TOKEN", None)
    # Run under systemd (a CI runner's unit), a test daemon must not notify it.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    return env


def write_plugin(directory, name: str, version: str = "1", body: str = ""):
    """
    Write the plugin module C{directory/NAME.py}: a plugin with an C{echo}
    handler (answering its data), and C{body} (methods, class attributes)
    added to its class.

    @return: the module's path.
    """
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
    if body:
        source += textwrap.indent(textwrap.dedent(body), "    ")
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


def write_config(home, text: str) -> str:
    """
    Write C{home/plugmgr.toml} (C{text} dedented).

    @return: its path.
    """
    path = home / "plugmgr.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def make_home(home, config: Optional[str] = None):
    """
    Make C{home} a plugmgr home: only its owner may write to it (the control
    socket's directory is checked), C{plugins/} holds the plugins alpha,
    beta, gamma and delta, and C{plugmgr.toml} is C{config} when given.

    @return: C{home}.
    """
    os.chmod(home, 0o700)
    plugins = home / "plugins"
    plugins.mkdir(exist_ok=True)
    for name in ("alpha", "beta", "gamma", "delta"):
        write_plugin(plugins, name)
    if config is not None:
        write_config(home, config)
    return home


class TextWaiters:
    """
    Waits for text to appear in something that grows (a process's output,
    lines of log): call L{check} whenever it grew.

    @ivar text: a callable returning the text so far.
    """

    def __init__(self, text: Callable[[], str]) -> None:
        self.text = text
        self.pending: List[Tuple[Callable[[], bool], Deferred]] = []

    def check(self) -> None:
        """
        Fire the waits whose text has appeared.
        """
        for waiter in list(self.pending):
            predicate, d = waiter
            if predicate():
                self.pending.remove(waiter)
                d.callback(None)

    def wait_for(self, text: str, count: int = 1, seconds: float = TIMEOUT) -> Deferred:
        """
        Fire once C{text} appeared C{count} times; fail, showing the text so
        far, after C{seconds}.
        """
        def predicate() -> bool:
            return self.text().count(text) >= count

        d: Deferred = Deferred()
        if predicate():
            d.callback(None)
        else:
            self.pending.append((predicate, d))

        def explain(failure):
            raise AssertionError(
                f"{text!r} not seen {count} time(s) within {seconds}s; text:\n{self.text()}"
            )
        return timeout(d, seconds).addErrback(explain)

    def fail_all(self, why: str) -> None:
        """
        Fail every pending wait: the text will not grow any more.
        """
        pending, self.pending = self.pending, []
        for _, d in pending:
            d.errback(AssertionError(f"{why}; text:\n{self.text()}"))


class Watched(ProcessProtocol):
    """
    A subprocess whose output can be waited for.

    @ivar exit_code: its exit status, once it ended (L{None} if a signal
        ended it).
    @ivar signal: the signal that ended it, or L{None}.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred = Deferred()
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.waiters = TextWaiters(lambda: self.text)

    @property
    def text(self) -> str:
        """
        Its output so far, stdout then stderr.
        """
        return (self.out + self.err).decode("utf-8", "replace")

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self.waiters.check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self.waiters.check()

    def wait_for(self, text: str, count: int = 1, seconds: float = TIMEOUT) -> Deferred:
        """
        Fire once C{text} appeared C{count} times in the output.
        """
        return self.waiters.wait_for(text, count, seconds)

    def processEnded(self, reason) -> None:
        if reason.check(ProcessDone, ProcessTerminated):
            self.exit_code = reason.value.exitCode
            self.signal = reason.value.signal
        self.waiters.fail_all("process ended")
        self.ended.callback(None)


class Daemon:
    """
    C{twist plugmgr} (or C{twistd ... plugmgr}) running in C{home}.
    """

    def __init__(self, home, *args: str, twistd: bool = False,
                 env: Optional[dict] = None) -> None:
        """
        @param env: variables set in its environment, over L{environment}'s.
        """
        self.home = home
        self.socket = str(home / "plugmgr.sock")
        self.proto = Watched()
        if twistd:
            argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        else:
            argv = [sys.executable, "-m", "twisted", "--log-format=text", "plugmgr"]
        argv += list(args)
        self.transport = reactor.spawnProcess(
            self.proto, sys.executable, argv, env={**environment(), **(env or {})},
            path=str(home)
        )

    @classmethod
    def absent(cls, home) -> Daemon:
        """
        A daemon that was never started in C{home}: only its CLI can run.
        """
        daemon = cls.__new__(cls)
        daemon.home = home
        daemon.socket = str(home / "none.sock")
        daemon.proto = Watched()
        daemon.transport = None
        return daemon

    def ready(self) -> Deferred:
        """
        Fire once it has loaded its plugins.
        """
        return self.proto.wait_for("plugmgr ready")

    def signal(self, name: str) -> None:
        """
        Send it the signal C{name} (C{"TERM"}, C{"HUP"}, C{"USR1"}...).
        """
        self.transport.signalProcess(getattr(signal, f"SIG{name}"))

    def ended(self) -> Deferred:
        """
        Fire with its exit status once it ended.
        """
        return timeout(Deferred.fromCoroutine(self.exit_status()))

    async def exit_status(self) -> Optional[int]:
        """
        Its exit status, once it ended.
        """
        await self.proto.ended
        return self.proto.exit_code

    async def kill(self) -> None:
        """
        Kill it, if it runs, and wait for its end.
        """
        if self.transport is None or self.proto.ended.called:
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
