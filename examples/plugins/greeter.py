"""
An example plugin with handlers: it answers ``greet`` (a call or an emit)
with the greeting from its data, and counts who it greeted.

    manager.load("greeter", {"greeting": "hi"})
    manager.call("greeter", "greet", "alice")   # -> "hi, alice!"
"""

from twisted_plugmgr import Plugin, handler


class Greeter(Plugin):
    name = "greeter"
    version = "1.0"
    longname = "Greets people by name"
    license = "MIT"
    author = "twisted-plugmgr examples"

    def __init__(self, api, data=None):
        Plugin.__init__(self, api, data)
        self.greeting = (data or {}).get("greeting", "hello")
        # Set up state in the constructor: on a reload, set_state() is
        # called after the constructor and before startService().
        self.greeted = {}

    def startService(self):
        Plugin.startService(self)
        self.api.log.info("greeter ready with {greeting!r}", greeting=self.greeting)

    @handler()
    def greet(self, who):
        self.greeted[who] = self.greeted.get(who, 0) + 1
        return f"{self.greeting}, {who}!"

    @handler("stats")
    def report(self):
        return {"greeter": dict(self.greeted)}

    # Kept across reloads: edit the greeting above, and the counts survive.
    def get_state(self):
        return self.greeted

    def set_state(self, state):
        self.greeted = dict(state)

    def shutdown(self, mode, reason):
        return f"greeter greeted {sum(self.greeted.values())} times"
