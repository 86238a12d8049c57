"""
Who the bot can see: the users in its channels, each with the
C{nick!user@host} the server last relayed for them, so that the bot can
tell which nicks on the network now are its owners (to tell them, in
private, what they need to know).

One L{People} per connection: it learns from C{JOIN}s, messages, C{NICK}
changes (L{People.follow}, fed by the bot) and the C{WHO} replies the bot
asks for when it joins a channel (the users who were there before it,
L{People.who_reply}, fed by the protocol), and forgets a user who leaves every
channel the bot shares with them (C{PART}, C{KICK}, C{QUIT}). A nick the
bot shares no channel with is not messaged: someone else may hold it by
now.

Plain code, no I/O: the protocol feeds it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Union

import attr

from ._hostmask import Hostmask, HostmaskPatterns, irc_lower
from ._permissions import Who

__all__ = ["People"]


@attr.s(auto_attribs=True, eq=False)
class _Person:
    hostmask: Hostmask
    channels: Set[str] = attr.ib(factory=set)


class People:
    """
    The users in the bot's channels, by nick (folded by the server's case
    mapping).

    @ivar casemapping: the server's case mapping (C{rfc1459} until the
        server says otherwise).
    """

    def __init__(self, casemapping: str = "rfc1459") -> None:
        self.casemapping = casemapping
        self._people: Dict[str, _Person] = {}
        self._accounts: Dict[str, str] = {}

    def _key(self, text: str) -> str:
        return irc_lower(text, self.casemapping)

    def __len__(self) -> int:
        return len(self._people)

    def get(self, nick: str) -> Optional[Hostmask]:
        """
        The hostmask of C{nick}, if the bot shares a channel with it.
        """
        person = self._people.get(self._key(nick))
        return person.hostmask if person is not None else None

    def set_account(self, nick: str, account: Optional[str]) -> None:
        """
        The server says C{nick} is logged in as C{account} (C{extended-join},
        C{account-notify}); L{None} or C{"*"}: logged out.
        """
        key = self._key(nick)
        if account and account != "*":
            self._accounts[key] = account
        else:
            self._accounts.pop(key, None)

    def account(self, nick: str) -> Optional[str]:
        """
        The account the server last said C{nick} is logged in as, or
        L{None} (never guessed from the nick).
        """
        return self._accounts.get(self._key(nick)) if self._accounts else None

    def joined(self, prefix: str, channel: str) -> None:
        """
        C{prefix} (C{nick!user@host}) is in C{channel}: it joined, or a
        C{WHO} reply says so.
        """
        mask = Hostmask.parse(prefix)
        if not mask.nick or not mask.user or not mask.host:
            return
        person = self._people.setdefault(self._key(mask.nick), _Person(mask))
        person.hostmask = mask
        person.channels.add(self._key(channel))

    def spoke(self, prefix: str, channel: Optional[str]) -> None:
        """
        C{prefix} said something in C{channel}: its hostmask is the freshest
        (a message in private shows nobody's channel).
        """
        if channel is not None:
            self.joined(prefix, channel)
            return
        mask = Hostmask.parse(prefix)
        person = self._people.get(self._key(mask.nick)) if mask.nick else None
        if person is not None and mask.user and mask.host:
            person.hostmask = mask

    def left(self, nick: str, channel: str) -> None:
        """
        C{nick} left C{channel} (a C{PART} or a C{KICK}).
        """
        key = self._key(nick)
        person = self._people.get(key)
        if person is None:
            return
        person.channels.discard(self._key(channel))
        if not person.channels:
            del self._people[key]
            self._accounts.pop(key, None)

    def quit(self, nick: str) -> None:
        """
        C{nick} left the network.
        """
        self._people.pop(self._key(nick), None)
        self._accounts.pop(self._key(nick), None)

    def renamed(self, old: str, new: str) -> None:
        """
        C{old} is called C{new} from now on.
        """
        account = self._accounts.pop(self._key(old), None)
        if account is not None:
            self._accounts[self._key(new)] = account
        person = self._people.pop(self._key(old), None)
        if person is not None:
            person.hostmask = person.hostmask._replace(nick=new)
            self._people[self._key(new)] = person

    def bot_left(self, channel: str) -> None:
        """
        The bot itself left C{channel} (or was kicked from it): whom it
        knew only from there, it does not see any more.
        """
        for nick in [n for n, p in self._people.items() if self._key(channel) in p.channels]:
            self.left(nick, channel)

    def who_reply(self, params: Sequence[str], own_nick: str) -> None:
        """
        A C{WHO} reply (C{RPL_WHOREPLY}: C{me channel user host server nick
        ...}): that user is in that channel.
        """
        channel, user, host, nick = params[1], params[2], params[3], params[5]
        if nick != own_nick:
            self.joined(f"{nick}!{user}@{host}", channel)

    def follow(self, kind: str, prefix: str, own_nick: str, channel: Optional[str] = None,
               **fields: Any) -> None:
        """
        Learn from one event of the bot's connection (the C{kind} and fields
        of the C{irc_<kind>} events, C{"message"} for a message), C{own_nick}
        being the bot's nick.
        """
        nick = Hostmask.parse(prefix).nick
        own = self._key(nick) == self._key(own_nick)
        if kind == "message":
            self.spoke(prefix, channel)
        elif kind == "join" and channel and not own:
            self.joined(prefix, channel)
        elif kind in ("part", "kick") and channel:
            gone = fields.get("kicked", nick) if kind == "kick" else nick
            if self._key(gone) == self._key(own_nick):
                self.bot_left(channel)
            else:
                self.left(gone, channel)
        elif kind == "quit":
            self.quit(nick)
        elif kind == "nick" and fields.get("new_nick"):
            self.renamed(nick, fields["new_nick"])

    def matching(self, patterns: Union[HostmaskPatterns, Who]) -> List[str]:
        """
        The nicks (sorted) whose hostmask matches one of C{patterns} (or,
        for a L{Who}, whose account is one of its accounts).
        """
        if isinstance(patterns, Who):
            return sorted(p.hostmask.nick for key, p in self._people.items()
                          if patterns.matches(p.hostmask, self._accounts.get(key)))
        return sorted(p.hostmask.nick for p in self._people.values()
                      if patterns.matches(p.hostmask))
