"""
The command index: which plugin answers which command, and which plugins
have rules.

A bot plugin declares commands with L{command} and rules with L{rule}. Each
declaration is also an ordinary manager handler (C{handler(event)}), so the
bot calls it through the manager by plugin name and event name: the index
holds names only, never plugin instances, and a reloaded plugin is
reached through the same entry.

A line that names a command costs one dict lookup, whatever the number of
plugins; rules are tried only for the plugins that declare some. Two
plugins may not claim the same command word (name or alias): the second is
refused with L{DuplicateCommand}, naming both.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Pattern, Tuple, TypeVar, Union

import attr

from .._dispatch import handler
from .._errors import PluginError

__all__ = [
    "command",
    "rule",
    "CommandSpec",
    "RuleSpec",
    "bot_specs",
    "CommandIndex",
    "CommandEntry",
    "DuplicateCommand",
    "command_event",
    "rule_event",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_COMMAND_MARK = "__plugmgr_irc_command__"
_RULE_MARK = "__plugmgr_irc_rules__"
_WORD = re.compile(r"[^\s\x00-\x1f]+")


def command_event(name: str) -> str:
    """
    The manager event that a handler for command C{name} is registered
    under.
    """
    return f"irc_command.{name}"


def rule_event(attribute: str) -> str:
    """
    The manager event for the rule method named C{attribute}.
    """
    return f"irc_rule.{attribute}"


def _word(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise ValueError(f"{what} must be a non-empty word without spaces, not {value!r}")
    return value.lower()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CommandSpec:
    """
    One declared command.

    @ivar name: its name (lower case).
    @ivar aliases: other names for it (lower case).
    @ivar help: a one-line description, for C{!help}.
    @ivar event: the manager event its handler is registered under.
    @ivar needs: the permission a sender must hold (C{"owner"},
        C{"admin"}, ...), or L{None} for anyone.
    """

    name: str
    aliases: Tuple[str, ...] = ()
    help: str = ""
    event: str = ""
    needs: Optional[str] = None

    @property
    def words(self) -> Tuple[str, ...]:
        """
        The name and the aliases.
        """
        return (self.name,) + self.aliases


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RuleSpec:
    """
    One declared rule: a compiled regular expression, searched in every
    message, and the manager event of its handler.
    """

    pattern: Pattern[str]
    event: str


def command(name: str, aliases: Iterable[str] = (), help: str = "",
            needs: Optional[str] = None) -> Callable[[_F], _F]:
    """
    Declare a bot plugin method as the handler of command C{name}
    (C{!name args}), with other names C{aliases} and a one-line C{help}.
    With C{needs}, only senders holding that permission (C{[irc.permissions]};
    the owners hold every one) may run it: others are told which permission
    it needs (once a minute) and the method is not called.

    The method receives a L{Context}; what it returns (a string or a
    Deferred firing with one) is sent back to the caller with
    C{ctx.reply}, unless it is L{None}.
    """
    spec_name = _word(name, "command name")
    spec_aliases = tuple(_word(a, "command alias") for a in aliases)
    if not isinstance(help, str):
        raise TypeError(f"command help must be a str, not {help!r}")
    spec_needs = None if needs is None else _word(needs, "command permission")

    def mark(function: _F) -> _F:
        if getattr(function, _COMMAND_MARK, None) is not None:
            raise ValueError(f"{function.__name__} already declares a command")
        event = command_event(spec_name)
        spec = CommandSpec(spec_name, spec_aliases, help.strip(), event, spec_needs)
        setattr(function, _COMMAND_MARK, spec)
        return handler(event)(function)

    return mark


def rule(pattern: Union[str, Pattern[str]], flags: int = 0) -> Callable[[_F], _F]:
    """
    Declare a bot plugin method as a rule: it is called with a L{Context}
    (whose C{match} is the match object) for every message in which
    C{pattern} is found (C{re.search}). Stack it to give one method several
    patterns. What it returns is replied, as for L{command}.

    @raise re.error: at once, for a pattern that does not compile.
    """
    compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)

    def mark(function: _F) -> _F:
        event = rule_event(function.__name__)
        rules = tuple(getattr(function, _RULE_MARK, ())) + (RuleSpec(compiled, event),)
        setattr(function, _RULE_MARK, rules)
        if len(rules) == 1:
            function = handler(event)(function)
        return function

    return mark


def bot_specs(cls: type) -> Tuple[Tuple[CommandSpec, ...], Tuple[RuleSpec, ...]]:
    """
    The commands and rules a bot plugin class declares, its bases'
    included.

    @raise ValueError: when two of its methods claim the same command word.
    """
    commands: Dict[str, Tuple[str, CommandSpec]] = {}
    specs: List[CommandSpec] = []
    rules: List[RuleSpec] = []
    for attribute in dir(cls):
        function = getattr(cls, attribute, None)
        spec = getattr(function, _COMMAND_MARK, None)
        if isinstance(spec, CommandSpec):
            for word in spec.words:
                if word in commands and commands[word][0] != attribute:
                    raise ValueError(
                        f"command {word!r} is claimed twice in {cls.__qualname__}: "
                        f"by {commands[word][0]} and {attribute}"
                    )
                commands[word] = (attribute, spec)
            specs.append(spec)
        rules.extend(r for r in getattr(function, _RULE_MARK, ()) if isinstance(r, RuleSpec))
    specs.sort(key=lambda s: s.name)
    return tuple(specs), tuple(rules)


class DuplicateCommand(PluginError):
    """
    A plugin claims a command word (name or alias) that another loaded
    plugin holds already.

    @ivar command: the word claimed twice.
    @ivar other: the plugin that holds it.
    """

    def __init__(self, plugin: Any = None, command: str = "", other: str = "") -> None:
        self.command = command
        self.other = other
        super().__init__(
            plugin, f"command {command!r} is already claimed by plugin {other!r}"
        )

    def describe(self) -> str:
        """
        A short, human description of this kind of error.
        """
        return "duplicate command"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CommandEntry:
    """
    What a command word leads to: the plugin's name and the command.
    """

    plugin: str
    spec: CommandSpec


class CommandIndex:
    """
    Command word -> plugin and command; plugin -> its rules.

    Holds names only. L{set} replaces everything a plugin declared in one
    step (load and reload), L{remove} forgets it (unload).
    """

    def __init__(self) -> None:
        self._words: Dict[str, CommandEntry] = {}
        self._commands: Dict[str, Tuple[CommandSpec, ...]] = {}
        self._rules: Dict[str, Tuple[RuleSpec, ...]] = {}
        #: (plugin, rule) for every plugin that declares rules, in the
        #: order the plugins were set.
        self.rules: Tuple[Tuple[str, RuleSpec], ...] = ()

    def conflict(self, plugin: str, commands: Iterable[CommandSpec]) -> Optional[DuplicateCommand]:
        """
        The error that setting C{commands} for C{plugin} would meet, or
        L{None}. A plugin never conflicts with itself (a reload).
        """
        for spec in commands:
            for word in spec.words:
                entry = self._words.get(word)
                if entry is not None and entry.plugin != plugin:
                    return DuplicateCommand(plugin, word, entry.plugin)
        return None

    def check(self, plugin: str, commands: Iterable[CommandSpec]) -> None:
        """
        @raise DuplicateCommand: if another plugin holds one of the words of
            C{commands}.
        """
        error = self.conflict(plugin, commands)
        if error is not None:
            raise error

    def set(
        self, plugin: str, commands: Iterable[CommandSpec], rules: Iterable[RuleSpec] = ()
    ) -> None:
        """
        Make C{commands} and C{rules} those of C{plugin}, replacing what it
        had, in one step.

        @raise DuplicateCommand: if another plugin holds one of the words;
            nothing changes then.
        """
        commands = tuple(commands)
        rules = tuple(rules)
        self.check(plugin, commands)
        self._drop(plugin)
        if commands:
            self._commands[plugin] = commands
            for spec in commands:
                entry = CommandEntry(plugin, spec)
                for word in spec.words:
                    self._words[word] = entry
        if rules:
            self._rules[plugin] = rules
        self._rebuild_rules()

    def remove(self, plugin: str) -> None:
        """
        Forget the commands and rules of C{plugin} (nothing if it has none).
        """
        if self._drop(plugin):
            self._rebuild_rules()

    def _drop(self, plugin: str) -> bool:
        for spec in self._commands.pop(plugin, ()):
            for word in spec.words:
                if self._words.get(word, None) is not None and self._words[word].plugin == plugin:
                    del self._words[word]
        return self._rules.pop(plugin, None) is not None

    def _rebuild_rules(self) -> None:
        self.rules = tuple(
            (plugin, spec) for plugin, specs in self._rules.items() for spec in specs
        )

    def lookup(self, word: str) -> Optional[CommandEntry]:
        """
        The entry for command word C{word} (a name or an alias), or L{None}.
        """
        return self._words.get(word)

    def __contains__(self, plugin: object) -> bool:
        return plugin in self._commands or plugin in self._rules

    def commands(self) -> List[CommandEntry]:
        """
        Every command (not its aliases), sorted by name.
        """
        return sorted(
            (CommandEntry(plugin, spec) for plugin, specs in self._commands.items()
             for spec in specs),
            key=lambda e: e.spec.name,
        )

    def commands_of(self, plugin: str) -> Tuple[CommandSpec, ...]:
        """
        The commands C{plugin} declared.
        """
        return self._commands.get(plugin, ())
