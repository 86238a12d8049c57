"""
Running the manager under C{twistd} / C{twist}: the command-line L{Options},
L{makeService}, and the top service that owns the manager, the control
channel and the IRC bot, handles signals, and reconfigures on SIGHUP.

    twist plugmgr --config plugmgr.toml
    twistd -n plugmgr --config plugmgr.toml --watch

Options given on the command line override the config file: C{--package}
and C{--path} replace the file's lists when given; C{--load} adds to (and
enables) the file's plugins; C{--watch}, C{--control} and
C{--shutdown-mode} replace the file's values.

The restart policy keys of C{[manager]} are the manager's default policy,
those of a C{[plugins.NAME]} section that plugin's; a reconfig applies a
change to them without a restart, and without reloading the plugin.
"""

from __future__ import annotations

import copy
import os
import signal
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import attr
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ._config import (
    ConfigError,
    ManagerConfig,
    PluginConfig,
)
from ._control import (
    ControlChannelError,
    ControlFactory,
    ControlService,
)
from ._deferreds import run_blocking
from ._errors import NoSuchPlugin
from ._lifecycle import ShutdownMode
from ._policy import POLICY_KEYS, RestartPolicy
from ._reconfig import ReconfigTransaction
from ._settings import Overrides, Settings, StartupError, apply_overrides, read_config
from ._source import check_name

__all__ = ["Options", "makeService", "Settings", "PlugmgrService", "StartupError",
           "read_config", "apply_overrides", "Overrides"]



class Options(usage.Options):
    """
    The options of C{twist plugmgr} / C{twistd plugmgr}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a twisted-plugmgr plugin manager: load the plugins the config file enables, "
        "listen on the control channel (see the plugmgr command), reconfigure on SIGHUP, "
        "shut plugins down in stages on SIGTERM/SIGINT. Command-line options override "
        "the config file."
    )
    optParameters = [
        ["config", "c", None, "The config file (TOML)."],
        ["control", None, None,
         "Control channel server endpoint (default: unix socket plugmgr.sock next to the "
         "config file)."],
        ["shutdown-mode", None, None, "Shutdown mode on SIGTERM/SIGINT: immediate, smart, lazy."],
    ]
    optFlags = [["watch", "w", "Reload plugins when their source files change."]]

    def __init__(self) -> None:
        super().__init__()
        self["packages"] = []
        self["paths"] = []
        self["load"] = []

    def opt_package(self, name: str) -> None:
        """
        A package whose modules are plugins (repeatable; replaces the
        config file's packages).
        """
        if not all(p.isidentifier() for p in name.split(".")):
            raise usage.UsageError(f"--package: expected a dotted Python package name, "
                                   f"got {name!r}")
        self["packages"].append(name)

    def opt_path(self, directory: str) -> None:
        """
        A directory whose modules are plugins (repeatable; replaces the
        config file's paths).
        """
        self["paths"].append(os.path.abspath(os.path.expanduser(directory)))

    def opt_load(self, name: str) -> None:
        """
        Load this plugin at start (repeatable; in addition to the config
        file's enabled plugins).
        """
        try:
            check_name(name)
        except Exception as e:
            raise usage.UsageError(f"--load: {e}") from None
        self["load"].append(name)

    opt_p = opt_package
    opt_l = opt_load

    def postOptions(self) -> None:
        """
        Read and validate the config file with the command line over it.

        @raise usage.UsageError: for anything invalid; nothing has started.
        """
        mode = None
        if self["shutdown-mode"] is not None:
            try:
                mode = ShutdownMode.coerce(self["shutdown-mode"])
            except ValueError as e:
                raise usage.UsageError(f"--shutdown-mode: {e}") from None
        overrides = Overrides(
            packages=tuple(self["packages"]) or None,
            paths=tuple(self["paths"]) or None,
            load=tuple(self["load"]),
            watch=bool(self["watch"]),
            control=self["control"],
            shutdown_mode=mode,
        )
        try:
            self["settings"] = read_config(self["config"], overrides)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Mapping[str, Any], reactor: Optional[IReactorCore] = None) -> IService:
    """
    Build the service from parsed L{Options}.

    @param reactor: the reactor (the global one by default).
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = IReactorCore(_reactor)
    return PlugmgrService(options["settings"], reactor)


def _plugin_data(plugin: PluginConfig) -> Any:
    # Each plugin gets its own copy: a plugin that mutates its data must not
    # change what a later reconfig compares with.
    return copy.deepcopy(plugin.data)


class PlugmgrService(MultiService):
    """
    The top service: the manager, its control channel, and the IRC bot when
    the config has an C{[irc]} section.

    Start: the control channel listens first (so that a socket in use stops
    everything before anything started), then the manager starts and loads
    the enabled plugins in file order, then watching, then the bot. Stop:
    the manager's staged shutdown first (the reactor waits for it), then the
    bot, then the control channel.

    @ivar settings: the current L{Settings}.
    @ivar manager: the L{PluginManager}.
    @ivar control: the L{ControlService}.
    @ivar bot: the IRC bot service, or L{None}.
    """

    log = Logger(namespace="twisted_plugmgr.tap")

    def __init__(
        self,
        settings: Settings,
        reactor: IReactorCore,
        handle_signals: bool = True,
        manager_factory: Optional[Callable[..., Any]] = None,
        stop: Optional[Callable[[], object]] = None,
    ) -> None:
        """
        @param settings: the validated L{Settings}.
        @param reactor: the reactor; it also keeps time (L{IReactorTime}),
            receives the signals' hand-over (L{IReactorFromThreads}, when
            C{handle_signals}), and reads the config file of a reconfig in
            its thread pool when it has one (L{IReactorThreads}; inline
            otherwise).
        @param handle_signals: install the SIGHUP, SIGTERM and SIGINT
            handlers once the reactor runs.
        @param manager_factory: what builds the manager (L{PluginManager}
            by default), called with its keyword arguments.
        @param stop: what stops the process (by default, the reactor is
            stopped if it runs).
        """
        super().__init__()
        from ._manager import PluginManager

        self.settings = settings
        self._reactor = reactor
        self._handle_signals = handle_signals
        self._stop = stop
        manager_config = settings.config.manager
        kw: Dict[str, Any] = {"stop_mode": manager_config.shutdown_mode}
        if manager_config.start_deadline is not None:
            kw["start_deadline"] = manager_config.start_deadline
        if manager_config.old_code_grace is not None:
            grace = manager_config.old_code_grace
            kw["old_code_grace"] = None if grace is False else grace
        # The restart policy keys the file gives; the others keep the
        # manager's defaults.
        kw.update(manager_config.policy())
        deadlines: Dict[Union[ShutdownMode, str], float] = dict(
            manager_config.deadlines.items()
        )
        self.manager = (manager_factory or PluginManager)(
            packages=manager_config.packages,
            paths=manager_config.paths,
            deadlines=deadlines,
            reactor=IReactorTime(reactor),
            **kw,
        )
        self.manager.setName("manager")
        self.manager.setServiceParent(self)
        self.control = ControlService(
            ControlFactory(self.manager, IReactorTime(reactor), token=settings.token,
                           on_shutdown=self._shutdown_requested),
            settings.control,
            reactor,
            allow_shared_dir=manager_config.allow_shared_dir,
        )
        self.control.setName("control")
        self.control.setServiceParent(self)
        self.bot: Optional[IService] = None
        if settings.config.irc is not None:
            self.bot = self._make_bot(settings)
        self._saved_signals: Dict[int, Any] = {}
        self._stopping = False
        self._reconfiguring = False
        self._queued: List[Deferred] = []
        self._applied = settings.config
        #: Fires with {name: True or the Failure of its load} once the
        #: plugins enabled at start have been loaded (set by startService).
        self.ready: Deferred = Deferred()

    # -- the services ----------------------------------------------------

    def _make_bot(self, settings: Settings) -> Optional[IService]:
        try:
            from .irc import make_bot_service
        except ImportError as e:
            self.log.warn("[irc] ignored: the IRC bot is not available ({error})", error=e)
            return None
        try:
            bot = make_bot_service(self.manager, settings.config.irc,
                                   IReactorTime(self._reactor))
        except ValueError as e:
            raise StartupError(f"{settings.config.filename}: irc: {e}") from None
        bot.setName("irc")
        bot.setServiceParent(self)
        return bot

    def privilegedStartService(self) -> None:
        """
        Listen on the control channel (under twistd, before privileges
        are dropped).

        @raise StartupError: if the control channel cannot listen.
        """
        try:
            self.control.privilegedStartService()
        except ControlChannelError as e:
            self.log.critical("cannot start: {error}", error=str(e))
            raise StartupError(str(e)) from None

    def startService(self) -> None:
        """
        Listen, start the manager, load the enabled plugins, watch, start
        the bot, and install the signal handlers.

        @raise StartupError: if the control channel cannot listen; nothing
            was started.
        """
        try:
            self.control.startService()
        except ControlChannelError as e:
            self.log.critical("cannot start: {error}", error=str(e))
            raise StartupError(str(e)) from None
        self.running = 1
        config = self.settings.config
        self.log.info(
            "plugmgr starting: config {config}, control {control}, {count} plugins enabled",
            config=self.settings.config_file or "(none)", control=self.settings.control,
            count=len(config.enabled()),
        )
        self.manager.startService()
        loaded = self._load_all([config.plugins[name] for name in config.enabled()])
        if config.manager.watch:
            self.manager.watch()
        if self.bot is not None:
            self.bot.startService()
        # Ready once the plugins are loaded and the reactor runs with our
        # signal handlers in place (a SIGTERM before that would end the
        # process with the signal instead of the staged shutdown).
        running: Deferred = Deferred()

        def reactor_running() -> None:
            if self._handle_signals:
                self._install_signals()
            running.callback(None)

        self._reactor.callWhenRunning(reactor_running)
        self.ready = loaded
        loaded.addCallback(lambda outcome: running.addCallback(lambda _: outcome))
        loaded.addCallback(self._report_ready)

    def _report_ready(self, outcome: Dict[str, Any]) -> Dict[str, Any]:
        failed = sorted(name for name, result in outcome.items() if result is not True)
        self.log.info("plugmgr ready: {loaded} of {count} plugins loaded{failed}", count=len(outcome),
                      loaded=len(outcome) - len(failed), failed=_failed_suffix(failed))
        return outcome

    def _load_all(self, plugins: List[PluginConfig]) -> Deferred:
        """
        Load C{plugins} one after the other; a failure is logged (by the
        manager's events) and does not stop the others.
        """
        outcome: Dict[str, Any] = {}

        def load(_: Any, plugin: PluginConfig) -> Deferred:
            d = self.manager.load(plugin.name, _plugin_data(plugin), **plugin.policy(),
                                  **plugin.isolation())
            d.addCallbacks(lambda _: outcome.__setitem__(plugin.name, True),
                           lambda f: outcome.__setitem__(plugin.name, f))
            return d

        d: Deferred = succeed(None)
        for plugin in plugins:
            d.addCallback(load, plugin)
        return d.addCallback(lambda _: outcome)

    def stopService(self) -> Deferred:
        """
        The manager's staged shutdown, then the bot, then the control
        channel; then the signal handlers are restored.

        @return: a Deferred firing when all of it is done.
        """
        self._stopping = True
        self.running = 0
        self.log.info("plugmgr stopping")

        def stop(service: Optional[IService]) -> Callable[[Any], Deferred]:
            def do(_: Any) -> Deferred:
                if service is None or not service.running:
                    return succeed(None)
                d = maybeDeferred(service.stopService)
                d.addErrback(lambda f: self.log.failure(
                    "stopping {service} failed", failure=f, service=service.name))
                return d
            return do

        d: Deferred = succeed(None)
        if self.settings.config.manager.watch:
            d.addCallback(lambda _: self.manager.unwatch())
        d.addCallback(stop(self.manager))
        d.addCallback(stop(self.bot))
        d.addCallback(stop(self.control))
        d.addBoth(self._restore_signals)
        d.addCallback(lambda _: self.log.info("plugmgr stopped"))
        return d

    def _shutdown_requested(self) -> None:
        """
        The manager was shut down through the control channel: stop the
        process.
        """
        self.log.info("shutdown requested through the control channel; stopping")
        self._stop_reactor()

    def _stop_reactor(self) -> None:
        if self._stop is not None:
            self._stop()
        elif self._reactor.running:
            self._reactor.stop()

    # -- signals ---------------------------------------------------------

    def _install_signals(self) -> None:
        """
        SIGHUP reconfigures; SIGTERM and SIGINT stop the reactor (which waits
        for the staged shutdown) without making the process exit with the
        signal: the exit status is 0.
        """
        if self._stopping:
            return
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self._saved_signals[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self, result: Any = None) -> Any:
        saved, self._saved_signals = self._saved_signals, {}
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        return result

    def _on_signal(self, signum: int, frame: Any) -> None:
        # In the signal handler: only hand over to the reactor.
        IReactorFromThreads(self._reactor).callFromThread(self._signalled, signum)

    def _signalled(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.log.info("received SIGHUP, reconfiguring")
            self.reconfig()
            return
        if self._stopping:
            self.log.info("received {signal}, already shutting down (waiting for plugins, "
                          "within their deadlines)", signal=name)
            return
        self.log.info("received {signal}, shutting down ({mode})", signal=name,
                      mode=self.settings.config.manager.shutdown_mode.value)
        self._stopping = True
        self._stop_reactor()

    # -- reconfig --------------------------------------------------------

    def reconfig(self) -> Deferred:
        """
        Re-read the config file and make the plugins match it: load the
        enabled plugins that are not loaded, unload those removed or
        disabled, reload with the new data those whose data changed; give
        those whose restart policy keys changed their new keys
        (C{set_policy}, without reloading them, before the reload of those
        whose data changed too), and the manager its new default restart
        policy (C{set_restart_policy}); leave the others alone. An invalid
        file changes nothing. A reconfig asked for while one runs runs once
        after it.

        @return: a Deferred firing when this reconfig (or the one it was
            folded into) is done.
        """
        waiter: Deferred = Deferred()
        if self._reconfiguring:
            self._queued.append(waiter)
        else:
            self._run_reconfig([waiter])
        return waiter

    def _run_reconfig(self, waiters: List[Deferred]) -> None:
        self._reconfiguring = True

        def finished(_: Any) -> None:
            self._reconfiguring = False
            for waiter in waiters:
                waiter.callback(None)
            queued, self._queued = self._queued, []
            if queued:
                if self._stopping:
                    for waiter in queued:
                        waiter.callback(None)
                else:
                    self._run_reconfig(queued)

        self._reconfig_once().addBoth(finished)

    def _reconfig_once(self) -> Deferred:
        filename = self.settings.config_file
        if filename is None:
            self.log.info("reconfig: no config file; nothing to do")
            return succeed(None)
        if self._stopping:
            return succeed(None)
        d = run_blocking(self._reactor, read_config, filename, self.settings.overrides)
        d.addCallbacks(self._apply, self._aborted)
        d.addErrback(lambda f: self.log.failure("reconfig failed", failure=f))
        return d

    def _aborted(self, failure: Failure) -> None:
        if failure.check(ConfigError):
            self.log.error("reconfig aborted, nothing changed: {error}",
                           error=str(failure.value))
        else:
            self.log.failure("reconfig aborted, nothing changed", failure=failure)

    def _apply(self, settings: Settings) -> Deferred:
        old = self._applied
        new = settings.config
        self._warn_restart_needed(self.settings, settings)
        loaded = set(self.manager.plugin_table())
        unload = [name for name in loaded
                  if (name in old.plugins and old.plugins[name].enabled
                      and (name not in new.plugins or not new.plugins[name].enabled))
                  or (name in new.plugins and not new.plugins[name].enabled)]
        kept = [name for name in new.enabled()
                if name in loaded and name not in unload and name in old.plugins]
        reload = [name for name in kept if old.plugins[name].data != new.plugins[name].data]
        # A plugin whose restart policy keys changed gets them with
        # set_policy(); unless its data changed too, it is not reloaded.
        policy = [name for name in kept
                  if old.plugins[name].policy() != new.plugins[name].policy()]
        load = [name for name in new.enabled() if name not in loaded]
        failed: List[str] = []
        manager_policy = _policy_changes(self.settings.config.manager, new.manager)
        applied = self.settings.config.manager
        if manager_policy:
            if self._set_manager_policy(manager_policy):
                applied = attr.evolve(applied, **{k: getattr(new.manager, k)
                                                  for k in POLICY_KEYS})
            else:
                failed.append("manager restart policy")
        # Keep the new manager-level settings that need no restart (the
        # restart policy, once applied), and the new plugin settings.
        self.settings = attr.evolve(self.settings, config=attr.evolve(
            self.settings.config, manager=applied, plugins=new.plugins))
        self._applied = new
        self.log.info("reconfig: unload {unload}, reload {reload}, load {load}, "
                      "restart policy {policy}",
                      unload=unload, reload=reload, load=load, policy=policy)

        return ReconfigTransaction(self.manager, new, self._set_policy, self.log).run(
            unload, reload, load, policy, failed)

    def _set_manager_policy(self, changes: Dict[str, Any]) -> bool:
        """
        Set the manager's default restart policy keys C{changes}; log what
        was applied, or why not.

        @return: whether it was applied.
        """
        try:
            self.manager.set_restart_policy(**changes)
        except ValueError as e:
            self.log.error("reconfig: manager restart policy not applied: {error}",
                           error=str(e))
            return False
        self.log.info("reconfig: manager restart policy: {changes}; in effect: {policy}",
                      changes=_format_policy(changes),
                      policy=_format_policy(self.manager.restart_policy.as_dict()))
        return True

    def _set_policy(self, name: str, given: Dict[str, Any], reloaded: bool) -> bool:
        """
        Give plugin C{name} the restart policy keys C{given} (those of its
        section: a key it no longer gives goes back to its class's or the
        manager's default); log what was applied, or why not.

        @return: whether it was applied.
        """
        try:
            effective = self.manager.set_policy(name, **given)
        except (NoSuchPlugin, ValueError) as e:
            self.log.error("reconfig: restart policy of {name} not applied: {error}",
                           name=name, error=str(e))
            return False
        except Exception:
            self.log.failure("reconfig: restart policy of {name} not applied", name=name)
            return False
        self.log.info("reconfig: restart policy of {name}: {given}{how}; in effect: {policy}",
                      name=name, given=_format_policy(given),
                      how=" (before its reload)" if reloaded else " (not reloaded)",
                      policy=_format_policy(effective.as_dict()))
        return True

    def _warn_restart_needed(self, current: Settings, new: Settings) -> None:
        old_m, new_m = current.config.manager, new.config.manager
        # The restart policy keys are applied without a restart.
        changed = [f.name for f in attr.fields(type(old_m))
                   if f.name not in POLICY_KEYS
                   and getattr(old_m, f.name) != getattr(new_m, f.name)]
        if current.config.irc != new.config.irc:
            changed.append("[irc]")
        if current.token != new.token:
            changed.append("control token")
        if changed:
            self.log.warn("reconfig: {changed} changed; restart to apply",
                          changed=", ".join(changed))


def _policy_changes(old: ManagerConfig, new: ManagerConfig) -> Dict[str, Any]:
    """
    The manager's restart policy keys to set when the C{[manager]} section
    goes from C{old} to C{new}: those whose value changed, a key the file no
    longer gives going back to L{RestartPolicy}'s built-in default.
    """
    before = RestartPolicy().evolve(**old.policy()).as_dict()
    after = RestartPolicy().evolve(**new.policy()).as_dict()
    return {key: after[key] for key in POLICY_KEYS if before[key] != after[key]}


def _format_policy(keys: Mapping[str, Any]) -> str:
    """
    Restart policy keys for a log line: C{restart='no', restart_burst=2}.
    """
    if not keys:
        return "none given"
    return ", ".join(f"{key}={keys[key]!r}" for key in POLICY_KEYS if key in keys)


def _failed_suffix(failed: List[str]) -> str:
    """
    "; failed: a, b" for the ready line, or nothing.
    """
    return f"; failed: {', '.join(failed)}" if failed else ""
