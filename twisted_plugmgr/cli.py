"""
C{plugmgr}: operate a running plugin manager through its control channel.

::

    plugmgr [GLOBAL OPTIONS] COMMAND [COMMAND OPTIONS] [GLOBAL OPTIONS]

    GLOBAL OPTIONS: [--control ENDPOINT | --config FILE]
                    [--token TOKEN | --token-file FILE]
                    [--json] [--timeout SECONDS] [--version]
    COMMAND: status [NAME...] | info NAME | available [--names]
             | load NAME [--data JSON] [--restart MODE] [--restart-delay S]
                         [--restart-delay-max S] [--restart-burst N]
                         [--restart-interval S]
                         [--fail-on-error | --no-fail-on-error]
             | unload NAME [--mode MODE] [--reason TEXT]
             | reload NAME [NAME...] [--data JSON] [--mode MODE]
             | reload-changed | reset NAME
             | call NAME EVENT [ARG...] | emit EVENT [ARG...]
             | reconfig | checkconfig [FILE] [--plugins] | ready
             | events [--count N] | shutdown [--mode MODE]
             | new NAME [--irc] [--dir DIR] | completion bash|zsh

C{status} is the plugin table (of the plugins named, or all), with each
plugin's last failure and last failed reload under its line. C{info} is
everything about one plugin: metadata, state, counters, requirements and
dependents, restarts and last failure, last reload error and when, restart
policy, whether each of its files on disk differs from what runs and
whether it compiles, and its old versions still alive. C{available} marks
each plugin loaded, not loaded or broken (its file does not compile, judged
by C{compile()}, never by importing; the error is shown); C{--names} prints
the names alone (what shell completion uses).

C{call} and C{emit} take each ARG as a JSON value when it is one, else as
a plain string, and print the answers as JSON (an answer that is not
JSON-serialisable is shown as its repr, and says so).

C{reload} of one plugin reloads it as it always did (C{--data}: its new
data); of several, reloads them in one transaction, applied completely or
not at all (C{--data}: a JSON object of name -> new data, for those whose
data changes), and prints a line a plugin, or one line naming the plugin
that failed (nothing was changed: exit 1).

C{reconfig} does what SIGHUP does and prints what was loaded, unloaded and
reloaded, or that nothing needed to change; refused (the file is invalid,
or a step failed: nothing changed), it exits 1 with the reason.
C{checkconfig} validates a config file (FILE, default C{--config}) offline,
with the messages C{twist plugmgr} gives at start. With C{--plugins}, it
also imports each plugin the file enables, in the checking process (never
in a running manager, and none need run), with the file's packages, paths
and entry points, and validates its metadata and its data against its
C{Config}, and the plugins they require likewise: a line a problem,
naming the plugin (and the key, for data; the plugin's own traceback under
a module that failed to import), then a summary line, and exit 1; other
disabled plugins are not imported. C{ready} exits 0 when every plugin the
config file enables is running, else 1 naming those that are not (a
readiness probe).

C{new NAME} writes C{DIR/NAME.py}, a plugin to start from (metadata, a
C{Config} dataclass, handlers, state kept across reloads; with C{--irc}, a
bot plugin with a command), and C{DIR/test_NAME.py}, its test, which uses
L{twisted_plugmgr.testing} and passes as written; then it prints the
config lines that load it. DIR (default: the current directory) is created
if missing; an existing file is never replaced (exit 1, nothing written),
and a NAME that is not a plugin name is bad usage (exit 2). C{completion}
prints a bash or zsh completion script.

The global options may come before the command, after it, or both; an
option given twice takes its last value. C{--version} prints
C{plugmgr VERSION} and exits, without connecting.

Where the manager listens, in order: C{--control}; the C{control} of the
config file given with C{--config} (default: C{plugmgr.sock} next to it);
C{$PLUGMGR_CONTROL}; C{plugmgr.sock} in the current directory. A config
file that does not parse does not lock the CLI out: a warning on standard
error, and the default socket next to the file (or C{--control}); only
C{checkconfig} fails on it.

Without C{--json}, an error is one line C{plugmgr: ...} on standard error;
with it, an object C{{"error": ..., "command": ..., "exit_status": ...}}
on standard output. The exit statuses are the same:
0 done; 1 the manager refused or failed the command (no such plugin, a
reconfig refused, a command this manager does not support, ...), not
ready, C{checkconfig} found the file invalid (or, with C{--plugins}, a
plugin that would not load), or C{new} found a file in its way; 2 bad
usage (a restart policy option with a bad value included: it is checked
before connecting; an unreadable config or token file; a bad C{new}
NAME); 3 cannot connect, or the connection was lost.

This module is the entry point; the work is done by, one job each:
L{twisted_plugmgr._cli_parser} (the argparse parser and the checks of
option values), L{twisted_plugmgr._cli_format} (what is printed for
people), L{twisted_plugmgr._cli_commands} (what each command sends and
prints once connected), L{twisted_plugmgr._cli_completion} (the bash and
zsh scripts, generated from the parser) and L{twisted_plugmgr._cli_run}
(where the manager is, the offline commands, connecting, exit statuses),
with L{twisted_plugmgr._checkplugins} (the offline check of the plugins)
and L{twisted_plugmgr._scaffold} (the templates of C{new}).
"""

from __future__ import annotations

from ._cli_parser import parse
from ._cli_run import (
    CONNECT_TIMEOUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    main,
    run,
)

__all__ = ["main", "run", "parse", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "EXIT_UNAVAILABLE",
           "CONNECT_TIMEOUT"]


if __name__ == "__main__":  # pragma: no cover
    main()
