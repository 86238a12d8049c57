"""
Soak test: a running manager with many plugins under a random mix of load,
unload, reload (good and broken new sources), reload_changed, post, call
and emit for a given number of seconds, then a shutdown. Prints what was
done, the failures seen by kind, the messages lost (must be 0), the peak
memory and the memory growth; exits 1 if a message was lost or delivered
twice, or if the shutdown did not finish.

Bounded in time (the run, then the shutdown with a deadline); loopback
only (a control channel on a UNIX socket in a temporary directory, asked
for the plugin table now and then).

    python bench/soak.py --seconds 60 --plugins 200
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import os
import random
import resource
import shutil
import sys
import tempfile
import textwrap
import time
import types
from typing import Any, Dict, List, Set

from twisted.internet import defer, task
from twisted.python.failure import Failure

from twisted_plugmgr import NoSuchHandler, NoSuchPlugin, PluginManager, ShutdownMode
from twisted_plugmgr._control import ControlFactory, ControlService, connect

#: The plugins find the ledger here when loaded without data.
LEDGER_MODULE = "plugmgr_soak_ledger"

HEADER = f"""\
import {LEDGER_MODULE}
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted_plugmgr import Plugin, handler
"""

HANDLERS = """
@handler()
def note(self, token):
    {ledger}.ledger.got("post", token)
    {post_tail}

@handler()
def ask(self, token):
    {ledger}.ledger.got("call", token)
    {call_tail}

@handler()
def ping(self, token):
    {ledger}.ledger.got("emit", token)
    return self.name
"""

#: Kinds of plugin: (weight, extra class body, handler tails).
KINDS = {
    "plain": (60, "", ("return None", "return token")),
    "async": (10, "", ("return None",
                       "return deferLater(self.api.reactor, 0.01, lambda: token)")),
    "stateful": (8, """
        count = 0

        def get_state(self):
            return self.count

        def set_state(self, state):
            self.count = state
    """, ("self.count += 1", "return token")),
    "raising": (6, "", ("raise ValueError('post handler fails')",
                        "return fail(KeyError('call handler fails'))")),
    "slow_stop": (6, """
        def shutdown(self, mode, reason):
            return deferLater(self.api.reactor, 0.05, lambda: 'slow bye')
    """, ("return None", "return token")),
    "hang_stop": (3, """
        def shutdown(self, mode, reason):
            return Deferred()
    """, ("return None", "return token")),
    "bad_start": (3, """
        def startService(self):
            raise RuntimeError('cannot start')
    """, ("return None", "return token")),
    "timers": (4, """
        def startService(self):
            Plugin.startService(self)
            self.api.reactor.callLater(3600, lambda: None)
    """, ("return None", "return token")),
}

#: What a reload may find in the file (the good source is put back after).
BROKEN = {
    "syntax": "def (:\n",
    "import": "raise RuntimeError('halfway through the import')\n",
}


def plugin_source(name: str, kind: str, version: str = "1") -> str:
    """
    The module text of soak plugin C{name} of C{kind}.
    """
    _, extra, (post_tail, call_tail) = KINDS[kind]
    body = HANDLERS.format(ledger=LEDGER_MODULE, post_tail=post_tail, call_tail=call_tail)
    meta = (f"name = {name!r}\nversion = {version!r}\nlongname = 'soak {kind}'\n"
            "license = 'MIT'\nauthor = 'soak'\n")
    return HEADER + f"\nclass P_{name}(Plugin):\n" + textwrap.indent(
        meta + textwrap.dedent(body) + textwrap.dedent(extra), "    ")


class Ledger:
    """
    What was sent and what arrived, without keeping a record per message
    (the soak measures memory).
    """

    def __init__(self) -> None:
        self.outstanding: Dict[str, Set[int]] = {"post": set(), "call": set(), "emit": set()}
        self.delivered: collections.Counter = collections.Counter()
        self.duplicates: collections.Counter = collections.Counter()
        self.sent: collections.Counter = collections.Counter()

    def send(self, kind: str, token: int) -> None:
        """
        Message C{token} of C{kind} was sent.
        """
        self.sent[kind] += 1
        if kind != "emit":
            self.outstanding[kind].add(token)

    def got(self, kind: str, token: int) -> None:
        """
        A handler was given message C{token} (called by the plugins).
        """
        self.delivered[kind] += 1
        if kind == "emit":
            return
        try:
            self.outstanding[kind].remove(token)
        except KeyError:
            self.duplicates[kind] += 1


class Counts:
    """
    A listener that counts events by kind, and the posts reported failed.
    """

    def __init__(self) -> None:
        self.events: collections.Counter = collections.Counter()
        self.failed_posts = 0

    def __call__(self, event: Any) -> None:
        self.events[event.kind] += 1
        if event.kind == "plugin_error" and event.failure is not None \
                and event.failure.check(NoSuchPlugin, NoSuchHandler):
            self.failed_posts += 1


class LogCounts:
    """
    The log observer of the run: counts the Failures logged, by namespace
    (the manager's event log, "twisted_plugmgr.events", logs every plugin
    error; anything else is a failure nobody handled), and writes
    everything to a file if asked.
    """

    def __init__(self, path: Any = None) -> None:
        self.failures: collections.Counter = collections.Counter()
        self.examples: Dict[str, str] = {}
        self._file = open(path, "w") if path else None  # noqa: SIM115

    def __call__(self, event: Dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            namespace = event.get("log_namespace", "?")
            self.failures[namespace] += 1
            if namespace != "twisted_plugmgr.events" and namespace not in self.examples:
                self.examples[namespace] = failure.getTraceback()
        if self._file is not None:
            from twisted.logger import formatEventAsClassicLogText

            self._file.write(formatEventAsClassicLogText(event) or "")

    @property
    def stray(self) -> int:
        return sum(n for ns, n in self.failures.items() if ns != "twisted_plugmgr.events")


def rss_mb() -> float:
    """
    The resident set size now, in MB.
    """
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """
    The peak resident set size, in MB.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


class Soak:
    """
    One soak run.
    """

    def __init__(self, reactor: Any, options: argparse.Namespace) -> None:
        self.reactor = reactor
        self.options = options
        self.random = random.Random(options.seed)
        self.dir = tempfile.mkdtemp(prefix="plugmgr-soak-")
        self.plugdir = os.path.join(self.dir, "plugins")
        os.mkdir(self.plugdir)
        self.kinds: Dict[str, str] = {}
        names = [f"p{i:04d}" for i in range(options.plugins)]
        weights = [KINDS[k][0] for k in KINDS]
        for name in names:
            kind = self.random.choices(list(KINDS), weights)[0]
            self.kinds[name] = kind
            self.write(name, plugin_source(name, kind))
        self.names = names
        self.ledger = Ledger()
        ledger_module = sys.modules.setdefault(LEDGER_MODULE, types.ModuleType(LEDGER_MODULE))
        ledger_module.ledger = self.ledger  # type: ignore[attr-defined]
        self.counts = Counts()
        self.manager = PluginManager(
            paths=[self.plugdir], reactor=reactor,
            deadlines={"immediate": 0.2, "smart": 0.5, "lazy": 1},
            start_deadline=2,
        )
        self.manager.register(self.counts)
        self.tokens = itertools.count(1)
        self.done: collections.Counter = collections.Counter()
        self.failed: collections.Counter = collections.Counter()
        self.failures: collections.Counter = collections.Counter()
        self.pending_calls: Dict[int, Any] = {}
        self.pending_ops = 0
        self.pending_emits = 0
        # Begin logging (Twisted buffers every log event until then: memory
        # that would grow with the operations).
        from twisted.logger import globalLogBeginner

        self.log = LogCounts(options.log)
        globalLogBeginner.beginLoggingTo([self.log], discardBuffer=True,
                                         redirectStandardIO=False)

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.plugdir, name + ".py"), "w") as f:
            f.write(text)

    # -- bookkeeping ---------------------------------------------------------

    def track(self, what: str, d: defer.Deferred) -> None:
        self.done[what] += 1
        self.pending_ops += 1

        def outcome(result: Any) -> None:
            self.pending_ops -= 1
            if isinstance(result, Failure):
                self.failed[what] += 1
                self.failures[result.type.__name__] += 1

        d.addBoth(outcome)

    def loaded(self) -> List[str]:
        return list(self.manager.namedServices)

    def target(self) -> str:
        loaded = self.loaded()
        if loaded and self.random.random() < 0.9:
            return self.random.choice(loaded)
        return self.random.choice(self.names)

    # -- operations ----------------------------------------------------------

    def op_load(self) -> None:
        name = self.random.choice(self.names)
        self.track("load", self.manager.load(name))

    def op_unload(self) -> None:
        mode = self.random.choice(list(ShutdownMode))
        self.track("unload", self.manager.unload(self.target(), mode, "soak"))

    def op_reload(self) -> None:
        name = self.target()
        kind = self.kinds[name]
        roll = self.random.random()
        if roll < 0.7:
            new = plugin_source(name, kind, version=str(self.random.randint(2, 9)))
        else:
            new = BROKEN[self.random.choice(list(BROKEN))]
        self.write(name, new)
        try:
            d = self.manager.reload(name, mode=self.random.choice(list(ShutdownMode)))
        finally:
            self.write(name, plugin_source(name, kind))
        self.track("reload", d)

    def op_reload_changed(self) -> None:
        self.track("reload_changed", self.manager.reload_changed())

    def op_post(self) -> None:
        token = next(self.tokens)
        event = "note" if self.random.random() < 0.95 else "nohandler"
        self.done["post"] += 1
        try:
            self.manager.post(self.target(), event, token)
        except NoSuchPlugin:
            self.failed["post"] += 1
            self.failures["NoSuchPlugin"] += 1
            return
        self.ledger.send("post", token)

    def op_call(self) -> None:
        token = next(self.tokens)
        self.done["call"] += 1
        self.ledger.send("call", token)
        d = self.manager.call(self.target(), "ask", token)
        self.pending_calls[token] = d

        def answered(result: Any) -> None:
            del self.pending_calls[token]
            if isinstance(result, Failure):
                self.failed["call"] += 1
                self.failures[result.type.__name__] += 1
                # A call that failed was either never delivered, or
                # delivered and then failed: either way, answered.
                self.ledger.outstanding["call"].discard(token)
            elif token in self.ledger.outstanding["call"]:
                self.ledger.duplicates["answered undelivered call"] += 1

        d.addBoth(answered)

    def op_emit(self) -> None:
        token = next(self.tokens)
        self.done["emit"] += 1
        self.ledger.send("emit", token)
        self.pending_emits += 1

        def finished(result: Any) -> None:
            self.pending_emits -= 1
            if isinstance(result, Failure):
                self.failed["emit"] += 1
                self.failures[result.type.__name__] += 1

        self.manager.emit("ping", token).addBoth(finished)

    OPERATIONS = (
        ("post", 30), ("call", 25), ("emit", 12), ("load", 12), ("unload", 9),
        ("reload", 10), ("reload_changed", 0.2),
    )

    def operations(self, until: float) -> Any:
        names = [n for n, _ in self.OPERATIONS]
        weights = [w for _, w in self.OPERATIONS]
        while time.monotonic() < until:
            op = self.random.choices(names, weights)[0]
            getattr(self, "op_" + op)()
            yield None

    # -- the run -------------------------------------------------------------

    async def run(self) -> int:
        options = self.options
        started = time.monotonic()
        rss_start = rss_mb()
        self.manager.startService()
        sock = os.path.join(self.dir, "ctl.sock")
        control = ControlService(ControlFactory(self.manager, self.reactor),
                                 f"unix:path={sock}", self.reactor)
        control.startService()
        client = await connect(self.reactor, f"unix:path={sock}")
        statuses = 0

        # Load about half the plugins first.
        loads = []
        for name in self.random.sample(self.names, len(self.names) // 2):
            d = self.manager.load(name)
            self.track("load", d)
            loads.append(d)
        await defer.DeferredList(loads, consumeErrors=True)
        rss_loaded = rss_mb()

        deadline = started + options.seconds
        warm_at = started + max(1.0, options.seconds * 0.1)
        rss_warm = None
        cooperator = task.Cooperator(scheduler=lambda f: self.reactor.callLater(0.001, f))
        work = cooperator.coiterate(self.operations(deadline))
        while not work.called:
            await task.deferLater(self.reactor, 1.0, lambda: None)
            if rss_warm is None and time.monotonic() >= warm_at:
                gc.collect()
                rss_warm = rss_mb()
                self.objects_warm = len(gc.get_objects())
            # The operator looks at the table through the control channel.
            rows = await client.status()
            statuses += 1
            assert isinstance(rows, list)
        await work
        cooperator.stop()
        ran = time.monotonic() - started
        if rss_warm is None:
            rss_warm = rss_loaded
            self.objects_warm = len(gc.get_objects())

        # Shut down, with a deadline of our own.
        shutdown_started = time.monotonic()
        shutdown_ok = True
        try:
            await self.manager.shutdown(ShutdownMode.SMART).addTimeout(30, self.reactor)
        except defer.TimeoutError:
            shutdown_ok = False
        shutdown_took = time.monotonic() - shutdown_started
        # Whatever is still in flight (async handlers cancelled at unload)
        # settles within a few turns.
        for _ in range(100):
            if not self.pending_calls and not self.pending_ops and not self.pending_emits:
                break
            await task.deferLater(self.reactor, 0.01, lambda: None)
        await client.close()
        await control.stopService()
        self.manager.unregister(self.counts)
        gc.collect()
        rss_end = rss_mb()
        self.objects_end = len(gc.get_objects())

        undelivered_posts = len(self.ledger.outstanding["post"])
        lost_posts = undelivered_posts - self.counts.failed_posts
        lost = max(lost_posts, 0) + len(self.pending_calls) + self.pending_emits
        duplicates = sum(self.ledger.duplicates.values())
        self.report(ran, statuses, rss_start, rss_loaded, rss_warm, rss_end, shutdown_took,
                    shutdown_ok, lost_posts, lost, duplicates)
        shutil.rmtree(self.dir, ignore_errors=True)
        ok = (shutdown_ok and lost == 0 and duplicates == 0 and lost_posts == 0
              and self.pending_ops == 0 and self.log.stray == 0)
        print(f"\nresult: {'OK' if ok else 'FAIL'}")
        return 0 if ok else 1

    def report(self, ran: float, statuses: int, rss_start: float, rss_loaded: float,
               rss_warm: float, rss_end: float, shutdown_took: float, shutdown_ok: bool,
               lost_posts: int, lost: int, duplicates: int) -> None:
        o = self.options
        print(f"soak: {ran:.1f} s, {o.plugins} plugins, seed {o.seed}")
        kinds = collections.Counter(self.kinds.values())
        print("plugins: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        print()
        print(f"{'operation':<16}{'done':>10}{'failed':>10}")
        for what in ("load", "unload", "reload", "reload_changed", "post", "call", "emit"):
            print(f"{what:<16}{self.done[what]:>10}{self.failed[what]:>10}")
        total = sum(self.done.values())
        print(f"{'total':<16}{total:>10}{sum(self.failed.values()):>10}"
              f"   ({total / ran:.0f} ops/s; {statuses} status requests over the control channel)")
        print()
        print("failures by kind:")
        for name, count in self.failures.most_common():
            print(f"  {name:<28}{count:>8}")
        print("events by kind:")
        for name, count in self.counts.events.most_common():
            print(f"  {name:<28}{count:>8}")
        print()
        sent, delivered = self.ledger.sent, self.ledger.delivered
        print(f"{'messages':<10}{'sent':>10}{'delivered':>11}{'reported':>10}{'lost':>7}")
        print(f"{'post':<10}{sent['post']:>10}{delivered['post']:>11}"
              f"{self.counts.failed_posts:>10}{max(lost_posts, 0):>7}")
        print(f"{'call':<10}{sent['call']:>10}{delivered['call']:>11}"
              f"{self.failed['call']:>10}{len(self.pending_calls):>7}")
        print(f"{'emit':<10}{sent['emit']:>10}{'-':>11}{self.failed['emit']:>10}"
              f"{self.pending_emits:>7}")
        print(f"lost messages: {lost}   delivered twice: {duplicates}"
              + (f" {dict(self.ledger.duplicates)}" if duplicates else "")
              + (f"   posts over-reported: {-lost_posts}" if lost_posts < 0 else ""))
        print()
        print(f"memory (RSS, MB): start {rss_start:.1f}, after loading {rss_loaded:.1f}, "
              f"after warm-up {rss_warm:.1f}, end {rss_end:.1f}, peak {peak_rss_mb():.1f}")
        print(f"memory growth after warm-up: {rss_end - rss_warm:+.1f} MB RSS "
              f"(the allocator keeps what it once used); live Python objects "
              f"{self.objects_warm} -> {self.objects_end} "
              f"({self.objects_end - self.objects_warm:+d})")
        print(f"shutdown: {'finished' if shutdown_ok else 'DID NOT FINISH'} "
              f"in {shutdown_took:.2f} s; operations never finished: {self.pending_ops}")
        print(f"failures logged: {sum(self.log.failures.values())} by the manager's event log, "
              f"{self.log.stray} elsewhere (unhandled)")
        for namespace, traceback in self.log.examples.items():
            print(f"  first one from {namespace}:\n" + textwrap.indent(traceback, "    "))


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long to run the random operations (default 60)")
    parser.add_argument("--plugins", type=int, default=200,
                        help="how many plugin files (default 200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the random seed (default: a random one, printed)")
    parser.add_argument("--log", default=None,
                        help="write the log to this file (default: only count failures)")
    options = parser.parse_args(argv)
    if options.seed is None:
        options.seed = random.randrange(1 << 30)
    return options


def main(reactor: Any, *argv: str) -> defer.Deferred:
    soak = Soak(reactor, parse_args(list(argv)))

    def done(code: int) -> None:
        if code:
            raise SystemExit(code)

    return defer.ensureDeferred(soak.run()).addCallback(done)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
