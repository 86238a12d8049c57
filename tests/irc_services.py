"""
A real IRCv3 network for the CAP, SASL and account tests: InspIRCd 3 (the
Debian package C{inspircd}) with Atheme services (C{atheme-services})
linked to it, both started by the tests on free loopback ports with
configurations generated in temporary directories, and stopped after.

InspIRCd runs in the foreground (C{--nofork}; C{--runasroot} when the
tests run as root). Atheme refuses to run as root: it is started as
C{nobody}, in a directory of C{/tmp} that C{nobody} may use (pytest's own
temporary directories are private to their user). Accounts are registered
through the real NickServ (L{Services.register}).

L{find_services} says why the tests must skip when either is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional

from irc_server import TIMEOUT, TestClient, connect_client, free_port
from twisted.internet import defer, protocol
from twisted.internet.error import ProcessDone, ProcessTerminated

__all__ = ["Services", "find_services", "start_services"]

INSPIRCD_CONFIG = """\
<server name="irc.plugmgr.test" description="plugmgr test" network="PlugmgrTest">
<admin name="tests" nick="tests" email="tests@plugmgr.test">
<bind address="127.0.0.1" port="{port}" type="clients">
<bind address="127.0.0.1" port="{link_port}" type="servers">
<connect allow="*" maxchans="50" timeout="20" pingfreq="120" hardsendq="1M" softsendq="8192"
  recvq="8192" localmax="1000" globalmax="1000" threshold="1000" commandrate="1000000"
  fakelag="off" useident="no" resolvehostnames="no" maxconnwarn="off" limit="5000">
<path configdir="{directory}" datadir="{directory}" logdir="{directory}"
  runtimedir="{directory}" moduledir="/usr/lib/inspircd/modules">
<pid file="{directory}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{directory}/ircd.log">
<options prefixquit="Quit: " fixedquit="" hostintopic="yes" pingwarning="15" splitwhois="no"
  exemptchanops="" defaultmodes="nt">
<security hidesplits="no" hideserver="" userstats="Pu" announceinvites="dynamic" hidemodes=""
  hideulines="no" flatlinks="no" hidewhois="" customversion="">
<performance netbuffersize="10240" somaxconn="128" softlimit="1024" quietbursts="yes">
<dns timeout="1">
<module name="spanningtree">
<module name="services_account">
<module name="sasl">
<module name="cap">
<module name="ircv3">
<module name="ircv3_accounttag">
<module name="ircv3_servertime">
<module name="ircv3_capnotify">
<module name="ircv3_ctctags">
<module name="namesx">
<ircv3 accountnotify="yes" awaynotify="yes" extendedjoin="yes">
<link name="services.plugmgr.test" ipaddr="127.0.0.1" port="{link_port}" allowmask="127.0.0.0/8"
  sendpass="{link_password}" recvpass="{link_password}" hidden="no">
<uline server="services.plugmgr.test" silent="yes">
<sasl target="services.plugmgr.test" requiressl="no">
"""

#: Added with C{tls=True}: a TLS client port whose server certificate is
#: for C{localhost}, asking clients for a certificate (their fingerprint
#: goes to the services, for SASL EXTERNAL).
INSPIRCD_TLS = """\
<module name="ssl_gnutls">
<module name="sslinfo">
<sslprofile name="tls" provider="gnutls" certfile="{directory}/server.pem"
  keyfile="{directory}/server.key" dhfile="" hash="sha256" requestclientcert="yes">
<bind address="127.0.0.1" port="{tls_port}" type="clients" sslprofile="tls">
"""

ATHEME_CONFIG = """\
loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/pbkdf2v2";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/cert";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
loadmodule "modules/saslserv/external";
serverinfo {{
	name = "services.plugmgr.test";
	desc = "plugmgr test services";
	numeric = "00A";
	recontime = 1;
	netname = "PlugmgrTest";
	hidehostsuffix = "users.plugmgr.test";
	adminname = "tests";
	adminemail = "tests@plugmgr.test";
	registeremail = "noreply@plugmgr.test";
	auth = none;
	loglevel = {{ admin; error; info; network; }};
	maxlogins = 5;
	maxusers = 0;
	mdlimit = 30;
	emaillimit = 10;
	emailtime = 300;
}};
uplink "irc.plugmgr.test" {{
	host = "127.0.0.1";
	port = {link_port};
	send_password = "{link_password}";
	receive_password = "{link_password}";
}};
nickserv {{
	nick = "NickServ";
	user = "NickServ";
	host = "services.plugmgr.test";
	real = "Nickname Services";
	maxnicks = 5;
	expire = 30;
}};
saslserv {{
	nick = "SaslServ";
	user = "SaslServ";
	host = "services.plugmgr.test";
	real = "SASL Authentication Agent";
}};
logfile "{directory}/atheme.log" {{ error; info; admin; network; }};
general {{
	helpchan = "#help";
	permissive_mode;
	flood_msgs = 0;
	flood_time = 10;
	ratelimit_uses = 1000;
	ratelimit_period = 1;
	kline_time = 7;
	commit_interval = 1;
	default_clone_allowed = 1000;
	default_clone_warn = 1000;
	uflags = {{ hidemail; }};
	cflags = {{ guard; verbose; }};
}};
"""

INSPIRCD = "/usr/sbin/inspircd"
ATHEME = "/usr/bin/atheme-services"
NOBODY = 65534


def find_services() -> Optional[str]:
    """
    Why the IRCv3 tests cannot run (a sentence), or L{None} when InspIRCd
    and Atheme are both installed.
    """
    missing = [name for name, path in (("inspircd", INSPIRCD), ("atheme-services", ATHEME))
               if not os.access(path, os.X_OK)]
    if missing:
        return (f"{' and '.join(missing)} not installed (apt-get install -y inspircd "
                "atheme-services; .ci/run installs them)")
    return None


class _Watch(protocol.ProcessProtocol):
    """
    Waits for C{marker} in a process's output, and for its end.
    """

    def __init__(self, name: str, marker: bytes) -> None:
        self.name = name
        self.marker = marker
        self.output = bytearray()
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and self.marker in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            text = self.output.decode("utf-8", "replace")[-2000:]
            self.ready.errback(RuntimeError(f"{self.name} ended before it was ready:\n{text}"))
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(None)
        else:
            self.ended.errback(reason)


class Services:
    """
    InspIRCd and Atheme, running.

    @ivar port: the client port of InspIRCd on 127.0.0.1.
    @ivar endpoint: the client endpoint string for the bot.
    @ivar tls_port: with C{tls}, the TLS client port (its certificate, for
        C{localhost}, is C{directory/server.pem}).
    """

    def __init__(self, reactor: Any, directory: Path, tls: bool = False) -> None:
        self.reactor = reactor
        self.directory = directory
        self.tls = tls
        self.port = free_port()
        self.link_port = free_port()
        self.tls_port = free_port() if tls else 0
        self.endpoint = f"tcp:127.0.0.1:{self.port}"
        self._atheme_dir = ""
        self._processes: List[Any] = []
        self._watches: List[_Watch] = []

    @defer.inlineCallbacks
    def start(self) -> Any:
        """
        Start InspIRCd, then Atheme; fire once Atheme has linked and synched.
        """
        values = dict(port=self.port, link_port=self.link_port, link_password="plugmgr-link")
        ircd_conf = self.directory / "inspircd.conf"
        text = INSPIRCD_CONFIG.format(directory=self.directory, **values)
        if self.tls:
            yield make_certificate(self.reactor, self.directory / "server", "localhost")
            text += INSPIRCD_TLS.format(directory=self.directory, tls_port=self.tls_port)
        ircd_conf.write_text(text)
        args = [INSPIRCD, "--nofork", "--config", str(ircd_conf)]
        if os.getuid() == 0:
            args.insert(1, "--runasroot")
        yield self._spawn("inspircd", args, b"InspIRCd is now running", None, str(self.directory))
        # Atheme runs as nobody when the tests run as root: its files live in
        # a directory nobody can reach (pytest's are private to their user).
        self._atheme_dir = tempfile.mkdtemp(prefix="plugmgr-atheme-")
        os.chmod(self._atheme_dir, 0o777)
        conf = os.path.join(self._atheme_dir, "atheme.conf")
        with open(conf, "w") as f:
            f.write(ATHEME_CONFIG.format(directory=self._atheme_dir, **values))
        os.chmod(conf, 0o644)
        args = [ATHEME, "-n", "-c", conf, "-D", self._atheme_dir,
                "-l", os.path.join(self._atheme_dir, "atheme.log"),
                "-p", os.path.join(self._atheme_dir, "atheme.pid")]
        uid = NOBODY if os.getuid() == 0 else None
        yield self._spawn("atheme-services", args, b"finished synching with uplink", uid,
                          self._atheme_dir)
        return self

    def _spawn(self, name: str, args: List[str], marker: bytes, uid: Optional[int],
               path: str) -> defer.Deferred[None]:
        watch = _Watch(name, marker)
        kw = {} if uid is None else {"uid": uid, "gid": uid}
        process = self.reactor.spawnProcess(watch, args[0], args, env={"PATH": "/usr/bin:/bin"},
                                            path=path, **kw)
        self._processes.append(process)
        self._watches.append(watch)
        return watch.ready.addTimeout(TIMEOUT, self.reactor)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """
        Stop Atheme, then InspIRCd (SIGTERM, SIGKILL after a while); remove
        Atheme's directory.
        """
        for process, watch in reversed(list(zip(self._processes, self._watches, strict=True))):
            if not watch.ended.called:
                try:
                    process.signalProcess("TERM")
                except Exception:
                    pass
                kill = self.reactor.callLater(5, _kill, process)
                yield watch.ended
                if kill.active():
                    kill.cancel()
        if self._atheme_dir:
            shutil.rmtree(self._atheme_dir, ignore_errors=True)

    @defer.inlineCallbacks
    def register(self, account: str, password: str, fingerprint: Optional[str] = None) -> Any:
        """
        Register C{account} with NickServ (connected under that nick), with
        the certificate C{fingerprint} when given (C{CERT ADD}, for SASL
        EXTERNAL), and leave.
        """
        client: TestClient = yield connect_client(self.reactor, self, account)

        def from_nickserv(word: str) -> Any:
            return lambda m: (m[1] == "NOTICE" and m[0].startswith("NickServ!")
                              and word in m[2][-1].lower())

        done = client.wait_for(from_nickserv("registered"))
        client.say("NickServ", f"REGISTER {password} {account}@plugmgr.test")
        yield done
        if fingerprint is not None:
            added = client.wait_for(from_nickserv(fingerprint[:16]))
            client.say("NickServ", f"CERT ADD {fingerprint}")
            yield added
        client.quit("registered")
        yield client.lost

    @property
    def password(self) -> None:
        """
        No server password (as L{irc_server.IRCServer.password}).
        """
        return None


def _kill(process: Any) -> None:
    try:
        process.signalProcess("KILL")
    except Exception:
        pass


def start_services(reactor: Any, directory: Path, tls: bool = False
                   ) -> defer.Deferred[Services]:
    """
    Start InspIRCd (with a TLS port, with C{tls}) and Atheme (see
    L{Services}).
    """
    return Services(reactor, directory, tls).start()


@defer.inlineCallbacks
def make_certificate(reactor: Any, base: Path, name: str) -> Any:
    """
    A self-signed certificate for C{name} (C{base}.pem, C{base}.key, made by
    the C{openssl} command, in a child process); fires with its SHA-256
    fingerprint (lower-case hex, as InspIRCd gives it to the services).
    """
    from twisted.internet.utils import getProcessOutputAndValue

    openssl = shutil.which("openssl") or "/usr/bin/openssl"
    out, err, code = yield getProcessOutputAndValue(openssl, [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{base}.key", "-out", f"{base}.pem", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName=DNS:{name}"], reactor=reactor)
    if code != 0:
        raise RuntimeError(f"openssl req failed: {err.decode(errors='replace')}")
    out, err, code = yield getProcessOutputAndValue(openssl, [
        "x509", "-in", f"{base}.pem", "-noout", "-fingerprint", "-sha256"], reactor=reactor)
    if code != 0:
        raise RuntimeError(f"openssl x509 failed: {err.decode(errors='replace')}")
    return out.decode().strip().split("=", 1)[1].replace(":", "").lower()
