"""
Tests for C{plugmgr new NAME [--irc] [--dir DIR]} (L{twisted_plugmgr._scaffold}):
the command run for real, as a subprocess; then plain C{python -m pytest}
(pytest-twisted off) run on what it wrote, which passes; the written
plugin loaded by a real manager (and the bot plugin by a real bot); the
config lines it prints load the plugin; a bad name or a file in the way
writes nothing.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
import pytest_twisted
from _processes import environment, timeout
from irc_fakes import BotHarness
from twisted.internet.utils import getProcessOutputAndValue

from twisted_plugmgr.testing import clock_manager, result_of


async def run(cwd, *argv: str, seconds: float = 30):
    """
    Run C{python ARGV} in C{cwd}: (exit status, stdout, stderr).
    """
    out, err, code = await timeout(getProcessOutputAndValue(
        sys.executable, list(argv), env=environment(), path=str(cwd)), seconds)
    return code, out.decode(), err.decode()


async def new(cwd, *args: str):
    """
    Run C{plugmgr new ARGS} in C{cwd}.
    """
    return await run(cwd, "-m", "twisted_plugmgr.cli", "new", *args)


async def pytest_in(directory):
    """
    Run plain C{python -m pytest} in C{directory}, without pytest-twisted.
    """
    return await run(directory, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                     "no:twisted", seconds=120)


def config_lines(out: str) -> str:
    """
    The config file lines C{new} printed (from C{[manager]} on, dedented).
    """
    text = out[out.index("    [manager]"):out.index("\n\n  check it")]
    return textwrap.dedent(text)


@pytest_twisted.ensureDeferred
async def test_a_plugin_and_its_test_that_passes_as_written(tmp_path):
    code, out, err = await new(tmp_path, "hello", "--dir", "sub/plugins")
    assert (code, err) == (0, "")
    where = tmp_path / "sub" / "plugins"
    assert sorted(os.listdir(where)) == ["hello.py", "test_hello.py"]
    lines = out.splitlines()
    assert lines[:2] == ["wrote sub/plugins/hello.py", "wrote sub/plugins/test_hello.py"]
    assert f'    paths = ["{where}"]' in lines
    assert "    [plugins.hello]" in lines
    code, out, err = await pytest_in(where)
    assert code == 0, out + err
    assert "3 passed" in out


@pytest_twisted.ensureDeferred
async def test_an_irc_plugin_and_its_test_that_passes_as_written(tmp_path):
    code, out, err = await new(tmp_path, "greeter_bot", "--irc")
    assert (code, err) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["greeter_bot.py",
                                                          "test_greeter_bot.py"]
    assert "from twisted_plugmgr.irc import BotPlugin" in (tmp_path / "greeter_bot.py").read_text()
    assert "    [irc]" in out.splitlines()
    code, out, err = await pytest_in(tmp_path)
    assert code == 0, out + err
    assert "2 passed" in out


@pytest_twisted.ensureDeferred
async def test_the_written_plugin_runs_in_a_real_manager(tmp_path):
    code, out, err = await new(tmp_path, "hello_world")
    assert code == 0, err
    manager, clock, events = clock_manager(paths=[tmp_path])
    plugin = result_of(manager.load("hello_world", data={"greeting": "hi"}))
    assert type(plugin).__name__ == "HelloWorldPlugin"
    assert result_of(manager.call("hello_world", "greet", "alice")) == "hi, alice!"
    assert result_of(manager.call("hello_world", "count", "alice")) == 1
    info = manager.info("hello_world")
    assert (info.version, info.author) == ("0.1.0", "Your Name <you@example.org>")
    result_of(manager.stopService())
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_the_written_bot_plugin_answers_its_command_on_a_real_bot(tmp_path):
    code, out, err = await new(tmp_path, "hi", "--irc")
    assert code == 0, err
    bot = BotHarness(tmp_path, admin=False)
    bot.start()
    try:
        bot.load("hi")
        bot.say("!hi bob")
        bot.say("!hi")
        assert bot.said() == ["PRIVMSG #chan :hello, bob!", "PRIVMSG #chan :hello, carol!"]
    finally:
        bot.stop()


@pytest.mark.parametrize("irc", [[], ["--irc"]], ids=["plain", "irc"])
@pytest_twisted.ensureDeferred
async def test_the_config_lines_it_prints_load_the_plugin(tmp_path, irc):
    code, out, err = await new(tmp_path, "hello", "--dir", "plugins", *irc)
    assert code == 0, err
    (tmp_path / "plugmgr.toml").write_text(config_lines(out))
    code, out, err = await run(tmp_path, "-m", "twisted_plugmgr.cli", "checkconfig",
                               "--plugins", "plugmgr.toml")
    assert (code, err) == (0, ""), out
    assert out.startswith("plugmgr.toml: ok: 1 plugin enabled (hello), imported and checked")


@pytest_twisted.ensureDeferred
async def test_json_names_what_it_wrote(tmp_path):
    code, out, err = await new(tmp_path, "hello", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "name": "hello", "irc": False, "directory": str(tmp_path),
        "written": ["./hello.py", "./test_hello.py"]}


@pytest.mark.parametrize("name", ["1x", "class", "__init__", "a-b", "hé llo"])
@pytest_twisted.ensureDeferred
async def test_a_bad_name_writes_nothing(tmp_path, name):
    code, out, err = await new(tmp_path, name, "--dir", "plugins")
    assert (code, out) == (2, "")
    assert err == (f"plugmgr: new: {name!r} is not a plugin name (a Python identifier, not a "
                   "keyword): nothing was written\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", ["hello.py", "test_hello.py"])
@pytest_twisted.ensureDeferred
async def test_an_existing_file_is_never_replaced(tmp_path, existing):
    (tmp_path / existing).write_text("mine\n")
    code, out, err = await new(tmp_path, "hello", "--dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert err == f"plugmgr: new: {tmp_path / existing} exists already: nothing was written\n"
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "mine\n"


@pytest_twisted.ensureDeferred
async def test_a_dir_that_cannot_be_made_writes_nothing(tmp_path):
    (tmp_path / "taken").write_text("a file\n")
    code, out, err = await new(tmp_path, "hello", "--dir", "taken/plugins")
    assert (code, out) == (1, "")
    assert err == ("plugmgr: new: cannot write into taken/plugins: Not a directory: nothing "
                   "was written\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (tmp_path / "taken").read_text() == "a file\n"
