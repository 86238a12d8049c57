"""
Outgoing lines: CR/LF never reaches the wire inside a line, no line is
longer than 512 bytes as the server relays it, and splitting keeps UTF-8
characters whole.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_plugmgr.irc._lines import (
    CONSERVATIVE_RESERVE,
    MAX_LINE_BYTES,
    check_target,
    format_messages,
    prefix_reserve,
    split_utf8,
    text_lines,
)

MASK = "bot!~bot@127.0.0.1"


def relayed(line: bytes, mask: str = MASK) -> bytes:
    """
    The line as the server sends it to the other members of the channel.
    """
    return b":" + mask.encode() + b" " + line


def payload(line: bytes) -> str:
    """
    The text of a PRIVMSG wire line.
    """
    assert line.endswith(b"\r\n")
    return line[:-2].split(b" :", 1)[1].decode("utf-8")


def test_short_text_is_one_line():
    assert format_messages("PRIVMSG", "#chan", "hello") == [b"PRIVMSG #chan :hello\r\n"]


@pytest.mark.parametrize("sep", ["\r\n", "\n", "\r"])
def test_newlines_become_separate_messages(sep):
    lines = format_messages("PRIVMSG", "#chan", f"hi{sep}QUIT :bye")
    assert lines == [b"PRIVMSG #chan :hi\r\n", b"PRIVMSG #chan :QUIT :bye\r\n"]


def test_nul_is_removed_and_empty_lines_dropped():
    assert text_lines("a\x00b\r\n\r\n\nc") == ["ab", "c"]
    assert format_messages("PRIVMSG", "#c", "\r\n\n") == []


def test_no_line_ever_holds_cr_lf_or_nul_before_its_end():
    text = "x\r\nQUIT\rJOIN #evil\nPART\x00 #c"
    for line in format_messages("NOTICE", "alice", text):
        body = line[:-2]
        assert b"\r" not in body and b"\n" not in body and b"\x00" not in body


@pytest.mark.parametrize(
    "target", ["", ":x", "#a b", "#a,#b", "#a\r\nQUIT", "a\nb", "a\x00", "x\x07"]
)
def test_bad_targets_are_refused(target):
    with pytest.raises(ValueError):
        check_target(target)
    with pytest.raises(ValueError):
        format_messages("PRIVMSG", target, "hi")


def test_reserve_is_exact_when_the_hostmask_is_known():
    assert prefix_reserve(MASK) == len(MASK) + 2
    assert prefix_reserve(None) == CONSERVATIVE_RESERVE


def test_long_text_is_split_to_fit_the_relayed_line_and_reassembles():
    text = " ".join(f"word{i}" for i in range(300))
    lines = format_messages("PRIVMSG", "#chan", text, prefix_reserve(MASK))
    assert len(lines) > 1
    for line in lines:
        assert len(relayed(line)) <= MAX_LINE_BYTES
    # split at spaces, which are dropped: the words come back joined by one
    assert " ".join(payload(line) for line in lines) == text
    assert not any(payload(line).endswith(" ") or payload(line).startswith(" ")
                   for line in lines)


def test_split_fills_the_line_exactly_when_there_is_no_space():
    text = "a" * 2000
    lines = format_messages("PRIVMSG", "#chan", text, prefix_reserve(MASK))
    assert len(relayed(lines[0])) == MAX_LINE_BYTES


def test_multibyte_characters_are_never_cut():
    text = "é€😀" * 400
    lines = format_messages("PRIVMSG", "#chan", text, prefix_reserve(MASK))
    for line in lines:
        assert len(relayed(line)) <= MAX_LINE_BYTES
        line.decode("utf-8")  # every line is valid UTF-8 on its own
    assert "".join(payload(line) for line in lines) == text


def test_action_pieces_are_each_wrapped():
    lines = format_messages("PRIVMSG", "#c", "waves " * 200, prefix_reserve(MASK), ctcp="ACTION")
    assert len(lines) > 1
    for line in lines:
        assert len(relayed(line)) <= MAX_LINE_BYTES
        assert payload(line).startswith("\x01ACTION ") and payload(line).endswith("\x01")


def test_a_target_too_long_for_any_text_is_refused():
    with pytest.raises(ValueError):
        format_messages("PRIVMSG", "#" + "c" * 500, "hi")


def test_split_limit_below_one_character_is_refused():
    with pytest.raises(ValueError):
        split_utf8("abc", 3)


@given(st.text(), st.integers(min_value=4, max_value=64))
def test_split_property(text, limit):
    text = text.encode("utf-8", "replace").decode("utf-8")
    pieces = split_utf8(text, limit)
    # Walk the text: each piece follows, then at most one dropped space.
    position = 0
    for piece in pieces:
        assert len(piece.encode("utf-8")) <= limit
        assert text.startswith(piece, position)
        position += len(piece)
        if position < len(text) and text[position] == " ":
            position += 1
    assert position == len(text)


def test_a_break_space_is_dropped_and_a_hard_cut_keeps_everything():
    assert split_utf8("aaaa bbbb", 6) == ["aaaa", "bbbb"]
    assert split_utf8("aaaaaa bb", 6) == ["aaaaaa", "bb"]  # the space just after the room
    assert split_utf8("abcdefghij", 4) == ["abcd", "efgh", "ij"]


@given(
    st.text(alphabet=st.characters(codec="utf-8")),
    st.sampled_from(["#c", "nick", "#" + "x" * 40]),
)
def test_format_property(text, target):
    for line in format_messages("PRIVMSG", target, text, CONSERVATIVE_RESERVE):
        assert line.count(b"\r") == 1 and line.count(b"\n") == 1 and line.endswith(b"\r\n")
        assert b"\x00" not in line
        assert len(line) + CONSERVATIVE_RESERVE <= MAX_LINE_BYTES
