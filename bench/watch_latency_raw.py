"""
Latency of L{SourceWatcher} alone: from an editor-style save (write a
temporary file, rename it over the module) to the C{on_change} call, with
inotify and with polling, default debounce. The manager's reload is not
included (see the end-to-end benchmark for that).

Usage: python bench/watch_latency_raw.py [--trials 50] [--debounce 0.005]
       [--poll-interval 0.25] [--modes inotify,polling]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Dict, List

from _common import percentile
from twisted.internet import defer, task

from twisted_plugmgr._watch import SourceWatcher


async def measure(reactor, mode: str, trials: int, debounce: float, interval: float) -> List[float]:
    latencies: List[float] = []
    with tempfile.TemporaryDirectory() as directory:
        module = os.path.join(directory, "plugin.py")
        with open(module, "w") as f:
            f.write("VERSION = 0\n")
        waiting: Dict[str, defer.Deferred] = {}

        def on_change(paths):
            d = waiting.pop("next", None)
            if d is not None:
                d.callback(time.perf_counter())

        watcher = SourceWatcher(
            reactor,
            on_change,
            debounce=debounce,
            poll_interval=interval,
            use_inotify=(mode == "inotify"),
        )
        watcher.set_targets([directory])
        watcher.start()
        try:
            for i in range(trials):
                # Land at a random point of the polling cycle.
                await task.deferLater(reactor, (i % 7) * interval / 7 + 0.01)
                d = waiting["next"] = defer.Deferred()
                d.addTimeout(10, reactor)
                start = time.perf_counter()
                temporary = os.path.join(directory, ".plugin.py.tmp")
                with open(temporary, "w") as f:
                    f.write(f"VERSION = {i + 1}\n" + "#" * (i % 3))
                os.replace(temporary, module)
                latencies.append(await d - start)
        finally:
            watcher.stop()
    return latencies


async def main(reactor, argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--debounce", type=float, default=0.005)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--modes", default="inotify,polling")
    options = parser.parse_args(argv)
    print(
        f"save -> on_change latency, {options.trials} trials, debounce "
        f"{options.debounce * 1000:.0f} ms, poll interval {options.poll_interval * 1000:.0f} ms"
    )
    print(f"{'mode':<10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'max ms':>8}")
    for mode in options.modes.split(","):
        values = await measure(
            reactor, mode, options.trials, options.debounce, options.poll_interval
        )
        ms = [v * 1000 for v in values]
        print(
            f"{mode:<10} {percentile(ms, 0.5):8.1f} {percentile(ms, 0.95):8.1f} "
            f"{statistics.mean(ms):8.1f} {max(ms):8.1f}"
        )


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
