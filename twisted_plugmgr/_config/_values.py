"""
L{Checker}: the checks of single values a config file's validation is made
of (a table, its keys, a boolean, a string, a positive number, a path, an
endpoint string...). Each returns the value (converted where it says so)
or raises a L{ConfigError} naming the file and the key.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

from ._endpoints import check_client_endpoint, split_endpoint
from ._error import ConfigError, describe, key_path
from ._paths import absolute_path

__all__ = ["Checker"]


class Checker:
    """
    The value checks of one file.

    @ivar filename: the file, named in every error.
    @ivar base_dir: the directory relative paths are resolved against.
    """

    def __init__(self, filename: str, base_dir: str) -> None:
        self.filename = filename
        self.base_dir = base_dir

    def fail(self, key: Optional[str], expected: str, got: Optional[str] = None) -> ConfigError:
        """
        The error for C{key} (L{None}: the file as a whole), to raise.
        """
        return ConfigError(self.filename, key, expected, got)

    def table(self, value: Any, key: str) -> Dict[str, Any]:
        """
        C{value}, a table.
        """
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table", describe(value))
        return value

    def keys(self, table: Mapping[str, Any], allowed: Tuple[str, ...], *prefix: str) -> None:
        """
        Refuse a key of C{table} (found at the key path C{prefix}) that is
        not one of C{allowed}.
        """
        for name in table:
            if name not in allowed:
                raise self.fail(
                    key_path(*prefix, name),
                    "unknown key (expected one of: " + ", ".join(allowed) + ")",
                )

    def boolean(self, value: Any, key: str) -> bool:
        """
        C{value}, C{true} or C{false}.
        """
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false", describe(value))
        return value

    def string(self, value: Any, key: str, empty: bool = False) -> str:
        """
        C{value}, a string without NUL characters, not blank unless
        C{empty}.
        """
        if not isinstance(value, str):
            raise self.fail(key, "expected a string", describe(value))
        if not empty and not value.strip():
            raise self.fail(key, "expected a non-empty string", describe(value))
        if "\x00" in value:
            raise self.fail(key, "expected a string without NUL characters", describe(value))
        return value

    def strings(self, value: Any, key: str) -> Tuple[str, ...]:
        """
        C{value}, an array of (non-blank) strings, as a tuple.
        """
        if not isinstance(value, list):
            raise self.fail(key, "expected an array of strings", describe(value))
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))

    def positive(self, value: Any, key: str) -> float:
        """
        C{value}, a finite number above zero, as a float.
        """
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not value > 0
        ):
            raise self.fail(key, "expected a positive number", describe(value))
        return float(value)

    def positive_int(self, value: Any, key: str) -> int:
        """
        C{value}, an integer of at least 1.
        """
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, "expected a positive integer", describe(value))
        return value

    def path(self, value: Any, key: str) -> str:
        """
        C{value}, a path, made absolute against the file's directory.
        """
        return absolute_path(self.string(value, key), self.base_dir)

    def endpoint(self, value: Any, key: str) -> str:
        """
        C{value}, a string that splits as a Twisted endpoint string.
        """
        text = self.string(value, key)
        try:
            split_endpoint(text)
        except ValueError as e:
            raise self.fail(
                key, f"expected a Twisted endpoint string ({e})", describe(value)
            ) from None
        return text

    def client_endpoint(self, value: Any, key: str) -> str:
        """
        C{value}, a Twisted client endpoint string that Twisted's parser
        takes.
        """
        text = self.endpoint(value, key)
        try:
            check_client_endpoint(text)
        except ValueError as e:
            raise self.fail(
                key,
                "expected a Twisted client endpoint string such as "
                f"'tcp:irc.example.org:6667' or 'tls:irc.example.org:6697' ({e})",
                describe(value),
            ) from None
        return text
