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
def harness(tmp_path):
    h = BotHarness(EXAMPLES, data_dir=str(tmp_path / "data"))
    h.data = tmp_path / "data"
    h.start()
    yield h
    h.stop()
    assert not h.clock.getDelayedCalls()


def test_echo(harness):
    result_of(harness.manager.load("echo"))
    harness.say("!echo hello there")
    harness.say("!say")
    assert harness.said() == ["PRIVMSG #chan :hello there", "PRIVMSG #chan :carol: echo what?"]


def test_dice_rolls_within_bounds_and_refuses_silly_specs(harness):
    result_of(harness.manager.load("dice", data={"seed": 7}))
    harness.say("!roll 3d6")
    harness.say("!dice")
    harness.say("!roll 1000d6")
    harness.say("!roll banana")
    said = harness.said()
    rolls = said[0].split(": ", 1)[1]
    dice, total = rolls.split(" = ")
    values = [int(v) for v in dice.split(" + ")]
    assert len(values) == 3 and all(1 <= v <= 6 for v in values)
    assert sum(values) == int(total)
    assert said[1].startswith("PRIVMSG #chan :carol rolled 1d6: ")
    assert said[2] == "PRIVMSG #chan :carol: 1 to 100 dice of 2 to 1000 sides, please"
    assert said[3] == "PRIVMSG #chan :carol: I roll dice like 2d6, not 'banana'"


def test_seen_remembers_and_keeps_it_across_a_reload(harness):
    result_of(harness.manager.load("seen"))
    harness.say("hello world", sender="Alice!~a@h")
    harness.say("secret", target="bot", sender="bob!~b@h")
    harness.clock.advance(150)
    harness.say("!seen alice")
    harness.say("!seen bob")
    harness.say("!seen nobody")
    assert harness.said() == [
        "PRIVMSG #chan :Alice was last seen 2m ago in #chan, saying: hello world",
        "PRIVMSG #chan :bob was last seen 2m ago in private",
        "PRIVMSG #chan :carol: I have not seen nobody",
    ]
    result_of(harness.manager.reload("seen"))
    assert harness.manager.plugin_table()["seen"].reloads == 1
    harness.say("!seen ALICE")
    assert harness.said() == [
        "PRIVMSG #chan :Alice was last seen 2m ago in #chan, saying: hello world"]


def test_karma_counts_and_persists_atomically(harness):
    result_of(harness.manager.load("karma"))
    harness.say("python++ is great, java-- and python++ again")
    harness.say("carol++")  # no karma for oneself
    harness.say("!karma python")
    harness.say("!karma Java")
    assert harness.said() == ["PRIVMSG #chan :python has karma 2",
                              "PRIVMSG #chan :Java has karma -1"]
    path = harness.data / "karma" / "karma.json"
    assert json.loads(path.read_text()) == {"python": 2, "java": -1}
    assert os.listdir(path.parent) == ["karma.json"]  # no temporary file left
    # A fresh instance reads the file back.
    result_of(harness.manager.unload("karma"))
    result_of(harness.manager.load("karma"))
    harness.say("!karma python")
    assert harness.said() == ["PRIVMSG #chan :python has karma 2"]


def test_karma_write_failure_is_reported_and_leaves_nothing_behind(harness, logged_failures):
    result_of(harness.manager.load("karma"))
    path = harness.data / "karma" / "karma.json"
    path.mkdir()  # os.replace onto a directory fails
    harness.say("python++")
    errors = harness.events.of("plugin_error")
    assert [e.plugin for e in errors] == ["karma"]
    assert os.listdir(path.parent) == ["karma.json"]
    assert path.is_dir() and not os.listdir(path)
    harness.say("!karma python")
    assert harness.said() == ["PRIVMSG #chan :python has karma 1"]
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
