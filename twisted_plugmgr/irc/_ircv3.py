"""
The IRCv3 part of the bot's connection: L{IRCv3Client}, a mix-in of
L{BotProtocol} that opens the capability negotiation before registering,
answers the server's C{CAP} and C{AUTHENTICATE} (through its
L{CapNegotiation}), stops a registration whose required SASL login failed,
and follows accounts (C{account-notify}; C{extended-join} and
C{account-tag} are read by the protocol).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.logger import Logger

from ._caps import CapNegotiation, SASLFailed, parse_tags
from ._people import People

__all__ = ["IRCv3Client"]


class IRCv3Client:
    """
    Capability negotiation, SASL and accounts, for L{BotProtocol}.

    @ivar caps: the connection's L{CapNegotiation}.
    @ivar tags: the message tags of the line being handled.
    """

    caps: CapNegotiation
    tags: Dict[str, str]
    people: People
    bot: Any
    log: Logger
    transport: Any

    def quit_now(self, message: str = "") -> None:
        """
        Send C{QUIT} at once (the protocol's).
        """
        raise NotImplementedError

    def _send_now(self, line: str) -> None:
        # Registration lines (a handful, before the welcome) skip the queue:
        # flood control must not hold the sign-on up.
        if self.transport is not None and not any(c in line for c in "\r\n\x00"):
            self.transport.write(line.encode("utf-8") + b"\r\n")

    def register(self, nickname: str, hostname: str = "foo", servername: str = "bar") -> None:
        """
        Open the IRCv3 negotiation (C{CAP LS 302}), then register as
        L{IRCClient<twisted.words.protocols.irc.IRCClient>} does: a server
        without C{CAP} registers at once.
        """
        self.caps.start()
        super().register(nickname, hostname, servername)  # type: ignore[misc]

    def _negotiated(self, error: Optional[SASLFailed]) -> None:
        if error is None:
            if self.caps.logged_in:
                self.log.info("SASL: logged in as {account}", account=self.caps.logged_in)
            return
        if not getattr(self.bot, "sasl", None) or not self.bot.sasl.required:
            self.log.warn("{error}; registering without the login (sasl.required = false)",
                          error=str(error), account=error.account)
            return
        self.log.error("{error}: not registering without the login; disconnecting",
                       error=str(error), account=error.account)
        self.bot.handle_login_failed(self, error)
        self.quit_now("SASL login failed")
        if self.transport is not None:
            self.transport.loseConnection()

    def account_of(self, nick: str) -> Optional[str]:
        """
        The account C{nick} is logged in as, from the server only: the
        C{account} tag of the line being handled (with C{account-tag}),
        else what C{extended-join} and C{account-notify} said; L{None} when
        not logged in or not known.
        """
        if "account-tag" in self.caps.enabled:
            return self.tags.get("account") or None
        return self.people.account(nick)

    def irc_CAP(self, prefix: str, params: List[str]) -> None:
        """
        Capability negotiation (L{CapNegotiation.cap}).
        """
        self.caps.cap(params)

    def irc_AUTHENTICATE(self, prefix: str, params: List[str]) -> None:
        """
        SASL: the server waits for the credentials.
        """
        self.caps.authenticate(params)

    def irc_ERR_UNKNOWNCOMMAND(self, prefix: str, params: List[str]) -> None:
        """
        C{421}: for C{CAP}, a server without capabilities (registration
        goes on); otherwise logged.
        """
        command = params[1] if len(params) > 1 else ""
        if command.upper() in ("CAP", "AUTHENTICATE"):
            self.caps.unknown_command(command)
        else:
            self.log.info("the server does not know {command}", command=command)

    def irc_ACCOUNT(self, prefix: str, params: List[str]) -> None:
        """
        C{account-notify}: a user logged in (or out, C{*}).
        """
        self.people.set_account(prefix.split("!", 1)[0], params[0])

    def irc_AWAY(self, prefix: str, params: List[str]) -> None:
        """
        C{away-notify}: nothing the bot uses yet.
        """

    def _split_tags(self, line: bytes) -> bytes:
        """
        Take the message tags (C{@...}) off C{line} into L{tags}.
        """
        if line.startswith(b"@"):
            raw, _, line = line.partition(b" ")
            self.tags = parse_tags(raw[1:].decode("utf-8", "replace"))
            return line.lstrip(b" ")
        if self.tags:
            self.tags = {}
        return line

    def irc_RPL_WELCOME(self, prefix: str, params: List[str]) -> None:
        """
        Welcomed: the negotiation is over; a required login that never
        happened stops the sign-on here.
        """
        error = self.caps.welcomed()
        if error is not None:
            self._negotiated(error)
            return
        super().irc_RPL_WELCOME(prefix, params)  # type: ignore[misc]

    def irc_ERR_PASSWDMISMATCH(self, prefix: str, params: List[str]) -> None:
        """
        The server refused the password: say so
        (L{IRCClient<twisted.words.protocols.irc.IRCClient>} raises, which only
        logs a traceback); the server closes the connection.
        """
        self.log.error("the server refused the password: {text}",
                       text=params[-1] if params else "")
