"""
The bot in-process: a real manager and bot on a Clock, a fake server on a
StringTransport. Dispatch, replies, failures, the index kept current,
admin commands, connections. (The wire protocol's own behaviour is in
test_irc_protocol.)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import attr
import pytest
from irc_fakes import BOT_MASK, BotHarness, harness_fixture, write_bot_plugin  # noqa: F401
from twisted.application.service import MultiService
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from twisted_plugmgr import InitFailed, IPlugin, PluginError, PluginEvent, PluginManager
from twisted_plugmgr.irc import (
    ADMIN_PACKAGE,
    BotPlugin,
    DuplicateCommand,
    IBot,
    IRCBot,
    NoBot,
    find_bot,
    make_bot_service,
)
from twisted_plugmgr.irc._interfaces import IConnectionOwner
from twisted_plugmgr.testing import EventRecorder, failure_of, result_of

OWNER = "alice!~al@trusted.example"
STRANGER = "mallory!~al@evil.example"

DICE = """
@command("roll", aliases=("r",), help="roll dice")
def roll(self, ctx):
    return f"{ctx.nick} rolled 4 {ctx.args}".strip()
"""

BOOM = """
@command("boom", help="fails")
def boom(self, ctx):
    return 1 / 0

@command("ok")
def ok(self, ctx):
    return "still here"
"""


class CountingManager(PluginManager):
    """
    A manager that records every event given to each registration of a
    listener: a listener registered twice would be given each event twice.

    @ivar deliveries: (listener, event), in order.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.deliveries: List[Tuple[Any, PluginEvent]] = []
        self.registrations: Dict[Any, List[Any]] = {}

    def register(self, listener: Any) -> None:
        def counted(event: PluginEvent) -> None:
            self.deliveries.append((listener, event))
            listener(event)

        self.registrations.setdefault(listener, []).append(counted)
        super().register(counted)

    def unregister(self, listener: Any) -> None:
        for counted in self.registrations.pop(listener, []):
            super().unregister(counted)

    def heard_by(self, owner: Any, plugin: str) -> List[str]:
        """
        The kinds of the events about C{plugin} given to the listeners
        that are methods of C{owner}.
        """
        return [event.kind for listener, event in self.deliveries
                if getattr(listener, "__self__", None) is owner and event.plugin == plugin]


# -- the bot's setup ------------------------------------------------------


def test_the_bot_provides_its_interfaces(harness):
    assert verifyObject(IBot, harness.bot)
    assert verifyObject(IConnectionOwner, harness.bot)


def test_bot_plugins_provide_iplugin(harness):
    harness.start()
    plugin = harness.load("dice", DICE)
    assert verifyObject(IPlugin, plugin)
    assert plugin.bot is harness.bot
    assert find_bot(harness.manager) is harness.bot


def test_a_bot_plugin_without_a_bot_fails_to_load(tmp_path, logged_failures):
    write_bot_plugin(tmp_path, "dice", DICE)
    from twisted.internet.task import Clock

    manager = PluginManager(paths=[str(tmp_path)], reactor=Clock())
    events = EventRecorder()
    manager.register(events)
    MultiService().addService(manager)
    manager.startService()
    failure = failure_of(manager.load("dice"))
    assert failure.value.failure.check(NoBot)
    assert failure.value.failure.value.plugin == "dice"
    assert "dice" not in manager.plugin_table()
    assert "plugin_init_failed" in events.kinds("dice")
    logged_failures.flush(InitFailed)


def test_make_bot_service_reads_the_irc_config(tmp_path):
    from twisted.internet.task import Clock

    from twisted_plugmgr._config import FloodConfig, IRCConfig

    manager = PluginManager(reactor=Clock())
    config = IRCConfig(server="tcp:host=127.0.0.1:port=6667", nick="plugbot",
                       channels=("#a", "#b"), owners=("alice!*@h",), prefix=".",
                       flood=FloodConfig(rate=2.0, burst=5), data_dir=str(tmp_path),
                       password="pw", username="pb", realname="Plug Bot")
    bot = make_bot_service(manager, config, Clock())
    assert isinstance(bot, IRCBot) and bot.name == "irc"
    assert (bot.nick, bot.channels, bot.prefix) == ("plugbot", ("#a", "#b"), ".")
    assert (bot.flood_rate, bot.flood_burst) == (2.0, 5)
    assert (bot.password, bot.username, bot.realname, bot.data_dir) == (
        "pw", "pb", "Plug Bot", str(tmp_path))
    assert bot.owners.patterns == ("alice!*@h",)
    assert "twisted_plugmgr.irc.plugins" in manager.packages


def test_make_bot_service_refuses_a_bare_nick_as_owner():
    from twisted.internet.task import Clock

    with pytest.raises(ValueError, match="nick!user@host"):
        make_bot_service(PluginManager(reactor=Clock()),
                         {"server": "tcp:localhost:6667", "nick": "b", "owners": ["alice"]},
                         Clock())


def test_make_bot_service_adds_the_admin_package_once():
    manager = PluginManager(packages=[ADMIN_PACKAGE], reactor=Clock())
    make_bot_service(manager, {"server": "tcp:localhost:6667", "nick": "b"}, Clock())
    assert list(manager.packages) == [ADMIN_PACKAGE]


def test_make_bot_service_without_admin_leaves_the_packages_alone():
    manager = PluginManager(reactor=Clock())
    make_bot_service(manager, {"server": "tcp:localhost:6667", "nick": "b"}, Clock(),
                     admin=False)
    assert list(manager.packages) == []


def test_a_refused_irc_config_leaves_the_packages_alone():
    manager = PluginManager(reactor=Clock())
    with pytest.raises(ValueError):
        make_bot_service(manager, {"server": "tcp:localhost:6667", "nick": "b",
                                   "flood": {"rate": 0}}, Clock())
    assert list(manager.packages) == []


# -- dispatch -------------------------------------------------------------


def test_prefixed_command_in_a_channel_is_answered_there(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.say("!roll 2d6")
    assert harness.said() == ["PRIVMSG #chan :carol rolled 4 2d6"]


def test_alias_and_addressed_forms(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.say("!R")
    harness.say("bot: roll 1d4")
    harness.say("Bot, !roll")
    assert harness.said() == [
        "PRIVMSG #chan :carol rolled 4",
        "PRIVMSG #chan :carol rolled 4 1d4",
        "PRIVMSG #chan :carol rolled 4",
    ]


def test_private_command_is_answered_in_private(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.say("roll 3d6", target="bot")
    assert harness.said() == ["PRIVMSG carol :carol rolled 4 3d6"]


def test_chatter_and_unknown_commands_get_no_answer(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.say("hello everyone")
    harness.say("!nosuchcommand")
    harness.feed(":carol!~c@h NOTICE #chan :!roll")  # never answer a notice
    assert harness.said() == []


def test_rules_see_lines_and_get_the_match(harness):
    harness.start()
    harness.load("greet", """
@rule(r"\\bhello (\\w+)")
def greet(self, ctx):
    return f"hi {ctx.nick}, not {ctx.match.group(1)}"
""")
    harness.say("well hello world")
    harness.say("nothing here")
    assert harness.said() == ["PRIVMSG #chan :hi carol, not world"]


def test_message_handlers_get_every_line_commands_included(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.load("log", """
def __init__(self, api, data=None):
    super().__init__(api, data)
    self.lines = []

@on("message")
def message(self, ctx):
    self.lines.append((ctx.nick, ctx.channel, ctx.text))
""")
    harness.say("hi")
    harness.say("!roll")
    harness.say("psst", target="bot")
    plugin = harness.plugin("log")
    assert plugin.lines == [("carol", "#chan", "hi"), ("carol", "#chan", "!roll"),
                            ("carol", None, "psst")]


def test_irc_events_reach_their_handlers_with_the_full_sender(harness):
    harness.start()
    harness.load("watch", """
def __init__(self, api, data=None):
    super().__init__(api, data)
    self.seen = []

@on("join")
@on("part")
@on("kick")
@on("nick")
@on("topic")
@on("quit")
@on("action")
def happened(self, ctx):
    self.seen.append((ctx.kind, str(ctx.sender), ctx.channel, ctx.text, ctx.kicked,
                      ctx.new_nick))
""")
    harness.feed(
        ":dave!~d@h.example JOIN #chan",
        ":dave!~d@h.example PART #chan :bye",
        ":op!~o@h KICK #chan dave :out",
        ":dave!~d@h.example NICK :david",
        ":op!~o@h TOPIC #chan :new topic",
        ":dave!~d@h.example QUIT :gone",
        ":dave!~d@h.example PRIVMSG #chan :\x01ACTION waves\x01",
    )
    seen = harness.plugin("watch").seen
    assert seen == [
        ("join", "dave!~d@h.example", "#chan", "", None, None),
        ("part", "dave!~d@h.example", "#chan", "bye", None, None),
        ("kick", "op!~o@h", "#chan", "out", "dave", None),
        ("nick", "dave!~d@h.example", None, "", None, "david"),
        ("topic", "op!~o@h", "#chan", "new topic", None, None),
        ("quit", "dave!~d@h.example", None, "gone", None, None),
        ("action", "dave!~d@h.example", "#chan", "waves", None, None),
    ]


def test_reply_helpers(harness):
    harness.start()
    harness.load("talk", """
@command("talk")
def talk(self, ctx):
    ctx.reply("one")
    ctx.msg("dave", "two")
    ctx.notice("#chan", "three")
    ctx.action("#chan", "waves")
""")
    harness.say("!talk")
    assert harness.said() == [
        "PRIVMSG #chan :one", "PRIVMSG dave :two", "NOTICE #chan :three",
        "PRIVMSG #chan :\x01ACTION waves\x01",
    ]


def test_deferred_answers_are_replied_when_they_fire(harness):
    harness.start()
    harness.load("slow", """
@command("slow")
def slow(self, ctx):
    from twisted.internet.task import deferLater
    return deferLater(self.api.reactor, 5, lambda: "done")
""")
    harness.say("!slow")
    assert harness.said() == []
    harness.clock.advance(5)
    assert harness.said() == ["PRIVMSG #chan :done"]


# -- failures -------------------------------------------------------------


def test_a_failing_command_answers_the_caller_and_the_bot_keeps_serving(harness, logged_failures):
    harness.start()
    harness.load("boom", BOOM)
    harness.say("!boom")
    assert harness.said() == ["NOTICE carol :!boom failed: ZeroDivisionError in plugin boom"]
    errors = harness.events.of("plugin_error")
    assert [(e.plugin, e.failure.type) for e in errors] == [("boom", ZeroDivisionError)]
    assert len(logged_failures.flush(ZeroDivisionError)) == 1
    harness.say("!ok")
    assert harness.said() == ["PRIVMSG #chan :still here"]
    assert harness.proto.transport.connected


def test_a_failing_rule_does_not_stop_the_other_rules(harness, logged_failures):
    harness.start()
    harness.load("bad", """
@rule("x")
def bad(self, ctx):
    raise RuntimeError("no")
""")
    harness.load("good", """
@rule("x")
def good(self, ctx):
    return "x seen"
""")
    harness.say("x")
    said = harness.said()
    assert "PRIVMSG #chan :x seen" in said
    assert "NOTICE carol :your message failed: RuntimeError in plugin bad" in said
    logged_failures.flush(RuntimeError)


def test_a_bad_target_from_a_plugin_sends_nothing(harness, logged_failures):
    harness.start()
    harness.load("evil", """
@command("evil")
def evil(self, ctx):
    ctx.msg("#chan\\r\\nQUIT", "bye")
""")
    harness.say("!evil")
    assert harness.said() == ["NOTICE carol :!evil failed: ValueError in plugin evil"]
    logged_failures.flush(ValueError)


def test_cr_lf_in_plugin_output_never_makes_a_second_command(harness):
    harness.start()
    harness.load("inject", """
@command("inject")
def inject(self, ctx):
    return "hello\\r\\nQUIT :bye\\rJOIN #evil\\nPART #chan\\x00x"
""")
    harness.say("!inject")
    assert harness.said() == [
        "PRIVMSG #chan :hello", "PRIVMSG #chan :QUIT :bye",
        "PRIVMSG #chan :JOIN #evil", "PRIVMSG #chan :PART #chanx",
    ]


def test_long_replies_are_split_to_fit(harness):
    harness.start()
    harness.load("long", """
@command("long")
def long(self, ctx):
    return "é" * 600
""")
    harness.say("!long")
    lines = harness.take()
    assert len(lines) == 3
    for line in lines:
        assert len(b":" + BOT_MASK.encode() + b" " + line + b"\r\n") <= 512
    assert "".join(line.decode().split(" :", 1)[1] for line in lines) == "é" * 600


# -- the command index, kept current ---------------------------------------


def test_two_plugins_claiming_a_command_the_second_fails_naming_both(harness, logged_failures):
    harness.start()
    harness.load("dice", DICE)
    write_bot_plugin(harness.dir, "clash", """
@command("r")
def mine(self, ctx):
    return "mine"
""")
    failure = failure_of(harness.manager.load("clash"))
    cause = failure.value.failure
    assert cause.check(DuplicateCommand)
    assert (cause.value.plugin, cause.value.other, cause.value.command) == ("clash", "dice", "r")
    assert "'clash'" in str(failure.value) and "'dice'" in str(failure.value)
    assert "plugin_init_failed" in harness.events.kinds("clash")
    # nothing of clash is left; dice still answers
    assert "clash" not in harness.manager.plugin_table()
    assert "clash" not in harness.bot.index
    harness.say("!r")
    assert harness.said() == ["PRIVMSG #chan :carol rolled 4"]
    logged_failures.flush()


def test_unload_removes_the_commands(harness):
    harness.start()
    harness.load("dice", DICE)
    result_of(harness.manager.unload("dice"))
    assert harness.bot.index.lookup("roll") is None
    harness.say("!roll")
    assert harness.said() == []


def test_reload_swaps_the_commands_in_one_step(harness):
    harness.start()
    harness.load("dice", DICE)
    write_bot_plugin(harness.dir, "dice", """
@command("throw", help="new")
def throw(self, ctx):
    return "thrown"
""", version="2.0")
    result_of(harness.manager.reload("dice"))
    assert harness.bot.index.lookup("roll") is None
    harness.say("!roll")
    harness.say("!throw")
    assert harness.said() == ["PRIVMSG #chan :thrown"]


def test_a_reload_that_would_clash_is_rolled_back(harness, logged_failures):
    harness.start()
    harness.load("dice", DICE)
    harness.load("other", """
@command("flip")
def flip(self, ctx):
    return "heads"
""")
    write_bot_plugin(harness.dir, "other", """
@command("roll")
def flip(self, ctx):
    return "stolen"
""", version="2.0")
    failure_of(harness.manager.reload("other"))
    harness.say("!roll")
    harness.say("!flip")
    assert harness.said() == ["PRIVMSG #chan :carol rolled 4", "PRIVMSG #chan :heads"]
    logged_failures.flush()


def test_the_bot_hears_each_plugin_event_once_while_it_runs(tmp_path):
    h = BotHarness(tmp_path, admin=False, manager_class=CountingManager)
    h.start()
    h.load("dice", DICE)
    result_of(h.manager.unload("dice"))
    heard = h.manager.heard_by(h.bot, "dice")
    assert "plugin_unloaded" in heard
    assert heard == h.events.kinds("dice")  # the recorder is registered once
    h.stop_bot()
    h.manager.deliveries.clear()
    h.load("dice")
    result_of(h.manager.unload("dice"))
    assert h.manager.heard_by(h.bot, "dice") == []
    h.start_bot()
    h.events.clear()
    h.load("dice")
    result_of(h.manager.unload("dice"))
    assert h.manager.heard_by(h.bot, "dice") == h.events.kinds("dice")
    h.stop()
    assert not h.clock.getDelayedCalls()


def test_commands_of_a_plugin_unloaded_while_the_bot_was_stopped_are_gone(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.stop_bot()
    result_of(harness.manager.unload("dice"))
    harness.start_bot()
    assert "dice" not in harness.bot.index
    assert harness.bot.index.lookup("roll") is None
    harness.say("!roll")
    assert harness.said() == []


def test_a_bot_plugin_kept_while_the_bot_was_stopped_still_answers(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.stop_bot()
    harness.start_bot()
    harness.say("!roll")
    assert harness.said() == ["PRIVMSG #chan :carol rolled 4"]


def test_one_lookup_whatever_the_number_of_plugins(harness):
    harness.start()
    for i in range(30):
        harness.load(f"p{i}", f"""
@command("c{i}")
def c(self, ctx):
    return "{i}"
""")
    harness.say("!c17")
    assert harness.said() == ["PRIVMSG #chan :17"]
    calls = {name: info.calls for name, info in harness.manager.plugin_table().items()}
    assert calls["p17"] == 1
    assert sum(calls.values()) == 1


# -- admin ----------------------------------------------------------------


def test_help_lists_and_describes_commands(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.say("!help")
    harness.say("!help r")
    harness.say("!help nope")
    assert harness.said() == [
        "PRIVMSG #chan :commands: !help, !ignore, !load, !plugins, !reload, !roll, "
        "!unignore, !unload, !whoami (!help COMMAND for more)",
        "PRIVMSG #chan :!roll (also !r): roll dice [plugin dice]",
        "PRIVMSG #chan :no command !nope",
    ]


def test_owner_loads_reloads_and_unloads(harness):
    harness.start()
    write_bot_plugin(harness.dir, "dice", DICE)
    harness.say("!load dice", sender=OWNER)
    assert harness.said() == ["PRIVMSG #chan :loaded dice 1.0"]
    write_bot_plugin(harness.dir, "dice", """
@command("roll")
def roll(self, ctx):
    return "new code"
""", version="2.0")
    harness.say("!reload dice", sender=OWNER)
    assert harness.said() == ["PRIVMSG #chan :reloaded dice 2.0"]
    harness.say("!roll")
    assert harness.said() == ["PRIVMSG #chan :new code"]
    harness.say("!unload dice immediate", sender=OWNER)
    assert harness.said() == ["PRIVMSG #chan :unloaded dice: unloaded by alice"]
    assert "dice" not in harness.manager.plugin_table()


@pytest.mark.parametrize("command", ["!load dice", "!reload dice", "!unload dice",
                                     "!unload irc_admin"])
def test_non_owners_are_refused_and_nothing_happens(harness, command):
    harness.start()
    harness.load("dice", DICE)
    before = harness.manager.plugin_table()
    harness.events.clear()
    harness.say(command, sender=STRANGER)
    verb = command.split()[0][1:]
    assert harness.said() == [f"NOTICE mallory :mallory: !{verb} needs the owner permission"]
    after = harness.manager.plugin_table()
    assert after.keys() == before.keys()
    assert [i.reloads for i in after.values()] == [i.reloads for i in before.values()]
    assert set(harness.events.kinds()) <= {"plugin_table"}


def test_the_owners_nick_from_another_host_is_refused(harness):
    harness.start()
    write_bot_plugin(harness.dir, "dice", DICE)
    harness.say("!load dice", sender="alice!~al@evil.example")
    assert harness.said() == ["NOTICE alice :alice: !load needs the owner permission"]
    assert "dice" not in harness.manager.plugin_table()


def test_admin_failures_are_short_answers(harness, logged_failures):
    harness.start()
    harness.say("!load nosuch", sender=OWNER)
    harness.say("!load ../etc", sender=OWNER)
    harness.say("!unload nosuch", sender=OWNER)
    harness.say("!unload irc_admin", sender=OWNER)
    harness.say("!unload x sideways", sender=OWNER)
    harness.say("!load", sender=OWNER)
    said = harness.said()
    assert said[0].startswith("PRIVMSG #chan :load of nosuch failed: no such plugin")
    assert said[1].startswith("PRIVMSG #chan :load of ../etc failed: invalid plugin name")
    assert said[2].startswith("PRIVMSG #chan :unload of nosuch failed: no such plugin")
    assert said[3] == "PRIVMSG #chan :irc_admin cannot be unloaded from IRC (reload it instead)"
    assert said[4].startswith("PRIVMSG #chan :invalid shutdown mode 'sideways'")
    assert said[5] == "PRIVMSG #chan :usage: !load NAME"
    assert all(len(line) < 400 for line in said)
    logged_failures.flush()


def test_plugins_table(harness):
    harness.start()
    harness.load("dice", DICE)
    harness.say("!plugins")
    assert harness.said() == [
        "PRIVMSG #chan :2 plugins: dice 1.0 (running), irc_admin 1.0 (running)"]


class TroubledManager(PluginManager):
    """
    A manager whose plugin table shows the restarts and last failures of
    C{troubles} (name -> (restarts, last failure)).
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.troubles: Dict[str, Tuple[int, Optional[str]]] = {}

    def plugin_table(self) -> Dict[str, Any]:
        table = super().plugin_table()
        return {name: attr.evolve(info, restarts=self.troubles[name][0],
                                  last_failure=self.troubles[name][1])
                if name in self.troubles else info for name, info in table.items()}


@pytest.fixture
def troubled(tmp_path):
    h = BotHarness(tmp_path, manager_class=TroubledManager)
    yield h
    h.stop()
    assert not h.clock.getDelayedCalls(), h.clock.getDelayedCalls()


@pytest.mark.parametrize("trouble, line", [
    ((2, "ValueError: boom"), "dice: 2 restarts, last failure: ValueError: boom"),
    ((1, None), "dice: 1 restart"),
    ((0, "ValueError: boom"), "dice: 0 restarts, last failure: ValueError: boom"),
], ids=["both", "restarts", "failure"])
def test_plugins_shows_restarts_and_the_last_failure(troubled, trouble, line):
    troubled.start()
    troubled.load("dice", DICE)
    troubled.manager.troubles["dice"] = trouble
    troubled.say("!plugins")
    assert troubled.said() == [
        "PRIVMSG #chan :2 plugins: dice 1.0 (running), irc_admin 1.0 (running)",
        f"PRIVMSG #chan :{line}"]


def test_plugins_shows_one_line_per_troubled_plugin_in_name_order(troubled):
    troubled.start()
    troubled.load("dice", DICE)
    troubled.load("boom", BOOM)
    troubled.manager.troubles.update({"dice": (1, None), "boom": (3, "ZeroDivisionError: x")})
    troubled.say("!plugins")
    assert troubled.said()[1:] == [
        "PRIVMSG #chan :boom: 3 restarts, last failure: ZeroDivisionError: x",
        "PRIVMSG #chan :dice: 1 restart"]


def test_a_long_failure_is_cut_to_one_irc_line(troubled):
    troubled.start()
    troubled.load("dice", DICE)
    failure = "RuntimeError: " + "ça a échoué\n" * 300
    troubled.manager.troubles["dice"] = (4, failure)
    troubled.say("!plugins")
    said = troubled.said()
    assert len(said) == 2
    line = said[1]
    assert line.startswith("PRIVMSG #chan :dice: 4 restarts, last failure: RuntimeError: "
                           "ça a échoué ça a")
    assert line.endswith("...")
    assert len(line.encode("utf-8")) <= 320


CRASHY = """
@command("crash")
def crash(self, ctx):
    self.api.fail("crashed")
"""


def test_plugins_shows_what_the_supervisor_did(harness, logged_failures):
    harness.start()
    write_bot_plugin(harness.dir, "crashy", CRASHY)
    result_of(harness.manager.load("crashy", restart_delay=1, restart_burst=1))
    harness.say("!crash")
    harness.clock.advance(1)
    harness.say("!plugins")
    failure = "PluginError: plugin 'crashy': plugin error: crashed"
    assert harness.said() == [
        "PRIVMSG #chan :2 plugins: crashy 1.0 (running), irc_admin 1.0 (running)",
        f"PRIVMSG #chan :crashy: 1 restart, last failure: {failure}"]
    harness.say("!crash")
    harness.say("!plugins")
    assert harness.said() == [
        "PRIVMSG #chan :2 plugins: crashy 1.0 (quarantined), irc_admin 1.0 (running)",
        f"PRIVMSG #chan :crashy: 1 restart, last failure: {failure}"]
    logged_failures.flush(PluginError)


# -- flood control and connections ------------------------------------------


def test_a_lost_connection_drops_the_queue_and_reconnects(tmp_path):
    h = BotHarness(tmp_path, flood_rate=1.0, flood_burst=1)
    h.start()
    first = h.proto
    h.bot.msg("#chan", "a\nb\nc")
    assert len(first.queue) > 0
    h.lose()
    assert len(first.queue) == 0
    assert h.bot.connection is None
    h.bot.msg("#chan", "nobody hears this")  # dropped, no error
    fresh = h.bot.when_signed_on(fresh=True)
    h.clock.advance(5)  # the retry policy's first delay
    assert h.proto is not first
    assert not fresh.called
    h.welcome()
    assert h.bot.sign_ons == 2
    assert result_of(fresh) is h.bot.connection
    assert result_of(h.bot.when_signed_on()) is h.bot.connection
    h.stop()


def test_stopping_says_quit_first(harness):
    harness.start()
    transport = harness.proto.transport
    harness.stop()
    assert transport.value().startswith(b"QUIT :shutting down\r\n")
    assert harness.bot.connection is None


def test_bot_plugin_is_a_plugin():
    assert issubclass(BotPlugin, __import__("twisted_plugmgr").Plugin)
