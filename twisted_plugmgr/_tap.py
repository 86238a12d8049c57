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
"""

from __future__ import annotations

import copy
import os
import signal
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import attr
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ._config import (
    Config,
    ConfigError,
    PluginConfig,
    default_control,
    endpoint_kind,
    parse_config,
)
from ._control import (
    ControlChannelError,
    ControlFactory,
    ControlService,
    unix_socket_path,
)
from ._deferreds import run_blocking
from ._lifecycle import ShutdownMode
from ._source import check_name

__all__ = ["Options", "makeService", "Settings", "PlugmgrService", "StartupError",
           "read_config", "apply_overrides", "Overrides"]

_MISSING = object()


class StartupError(SystemExit, Exception):
    """
    The service cannot start (its control socket is in use, ...); nothing
    was started.

    Both a L{SystemExit} and an L{Exception}: C{twist} prints the message
    and exits 1 without a traceback, and C{twistd} (which reports the
    C{Exception}s of a daemon's start to the parent) does the same.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"plugmgr: {message}")
        self.message = message


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class Overrides:
    """
    What the command line says; applied over the file at start and at every
    reconfig.

    @ivar packages: replaces the file's packages when not L{None}.
    @ivar paths: replaces the file's paths (absolute) when not L{None}.
    @ivar load: plugins loaded (and enabled) in addition to the file's.
    @ivar watch: turns watching on when true.
    @ivar control: replaces the file's control endpoint when not L{None}.
    @ivar shutdown_mode: replaces the file's mode when not L{None}.
    """

    packages: Optional[Tuple[str, ...]] = None
    paths: Optional[Tuple[str, ...]] = None
    load: Tuple[str, ...] = ()
    watch: bool = False
    control: Optional[str] = None
    shutdown_mode: Optional[ShutdownMode] = None


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class Settings:
    """
    Everything the service needs, validated: the effective config (file plus
    command line), where it came from, and the control token.

    @ivar config: the effective L{Config}.
    @ivar config_file: the file to re-read on SIGHUP, or L{None}.
    @ivar overrides: the command line's L{Overrides}.
    @ivar control: the control channel's server endpoint string.
    @ivar token: the control token, or L{None}.
    """

    config: Config
    config_file: Optional[str]
    overrides: Overrides
    control: str
    token: Optional[str] = None


def apply_overrides(config: Config, overrides: Overrides) -> Config:
    """
    The config C{config} with the command line's C{overrides} applied.
    """
    manager = config.manager
    changes: Dict[str, Any] = {}
    if overrides.packages is not None:
        changes["packages"] = overrides.packages
    if overrides.paths is not None:
        changes["paths"] = overrides.paths
    if overrides.watch:
        changes["watch"] = True
    if overrides.control is not None:
        changes["control"] = overrides.control
    if overrides.shutdown_mode is not None:
        changes["shutdown_mode"] = overrides.shutdown_mode
    plugins = dict(config.plugins)
    for name in overrides.load:
        existing = plugins.get(name)
        plugins[name] = attr.evolve(existing, enabled=True) if existing is not None \
            else PluginConfig(name=name)
    return attr.evolve(config, manager=attr.evolve(manager, **changes),
                       plugins=types.MappingProxyType(plugins))


def read_config(filename: Optional[str], overrides: Overrides) -> Settings:
    """
    Read and validate C{filename} (if any), apply C{overrides}, and check
    what can only be checked here: that the paths exist, the control
    endpoint parses and has a token where one is needed, the token file is
    readable.

    Blocking (it reads files): call it before the reactor runs, or in a
    thread.

    @raise ConfigError: naming the file, the key and what was expected.
    """
    if filename is not None:
        try:
            with open(filename, "rb") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(filename, None, f"cannot read the file ({e.strerror})") from None
        config = parse_config(text, filename)
    else:
        config = parse_config("", "<command line>", base_dir=os.getcwd())
    config = apply_overrides(config, overrides)
    source = filename or "<command line>"
    manager = config.manager
    for i, path in enumerate(manager.paths):
        if not os.path.isdir(path):
            raise ConfigError(source, f"manager.paths[{i}]", "expected an existing directory",
                              repr(path))
    control = manager.control or default_control(config.base_dir)
    _check_endpoint(source, control)
    token = manager.control_token
    if manager.control_token_file is not None:
        token = _read_token(source, manager.control_token_file)
    if endpoint_kind(control) != "unix" and not token:
        raise ConfigError(
            source, "manager.control",
            "a control endpoint that is not a UNIX socket needs manager.control_token or "
            "manager.control_token_file", repr(control),
        )
    return Settings(config=config, config_file=filename, overrides=overrides,
                    control=control, token=token)


def _check_endpoint(source: str, description: str) -> None:
    from twisted.internet.endpoints import serverFromString

    kind = endpoint_kind(description)
    if kind == "unix":
        if not unix_socket_path(description):
            raise ConfigError(source, "manager.control", "expected a socket path",
                              repr(description))
        return
    try:
        serverFromString(None, description)
    except Exception as e:
        raise ConfigError(
            source, "manager.control",
            f"expected a Twisted server endpoint string ({type(e).__name__}: {e})",
            repr(description),
        ) from None


def _read_token(source: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, "manager.control_token_file",
                          f"a readable text file ({e})", repr(path)) from None
    if not token:
        raise ConfigError(source, "manager.control_token_file", "a file holding the token",
                          "an empty file")
    return token


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
        self.log.info("plugmgr ready: {loaded} of {count} plugins loaded{failed}",
                      loaded=len(outcome) - len(failed), count=len(outcome),
                      failed=f"; failed: {', '.join(failed)}" if failed else "")
        return outcome

    def _load_all(self, plugins: List[PluginConfig]) -> Deferred:
        """
        Load C{plugins} one after the other; a failure is logged (by the
        manager's events) and does not stop the others.
        """
        outcome: Dict[str, Any] = {}

        def load(_: Any, plugin: PluginConfig) -> Deferred:
            d = self.manager.load(plugin.name, _plugin_data(plugin))
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
        disabled, reload with the new data those whose data changed; leave
        the others alone. An invalid file changes nothing. A reconfig asked
        for while one runs runs once after it.

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
        reload = [name for name in new.enabled()
                  if name in loaded and name not in unload
                  and name in old.plugins and old.plugins[name].data != new.plugins[name].data]
        load = [name for name in new.enabled() if name not in loaded]
        # Keep the new manager-level settings that need no restart, and the
        # new plugin settings.
        self.settings = attr.evolve(self.settings, config=attr.evolve(
            self.settings.config, plugins=new.plugins))
        self._applied = new
        self.log.info("reconfig: unload {unload}, reload {reload}, load {load}",
                      unload=unload, reload=reload, load=load)
        failed: List[str] = []

        def step(_: Any, action: str, name: str) -> Deferred:
            if action == "unload":
                d = self.manager.unload(name, reason="removed from the config")
            elif action == "reload":
                d = self.manager.reload(name, data=_plugin_data(new.plugins[name]))
            else:
                d = self.manager.load(name, _plugin_data(new.plugins[name]))
            # The manager broadcasts (and logs) each failure as an event.
            d.addErrback(lambda f: failed.append(f"{action} {name}"))
            return d

        d: Deferred = succeed(None)
        for action, names in (("unload", unload), ("reload", reload), ("load", load)):
            for name in names:
                d.addCallback(step, action, name)

        def report(_: Any) -> None:
            if failed:
                self.log.warn("reconfig done; failed: {failed}", failed=", ".join(failed))
            else:
                self.log.info("reconfig done")
        return d.addCallback(report)

    def _warn_restart_needed(self, current: Settings, new: Settings) -> None:
        old_m, new_m = current.config.manager, new.config.manager
        changed = [f.name for f in attr.fields(type(old_m))
                   if getattr(old_m, f.name) != getattr(new_m, f.name)]
        if current.config.irc != new.config.irc:
            changed.append("[irc]")
        if current.token != new.token:
            changed.append("control token")
        if changed:
            self.log.warn("reconfig: {changed} changed; restart to apply",
                          changed=", ".join(changed))
