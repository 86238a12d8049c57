"""
Telling the bot's owners, in private, when saving a file broke a plugin
and when it works again.

A reload the manager made because a plugin's source changed (the file
watcher, or C{reload_changed()}) says so in its events: C{reason} is
C{"source_changed"}. When such a reload fails, every owner the bot can see
gets one private message with the error; when the plugin next reloads
successfully (whatever started that reload), they are told it works again.
The same error again (an editor that saves twice, a watcher's storm of
events) tells nobody twice; a different error is a new break.

Owners are hostmask patterns: an owner is messaged by the nick they have
now, found among the users of the bot's channels whose C{nick!user@host}
matches a pattern (see L{_people.People}). An owner the bot shares no
channel with is not told (a nick alone proves nothing).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.logger import Logger

from .._errors import PluginError
from .._events import PluginEvent, safe_str
from ._lines import split_utf8

__all__ = ["OwnerNotifier", "SOURCE_CHANGED"]

#: The C{reason} of the reload events of a reload made because a plugin's
#: source changed.
SOURCE_CHANGED = "source_changed"

#: The most bytes (UTF-8) of the error in a notice: one IRC line.
_MAX_BYTES = 300


def short_error(error: Any) -> str:
    """
    C{error} (a L{PluginError} or any exception) as one short line, without
    the C{plugin 'NAME':} its message starts with.
    """
    if isinstance(error, PluginError):
        text = error.describe()
        if error.detail:
            text += f": {error.detail}"
        if error.failure is not None:
            text += f" ({error.failure.type.__name__}: {error.failure.getErrorMessage()})"
    else:
        text = f"{type(error).__name__}: {safe_str(error)}"
    text = " ".join(text.split())
    pieces = split_utf8(text, _MAX_BYTES - 3)
    return pieces[0] + "..." if len(pieces) > 1 else text


class OwnerNotifier:
    """
    Follows the manager's events; messages the owners it can find.

    @param owners: gives the nicks of the owners the bot can see now.
    @param send: sends one private message, C{send(nick, text)}.
    """

    log = Logger(namespace="twisted_plugmgr.irc")

    def __init__(self, owners: Callable[[], List[str]], send: Callable[[str, str], Any]) -> None:
        self._owners = owners
        self._send = send
        self._broken: Dict[str, str] = {}  # plugin -> the error its owners were told

    def broken(self, plugin: str) -> Optional[str]:
        """
        The error the owners were last told about C{plugin}, while it is
        broken; L{None} otherwise.
        """
        return self._broken.get(plugin)

    def __call__(self, event: PluginEvent) -> None:
        """
        Look at one event of the manager.
        """
        plugin = event.plugin
        if not isinstance(plugin, str):
            return
        if event.kind == "plugin_reload_failed" and event.reason == SOURCE_CHANGED:
            error = short_error(event.failure.value if event.failure is not None
                                else event.message)
            if self._broken.get(plugin) == error:
                return  # this change was told already
            self._broken[plugin] = error
            self._tell(plugin, f"{plugin} did not reload after its file changed: {error}")
        elif event.kind == "plugin_reloaded" and plugin in self._broken:
            del self._broken[plugin]
            version = f" (version {event.new_version})" if event.new_version else ""
            self._tell(plugin, f"{plugin} works again: reloaded{version}")
        elif event.kind in ("plugin_unloaded", "plugin_init_failed"):
            self._broken.pop(plugin, None)

    def _tell(self, plugin: str, text: str) -> None:
        nicks = self._owners()
        if not nicks:
            self.log.info("no owner of the bot in sight to tell: {text}", text=text,
                          plugin=plugin)
            return
        for nick in nicks:
            self._send(nick, text)
