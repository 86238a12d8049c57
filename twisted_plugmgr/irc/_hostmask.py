"""
Hostmasks: C{nick!user@host}, IRC case folding, and owner patterns.

Owner patterns are globs over the whole C{nick!user@host}: C{*} matches any
run of characters, C{?} any one character, everything else itself (C{[}
and C{]} are ordinary nick characters, not character classes, which is why
L{fnmatch} is not used). Matching is case-insensitive by the server's
C{CASEMAPPING} (C{rfc1459} unless the server says otherwise).
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple, Optional, Pattern, Tuple

__all__ = [
    "Hostmask",
    "HostmaskPatterns",
    "irc_lower",
    "CASEMAPPINGS",
]

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"

#: Translation tables for the CASEMAPPING values servers announce.
CASEMAPPINGS = {
    "ascii": str.maketrans(_UPPER, _LOWER),
    "rfc1459": str.maketrans(_UPPER + "[]\\~", _LOWER + "{}|^"),
    "strict-rfc1459": str.maketrans(_UPPER + "[]\\", _LOWER + "{}|"),
}


def irc_lower(text: str, casemapping: str = "rfc1459") -> str:
    """
    Fold C{text} to lower case by IRC's rules for C{casemapping}
    (C{"ascii"}, C{"rfc1459"}, C{"strict-rfc1459"}; an unknown mapping is
    treated as C{rfc1459}).
    """
    return text.translate(CASEMAPPINGS.get(casemapping, CASEMAPPINGS["rfc1459"]))


class Hostmask(NamedTuple):
    """
    A sender: C{nick!user@host}. C{user} and C{host} are empty when the
    server did not give them (a server prefix, for instance).
    """

    nick: str
    user: str
    host: str

    @classmethod
    def parse(cls, prefix: Optional[str]) -> Hostmask:
        """
        Split an IRC message prefix into nick, user and host.
        """
        prefix = prefix or ""
        nick, _, rest = prefix.partition("!")
        user, _, host = rest.partition("@")
        if not rest and "@" in nick:
            nick, _, host = nick.partition("@")
        return cls(nick, user, host)

    def __str__(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"


def _compile(pattern: str) -> Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


class HostmaskPatterns:
    """
    A set of owner patterns such as C{alice!*@trusted.example}.

    Each pattern must name all three parts (C{nick!user@host}): a bare
    nick would let anyone who takes that nick in.

    @raise ValueError: for a pattern that is not a string or lacks C{!} or
        C{@}.
    """

    def __init__(self, patterns: Iterable[str] = (), casemapping: str = "rfc1459") -> None:
        checked = []
        for pattern in patterns:
            if not isinstance(pattern, str) or "!" not in pattern or "@" not in pattern:
                raise ValueError(
                    f"owner pattern {pattern!r} must have the form nick!user@host "
                    "(use * and ? as wildcards)"
                )
            if pattern.index("!") > pattern.rindex("@"):
                raise ValueError(f"owner pattern {pattern!r} must have the form nick!user@host")
            checked.append(pattern)
        self.patterns: Tuple[str, ...] = tuple(checked)
        self._casemapping = ""
        self._compiled: Tuple[Pattern[str], ...] = ()
        self.casemapping = casemapping

    @property
    def casemapping(self) -> str:
        """
        The case mapping used to compare (the server's C{CASEMAPPING}).
        """
        return self._casemapping

    @casemapping.setter
    def casemapping(self, value: str) -> None:
        if value not in CASEMAPPINGS:
            value = "rfc1459"
        if value != self._casemapping:
            self._casemapping = value
            self._compiled = tuple(_compile(irc_lower(p, value)) for p in self.patterns)

    def matches(self, hostmask: object) -> bool:
        """
        Whether the full C{nick!user@host} (a L{Hostmask} or a string)
        matches one of the patterns. A sender without user or host never
        matches.
        """
        mask = hostmask if isinstance(hostmask, Hostmask) else Hostmask.parse(str(hostmask))
        if not (mask.nick and mask.user and mask.host):
            return False
        folded = irc_lower(str(mask), self._casemapping)
        return any(p.fullmatch(folded) for p in self._compiled)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"HostmaskPatterns({list(self.patterns)!r})"
