"""
Isolated plugins: the defects a review found (each test fails without its
fix), with real worker processes and, for Ctrl-C, a real C{twist plugmgr}.
"""

# The fixtures `plugins` and `manager` come from test_isolate: the tests'
# parameters of those names are them (F811).
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap

import pytest
import pytest_twisted
from test_isolate import alive, manager, plugins, until, write  # noqa: F401
from twisted.internet import reactor
from twisted.internet.defer import DeferredList

from twisted_plugmgr import (
    CallTimedOut,
    InitFailed,
    InvalidMetadata,
    PluginCrashed,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="worker processes: Linux")


def source(text: str) -> str:
    return textwrap.dedent(text)


# -- finding 1: a transaction while one of its plugins is unloaded -------------


@pytest_twisted.ensureDeferred
async def test_unload_while_a_transaction_prepares_waits_for_it(manager):
    """
    C{unload} of an isolated plugin asked while C{reload_many} waits for its
    new worker: the transaction ends (here: it commits), then the unload
    runs; no worker is left (the fixture checks at teardown) and no error
    is left unhandled.
    """
    await manager.load("iso")
    await manager.load("local")
    outcome = manager.reload_many(["iso", "local"])
    unloaded = manager.unload("iso")
    versions = await outcome.addTimeout(10, reactor)
    assert versions == {"iso": "1", "local": "1"}
    await unloaded.addTimeout(10, reactor)
    assert "iso" not in manager.plugin_table()
    assert await manager.call("local", "ping", 1) == ("local", 1)


# -- finding 2: the call deadline counts from the call's turn -------------------


@pytest_twisted.ensureDeferred
async def test_queued_calls_are_not_timed_while_they_wait(manager, plugins):
    """
    Three calls at once to a handler that takes 0.6 s, with a deadline of
    1 s: each gets its answer (the worker runs them one after the other;
    none is timed while it waits behind another), the worker is not killed.
    """
    write(plugins, "slow", source('''
        import os, time
        from twisted_plugmgr import Plugin, handler

        class Slow(Plugin):
            name = "slow"
            version = "1"
            isolate = True
            call_deadline = 1.0

            @handler("work")
            def work(self, i):
                time.sleep(0.6)
                return i, os.getpid()
        '''))
    failed = []
    manager.register(lambda e: failed.append(e) if e.kind == "plugin_failed" else None)
    await manager.load("slow")
    pid = manager.info("slow").pid
    results = await DeferredList([manager.call("slow", "work", i) for i in range(3)],
                                 consumeErrors=True)
    assert [r for r in results] == [(True, (i, pid)) for i in range(3)]
    assert failed == []
    assert manager.info("slow").pid == pid


@pytest_twisted.ensureDeferred
async def test_a_call_behind_another_still_times_out(manager, plugins, logged_failures):
    """
    A hanging call sent behind a quick one still times out (its deadline
    runs from the quick one's answer); the quick one answers.
    """
    write(plugins, "hangs", source('''
        import time
        from twisted_plugmgr import Plugin, handler

        class Hangs(Plugin):
            name = "hangs"
            version = "1"
            isolate = True
            call_deadline = 0.5

            @handler("quick")
            def quick(self):
                time.sleep(0.3)
                return "quick"

            @handler("hang")
            def hang(self):
                while True:
                    pass
        '''))
    await manager.load("hangs")
    quick = manager.call("hangs", "quick")
    started = reactor.seconds()
    hang = manager.call("hangs", "hang")
    assert await quick == "quick"
    with pytest.raises(CallTimedOut) as info:
        await hang.addTimeout(10, reactor)
    assert info.value.handler == "hang" and info.value.seconds == 0.5
    assert reactor.seconds() - started >= 0.75  # 0.3 s behind quick, then 0.5 s
    logged_failures.flush(CallTimedOut)


# -- finding 4: isolate = True that is not a literal of the module's class --------


@pytest_twisted.ensureDeferred
async def test_package_plugin_whose_class_is_in_a_submodule_is_isolated(manager, plugins):
    """
    A package plugin whose C{__init__.py} imports its class from a submodule
    that says C{isolate = True}: it runs in a worker.
    """
    package = plugins / "pkgiso"
    package.mkdir()
    (package / "__init__.py").write_text("from .impl import P\n")
    (package / "impl.py").write_text(source('''
        import os
        from twisted_plugmgr import Plugin, handler

        class P(Plugin):
            name = "pkgiso"
            version = "1"
            isolate = True

            @handler("pid")
            def pid(self):
                return os.getpid()
        '''))
    await manager.load("pkgiso")
    pid = await manager.call("pkgiso", "pid")
    assert pid != os.getpid()
    assert manager.info("pkgiso").isolated is True and manager.info("pkgiso").pid == pid


@pytest.mark.parametrize("body", [
    # computed
    '''
    from twisted_plugmgr import Plugin

    class Comp(Plugin):
        name = "comp"
        version = "1"
        isolate = bool(1)
    ''',
    # inherited (from a base class in a submodule of the package)
    None,
], ids=["computed", "inherited"])
@pytest_twisted.ensureDeferred
async def test_isolate_that_is_not_a_literal_is_refused(manager, plugins, logged_failures, body):
    """
    C{isolate = True} inherited or computed cannot be read before the
    import: the load fails with L{InvalidMetadata} naming the class (it
    never runs in the manager's process), and nothing of it is left.
    """
    if body is None:
        package = plugins / "comp"
        package.mkdir()
        (package / "_base.py").write_text(source('''
            from twisted_plugmgr import Plugin

            class Isolating(Plugin):
                isolate = True
            '''))
        (package / "__init__.py").write_text(source('''
            from . import _base

            class Comp(_base.Isolating):
                name = "comp"
                version = "1"
            '''))
    else:
        write(plugins, "comp", source(body))
    with pytest.raises(InvalidMetadata) as info:
        await manager.load("comp")
    assert "isolate must be a literal in the class body of Comp" in str(info.value)
    assert "comp" not in manager.plugin_table()
    assert not [m for m in sys.modules if m.startswith(manager.module_prefix)
                and "comp" in m]
    logged_failures.flush(InvalidMetadata)


@pytest_twisted.ensureDeferred
async def test_isolate_false_at_load_runs_an_inherited_isolate_in_process(manager, plugins):
    """
    C{load(..., isolate=False)} overrides an inherited C{isolate = True}.
    """
    package = plugins / "comp"
    package.mkdir()
    (package / "_base.py").write_text(source('''
        from twisted_plugmgr import Plugin

        class Isolating(Plugin):
            isolate = True
        '''))
    (package / "__init__.py").write_text(source('''
        import os
        from twisted_plugmgr import handler
        from . import _base

        class Comp(_base.Isolating):
            name = "comp"
            version = "1"

            @handler("pid")
            def pid(self):
                return os.getpid()
        '''))
    await manager.load("comp", isolate=False)
    assert await manager.call("comp", "pid") == os.getpid()


# -- finding 5: Ctrl-C reaches the manager, which stops its workers in order -------


@pytest_twisted.ensureDeferred
async def test_ctrl_c_runs_the_staged_shutdown_of_isolated_plugins(tmp_path):
    """
    SIGINT to the foreground process group of a real C{twist plugmgr} (what
    Ctrl-C in its terminal sends): the isolated plugin's C{shutdown()} runs
    in its worker, no C{plugin_failed} is reported, no worker is left.
    """
    from _processes import Watched, environment, make_home, timeout

    mark = tmp_path / "shutdown.txt"
    home = make_home(tmp_path, '[manager]\npaths = ["plugins"]\n\n[plugins.iso]\n')
    write(home / "plugins", "iso", source(f'''
        import os
        from twisted_plugmgr import Plugin, handler

        class Iso(Plugin):
            name = "iso"
            version = "1"
            isolate = True

            def shutdown(self, mode, reason):
                with open({str(mark)!r}, "w") as f:
                    f.write(str(os.getpid()))
                return super().shutdown(mode, reason)
        '''))
    proto = Watched()
    # A process group of its own, led by the daemon: the terminal's
    # foreground group in miniature.
    argv = [sys.executable, "-c", "import os, sys; os.setpgid(0, 0); "
            "os.execv(sys.executable, sys.argv[1:])",
            sys.executable, "-m", "twisted", "--log-format=text", "plugmgr",
            "--config", "plugmgr.toml"]
    transport = reactor.spawnProcess(proto, sys.executable, argv, env=environment(),
                                     path=str(home))
    try:
        await proto.wait_for("plugmgr ready")
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = await timeout(getProcessOutputAndValue(
            sys.executable, ["-m", "twisted_plugmgr.cli", "--control",
                             f"unix:path={home / 'plugmgr.sock'}", "--json", "status"],
            env=environment(), path=str(home)))
        assert code == 0, err
        (row,) = [r for r in json.loads(out) if r["name"] == "iso"]
        worker = row["pid"]
        assert worker not in (None, transport.pid)
        os.killpg(transport.pid, signal.SIGINT)
        await timeout(proto.ended)
        assert mark.read_text() == str(worker)
        assert "plugin_failed" not in proto.text
        await until(lambda: not alive(worker), 2.0)
    finally:
        if not proto.ended.called:
            transport.signalProcess("KILL")
            await timeout(proto.ended)


# -- finding 6: the plugin's own traceback of a failing constructor or start --------


@pytest.mark.parametrize("where", ["__init__", "startService"])
@pytest_twisted.ensureDeferred
async def test_isolated_plugin_failing_to_start_logs_its_own_traceback(
        manager, plugins, logged_failures, where):
    """
    An isolated plugin whose constructor (or C{startService}) raises: the
    load fails with L{InitFailed}, and the logged failure's traceback is
    the plugin's own code (from the worker), not the manager's.
    """
    write(plugins, "bad", source(f'''
        from twisted_plugmgr import Plugin

        def helper():
            return 1 / 0

        class Bad(Plugin):
            name = "bad"
            version = "1"
            isolate = True

            def {where}(self, *args):
                helper()
        '''))
    with pytest.raises(InitFailed):
        await manager.load("bad")
    (logged,) = logged_failures.flush(InitFailed)
    text = logged.getTraceback()
    assert str(plugins / "bad.py") in text
    assert "return 1 / 0" in text and f"in {where}" in text
    assert "ZeroDivisionError: division by zero" in text
    assert "twisted_plugmgr/" not in text and "twisted/internet" not in text
    assert "bad" not in manager.plugin_table()


# -- finding 9: errors of this package keep their attributes across a worker --------


@pytest_twisted.ensureDeferred
async def test_errors_from_another_worker_keep_their_attributes(manager, plugins,
                                                                logged_failures):
    """
    Isolated plugin A calls isolated plugins whose handler times out and
    whose worker exits: A's errback reads C{CallTimedOut.handler} and
    C{.seconds}, C{PluginCrashed.exit_code} and C{.signal}.
    """
    write(plugins, "asker", source('''
        from twisted_plugmgr import Plugin, handler

        class Asker(Plugin):
            name = "asker"
            version = "1"
            isolate = True

            @handler("probe")
            def probe(self, plugin, event):
                def seen(failure):
                    e = failure.value
                    return (type(e).__name__, e.plugin, getattr(e, "handler", None),
                            getattr(e, "seconds", None), getattr(e, "exit_code", None),
                            getattr(e, "signal", None))
                return self.api.call(plugin, event).addCallbacks(lambda r: r, seen)
        '''))
    for name in ("hangs", "exits"):
        write(plugins, name, source(f'''
            import os
            from twisted_plugmgr import Plugin, handler

            class Target(Plugin):
                name = "{name}"
                version = "1"
                isolate = True
                call_deadline = 0.5

                @handler("hang")
                def hang(self):
                    while True:
                        pass

                @handler("exit")
                def exit_now(self):
                    os._exit(3)
            '''))
        await manager.load(name)
    await manager.load("asker")
    assert await manager.call("asker", "probe", "hangs", "hang") == (
        "CallTimedOut", "hangs", "hang", 0.5, None, None)
    assert await manager.call("asker", "probe", "exits", "exit") == (
        "PluginCrashed", "exits", None, None, 3, None)
    logged_failures.flush(CallTimedOut, PluginCrashed)


# -- finding 11: plugmgr_handler_seconds of an isolated plugin ---------------------


@pytest_twisted.ensureDeferred
async def test_isolated_handler_time_lands_in_its_bucket(manager, plugins):
    """
    With metrics on, calls to an isolated handler that takes ~30 ms in its
    worker are counted in the histogram bucket of 25-50 ms, not in the
    first one (the time of the send in the manager).
    """
    from twisted_plugmgr._registry import HANDLER_BUCKETS

    write(plugins, "sleeper", source('''
        import time
        from twisted_plugmgr import Plugin, handler

        class Sleeper(Plugin):
            name = "sleeper"
            version = "1"
            isolate = True

            @handler("nap")
            def nap(self):
                time.sleep(0.03)
        '''))
    manager.metrics.enable()
    try:
        await manager.load("sleeper")
        for _ in range(3):
            await manager.call("sleeper", "nap")
        counted = manager.metrics.plugins()["sleeper"]
    finally:
        manager.metrics.disable()
    assert counted.calls == {"nap": 3}
    bucket = HANDLER_BUCKETS.index(0.05)
    # 30 ms of sleep, and less than 20 ms more on a busy machine
    assert counted.buckets[bucket] == 3, counted.buckets
    assert sum(counted.buckets) == 3
    assert 0.09 <= counted.seconds < 0.5
