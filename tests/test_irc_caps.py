"""
IRCv3 capability negotiation and SASL, as plain code (L{CapNegotiation});
message tags (L{parse_tags}); and the protocol's use of them over a fake
server (the real one is in test_irc_ircv3).
"""

from __future__ import annotations

import base64

import pytest
from irc_fakes import BotHarness

from twisted_plugmgr.irc import CapNegotiation, SASLFailed, SASLSettings, parse_tags
from twisted_plugmgr.irc._caps import sasl_payload

ALL = ("account-notify account-tag away-notify cap-notify extended-join message-tags "
       "multi-prefix sasl=PLAIN,EXTERNAL server-time")


class Recorder:
    def __init__(self, sasl=None):
        self.sent = []
        self.outcomes = []
        self.caps = CapNegotiation(self.sent.append, self.outcomes.append, sasl)


def plain(required=True):
    return SASLSettings(account="bot", password="pw", required=required)


def test_parse_tags_unescapes_values():
    assert parse_tags(r"time=2026-01-01T00:00:00.000Z;account=al\sice;x;y=a\:b\\c") == {
        "time": "2026-01-01T00:00:00.000Z", "account": "al ice", "x": "", "y": "a;b\\c"}


def test_it_requests_only_what_the_bot_uses_and_the_server_offers():
    r = Recorder()
    r.caps.start()
    r.caps.cap(["*", "LS", "*", "account-tag foo multi-prefix"])
    assert r.sent == ["CAP LS 302"]  # more to come
    r.caps.cap(["*", "LS", "server-time bar"])
    assert r.sent[-1] == "CAP REQ :server-time account-tag multi-prefix"
    r.caps.cap(["*", "ACK", "server-time account-tag multi-prefix"])
    assert r.sent[-1] == "CAP END"
    assert r.caps.enabled == {"server-time", "account-tag", "multi-prefix"}
    assert r.outcomes == [None]


def test_a_server_that_offers_nothing_gets_cap_end():
    r = Recorder()
    r.caps.cap(["*", "LS", ""])
    assert r.sent == ["CAP END"] and r.outcomes == [None]


def test_a_server_without_cap_is_fine_unless_sasl_is_required():
    r = Recorder()
    r.caps.unknown_command("CAP")
    assert r.sent == [] and r.outcomes == [None] and r.caps.finished
    r = Recorder(plain())
    r.caps.unknown_command("CAP")
    [error] = r.outcomes
    assert isinstance(error, SASLFailed) and error.account == "bot"
    assert "does not support CAP" in str(error) and r.sent == []


def test_a_welcome_without_negotiation_fails_a_required_login():
    r = Recorder(plain())
    error = r.caps.welcomed()
    assert isinstance(error, SASLFailed) and "without CAP" in error.reason
    assert Recorder().caps.welcomed() is None


def test_sasl_plain_success():
    r = Recorder(plain())
    r.caps.cap(["*", "LS", ALL])
    r.caps.cap(["*", "ACK", r.sent[-1].split(":", 1)[1]])
    assert r.sent[-1] == "AUTHENTICATE PLAIN"
    r.caps.authenticate(["+"])
    assert base64.b64decode(r.sent[-1].split()[1]) == b"bot\0bot\0pw"
    r.caps.numeric("900", ["bot", "bot!u@h", "bot", "You are now logged in"])
    assert r.outcomes == []
    r.caps.numeric("903", ["bot", "SASL authentication successful"])
    assert r.sent[-1] == "CAP END" and r.outcomes == [None] and r.caps.logged_in == "bot"


@pytest.mark.parametrize("code", ["904", "905"])
def test_sasl_failure_names_the_account_and_sends_no_cap_end(code):
    r = Recorder(plain())
    r.caps.cap(["*", "LS", ALL])
    r.caps.cap(["*", "ACK", r.sent[-1].split(":", 1)[1]])
    assert r.sent[-1] == "AUTHENTICATE PLAIN"
    r.caps.authenticate(["+"])
    r.caps.numeric(code, ["*", "SASL authentication failed"])
    [error] = r.outcomes
    assert str(error) == f"SASL login as 'bot' failed: {code} SASL authentication failed"
    assert "CAP END" not in r.sent


def test_a_failure_not_required_ends_the_negotiation_and_registers():
    r = Recorder(plain(required=False))
    r.caps.cap(["*", "LS", ALL])
    r.caps.cap(["*", "ACK", r.sent[-1].split(":", 1)[1]])
    assert r.sent[-1] == "AUTHENTICATE PLAIN"
    r.caps.numeric("904", ["*", "failed"])
    assert r.sent[-1] == "CAP END"
    [error] = r.outcomes
    assert isinstance(error, SASLFailed)


def test_a_server_without_the_mechanism_fails_a_required_login():
    r = Recorder(SASLSettings(mechanism="EXTERNAL"))
    r.caps.cap(["*", "LS", "sasl=PLAIN server-time"])
    assert r.sent[-1] == "CAP REQ :server-time"
    r.caps.cap(["*", "ACK", "server-time"])
    [error] = r.outcomes
    assert "offers SASL PLAIN, not EXTERNAL" in str(error)


def test_the_payload_is_split_in_chunks_of_400():
    long = SASLSettings(account="a" * 150, password="p" * 150)
    chunks = sasl_payload(long)
    assert [len(c) for c in chunks[:-1]] == [400] * (len(chunks) - 1)
    assert base64.b64decode("".join(c for c in chunks if c != "+")).endswith(b"p" * 150)
    assert sasl_payload(SASLSettings(mechanism="EXTERNAL")) == ["+"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="PLAIN needs an account and a password"):
        SASLSettings(account="bot")
    with pytest.raises(ValueError, match="expected PLAIN or EXTERNAL"):
        SASLSettings(mechanism="SCRAM", account="a", password="b")


def test_cap_new_requests_what_the_bot_uses_later():
    r = Recorder()
    r.caps.cap(["*", "LS", "cap-notify"])
    r.caps.cap(["*", "ACK", "cap-notify"])
    r.caps.cap(["*", "NEW", "account-tag sasl unknown"])
    assert r.sent[-1] == "CAP REQ :account-tag"
    r.caps.cap(["*", "DEL", "cap-notify"])
    assert "cap-notify" not in r.caps.enabled


# -- the protocol over a fake server -----------------------------------------


def test_the_bot_opens_with_cap_ls_and_registers_at_once_without_cap(tmp_path):
    harness = BotHarness(tmp_path)
    harness.parent.startService()
    harness.clock.advance(0)
    lines = harness.take()
    assert lines[0] == b"CAP LS 302"
    assert any(line.startswith(b"NICK bot") for line in lines)
    harness.feed(":irc.test 421 bot CAP :Unknown command")
    harness.welcome()
    assert harness.bot.sign_ons == 1
    assert b"CAP END" not in harness.take()
    harness.parent.stopService()


def test_tags_and_account_reach_the_context(tmp_path):
    harness = BotHarness(tmp_path, admin=True)
    harness.parent.startService()
    harness.clock.advance(0)
    harness.feed(":irc.test CAP * LS :account-tag server-time message-tags")
    harness.feed(":irc.test CAP * ACK :server-time message-tags account-tag")
    assert harness.take()[-1] == b"CAP END"
    harness.welcome()
    harness.feed("@account=alice;time=2026-01-01T00:00:00Z :carol!~c@h PRIVMSG #chan :!whoami")
    [line] = harness.said()
    assert "(logged in as alice)" in line
    harness.feed(":carol!~c@h PRIVMSG #chan :!whoami")
    [line] = harness.said()
    assert "(not logged in)" in line
    harness.parent.stopService()


def test_sasl_external_sends_an_empty_response():
    r = Recorder(SASLSettings(mechanism="EXTERNAL"))
    r.caps.cap(["*", "LS", ALL])
    r.caps.cap(["*", "ACK", r.sent[-1].split(":", 1)[1]])
    assert r.sent[-1] == "AUTHENTICATE EXTERNAL"
    r.caps.authenticate(["+"])
    assert r.sent[-1] == "AUTHENTICATE +"
    r.caps.numeric("903", ["*", "ok"])
    assert r.sent[-1] == "CAP END" and r.outcomes == [None]
