"""
The bot on real servers (ngircd, over loopback; see L{irc_server}):
several networks in one process (two servers on two ports), a network
whose port refuses connections while the other serves, the per-user rate
limit then ignore, and a plugin disabled in one channel answering in
another.
"""

from __future__ import annotations

import pytest_twisted
from irc_server import TIMEOUT, connect_client, free_port, start_server
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from twisted_plugmgr import PluginManager
from twisted_plugmgr.irc import make_bot_service

BOT = "netbot"

PLUGIN = '''
from twisted_plugmgr.irc import BotPlugin, command


class Where(BotPlugin):
    name = "where"
    version = "1.0"
    longname = "where"
    license = "MIT"
    author = "tests"

    @command("where")
    def where(self, ctx):
        return f"{ctx.nick} on {ctx.network}"

    @command("relay")
    def relay(self, ctx):
        other = [name for name in sorted(self.bots) if name != ctx.network][0]
        self.bots[other].msg("#net", f"{ctx.nick} on {ctx.network} says {ctx.args}")
'''


@pytest_twisted.async_yield_fixture(scope="module")
async def servers(tmp_path_factory):
    one = await start_server(reactor, tmp_path_factory.mktemp("one"))
    try:
        two = await start_server(reactor, tmp_path_factory.mktemp("two"))
        try:
            yield one, two
        finally:
            await two.stop()
    finally:
        await one.stop()


class Running:
    def __init__(self, tmp_path, config):
        plugins = tmp_path / "plugins"
        plugins.mkdir(parents=True)
        (plugins / "where.py").write_text(PLUGIN)
        self.manager = PluginManager(paths=[str(plugins)], reactor=reactor)
        self.bot = make_bot_service(self.manager, config, reactor,
                                    retry_policy=lambda attempt: 0.2)
        self.parent = MultiService()
        self.manager.setServiceParent(self.parent)
        self.bot.setServiceParent(self.parent)
        self.clients = []

    async def start(self, *networks):
        self.parent.startService()
        await self.manager.load("where")
        for name in networks:
            await self.bot.bots[name].when_signed_on().addTimeout(TIMEOUT, reactor)

    async def client(self, server, nick, *channels):
        client = await connect_client(reactor, server, nick)
        self.clients.append(client)
        for channel in channels:
            mark = len(client.messages)
            await client.join_channel(channel)
            await client.wait_for(lambda m, c=channel: bot_is_in(m, c), since=mark)
        return client

    async def stop(self):
        await self.parent.stopService()
        for client in self.clients:
            if client.transport.connected:
                client.transport.loseConnection()
                await client.lost


@pytest_twisted.async_yield_fixture
async def run(tmp_path):
    made = []

    def make(config):
        running = Running(tmp_path / str(len(made)), config)
        made.append(running)
        return running

    yield make
    for running in made:
        await running.stop()


def bot_is_in(message, channel):
    """
    Whether C{message} shows the bot in C{channel}: its C{JOIN}, or a
    C{NAMES} reply that lists it.
    """
    prefix, command, params = message
    if command == "JOIN":
        return prefix.startswith(BOT + "!") and params[-1] == channel
    return (command in ("RPL_NAMREPLY", "353") and params[-2] == channel
            and BOT in [name.lstrip("@+%") for name in params[-1].split()])


def base(server, **irc):
    return {"server": server.endpoint, "nick": BOT, "password": server.password,
            "flood": {"rate": 50.0, "burst": 50}, **irc}


async def ask(client, text, target="#net"):
    waiting = client.wait_privmsg(BOT, target if target.startswith("#") else client.nickname)
    client.say(target, text)
    _, _, params = await waiting
    return params[-1]


@pytest_twisted.ensureDeferred
async def test_two_networks_are_served_at_once_and_replies_go_back_where_they_came_from(
        servers, run):
    one, two = servers
    config = base(one, channels=["#net"], networks={
        "one": {"server": one.endpoint, "password": one.password},
        "two": {"server": two.endpoint, "password": two.password},
    })
    running = run(config)
    await running.start("one", "two")
    ann = await running.client(one, "ann", "#net")
    bob = await running.client(two, "bob", "#net")
    assert await ask(ann, "!where") == "ann on one"
    assert await ask(bob, "!where") == "bob on two"
    # self.bots: a plugin speaks on the other network.
    relayed = bob.wait_privmsg(BOT, "#net")
    ann.say("#net", "!relay hello")
    assert (await relayed)[2][-1] == "ann on one says hello"
    assert sorted(running.bot.bots) == ["one", "two"]


@pytest_twisted.ensureDeferred
async def test_a_network_that_refuses_connections_never_stops_the_others(servers, run):
    one, _ = servers
    dead = f"tcp:127.0.0.1:{free_port()}"
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        running = run(base(one, channels=["#net"], networks={
            "dead": {"server": dead}, "live": {"server": one.endpoint},
        }))
        await running.start("live")
        ann = await running.client(one, "ann2", "#net")
        assert await ask(ann, "!where") == "ann2 on live"
        refused: Deferred = Deferred()

        def watch(event):
            if not refused.called and "connection refused" in (formatEvent(event) or ""):
                refused.callback(None)

        globalLogPublisher.addObserver(watch)
        try:
            if not any("connection refused" in formatEvent(e) for e in logged):
                await refused.addTimeout(10, reactor)
        finally:
            globalLogPublisher.removeObserver(watch)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert running.bot.bots["dead"].sign_ons == 0
    port = dead.rsplit(":", 1)[1]
    assert any(f"port {port}" in formatEvent(e) and "connection refused" in formatEvent(e)
               for e in logged)


@pytest_twisted.ensureDeferred
async def test_a_user_who_floods_is_told_once_and_ignored(servers, run):
    one, _ = servers
    running = run(base(one, channels=["#net"], user_flood={"rate": 0.1, "burst": 2},
                       ignore_seconds=60))
    await running.start("default")
    eve = await running.client(one, "eve", "#net")
    assert await ask(eve, "!where") == "eve on default"
    assert await ask(eve, "!where") == "eve on default"
    told = eve.wait_notice(BOT)
    eve.say("#net", "!where")
    assert (await told)[2][-1] == "eve: too many commands too fast; ignoring you for 60 seconds"
    eve.say("#net", "!where")
    eve.say(BOT, "!where")
    # Another user is still answered; eve got nothing more.
    fay = await running.client(one, "fay", "#net")
    # Eve sees the answer to fay in the channel after whatever the bot sent
    # before it (one connection, in order): no fixed pause needed.
    seen = eve.wait_privmsg(BOT, "#net", "fay on default")
    assert await ask(fay, "!where") == "fay on default"
    await seen
    replies = [m for m in eve.messages if m[0].startswith(BOT + "!")
               and m[1] in ("PRIVMSG", "NOTICE")]
    assert len(replies) == 3 + 1  # two answers, the notice, fay's answer in the channel


@pytest_twisted.ensureDeferred
async def test_a_plugin_disabled_in_a_channel_is_silent_there_and_answers_in_another(
        servers, run):
    one, _ = servers
    running = run(base(one, channels=["#net", "#quiet"],
                       channel_plugins={"#quiet": {"disabled": ["where"]}}))
    await running.start("default")
    gus = await running.client(one, "gus", "#net", "#quiet")
    gus.say("#quiet", "!where")
    # The bot answers in order: an answer in #quiet would have come before
    # this one.
    assert await ask(gus, "!where", target="#net") == "gus on default"
    assert not [m for m in gus.messages if m[0].startswith(BOT + "!") and m[1] == "PRIVMSG"
                and m[2][0] == "#quiet"]
