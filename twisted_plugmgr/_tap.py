"""
Running the manager under C{twistd} / C{twist}: the command-line L{Options},
L{makeService}, and the top service that owns the manager, the control
channel and the IRC bot, handles signals, and reconfigures on SIGHUP::

    twist plugmgr --config plugmgr.toml
    twistd -n plugmgr --config plugmgr.toml --watch

Options given on the command line override the config file: C{--package}
and C{--path} replace the file's lists when given; C{--load} adds to (and
enables) the file's plugins; C{--watch}, C{--control} and
C{--shutdown-mode} replace the file's values.

The restart policy keys of C{[manager]} are the manager's default policy,
those of a C{[plugins.NAME]} section that plugin's; a reconfig applies a
change to them without a restart, and without reloading the plugin.

Under systemd (C{$NOTIFY_SOCKET} set) the service says C{READY=1} once the
startup loads are done, C{RELOADING=1} then C{READY=1} around each
reconfig, C{STOPPING=1} when it stops, and C{WATCHDOG=1} when asked for
(L{twisted_plugmgr._notify}).
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar, Union

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ._config import ConfigError, PluginConfig, WebConfig
from ._control import ControlChannelError, ControlFactory, ControlService
from ._control._listen import check_control
from ._errors import NoSuchPlugin
from ._lifecycle import ShutdownMode
from ._notify import Notifier
from ._reconfig import ReconfigOutcome, ReconfigRefused, Reconfigurer, plugin_data
from ._settings import (
    Overrides,
    Settings,
    StartupError,
    apply_overrides,
    endpoint_text,
    read_config,
)
from ._source import check_name

__all__ = ["Options", "makeService", "Settings", "PlugmgrService", "StartupError",
           "read_config", "apply_overrides", "Overrides", "ReconfigOutcome", "ReconfigRefused"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _help(method: _F) -> _F:
    """
    Make an C{opt_} method's docstring one paragraph, as Twisted's
    C{--help} shows it (it keeps the docstring's indentation otherwise).
    """
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method



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
         "The control channel's server endpoint (default: the UNIX socket plugmgr.sock "
         "next to the config file)."],
        ["shutdown-mode", None, None,
         "How plugins are shut down on SIGTERM/SIGINT: immediate, smart or lazy."],
    ]
    optFlags = [["watch", "w", "Reload plugins when their source files change."]]

    def getUsage(self, width: Optional[int] = None) -> str:
        """
        The help text, within 79 columns (or C{$COLUMNS} when narrower), so
        that no line fills an 80-column terminal.
        """
        if not width:
            try:
                width = min(79, int(os.environ.get("COLUMNS", "80")) - 1)
            except ValueError:
                width = 79
        return super().getUsage(width=max(width, 40))

    def __init__(self) -> None:
        super().__init__()
        self["packages"] = []
        self["paths"] = []
        self["load"] = []

    @_help
    def opt_package(self, name: str) -> None:
        """
        A package whose modules are plugins (repeatable; replaces the
        config file's packages).
        """
        if not all(p.isidentifier() for p in name.split(".")):
            raise usage.UsageError(f"--package: expected a dotted Python package name, "
                                   f"got {name!r}")
        self["packages"].append(name)

    @_help
    def opt_path(self, directory: str) -> None:
        """
        A directory whose modules are plugins (repeatable; replaces the
        config file's paths).
        """
        self["paths"].append(os.path.abspath(os.path.expanduser(directory)))

    @_help
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

    The control socket is checked here too: C{twistd} builds the service
    before it forks into the background, so a second instance on the same
    socket says so on the terminal (C{plugmgr: control channel ...: ... is
    in use by a running process}), in one line, and exits 1. So is the
    C{[web]} endpoint's port, when it names one (C{plugmgr: ...: [web]:
    endpoint ... cannot listen: ...}).

    @param reactor: the reactor (the global one by default).
    @raise StartupError: if the control socket or the web port cannot be
        used.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = IReactorCore(_reactor)
    settings: Settings = options["settings"]
    try:
        check_control(settings.control, settings.config.manager.allow_shared_dir)
    except ControlChannelError as e:
        raise StartupError(str(e)) from None
    if settings.config.web is not None:
        from .web import WebListenError, check_web_port

        try:
            check_web_port(settings.config.web.endpoint)
        except WebListenError as e:
            raise StartupError(f"{settings.config.filename}: [web]: {e}") from None
    return PlugmgrService(settings, reactor)


class PlugmgrService(MultiService):
    """
    The top service: the manager, its control channel, the IRC bot when the
    config has an C{[irc]} section, and the web dashboard when it has a
    C{[web]} section.

    Start: the control channel listens first (so that a socket in use stops
    everything before anything started), then the dashboard's endpoint
    (a port in use stops everything too), then the manager starts and
    loads the enabled plugins in file order, then watching, then the bot,
    then the dashboard. Stop: the manager's staged shutdown first (the
    reactor waits for it), then the bot, then the dashboard, then the
    control channel.

    @ivar manager: the L{PluginManager}.
    @ivar control: the L{ControlService}.
    @ivar bot: the IRC bot service, or L{None}.
    @ivar web: the web dashboard's service, or L{None}.
    @ivar notifier: the L{Notifier} that tells systemd where the service is.
    """

    log = Logger(namespace="twisted_plugmgr.tap")

    def __init__(
        self,
        settings: Settings,
        reactor: IReactorCore,
        handle_signals: bool = True,
        manager_factory: Optional[Callable[..., Any]] = None,
        stop: Optional[Callable[[], object]] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        """
        @param settings: the validated L{Settings}.
        @param reactor: the reactor; it also keeps time (L{IReactorTime}),
            receives the signals' hand-over (L{IReactorFromThreads}, when
            C{handle_signals}), and reads the config file of a reconfig in
            its thread pool when it has one
            (L{IReactorThreads<twisted.internet.interfaces.IReactorThreads>};
            inline otherwise).
        @param handle_signals: install the SIGHUP, SIGTERM and SIGINT
            handlers once the reactor runs.
        @param manager_factory: what builds the manager (L{PluginManager}
            by default), called with its keyword arguments.
        @param stop: what stops the process (by default, the reactor is
            stopped if it runs).
        @param notifier: what tells systemd where the service is (by
            default, a L{Notifier} reading C{$NOTIFY_SOCKET}).
        """
        super().__init__()
        from ._manager import PluginManager

        self._reactor = reactor
        self.notifier = notifier if notifier is not None else Notifier(IReactorTime(reactor))
        self._handle_signals = handle_signals
        self._stop = stop
        manager_config = settings.config.manager
        kw: Dict[str, Any] = {"stop_mode": manager_config.shutdown_mode}
        if manager_config.start_deadline is not None:
            kw["start_deadline"] = manager_config.start_deadline
        if manager_config.log_tables:
            kw["log_tables"] = True
        if not manager_config.entry_points:
            kw["entry_points"] = False
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
        self._stopping = False
        self._reconfigurer = Reconfigurer(
            self.manager, reactor, settings, self.log, lambda: self._stopping,
            on_run=self.notifier.reloading, on_done=self._reconfigured)
        self.control = ControlService(
            ControlFactory(self.manager, IReactorTime(reactor), token=settings.token,
                           on_shutdown=self._shutdown_requested,
                           # Without a config file there is nothing to re-read:
                           # the channel answers Reconfig "not available".
                           reconfig=self.reconfig if settings.config_file else None,
                           readiness=self.readiness),
            settings.control,
            reactor,
            allow_shared_dir=manager_config.allow_shared_dir,
        )
        self.control.setName("control")
        self.control.setServiceParent(self)
        self.bot: Optional[IService] = None
        if settings.config.irc is not None:
            self.bot = self._make_bot(settings)
        self.web: Optional[IService] = None
        if settings.config.web is not None:
            self.web = self._make_web(settings, settings.config.web)
        self._saved_signals: Dict[int, Any] = {}
        #: Fires with {name: True or the Failure of its load} once the
        #: plugins enabled at start have been loaded (set by startService).
        self.ready: Deferred = Deferred()
        # Reconfigs asked for (over the control channel) during the startup
        # loads, waiting for them: they compare the file with what runs.
        self._starting: Optional[List[Deferred[None]]] = []

    @property
    def settings(self) -> Settings:
        """
        The current L{Settings}: those the service started with, then
        those of each reconfig (keeping what needs a restart as it was).
        """
        return self._reconfigurer.settings

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

    def _make_web(self, settings: Settings, web_config: WebConfig) -> IService:
        from .web import make_web_service

        token = settings.web_token or settings.token
        try:
            web = make_web_service(self.manager, web_config, token, self._reactor,
                                   reconfig=self.reconfig)
        except ValueError as e:
            raise StartupError(f"{settings.config.filename}: [web]: {e}") from None
        web.setName("web")
        web.setServiceParent(self)
        return web

    def privilegedStartService(self) -> None:
        """
        Listen on the control channel, then on the C{[web]} endpoint
        (under twistd, before privileges are dropped).

        @raise StartupError: if either cannot listen.
        """
        try:
            self.control.privilegedStartService()
        except ControlChannelError as e:
            self.log.critical("cannot start: {error}", error=str(e))
            raise StartupError(str(e)) from None
        self._listen_web()

    def startService(self) -> None:
        """
        Listen, start the manager, load the enabled plugins, watch, start
        the bot, and install the signal handlers.

        @raise StartupError: if the control channel or the C{[web]} endpoint
            cannot listen; nothing was started.
        """
        try:
            self.control.startService()
        except ControlChannelError as e:
            self.log.critical("cannot start: {error}", error=str(e))
            raise StartupError(str(e)) from None
        self._listen_web()
        self.running = 1
        # The watchdog pings from the reactor from now on: a reactor that
        # stops turning (a plugin blocking it) stops them.
        self.notifier.start_watchdog()
        config = self.settings.config
        config_file = self.settings.config_file
        self.log.info(
            "plugmgr starting: config {config}, control {control}, {count} plugins enabled",
            config=os.path.abspath(config_file) if config_file else "none (command line only)",
            control=endpoint_text(self.settings.control), count=len(config.enabled()),
        )
        self.manager.startService()
        loaded = self._load_all([config.plugins[name] for name in config.enabled()])
        if config.manager.watch:
            self.manager.watch()
        if self.bot is not None:
            self.bot.startService()
        if self.web is not None:
            self.web.startService()
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

    def _listen_web(self) -> None:
        """
        Listen on the C{[web]} endpoint (if any), right after the control
        channel: the web service's C{privilegedStartService}, a no-op
        when it already listens.

        @raise StartupError: naming C{[web]}, if it cannot listen; the
            control channel is closed again, and nothing else was started.
        """
        from .web import WebListenError

        if self.web is None:
            return
        try:
            self.web.privilegedStartService()
        except WebListenError as e:
            # One line: StartupError's, which twist and twistd print.
            self.control.stopService()
            raise StartupError(f"{self.settings.config.filename}: [web]: {e}") from None

    def _started(self) -> None:
        waiting, self._starting = self._starting or [], None
        for d in waiting:
            d.callback(None)

    def _report_ready(self, outcome: Dict[str, Any]) -> Dict[str, Any]:
        failed = sorted(name for name, result in outcome.items() if result is not True)
        line = (f"{len(outcome) - len(failed)} of {len(outcome)} plugins loaded"
                f"{_failed_suffix(failed)}")
        self.log.info("plugmgr ready: {status}", status=line)
        if not self._stopping:
            # systemd: started (a plugin that failed to load is in STATUS,
            # and in "plugmgr ready"; the manager itself serves).
            self.notifier.ready(line)
        self._started()
        return outcome

    def _load_all(self, plugins: List[PluginConfig]) -> Deferred:
        """
        Load C{plugins} one after the other; a failure is logged (by the
        manager's events) and does not stop the others.
        """
        outcome: Dict[str, Any] = {}

        def load(_: Any, plugin: PluginConfig) -> Deferred:
            d = self.manager.load(plugin.name, plugin_data(plugin), **plugin.policy(),
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
        self._started()  # a reconfig still waiting for the start: refused
        mode = self.settings.config.manager.shutdown_mode.value
        self.log.info("plugmgr stopping ({mode} shutdown)", mode=mode)
        self.notifier.stopping(f"stopping ({mode} shutdown)")

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
        d.addCallback(stop(self.web))
        d.addCallback(stop(self.control))
        d.addBoth(self._restore_signals)
        d.addCallback(lambda _: self.log.info("plugmgr stopped"))
        d.addBoth(self._close_notifier)
        return d

    def _close_notifier(self, result: Any) -> Any:
        self.notifier.close()
        return result

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
            # Each outcome is logged where it happens, in one line.
            self.reconfig().addErrback(lambda f: f.trap(ReconfigRefused) and None)
            return
        if self._stopping:
            self.log.info("received {signal}, already shutting down (waiting for plugins, "
                          "within their deadlines)", signal=name)
            return
        self.log.info("received {signal}, shutting down ({mode})", signal=name,
                      mode=self.settings.config.manager.shutdown_mode.value)
        self._stopping = True
        self._stop_reactor()


    # -- reconfig and readiness ----------------------------------------------

    def reconfig(self) -> Deferred[ReconfigOutcome]:
        """
        Re-read the config file and make the plugins match it: load the
        enabled plugins that are not loaded, unload those removed or
        disabled, reload with the new data those whose data changed; give
        those whose restart policy keys changed their new keys
        (C{set_policy}, without reloading them, before the reload of those
        whose data changed too), and the manager its new default restart
        policy (C{set_restart_policy}); unload and load again, with them, a
        plugin whose isolation options (C{isolate}, C{call_deadline},
        C{limits}) changed (one that others require is left as it runs, and
        the log says to run C{plugmgr unload NAME} then C{plugmgr
        reconfig}); leave the others alone. An invalid file, or a step that
        fails, changes nothing. A reconfig asked for while one runs runs once
        after it, and one asked for during the startup loads runs once they
        are done. Under systemd: C{RELOADING=1} before, C{READY=1} after.

        @return: a Deferred firing with the L{ReconfigOutcome} of the run
            this request was folded into, or failing with
            L{ReconfigRefused} (one line naming the file or the plugin, and
            why) when nothing changed.
        """
        if self._starting is None or not self.running:
            return self._reconfigurer.reconfig()
        started: Deferred[None] = Deferred()
        self._starting.append(started)
        return started.addCallback(lambda _: self._reconfigurer.reconfig())

    def _reconfigured(self, result: Any) -> None:
        if isinstance(result, Failure):
            self.notifier.reloaded(
                f"reconfig refused, nothing changed: {result.getErrorMessage()}")
        else:
            self.notifier.reloaded(f"reconfig done: {result.summary()}")

    def readiness(self) -> Dict[str, str]:
        """
        Where each plugin the current config enables is: its
        L{PluginState} value (C{"running"} when it serves), or C{"not
        loaded"}. Broadcasts nothing (a readiness probe asks often).
        """
        states: Dict[str, str] = {}
        for name in self.settings.config.enabled():
            try:
                states[name] = self.manager.info(name).state.value
            except NoSuchPlugin:
                states[name] = "not loaded"
        return states


def _failed_suffix(failed: List[str]) -> str:
    """
    "; failed: a, b" for the ready line, or nothing.
    """
    return f"; failed: {', '.join(failed)}" if failed else ""
