"""
A rule-based state machine that drives a L{PluginManager} on a
L{task.Clock}, over a small fixed set of real plugin files, some of them
faulty, and checks after every step that the manager tells the truth and
loses nothing.

Rules: start the manager, load, unload (each mode, with and without
cascade), reload (with a good new source, or a broken one: syntax error,
raising at import, constructor raising, start raising, start hanging,
set_state raising, bad metadata), reload what changed on disk, post, call,
emit, advance the clock, watch files (polling on the Clock), save a new
version of a file and leave it there, shut down. A final shutdown ends
every example.

The plugins: good ones with some asynchronous handlers (C{alpha}; C{beta},
which hands its state over on reload), one whose get_state raises and whose
shutdown is slow (C{gamma}), one whose handlers raise, exit or fail
(C{raiser}), one that starts slowly (C{slowstart}) and one that requires it
(C{child}), one whose shutdown never fires (C{hangstop}), one whose start
never fires (C{hangstart}), one whose start raises (C{badstart}), and one,
with a slow shutdown, whose handlers unload, reload and post to plugins from
inside the manager (C{selfish}).

Invariants, after every step:
  - the plugin table, the manager's child services (and named services),
    the handler index and the plugin modules in C{sys.modules} agree;
  - no message is delivered twice; a call that succeeded was delivered;
  - a plugin that carries its state across reloads (C{beta}) has seen
    exactly the messages delivered to its lineage.

At the end of every example: the shutdown finished; every Deferred the
manager returned fired; every post was delivered exactly once or reported
as failed (C{plugin_error}); nothing is left in the table, the services,
C{sys.modules} or on the clock; and no Failure was logged other than the
manager's own events (an "Unhandled error in Deferred" is a lost failure).
"""

from __future__ import annotations

import collections
import gc
import itertools
import os
import shutil
import sys
import tempfile
import textwrap
import types
from typing import Any, Dict, List, Tuple

from _profiles import stateful
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.python.failure import Failure

from twisted_plugmgr import (
    HandlerAbandoned,
    NoSuchHandler,
    NoSuchPlugin,
    PluginError,
    PluginQuarantined,
    PluginState,
    ShutdownMode,
)
from twisted_plugmgr.testing import clock_manager

# -- the plugins -----------------------------------------------------------


class Ledger:
    """
    The C{data} every plugin is loaded with: where the plugins count what
    they were given.

    @ivar deliveries: (kind, token, plugin name) -> times delivered.
    @ivar lineages: lineage -> messages delivered to the instances of that
        lineage (a lineage is a plugin's life across reloads that hand its
        state over).
    """

    def __init__(self) -> None:
        self.deliveries: collections.Counter = collections.Counter()
        self.lineages: collections.Counter = collections.Counter()
        self._lineage = itertools.count(1)
        self.sent: List[Tuple[int, str, str]] = []

    def got(self, kind: str, token: int, plugin: str, instance: Any) -> None:
        """
        A handler of C{plugin} was given message C{token}.
        """
        self.deliveries[(kind, token, plugin)] += 1
        lineage = getattr(instance, "lineage", None)
        if lineage is not None:
            instance.count += 1
            self.lineages[lineage] += 1

    def post(self, manager: Any, target: str, token: int) -> None:
        """
        A plugin posts C{token} to C{target}: count it among the posts
        sent, unless it is refused at once.
        """
        try:
            manager.post(target, "note", token)
        except Exception:
            return
        self.sent.append((token, target, "note"))

    def new_lineage(self) -> int:
        """
        A fresh lineage, for a plugin that starts without state.
        """
        return next(self._lineage)


#: Where the plugins find the ledger when they were loaded without it (as a
#: requirement of another plugin is, with C{data=None}).
LEDGER_MODULE = "plugmgr_stateful_ledger"
sys.modules.setdefault(LEDGER_MODULE, types.ModuleType(LEDGER_MODULE))

HEADER = f"""\
import {LEDGER_MODULE}
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted_plugmgr import Plugin, handler

def ledger(plugin):
    return plugin.data or {LEDGER_MODULE}.ledger

"""


def handlers(post_tail: str = "", call_tail: str = "", emit_tail: str = "") -> str:
    """
    The three handlers every test plugin has, each counting its delivery
    in the ledger, then doing C{*_tail} (raising, say).
    """
    return (
        "@handler()\ndef note(self, token):\n"
        "    ledger(self).got('post', token, self.name, self)\n"
        f"    {post_tail or 'return None'}\n\n"
        "@handler()\ndef ask(self, token):\n"
        "    ledger(self).got('call', token, self.name, self)\n"
        f"    {call_tail or 'return token'}\n\n"
        "@handler()\ndef ping(self, token):\n"
        "    ledger(self).got('emit', token, self.name, self)\n"
        f"    {emit_tail or 'return self.name'}\n\n"
        "@handler()\ndef breakdown(self):\n"
        "    self.api.fail('declared broken by the state machine')\n\n"
    )


START_SLOW = (
    "def startService(self):\n    Plugin.startService(self)\n"
    "    return deferLater(self.api.reactor, 1, lambda: None)\n\n"
)
START_HANG = "def startService(self):\n    Plugin.startService(self)\n    return Deferred()\n\n"
START_RAISE = "def startService(self):\n    raise RuntimeError('cannot start')\n\n"
STOP_SLOW = (
    "def shutdown(self, mode, reason):\n"
    "    return deferLater(self.api.reactor, 2, lambda: 'slow bye')\n\n"
)
STOP_HANG = "def shutdown(self, mode, reason):\n    return Deferred()\n\n"
STATE = (
    "lineage = None\ncount = 0\n\n"
    "def startService(self):\n    Plugin.startService(self)\n"
    "    if self.lineage is None:\n        self.lineage = ledger(self).new_lineage()\n\n"
    "def get_state(self):\n    return (self.lineage, self.count)\n\n"
    "def set_state(self, state):\n    self.lineage, self.count = state\n\n"
)
SELFISH = (
    "@handler()\ndef note(self, token):\n"
    "    ledger(self).got('post', token, self.name, self)\n"
    "    manager = self.api.manager\n"
    "    if token % 3 == 0:\n"
    "        manager.unload(self.name, reason='selfish').addErrback(lambda f: None)\n"
    "    elif token % 3 == 1:\n"
    "        manager.reload(self.name).addErrback(lambda f: None)\n"
    "    else:\n"
    "        ledger(self).post(manager, 'alpha', -token)\n\n"
    "@handler()\ndef ask(self, token):\n"
    "    ledger(self).got('call', token, self.name, self)\n"
    "    self.api.manager.reload(self.name).addErrback(lambda f: None)\n"
    "    return token\n\n"
    "@handler()\ndef ping(self, token):\n"
    "    ledger(self).got('emit', token, self.name, self)\n"
    "    if token % 2:\n"
    "        self.api.manager.unload('alpha', reason='selfish').addErrback(lambda f: None)\n"
    "    return self.name\n\n"
)
GET_STATE_RAISE = "def get_state(self):\n    raise RuntimeError('no state to give')\n\n"
CTOR_RAISE = "def __init__(self, api, data):\n    raise RuntimeError('no constructor')\n\n"
SET_STATE_RAISE = "def set_state(self, state):\n    raise RuntimeError('cannot take state')\n\n"

#: name -> (class body pieces, requires)
PLUGINS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "alpha": (handlers(
        call_tail="return deferLater(self.api.reactor, 0.5, lambda: token) if token % 2 else token"
    ), ()),
    "beta": (handlers(
        emit_tail="return deferLater(self.api.reactor, 0.5, lambda: 'beta') if token % 2 "
                  "else 'beta'"
    ) + STATE, ()),
    "gamma": (GET_STATE_RAISE + STOP_SLOW, ()),
    "raiser": (
        handlers("raise SystemExit('post handler exits')",
                 "return fail(KeyError('call handler fails'))",
                 "raise ValueError('emit handler raises')"),
        (),
    ),
    "slowstart": (START_SLOW, ()),
    "child": ("", ("slowstart",)),
    "hangstop": (STOP_HANG, ()),
    "hangstart": (START_HANG, ()),
    "selfish": (SELFISH + STOP_SLOW, ()),
    "badstart": (START_RAISE, ()),
}

#: What a reload may find in the file.
VARIANTS = (
    "good", "good", "syntax", "import_raises", "ctor_raises", "start_raises",
    "start_hangs", "set_state_raises", "bad_metadata",
)


def plugin_source(name: str, version: str = "1", extra: str = "", claimed: str = "") -> str:
    """
    The module text of test plugin C{name}, with C{extra} appended to its
    class body (later definitions win).
    """
    body, requires = PLUGINS[name]
    if "def note" not in body:
        body = handlers() + body
    meta = (
        f"name = {claimed or name!r}\nversion = {version!r}\n"
        f"longname = 'stateful test plugin {name}'\nlicense = 'MIT'\nauthor = 'tests'\n"
        f"requires = {requires!r}\n\n"
    )
    return HEADER + f"\n\nclass P_{name}(Plugin):\n" + textwrap.indent(meta + body + extra, "    ")


def variant_source(name: str, variant: str) -> str:
    """
    The module text of a new version of C{name}: good, or broken in one
    way.
    """
    if variant == "syntax":
        return "def (:\n"
    if variant == "import_raises":
        return plugin_source(name, "2") + "\nraise RuntimeError('halfway through the import')\n"
    if variant == "bad_metadata":
        return plugin_source(name, "2", claimed="someone_else")
    extra = {
        "good": "",
        "ctor_raises": CTOR_RAISE,
        "start_raises": START_RAISE,
        "start_hangs": START_HANG,
        "set_state_raises": SET_STATE_RAISE,
    }[variant]
    return plugin_source(name, "2", extra)


NAMES = sorted(PLUGINS)
TARGETS = st.sampled_from(NAMES + ["ghost"])
MODES = st.sampled_from(list(ShutdownMode))
DEADLINES = {"immediate": 1, "smart": 3, "lazy": 6}
START_DEADLINE = 5


#: Where the plugin files go: a memory file system when there is one (the
#: machine rewrites files at every reload).
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# -- the machine -----------------------------------------------------------


class ManagerMachine(RuleBasedStateMachine):
    """
    A manager on a Clock, a directory of test plugins, and a record of
    every message sent and every Deferred received.
    """

    def __init__(self, logged_failures: Any) -> None:
        super().__init__()
        self.logged = logged_failures
        self.dir = tempfile.mkdtemp(prefix="plugmgr-stateful-", dir=FAST_TMP)
        self.originals = {name: plugin_source(name) for name in NAMES}
        for name, text in self.originals.items():
            _write(self.path(name), text)
        self.ledger = Ledger()
        sys.modules[LEDGER_MODULE].ledger = self.ledger  # type: ignore[attr-defined]
        self.manager, self.clock, self.events = clock_manager(
            paths=[self.dir], start=False, deadlines=DEADLINES,
            start_deadline=START_DEADLINE, timer=lambda: 0.0,
        )
        self.prefix = self.manager.module_prefix
        self.tokens = itertools.count(1)
        self.posts: List[Tuple[int, str, str]] = []
        self.calls: List[Tuple[int, str, str, List[Any]]] = []
        self.emits: List[Tuple[int, List[Any]]] = []
        self.operations: List[Tuple[str, List[Any]]] = []
        self.shut = False
        self.beta_lineage: Any = None
        self.seen_events = 0

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".py")

    def track(self, what: str, d: Any) -> List[Any]:
        """
        Keep C{d}'s outcome (consumed, so that no failure is logged as
        unhandled) to check at the end.
        """
        box: List[Any] = []
        d.addBoth(box.append)
        self.operations.append((what, box))
        return box

    # -- rules ---------------------------------------------------------

    def target(self, data: Any, *extra: str) -> str:
        """
        Draw a plugin name: mostly one in the table, sometimes any.
        """
        loaded = sorted(self.manager.plugin_table())
        if loaded:
            mostly = st.sampled_from(loaded)
            return data.draw(st.one_of(mostly, mostly, mostly, st.sampled_from(NAMES + list(extra))))
        return data.draw(st.sampled_from(NAMES + list(extra)))

    @initialize(start=st.booleans(), preload=st.lists(st.sampled_from(NAMES), unique=True),
                watch=st.booleans(),
                policies=st.lists(st.sampled_from([None, "no", "on-failure", "always"]),
                                  min_size=len(NAMES), max_size=len(NAMES)))
    def begin(self, start: bool, preload: List[str], watch: bool, policies: List[Any]) -> None:
        if start:
            self.track("start", self.manager.startService())
        if watch:
            self.watch(True)
        for name, restart in zip(preload, policies, strict=False):
            self.load(name, restart=restart, burst=2, delay=0.5)

    @precondition(lambda self: not self.manager.running and not self.shut)
    @rule()
    def start_manager(self) -> None:
        self.track("start", self.manager.startService())

    @rule(name=st.sampled_from(NAMES + ["ghost", "../alpha", "os.path"]),
          restart=st.sampled_from([None, "no", "on-failure", "always"]),
          burst=st.sampled_from([None, 0, 1, 3]), delay=st.sampled_from([None, 0, 0.5, 2]),
          interval=st.sampled_from([None, 1, 30]))
    def load(self, name: str, restart: Any = None, burst: Any = None, delay: Any = None,
             interval: Any = None) -> None:
        self.track(f"load {name}", self.manager.load(
            name, self.ledger, restart=restart, restart_burst=burst, restart_delay=delay,
            restart_interval=interval))

    @rule(data=st.data())
    def fail(self, data: Any) -> None:
        # A plugin says it is broken: its policy restarts, quarantines or
        # unloads it.
        self.track("fail", self.manager.call(self.target(data), "breakdown"))

    @rule(data=st.data())
    def reset(self, data: Any) -> None:
        self.track("reset", self.manager.reset(self.target(data)))

    @rule(data=st.data(), mode=MODES, cascade=st.booleans())
    def unload(self, data: Any, mode: ShutdownMode, cascade: bool) -> None:
        name = self.target(data, "ghost")
        self.track(f"unload {name}", self.manager.unload(name, mode, "rule", cascade=cascade))

    @rule(data=st.data(), variant=st.sampled_from(VARIANTS), mode=MODES,
          dependents=st.booleans())
    def reload(self, data: Any, variant: str, mode: ShutdownMode, dependents: bool) -> None:
        name = self.target(data)
        _write(self.path(name), variant_source(name, variant))
        try:
            d = self.manager.reload(name, mode=mode, dependents=dependents)
        finally:
            _write(self.path(name), self.originals[name])
        self.track(f"reload {name} ({variant})", d)

    @rule(data=st.data(), variant=st.sampled_from(VARIANTS))
    def reload_changed(self, data: Any, variant: str) -> None:
        name = self.target(data)
        _write(self.path(name), variant_source(name, variant))
        try:
            d = self.manager.reload_changed()
        finally:
            _write(self.path(name), self.originals[name])
        self.track("reload_changed", d)

    @precondition(lambda self: not self.shut)
    @rule(on=st.booleans())
    def watch(self, on: bool) -> None:
        # Reload on file change, polling (on the Clock).
        if on:
            self.manager.watch(debounce=0.05, use_inotify=False, poll_interval=0.25)
        else:
            self.manager.unwatch()

    @rule(data=st.data(), variant=st.sampled_from(VARIANTS), wait=st.booleans())
    def save(self, data: Any, variant: str, wait: bool) -> None:
        # An edit left on disk: the watcher (if on) reloads it, once the
        # clock moves; later loads and reload_changed see it.
        name = self.target(data)
        _write(self.path(name), variant_source(name, variant))
        if wait:
            self.clock.advance(0.3)
            self.clock.advance(0.1)

    @rule(data=st.data())
    def restore(self, data: Any) -> None:
        name = self.target(data)
        _write(self.path(name), self.originals[name])

    @rule(data=st.data(), event=st.sampled_from(["note", "note", "nohandler"]))
    def post(self, data: Any, event: str) -> None:
        name = self.target(data, "ghost")
        token = next(self.tokens)
        try:
            self.manager.post(name, event, token)
        except NoSuchPlugin:
            return  # refused at once: the caller knows
        self.posts.append((token, name, event))

    @rule(data=st.data(), event=st.sampled_from(["ask", "ask", "nohandler"]))
    def call(self, data: Any, event: str) -> None:
        name = self.target(data, "ghost")
        token = next(self.tokens)
        box: List[Any] = []
        self.manager.call(name, event, token).addBoth(box.append)
        self.calls.append((token, name, event, box))

    @rule()
    def emit(self) -> None:
        token = next(self.tokens)
        box: List[Any] = []
        self.manager.emit("ping", token).addBoth(box.append)
        self.emits.append((token, box))

    @rule(seconds=st.sampled_from([0, 0, 0.5, 1, 2, 3, 5, 10]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: not self.shut)
    @rule(mode=MODES, now=st.integers(0, 5))
    def shutdown(self, mode: ShutdownMode, now: int) -> None:
        # Rarely: the rest of the example then checks what a stopped
        # manager refuses.
        if now == 0:
            self.shut = True
            self.track("shutdown", self.manager.shutdown(mode))

    # -- invariants ----------------------------------------------------

    def private_modules(self) -> set:
        return {n for n in sys.modules if n.startswith(self.prefix)}

    @invariant()
    def table_services_and_modules_agree(self) -> None:
        table = self.manager.plugin_table()
        for name, info in table.items():
            assert info.name == name
            assert info.state not in (PluginState.STOPPED, PluginState.FAILED), (name, info)
        # A restarting plugin has a child while its failed instance stops
        # and while its fresh one starts, none during the delay between; a
        # quarantined one has none.
        maybe = {name for name, info in table.items() if info.state is PluginState.RESTARTING}
        live = {name for name, info in table.items()
                if info.state not in (PluginState.LOADING, PluginState.QUARANTINED)} - maybe
        services = {getattr(s, "name", None) for s in self.manager.services}
        assert len(services) == len(self.manager.services), self.manager.services
        assert live <= services <= live | maybe, (services, table)
        assert set(self.manager.namedServices) == services
        assert all(s.parent is self.manager for s in self.manager.services)
        modules = {info.module for info in table.values() if info.module}
        assert self.private_modules() == modules, (self.private_modules(), table)
        handling = {n for n, info in table.items()
                    if info.state in (PluginState.RUNNING, PluginState.RELOADING)}
        assert {n for n, info in table.items() if "ping" in info.events} == handling

    @invariant()
    def nothing_delivered_twice(self) -> None:
        twice = {key: n for key, n in self.ledger.deliveries.items() if n > 1}
        assert not twice, twice
        for token, name, _event, box in self.calls:
            if box and not isinstance(box[0], Failure):
                assert box[0] == token
                assert self.ledger.deliveries[("call", token, name)] == 1

    @invariant()
    def state_follows_the_lineage(self) -> None:
        # beta hands its state over on reload: while it stays loaded (no
        # plugin_unloaded or plugin_init_failed about it since the last
        # check), its lineage goes on, and it has seen every message
        # delivered to that lineage.
        gone = any(e.plugin == "beta" and e.kind in ("plugin_unloaded", "plugin_init_failed",
                                                       "plugin_failed", "plugin_quarantined")
                   for e in self.events.events[self.seen_events:])
        self.seen_events = len(self.events.events)
        beta = self.manager.namedServices.get("beta")
        record = self.manager.plugin_table().get("beta")
        if beta is None or record is None or record.state is not PluginState.RUNNING:
            self.beta_lineage = None if (gone or record is None) else self.beta_lineage
            return
        assert beta.lineage is not None
        if self.beta_lineage is not None and not gone:
            assert beta.lineage == self.beta_lineage, "beta's state was lost"
        self.beta_lineage = beta.lineage
        assert beta.count == self.ledger.lineages[beta.lineage], (
            beta.count, self.ledger.lineages)

    # -- the end -------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.finish()
        finally:
            self.logged.flush()
            for name in self.private_modules():
                del sys.modules[name]
            shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self) -> None:
        """
        Shut down, advance the clock past every deadline, and check that
        everything was accounted for.
        """
        done: List[Any] = []
        self.manager.shutdown(ShutdownMode.SMART).addBoth(done.append)
        for _ in range(200):
            if done and not self.clock.getDelayedCalls():
                break
            self.clock.advance(1)
        assert done == [None], f"the shutdown did not finish: {done}"
        assert self.manager.plugin_table() == {}
        assert self.manager.services == [] and self.manager.namedServices == {}
        assert self.private_modules() == set()
        assert self.clock.getDelayedCalls() == []

        for what, box in self.operations:
            assert box, f"{what} never finished"
            if isinstance(box[0], Failure):
                assert box[0].check(PluginError), f"{what}: {box[0].getTraceback()}"
        for token, name, event, box in self.calls:
            assert box, f"call {token} to {name} ({event}) never answered"
            delivered = self.ledger.deliveries[("call", token, name)]
            assert delivered <= 1
            if isinstance(box[0], Failure):
                assert box[0].check(PluginError, KeyError), box[0].getTraceback()
            else:
                assert delivered == 1
        for token, box in self.emits:
            assert box, f"emit {token} never finished"
            assert not isinstance(box[0], Failure), box[0].getTraceback()

        undelivered = [
            (token, name, event) for token, name, event in self.posts
            if self.ledger.deliveries[("post", token, name)] == 0
        ]
        reported = [
            e for e in self.events.of("plugin_error")
            if e.failure is not None
            and e.failure.check(NoSuchPlugin, NoSuchHandler, PluginQuarantined)
            and not e.failure.check(HandlerAbandoned)
        ]
        assert len(undelivered) == len(reported), (
            f"{len(undelivered)} posts undelivered, {len(reported)} reported: {undelivered}")

        # A Failure logged by anything but the manager's event log is one
        # that nobody handled (an "Unhandled error in Deferred"). A young
        # collection here is cheap; older garbage is collected (and blamed on
        # the test as a whole) by the logged_failures fixture.
        gc.collect(1)
        stray = [
            f"{e.get('log_namespace')}: {e['log_failure'].getTraceback()}"
            for e in self.logged.events if e.get("log_namespace") != "twisted_plugmgr.events"
        ]
        assert not stray, "\n".join(stray)


def test_manager_state_machine(logged_failures):
    """
    Whatever sequence of operations and faults: the views agree, nothing is
    lost, the shutdown finishes.
    """
    run_state_machine_as_test(lambda: ManagerMachine(logged_failures), settings=stateful())
