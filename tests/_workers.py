"""
What the tests of isolated plugins share: the worker processes this test
process has, read from C{/proc}, a bounded wait on the reactor, and a
manager on the real reactor, shut down with no worker left.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from twisted_plugmgr import PluginManager, ShutdownMode

__all__ = ["workers", "until", "isolating_manager", "shut_down"]


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


def isolating_manager(plugdir: Any) -> PluginManager:
    """
    A started manager of the plugins in C{plugdir}, on the real reactor:
    restarts at once, short stop deadlines, no old-code grace.
    """
    manager = PluginManager(paths=[str(plugdir)], reactor=reactor, restart_delay=0.0,
                            deadlines={"immediate": 0.5, "smart": 2, "lazy": 3},
                            old_code_grace=None)
    manager.startService()
    return manager


def shut_down(manager: PluginManager) -> None:
    """
    For a fixture's teardown: shut C{manager} down (immediate), then wait
    until no worker is left (failing after 5 s).
    """
    pytest_twisted.blockon(manager.shutdown(ShutdownMode.IMMEDIATE))
    pytest_twisted.blockon(Deferred.fromCoroutine(until(lambda: not workers(), 5.0)))
