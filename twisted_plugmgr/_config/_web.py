"""
The C{[web]} section: L{WebConfig} and its validation.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import attr

from ._endpoints import check_server_endpoint, resolve_unix_endpoint
from ._values import Checker

__all__ = ["WebConfig", "check_web", "WEB_KEYS"]


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class WebConfig:
    """
    The C{[web]} section: Prometheus metrics and the web dashboard.

    @ivar endpoint: a Twisted server endpoint string
        (C{"tcp:9180:interface=127.0.0.1"}; a UNIX socket path made
        absolute against the file's directory).
    @ivar token: the token the dashboard's actions (and, on an endpoint
        that is not loopback-only, C{/metrics}) need, or L{None} (then the
        C{[manager]} control token is used, if there is one).
    @ivar token_file: an absolute path to a file holding that token, or
        L{None}.
    @ivar metrics_public: whether C{/metrics} is served without the token
        even on an endpoint that is not loopback-only.
    """

    endpoint: str
    token: Optional[str] = None
    token_file: Optional[str] = None
    metrics_public: bool = False


#: The keys of the C{[web]} section, in the order error messages list them.
WEB_KEYS = ("endpoint", "token", "token_file", "metrics_public")


def check_web(check: Checker, value: Any) -> WebConfig:
    """
    Validate the C{[web]} table.

    @raise ConfigError: for a missing or unknown key, or an invalid value
        (the endpoint is checked by Twisted's own server endpoint parser).
    """
    section = check.table(value, "web")
    check.keys(section, WEB_KEYS, "web")
    if "endpoint" not in section:
        raise check.fail("web.endpoint", "missing (required in the [web] section), such as "
                                         "'tcp:9180:interface=127.0.0.1'")
    endpoint = check.endpoint(section["endpoint"], "web.endpoint")
    try:
        check_server_endpoint(endpoint)
    except ValueError as e:
        raise check.fail("web.endpoint", "expected a Twisted server endpoint string such as "
                                         f"'tcp:9180:interface=127.0.0.1' ({e})",
                         repr(endpoint)) from None
    kw: Dict[str, Any] = {"endpoint": resolve_unix_endpoint(endpoint, check.base_dir)}
    if "token" in section:
        kw["token"] = check.string(section["token"], "web.token")
        if any(c in kw["token"] for c in "\r\n"):
            raise check.fail("web.token", "expected no line breaks")
    if "token_file" in section:
        kw["token_file"] = check.path(section["token_file"], "web.token_file")
    if "token" in kw and "token_file" in kw:
        raise check.fail("web.token_file", "expected either token or token_file, not both")
    if "metrics_public" in section:
        kw["metrics_public"] = check.boolean(section["metrics_public"], "web.metrics_public")
    return WebConfig(**kw)
