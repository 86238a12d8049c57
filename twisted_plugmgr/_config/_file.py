"""
A whole config file: L{Config}, and L{parse_config}, which reads the text
as TOML and validates each section.
"""

from __future__ import annotations

import os
import tomllib
import types
from typing import Mapping, Optional, Tuple, Union

import attr

from ._error import describe
from ._irc import IRCConfig, check_irc
from ._manager import ManagerConfig, check_manager
from ._plugins import PluginConfig, check_plugins
from ._values import Checker
from ._web import WebConfig, check_web

__all__ = ["Config", "parse_config", "TOP_KEYS"]

#: The tables a config file may have.
TOP_KEYS = ("manager", "plugins", "irc", "web")


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
    @ivar web: the C{[web]} section, or L{None} when there is none.
    """

    filename: str
    base_dir: str
    manager: ManagerConfig = attr.ib(factory=ManagerConfig)
    plugins: Mapping[str, PluginConfig] = attr.ib(
        factory=lambda: types.MappingProxyType({})
    )
    irc: Optional[IRCConfig] = None
    web: Optional[WebConfig] = None

    def enabled(self) -> Tuple[str, ...]:
        """
        The names of the enabled plugins, in file order.
        """
        return tuple(name for name, p in self.plugins.items() if p.enabled)


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
    check = Checker(filename, base_dir)
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise check.fail(None, f"expected UTF-8 text (invalid byte at offset {e.start})") \
                from None
    elif not isinstance(text, str):
        raise check.fail(None, "expected the text of a TOML file", describe(text))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise check.fail(None, f"invalid TOML: {e}") from None
    except (RecursionError, ValueError, UnicodeError) as e:
        # RecursionError: absurdly deep nesting; ValueError/UnicodeError:
        # lone surrogates and similar text that is not TOML.
        raise check.fail(None, f"invalid TOML: {type(e).__name__}: {e}") from None
    check.keys(document, TOP_KEYS)
    manager = (
        check_manager(check, document["manager"]) if "manager" in document
        else ManagerConfig()
    )
    plugins: Mapping[str, PluginConfig] = (
        check_plugins(check, document["plugins"]) if "plugins" in document
        else types.MappingProxyType({})
    )
    irc = check_irc(check, document["irc"]) if "irc" in document else None
    web = check_web(check, document["web"]) if "web" in document else None
    return Config(filename=filename, base_dir=base_dir, manager=manager,
                  plugins=plugins, irc=irc, web=web)
