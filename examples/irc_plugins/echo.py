"""
echo: says back what it is given. The smallest bot plugin.

    <alice> !echo hello
    <bot> hello
"""

from twisted_plugmgr.irc import BotPlugin, Context, command


class Echo(BotPlugin):
    """
    C{!echo TEXT}: say TEXT back.
    """

    name = "echo"
    version = "1.0"
    longname = "Say back what it is given"
    license = "MIT"
    author = "twisted-plugmgr developers"

    @command("echo", aliases=("say",), help="echo TEXT: say TEXT back")
    def echo(self, ctx: Context) -> str:
        return ctx.args or f"{ctx.nick}: echo what?"
