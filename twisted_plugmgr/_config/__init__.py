"""
The configuration file: its model and its validation.

Pure code: L{parse_config} takes the text of a TOML file (bytes or str) and
the file's name, and returns a frozen L{Config} or raises L{ConfigError}.
Nothing here touches the reactor or the network (paths are resolved as
strings, relative to the directory of the config file); whatever the input,
the only exception that comes out is L{ConfigError}. The one exception to
"pure": the C{[irc] server} string is checked by Twisted's own endpoint
parser (against a stand-in reactor), which reads the certificate files a
TLS string names and, for an endpoint type Twisted does not know itself,
looks through the C{twisted.plugins} drop-ins.

The file::

    [manager]
    packages = ["myapp.plugins"]          # dotted package names
    paths = ["plugins"]                   # directories, relative to this file
    watch = true
    control = "unix:path=plugmgr.sock"    # any Twisted server endpoint string
    shutdown_mode = "smart"
    deadlines = { immediate = 1, smart = 10, lazy = 120 }
    start_deadline = 30
    control_token_file = "token"          # required for non-UNIX endpoints
    allow_shared_dir = false
    restart = "on-failure"                # the default restart policy: "no",
    restart_delay = 0.1                   # "on-failure" or "always", backoff,
    restart_delay_max = 30                # how many restarts (restart_burst)
    restart_burst = 5                     # within restart_interval seconds
    restart_interval = 10
    fail_on_error = false

    [plugins.hello]
    enabled = true
    data = { greeting = "hi" }
    restart = "always"                    # any restart policy key, for this plugin
    isolate = true                        # in a worker process of its own, with
    call_deadline = 5                     # a deadline on each handler call and
    limits = { memory_mb = 512 }          # resource limits (also cpu_seconds, open_files)

    [irc]
    server = "tcp:irc.example.org:6667"
    nick = "plugbot"
    channels = ["#plugmgr"]

    [web]
    endpoint = "tcp:9180:interface=127.0.0.1"   # metrics and the dashboard
    token_file = "web-token"              # or token = "..."; else the control token
    metrics_public = false                # /metrics without the token off loopback

One module per section or concern, all of them pure:

  - C{_error}: L{ConfigError}, and how it names keys and found values;
  - C{_paths}: paths relative to the config file's directory;
  - C{_endpoints}: Twisted endpoint strings as text (split, join, kind,
    UNIX socket paths, the default control endpoint, the client check);
  - C{_values}: the checks of single values (a table, a string, ...);
  - C{_restart}: the restart policy keys both C{[manager]} and
    C{[plugins.NAME]} take, checked by L{twisted_plugmgr._policy}'s rules;
  - C{_manager}, C{_plugins}, C{_irc}, C{_web}: one section each, its model and its
    validation;
  - C{_file}: the whole file, L{Config} and L{parse_config}.
"""

from __future__ import annotations

from ._endpoints import (
    DEFAULT_SOCKET_NAME,
    check_client_endpoint,
    check_server_endpoint,
    default_control,
    endpoint_kind,
    join_endpoint,
    resolve_unix_endpoint,
    split_endpoint,
)
from ._error import ConfigError
from ._file import Config, parse_config
from ._irc import FloodConfig, IRCConfig
from ._manager import ManagerConfig
from ._plugins import PluginConfig
from ._web import WebConfig

__all__ = [
    "ConfigError",
    "Config",
    "ManagerConfig",
    "PluginConfig",
    "IRCConfig",
    "FloodConfig",
    "WebConfig",
    "parse_config",
    "split_endpoint",
    "join_endpoint",
    "endpoint_kind",
    "check_client_endpoint",
    "check_server_endpoint",
    "resolve_unix_endpoint",
    "default_control",
    "DEFAULT_SOCKET_NAME",
]
