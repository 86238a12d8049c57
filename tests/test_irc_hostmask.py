"""
Hostmask parsing, IRC case folding and owner patterns.
"""

from __future__ import annotations

import pytest

from twisted_plugmgr.irc._hostmask import Hostmask, HostmaskPatterns, irc_lower


def test_parse_full_prefix():
    assert Hostmask.parse("alice!~al@trusted.example") == ("alice", "~al", "trusted.example")


def test_parse_server_prefix():
    assert Hostmask.parse("irc.example.net") == ("irc.example.net", "", "")
    assert Hostmask.parse(None) == ("", "", "")


def test_rfc1459_folding():
    assert irc_lower("Al[i]ce\\~") == "al{i}ce|^"
    assert irc_lower("Al[i]ce", "ascii") == "al[i]ce"


def test_glob_star_and_question_mark():
    owners = HostmaskPatterns(["alice!*@trusted.example", "b?b!bob@*.example"])
    assert owners.matches("alice!~al@trusted.example")
    assert owners.matches("bob!bob@host.example")
    assert owners.matches("bib!bob@x.example")
    assert not owners.matches("alice!~al@evil.example")
    assert not owners.matches("mallory!~al@trusted.example")
    assert not owners.matches("bobb!bob@host.example")


def test_matching_ignores_case():
    owners = HostmaskPatterns(["Alice!*@Trusted.Example"])
    assert owners.matches("ALICE!x@trusted.EXAMPLE")


def test_brackets_are_plain_characters_not_classes():
    owners = HostmaskPatterns(["[al]!*@h"])
    assert owners.matches("[al]!u@h")
    assert owners.matches("{AL}!u@h")  # rfc1459: [ and { are the same letter
    assert not owners.matches("a!u@h")
    owners.casemapping = "ascii"
    assert not owners.matches("{al}!u@h")


def test_regex_characters_are_literal():
    owners = HostmaskPatterns(["a.b!*@h"])
    assert not owners.matches("axb!u@h")


def test_the_whole_mask_must_match():
    owners = HostmaskPatterns(["alice!*@trusted.example"])
    assert not owners.matches("alice!x@trusted.example.evil.net")
    assert not owners.matches("xalice!x@trusted.example")


def test_sender_without_user_or_host_never_matches():
    owners = HostmaskPatterns(["*!*@*"])
    assert not owners.matches("alice")
    assert not owners.matches("irc.example.net")
    assert owners.matches("a!b@c")


@pytest.mark.parametrize("pattern", ["alice", "alice@host", "alice!user", "a@b!c", 3])
def test_incomplete_patterns_are_refused(pattern):
    with pytest.raises(ValueError):
        HostmaskPatterns([pattern])


def test_no_patterns_matches_nobody():
    owners = HostmaskPatterns()
    assert not owners
    assert not owners.matches("alice!a@b")
