"""
L{ConfigError}, the one exception that comes out of reading a config file,
and how its messages name a key (L{key_path}) and what was found there
(L{describe}).
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["ConfigError", "key_path", "describe"]


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


def key_path(*parts: str) -> str:
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


def describe(value: Any) -> str:
    """
    What was found instead of what was expected, in a few words: its TOML
    type and a repr cut to 60 characters (C{"a string 'yes'"}).
    """
    name = {
        bool: "a boolean", int: "an integer", float: "a float", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"
