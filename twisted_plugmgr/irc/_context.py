"""
The context a bot plugin's handler receives: who spoke, where, what, and
how to answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Match, Optional

import attr

from ._hostmask import Hostmask
from ._interfaces import IBot

__all__ = ["Context", "is_channel"]

_CHANNEL_PREFIXES = "#&+!"


def is_channel(target: str) -> bool:
    """
    Whether C{target} names a channel (rather than a nick).
    """
    return bool(target) and target[0] in _CHANNEL_PREFIXES


@attr.s(slots=True, auto_attribs=True, kw_only=True)
class Context:
    """
    One thing that happened on IRC, as a handler sees it.

    @ivar bot: the L{IRCBot} (sending goes through it, so a reply made
        after a reconnection still goes out, on the new connection).
    @ivar kind: C{"message"}, C{"command"}, C{"rule"}, C{"action"},
        C{"join"}, C{"part"}, C{"quit"}, C{"kick"}, C{"nick"} or
        C{"topic"}.
    @ivar sender: who did it (nick, user, host).
    @ivar target: where it was sent: a channel, or the bot's nick for a
        private message.
    @ivar channel: the channel, or L{None} when it was private (or for
        C{quit} and C{nick}, which concern no single channel).
    @ivar text: the message text; the part or kick or quit reason; the new
        topic.
    @ivar command: the command name (lower case) for a command.
    @ivar args: what followed the command name, stripped.
    @ivar match: the regular expression match, for a rule.
    @ivar plugin: the name of the plugin being called.
    @ivar kicked: the nick kicked out (C{kick}).
    @ivar new_nick: the nick taken (C{nick}).
    @ivar account: the sender's account, as the server says
        (C{account-tag}, C{extended-join}, C{account-notify}), or L{None}
        (not logged in, or not known): never guessed from the nick.
    @ivar tags: the IRCv3 message tags of the line (C{time} with
        C{server-time}, ...).
    """

    bot: IBot
    kind: str
    sender: Hostmask
    target: str = ""
    channel: Optional[str] = None
    text: str = ""
    command: Optional[str] = None
    args: str = ""
    match: Optional[Match[str]] = None
    plugin: Optional[str] = None
    kicked: Optional[str] = None
    new_nick: Optional[str] = None
    account: Optional[str] = None
    tags: Dict[str, str] = attr.ib(factory=dict)

    @property
    def network(self) -> str:
        """
        The network it came from (C{"default"} for a single C{[irc]}
        section); replies go back there.
        """
        return str(self.bot.network)

    @property
    def permissions(self) -> List[str]:
        """
        The permissions the sender holds here (C{owner} first for an
        owner).
        """
        return list(self.bot.permissions.of(self.sender, self.account))

    def has(self, permission: str) -> bool:
        """
        Whether the sender holds C{permission} (owners hold every one).
        """
        return bool(self.bot.has_permission(permission, self.sender, self.account))

    @property
    def nick(self) -> str:
        """
        The sender's nick.
        """
        return self.sender.nick

    @property
    def user(self) -> str:
        """
        The sender's user name.
        """
        return self.sender.user

    @property
    def host(self) -> str:
        """
        The sender's host.
        """
        return self.sender.host

    @property
    def private(self) -> bool:
        """
        Whether this was said to the bot alone.
        """
        return self.channel is None

    @property
    def argv(self) -> List[str]:
        """
        The arguments split at whitespace.
        """
        return self.args.split()

    @property
    def is_owner(self) -> bool:
        """
        Whether the sender is an owner: its full C{nick!user@host} matches
        an owner pattern, or its account is an owner account (checked anew
        on each use).
        """
        return self.bot.is_owner(self.sender, self.account)

    @property
    def reply_target(self) -> str:
        """
        Where L{reply} sends: the channel, or the sender when private.
        """
        return self.channel if self.channel is not None else self.sender.nick

    def reply(self, text: Any) -> None:
        """
        Say C{text} where the message came from (see L{reply_target}).
        """
        self.bot.msg(self.reply_target, str(text))

    def msg(self, target: str, text: Any) -> None:
        """
        Send C{text} to C{target} as a C{PRIVMSG}.
        """
        self.bot.msg(target, str(text))

    def notice(self, target: str, text: Any) -> None:
        """
        Send C{text} to C{target} as a C{NOTICE}.
        """
        self.bot.notice(target, str(text))

    def action(self, target: str, text: Any) -> None:
        """
        Send C{text} to C{target} as a CTCP ACTION (C{/me}).
        """
        self.bot.action(target, str(text))
