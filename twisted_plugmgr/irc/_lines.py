"""
Outgoing lines: turn what a plugin wants to say into IRC lines that are
safe to send.

Three rules, applied to every message the bot sends on a plugin's behalf:

 1. B{No injection.} CR, LF and CRLF in a plugin's text end a line of text:
    each line becomes its own C{PRIVMSG} (or C{NOTICE}); empty lines are
    dropped; NUL is removed. A target (channel or nick) that holds a space,
    a comma, CR, LF or NUL, or starts with C{:}, is refused with
    L{ValueError}: nothing is sent.
 2. B{No line over 512 bytes as the server relays it.} A server relays
    C{PRIVMSG <target> :<text>} as C{:<nick>!<user>@<host> PRIVMSG ...}, so
    the room for the text is 512 bytes minus the CRLF, the command and
    target, and the bot's own hostmask. The hostmask is counted exactly
    when the bot knows it (the server tells it in the echo of its own
    C{JOIN}), and as L{CONSERVATIVE_RESERVE} bytes until then.
 3. B{Split on UTF-8 character boundaries}, never inside a multi-byte
    character, and preferably at a space (when one lies in the second half
    of the room). The space at a break is dropped, as clients do: servers
    strip trailing spaces anyway (ngircd does). So the pieces joined with
    one space give back a line of words; a word too long for a line is cut
    where the room ends, and those pieces join with nothing. A piece that
    would hold only spaces is not sent.

Everything here is pure: text in, bytes out.
"""

from __future__ import annotations

import re
from typing import List, Optional

__all__ = [
    "MAX_LINE_BYTES",
    "CONSERVATIVE_RESERVE",
    "text_lines",
    "split_utf8",
    "check_target",
    "prefix_reserve",
    "format_messages",
]

#: The longest line IRC allows, CRLF included (RFC 1459 / RFC 2812).
MAX_LINE_BYTES = 512

#: Bytes kept for C{":nick!user@host "} while the bot's hostmask is unknown.
CONSERVATIVE_RESERVE = 100

_NEWLINES = re.compile(r"\r\n|\r|\n")
_BAD_TARGET = re.compile(r"[\s,\x00\x07]")


def text_lines(text: str) -> List[str]:
    """
    Split C{text} at CR, LF and CRLF into the lines to send, NUL removed,
    empty lines dropped.
    """
    if not isinstance(text, str):
        text = str(text)
    return [line for line in _NEWLINES.split(text.replace("\x00", "")) if line]


def split_utf8(text: str, limit: int) -> List[str]:
    """
    Split C{text} into pieces of at most C{limit} bytes of UTF-8 each.

    A piece never ends inside a multi-byte character. When a space lies in
    the second half of the room (or just after it), the piece ends before
    the last such space, and that space is dropped. Otherwise the piece
    fills the room, and the next one starts with what follows, never with
    a space. Unencodable characters (lone surrogates) become C{"?"}.

    @param limit: bytes per piece; at least 4, the size of the longest
        UTF-8 character.
    @raise ValueError: if C{limit} is less than 4.
    """
    if limit < 4:
        raise ValueError(f"no room to send text: {limit} bytes per line")
    data = text.encode("utf-8", "replace")
    pieces: List[str] = []
    while len(data) > limit:
        cut = limit
        # data[cut] is the first byte of the next piece: it must not be a
        # continuation byte (10xxxxxx) of a character begun in this piece.
        while data[cut] & 0xC0 == 0x80:
            cut -= 1
        space = data.rfind(b" ", 0, cut + 1)
        if space >= limit // 2:
            pieces.append(data[:space].decode("utf-8"))
            data = data[space + 1:]
        else:
            pieces.append(data[:cut].decode("utf-8"))
            data = data[cut:]
    if data:
        pieces.append(data.decode("utf-8"))
    return pieces


def check_target(target: str) -> str:
    """
    Return C{target} if it is a single, safe IRC target (a nick or a
    channel).

    @raise ValueError: if it is empty, not a string, starts with C{:}, or
        holds whitespace, a comma, BEL or NUL: anything that could change
        the meaning of the line it goes into.
    """
    if not isinstance(target, str) or not target or target.startswith(":"):
        raise ValueError(f"invalid IRC target {target!r}")
    if _BAD_TARGET.search(target):
        raise ValueError(f"invalid IRC target {target!r}")
    return target


def prefix_reserve(hostmask: Optional[str]) -> int:
    """
    Bytes the server's relay prefix C{":<hostmask> "} takes: exact for a
    known hostmask, L{CONSERVATIVE_RESERVE} otherwise.
    """
    if not hostmask:
        return CONSERVATIVE_RESERVE
    return len(hostmask.encode("utf-8")) + 2


def format_messages(
    command: str,
    target: str,
    text: str,
    reserve: int = CONSERVATIVE_RESERVE,
    ctcp: Optional[str] = None,
) -> List[bytes]:
    """
    The wire lines (CRLF included) that send C{text} to C{target}.

    @param command: C{"PRIVMSG"} or C{"NOTICE"}.
    @param target: a nick or channel, checked with L{check_target}.
    @param text: any text: split into lines at CR/LF, then into pieces that
        fit (see the module docstring).
    @param reserve: bytes the server will put in front when it relays the
        line (see L{prefix_reserve}).
    @param ctcp: a CTCP tag such as C{"ACTION"}: each piece is then sent as
        C{"\\x01ACTION piece\\x01"}.
    @raise ValueError: for a bad target or one so long that no text fits.
    """
    check_target(target)
    head = f"{command} {target} :".encode()
    if ctcp is not None:
        opener = f"\x01{ctcp} ".encode()
        closer = b"\x01"
    else:
        opener = closer = b""
    room = MAX_LINE_BYTES - 2 - reserve - len(head) - len(opener) - len(closer)
    out: List[bytes] = []
    for line in text_lines(text):
        for piece in split_utf8(line, room):
            if not piece.strip(" "):
                continue
            out.append(head + opener + piece.encode("utf-8") + closer + b"\r\n")
    return out
