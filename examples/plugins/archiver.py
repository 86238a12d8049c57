"""
An example plugin with a slow shutdown: in ``lazy`` mode it takes its time
(two seconds) to "flush its archive" before it goes; in ``smart`` mode a
little; in ``immediate`` mode none. The manager waits for it, within the
mode's deadline.
"""

from twisted.internet.task import deferLater

from twisted_plugmgr import Plugin, ShutdownMode, handler

FLUSH_SECONDS = {ShutdownMode.IMMEDIATE: 0, ShutdownMode.SMART: 0.2, ShutdownMode.LAZY: 2.0}


class Archiver(Plugin):
    name = "archiver"
    version = "1.0"
    longname = "Keeps every message it is given, flushes them when it stops"
    license = "MIT"
    author = "twisted-plugmgr examples"

    def startService(self):
        Plugin.startService(self)
        self.entries = []

    @handler("archive")
    def archive(self, entry):
        self.entries.append(entry)
        return len(self.entries)

    def shutdown(self, mode, reason):
        seconds = FLUSH_SECONDS[mode]
        count = len(self.entries)
        self.api.log.info("flushing {count} entries in {seconds}s ({mode})",
                          count=count, seconds=seconds, mode=mode.value)
        return deferLater(self.api.reactor, seconds,
                          lambda: f"archiver flushed {count} entries ({mode.value})")
