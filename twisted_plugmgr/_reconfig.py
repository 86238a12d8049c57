"""
A SIGHUP reconfig applied as one transaction: the new plugins are loaded,
then those whose data changed are reloaded together
(L{PluginManager.reload_many}); if either fails, what was loaded is
unloaded again and nothing else changes. Then the plugins the file no
longer enables are unloaded (an unload always removes its plugin), and the
new restart policies are set.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import attr
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._config import Config, PluginConfig

__all__ = ["ReconfigOutcome", "ReconfigRefused", "ReconfigTransaction"]


@attr.s(frozen=True, auto_attribs=True)
class ReconfigOutcome:
    """
    What a reconfig changed (all empty: nothing needed to).

    @ivar loaded: the plugins it loaded.
    @ivar unloaded: the plugins it unloaded.
    @ivar reloaded: the plugins it reloaded (their data changed).
    @ivar policy: the plugins given new restart policy keys, not reloaded.
    @ivar manager_policy: whether the manager's default restart policy
        changed.
    """

    loaded: Tuple[str, ...] = ()
    unloaded: Tuple[str, ...] = ()
    reloaded: Tuple[str, ...] = ()
    policy: Tuple[str, ...] = ()
    manager_policy: bool = False

    @property
    def changed(self) -> bool:
        """
        Whether anything changed.
        """
        return bool(self.loaded or self.unloaded or self.reloaded or self.policy
                    or self.manager_policy)


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
    The data a plugin of the config file is loaded with.
    """
    return plugin.data


class ReconfigTransaction:
    """
    One reconfig's changes to the plugins.

    @param manager: the manager.
    @param new: the config file as read now.
    @param set_policy: sets a plugin's restart policy keys (name, keys,
        reloaded) and says whether that worked.
    @param log: where the outcome is logged.
    """

    def __init__(self, manager: Any, new: Config,
                 set_policy: Callable[[str, Dict[str, Any], bool], bool], log: Logger) -> None:
        self.manager = manager
        self.new = new
        self.set_policy = set_policy
        self.log = log

    def run(self, unload: List[str], reload: List[str], load: List[str], policy: List[str],
            failed: List[str]) -> Deferred[Any]:
        """
        Apply the changes; C{failed} collects what failed after the
        transaction committed (an unload, a policy).
        """
        manager, new = self.manager, self.new
        loaded: List[str] = []

        def report(_: Any = None) -> None:
            if failed:
                self.log.warn("reconfig done; failed: {failed}", failed=", ".join(failed))
            else:
                self.log.info("reconfig done")

        def load_one(_: Any, name: str) -> Deferred[Any]:
            d = manager.load(name, plugin_data(new.plugins[name]), **new.plugins[name].policy(),
                             **new.plugins[name].isolation())
            return d.addCallback(lambda _: loaded.append(name))

        def reload_all(_: Any) -> Deferred[Any]:
            # A reloaded plugin's new policy is set first, so that its new
            # instance starts under it.
            for name in policy:
                if name in reload and not self.set_policy(name, new.plugins[name].policy(), True):
                    failed.append(f"policy {name}")
            data = {name: plugin_data(new.plugins[name]) for name in reload}
            return manager.reload_many(reload, data) if reload else succeed({})

        def unload_one(_: Any, name: str) -> Deferred[Any]:
            def lost(failure: Failure) -> None:
                failed.append(f"unload {name}")

            return manager.unload(name, reason="removed from the config").addErrback(lost)

        def committed(_: Any) -> Deferred[Any]:
            for name in policy:
                if name not in reload and not self.set_policy(
                        name, new.plugins[name].policy(), False):
                    failed.append(f"policy {name}")
            d: Deferred[Any] = succeed(None)
            for name in unload:
                d.addCallback(unload_one, name)
            return d.addCallback(report)

        def aborted(failure: Failure) -> Deferred[Any]:
            # The manager broadcast (and logged) the failure as an event.
            undo = [manager.unload(name, "immediate", "reconfig aborted").addErrback(
                lambda f: None) for name in reversed(loaded)]
            reason = failure.getErrorMessage()

            def logged(_: Any) -> None:
                self.log.error("reconfig aborted, nothing changed: {error}", error=reason)

            return gatherResults(undo).addCallback(logged)

        d: Deferred[Any] = succeed(None)
        for name in load:
            d.addCallback(load_one, name)
        d.addCallback(reload_all)
        return d.addCallbacks(committed, aborted)
