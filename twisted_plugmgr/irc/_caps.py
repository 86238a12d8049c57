"""
IRCv3 before registration: capability negotiation (C{CAP LS 302},
C{REQ}, C{END}) and SASL (C{PLAIN}, C{EXTERNAL}); and message tags.

L{CapNegotiation} is plain code, no I/O: the protocol gives it what the
server says (C{CAP}, C{AUTHENTICATE}, the SASL numerics, C{421} for an
unknown C{CAP}, the welcome) and it answers with lines to send, through the
C{send} callable it was given, and, once, with how the negotiation ended
(C{done}: L{None}, or the L{SASLFailed} that must stop the registration).

A server that knows nothing of C{CAP} (answers C{421}, or nothing and
welcomes the bot) is fine: registration was never held.
"""

from __future__ import annotations

import base64
from typing import Callable, Dict, Iterable, List, Optional, Set

import attr

__all__ = [
    "WANTED_CAPS",
    "SASLSettings",
    "SASLFailed",
    "CapNegotiation",
    "parse_tags",
    "sasl_payload",
]

#: The capabilities the bot asks for when the server offers them.
WANTED_CAPS = (
    "sasl", "server-time", "message-tags", "account-tag", "account-notify",
    "extended-join", "multi-prefix", "away-notify", "cap-notify",
)

#: The SASL mechanisms the bot speaks.
MECHANISMS = ("PLAIN", "EXTERNAL")

_TAG_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def parse_tags(raw: str) -> Dict[str, str]:
    """
    The message tags of C{raw} (what follows C{@}, up to the space),
    unescaped; a tag without a value has C{""}.
    """
    tags: Dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        out: List[str] = []
        chars = iter(value)
        for char in chars:
            if char == "\\":
                following = next(chars, "")
                out.append(_TAG_ESCAPES.get(following, following))
            else:
                out.append(char)
        tags[key] = "".join(out)
    return tags


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class SASLSettings:
    """
    How the bot logs in with SASL.

    @ivar mechanism: C{"PLAIN"} or C{"EXTERNAL"} (a TLS client
        certificate, from a C{tls:} endpoint with C{certificate=} and C{privateKey=}).
    @ivar account: the account name (C{PLAIN}; optional for C{EXTERNAL}).
    @ivar password: the password (C{PLAIN}).
    @ivar required: whether the bot refuses to register without the login.
    """

    mechanism: str = "PLAIN"
    account: str = ""
    password: str = attr.ib(default="", repr=False)
    required: bool = True

    def __attrs_post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"SASL mechanism {self.mechanism!r}: expected PLAIN or EXTERNAL")
        if self.mechanism == "PLAIN" and not (self.account and self.password):
            raise ValueError("SASL PLAIN needs an account and a password")


class SASLFailed(Exception):
    """
    The SASL login of C{account} failed (or could not be tried), for
    C{reason}.
    """

    def __init__(self, account: str, reason: str) -> None:
        self.account = account
        self.reason = reason
        super().__init__(f"SASL login as {account or '(certificate)'!r} failed: {reason}")


def sasl_payload(settings: SASLSettings) -> List[str]:
    """
    The C{AUTHENTICATE} arguments that carry C{settings}' credentials:
    base64 in chunks of 400, C{"+"} after a last full chunk (or alone).
    """
    if settings.mechanism == "PLAIN":
        raw = f"{settings.account}\0{settings.account}\0{settings.password}".encode()
    else:
        raw = settings.account.encode()
    text = base64.b64encode(raw).decode("ascii")
    chunks = [text[i:i + 400] for i in range(0, len(text), 400)]
    if not chunks or len(chunks[-1]) == 400:
        chunks.append("+")
    return chunks


class CapNegotiation:
    """
    One connection's capability negotiation and SASL login.

    @ivar offered: the capabilities the server offers (name -> value).
    @ivar enabled: the capabilities acknowledged, now enabled.
    @ivar logged_in: the account SASL logged in as, or L{None}.
    @ivar finished: whether the negotiation is over (C{CAP END} sent, or
        the server knows no C{CAP}).
    """

    def __init__(
        self,
        send: Callable[[str], None],
        done: Callable[[Optional[SASLFailed]], None],
        sasl: Optional[SASLSettings] = None,
        wanted: Iterable[str] = WANTED_CAPS,
    ) -> None:
        self._send = send
        self._done = done
        self.sasl = sasl
        self.wanted = tuple(wanted)
        self.offered: Dict[str, str] = {}
        self.enabled: Set[str] = set()
        self.logged_in: Optional[str] = None
        self.finished = False
        self._requested: Set[str] = set()
        self._cap_known = False

    def start(self) -> None:
        """
        Ask what the server offers (before C{NICK} and C{USER}).
        """
        self._send("CAP LS 302")

    # -- from the server --------------------------------------------------

    def cap(self, params: List[str]) -> None:
        """
        A C{CAP} line: C{* LS [*] :caps}, C{ACK}, C{NAK}, C{NEW}, C{DEL}.
        """
        if len(params) < 3:
            return
        self._cap_known = True
        sub = params[1].upper()
        more = len(params) > 3 and params[2] == "*"
        caps = params[-1].split()
        if sub == "LS" and not self.finished:
            for item in caps:
                name, _, value = item.partition("=")
                self.offered[name] = value
            if not more:
                self._request()
        elif sub == "ACK":
            for name in caps:
                if name.startswith("-"):
                    self.enabled.discard(name[1:])
                else:
                    self.enabled.add(name)
            self._requested.difference_update(caps)
            if not self._requested and not self.finished:
                self._after_ack()
        elif sub == "NAK":
            self._requested.difference_update(caps)
            if not self._requested and not self.finished:
                self._after_ack()
        elif sub == "NEW" and self.finished:
            new = [name.partition("=")[0] for name in caps]
            wanted = [n for n in new if n in self.wanted and n != "sasl" and n not in self.enabled]
            if wanted:
                self._send("CAP REQ :" + " ".join(wanted))
        elif sub == "DEL":
            for name in caps:
                self.enabled.discard(name.partition("=")[0])

    def unknown_command(self, command: str) -> None:
        """
        C{421} for C{command}: a server without C{CAP} registers at once.
        """
        if command.upper() == "CAP" and not self.finished:
            self._finish(self._missing("the server does not support CAP"))

    def welcomed(self) -> Optional[SASLFailed]:
        """
        The server welcomed the bot (C{001}): the negotiation is over, if
        it was not; the error when a required login never happened.
        """
        if self.finished:
            return None
        self.finished = True
        return self._missing("the server registered the bot without CAP")

    def authenticate(self, params: List[str]) -> None:
        """
        C{AUTHENTICATE +}: the server waits for the credentials.
        """
        if self.sasl is not None and params and params[0] == "+":
            for chunk in sasl_payload(self.sasl):
                self._send("AUTHENTICATE " + chunk)

    def numeric(self, code: str, params: List[str]) -> None:
        """
        A SASL numeric: C{900} (logged in), C{903} (success), C{902},
        C{904}, C{905}, C{906} (failure), C{907} (already logged in).
        """
        if code == "900" and len(params) >= 3:
            self.logged_in = params[2]
        elif code in ("903", "907"):
            self._finish(None)
        elif code in ("902", "904", "905", "906") and not self.finished:
            reason = params[-1] if params else code
            self._finish(self._failed(f"{code} {reason}"))

    # -- steps ------------------------------------------------------------

    def _request(self) -> None:
        wanted = [name for name in self.wanted if name in self.offered]
        if "sasl" in wanted and not self._sasl_possible():
            wanted.remove("sasl")
        if not wanted:
            self._finish(self._missing("the server offers no SASL"))
            return
        self._requested = set(wanted)
        self._send("CAP REQ :" + " ".join(wanted))

    def _sasl_possible(self) -> bool:
        if self.sasl is None:
            return False
        mechs = self.offered.get("sasl", "")
        return not mechs or self.sasl.mechanism in mechs.upper().split(",")

    def _after_ack(self) -> None:
        if self.sasl is not None and "sasl" in self.enabled:
            self._send("AUTHENTICATE " + self.sasl.mechanism)
        else:
            reason = "the server offers no SASL"
            mechs = self.offered.get("sasl")
            if self.sasl is not None and mechs:
                reason = f"the server offers SASL {mechs}, not {self.sasl.mechanism}"
            self._finish(self._missing(reason))

    def _missing(self, reason: str) -> Optional[SASLFailed]:
        if self.sasl is None or not self.sasl.required:
            return None
        return self._failed(reason)

    def _failed(self, reason: str) -> Optional[SASLFailed]:
        assert self.sasl is not None
        error = SASLFailed(self.sasl.account, reason)
        return error if self.sasl.required else _NotRequired(error)

    def _finish(self, error: Optional[SASLFailed]) -> None:
        if self.finished:
            return
        self.finished = True
        if not isinstance(error, _NotRequired) and error is not None:
            self._done(error)
            return
        if self._cap_known:
            self._send("CAP END")
        self._done(error)


class _NotRequired(SASLFailed):
    """
    A failed login that does not stop the registration (C{required =
    false}): reported, then C{CAP END}.
    """

    def __init__(self, error: SASLFailed) -> None:
        super().__init__(error.account, error.reason)
