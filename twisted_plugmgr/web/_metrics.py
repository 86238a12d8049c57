"""
C{/metrics}: the Prometheus collector that reads the manager's counts at
scrape time, its own registry, and the resource serving it (through
C{prometheus_client}'s Twisted resource), behind the bearer token where
the endpoint needs one.
"""

from __future__ import annotations

from typing import Any, Iterator, List, Sequence, Tuple

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Request

from .._delivery import RELOAD_BUCKETS
from .._lifecycle import PluginState
from .._registry import HANDLER_BUCKETS
from ._auth import Sessions, client_of
from ._events import EventFeed

__all__ = ["PlugmgrCollector", "metrics_registry", "GuardedMetrics"]


def _cumulative(bounds: Sequence[float], counts: Sequence[int]) -> List[Tuple[str, float]]:
    out: List[Tuple[str, float]] = []
    total = 0
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        out.append((repr(float(bound)), float(total)))
    total += counts[len(bounds)] if len(counts) > len(bounds) else 0
    out.append(("+Inf", float(total)))
    return out


class PlugmgrCollector:
    """
    The C{plugmgr_*} metrics of one manager, read when scraped.

    @param metrics: the manager's L{HandlerMetrics} (C{manager.metrics}).
    @param feed: the web service's L{EventFeed} (events and reloads).
    """

    def __init__(self, metrics: Any, feed: EventFeed) -> None:
        self._metrics = metrics
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        """
        Every family, from the counts as they are now.
        """
        plugins = self._metrics.plugins()
        up = GaugeMetricFamily("plugmgr_plugin_up", "Whether the plugin is running (1) or not (0).",
                               labels=["plugin"])
        calls = CounterMetricFamily("plugmgr_handler_calls", "Handler calls, per plugin and event.",
                                    labels=["plugin", "event"])
        seconds = HistogramMetricFamily("plugmgr_handler_seconds",
                                        "Time spent in a plugin's handlers, per call.",
                                        labels=["plugin"])
        errors = CounterMetricFamily("plugmgr_handler_errors",
                                     "Handler calls that raised or whose Deferred failed.",
                                     labels=["plugin"])
        restarts = CounterMetricFamily("plugmgr_restarts",
                                       "Restarts by the plugin's supervisor since it was loaded.",
                                       labels=["plugin"])
        held = GaugeMetricFamily("plugmgr_held_messages",
                                 "Messages held for the plugin until it runs.", labels=["plugin"])
        states = {state.value: 0 for state in PluginState}
        for name, p in plugins.items():
            states[p.info.state.value] += 1
            up.add_metric([name], 1.0 if p.info.state is PluginState.RUNNING else 0.0)
            for event, count in sorted(p.calls.items()):
                calls.add_metric([name, event], float(count))
            seconds.add_metric([name], _cumulative(HANDLER_BUCKETS, p.buckets), p.seconds)
            errors.add_metric([name], float(p.errors))
            restarts.add_metric([name], float(p.info.restarts))
            held.add_metric([name], float(p.held))
        yield from (up, calls, seconds, errors)
        reloads = CounterMetricFamily("plugmgr_reloads", "Reloads, per plugin and result.",
                                      labels=["plugin", "result"])
        for (name, result), count in sorted(self._feed.reloads.items()):
            reloads.add_metric([name, result], float(count))
        yield reloads
        yield HistogramMetricFamily(
            "plugmgr_reload_seconds", "Time a reload (or a transaction of reloads) took.",
            buckets=_cumulative(RELOAD_BUCKETS, self._metrics.reload_buckets),
            sum_value=self._metrics.reload_seconds)
        yield restarts
        yield held
        by_state = GaugeMetricFamily("plugmgr_plugins", "Plugins loaded, per state.",
                                     labels=["state"])
        for state, count in states.items():
            by_state.add_metric([state], float(count))
        yield by_state
        events = CounterMetricFamily("plugmgr_events", "Events the manager broadcast, per kind.",
                                     labels=["kind"])
        for kind, count in sorted(self._feed.counts.items()):
            events.add_metric([kind], float(count))
        yield events


def metrics_registry(metrics: Any, feed: EventFeed) -> CollectorRegistry:
    """
    A registry of its own (never the global one) holding a
    L{PlugmgrCollector}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlugmgrCollector(metrics, feed))
    return registry


class GuardedMetrics(Resource):
    """
    C{prometheus_client}'s C{MetricsResource}, answering 401 unless the
    request carries the token as a bearer token, when C{guarded} (429 for a
    client address that gave too many wrong tokens).
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, sessions: Sessions, guarded: bool) -> None:
        super().__init__()
        self._inner = MetricsResource(registry=registry)
        self._sessions = sessions
        self.guarded = guarded

    def render(self, request: Request) -> Any:
        """
        The metrics, or 401.
        """
        bearer = self._sessions.bearer(request) if self.guarded else "ok"
        if bearer == "throttled":
            retry = self._sessions.throttle.retry_after(client_of(request)) or 1
            request.setResponseCode(429)
            request.setHeader(b"retry-after", str(retry).encode("ascii"))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"too many wrong tokens from this address: try again later\n"
        if bearer != "ok":
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer realm="plugmgr"')
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"/metrics needs the token as a bearer token (Authorization: Bearer ...)\n"
        return self._inner.render(request)
