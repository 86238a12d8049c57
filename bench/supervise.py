"""
Benchmarks of supervision (restart policies).

  (a) Restart latency, on the real reactor (C{task.react}): a plugin's
      handler, called with C{manager.call}, calls C{self.api.fail(reason)};
      the manager restarts it (C{restart_delay=0}, C{restart_burst} and
      C{restart_interval} such that no number of failures quarantines it).
      Timed from the C{api.fail} call (the handler reads
      C{time.perf_counter()} just before it) to the restarted plugin
      answering a C{call}, the answer checked to come from the new
      instance. Two ways to call: after C{plugin_started} (the caller
      waits for the event, resuming on the next reactor turn), and at
      once after the failing call returned (the call is held during the
      restart and delivered to the new instance). p50/p95/min/max over
      200 failures each (50 with C{--quick}), after 5 warm-up failures not
      counted; every wait is bounded (a timeout is counted, never waited
      out). Target: p50 < 2 ms.
  (b) C{emit} with supervision present: the case of C{bench/core.py}
      (1000 plugins loaded, 1 handles the event, manager on a
      L{task.Clock}), built with C{core.py}'s own functions, beside the
      same 1000 plugins with a non-default policy (C{restart="always"},
      C{fail_on_error=True}), given to the manager and given to each
      C{load}; min and median per emit, runs interleaved round by round.
      No target of its own (that of C{core.py} applies). With
      C{--baseline REV}, the C{core.py} case is also run in two child
      processes, timed in alternation: one with the package as of C{REV}
      (extracted with C{git archive}; nothing in the repository is
      written), one with this tree, for a before/after figure.

Twisted buffers log events in memory until logging begins: the bench begins
logging to no observer first (C{globalLogBeginner.beginLoggingTo([])}).

Usage: python bench/supervise.py [--quick] [--baseline REV]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
from typing import Any, Dict, List, Optional, Tuple

from _common import LOGGING_NOTE, begin_logging, percentile, verdict
from core import build_clock_manager, write_plugins
from twisted.internet import defer, task

from twisted_plugmgr import PluginManager, PluginState, ShutdownMode
from twisted_plugmgr.testing import clock_manager, result_of, write_plugin

PLUGIN = "worker"
FAILURES = 200
QUICK_FAILURES = 50
WARMUP = 5
RESTART_P50_TARGET_MS = 2.0
#: The policy of part (a): restart at once, never quarantined (the window
#: of one second never holds this many restarts).
RESTART_POLICY: Dict[str, Any] = {
    "restart": "on-failure",
    "restart_delay": 0,
    "restart_burst": 1_000_000,
    "restart_interval": 1.0,
}
#: The non-default policy of part (b).
EMIT_POLICY: Dict[str, Any] = {"restart": "always", "fail_on_error": True}
EMIT_PLUGINS = 1000
#: Bound on every wait, in seconds.
WAIT_BOUND = 5.0

WORKER_HEADER = """
import itertools
import time

GENERATIONS = itertools.count(1)
"""

WORKER_BODY = """
def __init__(self, api, data=None):
    super().__init__(api, data)
    self.generation = next(GENERATIONS)
    self.failed_at = None

@handler()
def ping(self):
    return self.generation

@handler()
def broke(self):
    self.failed_at = time.perf_counter()
    self.api.fail("bench: upstream gone")
    return self.generation
"""


# -- (a) restart latency --------------------------------------------------------


class Stamps:
    """
    A listener: when the supervision events about the worker came
    (C{time.perf_counter()}), and a Deferred to fire on C{plugin_started}
    -- on the next reactor turn, so that the bench does not go on inside
    the manager's broadcast (in the middle of the supervisor's work).
    """

    KINDS = ("plugin_failed", "plugin_restarting", "plugin_started")

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.times: Dict[str, float] = {}
        self.started: Optional[defer.Deferred[float]] = None
        self.quarantined = 0
        self.unloaded = 0

    def __call__(self, event: Any) -> None:
        if event.plugin != PLUGIN:
            return
        now = time.perf_counter()
        if event.kind in self.KINDS:
            self.times[event.kind] = now
        if event.kind == "plugin_quarantined":
            self.quarantined += 1
        elif event.kind == "plugin_unloaded":
            self.unloaded += 1
        if event.kind == "plugin_started" and self.started is not None:
            d, self.started = self.started, None
            self.reactor.callLater(0, lambda: d.called or d.callback(now))


async def wait_running(reactor: Any, manager: PluginManager) -> bool:
    """
    Wait (at most L{WAIT_BOUND} seconds, polling every 10 ms) until the
    worker runs again, after a timeout.
    """
    until = time.perf_counter() + WAIT_BOUND
    while time.perf_counter() < until:
        info = manager.plugin_table().get(PLUGIN)
        if info is not None and info.state is PluginState.RUNNING:
            return True
        await task.deferLater(reactor, 0.01, lambda: None)
    return False


async def one_failure(reactor: Any, manager: PluginManager, stamps: Stamps,
                      held: bool) -> Dict[str, float]:
    """
    Fail the worker once; its new instance answers a call. Times in ms
    from the C{api.fail} call.

    @raise defer.TimeoutError: a wait took more than L{WAIT_BOUND}.
    """
    old = manager.instance_of(PLUGIN)
    stamps.times.clear()
    started: defer.Deferred[float] = defer.Deferred()
    started.addTimeout(WAIT_BOUND, reactor)
    stamps.started = started
    try:
        generation = await manager.call(PLUGIN, "broke").addTimeout(WAIT_BOUND, reactor)
        assert generation == old.generation
        returned = time.perf_counter()
        if held:
            # Issued while the worker restarts: held, then delivered to the
            # new instance.
            answer = await manager.call(PLUGIN, "ping").addTimeout(WAIT_BOUND, reactor)
            answered = time.perf_counter()
            await started
        else:
            await started
            answer = await manager.call(PLUGIN, "ping").addTimeout(WAIT_BOUND, reactor)
            answered = time.perf_counter()
    finally:
        stamps.started = None
        if not started.called:  # a timeout elsewhere: stop this one's clock too
            started.addErrback(lambda _: None)
            started.cancel()
    new = manager.instance_of(PLUGIN)
    assert new is not old and not old.running, "the old instance answered"
    assert answer == new.generation != old.generation, (answer, new.generation, old.generation)
    failed_at = old.failed_at
    return {
        "failed": (stamps.times["plugin_failed"] - failed_at) * 1000,
        "restarting": (stamps.times["plugin_restarting"] - failed_at) * 1000,
        "returned": (returned - failed_at) * 1000,
        "started": (stamps.times["plugin_started"] - failed_at) * 1000,
        "answered": (answered - failed_at) * 1000,
    }


async def bench_restart(reactor: Any, held: bool, failures: int) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="plugmgr-bench-supervise-") as directory:
        write_plugin(directory, PLUGIN, WORKER_BODY, header=WORKER_HEADER)
        manager = PluginManager(paths=[directory], reactor=reactor)
        manager.startService()
        await manager.load(PLUGIN, **RESTART_POLICY)
        stamps = Stamps(reactor)
        manager.register(stamps)
        samples: List[Dict[str, float]] = []
        timeouts = 0
        lost = False
        gc.collect()
        for trial in range(WARMUP + failures):
            try:
                sample = await one_failure(reactor, manager, stamps, held)
            except defer.TimeoutError:
                timeouts += 1
                if not await wait_running(reactor, manager):
                    lost = True
                    break
                continue
            if trial >= WARMUP:
                samples.append(sample)
        info = manager.plugin_table().get(PLUGIN)
        restarts = info.restarts if info is not None else None
        manager.unregister(stamps)
        await manager.shutdown(ShutdownMode.SMART)
    return {
        "held": held,
        "failures": failures,
        "samples": samples,
        "timeouts": timeouts,
        "lost": lost,
        "restarts": restarts,
        "quarantined": stamps.quarantined,
        "unloaded": stamps.unloaded,
    }


def print_restart(results: List[Dict[str, Any]]) -> bool:
    failures = results[0]["failures"]
    print(f"(a) api.fail() in a handler (manager.call) -> restarted plugin answers call() "
          f"(new instance checked), {failures} failures (+{WARMUP} warm-up), real reactor")
    policy = ", ".join(f"{k}={v!r}" for k, v in RESTART_POLICY.items())
    print(f"    load(..., {policy}); times from the api.fail() call")
    header = (
        f"{'call issued':<22} {'p50 ms':>7} {'p95 ms':>7} {'min ms':>7} {'max ms':>7} "
        f"{'timeouts':>8}  {'target':<12} {'result':<6}"
    )
    print(header)
    print("-" * len(header))
    ok_all = True
    for r in results:
        answered = [s["answered"] for s in r["samples"]] or [float("inf")]
        p50, p95 = percentile(answered, 0.5), percentile(answered, 0.95)
        ok = (p50 < RESTART_P50_TARGET_MS and not r["timeouts"] and not r["lost"]
              and not r["quarantined"] and not r["unloaded"])
        ok_all = ok_all and ok
        label = "at once (held)" if r["held"] else "after plugin_started"
        print(f"{label:<22} {p50:>7.3f} {p95:>7.3f} {min(answered):>7.3f} {max(answered):>7.3f} "
              f"{r['timeouts']:>8}  {f'p50 < {RESTART_P50_TARGET_MS:g} ms':<12} {verdict(ok):<6}")
    print()
    print("    where the time goes, p50 ms from api.fail() to each step:")
    steps = ("failed", "restarting", "returned", "started", "answered")
    names = {
        "failed": "plugin_failed", "restarting": "plugin_restarting",
        "returned": "failing call returned", "started": "plugin_started",
        "answered": "answered",
    }
    header = f"    {'call issued':<22} " + " ".join(f"{names[s]:>{max(10, len(names[s]))}}" for s in steps)
    print(header)
    for r in results:
        if not r["samples"]:
            continue
        label = "at once (held)" if r["held"] else "after plugin_started"
        cells = " ".join(
            f"{percentile([x[s] for x in r['samples']], 0.5):>{max(10, len(names[s]))}.3f}"
            for s in steps)
        print(f"    {label:<22} {cells}")
    for r in results:
        notes = []
        if r["lost"]:
            notes.append("the worker did not run again after a timeout: run stopped")
        if r["quarantined"] or r["unloaded"]:
            notes.append(f"quarantined {r['quarantined']}x, unloaded {r['unloaded']}x")
        expected = WARMUP + r["failures"]
        if r["restarts"] != expected:
            notes.append(f"PluginInfo.restarts = {r['restarts']}, expected {expected}")
        if notes:
            label = "held" if r["held"] else "after plugin_started"
            print(f"    {label}: " + "; ".join(notes))
    return ok_all


# -- (b) emit with supervision present ------------------------------------------


def build_policy_manager(directory: str, count: int, manager_policy: Dict[str, Any],
                         load_policy: Dict[str, Any]) -> PluginManager:
    """
    C{core.build_clock_manager}, with a policy given to the manager and
    to each load.
    """
    names = write_plugins(directory, count)
    manager, clock, recorder = clock_manager(paths=[directory], **manager_policy)
    loads = [manager.load(name, **load_policy) for name in names]
    clock.advance(0)
    for d in loads:
        result_of(d)
    assert len(manager.plugin_table()) == count
    for key, value in {**manager_policy, **load_policy}.items():
        assert getattr(manager.policy_of("p0"), key) == value, key
    manager.unregister(recorder)
    recorder.clear()
    return manager


#: The cases of part (b): key, label, plugins loaded, how the manager is built.
EMIT_CASES: Tuple[Tuple[str, str, int, str], ...] = (
    ("n1", "1 loaded (core.py's reference)", 1, "default"),
    ("core", "1000 loaded, default policy", EMIT_PLUGINS, "default"),
    ("manager", "1000, policy on the manager", EMIT_PLUGINS, "manager"),
    ("load", "1000, policy on each load", EMIT_PLUGINS, "load"),
)


def emit_rounds(quick: bool) -> Tuple[int, float]:
    """
    How many interleaved rounds part (b) times, and about how long each
    case's run in a round lasts, in seconds.
    """
    return (9, 0.05) if quick else (27, 0.07)


class EmitCases:
    """
    Managers built for some of L{EMIT_CASES}, and a C{timeit} timer for
    each, as core.py builds and times them (iterations from C{autorange},
    scaled to about C{seconds} per run).
    """

    def __init__(self, top: str, keys: Tuple[str, ...], seconds: float) -> None:
        self.cases = [c for c in EMIT_CASES if c[0] in keys]
        self.managers: Dict[str, PluginManager] = {}
        for key, _, count, how in self.cases:
            directory = os.path.join(top, key)
            os.mkdir(directory)
            if how == "default":
                self.managers[key] = build_clock_manager(directory, count)
            elif how == "manager":
                self.managers[key] = build_policy_manager(directory, count, EMIT_POLICY, {})
            else:
                self.managers[key] = build_policy_manager(directory, count, {}, EMIT_POLICY)
        self.timers: Dict[str, Tuple[timeit.Timer, int]] = {}
        for key, _, _, _ in self.cases:
            emit = self.managers[key].emit
            assert result_of(emit("one", 7)) == [7]
            timer = timeit.Timer(lambda emit=emit: emit("one", 7))
            number, _ = timer.autorange()
            self.timers[key] = (timer, max(1, int(number * seconds / 0.2)))
        gc.collect()

    def round(self, r: int) -> Dict[str, float]:
        """
        One run of each case, microseconds per emit; the order of the cases
        rotates with C{r}.
        """
        order = [c[0] for c in self.cases]
        shift = r % len(order)
        out = {}
        for key in order[shift:] + order[:shift]:
            timer, number = self.timers[key]
            out[key] = timer.timeit(number) / number * 1e6
        return out

    def close(self) -> None:
        for manager in self.managers.values():
            manager.shutdown(ShutdownMode.IMMEDIATE)


def summarize(samples: Dict[str, List[float]], reference: List[float]) -> Dict[str, Dict[str, float]]:
    """
    Min, median, and the median of the per-round ratios to C{reference}
    (measured in the same rounds), of each case's C{samples}.
    """
    return {
        key: {
            "min_us": min(values),
            "median_us": statistics.median(values),
            "paired_ratio": statistics.median(v / c for v, c in zip(values, reference, strict=True)),
        }
        for key, values in samples.items()
    }


def bench_emit(quick: bool) -> Dict[str, Dict[str, float]]:
    """
    Every case of L{EMIT_CASES}, in this process, runs interleaved round by
    round (the order rotating), so that noise from other processes spreads
    over all of them alike; shorter runs and more rounds than core.py, so
    that on a busy machine the minimum finds quiet moments.
    """
    rounds, seconds = emit_rounds(quick)
    with tempfile.TemporaryDirectory(prefix="plugmgr-bench-supervise-emit-") as top:
        cases = EmitCases(top, tuple(c[0] for c in EMIT_CASES), seconds)
        samples: Dict[str, List[float]] = {key: [] for key in cases.timers}
        for r in range(rounds):
            for key, us in cases.round(r).items():
                samples[key].append(us)
        cases.close()
    return summarize(samples, samples["core"])


# -- (b), before/after: two child processes timed in alternation -------------------


def extract_tree(revision: str, into: str) -> str:
    """
    The package C{twisted_plugmgr} as of C{revision}, extracted into
    C{into} with C{git archive} (which writes nothing in the repository).
    """
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = os.path.join(into, "tree.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", repository, "archive", revision, "twisted_plugmgr"],
                       check=True, stdout=f)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.11.4 and later
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return into


def child_emit(seconds: float) -> None:
    """
    A child of L{bench_baseline}: build core.py's case (and its 1-plugin
    reference) with whichever C{twisted_plugmgr} is first on the path,
    say where that is, then time one round per C{round <r>} line read.
    """
    import twisted_plugmgr

    with tempfile.TemporaryDirectory(prefix="plugmgr-bench-supervise-child-") as top:
        cases = EmitCases(top, ("n1", "core"), seconds)
        print(json.dumps({"package": os.path.dirname(twisted_plugmgr.__file__)}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if words[:1] != ["round"]:
                break
            print(json.dumps(cases.round(int(words[1]))), flush=True)
        cases.close()


class Child:
    """
    A L{child_emit} process, with C{twisted_plugmgr} from C{tree} (this
    tree if L{None}).
    """

    def __init__(self, tree: Optional[str], seconds: float) -> None:
        env = dict(os.environ)
        if tree is not None:
            env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
        command = [sys.executable, os.path.abspath(__file__), "--child-emit", str(seconds)]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.package = self.read()["package"]
        if tree is not None and not self.package.startswith(tree):
            raise RuntimeError(f"the child imported {self.package}, not the package in {tree}")

    def read(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the child exited ({self.process.wait()})")
        return json.loads(line)

    def round(self, r: int) -> Dict[str, float]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"round {r}\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def bench_baseline(revision: str, quick: bool) -> Dict[str, Dict[str, Dict[str, float]]]:
    """
    core.py's case (and the 1-plugin reference) in two child processes,
    the package as of C{revision} and this tree, timed round by round in
    alternation: C{paired_ratio} is this tree / C{revision} per round.
    """
    rounds, seconds = emit_rounds(quick)
    with tempfile.TemporaryDirectory(prefix="plugmgr-bench-baseline-") as into:
        children = {"baseline": Child(extract_tree(revision, into), seconds),
                    "current": Child(None, seconds)}
        samples: Dict[str, Dict[str, List[float]]] = {
            which: {"n1": [], "core": []} for which in children}
        try:
            for r in range(rounds):
                order = ("baseline", "current") if r % 2 == 0 else ("current", "baseline")
                for which in order:
                    for key, us in children[which].round(r).items():
                        samples[which][key].append(us)
        finally:
            for child in children.values():
                child.close()
    out = {}
    for which in children:
        out[which] = summarize(samples[which], samples["baseline"]["core"])
        out[which]["n1"]["paired_ratio"] = statistics.median(
            v / c for v, c in zip(samples[which]["n1"], samples["baseline"]["n1"], strict=True))
    return out


def print_emit(rows: Dict[str, Dict[str, float]], quick: bool,
               baseline: Optional[Tuple[str, Dict[str, Dict[str, Dict[str, float]]]]]) -> None:
    rounds, seconds = emit_rounds(quick)
    policy = ", ".join(f"{k}={v!r}" for k, v in EMIT_POLICY.items())
    print("(b) emit of one event that 1 plugin handles, manager on a task.Clock, "
          "synchronous handlers (core.py's case)")
    print(f"    per-emit cost, min and median of {rounds} interleaved timeit runs of ~{seconds:g} s "
          f"each; policy = {policy}; no target here (core.py's applies)")
    print("    'paired' = median over the rounds of (this case / 1000 loaded, default policy, "
          "same round); 'vs 1 loaded' = min / min (core.py's ratio)")
    header = f"{'case':<34} {'min us':>8} {'median us':>10} {'paired':>8} {'vs 1 loaded':>12}"
    print(header)
    print("-" * len(header))
    n1_min = rows["n1"]["min_us"]
    for key, label, _, _ in EMIT_CASES:
        row = rows[key]
        print(f"{label:<34} {row['min_us']:>8.2f} {row['median_us']:>10.2f} "
              f"{row['paired_ratio']:>7.2f}x {row['min_us'] / n1_min:>11.2f}x")
    if baseline is None:
        return
    revision, results = baseline
    print()
    print(f"    before/after: core.py's case in two child processes, the package as of {revision} "
          f"(git archive) and this tree,")
    print(f"    timed in alternation, {rounds} rounds; 'paired' = median over the rounds of "
          f"(this row / as of {revision}, same round)")
    header = (f"    {'package':<22} {'1 loaded min':>12} {'paired':>8} {'1000 loaded min':>15} "
              f"{'median':>8} {'paired':>8}")
    print(header)
    for which, label in (("baseline", f"as of {revision}"), ("current", "this tree")):
        n1, core = results[which]["n1"], results[which]["core"]
        print(f"    {label[:22]:<22} {n1['min_us']:>9.2f} us {n1['paired_ratio']:>7.2f}x "
              f"{core['min_us']:>12.2f} us {core['median_us']:>5.2f} us {core['paired_ratio']:>7.2f}x")


# -- report -------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of supervision.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--baseline", metavar="REV",
                        help="also time core.py's emit case against the package as of REV")
    parser.add_argument("--child-emit", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    begin_logging()
    if options.child_emit:
        child_emit(options.child_emit)
        return 0
    quick = options.quick
    print(f"twisted-plugmgr supervision benchmark{' (--quick)' if quick else ''}; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} (other processes add noise)")
    print(LOGGING_NOTE)
    print()
    emit_rows = bench_emit(quick)
    baseline = None
    if options.baseline:
        baseline = (options.baseline, bench_baseline(options.baseline, quick))
    outcome: Dict[str, bool] = {}

    async def run(reactor: Any) -> None:
        failures = QUICK_FAILURES if quick else FAILURES
        results = [await bench_restart(reactor, held, failures) for held in (False, True)]
        outcome["restart"] = print_restart(results)
        print()
        print_emit(emit_rows, quick, baseline)
        print()
        print(f"overall: {verdict(outcome['restart'])}")

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
