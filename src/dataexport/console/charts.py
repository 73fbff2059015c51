"""Bar charts of the console, laid out here and drawn as inline SVG by the templates (templates/_chart.html). Pure.

Drawn on the server: the pages need no chart library or script, the SVG scales to any width through its viewBox,
and each bar carries its own text (a <title>) beside a table of the same numbers for screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 720
HEIGHT = 220
LEFT = 56  # room for the value axis' labels
BOTTOM = 24  # room for the category labels
TOP = 8
GAP = 0.2  # of a slot, between bars
MAX_X_LABELS = 8
MAX_SLOT = 48  # a few bars stay bars, not slabs across the whole chart


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float
    text: str  # the value as shown


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    left: int
    baseline: float
    bars: list[Bar]
    ticks: list[Tick]
    x_labels: list[tuple[float, str]]

    @property
    def empty(self) -> bool:
        return not self.bars or all(bar.value == 0 for bar in self.bars)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (a round top for the axis)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)


def count_text(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
    if value >= 10_000:
        return f"{value / 1_000:.0f}k"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k".replace(".0k", "k")
    return f"{value:g}"


def seconds_text(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def bar_chart(
    title: str, points: Sequence[tuple[str, float]], *, text: Callable[[float], str] = count_text
) -> BarChart:
    """Bars for (label, value) points, in order; the value axis from 0 to a round top with five ticks."""
    plot_width = WIDTH - LEFT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = float(HEIGHT - BOTTOM)
    top = nice_ceiling(max((v for _, v in points), default=0.0))
    slot = min(plot_width / max(len(points), 1), MAX_SLOT)
    bars = []
    for i, (label, value) in enumerate(points):
        height = plot_height * max(value, 0.0) / top
        bars.append(
            Bar(
                x=LEFT + i * slot + slot * GAP / 2,
                y=baseline - height,
                width=slot * (1 - GAP),
                height=height,
                label=label,
                value=value,
                text=text(value),
            )
        )
    ticks = [Tick(y=baseline - plot_height * k / 4, text=text(top * k / 4)) for k in range(5)]
    every = max(1, math.ceil(len(points) / MAX_X_LABELS))
    x_labels = [(LEFT + i * slot + slot / 2, label) for i, (label, _) in enumerate(points) if i % every == 0]
    return BarChart(
        title=title, width=WIDTH, height=HEIGHT, left=LEFT, baseline=baseline, bars=bars, ticks=ticks, x_labels=x_labels
    )
