"""
Which lines are commands.
"""

from __future__ import annotations

import pytest

from twisted_plugmgr.irc._parse import ParsedCommand, parse_command


@pytest.mark.parametrize(
    "text,expected",
    [
        ("!roll 2d6", ParsedCommand("roll", "2d6", "prefix")),
        ("!ROLL  2d6  ", ParsedCommand("roll", "2d6", "prefix")),
        ("!roll", ParsedCommand("roll", "", "prefix")),
        ("bot: roll 2d6", ParsedCommand("roll", "2d6", "addressed")),
        ("Bot, roll", ParsedCommand("roll", "", "addressed")),
        ("bot:   !roll 1", ParsedCommand("roll", "1", "addressed")),
        ("hello there", None),
        ("!", None),
        ("! roll", None),
        ("bot:", None),
        ("bot: ", None),
        ("bots: roll", None),
        ("bo: roll", None),
        ("", None),
    ],
)
def test_channel_lines(text, expected):
    assert parse_command(text, "bot", "!") == expected


def test_private_lines_need_no_prefix():
    assert parse_command("roll 2d6", "bot", "!", private=True) == ParsedCommand(
        "roll", "2d6", "private"
    )
    assert parse_command("!roll 2d6", "bot", "!", private=True) == ParsedCommand(
        "roll", "2d6", "prefix"
    )


def test_other_prefix():
    assert parse_command("!roll", "bot", ".") is None
    assert parse_command(".roll", "bot", ".") == ParsedCommand("roll", "", "prefix")
    assert parse_command("~~roll x", "bot", "~~") == ParsedCommand("roll", "x", "prefix")


def test_empty_prefix_disables_the_prefixed_form():
    assert parse_command("roll", "bot", "") is None
    assert parse_command("bot: roll", "bot", "") == ParsedCommand("roll", "", "addressed")


def test_nick_comparison_follows_casemapping():
    assert parse_command("Bot[1]: roll", "bot{1}", "!") is not None
    assert parse_command("Bot[1]: roll", "bot{1}", "!", casemapping="ascii") is None
