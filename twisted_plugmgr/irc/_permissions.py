"""
Who may do what: L{Who}, a set of hostmask patterns and accounts
(C{account:alice}); L{Permissions}, named permissions (C{admin},
C{op}, ...) each given to some L{Who}, the owners having every one.

An account comes from the server (C{account-tag}, C{extended-join},
C{account-notify}), never from a nick: a sender whose account is unknown
matches only the hostmask patterns.

Plain code, no I/O.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from ._hostmask import Hostmask, HostmaskPatterns, irc_lower

__all__ = ["Who", "Permissions", "OWNER", "ACCOUNT_PREFIX"]

#: The permission the owners have (and, with it, every other).
OWNER = "owner"

#: How an account is written among hostmask patterns.
ACCOUNT_PREFIX = "account:"


class Who:
    """
    Hostmask patterns (C{nick!user@host}, wildcards allowed) and accounts
    (C{account:NAME}, compared without case).

    @ivar hostmasks: the hostmask patterns (a L{HostmaskPatterns}).
    @ivar patterns: the hostmask patterns, as given.
    @ivar accounts: the accounts, folded.
    @raise ValueError: for an entry that is neither (a bare nick, an empty
        account).
    """

    def __init__(self, entries: Iterable[str] = (), casemapping: str = "rfc1459") -> None:
        masks: List[str] = []
        accounts: List[str] = []
        self.entries: Tuple[str, ...] = tuple(entries)
        for entry in self.entries:
            if isinstance(entry, str) and entry.lower().startswith(ACCOUNT_PREFIX):
                name = entry[len(ACCOUNT_PREFIX):]
                if not name or any(c in name for c in " *?!@"):
                    raise ValueError(f"{entry!r}: expected account:NAME (no wildcards)")
                accounts.append(name)
            else:
                masks.append(entry)
        self.hostmasks = HostmaskPatterns(masks, casemapping)
        self.patterns: Tuple[str, ...] = self.hostmasks.patterns
        self._accounts = tuple(accounts)
        self.accounts = frozenset(irc_lower(a, casemapping) for a in accounts)

    @property
    def casemapping(self) -> str:
        """
        The case mapping used to compare (the server's C{CASEMAPPING}).
        """
        return self.hostmasks.casemapping

    @casemapping.setter
    def casemapping(self, value: str) -> None:
        self.hostmasks.casemapping = value
        self.accounts = frozenset(irc_lower(a, self.hostmasks.casemapping) for a in self._accounts)

    def matches(self, hostmask: object, account: Optional[str] = None) -> bool:
        """
        Whether C{hostmask} matches a pattern, or C{account} (the sender's
        account, L{None} when not logged in or not known) is one of the
        accounts.
        """
        if account and self.accounts and irc_lower(account, self.casemapping) in self.accounts:
            return True
        return self.hostmasks.matches(hostmask)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"Who({list(self.entries)!r})"


class Permissions:
    """
    Named permissions, each held by a L{Who}; the owners hold them all.

    @ivar owners: the owners (a L{Who}).
    @ivar granted: permission name -> L{Who}.
    """

    def __init__(self, owners: Who, granted: Optional[Mapping[str, Iterable[str]]] = None) -> None:
        self.owners = owners
        self.granted: Dict[str, Who] = {
            name: Who(entries, owners.casemapping) for name, entries in (granted or {}).items()
        }

    @property
    def casemapping(self) -> str:
        """
        The case mapping used to compare.
        """
        return self.owners.casemapping

    @casemapping.setter
    def casemapping(self, value: str) -> None:
        self.owners.casemapping = value
        for who in self.granted.values():
            who.casemapping = value

    def has(self, permission: Optional[str], sender: Hostmask, account: Optional[str]) -> bool:
        """
        Whether C{sender} (with C{account}) holds C{permission} (L{None}:
        nothing is needed).
        """
        if permission is None:
            return True
        if self.owners.matches(sender, account):
            return True
        who = self.granted.get(permission)
        return who is not None and who.matches(sender, account)

    def of(self, sender: Hostmask, account: Optional[str]) -> List[str]:
        """
        The permissions C{sender} holds, sorted (C{owner} first for an
        owner, who holds every named one too).
        """
        if self.owners.matches(sender, account):
            return [OWNER, *sorted(self.granted)]
        return sorted(name for name, who in self.granted.items() if who.matches(sender, account))
