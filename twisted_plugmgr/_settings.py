"""
The settings of a C{twist plugmgr} run: the config file read and checked
(off the reactor thread, by the caller), with the command line's
overrides, the control channel's endpoint and token resolved. No reactor,
no manager.
"""

from __future__ import annotations

import os
import types
from typing import Any, Dict, Optional, Tuple

import attr

from ._config import (
    Config,
    ConfigError,
    PluginConfig,
    default_control,
    endpoint_kind,
    parse_config,
)
from ._control import unix_socket_path
from ._lifecycle import ShutdownMode

__all__ = ["StartupError", "Overrides", "Settings", "apply_overrides", "endpoint_text",
           "read_config"]



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
    @ivar web_token: the C{[web]} section's own token (C{token}, or read
        from C{token_file}), or L{None}: the dashboard then uses L{token}.
    """

    config: Config
    config_file: Optional[str]
    overrides: Overrides
    control: str
    token: Optional[str] = None
    web_token: Optional[str] = None


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
        token = _read_token(source, manager.control_token_file, "manager.control_token_file")
    if endpoint_kind(control) != "unix" and not token:
        raise ConfigError(
            source, "manager.control",
            "a control endpoint that is not a UNIX socket needs manager.control_token or "
            "manager.control_token_file", repr(control),
        )
    web_token = None
    if config.web is not None:
        web_token = config.web.token
        if config.web.token_file is not None:
            web_token = _read_token(source, config.web.token_file, "web.token_file")
    return Settings(config=config, config_file=filename, overrides=overrides,
                    control=control, token=token, web_token=web_token)


def endpoint_text(description: str) -> str:
    """
    An endpoint for a log line: a UNIX socket as its path (C{socket
    /run/plugmgr/plugmgr.sock}), anything else as its endpoint string.
    """
    path = unix_socket_path(description)
    return f"socket {path}" if path else description


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


def _read_token(source: str, path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, key,
                          f"a readable text file ({e})", repr(path)) from None
    if not token:
        raise ConfigError(source, key, "a file holding the token", "an empty file")
    return token
