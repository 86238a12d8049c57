"""
twisted_plugmgr.irc: an IRC bot whose features are hot-reloadable plugins.

Public names only; everything is defined in the private modules. See
L{make_bot_service} to run a bot beside a L{twisted_plugmgr.PluginManager},
and L{BotPlugin} to write a plugin for it.
"""

from ._abuse import IgnoreList, UserFlood
from ._bot import ADMIN_PACKAGE, ADMIN_PLUGIN, DEFAULT_NETWORK, IRCBot
from ._build import make_bot_service
from ._caps import WANTED_CAPS, CapNegotiation, SASLFailed, SASLSettings, parse_tags
from ._channels import ChannelPlugins
from ._context import Context, is_channel
from ._flood import OutgoingQueue, QueueFull, TokenBucket
from ._hostmask import Hostmask, HostmaskPatterns, irc_lower
from ._index import (
    CommandEntry,
    CommandIndex,
    CommandSpec,
    DuplicateCommand,
    RuleSpec,
    command,
    rule,
)
from ._interfaces import IBot
from ._lines import MAX_LINE_BYTES, format_messages, split_utf8, text_lines
from ._parse import ParsedCommand, parse_command
from ._permissions import OWNER, Permissions, Who
from ._plugin import BOT_SERVICE_NAME, IRC_EVENTS, BotPlugin, NoBot, find_bot, on
from ._protocol import BotProtocol

__all__ = [
    "ADMIN_PACKAGE",
    "ADMIN_PLUGIN",
    "BOT_SERVICE_NAME",
    "BotPlugin",
    "BotProtocol",
    "CapNegotiation",
    "ChannelPlugins",
    "DEFAULT_NETWORK",
    "IgnoreList",
    "OWNER",
    "Permissions",
    "SASLFailed",
    "SASLSettings",
    "UserFlood",
    "WANTED_CAPS",
    "Who",
    "parse_tags",
    "CommandEntry",
    "CommandIndex",
    "CommandSpec",
    "Context",
    "DuplicateCommand",
    "Hostmask",
    "HostmaskPatterns",
    "IBot",
    "IRCBot",
    "IRC_EVENTS",
    "MAX_LINE_BYTES",
    "NoBot",
    "OutgoingQueue",
    "ParsedCommand",
    "QueueFull",
    "RuleSpec",
    "TokenBucket",
    "command",
    "find_bot",
    "format_messages",
    "irc_lower",
    "is_channel",
    "make_bot_service",
    "on",
    "parse_command",
    "rule",
    "split_utf8",
    "text_lines",
]
