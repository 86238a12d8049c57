"""
Failures shown where people look: a plugin author sees the frames of their
own code (file, line, source line) when its import, constructor or
C{startService} fails, and never the manager's internals; an expected error
(a bad name, an unknown plugin) is one line with no traceback; quiet logs
(optional metadata, C{plugin_table}).

What is checked is what an operator reads: the log events, rendered as
C{twist} renders them (L{formatEventAsClassicLogText}) and as JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List

import pytest
import pytest_twisted
from twisted.logger import (
    Logger,
    LogLevel,
    eventAsJSON,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.failure import Failure

from twisted_plugmgr import (
    CompileFailed,
    DependencyError,
    InitFailed,
    InvalidMetadata,
    NoSuchPlugin,
    PluginError,
    PluginEvent,
)
from twisted_plugmgr._events import Listeners
from twisted_plugmgr._tracebacks import for_the_log, plugin_cause
from twisted_plugmgr.testing import failure_of, result_of, write_plugin

#: How a frame of the manager's own modules would show in a traceback.
INTERNAL = os.sep + "twisted_plugmgr" + os.sep


class Captured:
    """
    Every log event of the events namespace, rendered as text.
    """

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []
        self.everything: List[Dict[str, Any]] = []  # every namespace

    def __call__(self, event: Dict[str, Any]) -> None:
        self.everything.append(event)
        if event.get("log_namespace") == "twisted_plugmgr.events":
            self.events.append(event)

    def about(self, plugin: str) -> List[Dict[str, Any]]:
        return [e for e in self.events if e.get("plugin") == plugin]

    def text(self, plugin: str) -> str:
        return "".join(formatEventAsClassicLogText(e) or "" for e in self.about(plugin))


@pytest.fixture
def captured() -> Iterator[Captured]:
    observer = Captured()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


def line_of(path: str, text: str) -> int:
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} not in {path}")


def assert_plugin_traceback(text: str, path: str, source_line: str) -> None:
    """
    C{text} shows the frame of C{path} at the line holding C{source_line},
    that source line itself, and no frame of the manager's modules.
    """
    assert f'File "{path}", line {line_of(path, source_line)}' in text, text
    assert source_line in text, text
    assert INTERNAL not in text, text
    assert "<frozen importlib" not in text, text


def test_syntax_error_shows_the_plugin_file_line_and_source(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "broken", header="settings = {'a': 1,,}\n")
    failure_of(manager.load("broken"), CompileFailed)
    text = captured.text("broken")
    assert_plugin_traceback(text, path, "settings = {'a': 1,,}")
    assert "SyntaxError" in text
    [logged] = logged_failures.flush(CompileFailed)
    assert "broken" not in manager.plugin_table()


def test_exception_at_module_level_shows_every_plugin_frame(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "raiser", header=(
        "def configure():\n"
        "    return {}['missing key']\n"
        "CONFIG = configure()\n"))
    failure_of(manager.load("raiser"), CompileFailed)
    text = captured.text("raiser")
    assert_plugin_traceback(text, path, "return {}['missing key']")
    assert_plugin_traceback(text, path, "CONFIG = configure()")
    assert "KeyError" in text
    logged_failures.flush(CompileFailed)
    assert "raiser" not in manager.plugin_table()


def test_failing_constructor_shows_its_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "ctor", body=(
        "def __init__(self, api, data):\n"
        "    super().__init__(api, data)\n"
        "    self.limit = int(data['limit'])\n"))
    failure_of(manager.load("ctor", {"limit": "ten"}), InitFailed)
    text = captured.text("ctor")
    assert_plugin_traceback(text, path, "self.limit = int(data['limit'])")
    assert "ValueError" in text and "the constructor raised" in text
    logged_failures.flush(InitFailed)
    assert "ctor" not in manager.plugin_table()


def test_failing_start_service_shows_its_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "starter", body=(
        "def startService(self):\n"
        "    super().startService()\n"
        "    self.open_database()\n"
        "def open_database(self):\n"
        "    raise ConnectionError('no database at db.example')\n"))
    failure_of(manager.load("starter"), InitFailed)
    text = captured.text("starter")
    assert_plugin_traceback(text, path, "self.open_database()")
    assert_plugin_traceback(text, path, "raise ConnectionError('no database at db.example')")
    logged_failures.flush(InitFailed)
    assert "starter" not in manager.plugin_table()


def test_asynchronous_start_failure_shows_the_coroutine_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "later", header="from twisted.internet import defer\n", body=(
        "def startService(self):\n"
        "    return defer.ensureDeferred(self.connect())\n"
        "async def connect(self):\n"
        "    await defer.succeed(None)\n"
        "    raise TimeoutError('the upstream did not answer')\n"))
    failure_of(manager.load("later"), InitFailed)
    text = captured.text("later")
    assert_plugin_traceback(text, path, "raise TimeoutError('the upstream did not answer')")
    logged_failures.flush(InitFailed)


def test_failed_reload_shows_the_new_versions_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "edited")
    result_of(manager.load("edited"))
    path = write_plugin(plugdir, "edited", version="2.0", header="import json\njson.loads('{')\n")
    failure_of(manager.reload("edited"), CompileFailed)
    text = captured.text("edited")
    assert "plugin_reload_failed" in text
    assert_plugin_traceback(text, path, "json.loads('{')")
    # The library's frames are the plugin's business too; only ours go.
    assert "json" + os.sep + "decoder.py" in text
    logged_failures.flush(CompileFailed)
    assert manager.plugin_table()["edited"].version == "1.0"


def test_requirement_that_fails_to_import_shows_its_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "base", header="raise OSError('base cannot start here')\n")
    write_plugin(plugdir, "top", meta="name = 'top'\nversion = '1'\nrequires = ('base',)\n")
    failure_of(manager.load("top"), DependencyError)
    assert_plugin_traceback(captured.text("top"), path, "raise OSError('base cannot start here')")
    logged_failures.flush(CompileFailed, DependencyError)
    assert manager.plugin_table() == {}


def test_json_log_holds_only_the_plugins_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "ctor", body=(
        "def __init__(self, api, data):\n"
        "    raise RuntimeError('bad data')\n"))
    failure_of(manager.load("ctor"), InitFailed)
    [event] = [e for e in captured.about("ctor") if e.get("log_failure") is not None]
    frames = json.loads(eventAsJSON(event))["log_failure"]["frames"]
    assert [frame[1] for frame in frames] == [path]
    logged_failures.flush(InitFailed)


@pytest.mark.parametrize("name", ["../etc", "no such", 42, "missing"])
def test_expected_load_error_is_one_line_without_traceback(env, captured, logged_failures, name):
    manager, clock, events, plugdir = env
    captured.everything.clear()
    failure_of(manager.load(name), PluginError)
    [event] = captured.everything  # one line in all, whoever logs it
    assert event["plugin"] == (name if isinstance(name, str) else repr(name))
    assert event.get("log_failure") is None
    assert event["log_level"] == LogLevel.warn
    text = formatEventAsClassicLogText(event)
    assert text.count("\n") == 1 and "Traceback" not in text
    assert str(name) in text
    assert logged_failures.flush() == []
    assert manager.plugin_table() == {}


def test_expected_reload_error_is_one_line(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    failure_of(manager.reload("ghost"), NoSuchPlugin)
    [event] = captured.about("ghost")
    assert event.get("log_failure") is None
    assert formatEventAsClassicLogText(event).count("\n") == 1
    assert logged_failures.flush() == []


def test_start_deadline_is_one_line(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "slow", header="from twisted.internet.defer import Deferred\n",
                 body="def startService(self):\n    return Deferred()\n")
    d = manager.load("slow")
    clock.advance(manager.start_deadline + 1)
    failure_of(d, InitFailed)
    [event] = [e for e in captured.about("slow") if e["kind"] == "plugin_init_failed"]
    assert event.get("log_failure") is None
    assert "no answer within" in formatEventAsClassicLogText(event)


def test_handler_error_keeps_its_type_and_only_the_plugin_frames(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    path = write_plugin(plugdir, "divider", body=(
        "@handler('divide')\n"
        "def divide(self, a, b):\n"
        "    return a / b\n"))
    result_of(manager.load("divider"))
    failure_of(manager.call("divider", "divide", 1, 0), ZeroDivisionError)
    [logged] = logged_failures.flush(ZeroDivisionError)
    assert [frame[1] for frame in logged.frames] == [path]
    assert_plugin_traceback(captured.text("divider"), path, "return a / b")


def test_a_fault_of_the_manager_itself_keeps_every_frame():
    def internal() -> None:
        raise KeyError("a bug")

    try:
        internal()
    except KeyError:
        failure = Failure()
    # A frame outside the manager (this test) stays; with it all of them.
    assert for_the_log(failure) is not None
    shown = for_the_log(failure)
    assert shown is not None and shown.check(KeyError)


def test_plugin_cause_walks_the_chain_of_plugin_errors():
    try:
        raise ValueError("deep")
    except ValueError:
        cause = Failure()
    inner = CompileFailed("a", "a.py", failure=cause)
    outer = DependencyError("b", ("b", "a"), failure=Failure(inner))
    assert plugin_cause(outer) is cause
    assert plugin_cause(NoSuchPlugin("x")) is None
    assert for_the_log(Failure(NoSuchPlugin("x"))) is None


def test_missing_optional_metadata_is_one_info_line_per_plugin(env, captured):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "sparse", meta="name = 'sparse'\nversion = '1'\n")
    for _ in range(3):
        result_of(manager.load("sparse"))
        result_of(manager.unload("sparse"))
    missing = [e for e in captured.about("sparse") if e["kind"] == "plugin_invalid_values"]
    assert [e["log_level"] for e in missing] == [LogLevel.info, LogLevel.debug, LogLevel.debug]
    assert "longname" in missing[0]["missing"]
    # The listeners still get every one.
    assert len(events.of("plugin_invalid_values")) == 3


def test_plugin_table_is_not_logged_unless_asked():
    logged: List[Dict[str, Any]] = []
    quiet = Listeners(Logger(observer=logged.append))
    got: List[PluginEvent] = []
    quiet.register(got.append)
    quiet.broadcast(PluginEvent(kind="plugin_table", table={}))
    assert logged == [] and len(got) == 1
    asked = Listeners(Logger(observer=logged.append), log_tables=True)
    asked.broadcast(PluginEvent(kind="plugin_table", table={"a": None}))
    [entry] = logged
    assert entry["log_level"] == LogLevel.debug and entry["plugins"] == "a"


def test_plugin_table_calls_log_nothing(env, captured):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "quiet")
    result_of(manager.load("quiet"))
    captured.events.clear()
    manager.plugin_table()
    assert captured.events == []
    assert events.of("plugin_table")


def test_invalid_metadata_is_one_line(env, captured, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "noversion", meta="name = 'noversion'\n")
    failure_of(manager.load("noversion"), InvalidMetadata)
    [event] = captured.about("noversion")
    assert event.get("log_failure") is None
    assert "has no 'version'" in formatEventAsClassicLogText(event)
    assert logged_failures.flush() == []


# -- what a real `twist plugmgr` prints ----------------------------------------

BROKEN_CONFIG = """
[manager]
paths = ["plugins"]

[plugins.alpha]
[plugins.broken]
[plugins.sparse]
"""


@pytest_twisted.ensureDeferred
async def test_twist_plugmgr_prints_the_plugins_traceback_and_quiet_lines(tmp_path):
    from _processes import Daemon, make_home

    home = make_home(tmp_path, BROKEN_CONFIG)
    broken = home / "plugins" / "broken.py"
    broken.write_text("import os\n\nPORT = int(os.environ['NO_SUCH_VARIABLE_HERE'])\n")
    (home / "plugins" / "sparse.py").write_text(
        "from twisted_plugmgr import Plugin\n\n"
        "class Sparse(Plugin):\n    name = 'sparse'\n    version = '1'\n")
    daemon = Daemon(home, "--config", "plugmgr.toml")
    try:
        await daemon.ready()
        text = daemon.proto.text
    finally:
        await daemon.kill()
    block = text[text.index("plugin_compile_failed broken"):]
    block = block[:block.index("CompileFailed: ")]
    assert f'File "{broken}", line 3, in <module>' in block, text
    assert "PORT = int(os.environ['NO_SUCH_VARIABLE_HERE'])" in block
    assert INTERNAL not in block and "<frozen importlib" not in block, block
    # The KeyError is raised in os (frozen, or os.py): the library's frame stays.
    assert "in __getitem__" in block
    assert text.count("plugin_invalid_values sparse") == 1
    assert "plugin_table" not in text
