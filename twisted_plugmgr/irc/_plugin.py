"""
L{BotPlugin}: a plugin of the IRC bot, and the decorator for IRC events.

A bot plugin is an ordinary L{Plugin}: the manager loads, unloads and
reloads it. What makes it a bot plugin is that its C{startService} enters
its commands and rules into the bot's L{CommandIndex} (and is refused, so
that the load fails, when another plugin holds one of its commands), and
that its IRC handlers receive a L{Context}.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, TypeVar

from twisted.internet.defer import Deferred

from .._deferreds import run_blocking
from .._dispatch import handler
from .._errors import PluginError
from .._plugin import Plugin
from ._interfaces import IBot

__all__ = ["BotPlugin", "on", "IRC_EVENTS", "BOT_SERVICE_NAME", "find_bot", "NoBot"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The IRC happenings plugins can handle with L{on}, and the manager event
#: each is emitted as (C{irc_<kind>}).
IRC_EVENTS = ("message", "action", "join", "part", "quit", "kick", "nick", "topic")

#: The name of the bot's service, beside the manager in their parent.
BOT_SERVICE_NAME = "irc"


class NoBot(PluginError):
    """
    A bot plugin was started by a manager that has no IRC bot beside it.
    """

    def describe(self) -> str:
        """
        A short, human description of this kind of error.
        """
        return "no IRC bot runs beside this plugin manager"


def on(kind: str, priority: int = 0) -> Callable[[_F], _F]:
    """
    Declare a bot plugin method as the handler of an IRC happening:
    C{on("join")} handles the manager event C{irc_join}. The method
    receives a L{Context}. C{"message"} is every channel or private
    message, commands included.

    @param kind: one of L{IRC_EVENTS}.
    @param priority: as for L{handler}: higher first.
    """
    if kind not in IRC_EVENTS:
        raise ValueError(f"unknown IRC event {kind!r}: expected one of {', '.join(IRC_EVENTS)}")
    return handler(f"irc_{kind}", priority=priority)


def find_bot(manager: Any, plugin: Optional[str] = None) -> IBot:
    """
    The L{IRCBot} serving C{manager}: the service named
    L{BOT_SERVICE_NAME} in the manager's parent service.

    @param plugin: the name of the plugin asking (for the error).
    @raise NoBot: if there is none.
    """
    parent = getattr(manager, "parent", None)
    try:
        bot = parent.getServiceNamed(BOT_SERVICE_NAME) if parent is not None else None
    except KeyError:
        bot = None
    if not IBot.providedBy(bot) or bot.manager is not manager:
        raise NoBot(plugin, "make_bot_service(manager, ...) must share the manager's parent")
    return bot


class BotPlugin(Plugin):
    """
    Base class of IRC bot plugins.

    Declare commands with L{command}, rules with L{rule}, and IRC event
    handlers with L{on}; each receives a L{Context}, and what a command or
    rule returns (a string, or a Deferred firing with one) is replied. A
    subclass that overrides C{startService} must call
    C{super().startService()} first: that is where its commands enter the
    bot's index.

    @ivar bot: the L{IRCBot} (set by C{startService}): with several
        networks, the first one's; C{ctx.bot} is always the bot of the
        network a message came from.
    """

    bot: IBot

    @property
    def bots(self) -> Dict[str, IBot]:
        """
        Every network's bot, by network name (C{"default"} for a single
        C{[irc]} section).
        """
        return dict(self.bot.bots)

    def startService(self) -> Any:
        """
        Enter this plugin's commands and rules into the bot's index.

        @raise NoBot: when no bot runs beside the manager.
        @raise DuplicateCommand: when another plugin holds one of its
            commands (the load, or the reload, fails then).
        """
        self.bot = find_bot(self.api.manager, self.api.name)
        self.bot.install(self.api.name, type(self))
        return super().startService()

    def blocking(self, f: Callable[..., Any], *args: Any, **kw: Any) -> Deferred:
        """
        Run C{f(*args, **kw)} (file I/O, for instance) in the reactor's
        thread pool, off the reactor thread; return a Deferred with its
        result. On a reactor without threads (a
        L{Clock<twisted.internet.task.Clock>} in tests), it runs at once.
        """
        return run_blocking(self.bot.reactor, f, *args, **kw)

    def data_path(self, filename: str) -> Optional[str]:
        """
        The path of C{filename} in this plugin's data directory (the bot's
        C{data_dir}, then the plugin's name), created if needed; L{None}
        when the bot has no data directory. Blocking: call it from a thread
        or at start.
        """
        base = self.bot.data_dir
        if base is None:
            return None
        directory = os.path.join(base, self.api.name)
        os.makedirs(directory, exist_ok=True)
        return os.path.join(directory, filename)
