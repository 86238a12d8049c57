"""
The C{[manager]} section: L{ManagerConfig} and its validation.
"""

from __future__ import annotations

import keyword
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import attr

from .._lifecycle import DEFAULT_DEADLINES, ShutdownMode, coerce_deadlines
from ._endpoints import resolve_unix_endpoint
from ._error import describe
from ._restart import POLICY_KEYS, PolicyKeys, check_policy
from ._values import Checker

__all__ = ["ManagerConfig", "check_manager", "MANAGER_KEYS"]


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class ManagerConfig(PolicyKeys):
    """
    The C{[manager]} section.

    @ivar packages: dotted names of the packages plugins are found in.
    @ivar paths: absolute directories plugins are found in.
    @ivar watch: whether to reload plugins when their source changes.
    @ivar control: the control channel's server endpoint string (UNIX
        socket paths already resolved against the config file's directory),
        or L{None} for the default (L{default_control}).
    @ivar shutdown_mode: the mode of the shutdown on SIGTERM/SIGINT.
    @ivar deadlines: seconds per L{ShutdownMode}, defaults merged in.
    @ivar start_deadline: seconds a plugin's start may take, or L{None} for
        the manager's default.
    @ivar control_token: the shared secret a non-UNIX control connection
        must present first, or L{None}.
    @ivar control_token_file: an absolute path to a file holding that
        secret, or L{None}.
    @ivar allow_shared_dir: allow the control socket in a directory that
        other users can write to.
    @ivar old_code_grace: seconds after a plugin version goes to warn if its
        code is still referenced; C{False} when the file turns the check off,
        L{None} when it does not say (the manager's default).
    @ivar log_tables: log C{plugin_table} events too (at debug level).
    @ivar entry_points: also find plugins in the installed distributions'
        entry points (group C{twisted_plugmgr.plugins}).
    @ivar restart: the manager's default restart policy keys (as
        L{RestartPolicy}'s; C{restart}, C{restart_delay}, C{restart_delay_max},
        C{restart_burst}, C{restart_interval}, C{fail_on_error}), each
        L{None} when the file does not give it (L{RestartPolicy}'s default
        applies); L{policy()<PolicyKeys.policy>} gives those that are given.
    """

    packages: Tuple[str, ...] = ()
    paths: Tuple[str, ...] = ()
    watch: bool = False
    control: Optional[str] = None
    shutdown_mode: ShutdownMode = ShutdownMode.SMART
    deadlines: Mapping[ShutdownMode, float] = attr.ib(
        factory=lambda: types.MappingProxyType(dict(DEFAULT_DEADLINES))
    )
    start_deadline: Optional[float] = None
    control_token: Optional[str] = None
    control_token_file: Optional[str] = None
    allow_shared_dir: bool = False
    old_code_grace: Union[float, bool, None] = None
    log_tables: bool = False
    entry_points: bool = True
    restart: Optional[str] = None
    restart_delay: Optional[float] = None
    restart_delay_max: Optional[float] = None
    restart_burst: Optional[int] = None
    restart_interval: Optional[float] = None
    fail_on_error: Optional[bool] = None


#: The keys of the C{[manager]} section, in the order error messages list them.
MANAGER_KEYS = (
    "packages", "paths", "watch", "control", "shutdown_mode", "deadlines",
    "start_deadline", "control_token", "control_token_file", "allow_shared_dir",
    "old_code_grace", "log_tables", "entry_points",
) + POLICY_KEYS


def check_manager(check: Checker, value: Any) -> ManagerConfig:
    """
    Validate the C{[manager]} table.

    @raise ConfigError: for an unknown key or an invalid value.
    """
    section = check.table(value, "manager")
    check.keys(section, MANAGER_KEYS, "manager")
    kw: Dict[str, Any] = {}
    if "packages" in section:
        kw["packages"] = _packages(check, section["packages"])
    if "paths" in section:
        if not isinstance(section["paths"], list):
            raise check.fail("manager.paths", "expected an array of strings",
                             describe(section["paths"]))
        kw["paths"] = tuple(
            check.path(p, f"manager.paths[{i}]") for i, p in enumerate(section["paths"])
        )
    if "watch" in section:
        kw["watch"] = check.boolean(section["watch"], "manager.watch")
    if "control" in section:
        control = check.endpoint(section["control"], "manager.control")
        kw["control"] = resolve_unix_endpoint(control, check.base_dir)
    if "shutdown_mode" in section:
        kw["shutdown_mode"] = _mode(check, section["shutdown_mode"], "manager.shutdown_mode")
    if "deadlines" in section:
        kw["deadlines"] = _deadlines(check, section["deadlines"])
    if "start_deadline" in section:
        kw["start_deadline"] = check.positive(section["start_deadline"], "manager.start_deadline")
    if "old_code_grace" in section:
        grace = section["old_code_grace"]
        if grace is False:
            kw["old_code_grace"] = False
        elif isinstance(grace, bool):
            raise check.fail("manager.old_code_grace",
                             "expected a positive number of seconds, or false to turn it off",
                             "true")
        else:
            kw["old_code_grace"] = check.positive(grace, "manager.old_code_grace")
    if "log_tables" in section:
        kw["log_tables"] = check.boolean(section["log_tables"], "manager.log_tables")
    if "entry_points" in section:
        kw["entry_points"] = check.boolean(section["entry_points"], "manager.entry_points")
    if "control_token" in section:
        kw["control_token"] = check.string(section["control_token"], "manager.control_token")
    if "control_token_file" in section:
        kw["control_token_file"] = check.path(
            section["control_token_file"], "manager.control_token_file"
        )
    if "control_token" in kw and "control_token_file" in kw:
        raise check.fail(
            "manager.control_token_file",
            "expected either control_token or control_token_file, not both",
        )
    if "allow_shared_dir" in section:
        kw["allow_shared_dir"] = check.boolean(
            section["allow_shared_dir"], "manager.allow_shared_dir"
        )
    kw.update(check_policy(check, section, "manager"))
    return ManagerConfig(**kw)


def _packages(check: Checker, value: Any) -> Tuple[str, ...]:
    packages = check.strings(value, "manager.packages")
    for i, package in enumerate(packages):
        if not all(_identifier(part) for part in package.split(".")):
            raise check.fail(
                f"manager.packages[{i}]",
                "expected a dotted Python package name such as 'myapp.plugins'",
                describe(package),
            )
    return packages


def _identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _mode(check: Checker, value: Any, key: str) -> ShutdownMode:
    expected = "expected one of 'immediate', 'smart', 'lazy'"
    if not isinstance(value, str):
        raise check.fail(key, expected, describe(value))
    try:
        return ShutdownMode.coerce(value)
    except ValueError:
        raise check.fail(key, expected, describe(value)) from None


def _deadlines(check: Checker, value: Any) -> Mapping[ShutdownMode, float]:
    deadlines = check.table(value, "manager.deadlines")
    check.keys(deadlines, tuple(m.value for m in ShutdownMode), "manager", "deadlines")
    seconds = {
        mode: check.positive(deadlines[mode], f"manager.deadlines.{mode}") for mode in deadlines
    }
    return types.MappingProxyType(coerce_deadlines(seconds))
