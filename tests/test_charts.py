"""Charts that read right: round ticks, the z-score's ±2 lines on rows labelled ±2 at
every terminal size, no `-0`, UTC said once, and placeholders that say what they wait for
and how long that takes."""

from __future__ import annotations

import re
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import cli_env
from ptyterm import PtyTerminal

from pairs_tui.ui.charts import (
    ChartSpec,
    Line,
    Marks,
    fingerprint,
    render,
    tick_label,
    ticks,
    waiting_for,
)

pytestmark = pytest.mark.pty

TIME_AXIS = re.compile(r"\d\d:\d\d:\d\d")
LABEL = re.compile(r"^\s*(-?\d+(?:\.\d+)?)(?=[\s├┤┼│─▘▝▖▗▚▞▀▄▌▐▙▛▜▟]|$)")


@pytest.mark.parametrize(
    ("lo", "hi", "rows", "steps", "expected"),
    [
        (-2.7, 3.1, 14, (0.5, 1.0, 2.0), [-3, -2, -1, 0, 1, 2, 3, 4]),
        (-2.7, 3.1, 12, (0.5, 1.0, 2.0), [-4, -2, 0, 2, 4]),
        (-4.1, 3.9, 4, (0.5, 1.0, 2.0), [-6, -2, 2, 4]),  # no room for all: none share a row
        (-2.0, 2.0, 6, (0.5, 1.0, 2.0), [-2, 0, 2]),
        (-2.0, 2.0, 16, (0.5, 1.0, 2.0), [-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2]),
        (99.6, 101.2, 8, (), [99.5, 100, 100.5, 101, 101.5]),
        (-0.00105, 0.00108, 4, (), [-0.002, 0, 0.002]),
        (-0.8, 0.95, 8, (), [-1, -0.5, 0, 0.5, 1]),
    ],
)
def test_ticks_are_round_and_cover_the_range(lo, hi, rows, steps, expected):
    got = ticks(lo, hi, rows, steps)
    assert np.allclose(got, expected)
    assert got[0] <= lo and got[-1] >= hi
    placed = np.round((got - got[0]) / (got[-1] - got[0]) * (rows - 1))
    assert len(set(placed)) == len(got)  # no two on one row


def test_z_ticks_hold_the_thresholds_wherever_there_is_room():
    rng = np.random.default_rng(3)
    for _ in range(500):
        lo, hi = -abs(rng.normal(2, 2)) - 2, abs(rng.normal(2, 2)) + 2
        rows = int(rng.integers(3, 40))
        marks = ticks(lo, hi, rows, (0.5, 1.0, 2.0))
        assert all(v * 2 == round(v * 2) for v in marks)  # whole or half units
        if rows >= (hi - lo) / 2 + 3:  # room for a row every 2 units, and then some
            assert {2.0, -2.0} <= set(marks.tolist()), (lo, hi, rows, marks)


@pytest.mark.parametrize(
    ("value", "step", "text"),
    [
        (-0.0000001, 0.0005, "0.0000"),
        (-0.0, 1, "0"),
        (2.5, 2.5, "2.5"),
        (100, 0.5, "100.0"),
        (4e-15, 2e-15, "4.0e-15"),
        (-1e-17, 2e-15, "0"),
    ],
)
def test_tick_labels_never_say_minus_zero(value, step, text):
    assert tick_label(value, step) == text


def test_a_placeholder_names_its_chart_and_how_long_it_waits():
    spec = ChartSpec("z-score (W=20)", np.arange(3), (Line(np.full(3, np.nan)),), needs=21)
    assert waiting_for(spec) == "z-score (W=20)\nCollecting data: 3 / 21 bars"
    at_1m = ChartSpec(
        "z-score (W=20)", np.arange(3), (Line(np.full(3, np.nan)),), needs=21, bar_s=60
    )
    assert waiting_for(at_1m) == (
        "z-score (W=20)\nCollecting data: 3 / 21 bars, about 18 min - press 1 for 1s bars"
    )
    at_1s = ChartSpec("corr", np.arange(3), (Line(np.full(3, np.nan)),), needs=22, bar_s=1)
    assert waiting_for(at_1s) == "corr\nCollecting data: 3 / 22 bars, about 19 s"


def z_chart_rows(lines: list[str]) -> list[str]:
    """The z-score chart's rows (left of the side panel), title and time axis excluded."""
    start = next(i for i, line in enumerate(lines) if "z-score (W=" in line.split("│")[0])
    rows = []
    for line in lines[start + 1 :]:
        left = line.split("│")[0]
        if TIME_AXIS.search(left):
            return rows
        rows.append(left)
    raise AssertionError("no time axis under the z-score chart")


def drawn(lines: list[str]) -> bool:
    screen = "\n".join(lines)
    return "z-score (W=3)" in screen and "Collecting" not in screen and "UTC" in screen


@pytest.mark.parametrize(("cols", "rows"), [(80, 24), (200, 60)])  # the smallest, a large one
def test_the_z_lines_sit_on_rows_labelled_2_at_every_size(tmp_path, isolated_home, cols, rows):
    argv = [sys.executable, "-m", "pairs_tui", "btcusdt", "ethusdt", "--demo"]
    argv += ["--db", str(tmp_path / "t.db"), "--timeframe", "1s", "--window", "3"]
    argv += ["--lookback", "60", "--seed", "4"]
    with PtyTerminal(argv, cols=cols, rows=rows, env=cli_env(isolated_home), cwd=tmp_path) as t:
        t.wait_for(drawn, timeout=20)
        t.wait_for(lambda lines: len(z_chart_rows(lines)) >= 3, timeout=5)
        screen = t.text()
        t.send("q")
        assert t.wait_exit(10) == 0
    z_rows = z_chart_rows(screen)
    labelled = {m[1]: row for row in z_rows if (m := LABEL.match(row))}
    assert {"2", "-2"} <= set(labelled), "\n".join(z_rows)
    for label in ("2", "-2"):
        assert "─" * 5 in labelled[label], f"the {label} line is not on its row:\n" + "\n".join(
            z_rows
        )
    assert all(float(v) * 2 == round(float(v) * 2) for v in labelled), sorted(labelled)
    text = "\n".join(screen)
    assert not re.search(r"(?<![\d.])-0(\.0+)?(?![\d.])", text), text
    assert text.count("UTC") == 1, text


@pytest.mark.parametrize("mono", [False, True])
def test_marks_sit_on_their_bars_and_change_the_fingerprint(mono):
    """A backtest's entries and exits: drawn at their bar on the line, in the legend when
    labelled, and a chart with other marks is drawn again."""
    y = np.r_[np.zeros(50), np.ones(50)]
    at = np.array([75])
    bare = ChartSpec("equity", np.arange(100), (Line(y),))
    marked = ChartSpec(
        "equity", np.arange(100), (Line(y),), marks=(Marks(at, y[at], "", "red", "▲"),)
    )
    rows = render(marked, 60, 12, mono=mono).plain.splitlines()
    [row] = [r for r in rows if "▲" in r]
    top = next(r for r in rows[1:] if "▀" in r or "▄" in r or "▞" in r or "▚" in r)
    assert row == top and 30 < row.index("▲") < 60  # on the upper line, right of the middle
    assert "▲" not in render(bare, 60, 12).plain
    assert fingerprint(bare, 60, 12) != fingerprint(marked, 60, 12)
    legend = replace(marked, marks=(Marks(at, y[at], "long", "green", "▲"),))
    assert "long" in render(legend, 60, 12, mono=mono).plain


@pytest.mark.parametrize("height", [6, 8, 12, 20, 30])
def test_a_series_flat_to_its_last_digit_is_drawn(height):
    """A W=2 correlation is ±1 up to float noise: round ticks must still come out."""
    flat = np.array([np.nan, np.nan, np.nan, 1.0000000000000002, 0.9999999999999998, 1.0])
    spec = ChartSpec("corr", np.arange(6), (Line(flat),), needs=4)
    text = render(spec, 60, height).plain
    assert "corr" in text
    for lo, hi in ((0.9999999999999998, 1.0), (100.0, float(np.nextafter(100.0, 200.0)))):
        marks = ticks(lo, hi, height)
        assert len(marks) >= 2 and len(set(marks.tolist())) == len(marks)
        assert marks[0] <= lo and marks[-1] >= hi


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (-0.0001, "+.2f", "+0.00"),
        (-0.0001, ".3f", "0.000"),
        (-0.0, ".4g", "0"),
        (-1.5, "+.2f", "-1.50"),
        (-0.0, ".3e", "0.000e+00"),
    ],
)
def test_stats_never_say_minus_zero(value, spec, text):
    from pairs_tui.ui.widgets import _number

    assert _number(value, spec) == text
