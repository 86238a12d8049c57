"""
Who may act on the dashboard: the session cookie, the login with the
token, the CSRF token every form carries, and the bearer token
C{/metrics} may need.

A session is a random id in an HttpOnly, SameSite=Strict cookie, given to
every visitor; a login with the right token marks it as logged in (under a
new id, so an id known before the login is worth nothing after it). The
CSRF token of a session is an HMAC of its id under a secret of this
process: nothing to store, and a form from another session does not pass.

Guessing the token is slowed down by L{Throttle}: a client address that
gave a wrong token (at C{/login}, or as a bearer token) L{FAILURES} times
within L{WINDOW} seconds is answered 429 until the oldest of them is that
old.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
from collections import deque
from typing import Deque, Dict, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

__all__ = ["Sessions", "Throttle", "COOKIE", "client_of", "FAILURES", "WINDOW"]

#: The name of the session cookie.
COOKIE = b"plugmgr_session"

#: Seconds a login lasts.
LOGIN_LIFETIME = 12 * 3600.0

#: At most this many logged-in sessions (and flash messages) are kept.
MAX_SESSIONS = 1000

#: Wrong tokens a client address may give within L{WINDOW} seconds.
FAILURES = 5

#: Seconds a wrong token counts against its client address.
WINDOW = 60.0

#: At most this many client addresses are tracked (the oldest forgotten).
MAX_CLIENTS = 1000

_log = Logger(namespace="twisted_plugmgr.web")


def client_of(request: Request) -> str:
    """
    The client address of C{request}, as the throttle counts it (the host;
    C{"local"} for a UNIX socket).
    """
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return str(host) if host else "local"


class Throttle:
    """
    Wrong tokens counted per client address: one that gave L{FAILURES}
    wrong tokens within L{WINDOW} seconds is refused until the oldest of
    them leaves the window (what it asks is not counted meanwhile).

    @param reactor: the clock.
    @param failures: how many wrong tokens within C{window} seconds.
    @param window: seconds a wrong token counts.
    """

    def __init__(self, reactor: IReactorTime, failures: int = FAILURES,
                 window: float = WINDOW) -> None:
        self._reactor = reactor
        self.failures = failures
        self.window = window
        self._seen: Dict[str, Deque[float]] = {}

    def _recent(self, client: str) -> Deque[float]:
        times = self._seen.get(client)
        if times is None:
            return deque()
        horizon = self._reactor.seconds() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._seen[client]
        return times

    def retry_after(self, client: str) -> Optional[int]:
        """
        Whole seconds until C{client} may try again, or L{None} if it may now.
        """
        times = self._recent(client)
        if len(times) < self.failures:
            return None
        wait = times[0] + self.window - self._reactor.seconds()
        return max(1, math.ceil(wait))

    def failed(self, client: str, what: str) -> None:
        """
        Count a wrong token from C{client}; the one that makes it refused
        is logged (one line, naming C{what} it tried: C{"login"},
        C{"bearer token"}).
        """
        times = self._recent(client)
        if client not in self._seen:
            while len(self._seen) >= MAX_CLIENTS:
                del self._seen[next(iter(self._seen))]
            self._seen[client] = times
        times.append(self._reactor.seconds())
        if len(times) == self.failures:
            _log.warn("web: {count} wrong tokens from {client} ({what}) within {window:g} s: "
                      "refusing it for {window:g} s", count=len(times), client=client,
                      what=what, window=self.window)


class Sessions:
    """
    The sessions of one web service.

    @param token: the token actions need, or L{None}: then nobody can log
        in, and the dashboard is read-only.
    @param reactor: the clock logins expire on.
    @param secure: give the cookie the C{Secure} flag (an C{ssl:} endpoint).

    @ivar throttle: the L{Throttle} of wrong tokens.
    """

    def __init__(self, token: Optional[str], reactor: IReactorTime,
                 secure: bool = False) -> None:
        self._token = token.encode("utf-8") if token is not None else None
        self._reactor = reactor
        self._secure = secure
        self.throttle = Throttle(reactor)
        self._secret = os.urandom(32)
        self._logins: Dict[str, float] = {}  # session id -> when its login expires
        self._flash: Dict[str, str] = {}

    @property
    def writable(self) -> bool:
        """
        Whether a token is configured (without one, nothing can be done
        through the dashboard).
        """
        return self._token is not None

    def session(self, request: Request) -> str:
        """
        The session id of C{request}, from its cookie; a new one (and its
        cookie) if it has none or a malformed one.
        """
        raw = request.getCookie(COOKIE)
        if raw is not None:
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                text = ""
            if len(text) == 43 and all(c.isalnum() or c in "-_" for c in text):
                return text
        return self._new_session(request)

    def _new_session(self, request: Request) -> str:
        session = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")
        request.addCookie(COOKIE, session.encode("ascii"), path=b"/",
                          httpOnly=True, sameSite="strict", secure=self._secure)
        return session

    def csrf(self, session: str) -> str:
        """
        The CSRF token the forms of C{session} carry.
        """
        return hmac.new(self._secret, session.encode("ascii"), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str, value: Optional[str]) -> bool:
        """
        Whether C{value} is C{session}'s CSRF token.
        """
        # Bytes: compare_digest refuses a str that is not ASCII.
        return value is not None and hmac.compare_digest(
            self.csrf(session).encode("ascii"), value.encode("utf-8", "replace"))

    def logged_in(self, session: str) -> bool:
        """
        Whether C{session} logged in with the token, and its login has not
        expired.
        """
        expires = self._logins.get(session)
        if expires is None:
            return False
        if expires < self._reactor.seconds():
            del self._logins[session]
            return False
        return True

    def token_ok(self, value: Optional[str]) -> bool:
        """
        Whether C{value} is the token (always false without one).
        """
        if self._token is None or value is None:
            return False
        return hmac.compare_digest(self._token, value.encode("utf-8", "replace"))

    def login(self, request: Request, session: str, token: Optional[str]) -> Optional[str]:
        """
        Log C{session} in if C{token} is right: under a new session id
        (and cookie), returned; L{None} if the token is wrong (counted by
        the L{throttle} against C{request}'s client).
        """
        if not self.token_ok(token):
            self.throttle.failed(client_of(request), "login")
            return None
        self._logins.pop(session, None)
        self._prune()
        fresh = self._new_session(request)
        self._logins[fresh] = self._reactor.seconds() + LOGIN_LIFETIME
        return fresh

    def logout(self, request: Request, session: str) -> str:
        """
        End C{session}'s login; return the new (anonymous) session id.
        """
        self._logins.pop(session, None)
        self._flash.pop(session, None)
        return self._new_session(request)

    def bearer_ok(self, request: Request) -> bool:
        """
        Whether C{request} carries the token as C{Authorization: Bearer}.
        """
        return self.bearer(request) == "ok"

    def bearer(self, request: Request) -> str:
        """
        What C{request}'s C{Authorization: Bearer} header is worth:
        C{"ok"} (the token), C{"missing"} (no bearer token), C{"wrong"}
        (counted by the L{throttle}) or C{"throttled"} (its client gave too
        many wrong tokens: not even looked at).
        """
        header = request.getHeader(b"authorization")
        if header is None:
            return "missing"
        scheme, _, value = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return "missing"
        client = client_of(request)
        if self.throttle.retry_after(client) is not None:
            return "throttled"
        if self.token_ok(value.strip()):
            return "ok"
        self.throttle.failed(client, "bearer token")
        return "wrong"

    def flash(self, session: str, message: str) -> None:
        """
        Keep C{message} for the next page C{session} sees.
        """
        self._prune()
        self._flash[session] = message

    def take_flash(self, session: str) -> Optional[str]:
        """
        The message kept for C{session}, forgotten once taken.
        """
        return self._flash.pop(session, None)

    def _prune(self) -> None:
        now = self._reactor.seconds()
        for session, expires in list(self._logins.items()):
            if expires < now:
                del self._logins[session]
        while len(self._logins) >= MAX_SESSIONS:
            del self._logins[next(iter(self._logins))]
        while len(self._flash) >= MAX_SESSIONS:
            del self._flash[next(iter(self._flash))]
