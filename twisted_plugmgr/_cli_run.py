"""
Running C{plugmgr}: the command line parsed, where the manager is (the
control endpoint and token), the offline commands (C{checkconfig} and its
check of the plugins, C{new}, C{completion}), the connection, the command,
and what each way of failing prints and exits with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tomllib
from importlib import metadata
from typing import Any, Dict, Optional, Sequence, TextIO, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, TimeoutError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import react
from twisted.protocols import amp

from . import _scaffold
from ._checkplugins import check_plugins
from ._cli_commands import EXIT_OK, EXIT_REFUSED, Refused, run_command
from ._cli_completion import script
from ._cli_format import format_checked, format_problem
from ._cli_parser import UsageError, VersionRequested, check, parse
from ._config import ConfigError, default_control, parse_config, resolve_unix_endpoint
from ._control import (
    ControlClient,
    ControlError,
    ReloadFailedError,
    client_endpoint_for,
    connect,
)
from ._deferreds import run_blocking
from ._errors import InvalidName
from ._settings import Overrides, read_config

__all__ = ["main", "run", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "EXIT_UNAVAILABLE",
           "CONNECT_TIMEOUT"]

#: Bad usage (options, JSON, an unreadable config or token file).
EXIT_USAGE = 2
#: Cannot connect, or the connection was lost.
EXIT_UNAVAILABLE = 3

#: Seconds to wait for the connection.
CONNECT_TIMEOUT = 10.0


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


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read token file {path}: {e}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def _raw_control(text: bytes) -> Dict[str, Any]:
    """
    The C{[manager]} table of a config file that is valid TOML but not a
    valid config (empty if it is not even TOML).
    """
    try:
        manager = tomllib.loads(text.decode("utf-8", "replace")).get("manager")
    except (tomllib.TOMLDecodeError, AttributeError):
        return {}
    return manager if isinstance(manager, dict) else {}


def _from_config(path: str, warn: TextIO) -> Tuple[str, Optional[str]]:
    """
    The control endpoint (a server endpoint string) and token of config
    file C{path}. A file that does not parse or validate does not lock the
    CLI out: a warning, and the default socket next to it (or the control
    key it has, when it is valid TOML).

    @raise UsageError: when the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    try:
        config = parse_config(text, path)
    except ConfigError as e:
        raw = _raw_control(text)
        control = raw.get("control")
        base = os.path.dirname(os.path.abspath(path))
        if isinstance(control, str) and control:
            control = resolve_unix_endpoint(control, base)
        else:
            control = default_control(base)
        warn.write(f"plugmgr: warning: {e}; connecting to {control}\n")
        warn.flush()
        token = raw.get("control_token")
        token_file = raw.get("control_token_file")
        if not (isinstance(token, str) and token):
            token = None
            if isinstance(token_file, str) and token_file:
                token = _read_token_file(os.path.join(base, token_file))
        return control, token
    server = config.manager.control or default_control(config.base_dir)
    token = config.manager.control_token
    if token is None and config.manager.control_token_file is not None:
        token = _read_token_file(config.manager.control_token_file)
    return server, token


def _resolve(args: argparse.Namespace, environ: Dict[str, str],
             warn: TextIO) -> Tuple[str, Optional[str]]:
    """
    Where to connect (a client endpoint string), and with which token.
    """
    control: Optional[str] = args.control
    token: Optional[str] = args.token
    if args.token_file:
        token = _read_token_file(args.token_file)
    if args.config:
        server, file_token = _from_config(args.config, warn)
        if control is None:
            try:
                control = client_endpoint_for(server)
            except ValueError as e:
                raise UsageError(f"{e} (use --control)") from None
        if token is None:
            token = file_token
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


def _wants_json(argv: Sequence[str]) -> bool:
    """
    Whether C{--json} was given (before a C{--}): for errors found before
    the command line could be parsed.
    """
    for word in argv:
        if word == "--":
            return False
        if word == "--json":
            return True
    return False


class _Output:
    """
    Where answers and errors go: with C{--json}, both to C{out} as JSON;
    else answers to C{out}, errors to C{err} as one C{plugmgr: ...} line.
    """

    def __init__(self, out: TextIO, err: TextIO, as_json: bool, command: Optional[str]):
        self.out, self.err, self.as_json, self.command = out, err, as_json, command

    def emit(self, value: Any, human: str) -> None:
        self.out.write((json.dumps(value, indent=None if self.command == "events" else 2)
                        if self.as_json else human) + "\n")
        self.out.flush()

    def fail(self, code: int, message: str) -> int:
        if self.as_json:
            self.out.write(json.dumps({"error": message, "command": self.command,
                                       "exit_status": code}, indent=2) + "\n")
            self.out.flush()
        else:
            self.err.write(f"plugmgr: {message}\n")
            self.err.flush()
        return code


async def _checkconfig(reactor: IReactorCore, args: argparse.Namespace,
                       output: _Output) -> int:
    path = args.file or args.config
    if path is None:
        return output.fail(EXIT_USAGE, "checkconfig: give FILE, or --config FILE")
    try:
        settings = await run_blocking(reactor, read_config, path, Overrides())
    except ConfigError as e:
        return output.fail(EXIT_REFUSED, str(e))
    enabled = list(settings.config.enabled())
    answer: Dict[str, Any] = {"file": path, "ok": True, "enabled": enabled,
                              "control": settings.control}
    if not args.plugins:
        output.emit(answer, format_checked(path, enabled, settings.control))
        return EXIT_OK
    # Plugin code runs here, in this process (never in a running manager),
    # on the reactor thread, as a manager imports it. What it prints goes to
    # standard error: standard output is the answer (JSON, for scripts).
    with contextlib.redirect_stdout(output.err):
        report = check_plugins(settings.config)
    answer.update(checked=report.checked, problems=report.problems)
    summary = format_checked(path, enabled, settings.control, report.checked,
                             report.problems, report.failed)
    if report.ok:
        output.emit(answer, summary)
        return EXIT_OK
    if output.as_json:
        answer.update(ok=False, error=summary, command="checkconfig", exit_status=EXIT_REFUSED)
        output.emit(answer, "")
        return EXIT_REFUSED
    for problem in report.problems:
        output.err.write(f"plugmgr: {format_problem(path, problem)}\n")
    return output.fail(EXIT_REFUSED, summary)


def _new(args: argparse.Namespace, output: _Output) -> int:
    """
    C{new NAME}: write the plugin and its test (see L{_scaffold.write}).
    """
    try:
        written = _scaffold.write(args.name, args.dir, irc=args.irc)
    except InvalidName:
        return output.fail(EXIT_USAGE, f"new: {args.name!r} is not a plugin name (a Python "
                           "identifier, not a keyword): nothing was written")
    except FileExistsError as e:
        return output.fail(EXIT_REFUSED, f"new: {e.filename} exists already: nothing was "
                           "written")
    except OSError as e:
        where = e.filename if e.filename is not None else args.dir
        return output.fail(EXIT_REFUSED, f"new: cannot write into {where}: {_reason(e)}: "
                           "nothing was written")
    steps = _scaffold.next_steps(args.name, args.dir, irc=args.irc)
    output.emit({"name": args.name, "irc": args.irc, "written": written,
                 "directory": os.path.abspath(args.dir)},
                "\n".join(f"wrote {path}" for path in written) + "\n" + steps)
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
    output = _Output(out, err, _wants_json(argv), None)
    try:
        args = parse(argv)
        output = _Output(out, err, args.json, args.command)
        if args.command == "completion":
            out.write(script(args.shell))
            out.flush()
            return EXIT_OK
        if args.command == "checkconfig":
            return await _checkconfig(reactor, args, output)
        if args.command == "new":
            return _new(args, output)
        control, token = _resolve(args, environ, err)
        check(args)
    except UsageError as e:
        return output.fail(EXIT_USAGE, str(e))
    except VersionRequested:
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
        return output.fail(EXIT_REFUSED, f"{control}: refused: {e.message}")
    except ValueError as e:
        return output.fail(EXIT_USAGE, str(e))
    except DeferredTimeoutError:
        # No connection, or no answer to authenticating, within CONNECT_TIMEOUT.
        return output.fail(EXIT_UNAVAILABLE, f"cannot connect to {control}: no answer within "
                           f"{CONNECT_TIMEOUT:g}s (is the manager running?)")
    except (ConnectError, TimeoutError, OSError) as e:
        return output.fail(EXIT_UNAVAILABLE, f"cannot connect to {control}: {_reason(e)} "
                           "(is the manager running?)")
    command = args.command
    try:
        d = Deferred.fromCoroutine(run_command(args, client, output.emit, err))
        if args.timeout is not None:
            d.addTimeout(args.timeout, clock)
        return await d
    except Refused as e:
        return output.fail(EXIT_REFUSED, f"{command}: {e}")
    except ReloadFailedError as e:
        return output.fail(EXIT_REFUSED, f"{command}: {' '.join(e.message.split())} "
                           "(nothing was changed)")
    except ControlError as e:
        return output.fail(EXIT_REFUSED, f"{command}: {e.message}")
    except amp.UnhandledCommand:
        # A manager older than this client: it does not know the command.
        return output.fail(EXIT_REFUSED, f"{command} is not supported by this manager "
                           "(it runs an older twisted-plugmgr)")
    except amp.UnknownRemoteError as e:
        return output.fail(EXIT_REFUSED, f"{command}: refused: {e}")
    except (ConnectionDone, ConnectionLost, amp.RemoteAmpError) as e:
        return output.fail(EXIT_UNAVAILABLE, f"{command}: connection lost ({e})")
    except DeferredTimeoutError:
        # Deferred.addTimeout's, not twisted.internet.error's TimeoutError.
        return output.fail(EXIT_UNAVAILABLE, f"{command}: no answer within {args.timeout:g}s")
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
