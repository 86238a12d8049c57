"""
C{twist plugmgr} as systemd runs it: a real process with C{NOTIFY_SOCKET}
set to a datagram socket the test binds, whose datagrams are checked in
order (READY at start; RELOADING with MONOTONIC_USEC, then READY, on
SIGHUP; STOPPING on SIGTERM), the watchdog, and the example units checked
with C{systemd-analyze verify} where it exists.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from typing import List

import pytest
import pytest_twisted
from _processes import BASE, REPO, Daemon, TextWaiters, make_home, write_config
from twisted.internet import reactor
from twisted.internet.defer import Deferred


class NotifySocket:
    """
    A datagram socket bound by the test, read by the reactor: the datagrams
    received, in order.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: List[str] = []
        self.waiters = TextWaiters(lambda: "\n--\n".join(self.messages))
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.waiters.check()

    def logPrefix(self) -> str:
        return "NotifySocket"

    def connectionLost(self, reason) -> None:
        pass

    def wait_for(self, text: str, count: int = 1) -> Deferred:
        return self.waiters.wait_for(text, count)

    def close(self) -> None:
        reactor.removeReader(self)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify(request, tmp_path):
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@plugmgr-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = NotifySocket(address)
    yield sock
    sock.close()


def fields(message: str) -> dict:
    return dict(line.split("=", 1) for line in message.split("\n"))


@pytest_twisted.ensureDeferred
async def test_notify_datagrams_in_order(tmp_path, daemons, notify):
    home = make_home(tmp_path, BASE + "\n[plugins.nosuch]\n")
    daemon = Daemon(home, "--config", "plugmgr.toml", env={"NOTIFY_SOCKET": notify.address})
    daemons.append(daemon)
    await notify.wait_for("READY=1")
    assert notify.messages == ["READY=1\nSTATUS=2 of 3 plugins loaded; failed: nosuch"]

    write_config(home, BASE + "\n[plugins.delta]\n")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.signal("HUP")
    await notify.wait_for("READY=1", 2)
    reloading, ready = notify.messages[1:]
    reloading_fields = fields(reloading)
    assert list(reloading_fields) == ["RELOADING=1".split("=")[0], "MONOTONIC_USEC", "STATUS"]
    # The same clock as systemd's: CLOCK_MONOTONIC, in microseconds.
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading_fields["MONOTONIC_USEC"]) <= after
    assert fields(ready) == {"READY": "1", "STATUS": "reconfig done: loaded delta"}

    daemon.signal("TERM")
    assert await daemon.ended() == 0, daemon.proto.text
    assert notify.messages[3:] == ["STOPPING=1\nSTATUS=stopping (smart shutdown)"]
    assert len(notify.messages) == 4


@pytest_twisted.ensureDeferred
async def test_a_refused_reconfig_still_ends_the_reload(tmp_path, daemons):
    """
    A config that cannot be read changes nothing, and systemd still hears
    READY=1 (with the reason in STATUS), so that a reload does not hang.
    """
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        home = make_home(tmp_path, BASE)
        daemon = Daemon(home, "--config", "plugmgr.toml", env={"NOTIFY_SOCKET": notify.address})
        daemons.append(daemon)
        await notify.wait_for("READY=1")
        write_config(home, "[manager\n")
        daemon.signal("HUP")
        await notify.wait_for("READY=1", 2)
        assert fields(notify.messages[2])["STATUS"].startswith(
            "reconfig refused, nothing changed: plugmgr.toml: invalid TOML")
        await daemon.proto.wait_for("reconfig aborted, nothing changed")
        assert "Traceback" not in daemon.proto.text
    finally:
        notify.close()


@pytest_twisted.ensureDeferred
async def test_watchdog_pings(tmp_path, daemons):
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        home = make_home(tmp_path, BASE)
        # WATCHDOG_PID is not known before the spawn: without it, the
        # process takes the watchdog as its own.
        daemon = Daemon(home, "--config", "plugmgr.toml",
                        env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"})
        daemons.append(daemon)
        await notify.wait_for("WATCHDOG=1", 3)
        # From the start, before the loads are done: the reactor turns.
        assert notify.messages[0] == "WATCHDOG=1"
        assert any(m.startswith("READY=1\n") for m in notify.messages)
        daemon.signal("TERM")
        assert await daemon.ended() == 0
        stopping = notify.messages.index("STOPPING=1\nSTATUS=stopping (smart shutdown)")
        assert "WATCHDOG=1" not in notify.messages[stopping:]
    finally:
        notify.close()


@pytest_twisted.ensureDeferred
async def test_no_notify_socket_no_datagrams_no_errors(tmp_path, daemons):
    home = make_home(tmp_path, BASE)
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    daemon.signal("TERM")
    assert await daemon.ended() == 0
    assert "systemd notify" not in daemon.proto.text
    assert "NOTIFY_SOCKET" not in daemon.proto.text


# --- the example units ----------------------------------------------------------------------

UNITS = ["plugmgr.service", "plugmgr-notify.service", "plugmgr@.service"]


def unit(name: str) -> dict:
    """
    The unit file C{examples/NAME} as {section: {key: [values]}}.
    """
    sections: dict = {}
    current = None
    with open(os.path.join(REPO, "examples", name)) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_notify_reload_unit():
    service = unit("plugmgr.service")["Service"]
    assert service["Type"] == ["notify-reload"]
    assert "ExecReload" not in service
    assert service["KillMode"] == ["mixed"]


def test_notify_unit_for_older_systemd():
    service = unit("plugmgr-notify.service")["Service"]
    assert service["Type"] == ["notify"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillMode"] == ["mixed"]


def test_template_unit_runs_one_config_per_instance():
    service = unit("plugmgr@.service")["Service"]
    assert service["Type"] == ["notify-reload"]
    assert any("%i" in line for line in service["ExecStart"])


@pytest.mark.parametrize("name", UNITS)
def test_units_stop_timeout_covers_the_lazy_deadline(name):
    """
    TimeoutStopSec is the lazy deadline of the config the unit runs, times
    the stages, plus a margin: what the comment says it is.
    """
    with open(os.path.join(REPO, "examples", name)) as f:
        text = f.read()
    service = unit(name)["Service"]
    (timeout_stop,) = service["TimeoutStopSec"]
    match = re.search(r"lazy deadline \((\d+) s\) x (\d+) stages? \+ (\d+) s", text)
    assert match, "the comment says how TimeoutStopSec is derived"
    lazy, stages, margin = (int(g) for g in match.groups())
    assert int(timeout_stop.rstrip("s")) == lazy * stages + margin
    assert service["ExecStart"][0].split()[0].startswith("/")


def systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(tmp_path, name):
    # The instance of the template is what systemd verifies.
    target = tmp_path / (name.replace("@.", "@example.") if "@." in name else name)
    text = open(os.path.join(REPO, "examples", name)).read()
    # The units name the paths of a real installation; point ExecStart at
    # something that exists here (verify checks it), keep the rest.
    text = re.sub(r"ExecStart=\S+", "ExecStart=/bin/true", text)
    if systemd_version() < 253:
        # Type=notify-reload is 253's; verify the rest of the unit here.
        text = text.replace("Type=notify-reload", "Type=notify")
    target.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(target)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert target.name not in output, output
