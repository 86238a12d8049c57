"""
seen: remembers when each nick last spoke, and keeps that across reloads
(C{get_state} / C{set_state}).

    <bob> !seen alice
    <bot> alice was last seen 3m ago in #plugmgr, saying: hello
"""

from twisted_plugmgr.irc import BotPlugin, Context, command, irc_lower, on


def _ago(seconds: float) -> str:
    seconds = int(max(0, seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


class Seen(BotPlugin):
    """
    C{!seen NICK}: when NICK last spoke, where, and what.
    """

    name = "seen"
    version = "1.0"
    longname = "Remember when nicks last spoke: !seen NICK"
    license = "MIT"
    author = "twisted-plugmgr developers"

    #: Nicks remembered at most (the oldest are forgotten first).
    limit = 10000

    def __init__(self, api, data=None):
        super().__init__(api, data)
        # folded nick -> (nick, time, channel or None, text)
        self.last = {}

    def get_state(self):
        """
        What the next version of this plugin starts with.
        """
        return dict(self.last)

    def set_state(self, state):
        """
        Start with what the previous version remembered.
        """
        self.last = dict(state)

    @on("message")
    def message(self, ctx: Context) -> None:
        key = irc_lower(ctx.nick)
        self.last.pop(key, None)
        self.last[key] = (ctx.nick, self.api.reactor.seconds(), ctx.channel, ctx.text[:200])
        if len(self.last) > self.limit:
            del self.last[next(iter(self.last))]

    @command("seen", help="seen NICK: when NICK last spoke")
    def seen(self, ctx: Context) -> str:
        if not ctx.argv:
            return f"{ctx.nick}: seen whom?"
        wanted = ctx.argv[0]
        found = self.last.get(irc_lower(wanted))
        if found is None:
            return f"{ctx.nick}: I have not seen {wanted}"
        nick, when, channel, text = found
        where = f" in {channel}" if channel else " in private"
        ago = _ago(self.api.reactor.seconds() - when)
        # What was said in private stays private.
        said = f", saying: {text}" if channel else ""
        return f"{nick} was last seen {ago}{where}{said}"
