"""
Helpers for people who test plugins (ours included): an event recorder, a
fake L{IPluginAPI} to construct a plugin without a manager (L{make_plugin}
constructs one as a manager would, its data checked against its
C{Config}), a fake L{IPluginManager} for what talks to a manager, a manager
on a L{Clock}, and synchronous access to the results of Deferreds.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, Dict, List, Optional, Tuple, Type

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._events import PluginEvent
from ._fake import FakePlugin, FakePluginManager
from ._interfaces import IPluginAPI
from ._manager import PluginManager
from ._plugin import LiveReference
from ._reactor import PluginReactor
from ._schema import data_for

__all__ = [
    "EventRecorder",
    "FakePluginAPI",
    "make_plugin",
    "FakePlugin",
    "FakePluginManager",
    "clock_manager",
    "result_of",
    "failure_of",
    "write_plugin",
    "plugin_modules",
]


class EventRecorder:
    """
    A listener that keeps every event it is given.

    @ivar events: the events, in order.
    """

    def __init__(self) -> None:
        self.events: List[PluginEvent] = []

    def __call__(self, event: PluginEvent) -> None:
        self.events.append(event)

    def kinds(self, plugin: Any = ...) -> List[str]:
        """
        The kinds of the events received (about C{plugin}, if given).
        """
        return [e.kind for e in self.events if plugin is ... or e.plugin == plugin]

    def of(self, kind: str) -> List[PluginEvent]:
        """
        The events of C{kind}.
        """
        return [e for e in self.events if e.kind == kind]

    def clear(self) -> None:
        """
        Forget every event received so far.
        """
        self.events.clear()


@implementer(IPluginAPI)
class FakePluginAPI:
    """
    An L{IPluginAPI} that records what a plugin does with it, for testing a
    plugin without a manager. C{call} and C{emit} answer from C{answers}
    (event -> value), or with L{None}.

    @ivar warnings: messages given to L{warning}.
    @ivar errors: Failures given to L{error}.
    @ivar posts: (plugin, event, args, kw) given to L{post}.
    @ivar calls: (plugin, event, args, kw) given to L{call}.
    @ivar emits: (event, args, kw) given to L{emit}.
    @ivar stops: the reasons given to L{stop}.
    @ivar failures: what was given to L{fail}, as Failures.
    @ivar clock: the L{Clock} behind C{reactor}.
    """

    def __init__(self, name: str = "plugin", manager: Any = None,
                 clock: Optional[Clock] = None) -> None:
        self.name = name
        self.manager = manager
        self.log = Logger(namespace=f"twisted_plugmgr.plugins.{name}")
        self.clock = clock if clock is not None else Clock()
        self.reactor = PluginReactor(self.clock, name, on_error=self.error)
        self.warnings: List[str] = []
        self.errors: List[Failure] = []
        self.posts: List[Tuple[str, str, tuple, dict]] = []
        self.calls: List[Tuple[str, str, tuple, dict]] = []
        self.emits: List[Tuple[str, tuple, dict]] = []
        self.stops: List[str] = []
        self.failures: List[Failure] = []
        self.answers: Dict[str, Any] = {}

    def warning(self, message: str) -> None:
        """
        Record a warning.
        """
        self.warnings.append(message)

    def error(self, failure_or_exception: Any) -> None:
        """
        Record an error, as a Failure.
        """
        if not isinstance(failure_or_exception, Failure):
            failure_or_exception = Failure(failure_or_exception)
        self.errors.append(failure_or_exception)

    def post(self, plugin: str, event: str, *args: Any, **kw: Any) -> None:
        """
        Record a post.
        """
        self.posts.append((plugin, event, args, kw))

    def call(self, plugin: str, event: str, *args: Any, **kw: Any) -> Deferred:
        """
        Record a call; answer from C{answers}.
        """
        self.calls.append((plugin, event, args, kw))
        return succeed(self.answers.get(event))

    def emit(self, event: str, *args: Any, **kw: Any) -> Deferred:
        """
        Record an emit; answer C{[answers[event]]} or C{[]}.
        """
        self.emits.append((event, args, kw))
        return succeed([self.answers[event]] if event in self.answers else [])

    def plugin(self, name: str) -> LiveReference:
        """
        A live reference through C{manager} (which must be set).
        """
        return LiveReference(self.manager, name)

    def looping_call(self, f: Any, *args: Any, **kw: Any) -> LoopingCall:
        """
        A looping call on the fake clock.
        """
        return self.reactor.looping_call(f, *args, **kw)

    def fail(self, reason: Any = None) -> None:
        """
        Record that the plugin declared itself broken, as a Failure.
        """
        self.failures.append(reason if isinstance(reason, Failure) else Failure(
            reason if isinstance(reason, BaseException) else RuntimeError(str(reason))))

    def stop(self, reason: str = "", mode: Any = "smart") -> Deferred:
        """
        Record that the plugin ended itself; answer C{reason} as its quit
        message.
        """
        self.stops.append(reason)
        return succeed(reason)


def make_plugin(cls: Any, data: Any = None, api: Any = None) -> Any:
    """
    Construct plugin class C{cls} as its manager would, without one: its
    C{data} checked against its C{Config} first (the plugin is given an
    instance of it), then C{cls(api, data)}.

    @param data: what C{load} would be given (a mapping, an instance of its
        C{Config}, or L{None}).
    @param api: what the plugin is given (the name in errors is its
        C{name}); by default a L{FakePluginAPI} named after C{cls.name}.
    @return: the plugin, not started (call its C{startService}).
    @raise InvalidData: when C{data} does not fit its C{Config}, naming
        each key, as a C{load} would.
    @raise InvalidMetadata: when its C{Config} is not a schema.
    """
    name = str(getattr(api, "name", None) or getattr(cls, "name", None) or "plugin")
    data = data_for(name, cls, data)
    return cls(api if api is not None else FakePluginAPI(name), data)


def clock_manager(paths: Any = (), packages: Any = (), start: bool = True,
                  **kw: Any) -> Tuple[PluginManager, Clock, EventRecorder]:
    """
    A L{PluginManager} on a fresh L{Clock}, with an L{EventRecorder}
    registered, started unless C{start} is false. Its check for old code
    still referenced is off unless C{old_code_grace} is given (it would
    leave a call on the clock after every unload and reload).
    """
    kw.setdefault("old_code_grace", None)
    clock = Clock()
    manager = PluginManager(packages=packages, paths=[str(p) for p in paths], reactor=clock, **kw)
    recorder = EventRecorder()
    manager.register(recorder)
    if start:
        manager.startService()
    return manager, clock, recorder


_PENDING: Any = object()


def result_of(d: Deferred) -> Any:
    """
    The result of C{d}, which must have fired successfully.

    @raise AssertionError: if it has not fired, or failed.
    """
    box: List[Any] = []
    d.addBoth(box.append)
    if not box:
        raise AssertionError(f"{d!r} has not fired")
    result = box[0]
    if isinstance(result, Failure):
        d.addErrback(lambda f: None)
        raise AssertionError(f"{d!r} failed: {result.getTraceback()}")
    return result


def failure_of(d: Deferred, *types: Type[BaseException]) -> Failure:
    """
    The Failure of C{d}, which must have failed (with one of C{types}, if
    given). The failure is consumed.

    @raise AssertionError: if it has not fired, succeeded, or failed with
        another type.
    """
    box: List[Any] = []
    d.addBoth(box.append)
    if not box:
        raise AssertionError(f"{d!r} has not fired")
    result = box[0]
    if not isinstance(result, Failure):
        raise AssertionError(f"{d!r} succeeded with {result!r}")
    if types and not result.check(*types):
        raise AssertionError(f"{d!r} failed with {result.type.__name__}, not {types}: "
                             f"{result.getTraceback()}")
    return result


def write_plugin(directory: Any, name: str, body: str = "", *, version: str = "1.0",
                 header: str = "", meta: str = "", cls: str = "") -> str:
    """
    Write a plugin module C{name}.py into C{directory} and return its path.

    C{body} is indented into a C{Plugin} subclass that already has C{name}
    and C{version} (and C{longname}, C{license}, C{author}); C{header} goes
    before the class (imports). C{meta} replaces the metadata lines; C{cls}
    replaces the whole class.
    """
    metadata = meta if meta else (
        f"name = {name!r}\nversion = {version!r}\nlongname = 'test plugin {name}'\n"
        "license = 'MIT'\nauthor = 'tests'\n"
    )
    source = "from twisted_plugmgr import Plugin, handler, STOP\n" + textwrap.dedent(header) + "\n"
    if cls:
        source += textwrap.dedent(cls)
    else:
        source += f"class P_{name}(Plugin):\n" + textwrap.indent(
            metadata + textwrap.dedent(body), "    "
        )
    path = os.path.join(str(directory), f"{name}.py")
    with open(path, "w") as f:
        f.write(source)
    return path


def plugin_modules(manager: PluginManager) -> List[str]:
    """
    The sorted names of the modules in C{sys.modules} that C{manager}
    imported its plugins under (see L{PluginManager.module_prefix}): empty
    once every plugin is unloaded.
    """
    prefix = manager.module_prefix
    return sorted(name for name in sys.modules if name.startswith(prefix))
