"""
The command index and the command/rule declarations.
"""

from __future__ import annotations

import re

import pytest

from twisted_plugmgr._dispatch import handler_specs
from twisted_plugmgr.irc._index import (
    CommandIndex,
    DuplicateCommand,
    bot_specs,
    command,
    command_event,
    rule,
)


class Dice:
    @command("roll", aliases=("dice", "R"), help="roll dice")
    def roll(self, ctx):
        return "4"

    @command("flip")
    def flip(self, ctx):
        return "heads"


class Greeter:
    @rule(r"\bhello\b", re.I)
    @rule(r"\bhi\b")
    def greet(self, ctx):
        return "hi!"

    @command("Wave")
    def wave(self, ctx):
        return "o/"


class Clash:
    @command("dice")
    def other(self, ctx):
        return "?"


def test_declarations_are_collected():
    commands, rules = bot_specs(Dice)
    assert [c.name for c in commands] == ["flip", "roll"]
    roll = commands[1]
    assert roll.aliases == ("dice", "r")
    assert roll.help == "roll dice"
    assert roll.words == ("roll", "dice", "r")
    assert rules == ()


def test_commands_and_rules_are_manager_handlers():
    events = {spec.event: spec.attribute for spec in handler_specs(Greeter)}
    assert events == {"irc_command.wave": "wave", "irc_rule.greet": "greet"}
    commands, rules = bot_specs(Greeter)
    assert len(rules) == 2 and {r.event for r in rules} == {"irc_rule.greet"}


@pytest.mark.parametrize("name", ["", "two words", "a\r\nb", 3, None])
def test_bad_command_names_are_refused(name):
    with pytest.raises(ValueError):
        command(name)


def test_bad_alias_is_refused():
    with pytest.raises(ValueError):
        command("ok", aliases=("no good",))


def test_bad_rule_fails_at_once():
    with pytest.raises(re.error):
        rule("(")


def test_one_class_claiming_a_word_twice_is_refused():
    class Twice:
        @command("a")
        def one(self, ctx):
            pass

        @command("b", aliases=("a",))
        def two(self, ctx):
            pass

    with pytest.raises(ValueError, match="claimed twice"):
        bot_specs(Twice)


def test_lookup_by_name_and_alias():
    index = CommandIndex()
    index.set("dice", *bot_specs(Dice))
    assert index.lookup("roll").plugin == "dice"
    assert index.lookup("r").spec.name == "roll"
    assert index.lookup("r").spec.event == command_event("roll")
    assert index.lookup("nope") is None


def test_second_plugin_claiming_a_word_is_refused_naming_both():
    index = CommandIndex()
    index.set("dice", *bot_specs(Dice))
    with pytest.raises(DuplicateCommand) as caught:
        index.set("clash", *bot_specs(Clash))
    error = caught.value
    assert (error.plugin, error.command, error.other) == ("clash", "dice", "dice")
    assert "'clash'" in str(error) and "'dice'" in str(error)
    # nothing of the refused plugin is left
    assert "clash" not in index
    assert index.lookup("dice").plugin == "dice"


def test_a_plugin_never_conflicts_with_itself_and_set_replaces():
    index = CommandIndex()
    index.set("p", *bot_specs(Dice))
    index.set("p", *bot_specs(Greeter))  # a reload with other commands
    assert index.lookup("roll") is None and index.lookup("dice") is None
    assert index.lookup("wave").plugin == "p"
    assert [plugin for plugin, _ in index.rules] == ["p", "p"]


def test_remove_forgets_commands_and_rules():
    index = CommandIndex()
    index.set("dice", *bot_specs(Dice))
    index.set("greeter", *bot_specs(Greeter))
    index.remove("greeter")
    assert index.rules == ()
    assert index.lookup("wave") is None
    assert index.lookup("roll").plugin == "dice"
    index.remove("greeter")  # twice is harmless
    index.remove("dice")
    assert index.commands() == []


def test_only_plugins_with_rules_are_in_the_rule_list():
    index = CommandIndex()
    for i in range(50):
        index.set(f"dice{i}", *((),) * 2)
    index.set("greeter", *bot_specs(Greeter))
    assert {plugin for plugin, _ in index.rules} == {"greeter"}


def test_commands_listing_is_sorted_without_aliases():
    index = CommandIndex()
    index.set("dice", *bot_specs(Dice))
    index.set("greeter", *bot_specs(Greeter))
    assert [(e.spec.name, e.plugin) for e in index.commands()] == [
        ("flip", "dice"), ("roll", "dice"), ("wave", "greeter"),
    ]
    assert [s.name for s in index.commands_of("dice")] == ["flip", "roll"]
