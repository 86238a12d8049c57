"""
What the bench scripts share: logging set-up, memory readings, percentiles
and verdicts. Imported by the scripts as C{_common} (their own directory is
on C{sys.path} when they run); never imported by the tests.
"""

from __future__ import annotations

from typing import List

from twisted.logger import globalLogBeginner

LOGGING_NOTE = "logging begun to no observer (globalLogBeginner.beginLoggingTo([])): nothing buffered"


def begin_logging() -> None:
    """
    Begin logging to no observer, keeping stdout ours: until logging
    begins, Twisted buffers up to 65,536 log events in memory.
    """
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)


def rss_mb() -> float:
    """
    This process's resident set size (VmRSS), in MB.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: List[float], fraction: float) -> float:
    """
    The value at C{fraction} (0 to 1) of the sorted C{values}.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def verdict(ok: bool) -> str:
    """
    C{PASS} or C{MISS}, for a target.
    """
    return "PASS" if ok else "MISS"
