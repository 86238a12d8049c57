"""
SASL EXTERNAL on a real network: the bot connects to InspIRCd over TLS
with a client certificate (a C{tls:} endpoint with C{certificate=}), and
Atheme logs it in by the certificate's fingerprint, which the account
holds (NickServ C{CERT ADD}). Needs Twisted's TLS (pyOpenSSL and
service_identity, C{pip install 'twisted[tls]'}): without it the test
skips and says so.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from irc_server import TIMEOUT, connect_client
from irc_services import find_services, make_certificate, start_services
from twisted.application.service import MultiService
from twisted.internet import reactor

from twisted_plugmgr import PluginManager
from twisted_plugmgr.irc import make_bot_service

BOT = "tlsbot"


@pytest_twisted.async_yield_fixture(scope="module")
async def tls_services(tmp_path_factory):
    reason = find_services()
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("OpenSSL", reason="TLS needs pyOpenSSL (pip install 'twisted[tls]')")
    pytest.importorskip("service_identity",
                        reason="TLS needs service_identity (pip install 'twisted[tls]')")
    directory = tmp_path_factory.mktemp("external")
    running = await start_services(reactor, directory, tls=True)
    try:
        running.fingerprint = await make_certificate(reactor, directory / "client", BOT)
        await running.register(BOT, "tls-bot-secret", running.fingerprint)
        yield running
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_sasl_external_logs_the_bot_in_by_its_client_certificate(tls_services, tmp_path):
    directory = tls_services.directory
    server = (f"tls:localhost:{tls_services.tls_port}:certificate={directory}/client.pem"
              f":privateKey={directory}/client.key:trustRoots={tmp_path}/roots")
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "server.pem").write_bytes((directory / "server.pem").read_bytes())
    manager = PluginManager(reactor=reactor)
    bot = make_bot_service(manager, {"server": server, "nick": BOT,
                                     "sasl": {"mechanism": "EXTERNAL"}},
                           reactor, retry_policy=lambda attempt: 0.2, admin=False)
    parent = MultiService()
    manager.setServiceParent(parent)
    bot.setServiceParent(parent)
    parent.startService()
    watcher = None
    try:
        await bot.when_signed_on().addTimeout(TIMEOUT, reactor)
        watcher = await connect_client(reactor, tls_services, "watcher")
        start = len(watcher.messages)
        watcher.sendLine(f"WHOIS {BOT}")
        await watcher.wait_for(lambda m: m[1] in ("318", "RPL_ENDOFWHOIS"))
        accounts = [params[2] for _, command, params in watcher.messages[start:]
                    if command == "330" and len(params) >= 3]
        assert accounts == [BOT]
    finally:
        await parent.stopService()
        if watcher is not None and watcher.transport.connected:
            watcher.transport.loseConnection()
            await watcher.lost
