"""
The bot's wire protocol (L{BotProtocol}) in-process, on a Clock, against a
fake server on a StringTransport: registration, PING, nick collisions,
what is refused or survived on the wire, flood control, rejoining after a
kick, the heartbeat.
"""

from __future__ import annotations

from irc_fakes import BOT_MASK, BotHarness, harness_fixture  # noqa: F401
from twisted.words.protocols.irc import ServerSupportedFeatures

from twisted_plugmgr.irc._protocol import channel_mode_params, pong_line

ROLL = """
@command("roll")
def roll(self, ctx):
    return f"{ctx.nick} rolled 4"
"""


def nick_lines(h):
    return [line for line in h.said() if line.startswith("NICK")]


def test_sign_on_joins_the_channels_and_learns_the_hostmask(harness):
    harness.start(welcome=False)
    assert harness.said()[-2:] == ["NICK bot", "USER bot foo bar :twisted-plugmgr bot"]
    harness.feed(":irc.test 001 bot :Welcome to the network bot!~bot@10.0.0.1")
    assert harness.said() == ["JOIN #chan"]
    assert harness.proto.hostmask == "bot!~bot@10.0.0.1"
    harness.feed(f":{BOT_MASK} JOIN #chan")
    assert harness.proto.hostmask == BOT_MASK
    assert harness.bot.sign_ons == 1


def test_ping_is_answered(harness):
    harness.start()
    harness.feed("PING :irc.test")
    assert harness.said() == ["PONG irc.test"]


def test_pong_gives_the_token_back_byte_for_byte():
    assert pong_line(b":irc.test") == b"PONG irc.test\r\n"
    assert pong_line(b" caf\xe9 ") == b"PONG caf\xe9\r\n"
    assert pong_line(b":two words") == b"PONG :two words\r\n"


def test_pong_fits_in_512_bytes_and_needs_a_token():
    assert len(pong_line(b"x" * 600)) == 512
    assert pong_line(b" ") is None
    assert pong_line(b":") is None


def features(*tokens):
    supported = ServerSupportedFeatures()
    supported.parse(list(tokens))
    return supported.getFeature("PREFIX"), supported.getFeature("CHANMODES")


def test_channel_mode_params_follow_prefix_and_chanmodes():
    modes = features("PREFIX=(ov)@+", "CHANMODES=b,k,l,n")
    assert channel_mode_params(*modes) == ["ovbkl", "ovbk"]


def test_an_empty_prefix_feature_is_no_prefixes():
    assert channel_mode_params(*features("PREFIX=", "CHANMODES=")) == ["", ""]


def test_nick_collision_alters_the_nick_then_reclaims_it(harness):
    harness.start(welcome=False)
    harness.said()
    harness.feed(":irc.test 433 * bot :Nickname already in use")
    assert nick_lines(harness) == ["NICK bot_"]
    harness.welcome("bot_")
    assert harness.proto.nickname == "bot_"
    harness.clock.advance(harness.bot.regain_interval)
    assert nick_lines(harness) == ["NICK bot"]
    # still taken: keep bot_, try again later, never bot__
    harness.feed(":irc.test 433 bot_ bot :Nickname already in use")
    assert nick_lines(harness) == []
    harness.clock.advance(harness.bot.regain_interval)
    assert nick_lines(harness) == ["NICK bot"]
    harness.feed(":bot_!~bot@127.0.0.1 NICK :bot")
    assert harness.proto.nickname == "bot"
    assert harness.proto.hostmask == BOT_MASK
    harness.clock.advance(harness.bot.regain_interval)
    assert nick_lines(harness) == []


def test_raw_lines_with_cr_lf_are_refused(harness, logged_failures):
    harness.start()
    harness.proto.sendLine("PRIVMSG #chan :a\r\nQUIT")
    assert harness.said() == []
    assert harness.proto.transport.connected


def test_undecodable_and_malformed_lines_do_not_drop_the_connection(harness):
    harness.start()
    harness.load("dice", ROLL)
    harness.feed(raw=b":carol!~c@h PRIVMSG #chan :caf\xe9 !\r\n")
    harness.feed(raw=b"\r\n:\r\n")
    harness.say("!roll")
    assert harness.said() == ["PRIVMSG #chan :carol rolled 4"]
    assert harness.proto.transport.connected


def test_flood_control_queues_what_exceeds_the_burst(tmp_path):
    h = BotHarness(tmp_path, flood_rate=2.0, flood_burst=3)
    h.start(welcome=False)
    h.clock.advance(10)  # the tokens spent on NICK and USER come back
    h.welcome()
    h.clock.advance(10)
    h.load("many", """
@command("many")
def many(self, ctx):
    return "\\n".join(str(i) for i in range(7))
""")
    h.say("!many")
    assert h.said() == ["PRIVMSG #chan :0", "PRIVMSG #chan :1", "PRIVMSG #chan :2"]
    h.feed("PING :irc.test")  # PONG goes first when the next token comes
    h.clock.advance(0.5)
    assert h.said() == ["PONG irc.test"]
    h.clock.advance(0.5)
    assert h.said() == ["PRIVMSG #chan :3"]
    for _ in range(6):
        h.clock.advance(0.5)
    assert h.said() == ["PRIVMSG #chan :4", "PRIVMSG #chan :5", "PRIVMSG #chan :6"]
    h.stop()
    assert not h.clock.getDelayedCalls()


def test_kicked_bot_rejoins(harness):
    harness.start()
    harness.feed(":op!~o@h KICK #chan bot :out")
    assert harness.said() == []
    harness.clock.advance(harness.bot.rejoin_delay)
    assert harness.said() == ["JOIN #chan"]


def test_silent_server_is_dropped_by_the_heartbeat(harness):
    harness.start()
    interval = harness.proto.heartbeatInterval
    harness.clock.advance(interval)
    assert harness.take() == [b"PING irc.test"]
    harness.feed(":irc.test PONG irc.test :irc.test")
    for _ in range(4):
        harness.clock.advance(interval)
    assert harness.proto.transport.disconnecting or not harness.proto.transport.connected
