"""Charts as text: plotext renders, rich turns its ANSI into a Text.

plotext keeps global state, so every render holds one lock; renders run in a worker
thread. Series are downsampled to about two points per column, and the x axis is
numeric with a few hand-set UTC labels (date strings cost plotext far more).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import plotext as plt
from rich.text import Text

from pairs_tui.model import TIMEFRAMES

_LOCK = threading.Lock()
COMPACT_BELOW = 12  # rows: shorter charts are drawn without a frame


NICE_STEPS = (1.0, 2.0, 2.5, 5.0)  # tick steps, times a power of ten
Z_TICK_STEPS = (0.5, 1.0, 2.0)  # z charts: whole or half units, so the levels sit on ticks


@dataclass(frozen=True)
class Line:
    y: np.ndarray
    label: str = ""
    color: str = "cyan"
    marker: str = "hd"  # lean (monochrome) charts tell lines apart by their marker


@dataclass(frozen=True)
class Marks:
    """Points over the lines, at bar indices (a backtest's entries and exits)."""

    at: np.ndarray  # bar indices into the chart's ts_us
    y: np.ndarray
    label: str  # empty: not in the legend
    color: str
    marker: str  # one character, in colour and in lean mode alike


@dataclass(frozen=True)
class ChartSpec:
    title: str
    ts_us: np.ndarray
    lines: tuple[Line, ...]
    hlines: tuple[tuple[float, str], ...] = field(default_factory=tuple)  # (y, color)
    cursor: int | None = None  # the bar under the inspection cursor
    needs: int = 2  # bars before there are two points to draw
    steps: tuple[float, ...] = ()  # allowed y tick steps; empty: 1, 2, 2.5, 5 x 10^k
    bar_s: float = 0.0  # seconds a bar spans, for the wait estimate
    utc: bool = False  # say once that the times are UTC
    marks: tuple[Marks, ...] = ()


def ticks(lo: float, hi: float, rows: int, steps: tuple[float, ...] = ()) -> np.ndarray:
    """Round y ticks covering [lo, hi] on a plot of `rows` rows, at most one every other
    row: the outermost are the axis limits, so every tick sits on a row of its own value,
    and no two share a row (plotext would then show either, by chance)."""
    scale = max(abs(lo), abs(hi), 1e-300)
    if not hi - lo > 1e-9 * scale:  # flat to the float's last digits: a range to label
        pad = scale * 1e-3 if scale > 1e-300 else 1.0
        lo, hi = lo - pad, hi + pad
    most = max(3, rows // 2 + 1)  # a range across zero needs three to stay round
    if steps:
        candidates = list(steps)
    else:
        decade = 10.0 ** math.floor(math.log10((hi - lo) / most))
        candidates = [m * decade * 10**k for k in range(0, 3) for m in NICE_STEPS]
    for step in candidates:
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if last - first + 1 <= most:
            return np.arange(first, last + 1) * step
    # no allowed step fits: the ends, then the largest step either side of zero, then zero,
    # each only on a row of its own
    step = candidates[-1]
    low, high = math.floor(lo / step) * step, math.ceil(hi / step) * step
    kept: dict[int, float] = {}
    for v in (low, high, -step, step, 0.0):
        row = round((v - low) / (high - low) * (max(rows, 2) - 1))
        if low <= v <= high and row not in kept:
            kept[row] = v
    return np.array(sorted(kept.values()))


def tick_label(value: float, step: float) -> str:
    """As many decimals as the step needs (a power of ten past six of them: a flat
    spread's 4e-15 is not 0.000000000000004), and never a `-0`."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals) != step * 10**decimals:  # 2.5, 0.25: one more
        decimals += 1
    if decimals > 6:
        return "0" if abs(value) < step / 2 else f"{value:.1e}"
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _labels(ts_us: np.ndarray, count: int = 4) -> tuple[list[float], list[str]]:
    if len(ts_us) == 0:
        return [], []
    idx = np.linspace(0, len(ts_us) - 1, min(count, len(ts_us))).astype(int)
    fmt = "%H:%M:%S" if ts_us[-1] - ts_us[0] < 86_400_000_000 else "%m-%d %H:%M"
    names = [datetime.fromtimestamp(ts_us[i] / 1e6, UTC).strftime(fmt) for i in idx]
    return [float(i) for i in idx], names


def _step(spec: ChartSpec, width: int) -> int:
    return max(1, len(spec.ts_us) // (2 * width))


def waiting_for(spec: ChartSpec) -> str | None:
    """Why the chart cannot be drawn yet (fewer than two points), under its title, with
    how long the wait is at this bar size; or None."""
    if any(np.isfinite(line.y).sum() >= 2 for line in spec.lines):
        return None
    have = len(spec.ts_us)
    if have >= spec.needs:
        return f"{spec.title}\nCollecting data: prices have not moved yet"
    text = f"{spec.title}\nCollecting data: {have} / {spec.needs} bars"
    if spec.bar_s:
        text += f", about {_duration((spec.needs - have) * spec.bar_s)}"
        shortest, shortest_us = next(iter(TIMEFRAMES.items()))  # key 1
        if spec.bar_s > shortest_us / 1e6 and (spec.needs - have) * spec.bar_s > 60:
            text += f" - press 1 for {shortest} bars"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fingerprint(spec: ChartSpec, width: int, height: int, *, mono: bool = False) -> tuple:
    """What decides the chart's text: the points quantised to the plot's resolution, the
    axis range as labelled, the time labels. Equal fingerprints render alike, so the
    chart is neither rendered nor sent to the terminal again (the last bar's price
    moves with every trade, its dot far less often)."""
    width, height = max(width, 20), max(height, 5)
    step = _step(spec, width)
    ys = [line.y[::step] for line in spec.lines]
    levels = [y for y, _ in spec.hlines if np.isfinite(y)]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys] + [np.asarray(levels, dtype=float)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scale = 2 * height / (hi - lo) if hi > lo else 0.0  # 2: rows of a quadrant block
    pixels = tuple(np.round((y - lo) * scale).tobytes() for y in ys)
    hlines = tuple((round((y - lo) * scale), c) for y, c in spec.hlines if np.isfinite(y))
    marks = tuple(
        ((m.at // step).tobytes(), np.round((m.y - lo) * scale).tobytes(), m.marker)
        for m in spec.marks
    )
    return (
        spec.title,
        width,
        height,
        mono,
        spec.cursor,
        len(spec.ts_us),
        f"{lo:.5g}",
        f"{hi:.5g}",
        pixels,
        hlines,
        marks,
        tuple(_labels(spec.ts_us)[1]),
    )


def _y_axis(spec: ChartSpec, rows: int) -> None:
    """Round ticks at most every other row, the axis from the lowest to the highest."""
    values = [line.y[np.isfinite(line.y)] for line in spec.lines]
    values.append(np.asarray([y for y, _ in spec.hlines if np.isfinite(y)], dtype=float))
    finite = np.concatenate(values)
    if not finite.size:
        return
    marks = ticks(float(finite.min()), float(finite.max()), rows, spec.steps)
    if len(marks) < 2:
        return  # plotext's own ticks, then
    step = float(np.diff(marks).min())
    plt.ylim(float(marks[0]), float(marks[-1]))
    plt.yticks(marks.tolist(), [tick_label(v, step) for v in marks])


def render(spec: ChartSpec, width: int, height: int, *, mono: bool = False) -> Text:
    """The chart as rich Text of exactly `height` lines (or less if there is no room).

    The title is a line of its own and a short chart drops its frame: at 80x24 a chart
    has six rows, and a frame would leave two of them for the data."""
    width, height = max(width, 20), max(height, 5)
    step = _step(spec, width)
    x = np.arange(0, len(spec.ts_us), step, dtype=float)
    legend = len(spec.lines) > 1 or any(m.label for m in spec.marks)  # one line needs none
    with _LOCK:
        plt.clf()
        plt.plotsize(width, height - 1)
        plt.theme("clear" if mono else "dark")
        if height < COMPACT_BELOW:
            plt.frame(False)
        else:
            plt.xaxes(True, False)
            plt.yaxes(True, False)
        for line in spec.lines:
            y = line.y[::step]
            ok = np.isfinite(y)
            if ok.any():
                plt.plot(
                    x[ok].tolist(),
                    y[ok].tolist(),
                    label=line.label if legend else None,
                    color=None if mono else line.color,
                    marker=line.marker if mono else "hd",
                )
        for m in spec.marks:
            if len(m.at):
                plt.scatter(
                    m.at.tolist(),
                    m.y.tolist(),
                    label=m.label or None,
                    color=None if mono else m.color,
                    marker=m.marker,
                )
        _y_axis(spec, height - 1 - (1 if height < COMPACT_BELOW else 2))
        for level, color in spec.hlines:
            if np.isfinite(level):
                plt.hline(float(level), None if mono else color)
        if spec.cursor is not None:
            plt.vline(float(spec.cursor), None if mono else "white")
        if len(spec.ts_us) > 1:  # every chart spans the same bars, NaN head or not
            plt.xlim(0, len(spec.ts_us) - 1)
        positions, names = _labels(spec.ts_us)
        if positions:
            if spec.utc:
                names[-1] += " UTC"
            plt.xticks(positions, names)
        text = plt.build()
    title = Text(spec.title[:width].center(width), style="bold")
    # sized to fit already: no_wrap spares the terminal renderer a word-wrap pass
    return Text.assemble(title, "\n", Text.from_ansi(text), no_wrap=True, overflow="crop")
