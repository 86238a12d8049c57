"""
The plugin host: what a plugin's API reaches of its manager beyond
L{IPluginManager} (L{IPluginHost}) -- live references, reports, and a
plugin ending itself or declaring itself broken.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import NoSuchPlugin
from ._events import Reporter
from ._interfaces import IPluginHost
from ._lifecycle import ShutdownMode
from ._registry import HANDLER_BUCKETS, Record, Registry

__all__ = ["Host"]


@implementer(IPluginHost)
class Host:
    """
    One manager's L{IPluginHost}.

    @param registry: the manager's records.
    @param reporter: where reports go.
    @param end: called with a record, a reason and a mode when its plugin
        ends itself.
    @param failed: called with a record, a Failure and a cause when its
        plugin fails.
    @param fails_on_error: whether a record's policy makes a timer error a
        failure.
    """

    def __init__(self, registry: Registry, reporter: Reporter,
                 end: Callable[[Record, str, ShutdownMode], Deferred[Any]],
                 failed: Callable[[Record, Failure, str], None],
                 fails_on_error: Callable[[Record], bool]) -> None:
        self._registry = registry
        self._reporter = reporter
        self._end = end
        self._failed = failed
        self._fails_on_error = fails_on_error

    def _current(self, name: str, api: Any) -> Union[Record, None]:
        """
        The record of C{name} if C{api} belongs to the version that serves
        it, or that is being started in its place (by a reload or a
        restart); not the old version of a reload under way.
        """
        record = self._registry.get(name)
        if record is None:
            return None
        if record.starting is not None:
            return record if record.starting.api is api else None
        if record.version is None or record.version.api is not api:
            return None
        return record

    def instance_of(self, name: str) -> Any:
        """
        L{IPluginHost.instance_of}.
        """
        record = self._registry.get(name)
        if record is None or record.instance is None or not record.lifecycle.addressable:
            raise NoSuchPlugin(name, "not loaded")
        return record.instance

    def report_error(self, name: str, failure: Failure) -> None:
        """
        L{IPluginHost.report_error}.
        """
        self._reporter.error(name, failure)

    def report_warning(self, name: str, message: str) -> None:
        """
        L{IPluginHost.report_warning}.
        """
        self._reporter.warning(name, message)

    def charge(self, name: str, api: Any, seconds: float) -> None:
        """
        Count C{seconds} spent by a handler of plugin C{name} elsewhere than
        in the manager (an isolated plugin's, in its worker) in its
        C{busy_time} and C{longest_call}, if C{api} is its serving version's;
        while metrics are on, also in the bucket of C{plugmgr_handler_seconds}
        that C{seconds} falls in (the call itself was counted when it was
        sent).
        """
        record = self._current(name, api)
        if record is not None:
            record.busy_time += seconds
            if seconds > record.longest_call:
                record.longest_call = seconds
            counts = record.counts
            if counts.paused_at is None and seconds > HANDLER_BUCKETS[0]:  # metrics are on
                counts.buckets[bisect_left(HANDLER_BUCKETS, seconds)] += 1

    def timer_error(self, name: str, api: Any, failure: Failure, report: bool = True) -> None:
        """
        L{IPluginHost.timer_error}; without C{report}, it is a failure only
        (with C{fail_on_error}), not a C{plugin_error} (a C{deferLater}'s
        failure is its holder's to report).
        """
        if report:
            self._reporter.error(name, failure)
        record = self._current(name, api)
        if record is not None and self._fails_on_error(record):
            self._failed(record, failure, "error")

    def fail_plugin(self, name: str, api: Any, failure: Failure, cause: str) -> None:
        """
        L{IPluginHost.fail_plugin}: an instance that no longer serves is
        reported, not failed.
        """
        record = self._current(name, api)
        if record is None:
            self._reporter.error(name, failure)
            return
        self._failed(record, failure, cause)

    def removed(self, service: Any) -> Optional[Deferred[Any]]:
        """
        C{service} was removed from the manager's children: if it is a
        plugin's instance, the plugin ends itself (the Deferred of that);
        else L{None}.
        """
        for record in self._registry:
            if record.instance is service and record.version is not None:
                return self.stop_plugin(record.name, record.version.api,
                                        f"{record.name} was removed from its parent")
        return None

    def stop_plugin(self, name: str, api: Any, reason: str = "",
                    mode: Union[ShutdownMode, str] = ShutdownMode.SMART) -> Deferred[Any]:
        """
        L{IPluginHost.stop_plugin}.
        """
        record = self._current(name, api)
        if record is None or not record.lifecycle.addressable:
            return fail(NoSuchPlugin(name, "this instance of it is not the one serving"))
        try:
            mode = ShutdownMode.coerce(mode)
        except ValueError as e:
            return fail(e)
        reason = reason or f"{name} stopped itself"
        if record.lifecycle.reloading:
            # The new version of a reload under way ends itself once the
            # reload is over (if it is the one serving then).
            def settled(_: Any) -> Deferred[Any]:
                if self._current(name, api) is record and record.lifecycle.serving:
                    return self._end(record, reason, mode)
                return fail(NoSuchPlugin(name, "this instance of it is not the one serving"))

            return record.when_settled().addCallback(settled)
        return self._end(record, reason, mode)
