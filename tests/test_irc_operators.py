"""
What the bot's operators see: owners told in private when a file change
broke a plugin and when it works again; one clear log line for a bad
C{!load}; reconnection lines naming the server's host and port and why.

On the fakes (a Clock, a fake server), and with a real socket nothing
listens on; the real IRC server's version is in test_irc_integration.
"""

from __future__ import annotations

import re
import socket
from typing import Any, Dict, List

import pytest
import pytest_twisted
from irc_fakes import BotHarness, write_bot_plugin
from twisted.application.service import MultiService
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from twisted_plugmgr import CompileFailed, PluginEvent, PluginManager
from twisted_plugmgr.irc import IRCBot
from twisted_plugmgr.irc._hostmask import HostmaskPatterns
from twisted_plugmgr.irc._notify import OwnerNotifier
from twisted_plugmgr.irc._people import People
from twisted_plugmgr.irc._reconnect import endpoint_address, why_failed
from twisted_plugmgr.testing import result_of

OWNER = "alice!~al@trusted.example"
STRANGER = "carol!~carol@elsewhere.example"

GOOD = """
@command("hi")
def hi(self, ctx):
    return "hi"
"""


class Lines:
    """
    Every log event, and the text of each.
    """

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []

    def __call__(self, event: Dict[str, Any]) -> None:
        self.events.append(event)

    def texts(self, namespace: str = "") -> List[str]:
        return [formatEvent(e) for e in self.events
                if str(e.get("log_namespace", "")).startswith(namespace)]


@pytest.fixture
def lines():
    observer = Lines()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def h(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    harness = BotHarness(plugins)
    yield harness
    harness.stop()
    assert not harness.clock.getDelayedCalls()


def privmsgs(said: List[str], nick: str) -> List[str]:
    prefix = f"PRIVMSG {nick} :"
    return [line[len(prefix):] for line in said if line.startswith(prefix)]


def reload_changed(h: BotHarness) -> Any:
    """
    What the watcher does on a save: reload the plugins whose files changed.
    """
    d = h.manager.reload_changed()
    h.clock.advance(0)
    return result_of(d)


def test_owner_seen_by_who_is_told_in_private_once_and_when_it_works_again(h, logged_failures):
    h.start()
    h.feed(":irc.test 352 bot #chan ~al trusted.example irc.test alice H :0 Alice",
           ":irc.test 352 bot #chan ~carol elsewhere.example irc.test carol H :0 Carol")
    h.load("greet", GOOD)
    h.said()
    write_bot_plugin(h.dir, "greet", GOOD + "\n    broken(", version="2.0")
    outcome = reload_changed(h)
    assert outcome["greet"].check(CompileFailed)
    said = h.said()
    [told] = privmsgs(said, "alice")
    assert told.startswith("greet did not reload after its file changed: module failed to import")
    assert "SyntaxError" in told and "greet.py" in told
    assert privmsgs(said, "carol") == [] and privmsgs(said, "#chan") == []
    # The same save seen again (a storm of events): nobody is told twice.
    (h.dir / "greet.py").write_text((h.dir / "greet.py").read_text() + "\n")
    reload_changed(h)
    assert privmsgs(h.said(), "alice") == []
    write_bot_plugin(h.dir, "greet", GOOD, version="3.0")
    reload_changed(h)
    assert privmsgs(h.said(), "alice") == ["greet works again: reloaded (version 3.0)"]
    assert h.manager.plugin_table()["greet"].version == "3.0"
    logged_failures.flush(CompileFailed)


def test_a_different_error_is_a_new_break(h, logged_failures):
    h.start()
    h.feed(f":{OWNER} JOIN #chan")
    h.load("greet", GOOD)
    write_bot_plugin(h.dir, "greet", GOOD, version="2.0", header="raise ValueError('one')\n")
    reload_changed(h)
    write_bot_plugin(h.dir, "greet", GOOD, version="2.0", header="raise ValueError('two')\n")
    reload_changed(h)
    told = privmsgs(h.said(), "alice")
    assert len(told) == 2 and "one" in told[0] and "two" in told[1]
    logged_failures.flush(CompileFailed)


def test_a_reload_someone_asked_for_tells_no_owner_in_private(h, logged_failures):
    h.start()
    h.feed(f":{OWNER} JOIN #chan")
    h.load("greet", GOOD)
    write_bot_plugin(h.dir, "greet", GOOD + "\n    broken(", version="2.0")
    h.said()
    h.say("!reload greet", sender=OWNER)
    h.clock.advance(0)
    said = h.said()
    assert privmsgs(said, "alice") == []
    [answer] = privmsgs(said, "#chan")
    assert answer.startswith("reload of greet failed")
    [event] = h.events.of("plugin_reload_failed")
    assert event.reason is None
    logged_failures.flush(CompileFailed)


def test_owners_who_left_are_not_told_and_a_renamed_one_is(h, logged_failures):
    h.start()
    h.feed(f":{OWNER} JOIN #chan", ":bob!~b@trusted.example JOIN #chan",
           ":bob!~b@trusted.example PART #chan :bye",
           f":{OWNER} NICK alice_away")
    # bob matches no pattern anyway; alice is now alice_away.
    h.bot.owners = HostmaskPatterns(["alice*!*@trusted.example", "bob!*@trusted.example"])
    assert h.bot.owner_nicks() == ["alice_away"]
    h.load("greet", GOOD)
    write_bot_plugin(h.dir, "greet", GOOD, version="2.0", header="1/0\n")
    reload_changed(h)
    said = h.said()
    assert len(privmsgs(said, "alice_away")) == 1
    assert privmsgs(said, "bob") == [] and privmsgs(said, "alice") == []
    h.feed(":alice_away!~al@trusted.example QUIT :gone")
    assert h.bot.owner_nicks() == []
    logged_failures.flush(CompileFailed)


def test_no_owner_in_sight_is_one_log_line(h, lines, logged_failures):
    h.start()
    h.load("greet", GOOD)
    write_bot_plugin(h.dir, "greet", GOOD, version="2.0", header="1/0\n")
    reload_changed(h)
    assert [t for t in lines.texts("twisted_plugmgr.irc") if "no owner" in t] == [
        "no owner of the bot in sight to tell: greet did not reload after its file changed: "
        "module failed to import: " + str(h.dir / "greet.py") + " (ZeroDivisionError: "
        "division by zero)"]
    assert privmsgs(h.said(), "alice") == []
    logged_failures.flush(CompileFailed)


def test_bad_load_over_irc_is_one_log_line_and_an_answer(h, lines, logged_failures):
    h.start()
    h.said()
    lines.events.clear()
    h.say("!load ../etc", sender=OWNER)
    h.say("!load nothing_here", sender=OWNER)
    h.clock.advance(0)
    answers = privmsgs(h.said(), "#chan")
    assert answers[0] == ("load of ../etc failed: invalid plugin name "
                          "(a plugin name is a Python identifier)")
    assert answers[1].startswith("load of nothing_here failed: no such plugin")
    about = [e for e in lines.events if e.get("plugin") in ("../etc", "nothing_here")]
    assert len(about) == 2
    for event in about:
        assert event.get("log_failure") is None and event["log_level"] == LogLevel.warn
        assert "\n" not in formatEvent(event)
    assert logged_failures.flush() == []
    assert set(h.manager.plugin_table()) == {"irc_admin"}


def test_people_follow_joins_parts_kicks_nicks_and_quits():
    people = People()
    people.joined("Alice!~al@trusted.example", "#a")
    people.joined("alice!~al@trusted.example", "#b")
    people.joined("nohost", "#a")  # a prefix without user and host: not a person
    assert len(people) == 1
    owners = HostmaskPatterns(["alice!*@trusted.example"])
    assert people.matching(owners) == ["alice"]
    people.left("ALICE", "#a")
    assert people.matching(owners) == ["alice"]
    people.bot_left("#b")
    assert people.matching(owners) == [] and len(people) == 0
    people.joined("alice!~al@trusted.example", "#a")
    people.renamed("alice", "alice2")
    assert people.get("alice") is None and people.get("ALICE2").nick == "alice2"
    people.spoke("alice2!~al@new.example", None)
    assert people.get("alice2").host == "new.example"
    people.spoke("stranger!~s@x.example", None)  # in private, no channel shared
    assert people.get("stranger") is None
    people.quit("alice2")
    assert len(people) == 0
    # As the bot feeds it: from its connection's events.
    people.follow("join", "alice!~al@trusted.example", "bot", channel="#a")
    people.follow("join", "bot!~bot@127.0.0.1", "bot", channel="#a")  # the bot itself
    assert people.matching(owners) == ["alice"] and len(people) == 1
    people.follow("kick", "op!~op@x.example", "bot", channel="#a", kicked="alice")
    assert len(people) == 0
    people.follow("message", "alice!~al@trusted.example", "bot", channel="#a")
    people.follow("nick", "alice!~al@trusted.example", "bot", new_nick="al")
    assert people.matching(HostmaskPatterns(["al!*@*"])) == ["al"]
    people.follow("part", "bot!~bot@127.0.0.1", "BOT", channel="#a")  # the bot left
    assert len(people) == 0


def test_notifier_ignores_other_events_and_forgets_unloaded_plugins():
    sent: List[Any] = []
    notifier = OwnerNotifier(lambda: ["alice"], lambda nick, text: sent.append((nick, text)))
    error = Failure(CompileFailed("p", "p.py"))
    notifier(PluginEvent(kind="plugin_reload_failed", plugin="p", failure=error))
    notifier(PluginEvent(kind="plugin_reloaded", plugin="p", new_version="2"))
    assert sent == []
    notifier(PluginEvent(kind="plugin_reload_failed", plugin="p", failure=error,
                         reason="source_changed"))
    assert notifier.broken("p") is not None
    notifier(PluginEvent(kind="plugin_unloaded", plugin="p"))
    assert notifier.broken("p") is None
    notifier(PluginEvent(kind="plugin_reloaded", plugin="p", new_version="2"))
    assert sent == [("alice", "p did not reload after its file changed: module failed to "
                              "import: p.py")]


def test_reconnect_line_after_a_lost_connection(h, lines):
    h.start()
    lines.events.clear()
    h.lose()
    texts = lines.texts("twisted_plugmgr.irc")
    [line] = [t for t in texts if "reconnecting" in t]
    assert re.fullmatch(
        re.escape(f"IRC server {endpoint_address(h.endpoint)}: connection lost: Connection was "
                  "closed cleanly.; reconnecting in ") + r"[0-9.]+ s \(attempt 1\)", line), line
    assert not [t for t in lines.texts() if "Scheduling retry" in t]
    h.clock.advance(5)  # the backoff's first delay, with its jitter
    h.welcome()
    assert "IRC server" in lines.texts("twisted_plugmgr.irc")[-1]
    assert lines.texts("twisted_plugmgr.irc")[-1].endswith("signed on as bot")


def test_endpoint_address_names_host_and_port():
    endpoint = TCP4ClientEndpoint(reactor, "irc.example", 6697)
    assert endpoint_address(endpoint) == "irc.example port 6697"
    from twisted.internet.endpoints import clientFromString

    assert endpoint_address(clientFromString(reactor, "tcp:host=10.0.0.1:port=6667")) == \
        "10.0.0.1 port 6667"
    assert endpoint_address(clientFromString(reactor, "unix:path=/run/irc.sock")) == \
        "unix socket /run/irc.sock"


def test_why_failed_in_a_few_words():
    from twisted.internet import error

    assert why_failed(Failure(error.ConnectionRefusedError())) == "connection refused"
    assert why_failed(Failure(error.DNSLookupError("x"))) == "host not found"
    assert why_failed(Failure(error.TimeoutError())) == "timed out"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_reconnect_lines_on_a_port_nothing_listens_on(tmp_path, lines):
    port = _closed_port()
    manager = PluginManager(paths=[str(tmp_path)], reactor=reactor)
    bot = IRCBot(manager, TCP4ClientEndpoint(reactor, "127.0.0.1", port), "bot", reactor,
                 admin=False, retry_policy=lambda attempt: 0.01)
    parent = MultiService()
    manager.setServiceParent(parent)
    bot.setServiceParent(parent)
    parent.startService()
    try:
        for _ in range(500):
            if len([t for t in lines.texts("twisted_plugmgr.irc") if "reconnecting" in t]) >= 2:
                break
            await defer.Deferred(lambda d: None).addTimeout(0.01, reactor).addErrback(
                lambda f: None)
    finally:
        await parent.stopService()
    retries = [t for t in lines.texts("twisted_plugmgr.irc") if "reconnecting" in t]
    assert retries[:2] == [
        f"IRC server 127.0.0.1 port {port}: connection refused; reconnecting in 0.01 s "
        f"(attempt {n})" for n in (1, 2)]
    everything = "\n".join(lines.texts())
    assert "Scheduling retry" not in everything and "Endpoint object" not in everything
