"""
A tour of twisted-plugmgr in one run: load the example plugins, address them
by name, reload one after changing its code, and shut down in stages.

    python examples/demo.py
"""

import os
import shutil
import sys
import tempfile

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, textFileLogObserver

from twisted_plugmgr import PluginManager

HERE = os.path.dirname(os.path.abspath(__file__))


async def main(reactor):
    work = tempfile.mkdtemp(prefix="plugmgr-demo-")
    try:
        plugins = os.path.join(work, "plugins")
        shutil.copytree(os.path.join(HERE, "plugins"), plugins)
        manager = PluginManager(paths=[plugins], reactor=reactor)
        def show(event):
            details = [str(v) for v in (event.plugin, event.quit_message, event.count) if v]
            print("  event:", event.kind, *details)

        manager.register(show)
        manager.startService()

        print("load reporter (loads greeter first):")
        await manager.load("reporter", {"interval": 60})
        await manager.load("archiver")
        print("call greeter.greet:", await manager.call("greeter", "greet", "alice"))
        print("call reporter.welcome:", await manager.call("reporter", "welcome", "bob"))
        print("emit stats:", await manager.emit("stats"))
        manager.post("archiver", "archive", "a message")

        print("edit greeter.py and reload it (state carried over):")
        path = os.path.join(plugins, "greeter.py")
        with open(path) as f:
            source = f.read()
        with open(path, "w") as f:
            f.write(source.replace('version = "1.0"', 'version = "1.1"')
                          .replace('get("greeting", "hello")', 'get("greeting", "howdy")'))
        await manager.reload("greeter")
        print("call reporter.welcome:", await manager.call("reporter", "welcome", "carol"))
        print("emit stats:", await manager.emit("stats"))

        print("plugin table:")
        for name, info in manager.plugin_table().items():
            print(f"  {name:10} {info.version:5} {info.state.value:8} {info.longname}")

        print("shutdown (lazy: the archiver takes its time):")
        await manager.shutdown("lazy")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if "-v" in sys.argv:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
