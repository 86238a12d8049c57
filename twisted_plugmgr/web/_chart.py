"""
Each plugin's handler time over the last minutes: samples of its busy
time taken at a fixed interval, and the small inline SVG chart drawn from
them.
"""

from __future__ import annotations

import collections
from typing import Deque, Dict, Iterable, List, Mapping, Tuple

__all__ = ["Samples", "svg_chart"]

#: The chart's size, in CSS pixels.
WIDTH, HEIGHT = 160, 32


class Samples:
    """
    The handler time of each plugin per interval, for the last C{keep}
    intervals.

    @param keep: how many intervals are kept.
    """

    def __init__(self, keep: int = 150) -> None:
        self.keep = keep
        self._last: Dict[str, float] = {}
        self._series: Dict[str, Deque[float]] = {}

    def sample(self, busy: Mapping[str, float]) -> None:
        """
        Take one sample: C{busy} is plugin -> its busy time so far, in
        seconds. A plugin gone is forgotten; a new one starts at zero.
        """
        for name in list(self._series):
            if name not in busy:
                del self._series[name]
                del self._last[name]
        for name, total in busy.items():
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = collections.deque(maxlen=self.keep)
                previous = total
            else:
                previous = self._last[name]
            series.append(max(0.0, total - previous))
            self._last[name] = total

    def series(self, name: str) -> Tuple[float, ...]:
        """
        Plugin C{name}'s handler time per interval, oldest first (empty if
        never sampled).
        """
        return tuple(self._series.get(name, ()))


def svg_chart(values: Iterable[float], keep: int, title: str) -> str:
    """
    An inline SVG chart of C{values} (seconds per interval; at most
    C{keep} of them, the newest on the right), titled C{title} (already
    escaped for HTML).
    """
    points: List[float] = list(values)[-keep:] if keep > 0 else []
    top = max(points) if points else 0.0
    step = WIDTH / max(1, keep - 1)
    start = WIDTH - step * (len(points) - 1) if points else WIDTH
    coords = []
    for i, value in enumerate(points):
        y = HEIGHT - 1 - (value / top * (HEIGHT - 3) if top > 0 else 0.0)
        coords.append(f"{start + i * step:.1f},{y:.1f}")
    line = ""
    if len(coords) > 1:
        area = f"{coords[0].split(',')[0]},{HEIGHT - 1} " + " ".join(coords) + \
            f" {coords[-1].split(',')[0]},{HEIGHT - 1}"
        line = (f'<polygon fill="currentColor" fill-opacity="0.15" stroke="none" '
                f'points="{area}"/>'
                f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" '
                f'points="{" ".join(coords)}"/>')
    return (f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{title}"><title>{title}</title>'
            f'<line x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}" stroke="#ccc"/>'
            f'{line}</svg>')
