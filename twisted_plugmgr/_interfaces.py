"""
The contracts: what a plugin is, what its API offers, and what the manager
does. Implementations say C{@implementer(...)}; tests check them with
C{verifyObject}.
"""

from __future__ import annotations

from twisted.application.service import IService
from zope.interface import Attribute, Interface

__all__ = ["IPlugin", "IPluginAPI", "IPluginManager", "IPluginHost", "IIsolated"]


class IPlugin(IService):
    """
    A plugin: a service the manager loads, starts, addresses by name and
    shuts down. C{name} (from L{IService}) must equal the name it is loaded
    under.
    """

    longname = Attribute("A one-line description of the plugin (str).")
    license = Attribute("The plugin's license (str).")
    version = Attribute("The plugin's version (str); required.")
    author = Attribute("Who wrote the plugin (str).")
    requires = Attribute(
        "Names of the plugins this one needs loaded first (tuple of str, may be empty)."
    )

    def shutdown(mode, reason):
        """
        Stop the plugin.

        @param mode: a L{ShutdownMode}: C{IMMEDIATE}, C{SMART} or C{LAZY}.
        @param reason: why (str, may be empty).
        @return: the quit message, or a Deferred firing with it.
        """


class IPluginAPI(Interface):
    """
    What a plugin receives from the manager to talk to it and to the other
    plugins.
    """

    name = Attribute("The name the plugin is loaded under.")
    manager = Attribute("The L{IPluginManager} that loaded the plugin.")
    log = Attribute("A twisted.logger.Logger namespaced to the plugin.")
    reactor = Attribute(
        "A plugin-scoped view of the reactor: what the plugin starts through it "
        "is cancelled or closed when it is unloaded or reloaded."
    )

    def warning(message):
        """
        Broadcast C{plugin_warning} with C{message}.
        """

    def error(failure_or_exception):
        """
        Broadcast C{plugin_error} with a Failure (an exception is wrapped).
        """

    def post(plugin, event, *args, **kw):
        """
        Deliver C{event} to C{plugin} on a later reactor turn; return None.
        """

    def call(plugin, event, *args, **kw):
        """
        Call C{plugin}'s handler for C{event}; return a Deferred with its result.
        """

    def emit(event, *args, **kw):
        """
        Call every handler of C{event}; return a Deferred with their results.
        """

    def plugin(name):
        """
        Return a live reference to the plugin loaded under C{name}.
        """

    def looping_call(f, *args, **kw):
        """
        Return a LoopingCall of C{f} on the plugin's clock, owned by the plugin.
        """

    def fail(reason=None):
        """
        Say the plugin is broken: its restart policy restarts it, quarantines
        it or unloads it.
        """

    def stop(reason="", mode="smart"):
        """
        End the plugin: it is unloaded like any other (its dependents first),
        and C{plugin_unloaded} says C{reason="stopped_itself"}.

        @return: a Deferred firing with its quit message.
        """


class IPluginManager(Interface):
    """
    The plugin manager: loads, unloads, reloads and addresses plugins.
    """

    def load(name, data=None, **policy):
        """
        Load and start plugin C{name}, constructed with C{data}, with the
        restart policy keys and isolation options (C{isolate},
        C{call_deadline}, C{limits}) of C{policy}.

        @return: a Deferred firing with the started plugin.
        """

    def reset(name):
        """
        Forget plugin C{name}'s restarts; start it afresh if quarantined.

        @return: a Deferred firing with the instance.
        """

    def info(name):
        """
        Return the plugin table's row of plugin C{name} (without broadcasting
        C{plugin_table}).

        @raise NoSuchPlugin: if it is not loaded.
        """

    def details(name):
        """
        Return a L{PluginDetails} of plugin C{name}: its row, what it
        requires and what requires it, its source files and their hashes,
        its restart policy, its isolation and its old versions still alive.

        @raise NoSuchPlugin: if it is not loaded.
        """

    def unload(name, mode="smart", reason="", cascade=True):
        """
        Shut plugin C{name} down in C{mode} and remove it.

        @return: a Deferred firing with its quit message.
        """

    def reload(name, data=None, mode="smart", dependents=False, isolation=None):
        """
        Replace plugin C{name} with a fresh import of its source,
        transactionally; with C{isolation}, new isolation options in place
        of those it was loaded with (L{None}: kept).

        @return: a Deferred firing with the new instance.
        """

    def reload_many(names, data=None, mode="smart"):
        """
        Reload the running plugins C{names} in one transaction (C{data}: name
        -> new data), applied completely or not at all.

        @return: a Deferred firing with {name: new version}; failing with
            C{ReloadFailed}, everything as it was.
        """

    def reload_changed():
        """
        Reload every plugin whose source changed since it was loaded.

        @return: a Deferred firing with {name: new instance or Failure}.
        """

    def shutdown(mode="smart"):
        """
        Shut every plugin down in stages, then the manager.

        @return: a Deferred firing when everything has stopped.
        """

    def plugin_table():
        """
        Return name -> PluginInfo for every loaded plugin; broadcast C{plugin_table}.
        """

    def available():
        """
        Return the sorted names of the plugins that could be loaded.
        """

    metrics = Attribute(
        "What is counted of handler calls and reloads while metrics are on: "
        "enable(), disable(), enabled, plugins() (name -> PluginMetrics, broadcasting "
        "nothing), timed(reload Deferred), reload_buckets, reload_seconds."
    )

    def register(listener):
        """
        Add a listener (a callable taking a PluginEvent).
        """

    def unregister(listener):
        """
        Remove a listener.
        """

    def post(plugin, event, *args, **kw):
        """
        Deliver C{event} to C{plugin} on a later reactor turn; return None.
        """

    def call(plugin, event, *args, **kw):
        """
        Call C{plugin}'s handler for C{event}; return a Deferred with its result.
        """

    def emit(event, *args, **kw):
        """
        Call every handler of C{event} in order; return a Deferred with the results.
        """

    def watch(debounce=0.005):
        """
        Reload plugins when their source files change.
        """

    def unwatch():
        """
        Stop watching source files.
        """


class IPluginHost(Interface):
    """
    What a plugin's L{IPluginAPI} and its live references need of the
    manager that loaded the plugin, beyond L{IPluginManager}. The manager
    provides it; plugins use their API instead.
    """

    def instance_of(name):
        """
        Return the instance of the plugin loaded under C{name}, the one
        serving now.

        @raise NoSuchPlugin: when no plugin of that name is loaded (or it is
            still loading, or stopping).
        """

    def report_error(name, failure):
        """
        Broadcast C{plugin_error} about plugin C{name} with C{failure}.
        """

    def report_warning(name, message):
        """
        Broadcast C{plugin_warning} about plugin C{name} with C{message}.
        """

    def timer_error(name, api, failure, report=True):
        """
        A timer, looping call or delayed call that the plugin whose API is
        C{api} started raised C{failure}: broadcast C{plugin_error} (unless
        C{report} is false), and with C{fail_on_error} in its restart
        policy, fail it.
        """

    def fail_plugin(name, api, failure, cause):
        """
        The plugin whose API is C{api} failed (C{cause}: C{"fail"},
        C{"error"}, ...): its restart policy decides what happens.
        """

    def stop_plugin(name, api, reason="", mode="smart"):
        """
        Unload plugin C{name} because it ends itself, if C{api} is the API of
        the instance serving under that name.

        @return: a Deferred firing with its quit message (C{plugin_unloaded}
            says C{reason="stopped_itself"}); failing with C{NoSuchPlugin}
            when that instance is no longer the one serving.
        """


class IIsolated(Interface):
    """
    Marks the manager's stand-in for a plugin that runs in a worker process
    of its own: it cannot be reached through a live reference
    (C{api.plugin()}), only with C{api.call}, C{api.post} and C{api.emit}.
    """
