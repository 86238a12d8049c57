"""
Twisted endpoint strings as plain text: split and join them, the type of
one, make a UNIX socket path absolute, the default control endpoint, and a
check that a client endpoint string parses (against a stand-in reactor: the
endpoint built is thrown away).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Tuple

from twisted.internet.interfaces import IReactorPluggableNameResolver
from zope.interface import implementer

from ._paths import absolute_path

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "split_endpoint",
    "join_endpoint",
    "endpoint_kind",
    "resolve_unix_endpoint",
    "default_control",
    "check_client_endpoint",
    "check_server_endpoint",
]

#: The file name of the default control socket, next to the config file.
DEFAULT_SOCKET_NAME = "plugmgr.sock"


def split_endpoint(description: str) -> Tuple[str, List[str], Dict[str, str]]:
    """
    Split a Twisted endpoint string into its type, positional arguments and
    keyword arguments, following Twisted's rules (C{:} separates, C{=}
    names, a backslash escapes the next character).

    @raise ValueError: for an empty description.
    """
    parts: List[str] = []
    current: List[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind = _unescape(parts[0])
    if not kind:
        raise ValueError("an endpoint string starts with its type, such as 'unix:' or 'tcp:'")
    args: List[str] = []
    kwargs: Dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = _split_unescaped(part, "=")
        if sep:
            kwargs[_unescape(key)] = _unescape(value)
        else:
            args.append(_unescape(part))
    return kind, args, kwargs


def _split_unescaped(text: str, sep: str) -> Tuple[str, str, str]:
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            return text[:index], sep, text[index + 1 :]
    return text, "", ""


def _unescape(text: str) -> str:
    out: List[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def join_endpoint(kind: str, args: List[str], kwargs: Mapping[str, str]) -> str:
    """
    The inverse of L{split_endpoint}.
    """
    parts = [_escape(kind)] + [_escape(a) for a in args]
    parts += [f"{_escape(k)}={_escape(v)}" for k, v in kwargs.items()]
    return ":".join(parts)


def endpoint_kind(description: str) -> str:
    """
    The type of an endpoint string, lower case (C{"unix"}, C{"tcp"}, ...).
    """
    return _unescape(_split_unescaped(description, ":")[0]).strip().lower()


def resolve_unix_endpoint(description: str, base_dir: str) -> str:
    """
    Make the socket path of a C{unix:} endpoint string absolute, relative
    to C{base_dir}; return any other endpoint string unchanged.
    """
    if endpoint_kind(description) != "unix":
        return description
    kind, args, kwargs = split_endpoint(description)
    if "path" in kwargs or "address" in kwargs:
        for name in ("path", "address"):
            if name in kwargs:
                kwargs[name] = absolute_path(kwargs[name], base_dir)
    elif args:
        args[0] = absolute_path(args[0], base_dir)
    return join_endpoint(kind, args, kwargs)


def default_control(base_dir: str) -> str:
    """
    The default control endpoint: a UNIX socket named L{DEFAULT_SOCKET_NAME}
    in C{base_dir}.
    """
    return join_endpoint(
        "unix", [], {"path": os.path.join(os.path.abspath(base_dir), DEFAULT_SOCKET_NAME)}
    )


@implementer(IReactorPluggableNameResolver)
class _StandInReactor:
    """
    What an endpoint parser is given instead of a reactor when a string is
    only checked: the endpoint it builds is thrown away, never used.

    It provides L{IReactorPluggableNameResolver} only so that
    C{HostnameEndpoint} (C{tls:} strings) takes it without a deprecation
    warning; no name is ever resolved with it.
    """

    nameResolver: Any = None

    def installNameResolver(self, resolver: Any) -> Any:
        """
        Keep C{resolver} (never used) and return the previous one.
        """
        previous, self.nameResolver = self.nameResolver, resolver
        return previous


def check_client_endpoint(description: str) -> None:
    """
    Parse C{description} as Twisted's C{clientFromString} does, against a
    stand-in reactor, and throw the endpoint away.

    @raise ValueError: saying what is wrong with it, whatever the parser
        raised (a missing port is a C{TypeError} there, an unknown type a
        C{ValueError}, a missing TLS library an C{ImportError}...).
    """
    from twisted.internet.endpoints import clientFromString

    try:
        clientFromString(_StandInReactor(), description)
    except Exception as e:
        if endpoint_kind(description) in ("tls", "ssl") and not _have_tls():
            raise ValueError(
                "TLS needs pyOpenSSL and service_identity (pip install 'twisted[tls]')"
            ) from None
        raise ValueError(f"{type(e).__name__}: {e}"[:200]) from None


def check_server_endpoint(description: str) -> None:
    """
    Parse C{description} as Twisted's C{serverFromString} does, against a
    stand-in reactor, and throw the endpoint away (nothing listens).

    @raise ValueError: saying what is wrong with it.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(_StandInReactor(), description)
    except Exception as e:
        raise ValueError(f"{type(e).__name__}: {e}"[:200]) from None


def _have_tls() -> bool:
    try:
        import twisted.internet.ssl  # noqa: F401
    except ImportError:
        return False
    return True
