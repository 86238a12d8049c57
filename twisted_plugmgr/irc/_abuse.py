"""
Abuse control: L{UserFlood}, a per-user command rate limit after which the
user is ignored for a while; L{IgnoreList}, the hostmasks and accounts the
owners told the bot to ignore, kept in a file of the data directory; and
L{OncePer}, which lets one notice a user through per interval.

Plain code: the clock comes in (an C{IReactorTime}, a C{Clock} in tests);
L{IgnoreList.save} writes a file and is run in a thread by its caller.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Hashable, List, Optional, Tuple

from twisted.internet.interfaces import IReactorTime

from ._flood import TokenBucket
from ._hostmask import Hostmask
from ._permissions import Who

__all__ = ["UserFlood", "IgnoreList", "OncePer", "IGNORE_FILE", "OK", "LIMITED", "IGNORED"]

#: The ignore list's file in the bot's data directory.
IGNORE_FILE = "irc_ignore.json"

#: L{UserFlood.check}: the command may run.
OK = "ok"
#: L{UserFlood.check}: this command went over the limit; the user is
#: ignored from now (tell them, once).
LIMITED = "limited"
#: L{UserFlood.check}: the user is being ignored.
IGNORED = "ignored"

_PRUNE_AT = 2000


class OncePer:
    """
    Lets something through for a key at most once per C{seconds}.
    """

    def __init__(self, clock: IReactorTime, seconds: float) -> None:
        self._clock = clock
        self._seconds = seconds
        self._last: Dict[Hashable, float] = {}

    def __call__(self, key: Hashable) -> bool:
        """
        Whether C{key} may pass now (and, if so, not again for a while).
        """
        now = self._clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self._seconds:
            return False
        if len(self._last) >= _PRUNE_AT:
            self._last = {k: t for k, t in self._last.items() if now - t < self._seconds}
        self._last[key] = now
        return True


class UserFlood:
    """
    Each user's commands, under a token bucket of C{rate} per second and
    C{burst} at once; one over, and the user is ignored for
    C{ignore_seconds}.
    """

    def __init__(self, rate: float, burst: int, ignore_seconds: float,
                 clock: IReactorTime) -> None:
        TokenBucket(rate, burst, clock)  # check the settings now
        if ignore_seconds < 0:
            raise ValueError(f"ignore_seconds must be 0 or more, not {ignore_seconds!r}")
        self.rate = rate
        self.burst = burst
        self.ignore_seconds = ignore_seconds
        self._clock = clock
        self._buckets: Dict[Hashable, TokenBucket] = {}
        self._until: Dict[Hashable, float] = {}

    def check(self, key: Hashable) -> str:
        """
        L{OK}, L{LIMITED} or L{IGNORED}, for one command of user C{key}.
        """
        now = self._clock.seconds()
        until = self._until.get(key)
        if until is not None:
            if now < until:
                return IGNORED
            del self._until[key]
            self._buckets.pop(key, None)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        if bucket.take():
            return OK
        self._until[key] = now + self.ignore_seconds
        return LIMITED

    @property
    def ignoring(self) -> bool:
        """
        Whether some user is being ignored for flooding now.
        """
        if self._until:
            now = self._clock.seconds()
            self._until = {k: t for k, t in self._until.items() if now < t}
        return bool(self._until)

    def ignored(self, key: Hashable) -> bool:
        """
        Whether user C{key} is being ignored for flooding now.
        """
        until = self._until.get(key)
        return until is not None and self._clock.seconds() < until

    def _prune(self) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens >= self.burst and k not in self._until]
        for key in full:
            del self._buckets[key]


class IgnoreList:
    """
    The hostmask patterns and accounts (C{account:NAME}) the bot ignores.

    @ivar path: the file it is kept in, or L{None} (in memory only).
    @raise ValueError: when the file exists and does not hold a JSON list
        of valid entries (naming the file).
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self._entries: Tuple[str, ...] = ()
        self._who = Who()
        if path is not None and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    entries = json.load(f)
                if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                    raise ValueError("expected a JSON list of strings")
                self._set(tuple(entries))
            except (OSError, ValueError) as e:
                raise ValueError(f"ignore list {path}: {e}") from None

    @property
    def entries(self) -> Tuple[str, ...]:
        """
        The entries, in the order they were added.
        """
        return self._entries

    @property
    def casemapping(self) -> str:
        """
        The case mapping used to compare.
        """
        return self._who.casemapping

    @casemapping.setter
    def casemapping(self, value: str) -> None:
        self._who.casemapping = value

    def _set(self, entries: Tuple[str, ...]) -> None:
        who = Who(entries, self._who.casemapping)
        self._entries, self._who = entries, who

    def add(self, entry: str) -> bool:
        """
        Ignore C{entry} (C{nick!user@host} or C{account:NAME}); whether it
        is new.

        @raise ValueError: for an entry that is neither.
        """
        if entry in self._entries:
            return False
        self._set(self._entries + (entry,))
        return True

    def remove(self, entry: str) -> bool:
        """
        Stop ignoring C{entry}; whether it was there.
        """
        if entry not in self._entries:
            return False
        self._set(tuple(e for e in self._entries if e != entry))
        return True

    def matches(self, sender: Hostmask, account: Optional[str]) -> bool:
        """
        Whether C{sender} (with C{account}) is ignored.
        """
        return bool(self._entries) and self._who.matches(sender, account)

    def save(self) -> None:
        """
        Write the entries to L{path} (atomically; nothing without a path).
        Blocking: run it in a thread.
        """
        if self.path is None:
            return
        entries: List[str] = list(self._entries)
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=1)
        os.replace(tmp, self.path)
