"""
The twistd/twist drop-in of twisted-plugmgr: C{twist plugmgr --config FILE}.

A few lines on purpose: Twisted imports every drop-in to list them, so this
one only names L{twisted_plugmgr._tap}, which is imported when the plugin is
used. (There is no C{__init__.py} in C{twisted/} or C{twisted/plugins/}.)
"""

from twisted.application.service import ServiceMaker

plugmgr = ServiceMaker(
    "twisted-plugmgr",
    "twisted_plugmgr._tap",
    "Load, unload and hot-reload plugins as child services, with a control channel",
    "plugmgr",
)
