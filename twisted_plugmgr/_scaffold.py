"""
C{plugmgr new NAME [--irc] [--dir DIR]}: a new plugin to start from, and
its test. The templates are string constants rendered with
C{string.Template}; the command writes C{DIR/NAME.py} and
C{DIR/test_NAME.py}, never over an existing file, and says what to do
next.

The plugin has its metadata, a C{Config} dataclass (its data's schema),
handlers (or, with C{--irc}, a bot command), C{get_state}/C{set_state};
the test uses L{twisted_plugmgr.testing} and passes as written under plain
C{python -m pytest}.
"""

from __future__ import annotations

import errno
import keyword
import os
import shlex
from string import Template
from typing import List, Tuple

from ._source import check_name

__all__ = ["PLUGIN", "PLUGIN_TEST", "IRC_PLUGIN", "IRC_PLUGIN_TEST", "class_name", "render",
           "write", "next_steps"]

#: A plugin module: C{$name}, C{$cls}.
PLUGIN = '''\
"""
$name: a twisted-plugmgr plugin (written by plugmgr new: make it yours).

It answers two events, greet and count, and keeps its counts across a
reload. The plugin author's guide (docs/plugins.md) tells the rest:
handlers, state and reloads, the Config schema, testing with
twisted_plugmgr.testing.
"""

from dataclasses import dataclass

from twisted_plugmgr import Plugin, handler


class $cls(Plugin):
    """
    Greets people with the greeting its data gives, and counts them.
    """

    # Metadata: name is the name it is loaded under; version is required;
    # the rest shows in plugmgr status and info.
    name = "$name"
    version = "0.1.0"
    longname = "$name: say in one line what it does"
    author = "Your Name <you@example.org>"
    license = "MIT"

    @dataclass
    class Config:
        """
        What [plugins.$name] data may hold: the manager checks the data
        against it before the plugin is constructed, and gives the plugin
        an instance of it as self.data (the defaults when there is none).
        """

        greeting: str = "hello"

    def __init__(self, api, data):
        super().__init__(api, data)
        # Set up state here: on a reload, set_state() is called after the
        # constructor and before startService().
        self.greeted = {}

    def startService(self):
        super().startService()
        self.api.log.info("$name ready, greeting with {greeting!r}",
                          greeting=self.data.greeting)

    # Handlers: manager.call("$name", "greet", "alice"), or an emit of
    # "greet"; plugmgr call $name greet alice from a shell.
    @handler()
    def greet(self, who):
        self.greeted[who] = self.greeted.get(who, 0) + 1
        return f"{self.data.greeting}, {who}!"

    @handler("count")
    def count(self, who):
        return self.greeted.get(who, 0)

    # Kept across reloads: what get_state() returns, the next version's
    # set_state() is given.
    def get_state(self):
        return dict(self.greeted)

    def set_state(self, state):
        self.greeted = dict(state)
'''

#: The test of L{PLUGIN}: C{$name}, C{$cls}.
PLUGIN_TEST = '''\
"""
Tests of the $name plugin, with twisted_plugmgr.testing; run them with
python -m pytest in this directory.
"""

import importlib.util
import os

from twisted_plugmgr import InvalidData
from twisted_plugmgr.testing import FakePluginAPI, clock_manager, failure_of, result_of

HERE = os.path.dirname(os.path.abspath(__file__))


def plugin_class():
    """
    The plugin class, from $name.py beside this file, imported by its path
    under a name of its own, as the manager does (a plugin's file may be
    named like another module).
    """
    spec = importlib.util.spec_from_file_location("${name}_under_test",
                                                  os.path.join(HERE, "$name.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.$cls


def test_greet_uses_the_greeting_and_counts():
    # Constructed without a manager: a FakePluginAPI records what it does.
    cls = plugin_class()
    plugin = cls(FakePluginAPI("$name"), cls.Config(greeting="hi"))
    assert plugin.greet("alice") == "hi, alice!"
    plugin.greet("alice")
    assert plugin.count("alice") == 2
    assert plugin.count("bob") == 0


def test_loaded_by_a_manager_keeps_its_counts_across_a_reload():
    # A real manager on a Clock: result_of gives what a Deferred fired with.
    manager, clock, events = clock_manager(paths=[HERE])
    try:
        result_of(manager.load("$name", data={"greeting": "hi"}))
        assert result_of(manager.call("$name", "greet", "bob")) == "hi, bob!"
        result_of(manager.reload("$name"))
        assert result_of(manager.call("$name", "count", "bob")) == 1
    finally:
        result_of(manager.stopService())


def test_data_that_does_not_fit_its_config_is_refused():
    manager, clock, events = clock_manager(paths=[HERE])
    try:
        failure = failure_of(manager.load("$name", data={"greeting": 3}), InvalidData)
        assert "greeting" in str(failure.value)
        assert "$name" not in manager.plugin_table()
    finally:
        result_of(manager.stopService())
'''

#: An IRC bot plugin module: C{$name}, C{$cls}.
IRC_PLUGIN = '''\
"""
$name: a twisted-plugmgr IRC bot plugin (written by plugmgr new --irc: make
it yours).

    <alice> !$name
    <bot> hello, alice!

The IRC bot guide (docs/irc.md) tells the rest: commands and rules, the
Context, permissions, the bot's [irc] section; the plugin author's guide
(docs/plugins.md) tells of the Config schema, state and reloads.
"""

from dataclasses import dataclass

from twisted_plugmgr.irc import BotPlugin, Context, command


class $cls(BotPlugin):
    """
    !$name [WHO]: greet WHO (or the one who asked).
    """

    # Metadata: name is the name it is loaded under; version is required.
    name = "$name"
    version = "0.1.0"
    longname = "$name: say in one line what it does"
    author = "Your Name <you@example.org>"
    license = "MIT"

    @dataclass
    class Config:
        """
        What [plugins.$name] data may hold: checked by the manager before
        the plugin is constructed; the plugin gets an instance as self.data.
        """

        greeting: str = "hello"

    def __init__(self, api, data):
        super().__init__(api, data)
        self.greeted = 0

    # A command: what it returns is the reply (a string, or a Deferred
    # firing with one); ctx.reply() and ctx.msg() send more.
    @command("$name", help="$name [WHO]: greet WHO, or you")
    def greet(self, ctx: Context) -> str:
        self.greeted += 1
        who = ctx.args or ctx.nick
        return f"{self.data.greeting}, {who}!"

    # Kept across reloads.
    def get_state(self):
        return self.greeted

    def set_state(self, state):
        self.greeted = state
'''

#: The test of L{IRC_PLUGIN}: C{$name}, C{$cls}.
IRC_PLUGIN_TEST = '''\
"""
Tests of the $name bot plugin, with twisted_plugmgr.testing; run them with
python -m pytest in this directory.

A command is a method given a Context: it is called here as the bot calls
it, with what the bot would pass.
"""

import importlib.util
import os

from twisted_plugmgr.irc import Context, Hostmask
from twisted_plugmgr.testing import FakePluginAPI

HERE = os.path.dirname(os.path.abspath(__file__))


def plugin_class():
    """
    The plugin class, from $name.py beside this file, imported by its path
    under a name of its own, as the manager does.
    """
    spec = importlib.util.spec_from_file_location("${name}_under_test",
                                                  os.path.join(HERE, "$name.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.$cls


def said(args="", sender="alice!~alice@example.org", channel="#chan"):
    """
    The Context of "!$name ARGS" said by SENDER in CHANNEL. Its bot is
    None: the command replies by returning (one that calls ctx.reply needs
    a bot that records what it is told to send).
    """
    return Context(bot=None, kind="command", sender=Hostmask.parse(sender),
                   target=channel, channel=channel, text=f"!$name {args}".strip(),
                   command="$name", args=args, plugin="$name")


def test_greets_the_one_who_asked_or_who_is_named():
    cls = plugin_class()
    plugin = cls(FakePluginAPI("$name"), cls.Config())
    assert plugin.greet(said()) == "hello, alice!"
    assert plugin.greet(said("bob")) == "hello, bob!"


def test_the_greeting_comes_from_its_data_and_the_count_survives_a_reload():
    cls = plugin_class()
    old = cls(FakePluginAPI("$name"), cls.Config(greeting="hi"))
    assert old.greet(said()) == "hi, alice!"
    new = cls(FakePluginAPI("$name"), cls.Config(greeting="hi"))
    new.set_state(old.get_state())
    assert new.get_state() == 1
'''


def class_name(name: str) -> str:
    """
    The class name of plugin C{name}: its words capitalised, then
    C{Plugin} (C{hello_world} -> C{HelloWorldPlugin}).
    """
    words = "".join(word[:1].upper() + word[1:] for word in name.split("_") if word)
    cls = f"{words}Plugin"
    if not cls.isidentifier() or keyword.iskeyword(cls):
        cls = f"Plugin_{name}"
    return cls


def render(name: str, irc: bool = False) -> List[Tuple[str, str]]:
    """
    The files of plugin C{name}: (file name, text), the plugin then its
    test.

    @raise InvalidName: for a name that is not a plugin name.
    """
    check_name(name)
    plugin, test = (IRC_PLUGIN, IRC_PLUGIN_TEST) if irc else (PLUGIN, PLUGIN_TEST)
    values = {"name": name, "cls": class_name(name)}
    return [(f"{name}.py", Template(plugin).substitute(values)),
            (f"test_{name}.py", Template(test).substitute(values))]


def write(name: str, directory: str = ".", irc: bool = False) -> List[str]:
    """
    Write plugin C{name} and its test into C{directory} (created if
    missing). Nothing is written unless both can be: no existing file is
    ever replaced, and what was written is removed if the second fails.

    @return: the paths written.
    @raise InvalidName: for a name that is not a plugin name.
    @raise FileExistsError: naming the file (its C{filename}) that exists.
    @raise OSError: when the directory or a file cannot be made.
    """
    files = [(os.path.join(directory, filename), text) for filename, text in render(name, irc)]
    for path, _ in files:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists already", path)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
    made = _missing(directory)
    written: List[str] = []
    try:
        os.makedirs(directory, exist_ok=True)
        for path, text in files:
            with open(path, "x", encoding="utf-8") as f:  # "x": never over a file
                written.append(path)
                f.write(text)
    except BaseException:
        for path in written:
            os.remove(path)
        for made_dir in made:
            if os.path.isdir(made_dir) and not os.listdir(made_dir):
                os.rmdir(made_dir)
        raise
    return written


def _missing(directory: str) -> List[str]:
    """
    The directories C{os.makedirs(directory)} would make, deepest first.
    """
    missing: List[str] = []
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def next_steps(name: str, directory: str, irc: bool = False) -> str:
    """
    What to do once plugin C{name} is written into C{directory}: run its
    test, and the config lines that load it.
    """
    where = os.path.abspath(directory)
    run_tests = "python -m pytest"
    if where != os.getcwd():
        run_tests = f"cd {shlex.quote(directory)} && {run_tests}"
    data = 'data = { greeting = "hello" }      # checked against its Config'
    lines = [
        "",
        "Next:",
        f"  {run_tests}      # its test passes as written",
        "  then, in the manager's config file:",
        "",
        "    [manager]",
        f"    paths = [{_toml_string(where)}]",
        "",
        f"    [plugins.{name}]",
        f"    {data}",
    ]
    if irc:
        lines += [
            "",
            "    [irc]",
            '    server = "tcp:host=irc.example.org:port=6667"   # see the IRC bot guide',
            '    nick = "plugbot"',
            '    channels = ["#plugmgr"]',
        ]
    lines += ["", "  check it: plugmgr checkconfig --plugins FILE",
              "  and run it: twist plugmgr --config FILE (a running manager: plugmgr reconfig)"]
    return "\n".join(lines)


def _toml_string(text: str) -> str:
    """
    C{text} as a TOML basic string.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
