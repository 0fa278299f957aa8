"""Charts as text: plotext renders, rich turns its ANSI into a Text.

plotext keeps global state, so every render holds one lock; renders run in a worker
thread. Series are downsampled to about two points per column, and the x axis is
numeric with a few hand-set UTC labels (date strings cost plotext far more).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import plotext as plt
from rich.text import Text

_LOCK = threading.Lock()


@dataclass(frozen=True)
class Line:
    y: np.ndarray
    label: str = ""
    color: str = "cyan"


@dataclass(frozen=True)
class ChartSpec:
    title: str
    ts_us: np.ndarray
    lines: tuple[Line, ...]
    hlines: tuple[tuple[float, str], ...] = field(default_factory=tuple)  # (y, color)


def _labels(ts_us: np.ndarray, count: int = 4) -> tuple[list[float], list[str]]:
    if len(ts_us) == 0:
        return [], []
    idx = np.linspace(0, len(ts_us) - 1, min(count, len(ts_us))).astype(int)
    fmt = "%H:%M:%S" if ts_us[-1] - ts_us[0] < 86_400_000_000 else "%m-%d %H:%M"
    names = [datetime.fromtimestamp(ts_us[i] / 1e6, UTC).strftime(fmt) for i in idx]
    return [float(i) for i in idx], names


def render(spec: ChartSpec, width: int, height: int, *, mono: bool = False) -> Text:
    """The chart as rich Text of exactly `height` lines (or less if there is no room)."""
    width, height = max(width, 20), max(height, 5)
    step = max(1, len(spec.ts_us) // (2 * width))
    x = np.arange(0, len(spec.ts_us), step, dtype=float)
    with _LOCK:
        plt.clf()
        plt.plotsize(width, height)
        plt.theme("clear" if mono else "dark")
        plt.title(spec.title)
        for line in spec.lines:
            y = line.y[::step]
            ok = np.isfinite(y)
            if ok.any():
                plt.plot(
                    x[ok].tolist(),
                    y[ok].tolist(),
                    label=line.label,
                    color=None if mono else line.color,
                )
        for y, color in spec.hlines:
            if np.isfinite(y):
                plt.hline(float(y), None if mono else color)
        if len(spec.ts_us) > 1:  # every chart spans the same bars, NaN head or not
            plt.xlim(0, len(spec.ts_us) - 1)
        positions, names = _labels(spec.ts_us)
        if positions:
            plt.xticks(positions, names)
        text = plt.build()
    return Text.from_ansi(text)
