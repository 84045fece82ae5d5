"""Charts as inline SVG, drawn on the server: no JavaScript library, no CDN, readable in any browser.

Two shapes cover the console: a line chart of values over time (several series, one y axis) and a
horizontal bar chart (task durations, lag per partition). Each returns a complete `<svg>` string; values
that are None (no sample yet) break the line instead of being drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def nice_max(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^n at or above `value` (axis tops that read well); 1 for nothing."""
    if value <= 0 or math.isnan(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exponent
        if top >= value * (1 - 1e-9):
            return float(top)
    return float(10 ** (exponent + 1))


def axis(value: float, ticks: int = 4) -> tuple[float, float]:
    """(top, step) of a y axis holding `value` in at most `ticks` steps of 1/2/2.5/5 x 10^n."""
    if value <= 0 or math.isnan(value):
        return 1.0, 0.25
    rough = value / ticks
    exponent = math.floor(math.log10(rough))
    step = next(m * 10**exponent for m in (1, 2, 2.5, 5, 10) if m * 10**exponent >= rough * (1 - 1e-9))
    return round(math.ceil(value / step - 1e-9) * step, 12), float(step)


def fmt(value: float) -> str:
    """A tick or bar label: short, no trailing zeros."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:.3g}k"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str,
    series: dict[str, Sequence[tuple[float, float | None]]],
    unit: str = "",
    width: int = 560,
    height: int = 220,
) -> str:
    """Each series a list of (time in seconds, value), oldest first; all share the x axis, which is labelled
    in seconds before the newest point of any series."""
    left, right, top, bottom = 52, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for points in series.values() for _, v in points if v is not None and not math.isnan(v)]
    times = [t for points in series.values() for t, _ in points]
    y_max, y_step = axis(max(values, default=0.0))
    t0, t1 = (min(times), max(times)) if len(set(times)) >= 2 else (0.0, 1.0)
    span = t1 - t0

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    parts = [_open(width, height, title), f'<text x="{left}" y="16" class="title">{escape(title)}</text>']
    for i in range(round(y_max / y_step) + 1):
        v = y_step * i
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{fmt(v)}</text>')
    for i in range(5) if values else ():
        t = t0 + span * i / 4
        ago = t1 - t
        label = "now" if ago < 0.05 else f"-{ago:.0f}s" if span >= 20 else f"-{ago:.1f}s"
        parts.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">{label}</text>')
    if unit:
        parts.append(f'<text x="12" y="{top + plot_h / 2:.0f}" transform="rotate(-90 12 {top + plot_h / 2:.0f})" '
                     f'text-anchor="middle" class="tick">{escape(unit)}</text>')  # fmt: skip
    if not values:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" class="empty">'
                     "no samples yet</text>")  # fmt: skip
    for i, (name, points) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        for run in _runs(points):
            if len(run) == 1:
                ((t, v),) = run
                parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>')
            else:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        lx = left + i * 170
        parts.append(f'<rect x="{lx}" y="{height - 12}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{lx + 14}" y="{height - 3}" class="legend">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive non-missing points: a gap in the samples is a gap in the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if v is None or math.isnan(v):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [r for r in runs if r]


def bar_chart(title: str, bars: Sequence[tuple[str, float]], unit: str = "", width: int = 560) -> str:
    """Horizontal bars, one per (label, value), in the given order, each labelled with its value."""
    row, left, top = 24, 170, 28
    height = top + row * max(len(bars), 1) + 12
    plot_w = width - left - 70
    v_max = nice_max(max((v for _, v in bars), default=0.0))
    parts = [_open(width, height, title), f'<text x="4" y="16" class="title">{escape(title)}</text>']
    if not bars:
        parts.append(f'<text x="{left}" y="{top + 14}" class="empty">nothing to show yet</text>')
    for i, (label, value) in enumerate(bars):
        y0 = top + i * row
        w = max(value / v_max * plot_w, 0.0)
        color = PALETTE[0]
        parts.append(f'<text x="{left - 8}" y="{y0 + 15}" text-anchor="end" class="tick">{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y0 + 3}" width="{w:.1f}" height="{row - 8}" fill="{color}" rx="2"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y0 + 15}" class="tick">{fmt(value)}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">')  # fmt: skip
