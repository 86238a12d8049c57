"""
Tests for C{plugmgr checkconfig --plugins} (L{twisted_plugmgr._checkplugins}):
the CLI run for real, as a subprocess, on config files whose plugins are
good, have bad data (a dataclass C{Config}), do not compile, are not found
or lack metadata. Each plugin module here writes a file when it is
imported, naming the process that imported it: that proves the check
imported the enabled plugins itself (no manager runs anywhere) and never
the disabled ones.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest_twisted
from _processes import environment, timeout
from twisted.internet.utils import getProcessOutputAndValue

#: The top of every plugin module here: it writes IMPORTED-NAME beside the
#: config file, holding the command line of the process importing it.
MARKER = """
import os as _os
import sys as _sys
with open(_os.path.join({home!r}, "IMPORTED-" + {name!r}), "w") as _f:
    _f.write(" ".join(_sys.orig_argv))
"""


def plugin(home, name: str, body: str = "", directory: str = "plugins",
           header: str = "", meta: str = "") -> None:
    """
    Write plugin C{name} into C{home/directory}: a Plugin subclass with
    its metadata (C{meta} replaces it) and C{body}; C{header} before the
    class.
    """
    meta = meta or f"name = {name!r}\nversion = '1'\nlongname = 'x'\nlicense = 'MIT'\n" \
                   "author = 'tests'\n"
    source = (MARKER.format(home=str(home), name=name)
              + "from dataclasses import dataclass\nfrom typing import Literal\n"
              + "from twisted_plugmgr import Plugin, handler\n" + textwrap.dedent(header)
              + "\nclass P(Plugin):\n" + textwrap.indent(meta + textwrap.dedent(body), "    ")
              + "\n    pass\n")
    folder = home / directory
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source)


def config(home, text: str) -> str:
    path = home / "plugmgr.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


async def check(home, *args: str):
    """
    Run C{plugmgr checkconfig --plugins plugmgr.toml ARGS} in C{home}:
    (exit status, stdout, stderr).
    """
    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable, ["-m", "twisted_plugmgr.cli", "checkconfig", "--plugins",
                         "plugmgr.toml", *args],
        env=environment(), path=str(home)), 60)
    return code, out.decode(), err.decode()


def imported(home):
    """
    The plugins imported, name -> the command line of the process that did.
    """
    return {p.name[len("IMPORTED-"):]: p.read_text() for p in home.glob("IMPORTED-*")}


CONFIG_CLASS = """
@dataclass
class Config:
    greeting: str = "hello"
    times: int = 1
    mode: Literal["loud", "quiet"] = "quiet"
"""


@pytest_twisted.ensureDeferred
async def test_good_plugins_are_imported_here_and_checked(tmp_path):
    plugin(tmp_path, "alpha", CONFIG_CLASS)
    plugin(tmp_path, "beta")  # no Config: any data
    plugin(tmp_path, "gamma")
    plugin(tmp_path / "mypkg", "delta", directory="plugs")  # in a package
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "plugs" / "__init__.py").write_text("")
    config(tmp_path, """
        [manager]
        paths = ["plugins"]
        packages = ["mypkg.plugs"]

        [plugins.alpha]
        data = { greeting = "hi", mode = "loud" }
        [plugins.beta]
        data = [1, 2]
        [plugins.gamma]
        enabled = false
        [plugins.delta]
    """)
    code, out, err = await check(tmp_path)
    assert (code, err) == (0, "")
    assert out == ("plugmgr.toml: ok: 3 plugins enabled (alpha, beta, delta), imported and "
                   f"checked; control unix:path={tmp_path}/plugmgr.sock\n")
    # Imported by the checking process itself; never the disabled gamma.
    found = imported(tmp_path / "mypkg") | imported(tmp_path)
    assert sorted(found) == ["alpha", "beta", "delta"]
    for command_line in found.values():
        assert "twisted_plugmgr.cli checkconfig --plugins plugmgr.toml" in command_line
    assert not (tmp_path / "plugmgr.sock").exists()  # no manager, none asked


@pytest_twisted.ensureDeferred
async def test_without_the_flag_no_plugin_is_imported(tmp_path):
    plugin(tmp_path, "alpha", "def __init__(self, api, data):\n    raise ValueError\n")
    config(tmp_path, '[manager]\npaths = ["plugins"]\n[plugins.alpha]\n')
    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable, ["-m", "twisted_plugmgr.cli", "checkconfig", "plugmgr.toml"],
        env=environment(), path=str(tmp_path)))
    assert (code, err) == (0, b"")
    assert out.decode().startswith("plugmgr.toml: ok: 1 plugin enabled (alpha); control ")
    assert imported(tmp_path) == {}


@pytest_twisted.ensureDeferred
async def test_bad_data_is_a_line_a_key(tmp_path):
    plugin(tmp_path, "alpha", CONFIG_CLASS)
    plugin(tmp_path, "beta", CONFIG_CLASS)
    config(tmp_path, """
        [manager]
        paths = ["plugins"]
        [plugins.alpha]
        data = { times = "twice", mode = "shouting", colour = "red" }
        [plugins.beta]
        data = { greeting = "hi" }
    """)
    code, out, err = await check(tmp_path)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert len(lines) == 4, err
    for line, key in zip(lines, ["times", "mode", "colour"], strict=False):
        assert line.startswith("plugmgr: plugmgr.toml: plugin 'alpha': invalid data: "), line
        assert repr(key) in line, (key, line)
    assert "'loud'" in lines[1] and "'quiet'" in lines[1]  # what was allowed
    assert lines[3] == "plugmgr: plugmgr.toml: 3 problems in 1 of 2 plugins checked (alpha)"
    assert sorted(imported(tmp_path)) == ["alpha", "beta"]  # both checked


@pytest_twisted.ensureDeferred
async def test_a_module_that_does_not_import_shows_its_own_traceback(tmp_path):
    plugin(tmp_path, "alpha")
    (tmp_path / "plugins" / "broken.py").write_text("def broken(:\n")
    plugin(tmp_path, "raiser", header="def helper():\n    raise RuntimeError('boom at import')\n"
           "helper()\n")
    config(tmp_path, '[manager]\npaths = ["plugins"]\n[plugins.alpha]\n[plugins.broken]\n'
           '[plugins.raiser]\n')
    code, out, err = await check(tmp_path)
    assert (code, out) == (1, "")
    broken = str(tmp_path / "plugins" / "broken.py")
    raiser = str(tmp_path / "plugins" / "raiser.py")
    lines = err.splitlines()
    assert lines[0] == (f"plugmgr: plugmgr.toml: plugin 'broken': module failed to import: "
                        f"{broken} (SyntaxError: invalid syntax (broken.py, line 1))")
    assert lines[1:5] == [f'      File "{broken}", line 1', "        def broken(:",
                          lines[3], "    SyntaxError: invalid syntax"]
    assert lines[3].strip() == "^"
    assert lines[5] == (f"plugmgr: plugmgr.toml: plugin 'raiser': module failed to import: "
                        f"{raiser} (RuntimeError: boom at import)")
    # The plugin's frames only: none of the manager's, nor importlib's.
    assert lines[6:12] == [
        "    Traceback (most recent call last):",
        f'      File "{raiser}", line 11, in <module>',
        "        helper()",
        f'      File "{raiser}", line 10, in helper',
        "        raise RuntimeError('boom at import')",
        "    RuntimeError: boom at import",
    ]
    assert lines[12:] == ["plugmgr: plugmgr.toml: 2 problems in 2 of 3 plugins checked "
                          "(broken, raiser)"]


@pytest_twisted.ensureDeferred
async def test_a_plugin_not_found_or_without_metadata(tmp_path):
    plugin(tmp_path, "alpha", meta="name = 'alpha'\n")  # no version
    config(tmp_path, """
        [manager]
        paths = ["plugins"]
        entry_points = false
        [plugins.nowhere]
        [plugins.alpha]
    """)
    code, out, err = await check(tmp_path)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"plugmgr: plugmgr.toml: plugin 'nowhere': no such plugin: not found in path "
        f"{tmp_path}/plugins",
        "plugmgr: plugmgr.toml: plugin 'alpha': invalid plugin metadata: P has no 'version'",
        "plugmgr: plugmgr.toml: 2 problems in 2 of 2 plugins checked (nowhere, alpha)",
    ]


@pytest_twisted.ensureDeferred
async def test_what_an_enabled_plugin_requires_is_checked_too(tmp_path):
    # A manager loads a requirement with the plugin that requires it.
    plugin(tmp_path, "alpha", "requires = ('beta', 'ghost')\n")
    plugin(tmp_path, "beta", "requires = ('gamma',)\n")
    plugin(tmp_path, "gamma", header="raise ImportError('no gamma today')\n")
    plugin(tmp_path, "delta")
    config(tmp_path, """
        [manager]
        paths = ["plugins"]
        entry_points = false
        [plugins.alpha]
        [plugins.beta]
        enabled = false
        [plugins.delta]
        enabled = false
    """)
    code, out, err = await check(tmp_path)
    assert (code, out) == (1, "")
    lines = [line for line in err.splitlines() if line.startswith("plugmgr: ")]
    assert lines == [
        f"plugmgr: plugmgr.toml: plugin 'ghost': no such plugin: not found in path "
        f"{tmp_path}/plugins (required by 'alpha')",
        f"plugmgr: plugmgr.toml: plugin 'gamma': module failed to import: "
        f"{tmp_path}/plugins/gamma.py (ImportError: no gamma today) (required by 'beta')",
        "plugmgr: plugmgr.toml: 2 problems in 2 of 4 plugins checked (ghost, gamma)",
    ]
    assert sorted(imported(tmp_path)) == ["alpha", "beta", "gamma"]  # never delta
    plugin(tmp_path, "gamma")
    plugin(tmp_path, "alpha", "requires = ('beta',)\n")
    code, out, err = await check(tmp_path)
    assert (code, err) == (0, "")
    assert out.startswith("plugmgr.toml: ok: 1 plugin enabled (alpha), and 2 they require "
                          "(beta, gamma), imported and checked; control ")


@pytest_twisted.ensureDeferred
async def test_a_requires_cycle_is_a_problem_as_the_manager_would_refuse_it(tmp_path):
    """
    Plugins that require each other, through plugins the file does not
    enable: one line per cycle, from the plugin checked first (one that
    requires itself is invalid metadata); an enabled plugin that requires
    one in a cycle cannot load either, and its line says which.
    """
    plugin(tmp_path, "alpha", "requires = ('beta',)\n")
    plugin(tmp_path, "beta", "requires = ('gamma',)\n")
    plugin(tmp_path, "gamma", "requires = ('alpha',)\n")
    plugin(tmp_path, "narcissus", "requires = ('narcissus',)\n")
    plugin(tmp_path, "fine", "requires = ('gamma',)\n")
    config(tmp_path, """
        [manager]
        paths = ["plugins"]
        entry_points = false
        [plugins.fine]
        [plugins.alpha]
        [plugins.narcissus]
    """)
    code, out, err = await check(tmp_path)
    assert (code, out) == (1, "")
    lines = [line for line in err.splitlines() if line.startswith("plugmgr: ")]
    assert lines == [
        "plugmgr: plugmgr.toml: plugin 'fine': dependency error: it requires gamma, in the "
        "dependency cycle alpha -> beta -> gamma -> alpha",
        "plugmgr: plugmgr.toml: plugin 'alpha': dependency error: dependency cycle: "
        "alpha -> beta -> gamma -> alpha",
        "plugmgr: plugmgr.toml: plugin 'narcissus': invalid plugin metadata: P requires itself",
        "plugmgr: plugmgr.toml: 3 problems in 3 of 5 plugins checked (fine, alpha, narcissus)",
    ]
    code, out, err = await check(tmp_path, "--json")
    problems = json.loads(out)["problems"]
    assert [(p["plugin"], p["kind"]) for p in problems] == [
        ("fine", "dependency cycle"), ("alpha", "dependency cycle"),
        ("narcissus", "invalid metadata")]


@pytest_twisted.ensureDeferred
async def test_entry_points_are_looked_in_as_the_file_says(tmp_path):
    config(tmp_path, '[manager]\npaths = ["plugins"]\n[plugins.nowhere]\n')
    (tmp_path / "plugins").mkdir()
    code, out, err = await check(tmp_path)
    assert code == 1
    assert "entry points" in err.splitlines()[0]


@pytest_twisted.ensureDeferred
async def test_json_gives_every_problem(tmp_path):
    plugin(tmp_path, "alpha", CONFIG_CLASS)
    (tmp_path / "plugins" / "broken.py").write_text("def broken(:\n")
    plugin(tmp_path, "good", header="print('chatty at import')\n")
    config(tmp_path, '[manager]\npaths = ["plugins"]\n[plugins.alpha]\ndata = { times = "x" }\n'
           "[plugins.broken]\n[plugins.good]\n")
    code, out, err = await check(tmp_path, "--json")
    # What a plugin prints goes to standard error: the JSON stays whole.
    assert (code, err) == (1, "chatty at import\n")
    answer = json.loads(out)
    assert (answer["ok"], answer["exit_status"], answer["command"]) == (False, 1, "checkconfig")
    assert answer["checked"] == ["alpha", "broken", "good"]
    assert answer["error"] == "plugmgr.toml: 2 problems in 2 of 3 plugins checked (alpha, broken)"
    data, compiled = answer["problems"]
    assert (data["plugin"], data["kind"], data["key"], data["traceback"]) == (
        "alpha", "invalid data", "times", None)
    assert (compiled["plugin"], compiled["kind"], compiled["key"]) == (
        "broken", "compile failed", None)
    assert compiled["traceback"].endswith("SyntaxError: invalid syntax")


@pytest_twisted.ensureDeferred
async def test_without_a_file_it_is_bad_usage_as_before(tmp_path):
    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable, ["-m", "twisted_plugmgr.cli", "checkconfig", "--plugins"],
        env=environment(), path=str(tmp_path)))
    assert (code, out, err) == (2, b"", b"plugmgr: checkconfig: give FILE, or --config FILE\n")


@pytest_twisted.ensureDeferred
async def test_an_invalid_file_imports_nothing(tmp_path):
    plugin(tmp_path, "alpha")
    config(tmp_path, '[manager]\npaths = ["plugins"]\n[plugins.alpha]\nenabled = "yes"\n')
    code, out, err = await check(tmp_path)
    assert (code, out) == (1, "")
    assert err.startswith("plugmgr: plugmgr.toml: plugins.alpha.enabled: expected true or "
                          "false") and err.count("\n") == 1
    assert imported(tmp_path) == {}


def test_the_check_leaves_no_module_behind(tmp_path, monkeypatch):
    """
    In process: the check purges what it imported (under its own prefix,
    and a package's plugin under its real name), and puts back a module
    that stood under that name before.
    """
    import types

    from twisted_plugmgr._checkplugins import check_plugins
    from twisted_plugmgr._config import parse_config

    plugin(tmp_path, "alpha", CONFIG_CLASS)
    plugin(tmp_path, "beta")
    (tmp_path / "plugins" / "broken.py").write_text("def broken(:\n")
    plugin(tmp_path / "ckpkg", "delta", directory="plugs")
    (tmp_path / "ckpkg" / "__init__.py").write_text("")
    (tmp_path / "ckpkg" / "plugs" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    stood = types.ModuleType("ckpkg.plugs.delta")
    monkeypatch.setitem(sys.modules, "ckpkg.plugs.delta", stood)
    text = textwrap.dedent("""
        [manager]
        paths = ["plugins"]
        packages = ["ckpkg.plugs"]
        [plugins.alpha]
        data = { times = "x" }
        [plugins.beta]
        [plugins.broken]
        [plugins.delta]
    """)
    report = check_plugins(parse_config(text, str(tmp_path / "plugmgr.toml")), "_test_check__")
    assert (report.checked, report.failed) == (["alpha", "beta", "broken", "delta"],
                                               ["alpha", "broken"])
    assert not report.ok
    assert [name for name in sys.modules if name.startswith("_test_check__")] == []
    assert sys.modules["ckpkg.plugs.delta"] is stood
    assert sorted(imported(tmp_path)) == ["alpha", "beta"]
    assert sorted(imported(tmp_path / "ckpkg")) == ["delta"]
