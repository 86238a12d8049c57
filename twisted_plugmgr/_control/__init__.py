"""
The control channel: AMP commands, the server that answers them for an
L{IPluginManager}, and a small client.

The server listens on any Twisted server endpoint. A UNIX socket (the
default) is private to its user (see L{_listen}); any other endpoint (TCP,
...) needs a shared token: the first command of every connection must be
L{Authenticate}, and the token is compared with L{hmac.compare_digest}.
Connections are logged at debug level only; what they do (load, unload,
reload, reset, reconfig, shutdown, a dropped connection) at info; an
expected error (a bad plugin name, an unknown plugin...) is answered
without a traceback in the log.

The modules, each with one job:
  - L{_wire}: the argument type, the JSON form of values and events, the
    errors and the table of what each reports, the commands;
  - L{_operations}: the server's answers to an operator's questions
    (info, catalog, call, emit, reconfig, ready) and its error mapping;
  - L{_server}: L{ControlProtocol} and L{ControlFactory}, the server side;
  - L{_listen}: socket-path safety and L{ControlService}, which listens;
  - L{_client}: L{ControlClient} and L{connect}.

Public names only; everything is defined in those modules.
"""

from ._client import ControlClient, ControlClientProtocol, connect
from ._listen import (
    ControlChannelError,
    ControlService,
    check_unix_socket_path,
    client_endpoint_for,
    unix_socket_path,
)
from ._operations import NO_RECONFIG
from ._server import (
    AUTH_TIMEOUT,
    CLOSE_TIMEOUT,
    MAX_BOX_BYTES,
    MAX_BOX_KEYS,
    MAX_UNACKNOWLEDGED_EVENTS,
    ControlFactory,
    ControlProtocol,
)
from ._wire import (
    JSON,
    WIRE_ERRORS,
    AlreadyLoadedError,
    AmbiguousPluginError,
    Authenticate,
    AuthenticationFailed,
    AuthenticationRequired,
    Available,
    BadRequestError,
    Call,
    CallTimedOutError,
    Catalog,
    CompileFailedError,
    ControlError,
    DependencyFailedError,
    Emit,
    Event,
    Info,
    InitFailedError,
    InternalError,
    InvalidDataError,
    InvalidMetadataError,
    InvalidNameError,
    InvalidTransitionError,
    Load,
    ManagerStoppedError,
    NoSuchPluginError,
    NotAvailableError,
    PluginCrashedError,
    PluginFailedError,
    PluginQuarantinedError,
    Ready,
    Reconfig,
    ReconfigRefusedError,
    Reload,
    ReloadChanged,
    ReloadFailedError,
    ReloadMany,
    Reset,
    Shutdown,
    Status,
    Subscribe,
    Unload,
    WireError,
    event_to_json,
    reported_as,
    to_json,
)

__all__ = [
    "JSON",
    "ControlError",
    "NoSuchPluginError",
    "InvalidNameError",
    "AlreadyLoadedError",
    "CompileFailedError",
    "InitFailedError",
    "InvalidMetadataError",
    "InvalidDataError",
    "AmbiguousPluginError",
    "DependencyFailedError",
    "ManagerStoppedError",
    "InvalidTransitionError",
    "PluginQuarantinedError",
    "ReloadFailedError",
    "ReconfigRefusedError",
    "NotAvailableError",
    "PluginFailedError",
    "CallTimedOutError",
    "PluginCrashedError",
    "BadRequestError",
    "InternalError",
    "AuthenticationRequired",
    "AuthenticationFailed",
    "ControlChannelError",
    "WireError",
    "WIRE_ERRORS",
    "reported_as",
    "Authenticate",
    "Status",
    "Available",
    "Load",
    "Unload",
    "Reload",
    "ReloadMany",
    "ReloadChanged",
    "Reset",
    "Shutdown",
    "Subscribe",
    "Event",
    "Info",
    "Catalog",
    "Call",
    "Emit",
    "Reconfig",
    "Ready",
    "NO_RECONFIG",
    "ControlProtocol",
    "ControlFactory",
    "ControlService",
    "ControlClient",
    "ControlClientProtocol",
    "connect",
    "event_to_json",
    "to_json",
    "check_unix_socket_path",
    "client_endpoint_for",
    "unix_socket_path",
    "MAX_BOX_BYTES",
    "MAX_BOX_KEYS",
    "MAX_UNACKNOWLEDGED_EVENTS",
    "AUTH_TIMEOUT",
    "CLOSE_TIMEOUT",
]
