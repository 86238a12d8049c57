"""
What travels between the manager and an isolated plugin's worker: the two
AMP commands, the argument type that carries pickles of any size, and how
values and errors are pickled and rebuilt.

Everything crosses pickled: the operator trusts the plugin's code (the
worker runs it), and the worker trusts the manager that started it. A value
that cannot be pickled fails that one request, with an error saying what it
was.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.protocols import amp
from twisted.python.failure import Failure

import twisted

from .. import _errors
from .._errors import PluginError, RemoteError

__all__ = ["Chunks", "Request", "Notify", "dumps", "loads", "read", "NotImportedHere",
           "encode_failure",
           "decode_failure", "RemoteFailure", "CHUNK", "NO_STATE_MARK"]

#: What C{get_state} answers for a plugin without one.
NO_STATE_MARK = "__plugmgr_no_state__"


#: The largest value of one AMP key is 65535 bytes: pickles are cut below it.
CHUNK = 60000


class Chunks(amp.Argument):
    """
    Bytes of any length, carried in as many AMP keys as needed
    (C{name}, C{name.1}, C{name.2}...).
    """

    def fromBox(self, name: bytes, strings: Dict[bytes, bytes], objects: Dict[str, Any],
                proto: Any) -> None:
        """
        Join the pieces of C{name} into C{objects}.
        """
        parts: List[bytes] = [strings.get(name, b"")]
        i = 1
        while True:
            key = name + b".%d" % i
            piece = strings.get(key)
            if piece is None:
                break
            parts.append(piece)
            i += 1
        objects[name.decode("ascii")] = b"".join(parts)

    def toBox(self, name: bytes, strings: Dict[bytes, bytes], objects: Dict[str, Any],
              proto: Any) -> None:
        """
        Cut C{objects[name]} into pieces under C{name}, C{name.1}...
        """
        value: bytes = objects[name.decode("ascii")]
        strings[name] = value[:CHUNK]
        for i, start in enumerate(range(CHUNK, len(value), CHUNK), 1):
            strings[name + b".%d" % i] = value[start:start + CHUNK]


class Request(amp.Command):
    """
    One request, either way: C{p} is the pickle of C{(op, value)}, C{op}
    naming what is asked. The answer's C{p} is the pickle of C{(True,
    result)} or C{(False, encoded error)}. (One key each way: AMP parses
    every key as two strings, and a call is two boxes.)
    """

    arguments = [(b"p", Chunks())]
    response = [(b"p", Chunks())]


class Notify(amp.Command):
    """
    A one-way message (a post, a log event, a report): C{p} is the pickle
    of C{(op, value)}; no answer.
    """

    arguments = [(b"p", Chunks())]
    requiresAnswer = False


def dumps(value: Any) -> bytes:
    """
    C{value} pickled (highest protocol).

    @raise pickle.PicklingError: or anything its C{__reduce__} raises.
    """
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    """
    The value pickled in C{data}, as a worker reads what the manager sends:
    importing what it names.
    """
    return pickle.loads(data)


class NotImportedHere(pickle.UnpicklingError):
    """
    A pickle from a worker names a class of a module the manager has not
    imported (and that is not of the standard library): reading it would
    run code of that module, an isolated plugin's perhaps, in the manager.

    @ivar module: the module.
    @ivar qualname: the name of the class (or function) in it.
    """

    def __init__(self, module: str, qualname: str) -> None:
        super().__init__(f"it holds a {module}.{qualname}, and the manager does not import "
                         f"{module} (an isolated plugin's code runs only in its worker)")
        self.module = module
        self.qualname = qualname


class _ManagerUnpickler(pickle.Unpickler):
    """
    Unpickles what a worker sends without importing anything new, but the
    standard library.
    """

    def find_class(self, module: str, name: str) -> Any:
        """The class C{name} of C{module}, if C{module} may be read here."""
        if module not in sys.modules and module.partition(".")[0] not in sys.stdlib_module_names:
            raise NotImportedHere(module, name)
        return super().find_class(module, name)


def read(data: bytes) -> Any:
    """
    The value pickled in C{data}, as the manager reads what a worker sends:
    its classes must be of modules the manager has imported already, or of
    the standard library, so that reading a worker's answer never imports
    an isolated plugin's code into the manager.

    @raise NotImportedHere: naming the class that is not.
    """
    return _ManagerUnpickler(io.BytesIO(data)).load()


#: An encoded error: (the pickle of the exception or None, the qualified
#: name of its type, its message, the traceback text, and, for a
#: PluginError of this package, L{Plugmgr}).
Encoded = Tuple[Optional[bytes], str, str, str, Optional[Tuple[Any, ...]]]

#: What travels of a PluginError of this package: (class name, plugin,
#: detail, its other attributes that pickle (C{vars(exc)}: a
#: L{CallTimedOut}'s handler and seconds, a L{PluginCrashed}'s exit code
#: and signal...), and its cause, encoded, or None).
Plugmgr = Tuple[str, Any, str, Dict[str, Any], Optional[Encoded]]

#: How deep a chain of causes is encoded (the rest is left out).
_DEPTH = 8

#: The attributes of a PluginError that travel as (plugin, detail, cause).
_CARRIED = ("plugin", "detail", "failure")


#: Where Twisted's and twisted-plugmgr's own code live (their frames are
#: left out of a plugin's traceback).
_FRAMEWORK = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (twisted.__file__ or "", os.path.dirname(os.path.abspath(__file__)))
)


def _framework(filename: str) -> bool:
    if filename.startswith("<frozen importlib"):  # the import system
        return True
    return os.path.abspath(filename).startswith(_FRAMEWORK)


def plugin_traceback(failure: Failure, type_name: str, message: str) -> str:
    """
    The traceback of C{failure} as text, without the frames of Twisted, of
    twisted-plugmgr and of the import system (what the plugin's author
    wrote is what is shown).
    """
    import linecache

    lines = ["Traceback (most recent call last):"]
    for function, filename, lineno, _, _ in failure.frames:
        if _framework(filename):
            continue
        lines.append(f'  File "{filename}", line {lineno}, in {function}')
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    lines.append(f"{type_name}: {message}")
    return "\n".join(lines) + "\n"


def encode_failure(failure: Failure, _depth: int = 0) -> Encoded:
    """
    C{failure} in a form that always pickles: the exception itself when it
    pickles and unpickles, its type, message and traceback as text always;
    for a L{PluginError} of this package, its attributes and its cause
    (what the plugin's code raised, with the plugin's own traceback).
    """
    exc = failure.value
    cls = type(exc)
    type_name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except BaseException:
        message = "<an error whose message cannot be shown>"
    try:
        text = plugin_traceback(failure, type_name, message)
    except BaseException:
        text = f"{type_name}: {message}\n"
    plugmgr: Optional[Plugmgr] = None
    pickled: Optional[bytes] = None
    if isinstance(exc, PluginError) and getattr(_errors, cls.__name__, None) is cls:
        plugin = exc.plugin if isinstance(exc.plugin, (str, type(None))) else repr(exc.plugin)
        cause = exc.failure
        encoded_cause: Optional[Encoded] = None
        if isinstance(cause, Failure) and _depth < _DEPTH:
            encoded_cause = encode_failure(cause, _depth + 1)
        plugmgr = (cls.__name__, plugin, str(exc.detail), _plain_attributes(exc), encoded_cause)
    else:
        try:
            pickled = dumps(exc)
            loads(pickled)
        except BaseException:
            pickled = None
    return pickled, type_name, message, text, plugmgr


def _plain_attributes(exc: BaseException) -> Dict[str, Any]:
    """
    The attributes of C{exc} (other than its plugin, detail and cause)
    whose values pickle and unpickle.
    """
    kept: Dict[str, Any] = {}
    try:
        attributes = dict(vars(exc))
    except TypeError:
        return kept
    for key, value in attributes.items():
        if key in _CARRIED or not isinstance(key, str):
            continue
        try:
            loads(dumps(value))
        except BaseException:
            continue
        kept[key] = value
    return kept


class RemoteFailure(Failure):
    """
    A L{Failure} of an exception raised in a worker: its traceback is the
    worker's (the plugin author's code), as text.

    @ivar remote_traceback: the traceback text from the worker.
    """

    remote_traceback = ""

    def getTraceback(self, elideFrameworkCode: int = 0, detail: str = "default") -> str:
        """The worker's traceback, headed by where it came from."""
        return "(in the plugin's worker process)\n" + self.remote_traceback

    def printTraceback(self, file: Any = None, elideFrameworkCode: bool = False,
                       detail: str = "default") -> None:
        """Write the worker's traceback to C{file} (standard error by default)."""
        import sys

        (file if file is not None else sys.stderr).write(self.getTraceback())


def _remote(exc: BaseException, text: str) -> Failure:
    failure = RemoteFailure(exc)
    failure.remote_traceback = text
    return failure


def decode_failure(plugin: str, encoded: Encoded,
                   unpickle: Callable[[bytes], Any] = read) -> Failure:
    """
    The Failure of an error encoded by L{encode_failure}: the same exception
    type when it unpickles here, a L{RemoteError} with the remote traceback
    otherwise. A L{PluginError} of this package keeps its class, its plugin,
    its message and its plain attributes; its cause is decoded in turn (the
    plugin's own traceback, from the worker), or the remote traceback.

    @param unpickle: how the exception is unpickled: L{read} in the manager
        (the default: an exception class of a module it has not imported
        arrives as a L{RemoteError}), L{loads} in a worker.
    """
    pickled, type_name, message, text, plugmgr = encoded
    remote = RemoteError(plugin, type_name, message, text)
    if plugmgr is not None:
        name, about, detail, attributes, cause = plugmgr
        cls = getattr(_errors, name, PluginError)
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        for key, value in attributes.items():
            try:
                setattr(error, key, value)
            except BaseException:  # a read-only property
                pass
        error.plugin, error.detail = about, detail
        error.failure = (decode_failure(plugin, cause, unpickle) if cause is not None
                         else _remote(remote, text))
        return _remote(error, text)
    if pickled is not None:
        try:
            exc = unpickle(pickled)
        except BaseException:
            exc = None
        if isinstance(exc, BaseException):
            try:
                exc.remote_traceback = text  # type: ignore[attr-defined]
            except BaseException:  # __slots__, a read-only property
                pass
            return _remote(exc, text)
    return _remote(remote, text)
