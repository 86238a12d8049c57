"""
The IRC bot's admin commands, as a plugin.

 - C{!plugins}: the loaded plugins, their versions and states; then, for
   each plugin that was restarted or has failed, a line with its restarts
   and its last failure;
 - C{!load NAME}, C{!unload NAME [immediate|smart|lazy]}, C{!reload NAME}:
   they need the C{owner} permission, checked by the bot on every command
   (the sender's full C{nick!user@host} against the owner patterns, or its
   account against the owner accounts); anyone else is told, once a
   minute, and nothing happens;
 - C{!ignore [ENTRY]}, C{!unignore ENTRY}: owners only; the ignore list
   (hostmask patterns and C{account:NAME}), kept in the data directory;
 - C{!whoami}: who the bot takes the sender for, and its permissions;
 - C{!help [command]}: the commands that answer where it is asked, from
   the command index.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_plugmgr import ShutdownMode
from twisted_plugmgr._events import safe_str
from twisted_plugmgr.irc import BotPlugin, Context, command, split_utf8
from twisted_plugmgr.irc._notify import short_error

#: The most bytes (UTF-8) of a plugin's line of restarts and failure in
#: C{!plugins}: one IRC line, whatever the channel and the bot's hostmask.
_MAX_TROUBLE_BYTES = 300


def _short(failure: Failure) -> str:
    """
    The error of C{failure} as one short line (as an owner's private
    notice gives it: at most 300 bytes).
    """
    return short_error(failure.value)


class Admin(BotPlugin):
    """
    Plugin administration from IRC.
    """

    # Service declares name = None, which mypy takes for its type.
    name = "irc_admin"  # type: ignore[assignment]
    version = "1.0"
    longname = ("IRC bot administration: !plugins, !load, !unload, !reload, !ignore, "
                "!unignore, !whoami, !help")
    license = "MIT"
    author = "twisted-plugmgr developers"

    def _name(self, ctx: Context) -> Optional[str]:
        argv = ctx.argv
        return argv[0] if len(argv) == 1 else None

    @command("plugins", help="list the loaded plugins")
    def plugins(self, ctx: Context) -> str:
        table = self.api.manager.plugin_table()
        if not table:
            return "no plugins loaded"
        rows = [
            f"{name} {info.version} ({info.state.value})" for name, info in sorted(table.items())
        ]
        return "\n".join([f"{len(rows)} plugins: " + ", ".join(rows), *_troubles(table)])

    def _by_name(self, ctx: Context, verb: str, operate: Callable[[str], Deferred]) -> Any:
        """
        An owner's C{!load NAME} or C{!reload NAME}: C{operate(name)}, and
        the answer to give.
        """
        name = self._name(ctx)
        if name is None:
            return f"usage: {self.bot.prefix}{verb} NAME"
        return operate(name).addCallbacks(
            lambda plugin: f"{verb}ed {name} {_version(plugin)}".rstrip(),
            lambda failure: f"{verb} of {name} failed: {_short(failure)}",
        )

    @command("load", help="load NAME: load a plugin (owners only)", needs="owner")
    def load(self, ctx: Context) -> Any:
        return self._by_name(ctx, "load", self.api.manager.load)

    @command("unload", help="unload NAME [immediate|smart|lazy]: unload a plugin (owners only)",
             needs="owner")
    def unload(self, ctx: Context) -> Any:
        argv = ctx.argv
        if not argv or len(argv) > 2:
            return f"usage: {self.bot.prefix}unload NAME [immediate|smart|lazy]"
        name = argv[0]
        try:
            mode = ShutdownMode.coerce(argv[1] if len(argv) > 1 else "smart")
        except ValueError as error:
            return str(error)
        if name == self.api.name:
            return f"{name} cannot be unloaded from IRC (reload it instead)"
        d: Deferred = self.api.manager.unload(name, mode, f"unloaded by {ctx.nick}")
        return d.addCallbacks(
            lambda quit_message: f"unloaded {name}" + (f": {quit_message}" if quit_message else ""),
            lambda failure: f"unload of {name} failed: {_short(failure)}",
        )

    @command("reload", help="reload NAME: reload a plugin from its source (owners only)",
             needs="owner")
    def reload(self, ctx: Context) -> Any:
        return self._by_name(ctx, "reload", self.api.manager.reload)

    @command("whoami", help="whoami: who the bot takes you for, and your permissions")
    def whoami(self, ctx: Context) -> str:
        account = f"logged in as {ctx.account}" if ctx.account else "not logged in"
        held = ctx.permissions
        what = "permissions: " + ", ".join(held) if held else "no permissions"
        return f"{ctx.nick}: you are {ctx.sender} ({account}) on {ctx.network}; {what}"

    @command("ignore", help="ignore [nick!user@host|account:NAME]: ignore someone, or list "
             "whom (owners only)", needs="owner")
    def ignore(self, ctx: Context) -> Any:
        ignores = self.bot.ignores
        argv = ctx.argv
        if not argv:
            entries = ignores.entries
            return "ignoring: " + ", ".join(entries) if entries else "ignoring nobody"
        if len(argv) != 1:
            return f"usage: {self.bot.prefix}ignore [nick!user@host|account:NAME]"
        try:
            added = ignores.add(argv[0])
        except ValueError as error:
            return f"cannot ignore {argv[0]}: {error}"
        if not added:
            return f"{argv[0]} is ignored already"
        return self._saved(f"ignoring {argv[0]}")

    @command("unignore", help="unignore ENTRY: stop ignoring someone (owners only)",
             needs="owner")
    def unignore(self, ctx: Context) -> Any:
        argv = ctx.argv
        if len(argv) != 1:
            return f"usage: {self.bot.prefix}unignore nick!user@host|account:NAME"
        if not self.bot.ignores.remove(argv[0]):
            return f"{argv[0]} is not ignored"
        return self._saved(f"no longer ignoring {argv[0]}")

    def _saved(self, text: str) -> Any:
        if self.bot.ignores.path is None:
            return text + " (in memory only: the bot has no data_dir)"
        return self.bot.save_ignores().addCallbacks(
            lambda _: text,
            lambda failure: f"{text}, but saving the list failed: {_short(failure)}",
        )

    @command("help", help="help [COMMAND]: the commands, or what one does")
    def help(self, ctx: Context) -> str:
        prefix = self.bot.prefix
        index = self.bot.index
        answers = self.bot.channel_plugins.answers
        argv = ctx.argv
        if not argv:
            names = ", ".join(prefix + entry.spec.name for entry in index.commands()
                              if answers(entry.plugin, ctx.channel))
            return f"commands: {names} ({prefix}help COMMAND for more)"
        word = argv[0].lower().removeprefix(prefix)
        entry = index.lookup(word)
        if entry is None or not answers(entry.plugin, ctx.channel):
            return f"no command {prefix}{word}"
        spec = entry.spec
        text = f"{prefix}{spec.name}"
        if spec.aliases:
            text += f" (also {', '.join(prefix + a for a in spec.aliases)})"
        text += f": {spec.help or 'no help'} [plugin {entry.plugin}"
        text += f"; needs {spec.needs}]" if spec.needs else "]"
        return text


def _troubles(table: Mapping[str, Any]) -> List[str]:
    """
    One line for each plugin of C{table} that was restarted or has a last
    failure: C{"NAME: N restarts, last failure: ..."}, cut to one IRC line.
    """
    lines = []
    for name, info in sorted(table.items()):
        restarts, failure = info.restarts, info.last_failure
        if not restarts and not failure:
            continue
        line = f"{name}: {restarts} restart{'' if restarts == 1 else 's'}"
        if failure:
            line += f", last failure: {' '.join(str(failure).split())}"
        pieces = split_utf8(line, _MAX_TROUBLE_BYTES - 3)
        lines.append(pieces[0] + "..." if len(pieces) > 1 else line)
    return lines


def _version(plugin: Any) -> str:
    """
    The plugin's version to show, or nothing (plugin code may raise).
    """
    try:
        return safe_str(getattr(plugin, "version", None)) or ""
    except BaseException:
        return ""
