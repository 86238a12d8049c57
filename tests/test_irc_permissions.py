"""
Who may do what, and abuse control: L{Who}, L{Permissions}, L{UserFlood},
L{IgnoreList}, L{ChannelPlugins}; and the bot applying them (commands that
need a permission, the per-user rate limit, C{!ignore}, per-channel
plugins) over a fake server on a Clock.
"""

from __future__ import annotations

import json

import pytest
from irc_fakes import BotHarness, write_bot_plugin
from twisted.internet.task import Clock

from twisted_plugmgr.irc import ChannelPlugins, Hostmask, IgnoreList, Permissions, UserFlood, Who
from twisted_plugmgr.irc._abuse import IGNORE_FILE

ALICE = Hostmask.parse("alice!~al@home.example")
EVE = Hostmask.parse("eve!~eve@evil.example")
OWNER = "alice!~alice@trusted.example"
STRANGER = "carol!~carol@elsewhere.example"

PLUGINS = '''
    @command("ping")
    def ping(self, ctx):
        return "pong"

    @command("op", needs="op")
    def op(self, ctx):
        return "opped"
'''


def test_who_matches_hostmasks_and_accounts_never_nicks():
    who = Who(["*!*@home.example", "account:Bob"])
    assert who.matches(ALICE)
    assert who.matches(EVE, "bob")  # accounts compare without case
    assert not who.matches(Hostmask.parse("bob!~b@x.example"))  # the nick is not the account
    with pytest.raises(ValueError, match="nick!user@host"):
        Who(["bob"])
    with pytest.raises(ValueError, match="account:NAME"):
        Who(["account:*"])


def test_owners_hold_every_permission():
    perms = Permissions(Who(["account:alice"]), {"op": ["*!*@evil.example"], "admin": []})
    assert perms.has("admin", ALICE, "alice") and perms.has("op", ALICE, "alice")
    assert perms.has("op", EVE, None) and not perms.has("admin", EVE, None)
    assert perms.of(ALICE, "alice") == ["owner", "admin", "op"]
    assert perms.of(EVE, None) == ["op"]
    assert perms.has(None, EVE, None)


def test_user_flood_ignores_after_the_burst_then_forgives():
    clock = Clock()
    flood = UserFlood(1.0, 3, 60.0, clock)
    assert [flood.check("u") for _ in range(4)] == ["ok", "ok", "ok", "limited"]
    assert flood.check("u") == "ignored" and flood.ignoring
    assert flood.check("other") == "ok"
    clock.advance(60)
    assert flood.check("u") == "ok" and not flood.ignoring


def test_ignore_list_persists_and_refuses_a_corrupt_file(tmp_path):
    path = str(tmp_path / "d" / IGNORE_FILE)
    ignores = IgnoreList(path)
    assert ignores.add("*!*@evil.example") and not ignores.add("*!*@evil.example")
    assert ignores.add("account:mallory")
    ignores.save()
    again = IgnoreList(path)
    assert again.entries == ("*!*@evil.example", "account:mallory")
    assert again.matches(EVE, None) and again.matches(ALICE, "Mallory")
    assert again.remove("account:mallory") and not again.matches(ALICE, "mallory")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="ignore list .*bad.json"):
        IgnoreList(str(tmp_path / "bad.json"))


def test_channel_plugins_enabled_or_disabled():
    rules = ChannelPlugins({"#Quiet": {"disabled": ["games"]}, "#only": {"enabled": ["games"]}})
    assert not rules.answers("games", "#quiet")
    assert rules.answers("admin", "#quiet")
    assert rules.answers("games", "#only") and not rules.answers("admin", "#only")
    assert rules.answers("games", "#other") and rules.answers("games", None)
    with pytest.raises(ValueError, match="one of enabled or disabled"):
        ChannelPlugins({"#x": {"enabled": [], "disabled": []}})


# -- the bot ------------------------------------------------------------------


def started(tmp_path, **kw):
    harness = BotHarness(tmp_path, **kw)
    harness.start()
    write_bot_plugin(tmp_path, "tools", PLUGINS)
    harness.load("tools")
    harness.take()
    return harness


def test_a_command_that_needs_a_permission_says_which_once_a_minute(tmp_path):
    h = started(tmp_path, permissions={"op": ["*!*@ops.example"]})
    h.say("!op")
    assert h.said() == ["NOTICE carol :carol: !op needs the op permission"]
    h.say("!op")
    assert h.said() == []
    h.say("!op", sender="dave!~d@ops.example")
    assert h.said() == ["PRIVMSG #chan :opped"]
    h.say("!op", sender=OWNER)
    assert h.said() == ["PRIVMSG #chan :opped"]
    h.clock.advance(61)
    h.say("!op")
    assert h.said() == ["NOTICE carol :carol: !op needs the op permission"]
    h.parent.stopService()


def test_a_flooding_user_is_ignored_with_one_notice_and_owners_never_are(tmp_path):
    h = started(tmp_path, user_flood=(1.0, 2), ignore_seconds=30.0)
    for _ in range(2):
        h.say("!ping")
    assert h.said() == ["PRIVMSG #chan :pong"] * 2
    h.say("!ping")
    assert h.said() == ["NOTICE carol :carol: too many commands too fast; "
                        "ignoring you for 30 seconds"]
    h.say("!ping")
    h.say("!ping", target="bot")
    assert h.said() == []
    for _ in range(5):
        h.say("!ping", sender=OWNER)
    assert h.said() == ["PRIVMSG #chan :pong"] * 5
    h.clock.advance(31)
    h.say("!ping")
    assert h.said() == ["PRIVMSG #chan :pong"]
    h.parent.stopService()


def test_ignore_and_unignore_are_for_owners_and_kept_in_the_data_dir(tmp_path):
    data = tmp_path / "data"
    h = started(tmp_path, data_dir=str(data))
    h.say("!ignore *!*@elsewhere.example")
    assert h.said() == ["NOTICE carol :carol: !ignore needs the owner permission"]
    h.say("!ignore *!*@elsewhere.example", sender=OWNER)
    assert h.said() == ["PRIVMSG #chan :ignoring *!*@elsewhere.example"]
    assert json.loads((data / IGNORE_FILE).read_text()) == ["*!*@elsewhere.example"]
    h.say("!ping")
    assert h.said() == []
    h.parent.stopService()
    # A new bot on the same data directory still ignores them.
    (tmp_path / "again").mkdir()
    again = started(tmp_path / "again", data_dir=str(data))
    again.say("!ping")
    assert again.said() == []
    again.say("!unignore *!*@elsewhere.example", sender=OWNER)
    assert again.said() == ["PRIVMSG #chan :no longer ignoring *!*@elsewhere.example"]
    again.say("!ping")
    assert again.said() == ["PRIVMSG #chan :pong"]
    assert json.loads((data / IGNORE_FILE).read_text()) == []
    again.parent.stopService()


def test_ignore_without_a_data_dir_says_it_is_in_memory_only(tmp_path):
    h = started(tmp_path)
    h.say("!ignore bob", sender=OWNER)
    [refusal] = h.said()
    assert refusal.startswith("PRIVMSG #chan :cannot ignore bob: ") and "nick!user@host" in refusal
    h.say("!ignore account:bob", sender=OWNER)
    assert h.said() == ["PRIVMSG #chan :ignoring account:bob (in memory only: the bot has no "
                        "data_dir)"]
    h.parent.stopService()


def test_a_plugin_disabled_in_a_channel_is_silent_there_and_answers_elsewhere(tmp_path):
    h = started(tmp_path, channel_plugins={"#chan": {"disabled": ["tools"]}})
    h.say("!ping")
    assert h.said() == []
    h.say("!ping", target="#other")
    assert h.said() == ["PRIVMSG #other :pong"]
    h.say("!ping", target="bot")
    assert h.said() == ["PRIVMSG carol :pong"]
    h.say("!help")
    [line] = h.said()
    assert "!help" in line and "!ping" not in line and "!op" not in line
    h.say("!help ping")
    assert h.said() == ["PRIVMSG #chan :no command !ping"]
    h.parent.stopService()


def test_whoami_says_what_the_sender_holds(tmp_path):
    h = started(tmp_path, permissions={"op": ["*!*@elsewhere.example"]})
    h.say("!whoami")
    assert h.said() == ["PRIVMSG #chan :carol: you are carol!~carol@elsewhere.example "
                        "(not logged in) on default; permissions: op"]
    h.say("!whoami", sender="zed!~z@nowhere.example")
    assert h.said() == ["PRIVMSG #chan :zed: you are zed!~z@nowhere.example "
                        "(not logged in) on default; no permissions"]
    h.parent.stopService()


# -- building it: several networks, SASL password files, the interfaces ---------


def test_make_bot_service_builds_one_bot_per_network(tmp_path):
    from zope.interface.verify import verifyObject

    from twisted_plugmgr import PluginManager
    from twisted_plugmgr.irc import IBot, make_bot_service
    from twisted_plugmgr.irc._interfaces import IConnectionOwner

    (tmp_path / "pw").write_text("s3cret\n")
    manager = PluginManager(reactor=Clock())
    bot = make_bot_service(manager, {
        "nick": "b", "owners": ["account:alice"], "permissions": {"op": ["account:olga"]},
        "networks": {
            "one": {"server": "tcp:127.0.0.1:1"},
            "two": {"server": "tcp:127.0.0.1:2", "nick": "c",
                    "sasl": {"account": "c", "password_file": str(tmp_path / "pw")},
                    "permissions": {"op": ["*!*@ops.example"]}},
        }}, Clock())
    assert sorted(bot.bots) == ["one", "two"] and bot.network == "one"
    two = bot.bots["two"]
    assert two.nick == "c" and two.sasl.password == "s3cret" and two.index is bot.index
    assert two.has_permission("op", "x!y@ops.example") and not bot.has_permission(
        "op", "x!y@ops.example")
    assert two.has_permission("op", "x!y@z", "olga") and two.is_owner("q!q@q", "alice")
    for each in (bot, two):
        assert verifyObject(IBot, each) and verifyObject(IConnectionOwner, each)


def test_an_unreadable_sasl_password_file_is_one_line_naming_it(tmp_path):
    from twisted_plugmgr import PluginManager
    from twisted_plugmgr.irc import make_bot_service

    manager = PluginManager(reactor=Clock())
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError) as info:
        make_bot_service(manager, {"server": "tcp:127.0.0.1:1", "nick": "b",
                                   "sasl": {"account": "b", "password_file": missing}}, Clock())
    assert str(info.value) == f"network default: sasl.password_file {missing}: " \
        "No such file or directory"
    assert manager.packages == PluginManager(reactor=Clock()).packages


def test_a_corrupt_ignore_list_stops_the_build_naming_the_file(tmp_path):
    from twisted_plugmgr import PluginManager
    from twisted_plugmgr.irc import make_bot_service

    (tmp_path / IGNORE_FILE).write_text('["ok!*@*", 3]')
    with pytest.raises(ValueError, match=f"ignore list {tmp_path / IGNORE_FILE}: expected"):
        make_bot_service(PluginManager(reactor=Clock()),
                         {"server": "tcp:127.0.0.1:1", "nick": "b", "data_dir": str(tmp_path)},
                         Clock())
