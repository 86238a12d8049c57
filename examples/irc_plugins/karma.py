"""
karma: C{thing++} and C{thing--} in any message; C{!karma thing} tells.

The counts persist in C{karma.json} in the plugin's data directory (the
bot's C{data_dir}, then C{karma/}), written off the reactor thread and
atomically: to a temporary file in the same directory, flushed, then
renamed over the old one with C{os.replace}, so a crash never leaves a half
written file. Writes never overlap: changes made during a write are saved
by the next one.
"""

import json
import os
import re
import tempfile

from twisted.internet.defer import Deferred, succeed

from twisted_plugmgr.irc import BotPlugin, Context, command, irc_lower, rule

FILENAME = "karma.json"

#: thing++ or thing-- (thing: no spaces, not starting with + or -).
BUMP = re.compile(r"(?:^|\s)([^\s+-][^\s+]*?)(\+\+|--)(?=\s|$)")


def read_karma(path):
    """
    The counts saved at C{path} ({} when there is no file yet).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    return {str(k): int(v) for k, v in data.items()}


def write_atomically(path, karma):
    """
    Write C{karma} to C{path} as JSON: a temporary file, then os.replace.
    """
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=".karma-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(karma, f, sort_keys=True, indent=0)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class Karma(BotPlugin):
    """
    C{thing++}, C{thing--}, C{!karma thing}.
    """

    name = "karma"
    version = "1.0"
    longname = "Karma: thing++ and thing--, !karma thing"
    license = "MIT"
    author = "twisted-plugmgr developers"

    def __init__(self, api, data=None):
        super().__init__(api, data)
        self.karma = {}
        self.path = None
        self._writing = None
        self._dirty = False

    def startService(self):
        super().startService()
        if self.bot.data_dir is None:
            self.api.warning("no data_dir configured: karma is kept in memory only")
            return None

        def locate():
            path = self.data_path(FILENAME)
            return path, read_karma(path)

        def loaded(result):
            self.path, self.karma = result

        return self.blocking(locate).addCallback(loaded)

    @rule(BUMP)
    def bump(self, ctx: Context) -> None:
        changed = False
        for match in BUMP.finditer(ctx.text):
            key = irc_lower(match.group(1))[:64]
            if key == irc_lower(ctx.nick):
                continue  # no karma for oneself
            self.karma[key] = self.karma.get(key, 0) + (1 if match.group(2) == "++" else -1)
            changed = True
        if changed:
            self._save()
        return None

    @command("karma", help="karma THING: the karma of THING")
    def tell(self, ctx: Context) -> str:
        if not ctx.argv:
            best = sorted(self.karma.items(), key=lambda kv: -kv[1])[:5]
            return "top karma: " + (", ".join(f"{k} {v}" for k, v in best) or "nobody yet")
        thing = ctx.argv[0]
        return f"{thing} has karma {self.karma.get(irc_lower(thing), 0)}"

    def _save(self):
        self._dirty = True
        if self.path is not None and self._writing is None:
            self._write()

    def _write(self):
        self._dirty = False
        self._writing = self.blocking(write_atomically, self.path, dict(self.karma))
        self._writing.addErrback(self.api.error)
        self._writing.addBoth(self._written)

    def _written(self, _):
        self._writing = None
        if self._dirty:
            self._write()

    def flushed(self) -> Deferred:
        """
        Fire once every change so far is on disk.
        """
        if self._writing is None:
            return succeed(None)
        d = Deferred()
        self._writing.addBoth(lambda r: (self.flushed().chainDeferred(d), r)[1])
        return d

    def shutdown(self, mode, reason):
        return self.flushed().addCallback(lambda _: reason or "karma saved")
