"""
The IRC bot's admin commands, as a plugin.

 - C{!plugins}: the loaded plugins, their versions and states; then, for
   each plugin that was restarted or has failed, a line with its restarts
   and its last failure;
 - C{!load NAME}, C{!unload NAME [immediate|smart|lazy]}, C{!reload NAME}:
   owners only. The sender's full C{nick!user@host} is checked against the
   owner patterns on every command; anyone else gets a refusal and nothing
   happens;
 - C{!help [command]}: the commands, from the command index.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_plugmgr import PluginError, ShutdownMode
from twisted_plugmgr._events import safe_str
from twisted_plugmgr.irc import BotPlugin, Context, command, split_utf8

_MAX_ERROR = 200

#: The most bytes (UTF-8) of a plugin's line of restarts and failure in
#: C{!plugins}: one IRC line, whatever the channel and the bot's hostmask.
_MAX_TROUBLE_BYTES = 300


def _short(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, PluginError):
        text = error.describe()
        if error.detail:
            text += f": {error.detail}"
        if error.failure is not None:
            text += f" ({error.failure.type.__name__}: {error.failure.getErrorMessage()})"
    else:
        text = f"{failure.type.__name__}: {failure.getErrorMessage()}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


class Admin(BotPlugin):
    """
    Plugin administration from IRC.
    """

    # Service declares name = None, which mypy takes for its type.
    name = "irc_admin"  # type: ignore[assignment]
    version = "1.0"
    longname = "IRC bot administration: !plugins, !load, !unload, !reload, !help"
    license = "MIT"
    author = "twisted-plugmgr developers"

    def _refused(self, ctx: Context, what: str) -> Optional[str]:
        if ctx.is_owner:
            return None
        self.api.log.warn(
            "refused {what} by {sender}: not an owner", what=what, sender=str(ctx.sender)
        )
        return f"{ctx.nick}: only the bot's owners may {what} plugins"

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
        refusal = self._refused(ctx, verb)
        if refusal:
            return refusal
        name = self._name(ctx)
        if name is None:
            return f"usage: {self.bot.prefix}{verb} NAME"
        return operate(name).addCallbacks(
            lambda plugin: f"{verb}ed {name} {_version(plugin)}".rstrip(),
            lambda failure: f"{verb} of {name} failed: {_short(failure)}",
        )

    @command("load", help="load NAME: load a plugin (owners only)")
    def load(self, ctx: Context) -> Any:
        return self._by_name(ctx, "load", self.api.manager.load)

    @command("unload", help="unload NAME [immediate|smart|lazy]: unload a plugin (owners only)")
    def unload(self, ctx: Context) -> Any:
        refusal = self._refused(ctx, "unload")
        if refusal:
            return refusal
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

    @command("reload", help="reload NAME: reload a plugin from its source (owners only)")
    def reload(self, ctx: Context) -> Any:
        return self._by_name(ctx, "reload", self.api.manager.reload)

    @command("help", help="help [COMMAND]: the commands, or what one does")
    def help(self, ctx: Context) -> str:
        prefix = self.bot.prefix
        index = self.bot.index
        argv = ctx.argv
        if not argv:
            names = ", ".join(prefix + entry.spec.name for entry in index.commands())
            return f"commands: {names} ({prefix}help COMMAND for more)"
        word = argv[0].lower().removeprefix(prefix)
        entry = index.lookup(word)
        if entry is None:
            return f"no command {prefix}{word}"
        spec = entry.spec
        text = f"{prefix}{spec.name}"
        if spec.aliases:
            text += f" (also {', '.join(prefix + a for a in spec.aliases)})"
        text += f": {spec.help or 'no help'} [plugin {entry.plugin}]"
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
