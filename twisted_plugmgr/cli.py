"""
C{plugmgr}: operate a running plugin manager through its control channel.

::

    plugmgr [GLOBAL OPTIONS] COMMAND [COMMAND OPTIONS] [GLOBAL OPTIONS]

    GLOBAL OPTIONS: [--control ENDPOINT | --config FILE]
                    [--token TOKEN | --token-file FILE]
                    [--json] [--timeout SECONDS] [--version]
    COMMAND: status | available
             | load NAME [--data JSON] [--restart MODE] [--restart-delay S]
                         [--restart-delay-max S] [--restart-burst N]
                         [--restart-interval S]
                         [--fail-on-error | --no-fail-on-error]
             | unload NAME [--mode MODE] [--reason TEXT]
             | reload NAME [NAME...] [--data JSON] [--mode MODE]
             | reload-changed
             | reset NAME | events [--count N] | shutdown [--mode MODE]

C{reload} of one plugin reloads it as it always did (C{--data}: its new
data); of several, reloads them in one transaction, applied completely or
not at all (C{--data}: a JSON object of name -> new data, for those whose
data changes), and prints a line a plugin, or one line naming the plugin
that failed (nothing was changed: exit 1).

The global options may come before the command, after it, or both; an
option given twice takes its last value. C{--version} prints
C{plugmgr VERSION} and exits, without connecting.

Where the manager listens, in order: C{--control}; the C{control} of the
config file given with C{--config} (default: C{plugmgr.sock} next to it);
C{$PLUGMGR_CONTROL}; C{plugmgr.sock} in the current directory.

Exit status: 0 done; 1 the manager refused or failed the command (no such
plugin, ...); 2 bad usage (a restart policy option with a bad value
included: it is checked before connecting); 3 cannot connect, or the
connection was lost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from importlib import metadata
from typing import Any, Dict, List, NoReturn, Optional, Sequence, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, TimeoutError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import react
from twisted.protocols import amp

from ._config import ConfigError, default_control, parse_config
from ._control import (
    ControlClient,
    ControlError,
    ReloadFailedError,
    client_endpoint_for,
    connect,
)
from ._policy import RESTART_MODES, RestartPolicy

__all__ = ["main", "run", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "EXIT_UNAVAILABLE"]

#: The command was done.
EXIT_OK = 0
#: The manager refused or failed the command.
EXIT_REFUSED = 1
#: Bad usage (options, JSON, config file).
EXIT_USAGE = 2
#: Cannot connect, or the connection was lost.
EXIT_UNAVAILABLE = 3

#: Seconds to wait for the connection.
CONNECT_TIMEOUT = 10.0

#: The width a plugin's line of last failure in the status table is cut to,
#: unless its indent leaves less than L{_MIN_FAILURE_WIDTH} for it.
_STATUS_WIDTH = 80

#: The fewest characters of a last failure the status table shows.
_MIN_FAILURE_WIDTH = 20

#: What a line of last failure in the status table starts with.
_FAILURE_LABEL = "last failure: "

#: The restart policy options of C{load}: option -> policy key.
_POLICY_OPTIONS = {
    "--restart": "restart",
    "--restart-delay": "restart_delay",
    "--restart-delay-max": "restart_delay_max",
    "--restart-burst": "restart_burst",
    "--restart-interval": "restart_interval",
    "--fail-on-error": "fail_on_error",
}


class _UsageError(Exception):
    """Bad usage: a message for the user."""


class _VersionRequested(Exception):
    """C{--version} was given: print the version and exit."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message}\n{self.format_usage().rstrip()}")


class _VersionAction(argparse.Action):
    """
    C{--version}: stops the parsing at once, as argparse's own C{version}
    action does (so no command is needed), but leaves the printing to
    L{run}, which writes to its C{out}.
    """

    def __init__(self, option_strings: Sequence[str], dest: str,
                 default: Any = argparse.SUPPRESS, help: Optional[str] = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> NoReturn:
        raise _VersionRequested()


def _version() -> str:
    """
    The version of twisted-plugmgr: the installed distribution's, else the
    package's own C{__version__}, else C{unknown}.
    """
    try:
        return metadata.version("twisted-plugmgr")
    except metadata.PackageNotFoundError:
        import twisted_plugmgr

        return str(getattr(twisted_plugmgr, "__version__", "unknown"))


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
        help="the manager's config file, to find its control channel and token")
    add(tokens, "--token", help="the control token (TCP endpoints); or $PLUGMGR_TOKEN")
    add(tokens, "--token-file", metavar="FILE", help="a file holding the control token")
    add(group, "--json", action="store_true", help="print JSON, for scripts")
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


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="plugmgr",
        description="Operate a running twisted-plugmgr manager through its control channel.",
        epilog="Exit status: 0 done, 1 refused by the manager, 2 bad usage, "
        "3 cannot connect or connection lost.",
    )
    _add_global_options(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(
            name, help=help, epilog="The global options (see plugmgr --help) may come "
            "here too.")
        _add_global_options(p, after_command=True)
        return p

    command("status", "the plugin table")
    command("available", "plugins that could be loaded")
    p = command("load", "load a plugin")
    p.add_argument("name")
    p.add_argument("--data", metavar="JSON", help="data for the plugin, as JSON")
    _add_policy_options(p)
    p = command("unload", "unload a plugin")
    p.add_argument("name")
    p.add_argument("--mode", choices=("immediate", "smart", "lazy"))
    p.add_argument("--reason", default="")
    p = command("reload", "reload a plugin from its source; several: in one transaction, "
                "applied completely or not at all")
    p.add_argument("names", nargs="+", metavar="name")
    p.add_argument("--data", metavar="JSON",
                   help="new data for the plugin, as JSON; with several names, a JSON object "
                   "of name -> new data, for those whose data changes")
    p.add_argument("--mode", choices=("immediate", "smart", "lazy"))
    command("reload-changed", "reload the plugins whose source changed")
    p = command("reset", "clear a plugin's restart count; start it afresh if quarantined")
    p.add_argument("name")
    p = command("events", "print events as they happen")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p = command("shutdown", "shut the manager down (its process exits)")
    p.add_argument("--mode", choices=("immediate", "smart", "lazy"))
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """
    Parse C{argv}, global options before and after the command alike.

    @raise _UsageError: for bad usage.
    @raise _VersionRequested: for C{--version}.
    """
    parser = _parser()
    args = parser.parse_args(list(argv))
    # The two sides of the command are parsed apart: the main parser's
    # mutually exclusive group does not see an option given after it.
    if args.token is not None and args.token_file is not None:
        parser.error("argument --token-file: not allowed with argument --token")
    return args


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise _UsageError(f"cannot read token file {path}: {e}") from None
    if not token:
        raise _UsageError(f"token file {path} is empty")
    return token


def _resolve(args: argparse.Namespace, environ: Dict[str, str]) -> tuple:
    """
    Where to connect, and with which token.
    """
    control: Optional[str] = args.control
    token: Optional[str] = args.token
    if args.token_file:
        token = _read_token_file(args.token_file)
    if args.config:
        try:
            with open(args.config, "rb") as f:
                text = f.read()
        except OSError as e:
            raise _UsageError(f"cannot read {args.config}: {e.strerror}") from None
        try:
            config = parse_config(text, args.config)
        except ConfigError as e:
            raise _UsageError(str(e)) from None
        if control is None:
            server = config.manager.control or default_control(config.base_dir)
            try:
                control = client_endpoint_for(server)
            except ValueError as e:
                raise _UsageError(f"{e} (use --control)") from None
        if token is None:
            if config.manager.control_token is not None:
                token = config.manager.control_token
            elif config.manager.control_token_file is not None:
                token = _read_token_file(config.manager.control_token_file)
    if control is None:
        control = environ.get("PLUGMGR_CONTROL") or "unix:path=plugmgr.sock"
    if ":" not in control:
        control = f"unix:path={control}"
    elif control.split(":", 1)[0].lower() == "unix":
        control = client_endpoint_for(control)
    if token is None:
        token = environ.get("PLUGMGR_TOKEN") or None
    return control, token


def _reason(e: BaseException) -> str:
    os_error = getattr(e, "osError", None)
    if isinstance(os_error, int):
        return os.strerror(os_error)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _parse_data(text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise _UsageError(f"--data is not valid JSON: {e}") from None


def _reload_data(args: argparse.Namespace) -> Any:
    """
    The C{--data} of C{reload}: with one name, that plugin's new data; with
    several, an object of name -> new data (L{None}: not given).

    @raise _UsageError: for JSON that is not valid, or that is not an
        object when several names are given.
    """
    data = _parse_data(args.data)
    if len(args.names) > 1 and data is not None and not isinstance(data, dict):
        kind = ("a boolean" if isinstance(data, bool) else "a number"
                if isinstance(data, (int, float)) else "a string" if isinstance(data, str)
                else "an array")
        raise _UsageError(f"--data: with several plugins, give a JSON object of name -> "
                          f"data, not {kind}")
    return data


def _parse_policy(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """
    The restart policy keys given as options of C{load}, checked; L{None}
    when none is given (the request is then what older clients send).

    @raise _UsageError: naming the option, for a bad value.
    """
    policy: Dict[str, Any] = {}
    for option, key in _POLICY_OPTIONS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        try:
            RestartPolicy().evolve(**{key: value})
        except ValueError as e:
            raise _UsageError(f"argument {option}: {e}") from None
        policy[key] = value
    return policy or None


def _when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _table_lines(rows: List[List[str]], headers: List[str]) -> List[str]:
    """
    The lines of a table, its columns aligned: the header, then a line a row.
    """
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = []
    for row in [headers] + rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(str(cell).ljust(w) for cell, w in cells).rstrip())
    return lines


def _table(rows: List[List[str]], headers: List[str]) -> str:
    return "\n".join(_table_lines(rows, headers))


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _truncated(text: str, width: int) -> str:
    """
    C{text} on one line, cut to C{width} characters with an ellipsis.
    """
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(width - 3, 0)] + "..."


def _format_status(plugins: List[Dict[str, Any]]) -> str:
    """
    The plugin table, a line a plugin; under the line of a plugin that has
    a last failure, that failure, indented to the second column and cut to
    end within L{_STATUS_WIDTH} columns (keeping at least
    L{_MIN_FAILURE_WIDTH} characters of it).
    """
    if not plugins:
        return "no plugins loaded"
    headers = ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "RESTARTS", "DESCRIPTION"]
    rows = [
        [str(p.get("name", "?")), str(p.get("version") or "-"), str(p.get("state", "?")),
         _when(p.get("loaded_at")), str(p.get("reloads", 0)), _count(p.get("restarts")),
         str(p.get("longname") or "")]
        for p in plugins
    ]
    header, *lines = _table_lines(rows, headers)
    indent = " " * (max(len(row[0]) for row in [headers] + rows) + 2)
    room = max(_STATUS_WIDTH - len(indent) - len(_FAILURE_LABEL), _MIN_FAILURE_WIDTH)
    out = [header]
    for line, p in zip(lines, plugins, strict=True):
        out.append(line)
        failure = p.get("last_failure")
        if failure:
            out.append(indent + _FAILURE_LABEL + _truncated(str(failure), room))
    return "\n".join(out)


def _format_event(event: Dict[str, Any]) -> str:
    parts = [time.strftime("%H:%M:%S", time.localtime(event.get("time", time.time()))),
             event.get("kind", "?")]
    if event.get("plugin") is not None:
        parts.append(str(event["plugin"]))
    for key in ("count", "quit_message", "old_version", "new_version", "message", "path",
                "cause", "attempt", "delay", "restarts", "failure"):
        if key in event:
            parts.append(f"{key}={event[key]!r}" if isinstance(event[key], str)
                         else f"{key}={event[key]}")
    if event.get("missing"):
        parts.append("missing=" + ",".join(event["missing"]))
    if "table" in event:
        parts.append("plugins=" + ",".join(sorted(event["table"])))
    return " ".join(parts)


async def _command(
    args: argparse.Namespace, client: ControlClient, out: TextIO, err: TextIO
) -> int:
    name = args.command
    as_json = args.json

    def emit(value: Any, human: str) -> None:
        out.write((json.dumps(value, indent=None if name == "events" else 2) if as_json
                   else human) + "\n")
        out.flush()

    if name == "status":
        plugins = await client.status()
        emit(plugins, _format_status(plugins))
    elif name == "available":
        names = await client.available()
        emit(names, "\n".join(names) if names else "no plugins available")
    elif name == "load":
        plugin = await client.load(args.name, _parse_data(args.data), _parse_policy(args))
        emit(plugin, f"loaded {plugin['name']} {plugin.get('version') or ''}".rstrip())
    elif name == "unload":
        quit_message = await client.unload(args.name, args.mode, args.reason)
        emit({"name": args.name, "quit_message": quit_message},
             f"unloaded {args.name}: {quit_message}")
    elif name == "reload" and len(args.names) == 1:
        plugin = await client.reload(args.names[0], _reload_data(args), args.mode)
        emit(plugin, f"reloaded {plugin['name']} {plugin.get('version') or ''}".rstrip())
    elif name == "reload":
        versions = await client.reload_many(args.names, _reload_data(args), args.mode)
        emit(versions, "\n".join(f"reloaded {n} {v or ''}".rstrip()
                                 for n, v in versions.items()))
    elif name == "reload-changed":
        results = await client.reload_changed()
        lines = [
            f"reloaded {n} {r.get('version') or ''}".rstrip() if r.get("ok")
            else f"failed {n}: {r.get('error')}"
            for n, r in sorted(results.items())
        ]
        emit(results, "\n".join(lines) if lines else "nothing changed")
        if any(not r.get("ok") for r in results.values()):
            return EXIT_REFUSED
    elif name == "reset":
        plugin = await client.reset(args.name)
        emit(plugin, f"reset {plugin['name']} {plugin.get('version') or ''}".rstrip())
    elif name == "shutdown":
        await client.shutdown(args.mode)
        emit({"shutdown": True}, "manager shut down")
    elif name == "events":
        done: Deferred = Deferred()
        seen = [0]

        def on_event(event: Dict[str, Any]) -> None:
            emit(event, _format_event(event))
            seen[0] += 1
            if args.count is not None and seen[0] >= args.count and not done.called:
                done.callback(None)

        client.closed.addCallback(lambda _: None if done.called else done.callback(None))
        await client.subscribe(on_event)
        err.write("subscribed; waiting for events (Ctrl-C to stop)\n")
        err.flush()
        await done
    return EXIT_OK


async def run(
    reactor: IReactorCore,
    argv: Sequence[str],
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    environ: Optional[Dict[str, str]] = None,
) -> int:
    """
    Run C{plugmgr} with C{argv} (without the program name) on C{reactor}.

    @param reactor: the reactor to connect with; it keeps time for the
        timeouts too (an L{IReactorTime} provider, as every reactor is).
    @return: the exit status.
    """
    clock = IReactorTime(reactor)
    environ = dict(os.environ if environ is None else environ)

    def fail(code: int, message: str) -> int:
        err.write(f"plugmgr: {message}\n")
        err.flush()
        return code

    try:
        args = _parse(argv)
        control, token = _resolve(args, environ)
        if args.command == "reload":
            _reload_data(args)
        else:
            _parse_data(getattr(args, "data", None))
        _parse_policy(args)
    except _UsageError as e:
        return fail(EXIT_USAGE, str(e))
    except _VersionRequested:
        out.write(f"plugmgr {_version()}\n")
        out.flush()
        return EXIT_OK
    except SystemExit as e:  # --help
        return int(e.code or 0)
    client: Optional[ControlClient] = None
    try:
        connecting = connect(reactor, control, token)
        connecting.addTimeout(CONNECT_TIMEOUT, clock)
        client = await connecting
    except ControlError as e:
        return fail(EXIT_REFUSED, f"{control}: refused: {e.message}")
    except ValueError as e:
        return fail(EXIT_USAGE, str(e))
    except DeferredTimeoutError:
        # No connection, or no answer to authenticating, within CONNECT_TIMEOUT.
        return fail(EXIT_UNAVAILABLE, f"cannot connect to {control}: no answer within "
                    f"{CONNECT_TIMEOUT:g}s (is the manager running?)")
    except (ConnectError, TimeoutError, OSError) as e:
        return fail(EXIT_UNAVAILABLE,
                    f"cannot connect to {control}: {_reason(e)} (is the manager running?)")
    try:
        command = _command(args, client, out, err)
        d = Deferred.fromCoroutine(command)
        if args.timeout is not None:
            d.addTimeout(args.timeout, clock)
        return await d
    except ReloadFailedError as e:
        return fail(EXIT_REFUSED, f"{args.command}: {' '.join(e.message.split())} "
                    "(nothing was changed)")
    except ControlError as e:
        return fail(EXIT_REFUSED, f"{args.command}: {e.message}")
    except amp.UnhandledCommand as e:
        # A manager older than this client: it does not know the command.
        return fail(EXIT_REFUSED, f"{args.command}: the manager does not know this command "
                    f"(it runs an older twisted-plugmgr): {e.args[-1] if e.args else e}")
    except amp.UnknownRemoteError as e:
        return fail(EXIT_REFUSED, f"{args.command}: refused: {e}")
    except (ConnectionDone, ConnectionLost, amp.RemoteAmpError) as e:
        return fail(EXIT_UNAVAILABLE, f"{args.command}: connection lost ({e})")
    except DeferredTimeoutError:
        # Deferred.addTimeout's, not twisted.internet.error's TimeoutError.
        return fail(EXIT_UNAVAILABLE, f"{args.command}: no answer within {args.timeout:g}s")
    finally:
        if client is not None:
            client.close()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    The C{plugmgr} console script.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)

    async def _main(reactor: IReactorCore) -> None:
        code = await run(reactor, arguments)
        if code:
            raise SystemExit(code)

    react(_main)


if __name__ == "__main__":  # pragma: no cover
    main()
