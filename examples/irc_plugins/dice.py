"""
dice: rolls dice.

    <alice> !roll 2d6
    <bot> alice rolled 2d6: 3 + 5 = 8

The plugin's data may give a seed (C{[plugins.dice] data = {seed = 42}}),
for repeatable rolls.
"""

import random
import re

from twisted_plugmgr.irc import BotPlugin, Context, command

_DICE = re.compile(r"^(\d{0,6})d(\d{1,6})$", re.IGNORECASE)
MAX_DICE = 100
MAX_SIDES = 1000


class Dice(BotPlugin):
    """
    C{!roll [N]dM}: roll N dice of M sides (1d6 by default).
    """

    name = "dice"
    version = "1.0"
    longname = "Roll dice: !roll 2d6"
    license = "MIT"
    author = "twisted-plugmgr developers"

    def __init__(self, api, data=None):
        super().__init__(api, data)
        seed = data.get("seed") if isinstance(data, dict) else None
        self.random = random.Random(seed)

    @command("roll", aliases=("dice",), help="roll [N]dM: roll N dice of M sides (1d6)")
    def roll(self, ctx: Context) -> str:
        spec = ctx.argv[0] if ctx.argv else "1d6"
        match = _DICE.match(spec)
        if match is None:
            return f"{ctx.nick}: I roll dice like 2d6, not {spec[:20]!r}"
        count = int(match.group(1) or 1)
        sides = int(match.group(2))
        if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES):
            return f"{ctx.nick}: 1 to {MAX_DICE} dice of 2 to {MAX_SIDES} sides, please"
        rolls = [self.random.randint(1, sides) for _ in range(count)]
        if count == 1:
            return f"{ctx.nick} rolled {spec}: {rolls[0]}"
        shown = " + ".join(map(str, rolls)) if count <= 10 else f"{count} dice"
        return f"{ctx.nick} rolled {spec}: {shown} = {sum(rolls)}"
