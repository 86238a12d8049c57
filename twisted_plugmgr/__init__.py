"""
twisted-plugmgr: a Twisted MultiService that loads, unloads and hot-reloads
plugins as child services.

Public names only; everything is defined in the private modules.
"""

from ._details import PluginDetails
from ._dispatch import STOP, handler
from ._errors import (
    AlreadyLoaded,
    AmbiguousPlugin,
    CallTimedOut,
    CompileFailed,
    DependencyError,
    HandlerAbandoned,
    InitFailed,
    InvalidData,
    InvalidMetadata,
    InvalidName,
    InvalidTransition,
    ManagerStopped,
    NoSuchHandler,
    NoSuchPlugin,
    PluginCrashed,
    PluginError,
    PluginQuarantined,
    ReloadFailed,
    RemoteError,
    ShutdownFailed,
    ShutdownTimedOut,
    StartTimedOut,
)
from ._events import EVENT_KINDS, PluginEvent
from ._interfaces import IPlugin, IPluginAPI, IPluginManager
from ._lifecycle import DEFAULT_DEADLINES, DEFAULT_START_DEADLINE, PluginState, ShutdownMode
from ._manager import PluginInfo, PluginManager
from ._plugin import LiveReference, Plugin, PluginAPI
from ._policy import RestartPolicy
from ._reactor import PluginReactor

__all__ = [
    "AlreadyLoaded",
    "CallTimedOut",
    "CompileFailed",
    "DEFAULT_DEADLINES",
    "DEFAULT_START_DEADLINE",
    "DependencyError",
    "EVENT_KINDS",
    "HandlerAbandoned",
    "IPlugin",
    "IPluginAPI",
    "IPluginManager",
    "InitFailed",
    "InvalidMetadata",
    "InvalidData",
    "AmbiguousPlugin",
    "InvalidName",
    "InvalidTransition",
    "LiveReference",
    "ManagerStopped",
    "NoSuchHandler",
    "NoSuchPlugin",
    "Plugin",
    "PluginAPI",
    "PluginError",
    "PluginEvent",
    "PluginDetails",
    "PluginInfo",
    "PluginManager",
    "PluginCrashed",
    "PluginQuarantined",
    "PluginReactor",
    "PluginState",
    "ReloadFailed",
    "RemoteError",
    "RestartPolicy",
    "STOP",
    "ShutdownFailed",
    "ShutdownMode",
    "ShutdownTimedOut",
    "StartTimedOut",
    "handler",
]
