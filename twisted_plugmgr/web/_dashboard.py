"""
The dashboard: the page (rendered by the server, then kept live by a
little plain JavaScript listening to C{/events}), the live fragments the
service pushes, and the forms: login, logout and the actions (load,
unload, reload, reconfig), each a POST carrying the session's CSRF token,
each needing a login with the token. On an endpoint reachable from other
hosts (a I{private} dashboard) the page itself needs the login: until
then it is the login form alone.
"""

from __future__ import annotations

import html
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .._errors import PluginError
from .._reconfig import ReconfigRefused
from ._auth import Sessions, client_of
from ._chart import Samples, svg_chart
from ._events import EventFeed, EventRow, ReloadRow

__all__ = ["Dashboard", "Page", "Login", "Logout", "Action", "Script", "ACTIONS", "FormError"]

#: The actions the dashboard offers; those that name a plugin.
ACTIONS = ("load", "unload", "reload", "reconfig")
_NAMED = ("load", "unload", "reload")

_log = Logger(namespace="twisted_plugmgr.web")

#: Headers every HTML answer carries: no script but ours, no framing.
_SECURITY_HEADERS = (
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
     b"img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


class FormError(Exception):
    """
    A form the dashboard refuses: its one line is shown on the page, and
    nothing changed.

    @ivar status: the HTTP status of the answer.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} \u00b5s"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class Dashboard:
    """
    What the page shows and what its forms do, for one web service.

    @param manager: the L{IPluginManager}.
    @param feed: the service's L{EventFeed}.
    @param samples: the handler time samples the charts are drawn from.
    @param sessions: the service's L{Sessions}.
    @param reconfig: a callable returning a Deferred with a
        C{ReconfigOutcome} (or failing with C{ReconfigRefused}), or L{None}
        when there is no config file to reconfigure from.
    @param minutes: how many minutes the charts cover (for their title).
    @param private: whether the page needs a login (or the token as a
        bearer token) to show anything but the login form.
    """

    def __init__(self, manager: Any, feed: EventFeed, samples: Samples, sessions: Sessions,
                 reconfig: Optional[Callable[[], Deferred[Any]]], minutes: float,
                 private: bool = False) -> None:
        self.private = private
        self.manager = manager
        self.feed = feed
        self.samples = samples
        self.sessions = sessions
        self.reconfig = reconfig
        self.minutes = minutes

    # -- the live fragments -------------------------------------------------

    def summary(self, plugins: Mapping[str, Any]) -> str:
        """
        One line: how many plugins, in which states.
        """
        states: Dict[str, int] = {}
        for p in plugins.values():
            states[p.info.state.value] = states.get(p.info.state.value, 0) + 1
        detail = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        return f"{len(plugins)} plugin{'s' if len(plugins) != 1 else ''}" + \
            (f": {detail}" if detail else "")

    def rows(self, plugins: Mapping[str, Any]) -> str:
        """
        The rows of the plugin table (the same for every session).
        """
        if not plugins:
            return '<tr class="empty"><td colspan="13">no plugin loaded</td></tr>'
        out: List[str] = []
        writable = self.sessions.writable
        for name, p in plugins.items():
            info = p.info
            title = _esc(f"{name}: handler time per {self._interval_text()}, "
                         f"last {self.minutes:g} min")
            chart = svg_chart(self.samples.series(name), self.samples.keep, title)
            actions = ""
            if writable:
                actions = "".join(
                    f'<button form="act" name="do" value="{verb} {_esc(name)}" '
                    f'class="{verb}" data-plugin="{_esc(name)}">{verb}</button>'
                    for verb in ("reload", "unload"))
            state = info.state.value
            broken = info.last_reload_error
            out.append(
                f'<tr id="plugin-{_esc(name)}" data-plugin="{_esc(name)}" data-state="{state}">'
                f'<td class="name" title="{_esc(info.longname)}">{_esc(name)}</td>'
                f'<td class="state {state}">{state}</td>'
                f'<td class="version">{_esc(info.version)}</td>'
                f'<td class="calls num">{info.calls}</td>'
                f'<td class="busy num">{_ms(info.busy_time)}</td>'
                f'<td class="longest num">{_ms(info.longest_call)}</td>'
                f'<td class="reloads num">{info.reloads}</td>'
                f'<td class="restarts num">{info.restarts}</td>'
                f'<td class="held num">{p.held}</td>'
                f'<td class="failure">{_esc(info.last_failure or "")}</td>'
                f'<td class="broken{" yes" if broken else ""}">{_esc(broken or "")}</td>'
                f'<td class="chart">{chart}</td>'
                f'<td class="actions">{actions}</td></tr>')
        return "".join(out)

    def _interval_text(self) -> str:
        seconds = self.minutes * 60 / max(1, self.samples.keep)
        return f"{seconds:g} s"

    def history(self) -> str:
        """
        The rows of the reload history, newest first.
        """
        rows: List[ReloadRow] = list(self.feed.history)[::-1]
        if not rows:
            return '<tr class="empty"><td colspan="4">no reload yet</td></tr>'
        return "".join(
            f'<tr class="{row.result}"><td>{_clock(row.at)}</td><td>{_esc(row.plugin)}</td>'
            f'<td class="result">{row.result}</td><td>{_esc(row.detail)}</td></tr>'
            for row in rows)

    def live(self) -> Dict[str, str]:
        """
        The fragments a C{table} event carries: rows, history, summary.
        """
        plugins = self.manager.metrics.plugins()
        return {"rows": self.rows(plugins), "history": self.history(),
                "summary": self.summary(plugins)}

    @staticmethod
    def event_item(row: EventRow) -> str:
        """
        One item of the event list.
        """
        text = f"{_clock(row.at)} {row.kind}" + (f" {row.plugin}" if row.plugin else "") + \
            (f": {row.text}" if row.text else "")
        return f'<li data-id="{row.id}" data-kind="{_esc(row.kind)}">{_esc(text)}</li>'

    # -- the page ------------------------------------------------------------

    def page(self, session: str, message: Optional[str] = None, error: bool = False,
             bearer: bool = False) -> bytes:
        """
        The whole page for C{session}, with C{message} (an error if
        C{error}) on top; the login form alone if the dashboard is
        L{private} and C{session} is not logged in (nor the request carried
        the token as a bearer token: C{bearer}).
        """
        sessions = self.sessions
        if self.private and not bearer and not sessions.logged_in(session):
            return self._login_page(session, message, error)
        plugins = self.manager.metrics.plugins()
        csrf = f'<input type="hidden" name="csrf" value="{sessions.csrf(session)}">'
        logged_in = sessions.logged_in(session)
        if not sessions.writable:
            account = '<span id="readonly">read-only: no token configured</span>'
        elif logged_in:
            account = (f'<form id="logout" method="post" action="logout">{csrf}'
                       '<span>logged in</span> <button>log out</button></form>')
        else:
            account = (f'<form id="login" method="post" action="login">{csrf}'
                       '<input type="password" name="token" placeholder="token" '
                       'autocomplete="current-password" aria-label="token"> '
                       '<button>log in</button></form>')
        notice = ""
        if message:
            notice = (f'<p id="message" class="{"error" if error else "ok"}" role="status">'
                      f'{_esc(_one_line(message))}</p>')
        forms = ""
        if sessions.writable:
            forms = (f'<form id="act" method="post" action="action">{csrf}</form>'
                     f'<form id="load" method="post" action="action">{csrf}'
                     '<input type="hidden" name="action" value="load">'
                     '<input name="plugin" placeholder="plugin name" aria-label="plugin name"> '
                     '<button>load</button></form>')
            if self.reconfig is not None:
                forms += (f'<form id="reconfig" method="post" action="action">{csrf}'
                          '<input type="hidden" name="action" value="reconfig">'
                          '<button>reconfig from the config file</button></form>')
        recent = list(self.feed.recent)
        since = recent[-1].id if recent else 0
        events = "".join(self.event_item(row) for row in recent[::-1][:100])
        head = "".join(f"<th>{h}</th>" for h in (
            "plugin", "state", "version", "calls", "busy", "longest", "reloads", "restarts",
            "held", "last failure", "file broken", f"handler time ({self.minutes:g} min)", ""))
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plugmgr</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<header><h1>plugmgr</h1><span id="summary">{_esc(self.summary(plugins))}</span>
<span id="live" class="off">connecting</span><span class="account">{account}</span></header>
{notice}
<section><h2>Plugins</h2>
<table id="plugins"><thead><tr>{head}</tr></thead><tbody id="rows">{self.rows(plugins)}</tbody>
</table>
<div class="forms">{forms}</div></section>
<div class="columns">
<section><h2>Events</h2><ol id="events" data-since="{since}">{events}</ol></section>
<section><h2>Reload history</h2><table id="reloads"><tbody id="history">{self.history()}</tbody>
</table></section>
</div>
<script src="dashboard.js"></script>
</body></html>
"""
        return body.encode("utf-8")

    def _login_page(self, session: str, message: Optional[str], error: bool) -> bytes:
        csrf = f'<input type="hidden" name="csrf" value="{self.sessions.csrf(session)}">'
        notice = ""
        if message:
            notice = (f'<p id="message" class="{"error" if error else "ok"}" role="status">'
                      f'{_esc(_one_line(message))}</p>')
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plugmgr</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<header><h1>plugmgr</h1><span class="account"><form id="login" method="post" action="login">{csrf}<input type="password" name="token" placeholder="token" autocomplete="current-password" aria-label="token"> <button>log in</button></form></span></header>
{notice}
<p id="private">Log in with the token to see the dashboard.</p>
</body></html>
"""  # noqa: E501
        return body.encode("utf-8")

    # -- the actions ------------------------------------------------------

    async def act(self, action: str, plugin: Optional[str]) -> str:
        """
        Do C{action} (on C{plugin}); return one line saying what was done.

        @raise FormError: for an unknown action, a missing plugin name, or
            an action that failed (nothing changed then).
        """
        if action not in ACTIONS:
            raise FormError(f"unknown action {action!r} (expected one of: {', '.join(ACTIONS)})")
        if action in _NAMED and not plugin:
            raise FormError(f"{action}: which plugin? (the plugin name is missing)")
        manager = self.manager
        try:
            if action == "load":
                instance = await manager.load(plugin)
                return f"loaded {plugin} (version {_version(instance)})"
            if action == "unload":
                await manager.unload(plugin, reason="unloaded from the dashboard")
                return f"unloaded {plugin}"
            if action == "reload":
                instance = await manager.reload(plugin)
                return f"reloaded {plugin} (version {_version(instance)})"
            if self.reconfig is None:
                raise FormError("reconfig: there is no config file to reconfigure from", 409)
            outcome = await self.reconfig()
            return f"reconfig: {outcome.summary()}"
        except FormError:
            raise
        except PluginError as e:
            raise FormError(f"{action} failed: {_one_line(str(e))}", 409) from None
        except ReconfigRefused as e:
            raise FormError(f"reconfig refused: {_one_line(str(e))}", 409) from None
        except Exception as e:
            _log.failure("dashboard {action} of {plugin!r} failed unexpectedly",
                         failure=Failure(), action=action, plugin=plugin)
            raise FormError(f"{action} failed: {type(e).__name__}: {_one_line(str(e))}",
                            500) from None


def _version(instance: Any) -> str:
    try:
        return str(getattr(instance, "version", "?"))
    except Exception:
        return "?"


def _fields(request: Request, names: Tuple[str, ...]) -> Dict[str, Optional[str]]:
    """
    The form fields C{names} of C{request} (the first value of each, or
    L{None}).

    @raise FormError: for a field that is not UTF-8 text.
    """
    args: Mapping[bytes, List[bytes]] = getattr(request, "args", None) or {}
    out: Dict[str, Optional[str]] = {}
    for name in names:
        values = args.get(name.encode("ascii"))
        if not values:
            out[name] = None
            continue
        try:
            out[name] = values[0].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise FormError(f"bad form: the field {name!r} is not UTF-8 text") from None
    return out


def _html(request: Request, status: int = 200) -> None:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    for name, value in _SECURITY_HEADERS:
        request.setHeader(name, value)


def _see_other(request: Request) -> bytes:
    request.setResponseCode(303)
    request.setHeader(b"location", b"./")
    request.setHeader(b"cache-control", b"no-store")
    return b""


class _Base(Resource):
    isLeaf = True

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self.dashboard = dashboard

    def refuse(self, request: Request, session: str, error: FormError) -> bytes:
        _html(request, error.status)
        return self.dashboard.page(session, str(error), error=True)

    def checked(self, request: Request, session: str, login: bool) -> Dict[str, Optional[str]]:
        """
        The form's fields, once the form passed the checks: a token is
        configured, the CSRF token is right, and (if C{login}) the session
        is logged in.
        """
        sessions = self.dashboard.sessions
        if not sessions.writable:
            raise FormError("refused: the dashboard is read-only (no token is configured: "
                            "[web] token or token_file, or [manager] control_token)", 403)
        fields = _fields(request, ("csrf", "token", "action", "plugin", "do"))
        if not sessions.csrf_ok(session, fields["csrf"]):
            raise FormError("refused: the form's CSRF token is missing or wrong "
                            "(load the page again)", 403)
        if login and not sessions.logged_in(session):
            raise FormError("refused: log in with the token first", 403)
        return fields


def _throttled(resource: _Base, request: Request, session: str) -> bytes:
    """
    429: the client gave too many wrong tokens (nothing else looked at).
    """
    retry = resource.dashboard.sessions.throttle.retry_after(client_of(request)) or 1
    request.setHeader(b"retry-after", str(retry).encode("ascii"))
    return resource.refuse(request, session, FormError(
        f"refused: too many wrong tokens from this address; try again in {retry} s", 429))


class Page(_Base):
    """
    C{/}: the dashboard.
    """

    def render_GET(self, request: Request) -> bytes:
        """
        The page, with the message the last form left, if any.
        """
        sessions = self.dashboard.sessions
        session = sessions.session(request)
        bearer = sessions.bearer(request) if self.dashboard.private else "missing"
        if bearer == "throttled":
            return _throttled(self, request, session)
        message = sessions.take_flash(session)
        _html(request)
        return self.dashboard.page(session, message, bearer=bearer == "ok")


class Login(_Base):
    """
    C{/login}: log in with the token.
    """

    def render_POST(self, request: Request) -> bytes:
        """
        Log in, then back to the page; or the page with why not.
        """
        sessions = self.dashboard.sessions
        session = sessions.session(request)
        if sessions.throttle.retry_after(client_of(request)) is not None:
            return _throttled(self, request, session)
        try:
            fields = self.checked(request, session, login=False)
            fresh = sessions.login(request, session, fields["token"])
            if fresh is None:
                raise FormError("refused: wrong token", 403)
        except FormError as e:
            return self.refuse(request, session, e)
        sessions.flash(fresh, "logged in")
        return _see_other(request)


class Logout(_Base):
    """
    C{/logout}: end the login.
    """

    def render_POST(self, request: Request) -> bytes:
        """
        Log out, then back to the page.
        """
        sessions = self.dashboard.sessions
        session = sessions.session(request)
        try:
            self.checked(request, session, login=False)
        except FormError as e:
            return self.refuse(request, session, e)
        sessions.flash(sessions.logout(request, session), "logged out")
        return _see_other(request)


class Action(_Base):
    """
    C{/action}: load, unload, reload or reconfig (fields C{action} and
    C{plugin}, or C{do} = C{"ACTION PLUGIN"} from a row's button).
    """

    def render_POST(self, request: Request) -> Any:
        """
        Do the action, then back to the page saying what was done; or the
        page with one line saying why nothing was.
        """
        sessions = self.dashboard.sessions
        session = sessions.session(request)
        try:
            fields = self.checked(request, session, login=True)
            action, plugin = fields["action"], fields["plugin"]
            if fields["do"]:
                action, _, plugin = fields["do"].partition(" ")
            if not action:
                raise FormError("bad form: which action? (the action is missing)")
        except FormError as e:
            return self.refuse(request, session, e)
        gone: List[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = ensureDeferred(self.dashboard.act(action, plugin or None))

        def done(message: str) -> None:
            if gone:
                return
            sessions.flash(session, message)
            request.write(_see_other(request))
            request.finish()

        def failed(failure: Failure) -> None:
            if gone:
                return
            error = failure.value if failure.check(FormError) else FormError(
                f"{action} failed: {failure.getErrorMessage()}", 500)
            request.write(self.refuse(request, session, error))
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET


class Script(Resource):
    """
    C{/dashboard.js}: what keeps the page live.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        The script.
        """
        request.setHeader(b"content-type", b"text/javascript; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return _SCRIPT.encode("utf-8")


_SCRIPT = """\
"use strict";
(function () {
  var live = document.getElementById("live");
  var list = document.getElementById("events");
  var since = list.getAttribute("data-since") || "0";
  var source = new EventSource("events?since=" + encodeURIComponent(since));
  source.addEventListener("open", function () {
    live.textContent = "live"; live.className = "on";
  });
  source.addEventListener("error", function () {
    live.textContent = "reconnecting"; live.className = "off";
  });
  source.addEventListener("table", function (e) {
    var d = JSON.parse(e.data);
    document.getElementById("rows").innerHTML = d.rows;
    document.getElementById("history").innerHTML = d.history;
    document.getElementById("summary").textContent = d.summary;
  });
  source.addEventListener("plugin", function (e) {
    var d = JSON.parse(e.data);
    if (list.querySelector('[data-id="' + d.id + '"]')) { return; }
    var li = document.createElement("li");
    li.setAttribute("data-id", d.id);
    li.setAttribute("data-kind", d.kind);
    var at = new Date(d.at * 1000).toTimeString().slice(0, 8);
    li.textContent = at + " " + d.kind + (d.plugin ? " " + d.plugin : "") +
      (d.text ? ": " + d.text : "");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 100) { list.removeChild(list.lastChild); }
  });
})();
"""

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fafafa}
header{display:flex;gap:1em;align-items:center;flex-wrap:wrap;border-bottom:1px solid #ddd}
h1{font-size:1.3em;margin:.6em 0}h2{font-size:1.05em;margin:1.2em 0 .4em}
#live{font-size:.8em;padding:.1em .5em;border-radius:1em;background:#eee}
#live.on{background:#d4f5d4;color:#164}#live.off{background:#f5e6c8;color:#740}
.account{margin-left:auto}
table{border-collapse:collapse;background:#fff}
th,td{padding:.3em .6em;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
th{font-weight:600;font-size:.85em;color:#555}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.state.running{color:#164}td.state.quarantined,td.state.failed{color:#a00}
td.state.reloading,td.state.restarting,td.state.starting{color:#740}
td.broken.yes,td.failure{color:#a00;max-width:18em;font-size:.85em}
td.chart{color:#2a5db0}
#message{padding:.5em .8em;border-radius:.3em}#message.ok{background:#e3f4e3}
#message.error{background:#fbe3e3;color:#800}
.forms{display:flex;gap:1em;margin-top:.6em}
.columns{display:grid;grid-template-columns:1fr 1fr;gap:2em}
#events{font:12px/1.5 ui-monospace,monospace;max-height:24em;overflow:auto;margin:0;
padding:.3em .6em;list-style:none;background:#fff;border:1px solid #eee}
#events li[data-kind$="failed"],#events li[data-kind="plugin_error"]{color:#a00}
tr.failed td.result{color:#a00}tr.ok td.result{color:#164}
button{font:inherit;padding:.1em .6em}
"""
