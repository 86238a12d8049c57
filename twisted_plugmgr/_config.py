"""
The configuration file: its model and its validation.

Pure code: L{parse_config} takes the text of a TOML file (bytes or str) and
the file's name, and returns a frozen L{Config} or raises L{ConfigError}.
Nothing here touches the reactor or the network (paths are resolved as
strings, relative to the directory of the config file); whatever the input,
the only exception that comes out is L{ConfigError}. The one exception to
"pure": the C{[irc] server} string is checked by Twisted's own endpoint
parser (against a stand-in reactor), which reads the certificate files a
TLS string names and, for an endpoint type Twisted does not know itself,
looks through the C{twisted.plugins} drop-ins.

The file::

    [manager]
    packages = ["myapp.plugins"]          # dotted package names
    paths = ["plugins"]                   # directories, relative to this file
    watch = true
    control = "unix:path=plugmgr.sock"    # any Twisted server endpoint string
    shutdown_mode = "smart"
    deadlines = { immediate = 1, smart = 10, lazy = 120 }
    start_deadline = 30
    control_token_file = "token"          # required for non-UNIX endpoints
    allow_shared_dir = false

    [plugins.hello]
    enabled = true
    data = { greeting = "hi" }

    [irc]
    server = "tcp:irc.example.org:6667"
    nick = "plugbot"
    channels = ["#plugmgr"]
"""

from __future__ import annotations

import keyword
import math
import os
import tomllib
import types
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import attr
from twisted.internet.interfaces import IReactorPluggableNameResolver
from zope.interface import implementer

from ._errors import InvalidName
from ._lifecycle import DEFAULT_DEADLINES, ShutdownMode, coerce_deadlines
from ._source import check_name

__all__ = [
    "ConfigError",
    "Config",
    "ManagerConfig",
    "PluginConfig",
    "IRCConfig",
    "FloodConfig",
    "parse_config",
    "split_endpoint",
    "join_endpoint",
    "endpoint_kind",
    "check_client_endpoint",
    "resolve_unix_endpoint",
    "default_control",
    "DEFAULT_SOCKET_NAME",
]

#: The file name of the default control socket, next to the config file.
DEFAULT_SOCKET_NAME = "plugmgr.sock"


class ConfigError(Exception):
    """
    A configuration file (or a command-line option that overrides it) is
    invalid.

    @ivar filename: the file concerned (or a description such as
        C{"<command line>"}).
    @ivar key: the dotted key path of the offending value (such as
        C{"plugins.hello.enabled"}), or L{None} for the file as a whole.
    @ivar expected: what was expected there, in words.
    @ivar got: a short representation of what was found instead, or L{None}.
    """

    def __init__(
        self,
        filename: str,
        key: Optional[str],
        expected: str,
        got: Optional[str] = None,
    ) -> None:
        self.filename = filename
        self.key = key
        self.expected = expected
        self.got = got
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.filename if self.key is None else f"{self.filename}: {self.key}"
        text = f"{where}: {self.expected}"
        if self.got is not None:
            text += f", got {self.got}"
        return text


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class PluginConfig:
    """
    One C{[plugins.NAME]} section.

    @ivar name: the plugin's name (a Python identifier).
    @ivar enabled: whether the plugin is loaded at start (default true).
    @ivar data: what the plugin is constructed with (any TOML value;
        L{None} when the section has no C{data}).
    """

    name: str
    enabled: bool = True
    data: Any = None


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class ManagerConfig:
    """
    The C{[manager]} section.

    @ivar packages: dotted names of the packages plugins are found in.
    @ivar paths: absolute directories plugins are found in.
    @ivar watch: whether to reload plugins when their source changes.
    @ivar control: the control channel's server endpoint string (UNIX
        socket paths already resolved against the config file's directory),
        or L{None} for the default (L{default_control}).
    @ivar shutdown_mode: the mode of the shutdown on SIGTERM/SIGINT.
    @ivar deadlines: seconds per L{ShutdownMode}, defaults merged in.
    @ivar start_deadline: seconds a plugin's start may take, or L{None} for
        the manager's default.
    @ivar control_token: the shared secret a non-UNIX control connection
        must present first, or L{None}.
    @ivar control_token_file: an absolute path to a file holding that
        secret, or L{None}.
    @ivar allow_shared_dir: allow the control socket in a directory that
        other users can write to.
    """

    packages: Tuple[str, ...] = ()
    paths: Tuple[str, ...] = ()
    watch: bool = False
    control: Optional[str] = None
    shutdown_mode: ShutdownMode = ShutdownMode.SMART
    deadlines: Mapping[ShutdownMode, float] = attr.ib(
        factory=lambda: types.MappingProxyType(dict(DEFAULT_DEADLINES))
    )
    start_deadline: Optional[float] = None
    control_token: Optional[str] = None
    control_token_file: Optional[str] = None
    allow_shared_dir: bool = False


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class FloodConfig:
    """
    Outgoing flood control of the IRC bot (a token bucket).

    @ivar rate: lines per second sent once the burst is spent.
    @ivar burst: lines that may be sent at once.
    """

    rate: float = 1.0
    burst: int = 4


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class IRCConfig:
    """
    The C{[irc]} section: the IRC bot.

    @ivar server: a Twisted client endpoint string (C{"tcp:host:6667"},
        C{"tls:host:6697"}).
    @ivar nick: the bot's nickname.
    @ivar channels: channels to join.
    @ivar owners: hostmasks (C{nick!user@host}, wildcards allowed) of the
        bot's owners.
    @ivar prefix: what starts a command in a channel (default C{"!"}).
    @ivar flood: outgoing flood control.
    @ivar data_dir: an absolute directory for the bot's data, or L{None}.
    @ivar password: the server password, or L{None}.
    @ivar username: the user name, or L{None}.
    @ivar realname: the real name, or L{None}.
    """

    server: str
    nick: str
    channels: Tuple[str, ...] = ()
    owners: Tuple[str, ...] = ()
    prefix: str = "!"
    flood: FloodConfig = attr.ib(factory=FloodConfig)
    data_dir: Optional[str] = None
    password: Optional[str] = None
    username: Optional[str] = None
    realname: Optional[str] = None


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True)
class Config:
    """
    A whole, validated configuration file.

    @ivar filename: the file it was read from.
    @ivar base_dir: the absolute directory relative paths were resolved
        against (the file's directory).
    @ivar manager: the C{[manager]} section.
    @ivar plugins: name -> L{PluginConfig}, in file order.
    @ivar irc: the C{[irc]} section, or L{None} when there is none.
    """

    filename: str
    base_dir: str
    manager: ManagerConfig = attr.ib(factory=ManagerConfig)
    plugins: Mapping[str, PluginConfig] = attr.ib(
        factory=lambda: types.MappingProxyType({})
    )
    irc: Optional[IRCConfig] = None

    def enabled(self) -> Tuple[str, ...]:
        """
        The names of the enabled plugins, in file order.
        """
        return tuple(name for name, p in self.plugins.items() if p.enabled)


# --- endpoint strings -------------------------------------------------------


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
                kwargs[name] = _absolute(kwargs[name], base_dir)
    elif args:
        args[0] = _absolute(args[0], base_dir)
    return join_endpoint(kind, args, kwargs)


def default_control(base_dir: str) -> str:
    """
    The default control endpoint: a UNIX socket named L{DEFAULT_SOCKET_NAME}
    in C{base_dir}.
    """
    return join_endpoint(
        "unix", [], {"path": os.path.join(os.path.abspath(base_dir), DEFAULT_SOCKET_NAME)}
    )


def _absolute(path: str, base_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


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


def _have_tls() -> bool:
    try:
        import twisted.internet.ssl  # noqa: F401
    except ImportError:
        return False
    return True


# --- validation -------------------------------------------------------------


def _key(*parts: str) -> str:
    """
    A dotted key path, quoting the parts that are not bare TOML keys.
    """
    out = []
    for part in parts:
        if part and all(c.isascii() and (c.isalnum() or c in "_-") for c in part):
            out.append(part)
        else:
            out.append('"' + part.encode("unicode_escape").decode("ascii").replace('"', '\\"')
                       + '"')
    return ".".join(out)


def _got(value: Any) -> str:
    name = {
        bool: "a boolean", int: "an integer", float: "a float", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


class _Checker:
    """
    The validation of one file; every error names the file and the key.
    """

    def __init__(self, filename: str, base_dir: str) -> None:
        self.filename = filename
        self.base_dir = base_dir

    def fail(self, key: Optional[str], expected: str, got: Optional[str] = None) -> ConfigError:
        return ConfigError(self.filename, key, expected, got)

    def table(self, value: Any, key: str) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table", _got(value))
        return value

    def keys(self, table: Mapping[str, Any], allowed: Tuple[str, ...], *prefix: str) -> None:
        for name in table:
            if name not in allowed:
                raise self.fail(
                    _key(*prefix, name),
                    "unknown key (expected one of: " + ", ".join(allowed) + ")",
                )

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false", _got(value))
        return value

    def string(self, value: Any, key: str, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "expected a string", _got(value))
        if not empty and not value.strip():
            raise self.fail(key, "expected a non-empty string", _got(value))
        if "\x00" in value:
            raise self.fail(key, "expected a string without NUL characters", _got(value))
        return value

    def strings(self, value: Any, key: str) -> Tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, "expected an array of strings", _got(value))
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))

    def positive(self, value: Any, key: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not value > 0
        ):
            raise self.fail(key, "expected a positive number", _got(value))
        return float(value)

    def positive_int(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, "expected a positive integer", _got(value))
        return value

    def path(self, value: Any, key: str) -> str:
        return _absolute(self.string(value, key), self.base_dir)

    def mode(self, value: Any, key: str) -> ShutdownMode:
        if not isinstance(value, str):
            raise self.fail(key, "expected one of 'immediate', 'smart', 'lazy'", _got(value))
        try:
            return ShutdownMode.coerce(value)
        except ValueError:
            raise self.fail(
                key, "expected one of 'immediate', 'smart', 'lazy'", _got(value)
            ) from None

    def endpoint(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            split_endpoint(text)
        except ValueError as e:
            raise self.fail(key, f"expected a Twisted endpoint string ({e})", _got(value)) from None
        return text

    def client_endpoint(self, value: Any, key: str) -> str:
        text = self.endpoint(value, key)
        try:
            check_client_endpoint(text)
        except ValueError as e:
            raise self.fail(
                key,
                "expected a Twisted client endpoint string such as "
                f"'tcp:irc.example.org:6667' or 'tls:irc.example.org:6697' ({e})",
                _got(value),
            ) from None
        return text

    # sections

    def manager(self, value: Any) -> ManagerConfig:
        section = self.table(value, "manager")
        self.keys(section, _MANAGER_KEYS, "manager")
        kw: Dict[str, Any] = {}
        if "packages" in section:
            packages = self.strings(section["packages"], "manager.packages")
            for i, package in enumerate(packages):
                if not all(_valid_name(part) for part in package.split(".")):
                    raise self.fail(
                        f"manager.packages[{i}]",
                        "expected a dotted Python package name such as 'myapp.plugins'",
                        _got(package),
                    )
            kw["packages"] = packages
        if "paths" in section:
            if not isinstance(section["paths"], list):
                raise self.fail("manager.paths", "expected an array of strings",
                                _got(section["paths"]))
            kw["paths"] = tuple(
                self.path(p, f"manager.paths[{i}]") for i, p in enumerate(section["paths"])
            )
        if "watch" in section:
            kw["watch"] = self.boolean(section["watch"], "manager.watch")
        if "control" in section:
            control = self.endpoint(section["control"], "manager.control")
            kw["control"] = resolve_unix_endpoint(control, self.base_dir)
        if "shutdown_mode" in section:
            kw["shutdown_mode"] = self.mode(section["shutdown_mode"], "manager.shutdown_mode")
        if "deadlines" in section:
            deadlines = self.table(section["deadlines"], "manager.deadlines")
            self.keys(deadlines, tuple(m.value for m in ShutdownMode), "manager", "deadlines")
            seconds = {
                mode: self.positive(deadlines[mode], f"manager.deadlines.{mode}")
                for mode in deadlines
            }
            kw["deadlines"] = types.MappingProxyType(coerce_deadlines(seconds))
        if "start_deadline" in section:
            kw["start_deadline"] = self.positive(
                section["start_deadline"], "manager.start_deadline"
            )
        if "control_token" in section:
            kw["control_token"] = self.string(section["control_token"], "manager.control_token")
        if "control_token_file" in section:
            kw["control_token_file"] = self.path(
                section["control_token_file"], "manager.control_token_file"
            )
        if "control_token" in kw and "control_token_file" in kw:
            raise self.fail(
                "manager.control_token_file",
                "expected either control_token or control_token_file, not both",
            )
        if "allow_shared_dir" in section:
            kw["allow_shared_dir"] = self.boolean(
                section["allow_shared_dir"], "manager.allow_shared_dir"
            )
        return ManagerConfig(**kw)

    def plugins(self, value: Any) -> Mapping[str, PluginConfig]:
        section = self.table(value, "plugins")
        result: Dict[str, PluginConfig] = {}
        for name, body in section.items():
            key = _key("plugins", name)
            try:
                check_name(name)
            except InvalidName:
                raise self.fail(
                    key, "invalid plugin name (expected a Python identifier such as 'hello')"
                ) from None
            body = self.table(body, key)
            self.keys(body, ("enabled", "data"), "plugins", name)
            enabled = self.boolean(body.get("enabled", True), f"{key}.enabled")
            result[name] = PluginConfig(name=name, enabled=enabled, data=body.get("data"))
        return types.MappingProxyType(result)

    def irc(self, value: Any) -> IRCConfig:
        section = self.table(value, "irc")
        self.keys(section, _IRC_KEYS, "irc")
        for required in ("server", "nick"):
            if required not in section:
                raise self.fail(f"irc.{required}", "missing (required in the [irc] section)")
        kw: Dict[str, Any] = {
            "server": self.client_endpoint(section["server"], "irc.server"),
            "nick": self.string(section["nick"], "irc.nick"),
        }
        if any(c in kw["nick"] for c in " \r\n!@:"):
            raise self.fail("irc.nick", "expected a nickname without spaces, '!', '@' or ':'",
                            _got(kw["nick"]))
        if "channels" in section:
            kw["channels"] = self.strings(section["channels"], "irc.channels")
        if "owners" in section:
            kw["owners"] = self.strings(section["owners"], "irc.owners")
        if "prefix" in section:
            kw["prefix"] = self.string(section["prefix"], "irc.prefix")
        if "flood" in section:
            flood = self.table(section["flood"], "irc.flood")
            self.keys(flood, ("rate", "burst"), "irc", "flood")
            fkw: Dict[str, Any] = {}
            if "rate" in flood:
                fkw["rate"] = self.positive(flood["rate"], "irc.flood.rate")
            if "burst" in flood:
                fkw["burst"] = self.positive_int(flood["burst"], "irc.flood.burst")
            kw["flood"] = FloodConfig(**fkw)
        if "data_dir" in section:
            kw["data_dir"] = self.path(section["data_dir"], "irc.data_dir")
        for name in ("password", "username", "realname"):
            if name in section:
                kw[name] = self.string(section[name], f"irc.{name}")
        for name in ("channels", "owners"):
            for i, item in enumerate(kw.get(name, ())):
                if any(c in item for c in " \r\n,"):
                    raise self.fail(f"irc.{name}[{i}]",
                                    "expected no spaces, commas or line breaks", _got(item))
        for name in ("password", "username", "realname", "prefix"):
            if name in kw and any(c in kw[name] for c in "\r\n"):
                raise self.fail(f"irc.{name}", "expected no line breaks", _got(kw[name]))
        return IRCConfig(**kw)


_MANAGER_KEYS = (
    "packages", "paths", "watch", "control", "shutdown_mode", "deadlines",
    "start_deadline", "control_token", "control_token_file", "allow_shared_dir",
)
_IRC_KEYS = (
    "server", "nick", "channels", "owners", "prefix", "flood", "data_dir",
    "password", "username", "realname",
)
_TOP_KEYS = ("manager", "plugins", "irc")


def parse_config(
    text: Union[bytes, str],
    filename: str,
    base_dir: Optional[str] = None,
) -> Config:
    """
    Parse and validate the text of a configuration file.

    @param text: the file's content (bytes are decoded as UTF-8).
    @param filename: the file's name, used in error messages and, unless
        C{base_dir} is given, to resolve relative paths (against its
        directory, made absolute against the current directory).
    @param base_dir: the directory relative paths are resolved against.
    @raise ConfigError: for anything invalid, naming the file, the key and
        what was expected. No other exception comes out of this function.
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(filename))
    check = _Checker(filename, base_dir)
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise check.fail(None, f"expected UTF-8 text (invalid byte at offset {e.start})") \
                from None
    elif not isinstance(text, str):
        raise check.fail(None, "expected the text of a TOML file", _got(text))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise check.fail(None, f"invalid TOML: {e}") from None
    except (RecursionError, ValueError, UnicodeError) as e:
        # RecursionError: absurdly deep nesting; ValueError/UnicodeError:
        # lone surrogates and similar text that is not TOML.
        raise check.fail(None, f"invalid TOML: {type(e).__name__}: {e}") from None
    check.keys(document, _TOP_KEYS)
    manager = check.manager(document["manager"]) if "manager" in document else ManagerConfig()
    plugins = (
        check.plugins(document["plugins"]) if "plugins" in document
        else types.MappingProxyType({})
    )
    irc = check.irc(document["irc"]) if "irc" in document else None
    return Config(filename=filename, base_dir=base_dir, manager=manager,
                  plugins=plugins, irc=irc)
