"""
An example plugin that depends on another: it ``requires`` the greeter, so
loading it loads the greeter first, unloading the greeter unloads it first,
and it reaches the greeter through a live reference that survives the
greeter's reloads. Every ``interval`` seconds (from its data) it asks all
plugins for their stats with an emit.
"""

from twisted_plugmgr import Plugin, handler


class Reporter(Plugin):
    name = "reporter"
    version = "1.0"
    longname = "Greets through the greeter and reports everyone's stats"
    license = "MIT"
    author = "twisted-plugmgr examples"
    requires = ("greeter",)

    def startService(self):
        Plugin.startService(self)
        self.greeter = self.api.plugin("greeter")  # a live reference
        interval = (self.data or {}).get("interval", 30)
        self.loop = self.api.looping_call(self.report)
        self.loop.start(interval, now=False)

    @handler("welcome")
    def welcome(self, who):
        return self.greeter.greet(who)

    def report(self):
        d = self.api.emit("stats")
        d.addCallback(lambda results: self.api.log.info("stats: {results}", results=results))
        return d

    def shutdown(self, mode, reason):
        self.loop.stop()
        return "reporter done"
