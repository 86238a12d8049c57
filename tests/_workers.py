"""
What the tests of isolated plugins share: the worker processes this test
process has, read from C{/proc}, and a bounded wait on the reactor.
"""

from __future__ import annotations

import os
from typing import Callable, List

from twisted.internet import reactor
from twisted.internet.task import deferLater

__all__ = ["workers", "until"]


def workers() -> List[int]:
    """The pids of this process's worker children, alive."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z" and b"_isolate.worker" in cmdline:
            found.append(int(entry))
    return found


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait, polling the reactor every 10 ms, until C{predicate()}; fail after C{seconds}."""
    waited = 0.0
    while not predicate():
        if waited > seconds:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
