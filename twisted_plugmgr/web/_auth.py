"""
Who may act on the dashboard: the session cookie, the login with the
token, the CSRF token every form carries, and the bearer token
C{/metrics} may need.

A session is a random id in an HttpOnly, SameSite=Strict cookie, given to
every visitor; a login with the right token marks it as logged in (under a
new id, so an id known before the login is worth nothing after it). The
CSRF token of a session is an HMAC of its id under a secret of this
process: nothing to store, and a form from another session does not pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Dict, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

__all__ = ["Sessions", "COOKIE"]

#: The name of the session cookie.
COOKIE = b"plugmgr_session"

#: Seconds a login lasts.
LOGIN_LIFETIME = 12 * 3600.0

#: At most this many logged-in sessions (and flash messages) are kept.
MAX_SESSIONS = 1000


class Sessions:
    """
    The sessions of one web service.

    @param token: the token actions need, or L{None}: then nobody can log
        in, and the dashboard is read-only.
    @param reactor: the clock logins expire on.
    """

    def __init__(self, token: Optional[str], reactor: IReactorTime) -> None:
        self._token = token.encode("utf-8") if token is not None else None
        self._reactor = reactor
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
                          httpOnly=True, sameSite="strict")
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
        return value is not None and hmac.compare_digest(self.csrf(session), value)

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
        (and cookie), returned; L{None} if the token is wrong.
        """
        if not self.token_ok(token):
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
        header = request.getHeader(b"authorization")
        if header is None:
            return False
        scheme, _, value = header.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

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
