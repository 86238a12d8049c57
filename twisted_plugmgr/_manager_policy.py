"""
The supervision part of L{PluginManager}'s public API: restart policies,
the manager's and each plugin's, and L{reset}.

A mixin, so that the manager's class stays short: it reaches the manager's
L{Supervisor} and L{Registry} (C{_supervisor}, C{_registry}) and nothing
else.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail

from ._errors import NoSuchPlugin
from ._policy import RestartPolicy
from ._registry import Registry
from ._supervise import Supervisor

__all__ = ["PolicyMethods"]


class PolicyMethods:
    """
    L{PluginManager}'s supervision methods, over its C{_supervisor} and
    C{_registry}.
    """

    _supervisor: Supervisor
    _registry: Registry

    @property
    def restart_policy(self) -> RestartPolicy:
        """The restart policy of the plugins that do not say otherwise."""
        return self._supervisor.defaults

    def set_restart_policy(self, **policy: Any) -> RestartPolicy:
        """
        Change the manager's restart policy (keys of L{RestartPolicy}; the
        others keep their value); it applies at once.

        @raise ValueError: naming a bad key or value; nothing changes then.
        """
        self._supervisor.defaults = self._supervisor.defaults.evolve(**policy)
        return self._supervisor.defaults

    def policy_of(self, name: str) -> RestartPolicy:
        """
        Plugin C{name}'s restart policy: the manager's, under its class's
        attributes, under what its load gave. @raise NoSuchPlugin: if none.
        """
        return self._supervisor.policy_of(self._registry.named(name))

    def set_policy(self, name: str, **policy: Any) -> RestartPolicy:
        """
        Replace what C{load} (or the config) gave of plugin C{name}'s
        restart policy (keys not given: its class's or the manager's); no
        reload. @return: its restart policy now.
        @raise NoSuchPlugin: if it is not loaded; C{ValueError} naming a
            bad key or value (nothing changes then).
        """
        return self._supervisor.set_policy(self._registry.named(name), policy)

    def reset(self, name: str) -> Deferred[Any]:
        """
        Forget plugin C{name}'s restarts; a quarantined one starts afresh.
        @return: a Deferred with the instance; failing with L{NoSuchPlugin}.
        """
        try:
            return self._supervisor.reset(self._registry.named(name))
        except NoSuchPlugin as error:
            return fail(error)
