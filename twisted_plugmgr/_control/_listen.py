"""
Where the control channel listens: the checks that keep a UNIX socket
private, the client endpoint that reaches a server endpoint, and the
L{ControlService} that listens while it runs.

A UNIX socket (the default) is created with mode 0600, in a directory others
cannot write to; an existing socket that still answers is never taken over,
and a stale one (left by a crash: connecting is refused) is removed. Any
other endpoint (TCP, ...) needs a shared token.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any, List, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._config import endpoint_kind, join_endpoint, split_endpoint
from ._server import ControlFactory

__all__ = [
    "ControlChannelError",
    "ControlService",
    "check_control",
    "check_unix_socket_path",
    "client_endpoint_for",
    "unix_socket_path",
]


class ControlChannelError(Exception):
    """
    The control channel cannot listen: its socket is in use, sits in a
    directory others can write to, or the endpoint is invalid.

    @ivar endpoint: the endpoint string.
    @ivar reason: why, in words.
    """

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"control channel {endpoint!r}: {reason}")


def check_unix_socket_path(path: str, allow_shared_dir: bool = False) -> None:
    """
    Make C{path} ready for a control socket, or refuse.

    Refuses a directory that others can write to (unless
    C{allow_shared_dir}), a path that exists and is not a socket, and a
    socket that answers (another manager owns it). Removes a stale socket
    (connecting is refused). Synchronous but never blocks: the probe is a
    non-blocking connect on a local socket.

    @raise ControlChannelError: saying why.
    """
    endpoint = f"unix:path={path}"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)
    except OSError as e:
        raise ControlChannelError(endpoint, f"directory {directory}: {e.strerror}") from None
    if not allow_shared_dir:
        _check_private_directory(endpoint, directory, st)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ControlChannelError(endpoint, f"{path}: {e.strerror}") from None
    if not stat.S_ISSOCK(existing.st_mode):
        raise ControlChannelError(endpoint, f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        code = probe.connect_ex(path)
    finally:
        probe.close()
    if code == errno.ECONNREFUSED:
        os.unlink(path)
        Logger(namespace=__name__).info(
            "control: removed stale socket {path} (nothing answered)", path=path
        )
    elif code == errno.ENOENT:
        return
    else:
        # Connected (0), or busy (EAGAIN): someone is serving there.
        raise ControlChannelError(
            endpoint, f"{path} is in use by a running process; not taking it over"
        )


def check_control(description: str, allow_shared_dir: bool = False) -> None:
    """
    Check, before anything starts, that the control endpoint
    C{description} can be listened on: for a UNIX socket, what
    L{check_unix_socket_path} checks (a stale socket is removed); other
    endpoints are only tried when listening.

    @raise ControlChannelError: saying why not.
    """
    if endpoint_kind(description) != "unix":
        return
    path = unix_socket_path(description)
    if not path:
        raise ControlChannelError(description, "no socket path")
    check_unix_socket_path(path, allow_shared_dir)


def _check_private_directory(endpoint: str, directory: str, st: os.stat_result) -> None:
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlChannelError(
            endpoint,
            f"directory {directory} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}); choose another place, or set "
            "manager.allow_shared_dir = true",
        )
    if st.st_uid not in (os.getuid(), 0):
        raise ControlChannelError(
            endpoint,
            f"directory {directory} belongs to another user (uid {st.st_uid}); choose "
            "another place, or set manager.allow_shared_dir = true",
        )


def unix_socket_path(description: str) -> Optional[str]:
    """
    The socket path of a C{unix:} endpoint string (server or client
    syntax: C{unix:PATH}, C{unix:address=PATH} or C{unix:path=PATH}), or
    L{None} if it has none or is not a C{unix:} endpoint.
    """
    if endpoint_kind(description) != "unix":
        return None
    kind, args, kwargs = split_endpoint(description)
    return kwargs.get("path") or kwargs.get("address") or (args[0] if args else None)


def client_endpoint_for(server: str) -> str:
    """
    The client endpoint string that reaches the server endpoint C{server}
    from this host (C{unix:} and C{tcp:}/C{tcp6:} only).

    @raise ValueError: for other kinds of endpoint.
    """
    kind, args, kwargs = split_endpoint(server)
    kind = kind.lower()
    if kind == "unix":
        path = unix_socket_path(server)
        if path is None:
            raise ValueError(f"{server!r} has no socket path")
        return join_endpoint("unix", [], {"path": path})
    if kind in ("tcp", "tcp6"):
        port = kwargs.get("port", args[0] if args else None)
        if port is None:
            raise ValueError(f"{server!r} has no port")
        interface = kwargs.get("interface", "")
        if interface in ("", "0.0.0.0"):
            interface = "127.0.0.1" if kind == "tcp" else "::1"
        elif interface == "::":
            interface = "::1"
        return join_endpoint("tcp", [], {"host": interface, "port": port})
    raise ValueError(f"cannot tell how to reach {server!r}; give the client endpoint")


def _private_unix_endpoint(description: str, allow_shared_dir: bool) -> str:
    """
    The server endpoint string to listen on for the C{unix:} endpoint
    C{description}, once its path is checked: the path as Twisted's
    C{address}, and mode 0600 unless another is given.

    @raise ControlChannelError: if the path is unsafe or missing.
    """
    try:
        kind, args, kwargs = split_endpoint(description)
    except ValueError as e:
        raise ControlChannelError(description, str(e)) from None
    path = unix_socket_path(description)
    if not path:
        raise ControlChannelError(description, "no socket path")
    check_unix_socket_path(path, allow_shared_dir)
    # Twisted's server syntax names the path "address"; accept "path" too, as
    # clients spell it.
    kwargs.pop("path", None)
    if args:
        args = args[1:]
    kwargs["address"] = path
    kwargs.setdefault("mode", "600")
    return join_endpoint(kind, args, kwargs)


class ControlService(Service):
    """
    Listens on the control endpoint while running.

    @ivar description: the server endpoint string.
    @ivar factory: the L{ControlFactory}.
    @ivar reactor: the reactor to listen with.
    @ivar allow_shared_dir: whether a UNIX socket may sit in a directory
        others can write to.
    @ivar port: the listening port once listening, else L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        factory: ControlFactory,
        description: str,
        reactor: IReactorCore,
        allow_shared_dir: bool = False,
    ) -> None:
        kind = endpoint_kind(description)
        if kind != "unix" and not factory.token:
            raise ControlChannelError(
                description,
                "a control endpoint that is not a UNIX socket needs a token "
                "(manager.control_token or manager.control_token_file)",
            )
        self.factory = factory
        self.description = description
        self.reactor = reactor
        self.allow_shared_dir = allow_shared_dir
        self.port: Optional[IListeningPort] = None
        self._listening: Optional[Deferred[IListeningPort]] = None

    def privilegedStartService(self) -> None:
        """
        Listen (before privileges are dropped, under twistd).

        @raise ControlChannelError: if listening is impossible.
        """
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """
        Listen, unless already listening.

        @raise ControlChannelError: if listening is impossible.
        """
        Service.startService(self)
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        description = self.description
        unix = endpoint_kind(description) == "unix"
        if unix:
            description = _private_unix_endpoint(description, self.allow_shared_dir)
        try:
            endpoint = serverFromString(self.reactor, description)
        except Exception as e:
            raise ControlChannelError(
                self.description, f"invalid endpoint ({type(e).__name__}: {e})"
            ) from None
        old_umask = os.umask(0o177) if unix else None
        try:
            d: Deferred[IListeningPort] = endpoint.listen(self.factory)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        self._listening = d
        outcome: List[Any] = []

        def record(result: Any) -> Any:
            outcome.append(result)
            return result

        d.addBoth(record)
        if outcome:
            if isinstance(outcome[0], Failure):
                self._listening = None
                failure = outcome[0]
                d.addErrback(lambda _: None)
                raise ControlChannelError(
                    self.description, f"cannot listen: {failure.getErrorMessage()}"
                )
            self._listened(outcome[0])
        else:
            # An endpoint that listens later: its failure goes to the log.
            def failed(failure: Failure) -> None:
                self._listening = None
                self._log.failure("control: cannot listen on {endpoint}", failure=failure,
                                  endpoint=self.description)
            d.addCallbacks(self._listened, failed)

    def _listened(self, port: IListeningPort) -> None:
        self.port = port
        path = unix_socket_path(self.description)
        self._log.info("control: listening on {where}",
                       where=f"socket {path}" if path else self.description)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then close the connections (flushing answers).
        """
        Service.stopService(self)
        port, self.port = self.port, None
        self._listening = None
        d: Deferred[Any] = maybeDeferred(port.stopListening) if port is not None \
            else succeed(None)
        return d.addCallback(lambda _: self.factory.close_all())
