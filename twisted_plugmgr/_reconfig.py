"""
Reconfiguring a running manager from its config file, as SIGHUP (or the
control channel's C{Reconfig}) asks.

L{Reconfigurer} runs one reconfig at a time: it reads the file again (off
the reactor thread), compares it with what was applied, and hands the
changes to a L{ReconfigTransaction}. A reconfig asked for while one runs is
folded into one run after it; each waiter gets the outcome of the run it
was folded into: a L{ReconfigOutcome}, or a L{ReconfigRefused} failure when
nothing changed because the file is invalid or a step failed.

The transaction: the new plugins are loaded, then those whose data changed
are reloaded together (L{PluginManager.reload_many}); if either fails, what
was loaded is unloaded again, the restart policies set for it are put back,
and nothing else changes (the next reconfig of the same file tries it all
again). Then the plugins the file no longer enables are unloaded (an unload
always removes its plugin), the new restart policies are set, and a plugin
whose isolation options (C{isolate}, C{call_deadline}, C{limits}) changed
is reloaded with them (C{reload(name, isolation=...)}: its state handed
over into its worker or out of it); if that fails, it serves as it was.
"""

from __future__ import annotations

import copy
import functools
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attr
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._config import Config, ConfigError, ManagerConfig, PluginConfig
from ._deferreds import run_blocking
from ._errors import NoSuchPlugin
from ._isolate._options import ISOLATION_KEYS
from ._policy import POLICY_KEYS, RestartPolicy
from ._settings import Settings, read_config

__all__ = ["ReconfigOutcome", "ReconfigRefused", "ReconfigTransaction", "Reconfigurer",
           "format_isolation", "format_policy", "plugin_data", "policy_changes"]


@attr.s(frozen=True, auto_attribs=True)
class ReconfigOutcome:
    """
    What a reconfig changed (all empty: nothing needed to).

    @ivar loaded: the plugins it loaded.
    @ivar unloaded: the plugins it unloaded.
    @ivar reloaded: the plugins it reloaded (their data changed), and
        those it unloaded and loaded again for their new isolation options.
    @ivar policy: the plugins given new restart policy keys, not reloaded.
    @ivar manager_policy: whether the manager's default restart policy
        changed.
    @ivar failed: what failed once the transaction had committed (C{"unload
        NAME"}, C{"policy NAME"}, C{"manager restart policy"}, C{"isolation
        NAME"}: its new isolation options are not in effect); the rest was
        applied.
    """

    loaded: Tuple[str, ...] = ()
    unloaded: Tuple[str, ...] = ()
    reloaded: Tuple[str, ...] = ()
    policy: Tuple[str, ...] = ()
    manager_policy: bool = False
    failed: Tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """
        Whether anything changed.
        """
        return bool(self.loaded or self.unloaded or self.reloaded or self.policy
                    or self.manager_policy)

    def summary(self) -> str:
        """
        One line for a log or a status: what changed, or that nothing
        needed to.
        """
        parts = [f"{what} {', '.join(names)}" for what, names in (
            ("loaded", self.loaded), ("unloaded", self.unloaded),
            ("reloaded", self.reloaded), ("new restart policy for", self.policy)) if names]
        if self.manager_policy:
            parts.append("new default restart policy")
        text = "; ".join(parts) if parts else "nothing needed to change"
        if self.failed:
            text += f"; failed: {', '.join(self.failed)}"
        return text


class ReconfigRefused(Exception):
    """
    A reconfig that changed nothing: the file is invalid, or a step of the
    transaction failed and was rolled back.

    @ivar reason: one line saying why (the file's error, naming the file,
        or the step that failed and its error).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def plugin_data(plugin: PluginConfig) -> Any:
    """
    The data a plugin of the config file is loaded (or reloaded) with: a
    copy of its own, so that a plugin that changes its data does not change
    what the next reconfig compares the file with.
    """
    return copy.deepcopy(plugin.data)


def _one_line(failure: Failure) -> str:
    lines = failure.getErrorMessage().strip().splitlines()
    return lines[0] if lines else failure.type.__name__


class ReconfigTransaction:
    """
    One reconfig's changes to the plugins.

    @param manager: the manager.
    @param new: the config file as read now.
    @param set_policy: sets a plugin's restart policy keys (name, keys,
        reloaded) and says whether that worked.
    @param log: where the outcome is logged.
    @param old: the config file as last applied (what an aborted
        transaction puts the policies it set back to, and what the restart
        policy of a plugin whose new isolation options cannot be applied
        goes back to); L{None}: C{new}.
    @param undo: what to call, last first, when the transaction is
        aborted: the changes made before it ran (the manager's restart
        policy); it adds its own.
    """

    def __init__(self, manager: Any, new: Config,
                 set_policy: Callable[[str, Dict[str, Any], bool], bool], log: Logger,
                 old: Optional[Config] = None,
                 undo: Optional[List[Callable[[], object]]] = None) -> None:
        self.manager = manager
        self.new = new
        self.old = old if old is not None else new
        self.set_policy = set_policy
        self.log = log
        self.undo: List[Callable[[], object]] = undo if undo is not None else []

    def run(self, unload: List[str], reload: List[str], load: List[str], policy: List[str],
            failed: List[str], manager_policy: bool = False,
            restart: Sequence[str] = ()) -> Deferred[ReconfigOutcome]:
        """
        Apply the changes; C{failed} collects what failed after the
        transaction committed (an unload, a policy, new isolation options).
        C{restart}: the plugins to reload once it committed with the new
        data, restart policy and isolation options of their sections.

        @return: a Deferred firing with the L{ReconfigOutcome}, or failing
            with L{ReconfigRefused} when a load or a reload failed (what
            was loaded is unloaded again, the policies set are put back:
            nothing changed).
        """
        manager, new = self.manager, self.new
        loaded: List[str] = []
        unloaded: List[str] = []
        restarted: List[str] = []

        def report(_: Any = None) -> ReconfigOutcome:
            outcome = ReconfigOutcome(
                loaded=tuple(loaded), unloaded=tuple(unloaded),
                reloaded=tuple(reload) + tuple(restarted),
                policy=tuple(name for name in policy
                             if name not in reload and f"policy {name}" not in failed),
                manager_policy=manager_policy, failed=tuple(failed))
            if failed:
                self.log.warn("reconfig done; failed: {failed}", failed=", ".join(failed))
            else:
                self.log.info("reconfig done: {summary}", summary=outcome.summary())
            return outcome

        def load_one(_: Any, name: str) -> Deferred[Any]:
            d = _load(manager, new.plugins[name])
            return d.addCallback(lambda _: loaded.append(name))

        def reload_all(_: Any) -> Deferred[Any]:
            # A reloaded plugin's new policy is set first, so that its new
            # instance starts under it; an abort puts the old one back.
            for name in policy:
                if name not in reload:
                    continue
                if self.set_policy(name, new.plugins[name].policy(), True):
                    self.undo.append(functools.partial(self._put_back_policy, name))
                else:
                    failed.append(f"policy {name}")
            data = {name: plugin_data(new.plugins[name]) for name in reload}
            return manager.reload_many(reload, data) if reload else succeed({})

        def unload_one(_: Any, name: str) -> Deferred[Any]:
            def lost(failure: Failure) -> None:
                failed.append(f"unload {name}")

            d = manager.unload(name, reason="removed from the config")
            return d.addCallbacks(lambda _: unloaded.append(name), lost)

        def restart_one(_: Any, name: str) -> Deferred[Any]:
            def done(applied: bool) -> None:
                if applied:
                    restarted.append(name)
                else:
                    failed.append(f"isolation {name}")

            return self._restart(name).addCallback(done)

        def committed(_: Any) -> Deferred[ReconfigOutcome]:
            for name in policy:
                if name not in reload and not self.set_policy(
                        name, new.plugins[name].policy(), False):
                    failed.append(f"policy {name}")
            d: Deferred[Any] = succeed(None)
            for name in unload:
                d.addCallback(unload_one, name)
            for name in restart:
                d.addCallback(restart_one, name)
            return d.addCallback(report)

        def aborted(failure: Failure) -> Deferred[Any]:
            # The manager broadcast (and logged) the failure as an event.
            undo = [manager.unload(name, "immediate", "reconfig aborted").addErrback(
                lambda f: None) for name in reversed(loaded)]
            reason = _one_line(failure)

            def refused(_: Any) -> None:
                for step in reversed(self.undo):
                    step()
                self.log.error("reconfig aborted, nothing changed: {error}", error=reason)
                raise ReconfigRefused(reason)

            return gatherResults(undo).addCallback(refused)

        d: Deferred[Any] = succeed(None)
        for name in load:
            d.addCallback(load_one, name)
        d.addCallback(reload_all)
        return d.addCallbacks(committed, aborted)

    def _put_back_policy(self, name: str) -> None:
        """
        Give plugin C{name} the restart policy keys of its section as last
        applied again (an aborted transaction had set the new ones).
        """
        try:
            self.manager.set_policy(name, **self.old.plugins[name].policy())
        except NoSuchPlugin:
            pass  # gone meanwhile: nothing to put back
        except Exception:
            self.log.failure("reconfig: the restart policy of {name} was not put back",
                             name=name)

    def _restart(self, name: str) -> Deferred[bool]:
        """
        Reload plugin C{name} with its new section: its data, its restart
        policy (set first, when it changed) and its isolation options. The
        reload hands its state over, into a worker or out of one, and the
        plugins that require it go on running. If the reload fails, the
        old version serves on with its old section.

        @return: a Deferred firing with whether its new section is in
            effect (never failing; what happened is logged).
        """
        manager, new, old = self.manager, self.new.plugins[name], self.old.plugins[name]
        options = format_isolation(new.isolation())
        policy_set = new.policy() != old.policy() and self.set_policy(name, new.policy(), True)

        def reloaded(_: Any) -> bool:
            self.log.info("reconfig: {name} reloaded with {options} (its state handed over)",
                          name=name, options=options)
            return True

        def not_reloaded(failure: Failure) -> bool:
            if policy_set:
                self._put_back_policy(name)
            self.log.error(_NOT_APPLIED, name=name, options=options,
                           error=_one_line(failure))
            return False

        d: Deferred[Any] = manager.reload(name, data=plugin_data(new),
                                          isolation=new.isolation())
        return d.addCallbacks(reloaded, not_reloaded)


#: The line logged when a plugin's new isolation options cannot be applied.
_NOT_APPLIED = ("reconfig: {name}'s new isolation options ({options}) are not applied: "
                "{error}; it serves as it was")


def _load(manager: Any, plugin: PluginConfig) -> Deferred[Any]:
    """
    Load the plugin of section C{plugin} with its data, restart policy
    keys and isolation options.
    """
    return manager.load(plugin.name, plugin_data(plugin), **plugin.policy(),
                        **plugin.isolation())


def format_isolation(options: Mapping[str, Any]) -> str:
    """
    Isolation options for a log line: C{isolate=True, call_deadline=5.0}
    (C{limits} as a plain dict); C{"no isolation options"} when none is
    given.
    """
    if not options:
        return "no isolation options"
    return ", ".join(f"{key}={dict(value) if key == 'limits' else value!r}"
                     for key, value in options.items())


class Reconfigurer:
    """
    Makes the manager match its config file, one reconfig at a time.

    @ivar settings: the current L{Settings}: the ones the service started
        with, then those of each reconfig, keeping what needs a restart as
        it was.
    """

    def __init__(
        self,
        manager: Any,
        reactor: object,
        settings: Settings,
        log: Logger,
        stopping: Callable[[], bool],
        on_run: Optional[Callable[[], object]] = None,
        on_done: Optional[Callable[[Any], object]] = None,
    ) -> None:
        """
        @param manager: the manager to reconfigure.
        @param reactor: reads the file in its thread pool when it has one.
        @param settings: the settings the service started with.
        @param log: where each step and outcome is logged.
        @param stopping: says whether the service is shutting down (a
            reconfig then changes nothing).
        @param on_run: called when a run begins.
        @param on_done: called with a run's outcome (a L{ReconfigOutcome}
            or the L{Failure} of a L{ReconfigRefused}) when it ends.
        """
        self.manager = manager
        self.settings = settings
        self._reactor = reactor
        self._log = log
        self._stopping = stopping
        self._on_run = on_run
        self._on_done = on_done
        self._applied = settings.config
        self._running = False
        self._queued: List[Deferred[ReconfigOutcome]] = []

    def reconfig(self) -> Deferred[ReconfigOutcome]:
        """
        Reconfigure now, or once after the run in progress.

        @return: a Deferred firing with the L{ReconfigOutcome} of the run
            this request is part of, or failing with L{ReconfigRefused}.
        """
        waiter: Deferred[ReconfigOutcome] = Deferred()
        if self._running:
            self._queued.append(waiter)
        else:
            self._run([waiter])
        return waiter

    def _run(self, waiters: List[Deferred[ReconfigOutcome]]) -> None:
        self._running = True
        if self._on_run is not None:
            self._on_run()

        def finished(result: Any) -> None:
            self._running = False
            if self._on_done is not None:
                self._on_done(result)
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            queued, self._queued = self._queued, []
            if queued:
                if self._stopping():
                    for waiter in queued:
                        waiter.errback(ReconfigRefused("the manager is shutting down"))
                else:
                    self._run(queued)

        self._once().addBoth(finished)

    def _once(self) -> Deferred[ReconfigOutcome]:
        filename = self.settings.config_file
        if filename is None:
            self._log.info("reconfig: no config file; nothing to do")
            return succeed(ReconfigOutcome())
        if self._stopping():
            self._log.info("reconfig: the manager is shutting down; nothing changed")
            return _refused("the manager is shutting down")
        d: Deferred[Any] = run_blocking(self._reactor, read_config, filename,
                                        self.settings.overrides)
        d.addCallbacks(self._apply, self._unreadable)

        def unexpected(failure: Failure) -> Failure:
            if failure.check(ReconfigRefused):
                return failure
            self._log.failure("reconfig failed", failure=failure)
            return Failure(ReconfigRefused(f"reconfig failed: {_one_line(failure)}"))

        return d.addErrback(unexpected)

    def _unreadable(self, failure: Failure) -> ReconfigOutcome:
        if failure.check(ConfigError):
            reason = str(failure.value)
            self._log.error("reconfig aborted, nothing changed: {error}", error=reason)
        else:
            reason = f"{self.settings.config_file}: {_one_line(failure)}"
            self._log.failure("reconfig aborted, nothing changed", failure=failure)
        raise ReconfigRefused(reason)

    def _apply(self, settings: Settings) -> Deferred[ReconfigOutcome]:
        old = self._applied
        new = settings.config
        self._warn_restart_needed(self.settings, settings)
        loaded = list(self.manager.plugin_table())  # in load order
        unload = [name for name in loaded
                  if (name in old.plugins and old.plugins[name].enabled
                      and (name not in new.plugins or not new.plugins[name].enabled))
                  or (name in new.plugins and not new.plugins[name].enabled)]
        kept = [name for name in new.enabled()
                if name in loaded and name not in unload and name in old.plugins]
        # A plugin whose isolation options changed is reloaded with them
        # (and its new data and policy) once the transaction committed.
        restart = [name for name in kept
                   if old.plugins[name].isolation() != new.plugins[name].isolation()]
        failed: List[str] = []
        reload = [name for name in kept if name not in restart
                  and old.plugins[name].data != new.plugins[name].data]
        # A plugin whose restart policy keys changed gets them with
        # set_policy(); unless its data changed too, it is not reloaded.
        policy = [name for name in kept if name not in restart
                  and old.plugins[name].policy() != new.plugins[name].policy()]
        load = [name for name in new.enabled() if name not in loaded]
        undo: List[Callable[[], object]] = []
        manager_policy = policy_changes(self.settings.config.manager, new.manager)
        applied = self.settings.config.manager
        manager_policy_set = False
        if manager_policy:
            before = self.manager.restart_policy
            if self._set_manager_policy(manager_policy):
                manager_policy_set = True
                undo.append(lambda: self.manager.set_restart_policy(**before.as_dict()))
                applied = attr.evolve(applied, **{k: getattr(new.manager, k)
                                                  for k in POLICY_KEYS})
            else:
                failed.append("manager restart policy")
        self._log.info("reconfig: unload {unload}, reload {reload}, load {load}, "
                       "restart policy {policy}{restart}",
                       unload=unload, reload=reload, load=load, policy=policy,
                       restart=f", reload with new isolation options {restart}" if restart else "")

        def commit(outcome: ReconfigOutcome) -> ReconfigOutcome:
            # Keep the new manager-level settings that need no restart (the
            # restart policy, once applied), and the new plugin settings,
            # but those not in effect as they were: the next reconfig of
            # the same file tries them again.
            plugins = _as_applied(old, new, outcome.failed, restart)
            self.settings = attr.evolve(self.settings, config=attr.evolve(
                self.settings.config, manager=applied, plugins=plugins))
            self._applied = attr.evolve(new, plugins=plugins)
            return outcome

        transaction = ReconfigTransaction(self.manager, new, self._set_policy, self._log,
                                          old=old, undo=undo)
        return transaction.run(unload, reload, load, policy, failed, manager_policy_set,
                               restart).addCallback(commit)

    def _set_manager_policy(self, changes: Dict[str, Any]) -> bool:
        """
        Set the manager's default restart policy keys C{changes}; log what
        was applied, or why not.

        @return: whether it was applied.
        """
        try:
            self.manager.set_restart_policy(**changes)
        except ValueError as e:
            self._log.error("reconfig: manager restart policy not applied: {error}",
                            error=str(e))
            return False
        self._log.info("reconfig: manager restart policy: {changes}; in effect: {policy}",
                       changes=format_policy(changes),
                       policy=format_policy(self.manager.restart_policy.as_dict()))
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
            self._log.error("reconfig: restart policy of {name} not applied: {error}",
                            name=name, error=str(e))
            return False
        except Exception:
            self._log.failure("reconfig: restart policy of {name} not applied", name=name)
            return False
        self._log.info("reconfig: restart policy of {name}: {given}{how}; in effect: {policy}",
                       name=name, given=format_policy(given),
                       how=" (before its reload)" if reloaded else " (not reloaded)",
                       policy=format_policy(effective.as_dict()))
        return True

    def _warn_restart_needed(self, current: Settings, new: Settings) -> None:
        old_m, new_m = current.config.manager, new.config.manager
        # The restart policy keys are applied without a restart.
        changed = [f.name for f in attr.fields(type(old_m))
                   if f.name not in POLICY_KEYS
                   and getattr(old_m, f.name) != getattr(new_m, f.name)]
        for section in _restart_sections(current.config, new.config):
            changed.append(f"[{section}]")
        if current.token != new.token:
            changed.append("control token")
        if changed:
            self._log.warn("reconfig: {changed} changed; restart to apply",
                           changed=", ".join(changed))


def _as_applied(old: Config, new: Config, failed: Sequence[str],
                restart: Sequence[str]) -> Mapping[str, PluginConfig]:
    """
    The plugin sections in effect after a reconfig from C{old} to C{new}
    that committed with C{failed}: C{new}'s, except those not in effect,
    which stay C{old}'s (the next reconfig of the same file sees them
    differ and tries again): the restart policy keys of a plugin whose
    policy was not set (C{"policy NAME"}); the isolation options of one
    whose new ones were not applied (C{"isolation NAME"}), or its whole
    section when it was to be reloaded with them (in C{restart}) and that
    reload failed.
    """
    plugins = dict(new.plugins)
    for what in failed:
        kind, _, name = what.partition(" ")
        if name not in old.plugins or name not in plugins:
            continue
        if kind == "isolation" and name in restart:
            plugins[name] = old.plugins[name]
        elif kind == "isolation":
            plugins[name] = attr.evolve(
                plugins[name], **{key: getattr(old.plugins[name], key)
                                  for key in ISOLATION_KEYS})
        elif kind == "policy":
            plugins[name] = attr.evolve(
                plugins[name], **{key: getattr(old.plugins[name], key) for key in POLICY_KEYS})
    return types.MappingProxyType(plugins)


def _restart_sections(old: Config, new: Config) -> List[str]:
    """
    The optional sections (C{[irc]}, C{[web]}) that changed: they need a
    restart.
    """
    return [name for name in ("irc", "web")
            if getattr(old, name, None) != getattr(new, name, None)]


def _refused(reason: str) -> Deferred[ReconfigOutcome]:
    d: Deferred[ReconfigOutcome] = Deferred()
    d.errback(ReconfigRefused(reason))
    return d


def policy_changes(old: ManagerConfig, new: ManagerConfig) -> Dict[str, Any]:
    """
    The manager's restart policy keys to set when the C{[manager]} section
    goes from C{old} to C{new}: those whose value changed, a key the file no
    longer gives going back to L{RestartPolicy}'s built-in default.
    """
    before = RestartPolicy().evolve(**old.policy()).as_dict()
    after = RestartPolicy().evolve(**new.policy()).as_dict()
    return {key: after[key] for key in POLICY_KEYS if before[key] != after[key]}


def format_policy(keys: Mapping[str, Any]) -> str:
    """
    Restart policy keys for a log line: C{restart='no', restart_burst=2}.
    """
    if not keys:
        return "none given"
    return ", ".join(f"{key}={keys[key]!r}" for key in POLICY_KEYS if key in keys)
