"""
The example bot plugins in examples/irc_plugins, in-process: echo, dice,
seen (state across reloads) and karma (persisted atomically).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from irc_fakes import BotHarness

from twisted_plugmgr.testing import result_of

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "irc_plugins"


@pytest.fixture
def examples_bot(tmp_path):
    """
    A started L{BotHarness} loading the example plugins, with a data
    directory (C{.data}).
    """
    h = BotHarness(EXAMPLES, data_dir=str(tmp_path / "data"))
    h.data = tmp_path / "data"
    h.start()
    yield h
    h.stop()
    assert not h.clock.getDelayedCalls()


def test_echo(examples_bot):
    result_of(examples_bot.manager.load("echo"))
    examples_bot.say("!echo hello there")
    examples_bot.say("!say")
    assert examples_bot.said() == ["PRIVMSG #chan :hello there", "PRIVMSG #chan :carol: echo what?"]


def test_dice_rolls_within_bounds_and_refuses_silly_specs(examples_bot):
    result_of(examples_bot.manager.load("dice", data={"seed": 7}))
    examples_bot.say("!roll 3d6")
    examples_bot.say("!dice")
    examples_bot.say("!roll 1000d6")
    examples_bot.say("!roll banana")
    said = examples_bot.said()
    rolls = said[0].split(": ", 1)[1]
    dice, total = rolls.split(" = ")
    values = [int(v) for v in dice.split(" + ")]
    assert len(values) == 3 and all(1 <= v <= 6 for v in values)
    assert sum(values) == int(total)
    assert said[1].startswith("PRIVMSG #chan :carol rolled 1d6: ")
    assert said[2] == "PRIVMSG #chan :carol: 1 to 100 dice of 2 to 1000 sides, please"
    assert said[3] == "PRIVMSG #chan :carol: I roll dice like 2d6, not 'banana'"


def test_seen_remembers_and_keeps_it_across_a_reload(examples_bot):
    result_of(examples_bot.manager.load("seen"))
    examples_bot.say("hello world", sender="Alice!~a@h")
    examples_bot.say("secret", target="bot", sender="bob!~b@h")
    examples_bot.clock.advance(150)
    examples_bot.say("!seen alice")
    examples_bot.say("!seen bob")
    examples_bot.say("!seen nobody")
    assert examples_bot.said() == [
        "PRIVMSG #chan :Alice was last seen 2m ago in #chan, saying: hello world",
        "PRIVMSG #chan :bob was last seen 2m ago in private",
        "PRIVMSG #chan :carol: I have not seen nobody",
    ]
    result_of(examples_bot.manager.reload("seen"))
    assert examples_bot.manager.plugin_table()["seen"].reloads == 1
    examples_bot.say("!seen ALICE")
    assert examples_bot.said() == [
        "PRIVMSG #chan :Alice was last seen 2m ago in #chan, saying: hello world"]


def test_karma_counts_and_persists_atomically(examples_bot):
    result_of(examples_bot.manager.load("karma"))
    examples_bot.say("python++ is great, java-- and python++ again")
    examples_bot.say("carol++")  # no karma for oneself
    examples_bot.say("!karma python")
    examples_bot.say("!karma Java")
    assert examples_bot.said() == ["PRIVMSG #chan :python has karma 2",
                              "PRIVMSG #chan :Java has karma -1"]
    path = examples_bot.data / "karma" / "karma.json"
    assert json.loads(path.read_text()) == {"python": 2, "java": -1}
    assert os.listdir(path.parent) == ["karma.json"]  # no temporary file left
    # A fresh instance reads the file back.
    result_of(examples_bot.manager.unload("karma"))
    result_of(examples_bot.manager.load("karma"))
    examples_bot.say("!karma python")
    assert examples_bot.said() == ["PRIVMSG #chan :python has karma 2"]


def test_karma_write_failure_is_reported_and_leaves_nothing_behind(examples_bot, logged_failures):
    result_of(examples_bot.manager.load("karma"))
    path = examples_bot.data / "karma" / "karma.json"
    path.mkdir()  # os.replace onto a directory fails
    examples_bot.say("python++")
    errors = examples_bot.events.of("plugin_error")
    assert [e.plugin for e in errors] == ["karma"]
    assert os.listdir(path.parent) == ["karma.json"]
    assert path.is_dir() and not os.listdir(path)
    examples_bot.say("!karma python")
    assert examples_bot.said() == ["PRIVMSG #chan :python has karma 1"]
    logged_failures.flush(OSError)


def test_karma_without_a_data_dir_warns_and_keeps_counts_in_memory(tmp_path):
    h = BotHarness(EXAMPLES)
    h.start()
    result_of(h.manager.load("karma"))
    assert [e.message for e in h.events.of("plugin_warning")] == [
        "no data_dir configured: karma is kept in memory only"]
    h.say("tea++")
    h.say("!karma tea")
    assert h.said() == ["PRIVMSG #chan :tea has karma 1"]
    h.stop()
