"""
What of a failure a plugin author reads in the log: the frames of their own
code (and of the libraries it called), never the manager's internals; and
nothing but one line for an expected error (a bad name, a deadline), where
no plugin code raised.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

from twisted.python.failure import Failure

from ._errors import PluginError

__all__ = ["plugin_cause", "plugin_frames", "for_the_log"]


#: The directory of this package: frames of its private modules are the
#: manager's internals, which a plugin author's traceback leaves out.
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: Plumbing between the manager and plugin code, also left out.
_PLUMBING = (
    os.sep + os.path.join("twisted", "internet", "defer.py"),
    os.sep + os.path.join("twisted", "python", "failure.py"),
)


def _internal(filename: str) -> bool:
    """
    Whether C{filename} is the manager's own machinery: a private module of
    this package (any path part starting with C{_}; the shipped plugins,
    such as C{irc/plugins/irc_admin.py}, are plugin code), the import
    system (C{<frozen importlib...>}; other frozen modules, such as
    C{<frozen os>}, are libraries the plugin called), or the Deferred
    plumbing.
    """
    if filename.startswith("<frozen importlib"):
        return True
    if filename.endswith(_PLUMBING):
        return True
    path = os.path.abspath(filename)
    if not path.startswith(_PACKAGE):
        return False
    return any(part.startswith("_") for part in path[len(_PACKAGE):].split(os.sep))


def plugin_cause(error: BaseException) -> Optional[Failure]:
    """
    The L{Failure} of what plugin code raised under C{error}: down the
    chain of L{PluginError}s each carrying the next in C{failure}, the
    first that is not a L{PluginError}; L{None} when there is none (an
    expected error: a bad name, an unknown plugin, a deadline...).
    """
    seen = set()
    while isinstance(error, PluginError) and id(error) not in seen:
        seen.add(id(error))
        failure = error.failure
        if failure is None:
            return None
        if not isinstance(failure.value, PluginError):
            return failure
        error = failure.value
    return None


def plugin_frames(failure: Failure) -> List[Tuple[Any, ...]]:
    """
    The frames of C{failure} that are plugin code (see L{_internal}),
    outermost first, as L{Failure.frames} holds them; for a
    C{SyntaxError}, the place of the error in the plugin's file comes
    last.
    """
    frames = [f for f in failure.frames if not _internal(f[1])]
    value = failure.value
    if isinstance(value, SyntaxError) and value.filename and value.lineno:
        frames.append(("<module>", value.filename, value.lineno, (), ()))
    return frames


def _remote_traceback(failure: Failure) -> bool:
    """
    Whether C{failure} carries a traceback from an isolated plugin's worker
    (as text: it has no frames here) that shows at least one frame.
    """
    text = getattr(failure, "remote_traceback", None)
    return isinstance(text, str) and '  File "' in text  # with at least one frame


def for_the_log(failure: Failure) -> Optional[Failure]:
    """
    What to log of C{failure}: a L{Failure} whose traceback holds only
    plugin code, or L{None} when one clear line says it all.

      - For a L{PluginError}: the same error, with the frames of the plugin
        code that caused it (L{plugin_cause}); L{None} when no plugin code
        raised, or when its frames are unknown (the error's message names
        the cause already).
      - For a L{PluginError} whose cause was raised in an isolated plugin's
        worker (a failure carrying the worker's C{remote_traceback} text,
        already without the manager's frames): the same error, in a failure
        of the cause's class that shows that text as its traceback.
      - For anything else (a handler or a listener that raised): the same
        exception with the manager's frames left out; as it is when no
        other frame remains (then the fault is the manager's own).
    """
    value = failure.value
    if isinstance(value, PluginError):
        cause = plugin_cause(value)
        if cause is not None and _remote_traceback(cause):
            # Raised in an isolated plugin's worker: the same error, with the
            # worker's traceback of its cause (text: it has no frames here).
            remote = type(cause)(value, failure.type, None)
            remote.remote_traceback = cause.remote_traceback  # type: ignore[attr-defined]
            return remote
        frames = plugin_frames(cause) if cause is not None else []
        if not frames:
            return None
    else:
        frames = plugin_frames(failure)
        if not frames:
            return failure
    shown = Failure(value, failure.type, None)
    shown.cleanFailure()
    shown.frames = frames
    return shown
