"""
The bot's gate: what it checks before a plugin hears a sender. The ignore
list and a flood-ignore silence a sender; a command runs only where its
plugin answers (per-channel plugins), under the sender's rate limit, and
for a sender holding the permission it needs. Owners are never ignored
nor limited.

Plain code: one L{Gate} per network's bot, sharing the ignore list and the
channel rules; the bot sends the notices it returns.
"""

from __future__ import annotations

from typing import Optional, Tuple

from twisted.internet.interfaces import IReactorTime

from ._abuse import IGNORED, LIMITED, IgnoreList, OncePer, UserFlood
from ._channels import ChannelPlugins
from ._hostmask import Hostmask
from ._permissions import Permissions

__all__ = ["Gate", "REFUSAL_INTERVAL"]

#: Seconds between two notices to one user that a command needs a
#: permission they lack.
REFUSAL_INTERVAL = 60.0


def user_key(sender: Hostmask, account: Optional[str]) -> str:
    """
    Whom a limit counts for: the account when known, else C{user@host}
    (a nick change does not reset it).
    """
    return f"account:{account.lower()}" if account else f"{sender.user}@{sender.host}".lower()


class Gate:
    """
    One network's checks before dispatch.

    @ivar permissions: the L{Permissions} (owners included).
    @ivar ignores: the L{IgnoreList} (shared by every network).
    @ivar flood: the per-user L{UserFlood}, or L{None} (off).
    @ivar channels: the L{ChannelPlugins} (shared by every network).
    """

    def __init__(self, permissions: Permissions, ignores: IgnoreList,
                 flood: Optional[UserFlood], channels: ChannelPlugins,
                 clock: IReactorTime) -> None:
        self.permissions = permissions
        self.ignores = ignores
        self.flood = flood
        self.channels = channels
        self._refusals = OncePer(clock, REFUSAL_INTERVAL)

    @property
    def screening(self) -> bool:
        """
        Whether some sender may be silenced now (else L{hears} need not be
        asked: the common case costs nothing).
        """
        return bool(self.ignores.entries) or (self.flood is not None and self.flood.ignoring)

    def hears(self, sender: Hostmask, account: Optional[str]) -> bool:
        """
        Whether the bot listens to C{sender} at all: not ignored (by the
        list, or for flooding), or an owner.
        """
        ignored = self.ignores.matches(sender, account) or (
            self.flood is not None and self.flood.ignored(user_key(sender, account)))
        return not ignored or self.permissions.owners.matches(sender, account)

    def command(self, sender: Hostmask, account: Optional[str], channel: Optional[str],
                plugin: str, needs: Optional[str], what: str) -> Tuple[bool, Optional[str]]:
        """
        Whether command C{what} (C{"!name"}) of C{plugin} runs for
        C{sender} in C{channel}, and the notice to send C{sender} (or
        L{None}).
        """
        if not self.channels.answers(plugin, channel):
            return False, None
        owner = self.permissions.owners.matches(sender, account)
        if owner:
            return True, None
        key = user_key(sender, account)
        if self.flood is not None:
            verdict = self.flood.check(key)
            if verdict == LIMITED:
                seconds = self.flood.ignore_seconds
                return False, (f"{sender.nick}: too many commands too fast; "
                               f"ignoring you for {seconds:g} seconds")
            if verdict == IGNORED:
                return False, None
        if needs is not None and not self.permissions.has(needs, sender, account):
            if self._refusals((key, needs)):
                return False, f"{sender.nick}: {what} needs the {needs} permission"
            return False, None
        return True, None
