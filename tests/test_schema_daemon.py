"""
A plugin's config schema in a real C{twist plugmgr} (a subprocess), asked
to re-read its file by C{plugmgr reconfig} and by SIGHUP: data its
C{Config} refuses fails the reconfig with one line naming the plugin and
the key, and the plugin keeps serving with the data it had.

Every wait is bounded and event-driven (log lines, the CLI's answers).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any, Dict

import pytest_twisted
from _processes import Daemon, write_config

#: A plugin whose data is described by a Config with a nested table.
GREETER = """
import dataclasses
from typing import List, Literal
from twisted_plugmgr import Plugin, handler

@dataclasses.dataclass
class Server:
    host: str
    port: int = 6667

@dataclasses.dataclass
class Settings:
    greeting: str
    servers: List[Server] = dataclasses.field(default_factory=list)
    level: Literal["debug", "info"] = "info"

class Greeter(Plugin):
    name = "greeter"
    version = "1"
    Config = Settings

    @handler()
    def given(self):
        return {"type": type(self.data).__name__, **dataclasses.asdict(self.data)}
"""


def config(data: str) -> str:
    return textwrap.dedent(f"""
        [manager]
        paths = ["plugins"]

        [plugins.greeter]
        data = {data}
    """)


GOOD = '{ greeting = "hi", servers = [{ host = "irc.example" }] }'
BAD = '{ greeting = "hi", servers = [{ host = "irc.example", port = "x" }], colour = "red" }'
#: The line the refused data gives (the daemon's log says it after "nothing changed: ").
REFUSED = ("plugin 'greeter': invalid data: key 'servers[0].port': expected an integer, got "
           "'x' (a string); key 'colour': unknown (known keys: greeting, servers, level)")


def make_home(tmp_path: Any, data: str = GOOD) -> Any:
    tmp_path.chmod(0o700)  # the control socket's directory is checked
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "greeter.py").write_text(GREETER)
    write_config(tmp_path, config(data))
    return tmp_path


async def start(home: Any, daemons: Any) -> Daemon:
    daemon = Daemon(home, "--config", "plugmgr.toml")
    daemons.append(daemon)
    await daemon.ready()
    return daemon


async def given(daemon: Daemon) -> Dict[str, Any]:
    code, out, err = await daemon.cli("--json", "call", "greeter", "given")
    assert code == 0, err
    value: Dict[str, Any] = json.loads(out)["value"]
    return value


async def reloads(daemon: Daemon) -> int:
    code, out, err = await daemon.cli("--json", "status")
    assert code == 0, err
    [row] = [r for r in json.loads(out) if r["name"] == "greeter"]
    count: int = row["reloads"]
    return count


SERVING = {"type": "Settings", "greeting": "hi", "level": "info",
           "servers": [{"host": "irc.example", "port": 6667}]}


@pytest_twisted.ensureDeferred
async def test_plugmgr_reconfig_with_refused_data_is_one_line_and_changes_nothing(tmp_path,
                                                                                 daemons):
    home = make_home(tmp_path)
    daemon = await start(home, daemons)
    assert await given(daemon) == SERVING
    write_config(home, config(BAD))
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (1, ""), err
    assert err.count("\n") == 1 and REFUSED in err
    await daemon.proto.wait_for("reconfig aborted, nothing changed")
    assert await given(daemon) == SERVING and await reloads(daemon) == 0
    # Data the schema accepts is applied by the next reconfig.
    write_config(home, config('{ greeting = "hello", level = "debug" }'))
    code, out, err = await daemon.cli("reconfig")
    assert (code, out) == (0, "reloaded: greeter\n"), err
    assert await given(daemon) == {"type": "Settings", "greeting": "hello", "level": "debug",
                                   "servers": []}


@pytest_twisted.ensureDeferred
async def test_sighup_with_refused_data_logs_one_error_line_and_keeps_serving(tmp_path, daemons):
    home = make_home(tmp_path)
    daemon = await start(home, daemons)
    write_config(home, config(BAD))
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig aborted, nothing changed")
    errors = [line for line in daemon.proto.text.splitlines()
              if "#error]" in line or "#critical]" in line]
    # The reconfig's one line, and the event of the refused reload.
    [aborted] = [line for line in errors if "reconfig aborted" in line]
    assert "reconfig aborted, nothing changed: plugin 'greeter': " in aborted and REFUSED in aborted
    [event] = [line for line in errors if line != aborted]
    assert "[twisted_plugmgr.events#error] plugin_reload_failed greeter message=" + REFUSED in event
    assert "Traceback" not in daemon.proto.text
    assert await given(daemon) == SERVING and await reloads(daemon) == 0
    write_config(home, config(GOOD.replace('"hi"', '"hey"')))
    daemon.signal("HUP")
    await daemon.proto.wait_for("reconfig done")
    assert (await given(daemon))["greeting"] == "hey" and await reloads(daemon) == 1
