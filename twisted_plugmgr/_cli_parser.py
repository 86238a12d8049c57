"""
The command line of C{plugmgr}: the argparse parser (global options that
may come before or after the command, each command's arguments, every one
with its help), and the checks of option values made before connecting.
Plain code: no reactor, no I/O.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from ._isolate._options import ISOLATION_KEYS, LIMIT_KEYS, check_options
from ._policy import RESTART_MODES, RestartPolicy

__all__ = [
    "UsageError", "VersionRequested", "build_parser", "parse", "parse_data", "reload_data",
    "parse_policy", "parse_isolation", "parse_arguments", "check", "PLUGIN_ARGUMENTS",
    "SHUTDOWN_MODES",
]

#: The shutdown modes a C{--mode} option takes.
SHUTDOWN_MODES = ("immediate", "smart", "lazy")

#: The restart policy options of C{load}: option -> policy key.
_POLICY_OPTIONS = {
    "--restart": "restart",
    "--restart-delay": "restart_delay",
    "--restart-delay-max": "restart_delay_max",
    "--restart-burst": "restart_burst",
    "--restart-interval": "restart_interval",
    "--fail-on-error": "fail_on_error",
}

#: The commands whose positional arguments are plugin names (all of them,
#: or the first only): what shell completion completes with plugin names.
PLUGIN_ARGUMENTS = {"status": "all", "info": "first", "load": "first", "unload": "first",
                    "reload": "all", "reset": "first", "call": "first"}

_MODE_HELP = ("how the plugin shuts down: immediate, smart (finish what it is doing) or "
              "lazy (wait until it is idle); default: the manager's")


class UsageError(Exception):
    """Bad usage: a message for the user."""


class VersionRequested(Exception):
    """C{--version} was given: print the version and exit."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


class _VersionAction(argparse.Action):
    """
    C{--version}: stops the parsing at once, as argparse's own C{version}
    action does (so no command is needed), but leaves the printing to the
    caller, which writes to its C{out}.
    """

    def __init__(self, option_strings: Sequence[str], dest: str,
                 default: Any = argparse.SUPPRESS, help: Optional[str] = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> NoReturn:
        raise VersionRequested()


def _add_global_options(parser: argparse.ArgumentParser, after_command: bool) -> None:
    """
    Add the global options to C{parser}: the main parser, or (with
    C{after_command}) a command's, so that they may come after the command.

    A command's parser parses into a namespace of its own, whose every
    attribute argparse then copies over the main parser's: there the
    options default to C{SUPPRESS} (no attribute unless given), so that a
    value given before the command stands, and one given after it wins.
    They are left out of the command's usage and help, which say where the
    global options are described.
    """
    def add(container: Any, *flags: str, **kw: Any) -> None:
        if after_command:
            kw.update(default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        container.add_argument(*flags, **kw)

    if after_command:
        group: Any = parser
        tokens: Any = parser
    else:
        group = parser.add_argument_group(
            "global options", "These may come before COMMAND, after it, or both; "
            "an option given twice takes its last value.")
        tokens = group.add_mutually_exclusive_group()
    add(group, "--version", action=_VersionAction, help="print the version and exit")
    add(group, "--control", metavar="ENDPOINT",
        help="client endpoint of the control channel, e.g. unix:path=/run/plugmgr.sock "
        "or tcp:host=127.0.0.1:port=8123 (default: from --config, then $PLUGMGR_CONTROL, "
        "then unix:path=plugmgr.sock)")
    add(group, "--config", metavar="FILE",
        help="the manager's config file, to find its control channel and token (a file "
        "that does not parse: a warning, and the default socket next to it)")
    add(tokens, "--token", help="the control token (TCP endpoints); or $PLUGMGR_TOKEN")
    add(tokens, "--token-file", metavar="FILE", help="a file holding the control token")
    add(group, "--json", action="store_true",
        help="print JSON, for scripts (errors too, on standard output)")
    add(group, "--timeout", type=float, metavar="SECONDS",
        help="give up on the command after this long (default: wait)")


def _seconds(text: str) -> float:
    """
    An option's number of seconds: a finite number (JSON has no other).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}")
    return value


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    """
    The restart policy options of C{load}; one not given is L{None}, and
    the manager's policy applies.
    """
    group = parser.add_argument_group(
        "restart policy", "What the manager does when the plugin fails or ends; a key "
        "not given is left to the manager.")
    group.add_argument("--restart", choices=RESTART_MODES,
                       help="restart it never, after a failure, or after any exit")
    group.add_argument("--restart-delay", type=_seconds, metavar="S",
                       help="seconds before a restart, doubled by each recent restart")
    group.add_argument("--restart-delay-max", type=_seconds, metavar="S",
                       help="the longest delay before a restart")
    group.add_argument("--restart-burst", type=int, metavar="N",
                       help="restarts allowed within the interval; one more failure "
                       "quarantines it")
    group.add_argument("--restart-interval", type=_seconds, metavar="S",
                       help="the window, in seconds, the restarts are counted in")
    group.add_argument("--fail-on-error", action=argparse.BooleanOptionalAction,
                       help="whether an unhandled error in its timers and looping "
                       "calls is a failure (let it crash)")


def _add_isolation_options(parser: argparse.ArgumentParser, reload: bool) -> None:
    """
    The isolation options of C{load} and (with C{reload}) of C{reload}; one
    not given is L{None}.
    """
    group = parser.add_argument_group(
        "isolation", "Whether the plugin runs in a worker process of its own, and how; an "
        "option not given is left to "
        + ("what was given before (at load, by the config file or by a reload), else to "
           "its class." if reload else "its class."))
    group.add_argument("--isolate", action=argparse.BooleanOptionalAction,
                       help="run it in a worker process of its own, or in the manager's"
                       + (" (moved with its state)" if reload else ""))
    group.add_argument("--call-deadline", type=_seconds, metavar="S",
                       help="seconds a call to one of its handlers may take before its "
                       "worker is killed (isolated plugins; default 30)")
    group.add_argument("--limit", action="append", metavar="KEY=N",
                       help="a limit of its worker: memory_mb (address space), cpu_seconds "
                       "or open_files; repeat for several"
                       + ("; together they replace the limits given before" if reload else ""))
    if reload:
        group.add_argument("--class-isolation", action="store_true",
                           help="first drop the isolation options given before, so that its "
                           "class's own apply")


def build_parser() -> argparse.ArgumentParser:
    """
    The parser of C{plugmgr}'s command line.
    """
    parser = _ArgumentParser(
        prog="plugmgr",
        description="Operate a running twisted-plugmgr manager through its control channel.",
        epilog="Exit status: 0 done, 1 refused by the manager (or not ready, or an invalid "
        "config file or plugin, or a file new would replace), 2 bad usage, 3 cannot connect "
        "or connection lost.",
    )
    _add_global_options(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".",
            epilog="The global options (see plugmgr --help) may come here too.")
        _add_global_options(p, after_command=True)
        return p

    p = command("status", "the plugin table (of the plugins named, or all)")
    p.add_argument("names", nargs="*", metavar="name", help="a loaded plugin to show")
    p = command("info", "everything about one plugin: metadata, state, counters, failures, "
                "restart policy, its files on disk, old versions still alive")
    p.add_argument("name", help="a loaded plugin")
    p = command("available", "the plugins that could be loaded: loaded, not loaded, or "
                "broken (a file that does not compile)")
    p.add_argument("--names", action="store_true",
                   help="print only the names, one a line, without checking the files")
    p = command("load", "load a plugin")
    p.add_argument("name", help="the plugin to load")
    p.add_argument("--data", metavar="JSON", help="data for the plugin, as JSON")
    _add_policy_options(p)
    _add_isolation_options(p, reload=False)
    p = command("unload", "unload a plugin")
    p.add_argument("name", help="the plugin to unload")
    p.add_argument("--mode", choices=SHUTDOWN_MODES, help=_MODE_HELP)
    p.add_argument("--reason", default="", help="why, given to the plugin's shutdown")
    p = command("reload", "reload a plugin from its source; several: in one transaction, "
                "applied completely or not at all")
    p.add_argument("names", nargs="+", metavar="name", help="a plugin to reload")
    p.add_argument("--data", metavar="JSON",
                   help="new data for the plugin, as JSON; with several names, a JSON object "
                   "of name -> new data, for those whose data changes")
    p.add_argument("--mode", choices=SHUTDOWN_MODES, help="how the old version shuts down: "
                   + _MODE_HELP.split(": ", 1)[1])
    _add_isolation_options(p, reload=True)
    command("reload-changed", "reload the plugins whose source changed")
    p = command("reset", "clear a plugin's restart count; start it afresh if quarantined")
    p.add_argument("name", help="a loaded plugin")
    p = command("call", "call a plugin's handler and print its answer")
    p.add_argument("name", help="the plugin")
    p.add_argument("event", help="the event its handler handles")
    p.add_argument("args", nargs="*", metavar="arg",
                   help="an argument: a JSON value, or else a plain string")
    p = command("emit", "call every handler of an event and print their answers")
    p.add_argument("event", help="the event")
    p.add_argument("args", nargs="*", metavar="arg",
                   help="an argument: a JSON value, or else a plain string")
    command("reconfig", "re-read the config file and apply it, as SIGHUP does")
    p = command("checkconfig", "check a config file offline, as twist plugmgr does at "
                "start (no manager needed)")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="the config file (default: --config)")
    p.add_argument("--plugins", action="store_true",
                   help="also import each enabled plugin here, in this process (never in a "
                   "running manager), and check its metadata and data")
    command("ready", "exit 0 when every enabled plugin is running, else 1 naming those that "
            "are not (a readiness probe)")
    p = command("events", "print events as they happen")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p = command("shutdown", "shut the manager down (its process exits)")
    p.add_argument("--mode", choices=SHUTDOWN_MODES, help="how the plugins shut down: "
                   + _MODE_HELP.split(": ", 1)[1])
    p = command("new", "write a new plugin and its test, to start from (no manager needed)")
    p.add_argument("name", metavar="NAME", help="the plugin's name (a Python identifier)")
    p.add_argument("--irc", action="store_true", help="an IRC bot plugin, with a command")
    p.add_argument("--dir", default=".", metavar="DIR",
                   help="where to write NAME.py and test_NAME.py (default: the current "
                   "directory; created if missing)")
    p = command("completion", "print a shell completion script")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell: bash or zsh")
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """
    Parse C{argv}, global options before and after the command alike.

    @raise UsageError: for bad usage.
    @raise VersionRequested: for C{--version}.
    """
    parser = build_parser()
    args = parser.parse_args(list(argv))
    # The two sides of the command are parsed apart: the main parser's
    # mutually exclusive group does not see an option given after it.
    if args.token is not None and args.token_file is not None:
        parser.error("argument --token-file: not allowed with argument --token")
    return args


def parse_data(text: Optional[str]) -> Any:
    """
    The value of a C{--data} option (L{None}: not given).

    @raise UsageError: for JSON that is not valid.
    """
    if text is None:
        return None
    try:
        return strict_json(text)
    except ValueError as e:
        raise UsageError(f"--data is not valid JSON: {e}") from None


def _kind(data: Any) -> str:
    return ("a boolean" if isinstance(data, bool) else "a number"
            if isinstance(data, (int, float)) else "a string" if isinstance(data, str)
            else "an array")


def reload_data(args: argparse.Namespace) -> Any:
    """
    The C{--data} of C{reload}: with one name, that plugin's new data; with
    several, an object of name -> new data (L{None}: not given).

    @raise UsageError: for JSON that is not valid, or that is not an
        object when several names are given.
    """
    data = parse_data(args.data)
    if len(args.names) > 1 and data is not None and not isinstance(data, dict):
        raise UsageError(f"--data: with several plugins, give a JSON object of name -> "
                         f"data, not {_kind(data)}")
    return data


def parse_policy(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """
    The restart policy keys given as options of C{load}, checked; L{None}
    when none is given (the request is then what older clients send).

    @raise UsageError: naming the option, for a bad value.
    """
    policy: Dict[str, Any] = {}
    for option, key in _POLICY_OPTIONS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        try:
            RestartPolicy().evolve(**{key: value})
        except ValueError as e:
            raise UsageError(f"argument {option}: {e}") from None
        policy[key] = value
    return policy or None


def _limit(text: str) -> Tuple[str, int]:
    """
    One C{--limit KEY=N}, as C{(KEY, N)}.

    @raise UsageError: naming the option, when it is not C{KEY=N} with a
        known key and a positive whole number.
    """
    key, equals, amount = text.partition("=")
    key = key.strip()
    if not equals or key not in LIMIT_KEYS:
        raise UsageError(f"argument --limit: invalid limit {text!r}: expected KEY=N, KEY one "
                         f"of {', '.join(LIMIT_KEYS)}")
    try:
        value = int(amount)
        check_options({"limits": {key: value}})
    except ValueError:
        raise UsageError(f"argument --limit: invalid limit {text!r}: expected {key}=N, N a "
                         "positive whole number") from None
    return key, value


def parse_isolation(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """
    The isolation options given as options of C{load} or C{reload},
    checked; L{None} when none is given (the request is then what older
    clients send). For C{reload}, C{--class-isolation} gives every option
    not given otherwise as L{None}: the manager drops its value.

    @raise UsageError: naming the option, for a bad value.
    """
    options: Dict[str, Any] = {}
    if getattr(args, "isolate", None) is not None:
        options["isolate"] = args.isolate
    deadline = getattr(args, "call_deadline", None)
    if deadline is not None:
        try:
            check_options({"call_deadline": deadline})
        except ValueError as e:
            raise UsageError(f"argument --call-deadline: {e}") from None
        options["call_deadline"] = deadline
    limits = getattr(args, "limit", None)
    if limits:
        options["limits"] = dict(_limit(text) for text in limits)
    if getattr(args, "class_isolation", False):
        for key in ISOLATION_KEYS:
            options.setdefault(key, None)
    return options or None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def strict_json(text: str) -> Any:
    """
    C{text} as JSON that the control channel can carry: C{NaN},
    C{Infinity} and numbers too large for a float (C{1e999}) are refused
    with C{ValueError}, as any text that is not JSON.
    """
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def parse_arguments(texts: Sequence[str]) -> List[Any]:
    """
    The arguments of C{call} and C{emit}: each a JSON value when it parses
    as one (C{3}, C{true}, C{"x"}, C{[1, 2]}, C{{"a": 1}}), else the plain
    string (C{hello}, and C{NaN} or C{1e999}, which no JSON value holds).
    """
    values = []
    for text in texts:
        try:
            values.append(strict_json(text))
        except ValueError:
            values.append(text)
    return values


def check(args: argparse.Namespace) -> None:
    """
    Check what the options hold before connecting.

    @raise UsageError: for a bad C{--data}, restart policy or isolation
        option, or isolation options for a reload of several plugins.
    """
    if args.command == "reload":
        reload_data(args)
    else:
        parse_data(getattr(args, "data", None))
    parse_policy(args)
    if parse_isolation(args) is not None and len(getattr(args, "names", ())) > 1:
        raise UsageError("the isolation options reload one plugin: a reload of several, in "
                         "one transaction, keeps the isolation of each")
