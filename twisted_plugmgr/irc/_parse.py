"""
Reading a message: is this line a command, and for which command name?

Three forms are commands:

 - prefixed: C{!roll 2d6} (the prefix is configurable; C{!} by default);
 - addressed: C{bot: roll 2d6} or C{bot, roll 2d6} (the prefix may follow:
   C{bot: !roll 2d6});
 - private: in a private message to the bot, the first word, prefixed or
   not (C{roll 2d6}).

Anything else is chatter: only rules look at it. Command names are case
insensitive (folded with L{str.lower}). Pure code: no reactor, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from ._hostmask import irc_lower

__all__ = ["ParsedCommand", "parse_command"]


class ParsedCommand(NamedTuple):
    """
    A line that names a command.

    @ivar name: the command name, lower case.
    @ivar args: the rest of the line, stripped.
    @ivar form: C{"prefix"}, C{"addressed"} or C{"private"}.
    """

    name: str
    args: str
    form: str


def _split(rest: str, form: str) -> Optional[ParsedCommand]:
    if not rest or rest[0].isspace():
        return None
    name, _, args = rest.partition(" ")
    return ParsedCommand(name.lower(), args.strip(), form)


def parse_command(
    text: str,
    nick: str,
    prefix: str = "!",
    private: bool = False,
    casemapping: str = "rfc1459",
) -> Optional[ParsedCommand]:
    """
    Return the command C{text} names, or L{None} for chatter.

    @param text: the message text.
    @param nick: the bot's current nick (for the addressed form).
    @param prefix: the command prefix; empty disables the prefixed form.
    @param private: whether the message was sent to the bot alone.
    @param casemapping: how to compare C{nick} (the server's CASEMAPPING).
    """
    if prefix and text.startswith(prefix):
        return _split(text[len(prefix):], "prefix")
    size = len(nick)
    if (
        nick
        and len(text) > size
        and text[size] in ":,"
        and irc_lower(text[:size], casemapping) == irc_lower(nick, casemapping)
    ):
        rest = text[size + 1:].lstrip()
        if prefix and rest.startswith(prefix):
            rest = rest[len(prefix):]
        return _split(rest, "addressed")
    if private:
        return _split(text.lstrip(), "private")
    return None
