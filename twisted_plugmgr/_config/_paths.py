"""
Paths in a config file: relative to the file's directory, C{~} expanded.
"""

from __future__ import annotations

import os

__all__ = ["absolute_path"]


def absolute_path(path: str, base_dir: str) -> str:
    """
    C{path} made absolute against C{base_dir} (after expanding C{~}), and
    normalised.
    """
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))
