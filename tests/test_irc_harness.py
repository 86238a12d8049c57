"""
The test IRC server and client themselves: two users meet in a channel.
Run against ngircd when installed, and against Twisted's own server always
(so the fallback keeps working).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from irc_server import IRCServer, connect_client, find_ngircd
from twisted.internet import reactor


@pytest.fixture(params=["ngircd", "twisted"])
def kind(request):
    if request.param == "ngircd" and find_ngircd() is None:
        pytest.skip("ngircd is not installed")
    return request.param


@pytest_twisted.ensureDeferred
async def test_two_clients_talk_in_a_channel(kind, tmp_path):
    server = IRCServer(reactor, tmp_path, find_ngircd() if kind == "ngircd" else None)
    await server.start()
    try:
        alice = await connect_client(reactor, server, "alice")
        bob = await connect_client(reactor, server, "bob")
        await alice.join_channel("#meet")
        await bob.join_channel("#meet")
        waiting = bob.wait_privmsg("alice", "#meet", "hello bob")
        alice.say("#meet", "hello bob")
        prefix, _, _ = await waiting
        assert prefix.startswith("alice!")
        waiting = alice.wait_privmsg("bob", "alice", "psst")
        bob.say("alice", "psst")
        await waiting
        for client in (alice, bob):
            client.transport.loseConnection()
            await client.lost
    finally:
        await server.stop()
    assert not server.running
