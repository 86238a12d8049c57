"""
The bot's contracts, as zope interfaces: L{IBot}, what plugins and their
contexts use of the bot, and L{IConnectionOwner}, what a connection
(L{BotProtocol}) needs from the service it connects for.

The context, the plugin base class and the protocol depend on these, never
on L{IRCBot} itself, so that no two modules of the package import each
other.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

__all__ = ["IBot", "IConnectionOwner"]


class IBot(Interface):
    """
    The IRC bot, as its plugins and their L{Context}s see it.
    """

    manager = Attribute("The plugin manager whose plugins serve IRC.")
    reactor = Attribute("The reactor the bot runs on (an IReactorTime, a Clock in tests).")
    prefix = Attribute("The command prefix, C{'!'} by default.")
    data_dir = Attribute("The directory of the plugins' data files, or None.")
    index = Attribute("The CommandIndex: which plugin answers which command.")
    connection = Attribute("The current connection (a BotProtocol), or None.")
    network = Attribute('The name of the network this bot serves ("default" for one [irc]).')
    bots = Attribute("Every network's bot, by network name (this one included).")
    permissions = Attribute("The Permissions: owners and named permissions, by hostmask or account.")
    ignores = Attribute("The IgnoreList (hostmasks and accounts), shared by every network.")
    channel_plugins = Attribute("The ChannelPlugins: which plugins answer in which channel.")

    def msg(target: str, text: str) -> int:
        """
        Send C{text} to C{target} as C{PRIVMSG}, split to fit and queued
        under flood control; return how many lines were queued.

        @raise ValueError: for a target that is not one nick or channel.
        """

    def notice(target: str, text: str) -> int:
        """
        As L{msg}, with C{NOTICE}.
        """

    def action(target: str, text: str) -> int:
        """
        As L{msg}, as a CTCP ACTION (C{/me}).
        """

    def is_owner(sender: Any, account: Optional[str] = None) -> bool:
        """
        Whether C{sender} (a L{Hostmask} or C{"nick!user@host"}, logged in
        as C{account} when known) is one of the bot's owners.
        """

    def has_permission(permission: Optional[str], sender: Any,
                       account: Optional[str] = None) -> bool:
        """
        Whether C{sender} (with C{account}) holds C{permission}; owners
        hold every one.
        """

    def save_ignores() -> Deferred[None]:
        """
        Write the ignore list to the data directory (in a thread); fires
        when written (at once without a data directory).
        """

    def install(plugin: str, cls: type) -> None:
        """
        Make the commands and rules of class C{cls} those of plugin
        C{plugin}.

        @raise DuplicateCommand: if another plugin holds one of them.
        """

    def when_signed_on(fresh: bool = False) -> Deferred[Any]:
        """
        Fire with the connection once the bot is signed on: at once if it is
        now, unless C{fresh}, which waits for the next sign-on.
        """


class IConnectionOwner(Interface):
    """
    What a L{BotProtocol} needs from the service it connects for: the
    connection's settings, and where to report what happens on it.
    """

    reactor = Attribute("The reactor (an IReactorTime): timers, heartbeat, flood control.")
    nick = Attribute("The configured nick (reclaimed when it had to be altered).")
    username = Attribute("The user name to register with, or None for the nick.")
    realname = Attribute("The real name to register with, or None for a default.")
    password = Attribute("The server password, or None.")
    channels = Attribute("The channels to join (and rejoin after a kick), a tuple.")
    owners = Attribute("The owners: a Who of hostmask patterns and accounts (server CASEMAPPING).")
    flood_rate = Attribute("Lines per second sent, on average.")
    flood_burst = Attribute("Lines sent at once before the rate applies.")
    max_queue = Attribute("Lines queued at most; more are dropped.")
    regain_interval = Attribute("Seconds between attempts to reclaim the configured nick.")
    rejoin_delay = Attribute("Seconds to wait before rejoining a channel after a kick.")
    sasl = Attribute("The SASLSettings to log in with, or None.")

    def handle_casemapping(mapping: str) -> None:
        """
        The server's C{CASEMAPPING} is C{mapping}: compare nicks and
        patterns with it.
        """

    def handle_login_failed(proto: Any, error: Exception) -> None:
        """
        The SASL login required on C{proto} failed (C{error}, a
        L{SASLFailed}); the connection is being closed.
        """

    def handle_connected(proto: Any) -> None:
        """
        Connection C{proto} is made (not yet signed on).
        """

    def handle_signed_on(proto: Any) -> None:
        """
        The server has welcomed connection C{proto}.
        """

    def handle_disconnected(proto: Any, reason: Failure) -> None:
        """
        Connection C{proto} is closed, for C{reason}.
        """

    def handle_privmsg(proto: Any, prefix: str, target: str, text: str) -> None:
        """
        C{prefix} said C{text} to C{target} (a channel or the bot), on C{proto}.
        """

    def handle_event(kind: str, prefix: str, channel: Optional[str] = None,
                     target: str = "", **fields: Any) -> None:
        """
        Something of C{kind} (C{"join"}, C{"part"}, C{"quit"}, C{"kick"},
        C{"nick"}, C{"topic"}, C{"action"}) was done by C{prefix}.
        """
