"""
Reload: transactional, state hand-off, nothing lost, live references,
dependents, reload of changed files. Real files in a temporary directory; a
task.Clock for time.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref

import pytest
import pytest_twisted

from twisted_plugmgr import (
    CompileFailed,
    InitFailed,
    InvalidMetadata,
    NoSuchPlugin,
    PluginState,
)
from twisted_plugmgr.testing import failure_of, result_of, write_plugin

COUNTER = """
def __init__(self, api, data=None):
    Plugin.__init__(self, api, data)
    self.seen = []

@handler()
def note(self, value):
    self.seen.append(value)
    return (VERSION_TAG, value)

@handler()
def which(self):
    return VERSION_TAG

def get_state(self):
    return list(self.seen)

def set_state(self, state):
    self.seen = list(state)
"""


def counter(plugdir, name="counter", tag="v1", extra="", version="1.0"):
    return write_plugin(plugdir, name, COUNTER + extra, version=version,
                        header=f"VERSION_TAG = {tag!r}\n")


def test_reload_picks_up_new_code_and_carries_state(env):
    manager, clock, events, plugdir = env
    counter(plugdir)
    old = result_of(manager.load("counter", {"k": 1}))
    result_of(manager.call("counter", "note", 1))
    counter(plugdir, tag="v2", version="2.0")
    new = result_of(manager.reload("counter"))
    assert new is not old and not old.running and new.running
    assert new.data == {"k": 1}
    assert new.seen == [1]
    assert result_of(manager.call("counter", "which")) == "v2"
    assert manager.getServiceNamed("counter") is new and old.parent is None
    [event] = events.of("plugin_reloaded")
    assert (event.old_version, event.new_version) == ("1.0", "2.0")
    info = manager.plugin_table()["counter"]
    assert info.reloads == 1 and info.version == "2.0"
    assert info.source == os.path.join(str(plugdir), "counter.py")


def test_reload_with_new_data(env):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter", "old"))
    assert result_of(manager.reload("counter", data="new")).data == "new"


@pytest.mark.parametrize(
    "source, error",
    [
        ("def (:\n", CompileFailed),
        ("raise RuntimeError('at import')\n", CompileFailed),
        ("from twisted_plugmgr import Plugin\nclass C(Plugin):\n    name = 'counter'\n", InvalidMetadata),
        (
            "from twisted_plugmgr import Plugin\nclass C(Plugin):\n    name = 'counter'\n"
            "    version = '9'\n    def __init__(self, api, data):\n        raise ValueError('ctor')\n",
            InitFailed,
        ),
    ],
)
def test_failed_reload_keeps_old_version_serving(env, logged_failures, source, error):
    manager, clock, events, plugdir = env
    counter(plugdir)
    old = result_of(manager.load("counter"))
    old_modules = {n: m for n, m in sys.modules.items() if n.startswith(manager.module_prefix)}
    (plugdir / "counter.py").write_text(source)
    failure = failure_of(manager.reload("counter"), error)
    assert failure.value.plugin == "counter"
    assert events.kinds("counter") == ["plugin_started", "plugin_reload_failed"]
    assert manager.getServiceNamed("counter") is old and old.running
    assert result_of(manager.call("counter", "which")) == "v1"
    assert {n: m for n, m in sys.modules.items() if n.startswith(manager.module_prefix)} == old_modules
    assert manager.plugin_table()["counter"].state is PluginState.RUNNING
    assert manager.plugin_table()["counter"].reloads == 0
    logged_failures.flush(error)


def test_rollback_when_new_start_fails(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir)
    old = result_of(manager.load("counter"))
    result_of(manager.call("counter", "note", "kept"))
    counter(plugdir, tag="v2", extra="""
def startService(self):
    raise RuntimeError("new version cannot start")
""")
    failure = failure_of(manager.reload("counter"), InitFailed)
    assert failure.value.failure.check(RuntimeError)
    current = manager.getServiceNamed("counter")
    assert current is not old and type(current) is type(old)
    assert current.running and current.seen == ["kept"]
    assert result_of(manager.call("counter", "which")) == "v1"
    assert events.kinds("counter")[-1] == "plugin_reload_failed"
    assert len(manager.services) == 1
    logged_failures.flush(InitFailed)


def test_reload_unknown(env, logged_failures):
    manager, clock, events, plugdir = env
    failure_of(manager.reload("ghost"), NoSuchPlugin)
    assert events.kinds() == ["plugin_reload_failed"]
    logged_failures.flush(NoSuchPlugin)


def test_messages_during_reload_are_delivered_once_in_order(env):
    manager, clock, events, plugdir = env
    counter(plugdir, extra="""
def shutdown(self, mode, reason):
    from twisted.internet.task import deferLater
    return deferLater(self.api.reactor, 1, lambda: "bye")
""")
    result_of(manager.load("counter"))
    manager.post("counter", "note", "before")
    counter(plugdir, tag="v2")
    reloaded = manager.reload("counter")
    assert manager.plugin_table()["counter"].state is PluginState.RELOADING
    calls = []
    for i in range(3):
        manager.post("counter", "note", f"post{i}")
        calls.append(manager.call("counter", "note", f"call{i}"))
    emitted = manager.emit("which")
    assert not any(c.called for c in calls) and not emitted.called
    clock.advance(1)
    new = result_of(reloaded)
    clock.advance(0)
    assert new.seen == ["before", "post0", "call0", "post1", "call1", "post2", "call2"]
    assert [result_of(c) for c in calls] == [("v2", f"call{i}") for i in range(3)]
    assert result_of(emitted) == ["v2"]


def test_emit_during_rollback_reaches_the_old_version_once(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter"))
    counter(plugdir, tag="v2", extra="""
def startService(self):
    from twisted.internet.task import deferLater
    def boom():
        raise RuntimeError("late failure")
    return deferLater(self.api.reactor, 1, boom)
""")
    reloaded = manager.reload("counter")
    emitted = manager.emit("which")
    called = manager.call("counter", "note", "x")
    clock.advance(1)
    failure_of(reloaded, InitFailed)
    clock.advance(0)
    assert result_of(emitted) == ["v1"]
    assert result_of(called) == ("v1", "x")
    logged_failures.flush(InitFailed)


def test_reloads_are_serialised_and_collapse(env):
    manager, clock, events, plugdir = env
    counter(plugdir, extra="""
def shutdown(self, mode, reason):
    from twisted.internet.task import deferLater
    return deferLater(self.api.reactor, 1, lambda: "bye")
""")
    result_of(manager.load("counter"))
    first = manager.reload("counter")
    queued = [manager.reload("counter") for _ in range(3)]
    clock.advance(1)
    result_of(first)
    clock.advance(1)
    results = [result_of(d) for d in queued]
    assert results[0] is results[1] is results[2]
    assert manager.plugin_table()["counter"].reloads == 2
    assert len(events.of("plugin_reloaded")) == 2


def test_live_reference_follows_reload(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir)
    write_plugin(plugdir, "user", body="""
requires = ("counter",)
def startService(self):
    Plugin.startService(self)
    self.counter = self.api.plugin("counter")
@handler()
def ask(self):
    return self.counter.which()
""")
    user = result_of(manager.load("user"))
    assert result_of(manager.call("user", "ask")) == "v1"
    counter(plugdir, tag="v2")
    result_of(manager.reload("counter"))
    assert manager.getServiceNamed("user") is user
    assert result_of(manager.call("user", "ask")) == "v2"
    result_of(manager.unload("counter", cascade=False).addErrback(lambda f: None))
    logged_failures.flush()
    ref = manager.getServiceNamed("user").counter
    result_of(manager.unload("user"))
    result_of(manager.unload("counter"))
    with pytest.raises(NoSuchPlugin):
        ref.which()


def test_reload_with_dependents_restarts_them_in_order(env):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "db")
    write_plugin(plugdir, "cache", body="requires = ('db',)\n")
    write_plugin(plugdir, "web", body="requires = ('cache',)\n")
    write_plugin(plugdir, "api", body="requires = ('db',)\n")
    result_of(manager.load("web"))
    result_of(manager.load("api"))
    cache = manager.getServiceNamed("cache")
    events.clear()
    result_of(manager.reload("db"))
    assert [e.plugin for e in events.of("plugin_reloaded")] == ["db"]
    assert manager.getServiceNamed("cache") is cache
    events.clear()
    result_of(manager.reload("db", dependents=True))
    order = [e.plugin for e in events.of("plugin_reloaded")]
    assert order[0] == "db" and set(order) == {"db", "cache", "web", "api"}
    assert order.index("cache") < order.index("web")


def test_reload_cancels_what_the_old_version_left_running(env):
    manager, clock, events, plugdir = env
    counter(plugdir, extra="""
def startService(self):
    Plugin.startService(self)
    self.api.reactor.callLater(100, print, "old timer")
""")
    result_of(manager.load("counter"))
    assert len(clock.getDelayedCalls()) == 1
    counter(plugdir, tag="v2")
    result_of(manager.reload("counter"))
    assert clock.getDelayedCalls() == []
    assert [e.message for e in events.of("plugin_warning")] == ["left 1 timer running"]


def test_state_handoff_failure_in_get_state(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir, extra="def get_state(self):\n    raise KeyError('no state')\n")
    result_of(manager.load("counter"))
    counter(plugdir, tag="v2")
    new = result_of(manager.reload("counter"))
    assert new.seen == []
    assert events.of("plugin_error")[0].failure.check(KeyError)
    logged_failures.flush(KeyError)


def test_state_handoff_failure_in_set_state_rolls_back(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter"))
    result_of(manager.call("counter", "note", 5))
    counter(plugdir, tag="v2", extra="def set_state(self, state):\n    raise KeyError('bad state')\n")
    failure_of(manager.reload("counter"), InitFailed)
    assert result_of(manager.call("counter", "which")) == "v1"
    assert manager.getServiceNamed("counter").seen == [5]
    logged_failures.flush(InitFailed)


def test_reload_changed_by_content_hash(env):
    manager, clock, events, plugdir = env
    path = counter(plugdir, tag="v1")
    write_plugin(plugdir, "other")
    result_of(manager.load("counter"))
    result_of(manager.load("other"))
    stat = os.stat(path)
    # Same size, same mtime: a .pyc would look fresh.
    with open(path) as f:
        source = f.read()
    with open(path, "w") as f:
        f.write(source.replace("'v1'", "'v2'"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    outcome = result_of(manager.reload_changed())
    assert list(outcome) == ["counter"]
    assert result_of(manager.call("counter", "which")) == "v2"
    assert result_of(manager.reload_changed()) == {}


def test_reload_changed_reports_failures(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter"))
    (plugdir / "counter.py").write_text("def (:\n")
    outcome = result_of(manager.reload_changed())
    assert outcome["counter"].check(CompileFailed)
    assert result_of(manager.call("counter", "which")) == "v1"
    logged_failures.flush(CompileFailed)


def test_reloads_for_a_changed_source_say_so_in_their_events(env, logged_failures):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter"))
    (plugdir / "counter.py").write_text("def (:\n")
    result_of(manager.reload_changed())
    failure_of(manager.reload("counter"), CompileFailed)  # asked for: no reason
    assert [e.reason for e in events.of("plugin_reload_failed")] == ["source_changed", None]
    counter(plugdir, tag="v2")
    result_of(manager.reload_changed())
    result_of(manager.reload("counter"))
    assert [e.reason for e in events.of("plugin_reloaded")] == ["source_changed", None]
    logged_failures.flush(CompileFailed)


def test_several_changed_sources_reload_together_and_say_so(env, logged_failures):
    manager, clock, events, plugdir = env
    write_plugin(plugdir, "one")
    write_plugin(plugdir, "two")
    result_of(manager.load("one"))
    result_of(manager.load("two"))
    write_plugin(plugdir, "one", version="2")
    write_plugin(plugdir, "two", version="2", header="raise ValueError('two is broken')\n")
    outcome = result_of(manager.reload_changed())
    assert outcome["two"].check(Exception)
    failed = events.of("plugin_reload_failed")
    assert {e.plugin for e in failed} == {"one", "two"}
    assert {e.reason for e in failed} == {"source_changed"}
    write_plugin(plugdir, "two", version="3")
    result_of(manager.reload_changed())
    assert [(e.plugin, e.reason) for e in events.of("plugin_reloaded")] == [
        ("one", "source_changed"), ("two", "source_changed")]
    logged_failures.flush()


def test_reload_changed_sees_submodules(env):
    manager, clock, events, plugdir = env
    pkg = plugdir / "pkgplug"
    pkg.mkdir()
    (pkg / "impl.py").write_text("TAG = 'v1'\n")
    write_plugin(pkg, "__init__", header="from . import impl\n",
                 meta="name = 'pkgplug'\nversion = '1'\n",
                 body="@handler()\ndef which(self):\n    return impl.TAG\n")
    result_of(manager.load("pkgplug"))
    (pkg / "impl.py").write_text("TAG = 'v2'\n")
    assert list(result_of(manager.reload_changed())) == ["pkgplug"]
    assert result_of(manager.call("pkgplug", "which")) == "v2"


def test_old_versions_are_garbage_after_many_reloads(env):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter"))
    gc.collect()
    instances, modules = [], []
    for i in range(200):
        current = manager.getServiceNamed("counter")
        instances.append(weakref.ref(current))
        modules.append(weakref.ref(sys.modules[type(current).__module__]))
        result_of(manager.call("counter", "note", i))
        result_of(manager.reload("counter"))
    del current
    events.clear()
    gc.collect()
    assert [r for r in instances if r() is not None] == []
    assert [r for r in modules if r() is not None] == []


def tick(clock, seconds, step=0.01):
    """
    Advance the clock in small steps, as time passes: one big advance runs a
    LoopingCall only once.
    """
    for _ in range(round(seconds / step)):
        clock.advance(step)


def test_watch_reloads_once_per_burst_and_announces_files(env):
    manager, clock, events, plugdir = env
    counter(plugdir)
    result_of(manager.load("counter"))
    manager.watch(debounce=0.05, use_inotify=False, poll_interval=0.01)
    try:
        for i in range(10):  # a burst of saves, each within the debounce: one reload
            counter(plugdir, tag=f"v{i + 2}", extra=f"# save {i}\n")
            clock.advance(0.01)
        assert events.of("plugin_reloaded") == []
        tick(clock, 0.1)
        assert len(events.of("plugin_reloaded")) == 1
        assert result_of(manager.call("counter", "which")) == "v11"
        (plugdir / "bad.py").write_text("def (:\n")  # not loaded: only announced
        tick(clock, 0.1)
        assert [e.plugin for e in events.of("plugin_available")] == ["bad"]
        os.unlink(plugdir / "bad.py")
        tick(clock, 0.1)
        assert [e.plugin for e in events.of("plugin_source_removed")] == ["bad"]
        assert len(events.of("plugin_reloaded")) == 1
    finally:
        manager.unwatch()


def test_watch_syntax_error_keeps_old_then_next_good_save_reloads(env, logged_failures):
    manager, clock, events, plugdir = env
    path = counter(plugdir)
    result_of(manager.load("counter"))
    manager.watch(debounce=0.05, use_inotify=False, poll_interval=0.01)
    try:
        with open(path, "w") as f:
            f.write("def (:\n")
        tick(clock, 0.1)
        assert events.kinds("counter")[-1] == "plugin_reload_failed"
        assert result_of(manager.call("counter", "which")) == "v1"
        counter(plugdir, tag="v2")
        tick(clock, 0.1)
        assert result_of(manager.call("counter", "which")) == "v2"
    finally:
        manager.unwatch()
    logged_failures.flush(CompileFailed)


def wait_for_event(manager, kind, reactor, timeout=5.0):
    """
    A Deferred firing with the next event of C{kind} (or failing after
    C{timeout} seconds: the wait is bounded, never a sleep).
    """
    from twisted.internet.defer import Deferred

    d = Deferred()

    def listener(event):
        if event.kind == kind and not d.called:
            manager.unregister(listener)
            d.callback(event)

    manager.register(listener)
    return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_inotify_watch_reloads_real_edit_and_survives_pycache_removal(plugdir):
    from twisted.internet import reactor

    from twisted_plugmgr import PluginManager

    manager = PluginManager(paths=[str(plugdir)], reactor=reactor)
    manager.startService()
    path = counter(plugdir)
    await manager.load("counter")
    manager.watch(debounce=0.05)
    try:
        assert manager.watch_mode == "inotify"
        pycache = plugdir / "__pycache__"
        pycache.mkdir()
        (pycache / "junk.pyc").write_bytes(b"x")
        # An editor's save: write a temporary file, rename it over the plugin.
        reloaded = wait_for_event(manager, "plugin_reloaded", reactor)
        tmp = plugdir / ".counter.py.tmp"
        tmp.write_text(open(path).read().replace("'v1'", "'v2'"))
        os.replace(tmp, path)
        await reloaded
        assert await manager.call("counter", "which") == "v2"
        # Deleting a directory drops Twisted's INotify connection: the
        # watcher must come back and see the next save.
        (pycache / "junk.pyc").unlink()
        pycache.rmdir()
        reloaded = wait_for_event(manager, "plugin_reloaded", reactor)
        counter(plugdir, tag="v3")
        await reloaded
        assert await manager.call("counter", "which") == "v3"
    finally:
        manager.unwatch()
        await manager.stopService()
