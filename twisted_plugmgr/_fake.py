"""
L{FakePluginManager}: an L{IPluginManager} with no plugin code behind it,
for testing what talks to a manager. Public through L{twisted_plugmgr.testing}.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from ._delivery import RELOAD_BUCKETS, PluginMetrics
from ._details import PluginDetails
from ._errors import (
    AlreadyLoaded,
    InitFailed,
    ManagerStopped,
    NoSuchPlugin,
    PluginError,
    PluginQuarantined,
    ReloadFailed,
)
from ._events import Listener, Listeners, PluginEvent
from ._interfaces import IPluginManager
from ._isolate._options import DEFAULT_CALL_DEADLINE, check_options, split_options
from ._lifecycle import PluginState, ShutdownMode
from ._manager import PluginInfo
from ._policy import RestartPolicy
from ._source import check_name

__all__ = ["FakePlugin", "FakePluginManager"]


def _mode(mode: Any) -> Any:
    """
    C{mode} as a L{ShutdownMode}, or as given if it is not one.
    """
    try:
        return ShutdownMode.coerce(mode)
    except ValueError:
        return mode


def _checked(name: str, given: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """
    The restart policy keys and the isolation options in C{given}, checked
    as the real manager checks them.

    @raise PluginError: naming C{name} and the key that is not one or has a
        bad value.
    """
    keys, options = split_options(given)
    try:
        RestartPolicy().evolve(**keys)
        return keys, check_options(options)
    except ValueError as e:
        raise PluginError(name, str(e)) from None


def _details(row: PluginInfo, options: Mapping[str, Any]) -> PluginDetails:
    """
    The L{PluginDetails} of a fake plugin with the row C{row}, given the
    isolation C{options}: when isolated, their call deadline (else the
    default) and limits.
    """
    isolated = options.get("isolate") is True
    return PluginDetails(info=row, requires=(), dependents=(), files={},
                         policy=RestartPolicy(), old_versions=(),
                         isolation_options=dict(options),
                         call_deadline=options.get("call_deadline", DEFAULT_CALL_DEADLINE)
                         if isolated else None,
                         limits=dict(options.get("limits", {})) if isolated else {})


class FakePlugin:
    """
    A plugin as L{FakePluginManager} loads it: no code, only what a manager
    shows of a plugin.

    @ivar name: the name it was loaded under.
    @ivar data: the data it was constructed with.
    @ivar version: the version its source had when it was loaded.
    @ivar longname: its one-line description.
    @ivar loaded_at: the clock's time when it was loaded.
    @ivar reloads: how many times it was reloaded.
    @ivar policy: the restart policy keys it was loaded with (those given,
        not L{None}).
    @ivar isolation: the isolation options it was loaded (or last reloaded)
        with, checked: with C{isolate} true its row shows it isolated (no
        worker runs: its C{pid} is L{None}).
    @ivar state: the L{PluginState} its row shows: C{RUNNING}, unless a test
        changes it (L{FakePluginManager.quarantine} does).
    @ivar restarts: the restarts its row shows (a test may set it).
    @ivar last_failure: the last failure its row shows, one line, or
        L{None} (a test may set it).
    """

    def __init__(self, name: str, data: Any, version: str, loaded_at: float = 0.0,
                 reloads: int = 0, policy: Optional[Mapping[str, Any]] = None,
                 isolation: Optional[Mapping[str, Any]] = None) -> None:
        self.name = name
        self.data = data
        self.version = version
        self.longname = f"the {name} plugin"
        self.loaded_at = loaded_at
        self.reloads = reloads
        self.policy: Dict[str, Any] = dict(policy or {})
        self.isolation: Dict[str, Any] = dict(isolation or {})
        self.state = PluginState.RUNNING
        self.restarts = 0
        self.last_failure: Optional[str] = None


@implementer(IPluginManager)
class FakePluginManager:
    """
    An L{IPluginManager} with no plugin code behind it, for testing what
    talks to a manager: a tool, a control channel, a plugin that calls its
    C{manager}. Every method answers at once (a Deferred that has fired)
    and is recorded in C{calls}.

    Its "disk" is C{sources}: the plugins that could be loaded, with the
    version of their source. C{load} makes a L{FakePlugin} of that version;
    change a version to simulate an edit, and C{reload_changed} reloads
    that plugin. Names are checked as the real manager checks them: an
    invalid name fails with L{InvalidName}, an unknown or unloaded one with
    L{NoSuchPlugin}, a second load with L{AlreadyLoaded}, anything after
    C{shutdown} with L{ManagerStopped}, a restart policy key or isolation
    option that is not one or has a bad value with a L{PluginError} naming
    the key, and a call to
    a quarantined plugin with L{PluginQuarantined}. C{reload_many} fails
    only with L{ReloadFailed}, naming the plugin, and changes nothing.

    Nothing fails or restarts by itself: a test sets a plugin's C{restarts}
    and C{last_failure}, or L{quarantine}s it; L{reset} clears the count and
    starts a quarantined plugin afresh.

    It broadcasts C{plugin_started}, C{plugin_unloaded},
    C{plugin_reloaded}, C{plugin_quarantined}, C{plugin_table} and
    C{plugin_manager_shutdown}; a test may L{broadcast} any other event
    itself.

    @ivar sources: name -> the version of its source.
    @ivar broken: name -> the exception loading or reloading that plugin
        fails with (a L{CompileFailed} for a source that does not import;
        anything else to simulate a bug).
    @ivar plugins: name -> the loaded L{FakePlugin}.
    @ivar calls: every call, in order, as C{(method name, arguments...)};
        modes are recorded as L{ShutdownMode}s, a C{load} given policy
        keys or isolation options as C{("load", name, data, {key: value})},
        a C{reload} given isolation options with them last, and a
        C{reload_many} as C{("reload_many", [names...], data, mode)}.
    @ivar answers: event -> what C{call} answers (and C{emit} answers in a
        list); L{None} (an empty list) for other events.
    @ivar listeners: the registered listeners (their C{len} is how many).
    @ivar watching: the debounce given to C{watch} while watching, else
        L{None}.
    @ivar stopped: whether C{shutdown} was called.
    @ivar clock: the clock plugins' C{loaded_at} comes from.
    """

    def __init__(self, sources: Union[Mapping[str, str], Iterable[str]] = (),
                 clock: Optional[Clock] = None) -> None:
        if isinstance(sources, Mapping):
            self.sources: Dict[str, str] = dict(sources)
        else:
            self.sources = {name: "1.0" for name in sources}
        self.broken: Dict[str, BaseException] = {}
        self.plugins: Dict[str, FakePlugin] = {}
        self.calls: List[Tuple[Any, ...]] = []
        self.answers: Dict[str, Any] = {}
        self.listeners = Listeners()
        self.watching: Optional[float] = None
        self.stopped = False
        self.clock = clock if clock is not None else Clock()
        self._metrics = FakeMetrics(self)

    def broadcast(self, event: PluginEvent) -> None:
        """
        Give C{event} to every listener, as the manager would.
        """
        self.listeners.broadcast(event)

    def _loaded(self, name: Any) -> FakePlugin:
        check_name(name)
        if name not in self.plugins:
            raise NoSuchPlugin(name)
        return self.plugins[name]

    def _build(self, name: str, data: Any, reloads: int = 0,
               policy: Optional[Mapping[str, Any]] = None,
               isolation: Optional[Mapping[str, Any]] = None) -> FakePlugin:
        if name in self.broken:
            raise self.broken[name]
        if name not in self.sources:
            raise NoSuchPlugin(name)
        return FakePlugin(name, data, self.sources[name], self.clock.seconds(), reloads,
                          policy, isolation)

    def load(self, name: Any, data: Any = None, **policy: Any) -> Deferred[FakePlugin]:
        """
        Load C{name} from C{sources} under the restart C{policy} keys and
        isolation options given (L{None}: not given); broadcast
        C{plugin_started}. A quarantined plugin is started afresh with
        C{data}, C{policy} and isolation options (as L{reset} does, its
        restarts forgotten).
        """
        given = {key: value for key, value in policy.items() if value is not None}
        self.calls.append(("load", name, data, given) if given else ("load", name, data))
        try:
            check_name(name)
            keys, options = _checked(name, given)
            if self.stopped:
                raise ManagerStopped(name)
            if name in self.plugins:
                if self.plugins[name].state is PluginState.QUARANTINED:
                    return succeed(self._revive(name, data, keys, options))
                raise AlreadyLoaded(name)
            plugin = self.plugins[name] = self._build(name, data, policy=keys,
                                                      isolation=options)
        except Exception:
            return fail()
        self.broadcast(PluginEvent(kind="plugin_started", plugin=name))
        return succeed(plugin)

    def _revive(self, name: str, data: Any, policy: Mapping[str, Any],
                isolation: Mapping[str, Any]) -> FakePlugin:
        """
        Start quarantined C{name} afresh: a new L{FakePlugin} with C{data},
        C{policy} and C{isolation}, its restarts forgotten, its load time
        and last failure kept; broadcast C{plugin_started}.
        """
        old = self.plugins[name]
        fresh = self._build(name, data, old.reloads, policy, isolation)
        fresh.loaded_at, fresh.last_failure = old.loaded_at, old.last_failure
        self.plugins[name] = fresh
        self.broadcast(PluginEvent(kind="plugin_started", plugin=name))
        return fresh

    def reset(self, name: Any) -> Deferred[FakePlugin]:
        """
        Forget C{name}'s restarts (its last failure stays); a quarantined
        plugin is started afresh, as C{load} would, with its data and
        policy. Fires with the plugin.
        """
        self.calls.append(("reset", name))
        try:
            plugin = self._loaded(name)
            if plugin.state is PluginState.QUARANTINED:
                return succeed(self._revive(name, plugin.data, plugin.policy,
                                            plugin.isolation))
        except Exception:
            return fail()
        plugin.restarts = 0
        return succeed(plugin)

    def quarantine(self, name: str, failure: BaseException) -> None:
        """
        Put C{name} in quarantine after C{failure}, as the manager does once
        it has failed more often than its policy allows: its state becomes
        C{QUARANTINED}, its C{last_failure} C{"Type: message"}, and
        C{plugin_quarantined} is broadcast. Calls to it then fail with
        L{PluginQuarantined} until it is L{reset}.
        """
        plugin = self._loaded(name)
        plugin.state = PluginState.QUARANTINED
        plugin.last_failure = " ".join(f"{type(failure).__name__}: {failure}".split())
        self.broadcast(PluginEvent(kind="plugin_quarantined", plugin=name,
                                   failure=Failure(failure), restarts=plugin.restarts))

    def unload(self, name: Any, mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
               reason: str = "", cascade: bool = True) -> Deferred[str]:
        """
        Remove C{name}; its quit message is C{"NAME quits (MODE): REASON"}.
        Broadcast C{plugin_unloaded}.
        """
        self.calls.append(("unload", name, _mode(mode), reason, cascade))
        try:
            mode = ShutdownMode.coerce(mode)
            self._loaded(name)
        except Exception:
            return fail()
        return succeed(self._remove(name, mode, reason))

    def _remove(self, name: str, mode: ShutdownMode, reason: str) -> str:
        del self.plugins[name]
        quit_message = f"{name} quits ({mode.value}): {reason}"
        self.broadcast(PluginEvent(kind="plugin_unloaded", plugin=name,
                                   quit_message=quit_message))
        return quit_message

    def reload(self, name: Any, data: Any = None,
               mode: Union[ShutdownMode, str] = ShutdownMode.SMART,
               dependents: bool = False,
               isolation: Optional[Mapping[str, Any]] = None) -> Deferred[FakePlugin]:
        """
        Replace C{name} with a new L{FakePlugin} of the version in
        C{sources}, with C{data} (the old data when L{None}), the old one's
        policy, restarts and last failure, and its isolation options unless
        C{isolation} gives new ones in their place; broadcast
        C{plugin_reloaded}. A failed reload leaves the old one loaded.
        """
        self.calls.append(("reload", name, data, _mode(mode), dependents)
                          + ((dict(isolation),) if isolation is not None else ()))
        try:
            ShutdownMode.coerce(mode)
            if isolation is not None:
                isolation = _checked(name, isolation)[1]
            return succeed(self._reload(name, data, isolation))
        except Exception:
            return fail()

    def _reload(self, name: str, data: Any = None,
                isolation: Optional[Mapping[str, Any]] = None) -> FakePlugin:
        old = self._loaded(name)
        new = self._rebuilt(old, old.data if data is None else data)
        if isolation is not None:
            new.isolation = dict(isolation)
        self.plugins[name] = new
        self.broadcast(PluginEvent(kind="plugin_reloaded", plugin=name,
                                   old_version=old.version, new_version=new.version))
        return new

    def _rebuilt(self, old: FakePlugin, data: Any) -> FakePlugin:
        """
        The new L{FakePlugin} a reload of C{old} makes, with C{data}; not
        yet in C{plugins}.
        """
        new = self._build(old.name, data, old.reloads + 1, old.policy, old.isolation)
        new.restarts, new.last_failure = old.restarts, old.last_failure
        return new

    def reload_many(self, names: Any, data: Optional[Mapping[str, Any]] = None,
                    mode: Union[ShutdownMode, str] = ShutdownMode.SMART
                    ) -> Deferred[Dict[str, Optional[str]]]:
        """
        Reload the loaded plugins C{names} in one transaction, as the
        manager does, with the data of C{data} (name -> new data) for those
        it names (the old data for the others): all or nothing. Each is
        replaced as C{reload} replaces one, in the order given; then
        C{plugin_reloaded} is broadcast for each. Fires with {name: new
        version}; no names, with C{{}}.

        Fails with L{ReloadFailed} naming the plugin, and changes and
        broadcasts nothing, if any name is invalid, not loaded, quarantined
        or given twice, if C{data} names a plugin not in C{names}, or if
        the source of any is C{broken} (a L{PluginError} there is the cause
        as given; anything else is given as an L{InitFailed}); with no
        plugin named for a bad C{mode}, a string of C{names}, or after
        C{shutdown}.
        """
        try:
            given = names if isinstance(names, str) else list(names)
        except TypeError:
            given = names  # refused below, as not a sequence of names
        self.calls.append(("reload_many", given, data, _mode(mode)))
        try:
            versions = self._reload_many(given, data, mode)
        except Exception:
            return fail()
        return succeed(versions)

    def _reload_many(self, names: Any, data: Optional[Mapping[str, Any]],
                     mode: Any) -> Dict[str, Optional[str]]:
        """
        L{reload_many}: checked, built, then swapped.

        @raise ReloadFailed: naming the plugin, nothing changed.
        """
        def refused(error: PluginError) -> ReloadFailed:
            return ReloadFailed(error.plugin, failure=Failure(error))

        old: Dict[str, FakePlugin] = {}
        try:
            ShutdownMode.coerce(mode)
            if isinstance(names, str):
                raise TypeError("names is a sequence of plugin names, not one string")
            names = list(names)
            if not names:
                return {}
            if self.stopped:
                raise ManagerStopped(names[0])
            each = dict(data or {})
            for name in names:
                check_name(name)
                if name not in self.plugins:
                    raise NoSuchPlugin(name, "not loaded")
                state = self.plugins[name].state
                if state is not PluginState.RUNNING:
                    raise PluginError(name, f"it is {state.value}: a transaction reloads "
                                            "only running plugins")
                if name in old:
                    raise PluginError(name, "named twice")
                old[name] = self.plugins[name]
            unknown = set(each) - set(names)
            if unknown:
                raise PluginError(sorted(unknown)[0], "data given for a plugin not in the set")
        except (PluginError, ValueError, TypeError) as error:
            if not isinstance(error, PluginError):
                error = PluginError(getattr(error, "plugin", None), str(error))
            raise refused(error) from None
        new: Dict[str, FakePlugin] = {}
        for name, plugin in old.items():
            try:
                new[name] = self._rebuilt(plugin, each.get(name, plugin.data))
            except PluginError as error:
                raise refused(error) from None
            except Exception:
                raise refused(InitFailed(name, "the new version failed to start",
                                         failure=Failure())) from None
        self.plugins.update(new)
        for name, plugin in new.items():
            self.broadcast(PluginEvent(kind="plugin_reloaded", plugin=name,
                                       old_version=old[name].version,
                                       new_version=plugin.version))
        return {name: plugin.version for name, plugin in new.items()}

    def reload_changed(self) -> Deferred[Dict[str, Any]]:
        """
        Reload every loaded plugin whose version in C{sources} changed, or
        that is C{broken}: name -> the new plugin, or the Failure.
        """
        self.calls.append(("reload_changed",))
        results: Dict[str, Any] = {}
        for name in sorted(self.plugins):
            if name in self.broken or self.sources.get(name) != self.plugins[name].version:
                try:
                    results[name] = self._reload(name)
                except Exception:
                    results[name] = Failure()
        return succeed(results)

    def shutdown(self, mode: Union[ShutdownMode, str] = ShutdownMode.SMART) -> Deferred[None]:
        """
        Unload every plugin (in reverse order of names), then stop: later
        loads fail with L{ManagerStopped}. Broadcast
        C{plugin_manager_shutdown}.
        """
        self.calls.append(("shutdown", _mode(mode)))
        try:
            mode = ShutdownMode.coerce(mode)
        except ValueError:
            return fail()
        for name in sorted(self.plugins, reverse=True):
            self._remove(name, mode, "shutdown")
        self.stopped = True
        self.broadcast(PluginEvent(kind="plugin_manager_shutdown"))
        return succeed(None)

    def plugin_table(self) -> Dict[str, PluginInfo]:
        """
        Name -> L{PluginInfo} of every plugin (in the C{state}, with the
        C{restarts} and C{last_failure} of its L{FakePlugin}); broadcast
        C{plugin_table}.
        """
        self.calls.append(("plugin_table",))
        table = {name: self._row(name) for name in sorted(self.plugins)}
        self.broadcast(PluginEvent(kind="plugin_table", table=table))
        return table

    def _row(self, name: str) -> PluginInfo:
        p = self.plugins[name]
        return PluginInfo(name=name, longname=p.longname, license=None, version=p.version,
                          author=None, module=None, state=p.state, loaded_at=p.loaded_at,
                          reloads=p.reloads, restarts=p.restarts, last_failure=p.last_failure,
                          isolated=p.isolation.get("isolate") is True)

    def info(self, name: Any) -> PluginInfo:
        """
        The L{PluginInfo} of plugin C{name}, not broadcast.

        @raise NoSuchPlugin: if it is not loaded.
        """
        self.calls.append(("info", name))
        self._loaded(name)
        return self._row(name)

    def details(self, name: Any) -> PluginDetails:
        """
        The L{PluginDetails} of plugin C{name}: its row, no requirements,
        files or old versions, the default restart policy, and its
        isolation options (isolated: their call deadline, else the
        default, and limits).

        @raise NoSuchPlugin: if it is not loaded.
        """
        self.calls.append(("details", name))
        options = self._loaded(name).isolation
        return _details(self._row(name), options)

    @property
    def metrics(self) -> FakeMetrics:
        """
        A L{FakeMetrics} over its plugins (nothing is ever counted).
        """
        return self._metrics

    def available(self) -> List[str]:
        """
        The sorted names in C{sources}.
        """
        self.calls.append(("available",))
        return sorted(self.sources)

    def register(self, listener: Listener) -> None:
        """
        Add C{listener} to C{listeners}.
        """
        self.calls.append(("register", listener))
        self.listeners.register(listener)

    def unregister(self, listener: Listener) -> None:
        """
        Remove C{listener} from C{listeners}.
        """
        self.calls.append(("unregister", listener))
        self.listeners.unregister(listener)

    def post(self, plugin: str, event: str, *args: Any, **kw: Any) -> None:
        """
        Record a post.
        """
        self.calls.append(("post", plugin, event, args, kw))

    def call(self, plugin: str, event: str, *args: Any, **kw: Any) -> Deferred[Any]:
        """
        Record a call to a loaded plugin; answer from C{answers}.
        """
        self.calls.append(("call", plugin, event, args, kw))
        try:
            if self._loaded(plugin).state is PluginState.QUARANTINED:
                raise PluginQuarantined(plugin)
        except Exception:
            return fail()
        return succeed(self.answers.get(event))

    def emit(self, event: str, *args: Any, **kw: Any) -> Deferred[List[Any]]:
        """
        Record an emit; answer C{[answers[event]]}, or C{[]}.
        """
        self.calls.append(("emit", event, args, kw))
        return succeed([self.answers[event]] if event in self.answers else [])

    def watch(self, debounce: float = 0.005) -> None:
        """
        Record that the manager is watching.
        """
        self.calls.append(("watch", debounce))
        self.watching = debounce

    def unwatch(self) -> None:
        """
        Record that the manager no longer watches.
        """
        self.calls.append(("unwatch",))
        self.watching = None


class FakeMetrics:
    """
    What L{FakePluginManager.metrics} is: the real manager's
    L{HandlerMetrics<twisted_plugmgr._delivery.HandlerMetrics>} API, with
    every count at zero (the fake calls no handler).

    @ivar reload_buckets: always zeros.
    @ivar reload_seconds: always 0.
    """

    def __init__(self, manager: FakePluginManager) -> None:
        self._manager = manager
        self._users = 0
        self.reload_buckets: List[int] = [0] * (len(RELOAD_BUCKETS) + 1)
        self.reload_seconds = 0.0

    @property
    def enabled(self) -> bool:
        """
        Whether some user has L{enable}d it.
        """
        return self._users > 0

    def enable(self) -> None:
        """
        One more user.
        """
        self._users += 1

    def disable(self) -> None:
        """
        One user less.
        """
        self._users = max(0, self._users - 1)

    def plugins(self) -> Dict[str, PluginMetrics]:
        """
        Name -> L{PluginMetrics} of every fake plugin, counts at zero.
        """
        from ._registry import HANDLER_BUCKETS

        manager = self._manager
        return {name: PluginMetrics(info=manager._row(name), held=0, calls={},
                                    buckets=(0,) * (len(HANDLER_BUCKETS) + 1), seconds=0.0,
                                    errors=0)
                for name in sorted(manager.plugins)}

    def timed(self, reload: Deferred[Any]) -> Deferred[Any]:
        """
        C{reload}, untimed.
        """
        return reload
