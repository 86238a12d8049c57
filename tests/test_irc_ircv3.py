"""
The bot on a real IRCv3 network: InspIRCd 3 with Atheme services (started
once for this module, see L{irc_services}). Capability negotiation, SASL
PLAIN (success, failure, not required), accounts from the server
(C{account-tag}, C{account-notify}, C{extended-join}) and owners by
account.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from irc_server import TIMEOUT, connect_client
from irc_services import find_services, start_services
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from twisted_plugmgr import PluginManager
from twisted_plugmgr.irc import SASLFailed, make_bot_service

BOT = "plugbot"
BOT_PASSWORD = "bot-secret-1"
ALICE_PASSWORD = "alice-secret-1"
CHANNEL = "#v3"

PLUGIN = '''
from twisted_plugmgr.irc import BotPlugin, command, on


class Probe(BotPlugin):
    name = "probe"
    version = "1.0"
    longname = "probe"
    license = "MIT"
    author = "tests"

    @command("me")
    def me(self, ctx):
        return (f"account={ctx.account} network={ctx.network} "
                f"time={'time' in ctx.tags}")

    @on("join")
    def joined(self, ctx):
        if ctx.nick != ctx.bot.connection.nickname:
            ctx.notice(ctx.nick, f"joined: {ctx.nick} account={ctx.account}")

    @command("secret", needs="owner")
    def secret(self, ctx):
        return f"the secret, {ctx.nick}"
'''


@pytest_twisted.async_yield_fixture(scope="module")
async def services(tmp_path_factory):
    reason = find_services()
    if reason is not None:
        pytest.skip(reason)
    running = await start_services(reactor, tmp_path_factory.mktemp("ircv3"))
    try:
        await running.register(BOT, BOT_PASSWORD)
        await running.register("alice", ALICE_PASSWORD)
        yield running
    finally:
        await running.stop()


class Bot:
    """
    A manager and a bot on the real reactor, with the probe plugin.
    """

    def __init__(self, services, tmp_path, **irc):
        plugins = tmp_path / "plugins"
        plugins.mkdir(parents=True)
        (plugins / "probe.py").write_text(PLUGIN)
        self.manager = PluginManager(paths=[str(plugins)], reactor=reactor)
        config = {"server": services.endpoint, "nick": BOT, "channels": [CHANNEL],
                  "owners": ["account:alice"], "flood": {"rate": 50.0, "burst": 50}, **irc}
        self.bot = make_bot_service(self.manager, config, reactor,
                                    retry_policy=lambda attempt: 0.2)
        self.parent = MultiService()
        self.manager.setServiceParent(self.parent)
        self.bot.setServiceParent(self.parent)
        self.clients = []
        self.events = []

    async def start(self, signed_on=True):
        globalLogPublisher.addObserver(self.events.append)
        self.parent.startService()
        await self.manager.load("probe")
        if signed_on:
            await self.bot.when_signed_on().addTimeout(TIMEOUT, reactor)

    async def client(self, services, nick, join=True):
        client = await connect_client(reactor, services, nick)
        self.clients.append(client)
        if join:
            await client.join_channel(CHANNEL)
        return client

    async def stop(self):
        globalLogPublisher.removeObserver(self.events.append)
        await self.parent.stopService()
        for client in self.clients:
            if client.transport.connected:
                client.transport.loseConnection()
                await client.lost


@pytest_twisted.async_yield_fixture
async def make_bot(services, tmp_path):
    made = []

    def make(**irc):
        bot = Bot(services, tmp_path / str(len(made)), **irc)
        made.append(bot)
        return bot

    yield make
    for bot in made:
        await bot.stop()


def sasl(password=BOT_PASSWORD, **kw):
    return {"sasl": {"account": BOT, "password": password, **kw}}


async def ask(client, text, target=CHANNEL):
    waiting = client.wait_privmsg(BOT, target if target.startswith("#") else client.nickname)
    client.say(target, text)
    _, _, params = await waiting
    return params[-1]


async def whois_account(client, nick):
    """
    The account the server says C{nick} is logged in as (C{330}), or None.
    """
    start = len(client.messages)
    client.sendLine(f"WHOIS {nick}")
    await client.wait_for(lambda m: m[1] in ("318", "RPL_ENDOFWHOIS"))
    for _, command, params in client.messages[start:]:
        if command == "330" and len(params) >= 3:
            return params[2]
    return None


async def identify(client, password):
    done = client.wait_for(lambda m: m[1] == "NOTICE" and m[0].startswith("NickServ!")
                           and "now logged in" in m[2][-1].lower()
                           or "identified" in m[2][-1].lower())
    client.say("NickServ", f"IDENTIFY {password}")
    await done


@pytest_twisted.ensureDeferred
async def test_sasl_plain_logs_the_bot_in_before_it_registers(services, make_bot):
    bot = make_bot(**sasl())
    await bot.start()
    alice = await bot.client(services, "alice")
    assert await whois_account(alice, BOT) == BOT
    # server-time and message-tags were negotiated: the line carried its time.
    assert await ask(alice, "!me") == "account=None network=default time=True"


@pytest_twisted.ensureDeferred
async def test_a_failed_login_names_the_account_and_the_bot_does_not_register(
        services, make_bot):
    bot = make_bot(**sasl(password="wrong-password"))
    await bot.start(signed_on=False)
    waited = 0.0
    while bot.bot.login_error is None and waited < TIMEOUT:
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    error = bot.bot.login_error
    assert isinstance(error, SASLFailed) and error.account == BOT
    errors = [e for e in bot.events if e.get("log_level") is not None
              and e["log_level"].name == "error" and e.get("account") == BOT]
    assert errors and "SASL login as 'plugbot' failed: 904" in str(errors[0]["error"])
    assert bot.bot.sign_ons == 0
    watcher = await bot.client(services, "watcher", join=False)
    start = len(watcher.messages)
    watcher.sendLine(f"WHOIS {BOT}")
    await watcher.wait_for(lambda m: m[1] in ("318", "RPL_ENDOFWHOIS"))
    assert any(m[1] in ("401", "ERR_NOSUCHNICK") for m in watcher.messages[start:])


@pytest_twisted.ensureDeferred
async def test_a_login_not_required_lets_the_bot_register_without_it(services, make_bot):
    bot = make_bot(**sasl(password="wrong-password", required=False))
    await bot.start()
    warnings = [e for e in bot.events if e.get("account") == BOT
                and e["log_level"].name == "warn"]
    assert warnings
    alice = await bot.client(services, "alice")
    assert await whois_account(alice, BOT) is None
    assert bot.bot.login_error is None


@pytest_twisted.ensureDeferred
async def test_an_owner_by_account_is_known_by_the_login_never_by_the_nick(
        services, make_bot):
    bot = make_bot(**sasl())
    await bot.start()
    alice = await bot.client(services, "alice")
    refused = alice.wait_notice(BOT, "alice: !secret needs the owner permission")
    alice.say(CHANNEL, "!secret")
    await refused
    await identify(alice, ALICE_PASSWORD)
    # account-notify told the bot; account-tag marks each of her lines.
    assert await ask(alice, "!secret") == "the secret, alice"
    assert await ask(alice, "!me") == "account=alice network=default time=True"
    assert (await ask(alice, "!whoami")).endswith("(logged in as alice) on default; "
                                                  "permissions: owner")


@pytest_twisted.ensureDeferred
async def test_extended_join_tells_the_account_of_who_joins(services, make_bot):
    bot = make_bot(**sasl())
    await bot.start()
    alice = await bot.client(services, "alice", join=False)
    await identify(alice, ALICE_PASSWORD)
    greeted = alice.wait_notice(BOT, "joined: alice account=alice")
    await alice.join_channel(CHANNEL)
    await greeted
    assert await ask(alice, "!secret") == "the secret, alice"
