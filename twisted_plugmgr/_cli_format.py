"""
What C{plugmgr} prints for people (with C{--json} it prints the answers
themselves): tables with aligned columns that read at 80 columns, and the
lines of each command's answer. Plain functions from JSON values to text.
"""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "WIDTH", "when", "table", "format_status", "format_event", "format_info",
    "format_catalog", "format_result", "format_results", "format_outcome", "format_ready",
    "format_versions", "truncated", "format_problem", "format_checked",
]

#: The width lines are cut or wrapped to.
WIDTH = 80

#: The fewest characters of a last failure the status table shows.
_MIN_FAILURE_WIDTH = 20

#: The fewest characters of a description the status table shows.
_MIN_DESCRIPTION = 20

#: The width of the labels of C{info}.
_LABEL = 19


def when(seconds: Any) -> str:
    """
    A time (seconds since the epoch) as local date and time; C{-} for none.
    """
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _table_lines(rows: List[List[str]], headers: List[str]) -> List[str]:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = []
    for row in [headers] + rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(str(cell).ljust(w) for cell, w in cells).rstrip())
    return lines


def table(rows: List[List[str]], headers: List[str]) -> str:
    """
    A table, its columns aligned: the header, then a line a row.
    """
    return "\n".join(_table_lines(rows, headers))


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def truncated(text: str, width: int) -> str:
    """
    C{text} on one line, cut to C{width} characters with an ellipsis.
    """
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:max(width - 3, 0)] + "..."


def format_status(plugins: List[Dict[str, Any]]) -> str:
    """
    The plugin table, a line a plugin, its description cut to end within
    L{WIDTH} columns; under the line of a plugin that runs isolated (its
    worker's pid), has a last failure or a last reload error, each on a line of its own,
    indented to the second column and cut to end within L{WIDTH} columns
    (keeping at least L{_MIN_FAILURE_WIDTH} characters of it).
    """
    if not plugins:
        return "no plugins loaded"
    headers = ["NAME", "VERSION", "STATE", "LOADED", "RELOADS", "RESTARTS", "DESCRIPTION"]
    rows = [
        [str(p.get("name", "?")), str(p.get("version") or "-"), str(p.get("state", "?")),
         when(p.get("loaded_at")), str(p.get("reloads", 0)), _count(p.get("restarts")),
         str(p.get("longname") or "")]
        for p in plugins
    ]
    # The description, last, is cut to end within WIDTH columns (keeping
    # at least _MIN_DESCRIPTION characters of it).
    used = sum(max(len(r[i]) for r in [headers] + rows) + 2 for i in range(len(headers) - 1))
    for row in rows:
        row[-1] = truncated(row[-1], max(WIDTH - used, _MIN_DESCRIPTION))
    header, *lines = _table_lines(rows, headers)
    indent = " " * (max(len(row[0]) for row in [headers] + rows) + 2)
    out = [header]
    for line, p in zip(lines, plugins, strict=True):
        out.append(line)
        notes = []
        if p.get("isolated"):
            # Under the line, as the failures: a column would not fit in 80.
            notes.append(("isolated: ", f"worker process {p.get('pid') or '(none now)'}"))
        if p.get("last_failure"):
            notes.append(("last failure: ", str(p["last_failure"])))
        if p.get("last_reload_error"):
            at = p.get("last_reload_error_at")
            label = f"reload failed {time.strftime('%H:%M:%S', time.localtime(at))}: " \
                if isinstance(at, (int, float)) else "reload failed: "
            notes.append((label, str(p["last_reload_error"])))
        for label, text in notes:
            room = max(WIDTH - len(indent) - len(label), _MIN_FAILURE_WIDTH)
            out.append(indent + label + truncated(text, room))
    return "\n".join(out)


def format_event(event: Dict[str, Any]) -> str:
    """
    One event on one line: time, kind, plugin, then its fields.
    """
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


def _field(label: str, value: Any) -> List[str]:
    """
    C{label: value}, the value wrapped within L{WIDTH} columns under itself
    (a word longer than that, a path, is kept whole).
    """
    text = " ".join(str(value).split()) if value not in (None, "") else "-"
    head = f"{label + ':':<{_LABEL}} "
    return textwrap.wrap(text, WIDTH, initial_indent=head, subsequent_indent=" " * len(head),
                         break_on_hyphens=False, break_long_words=False) or [head.rstrip()]


def _seconds(value: Any) -> str:
    return f"{value:.3f}s" if isinstance(value, (int, float)) else "-"


def _limits(limits: Any) -> str:
    if not isinstance(limits, dict) or not limits:
        return "none"
    return " ".join(f"{key}={value}" for key, value in limits.items())


def _isolation(details: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """
    The isolation fields of C{info}: an isolated plugin's call deadline and
    limits; the isolation options given to it, when some were.
    """
    fields: List[Tuple[str, Any]] = []
    deadline = details.get("call_deadline")
    if (details.get("info") or {}).get("isolated") and isinstance(deadline, (int, float)):
        fields += [("call deadline", f"{deadline:g}s"),
                   ("limits", _limits(details.get("limits")))]
    given = details.get("isolation_options")
    if isinstance(given, dict) and given:
        fields.append(("isolation given", " ".join(
            _option(key, value) for key, value in given.items())))
    return fields


def _option(key: str, value: Any) -> str:
    if key == "limits":
        return f"limits: {_limits(value)}"
    if key == "call_deadline" and isinstance(value, (int, float)):
        return f"call_deadline={value:g}s"
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def _policy(policy: Dict[str, Any]) -> str:
    if not policy:
        return "-"
    return (f"restart={policy.get('restart')} delay={policy.get('restart_delay')}s "
            f"(max {policy.get('restart_delay_max')}s) burst={policy.get('restart_burst')} "
            f"in {policy.get('restart_interval')}s "
            f"fail_on_error={str(policy.get('fail_on_error')).lower()}")


def _file_line(check: Dict[str, Any]) -> str:
    status = check.get("status")
    if status == "unchanged":
        what = "unchanged (what runs)"
    elif status == "missing":
        what = "missing on disk"
    elif check.get("compile_error"):
        what = f"changed on disk, does not compile: {check['compile_error']}"
    else:
        what = "changed on disk (compiles; reload to run it)"
    return f"{check.get('path')}: {what}"


def format_info(details: Dict[str, Any]) -> str:
    """
    Everything about one plugin, a field a line (long values wrapped).
    """
    info = details.get("info") or {}
    lines: List[str] = []
    at = info.get("last_reload_error_at")
    fields = [
        ("name", info.get("name")), ("description", info.get("longname")),
        ("version", info.get("version")), ("state", info.get("state")),
        ("runs in", f"worker process {info.get('pid') or '(none now)'}"
         if info.get("isolated") else "the manager's process"),
        *_isolation(details),
        ("author", info.get("author")), ("license", info.get("license")),
        ("module", info.get("module")), ("source", info.get("source")),
        ("loaded", when(info.get("loaded_at"))), ("reloads", info.get("reloads")),
        ("requires", ", ".join(details.get("requires") or ()) or "-"),
        ("dependents", ", ".join(details.get("dependents") or ()) or "-"),
        ("handles", ", ".join(info.get("events") or ()) or "-"),
        ("calls", f"{info.get('calls', 0)}, busy {_seconds(info.get('busy_time'))}, "
                  f"longest {_seconds(info.get('longest_call'))}"),
        ("restarts", info.get("restarts")),
        ("last failure", info.get("last_failure")),
        ("last reload error", f"{info['last_reload_error']} (at {when(at)})"
         if info.get("last_reload_error") else None),
        ("restart policy", _policy(details.get("policy") or {})),
    ]
    for label, value in fields:
        lines.extend(_field(label, value))
    files = details.get("files") or []
    lines.append("files:" if files else _field("files", "none running")[0])
    for check in files:
        lines.extend(textwrap.wrap(_file_line(check), WIDTH, initial_indent="  ",
                                   subsequent_indent="    ", break_on_hyphens=False,
                                   break_long_words=False))
    old = details.get("old_versions") or []
    lines.append("old versions still alive:" if old
                 else _field("old versions", "none alive")[0])
    for text in old:
        lines.extend(textwrap.wrap(str(text), WIDTH, initial_indent="  ",
                                   subsequent_indent="    ", break_long_words=False))
    return "\n".join(lines)


def format_catalog(entries: List[Dict[str, Any]]) -> str:
    """
    The plugins that could be loaded, a line each: name and status; a
    broken one's compile error on the next line.
    """
    if not entries:
        return "no plugins available"
    rows = [[str(e.get("name")), str(e.get("status"))] for e in entries]
    header, *lines = _table_lines(rows, ["NAME", "STATUS"])
    out = [header]
    indent = " " * (max(len(r[0]) for r in rows + [["NAME"]]) + 2)
    for line, entry in zip(lines, entries, strict=True):
        out.append(line)
        if entry.get("error"):
            out.append(indent + truncated(entry["error"], max(WIDTH - len(indent), 20)))
    return "\n".join(out)


def format_result(result: Dict[str, Any]) -> str:
    """
    A handler's answer: its JSON; one that is not JSON-serialisable is
    shown as its repr, and says so.
    """
    if "repr" in result:
        return f"{result['repr']}  (not JSON-serialisable: shown as its repr)"
    return json.dumps(result.get("value"), ensure_ascii=False)


def format_results(results: Sequence[Dict[str, Any]]) -> str:
    """
    The answers of an emit, one a line.
    """
    return "\n".join(map(format_result, results)) if results else "no handler answered"


def format_outcome(outcome: Dict[str, Any]) -> str:
    """
    What a reconfig changed, a line a kind of change.
    """
    if not outcome.get("changed"):
        return "nothing needed to change"
    lines = [f"{label}: {', '.join(outcome[key])}"
             for key, label in (("loaded", "loaded"), ("unloaded", "unloaded"),
                                ("reloaded", "reloaded"), ("policy", "new restart policy"))
             if outcome.get(key)]
    if outcome.get("manager_policy"):
        lines.append("the manager's restart policy changed")
    if outcome.get("failed"):
        lines.append(f"failed after it was applied: {', '.join(outcome['failed'])}")
    return "\n".join(lines)


def format_ready(answer: Dict[str, Any]) -> str:
    """
    Ready, or which plugins are not and in what state.
    """
    plugins: Dict[str, str] = answer.get("plugins") or {}
    if answer.get("ready"):
        return f"ready: {len(plugins)} plugin{'s' if len(plugins) != 1 else ''} running"
    waiting = [f"{name} ({state})" for name, state in plugins.items() if state != "running"]
    return "not ready: " + ", ".join(waiting)


def format_versions(verb: str, plugin: Dict[str, Any], name: Optional[str] = None) -> str:
    """
    C{VERB NAME VERSION}: the answer of a load, reload or reset; then, for a
    plugin that runs isolated, C{(worker process PID)}.
    """
    text = f"{verb} {name or plugin['name']} {plugin.get('version') or ''}".rstrip()
    if plugin.get("isolated"):
        text += f" (worker process {plugin.get('pid') or '(none now)'})"
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def format_problem(path: str, problem: Dict[str, Any]) -> str:
    """
    One problem of C{checkconfig --plugins}: C{FILE: MESSAGE} (the message
    names the plugin, and the key for invalid data), then the traceback of
    the plugin's code that caused it, if any, indented.
    """
    text = f"{path}: {problem['message']}"
    traceback = problem.get("traceback")
    if traceback:
        text += "\n" + textwrap.indent(traceback, "    ")
    return text


def format_checked(path: str, enabled: Sequence[str], control: str,
                   checked: Optional[Sequence[str]] = None,
                   problems: Sequence[Dict[str, Any]] = (),
                   failed: Sequence[str] = ()) -> str:
    """
    The summary line of C{checkconfig}: the file is valid and its plugins
    enabled; with C{checked} given (C{--plugins}: the plugins imported, the
    enabled ones and those they require), that they were imported and
    checked, or how many problems, in which plugins.
    """
    names = f" ({', '.join(enabled)})" if enabled else ""
    line = f"{path}: ok: {_plural(len(enabled), 'plugin')} enabled{names}"
    if checked is None:
        return f"{line}; control {control}"
    if problems:
        return (f"{path}: {_plural(len(problems), 'problem')} in {len(failed)} of "
                f"{_plural(len(checked), 'plugin')} checked ({', '.join(failed)})")
    required = [name for name in checked if name not in enabled]
    if required:
        line += f", and {len(required)} they require ({', '.join(required)})"
    return f"{line}, imported and checked; control {control}"
