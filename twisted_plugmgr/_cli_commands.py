"""
What each command of C{plugmgr} does once connected: the requests it sends
through a L{ControlClient}, and what it prints (through C{emit}: the answer
as JSON with C{--json}, else the text of L{twisted_plugmgr._cli_format}).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, TextIO

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from ._cli_format import (
    format_catalog,
    format_event,
    format_info,
    format_outcome,
    format_ready,
    format_result,
    format_results,
    format_status,
    format_versions,
)
from ._cli_parser import (
    parse_arguments,
    parse_data,
    parse_isolation,
    parse_policy,
    reload_data,
)
from ._control import ControlClient

__all__ = ["Refused", "run_command", "EXIT_OK", "EXIT_REFUSED"]

#: The command was done.
EXIT_OK = 0
#: The manager refused or failed the command (or: not ready).
EXIT_REFUSED = 1

#: What prints an answer: C{emit(value, human)}.
Emit = Callable[[Any, str], None]


class Refused(Exception):
    """
    The command cannot be done, for a reason the CLI itself finds (a plugin
    that is not loaded, ...): exit 1 with the message.
    """


async def _status(args: argparse.Namespace, client: ControlClient, emit: Emit) -> int:
    plugins = await client.status()
    if args.names:
        loaded = {p.get("name") for p in plugins}
        missing = [name for name in args.names if name not in loaded]
        if missing:
            raise Refused(", ".join(f"plugin {name!r}" for name in missing)
                          + ": no such plugin: not loaded")
        plugins = [p for p in plugins if p.get("name") in args.names]
    emit(plugins, format_status(plugins))
    return EXIT_OK


async def _available(args: argparse.Namespace, client: ControlClient, emit: Emit) -> int:
    if not args.names:
        try:
            entries = await client.catalog()
        except amp.UnhandledCommand:
            entries = None  # an older manager: names only
        if entries is not None:
            emit(entries, format_catalog(entries))
            return EXIT_OK
    names = await client.available()
    emit(names, "\n".join(names) if names else "no plugins available")
    return EXIT_OK


def _check_isolation(plugin: Dict[str, Any], options: Any) -> None:
    """
    After a load or reload given isolation options C{options}: a manager
    older than them answers without saying whether the plugin is isolated,
    having ignored them.

    @raise Refused: then, saying where the plugin runs.
    """
    if options is not None and "isolated" not in plugin:
        raise Refused(f"plugin {plugin.get('name')!r}: the isolation options were ignored: "
                      "this manager is older than them (where the plugin runs is as before)")


async def _load(args: argparse.Namespace, client: ControlClient, emit: Emit) -> int:
    options = parse_isolation(args)
    plugin = await client.load(args.name, parse_data(args.data), parse_policy(args), options)
    emit(plugin, format_versions("loaded", plugin))
    _check_isolation(plugin, options)
    return EXIT_OK


async def _reload(args: argparse.Namespace, client: ControlClient, emit: Emit) -> int:
    if len(args.names) == 1:
        options = parse_isolation(args)
        plugin = await client.reload(args.names[0], reload_data(args), args.mode, options)
        emit(plugin, format_versions("reloaded", plugin))
        _check_isolation(plugin, options)
    else:
        versions = await client.reload_many(args.names, reload_data(args), args.mode)
        emit(versions, "\n".join(f"reloaded {n} {v or ''}".rstrip()
                                 for n, v in versions.items()))
    return EXIT_OK


async def _reload_changed(args: argparse.Namespace, client: ControlClient, emit: Emit) -> int:
    results = await client.reload_changed()
    lines = [
        f"reloaded {n} {r.get('version') or ''}".rstrip() if r.get("ok")
        else f"failed {n}: {r.get('error')}"
        for n, r in sorted(results.items())
    ]
    emit(results, "\n".join(lines) if lines else "nothing changed")
    return EXIT_REFUSED if any(not r.get("ok") for r in results.values()) else EXIT_OK


async def _ready(args: argparse.Namespace, client: ControlClient, emit: Emit) -> int:
    answer = await client.ready()
    emit({"ready": answer["ready"], "plugins": answer["plugins"]}, format_ready(answer))
    return EXIT_OK if answer["ready"] else EXIT_REFUSED


async def _events(args: argparse.Namespace, client: ControlClient, emit: Emit,
                  err: TextIO) -> int:
    done: Deferred[None] = Deferred()
    seen = [0]

    def on_event(event: Dict[str, Any]) -> None:
        emit(event, format_event(event))
        seen[0] += 1
        if args.count is not None and seen[0] >= args.count and not done.called:
            done.callback(None)

    client.closed.addCallback(lambda _: None if done.called else done.callback(None))
    await client.subscribe(on_event)
    err.write("subscribed; waiting for events (Ctrl-C to stop)\n")
    err.flush()
    await done
    return EXIT_OK


async def run_command(args: argparse.Namespace, client: ControlClient, emit: Emit,
                      err: TextIO) -> int:
    """
    Do the command of C{args} through C{client}.

    @return: the exit status.
    @raise Refused: when the CLI finds the command cannot be done.
    """
    name = args.command
    if name == "status":
        return await _status(args, client, emit)
    if name == "available":
        return await _available(args, client, emit)
    if name == "load":
        return await _load(args, client, emit)
    if name == "reload":
        return await _reload(args, client, emit)
    if name == "reload-changed":
        return await _reload_changed(args, client, emit)
    if name == "ready":
        return await _ready(args, client, emit)
    if name == "events":
        return await _events(args, client, emit, err)
    if name == "info":
        details = await client.info(args.name)
        emit(details, format_info(details))
    elif name == "unload":
        quit_message = await client.unload(args.name, args.mode, args.reason)
        emit({"name": args.name, "quit_message": quit_message},
             f"unloaded {args.name}: {quit_message}")
    elif name == "reset":
        plugin = await client.reset(args.name)
        emit(plugin, format_versions("reset", plugin))
    elif name == "call":
        result = await client.call(args.name, args.event, parse_arguments(args.args))
        emit(result, format_result(result))
    elif name == "emit":
        results: List[Dict[str, Any]] = await client.emit(args.event,
                                                          parse_arguments(args.args))
        emit(results, format_results(results))
    elif name == "reconfig":
        outcome = await client.reconfig()
        emit(outcome, format_outcome(outcome))
    elif name == "shutdown":
        await client.shutdown(args.mode)
        emit({"shutdown": True}, "manager shut down")
    return EXIT_OK
