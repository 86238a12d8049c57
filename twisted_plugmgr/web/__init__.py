"""
Observability: Prometheus metrics and a live web dashboard of a
L{PluginManager<twisted_plugmgr.PluginManager>}::

    web = WebService(manager, "tcp:9180:interface=127.0.0.1", token="s3cret")
    web.setServiceParent(application)

C{/metrics} serves the C{plugmgr_*} metrics in the Prometheus text format
(through C{prometheus_client}'s Twisted resource, from a registry of the
service's own); C{/} is the dashboard: the plugin table kept live, the
event stream (Server-Sent Events at C{/events}), each plugin's handler time
as a small chart, the reload history, and -- once logged in with the token
-- load, unload, reload and reconfig.

One module per job: C{_auth} (session cookie, login, CSRF, bearer token),
C{_events} (the manager's events: counts, history, SSE), C{_chart} (handler
time samples, inline SVG), C{_metrics} (the collector and C{/metrics}),
C{_dashboard} (the page and its forms), C{_service} (the service, the
endpoint check, the quiet site).
"""

from ._service import (
    EndpointRefused,
    WebListenError,
    WebService,
    check_web_port,
    loopback_only,
    make_web_service,
)

__all__ = ["WebService", "make_web_service", "EndpointRefused", "WebListenError",
           "loopback_only", "check_web_port"]
