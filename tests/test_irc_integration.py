"""
The bot against a real IRC server (ngircd; Twisted's own server when
ngircd is missing, with a warning), over real loopback sockets: a test user
talks to the bot in a channel and in private, reloads a changed plugin as
an owner (and is refused as a stranger), restarts the server, and checks
long replies and CR/LF in plugin output.
"""

from __future__ import annotations

import textwrap

import pytest
import pytest_twisted
from irc_server import connect_client, start_server
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from twisted_plugmgr import CompileFailed, PluginManager
from twisted_plugmgr.irc import ADMIN_PACKAGE, make_bot_service

CHANNEL = "#test"
BOT = "plugbot"

GREET_V1 = '''
from twisted_plugmgr.irc import BotPlugin, command

class Greet(BotPlugin):
    name = "greet"
    version = "{version}"
    longname = "greets"
    license = "MIT"
    author = "tests"

    @command("greet")
    def greet(self, ctx):
        return "{text} " + ctx.nick

    @command("long")
    def long(self, ctx):
        return LONG

    @command("inject")
    def inject(self, ctx):
        return "before\\r\\nQUIT :injected\\r\\nafter"

    @command("boom")
    def boom(self, ctx):
        raise KeyError("boom")

LONG = " ".join(("word%d é😀" % i) for i in range(120))
'''

LONG = " ".join(f"word{i} é😀" for i in range(120))


def write_greet(directory, version="1.0", text="hello"):
    (directory / "greet.py").write_text(
        textwrap.dedent(GREET_V1).replace("{version}", version).replace("{text}", text)
    )


class Env:
    """
    Server, manager, bot, and the test user alice in the channel.
    """


@pytest_twisted.async_yield_fixture
async def irc_env(tmp_path):
    e = Env()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    write_greet(plugins)
    e.plugins = plugins
    e.server = await start_server(reactor, tmp_path)
    print(f"IRC server used: {e.server.kind}")
    host = "127.0.0.1" if e.server.kind == "ngircd" else "irc.plugmgr.test"
    e.owner_mask = f"alice!*@{host}"
    e.alice = await connect_client(reactor, e.server, "alice")
    await e.alice.join_channel(CHANNEL)
    e.manager = PluginManager(packages=[ADMIN_PACKAGE], paths=[str(plugins)], reactor=reactor)
    config = {
        "server": e.server.endpoint, "nick": BOT, "channels": [CHANNEL],
        "owners": [e.owner_mask], "prefix": "!", "flood": {"rate": 50.0, "burst": 50},
        "password": e.server.password,
    }
    e.bot = make_bot_service(e.manager, config, reactor, retry_policy=lambda attempt: 0.1)
    e.parent = MultiService()
    e.manager.setServiceParent(e.parent)
    e.bot.setServiceParent(e.parent)
    mark = len(e.alice.messages)
    e.parent.startService()
    await e.alice.wait_for(lambda m: m[1] == "JOIN" and m[0].startswith(BOT + "!"), since=mark)
    await e.manager.load("greet")
    e.clients = [e.alice]
    yield e
    await e.parent.stopService()
    for client in e.clients:
        if client.transport.connected:
            client.transport.loseConnection()
            await client.lost
    await e.server.stop()


async def ask(client, text, target=CHANNEL, sender=BOT, **kw):
    """
    Say C{text} to C{target}; return the text of the bot's next PRIVMSG
    (to the channel, or to the client in private).
    """
    where = target if target.startswith("#") else client.nickname
    waiting = client.wait_privmsg(sender, where, **kw)
    client.say(target, text)
    _, _, params = await waiting
    return params[-1]


@pytest_twisted.ensureDeferred
async def test_commands_are_answered_in_the_channel_and_in_private(irc_env):
    assert await ask(irc_env.alice, "!greet") == "hello alice"
    assert await ask(irc_env.alice, f"{BOT}: greet") == "hello alice"
    assert await ask(irc_env.alice, "greet", target=BOT) == "hello alice"


@pytest_twisted.ensureDeferred
async def test_owner_reloads_a_changed_plugin_without_reconnecting(irc_env):
    connection = irc_env.bot.connection
    assert await ask(irc_env.alice, "!greet") == "hello alice"
    write_greet(irc_env.plugins, version="2.0", text="bonjour")
    assert await ask(irc_env.alice, "!reload greet") == "reloaded greet 2.0"
    assert await ask(irc_env.alice, "!greet") == "bonjour alice"
    assert irc_env.bot.connection is connection
    assert irc_env.bot.sign_ons == 1


@pytest_twisted.ensureDeferred
async def test_non_owner_is_refused_and_nothing_happens(irc_env):
    mallory = await connect_client(reactor, irc_env.server, "mallory")
    irc_env.clients.append(mallory)
    await mallory.join_channel(CHANNEL)
    write_greet(irc_env.plugins, version="2.0", text="pwned")
    refused = mallory.wait_notice(BOT)
    mallory.say(CHANNEL, "!reload greet")
    assert (await refused)[2][-1] == "mallory: !reload needs the owner permission"
    # Told once a minute: the next refusal is silent, and greet still answers.
    mallory.say(CHANNEL, "!unload greet")
    assert await ask(mallory, "!greet") == "hello mallory"
    assert mallory.notices_from(BOT) == ["mallory: !reload needs the owner permission"]
    assert irc_env.manager.plugin_table()["greet"].reloads == 0


@pytest_twisted.ensureDeferred
async def test_bot_reconnects_after_the_server_restarts(irc_env):
    await irc_env.server.restart()
    await irc_env.alice.lost
    # The bot may not have seen its connection close yet: wait for a new
    # sign-on (checked and awaited in one step, so none is missed).
    if irc_env.bot.sign_ons < 2:
        signed_on = irc_env.bot.when_signed_on(fresh=True)
        signed_on.addTimeout(10, reactor)
        await signed_on
    assert irc_env.bot.sign_ons == 2
    alice = await connect_client(reactor, irc_env.server, "alice")
    irc_env.clients.append(alice)
    mark = len(alice.messages)
    await alice.join_channel(CHANNEL)
    # The bot rejoins on its own; whoever joined second sees the other's JOIN
    # or the NAMES list holding it.
    await alice.wait_for(
        lambda m: (m[1] == "JOIN" and m[0].startswith(BOT + "!"))
        or (m[1] == "RPL_NAMREPLY" and BOT in [n.lstrip("@+%&~") for n in m[2][-1].split()]),
        since=mark,
    )
    assert await ask(alice, "!greet") == "hello alice"


@pytest_twisted.ensureDeferred
async def test_a_reply_over_512_bytes_arrives_split_and_whole(irc_env):
    mark = len(irc_env.alice.messages)
    got = []

    def complete(message):
        prefix, command, params = message
        if command == "PRIVMSG" and prefix.startswith(BOT + "!"):
            got.append((prefix, params))
        return " ".join(p[-1] for _, p in got) == LONG

    waiting = irc_env.alice.wait_for(complete, since=mark)
    irc_env.alice.say(CHANNEL, "!long")
    await waiting
    assert len(got) > 1
    for prefix, params in got:
        relayed = f":{prefix} PRIVMSG {params[0]} :{params[-1]}\r\n".encode()
        assert len(relayed) <= 512


@pytest_twisted.ensureDeferred
async def test_cr_lf_quit_in_plugin_output_does_not_disconnect(irc_env):
    mark = len(irc_env.alice.messages)
    irc_env.alice.say(CHANNEL, "!inject")
    await irc_env.alice.wait_privmsg(BOT, CHANNEL, "after")
    texts = [m[2][-1] for m in irc_env.alice.messages[mark:]
             if m[1] == "PRIVMSG" and m[0].startswith(BOT + "!")]
    assert texts == ["before", "QUIT :injected", "after"]
    assert not any(m[1] == "QUIT" and m[0].startswith(BOT + "!")
                   for m in irc_env.alice.messages[mark:])
    assert await ask(irc_env.alice, "!greet") == "hello alice"
    assert irc_env.bot.sign_ons == 1


@pytest_twisted.ensureDeferred
async def test_a_failing_command_gets_a_short_error_and_the_bot_keeps_serving(irc_env, logged_failures):
    if irc_env.server.kind == "twisted":
        pytest.skip("Twisted's IRC server does not relay NOTICE")
    waiting = irc_env.alice.wait_for(lambda m: m[1] == "NOTICE" and m[0].startswith(BOT + "!"))
    irc_env.alice.say(CHANNEL, "!boom")
    _, _, params = await waiting
    assert params == ["alice", "!boom failed: KeyError in plugin greet"]
    assert len(logged_failures.flush(KeyError)) == 1
    assert await ask(irc_env.alice, "!greet") == "hello alice"


@pytest.mark.parametrize("mode", ["twisted"])
@pytest_twisted.ensureDeferred
async def test_twisted_fallback_server_serves_the_bot(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("PLUGMGR_IRC_SERVER", "twisted")
    with pytest.warns(UserWarning, match="Twisted's own IRC server"):
        server = await start_server(reactor, tmp_path)
    assert server.kind == "twisted"
    alice = await connect_client(reactor, server, "alice")
    await alice.join_channel(CHANNEL)
    manager = PluginManager(packages=[ADMIN_PACKAGE], reactor=reactor)
    bot = make_bot_service(manager, {"server": server.endpoint, "nick": BOT,
                                     "channels": [CHANNEL], "password": server.password},
                           reactor)
    parent = MultiService()
    manager.setServiceParent(parent)
    bot.setServiceParent(parent)
    mark = len(alice.messages)
    parent.startService()
    try:
        await alice.wait_for(lambda m: m[1] == "JOIN" and m[0].startswith(BOT + "!"), since=mark)
        answer = await ask(alice, "!help help")
        assert answer.startswith("!help: ")
    finally:
        await parent.stopService()
        alice.transport.loseConnection()
        await alice.lost
        await server.stop()


async def until(predicate, seconds=10.0):
    """
    Wait (on the reactor, a few milliseconds at a time) until C{predicate()}.
    """
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("gave up waiting")


@pytest_twisted.ensureDeferred
async def test_owner_is_told_in_private_when_a_save_breaks_a_plugin(irc_env, logged_failures):
    # alice joined before the bot: it knows her from its WHO of the channel.
    await until(lambda: irc_env.bot.owner_nicks() == ["alice"])
    (irc_env.plugins / "greet.py").write_text("import json\njson.loads('{')\n")
    waiting = irc_env.alice.wait_privmsg(BOT, "alice")
    outcome = await irc_env.manager.reload_changed()
    assert outcome["greet"].check(CompileFailed)
    _, _, params = await waiting
    assert params[-1].startswith("greet did not reload after its file changed: module failed "
                                 "to import: ")
    assert "JSONDecodeError" in params[-1]
    assert await ask(irc_env.alice, "!greet") == "hello alice"  # the old version serves
    write_greet(irc_env.plugins, version="2.0", text="hi again")
    waiting = irc_env.alice.wait_privmsg(BOT, "alice")
    await irc_env.manager.reload_changed()
    _, _, params = await waiting
    assert params[-1] == "greet works again: reloaded (version 2.0)"
    assert await ask(irc_env.alice, "!greet") == "hi again alice"
    logged_failures.flush(CompileFailed)


@pytest_twisted.ensureDeferred
async def test_reconnect_line_names_the_server_and_why(irc_env):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        await irc_env.server.stop()
        await until(lambda: any("connection refused" in formatEvent(e) for e in logged))
        await irc_env.server.start()
        await until(lambda: irc_env.bot.sign_ons == 2)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    lines = [formatEvent(e) for e in logged
             if str(e.get("log_namespace", "")).startswith("twisted_plugmgr.irc")]
    address = f"127.0.0.1 port {irc_env.server.port}"
    assert any(line.startswith(f"IRC server {address}: connection lost: ") for line in lines), lines
    assert f"IRC server {address}: connection refused; reconnecting in 0.1 s (attempt 2)" in lines
    assert f"IRC server {address}: signed on as {BOT}" in lines
    assert not any("Scheduling retry" in formatEvent(e) for e in logged)
