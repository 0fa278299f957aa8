"""Bars against an independent resample, and incremental folding against one-shot."""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import pairwise

import polars as pl
import pytest
from conftest import SAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from pairs_tui.bars import TIMEFRAMES, empty_bars, fold, resample, trades_frame

pytestmark = pytest.mark.unit


def reference_bars(trades: list[tuple[int, int, str, str]], tf_us: int) -> list[tuple]:
    """Plain Python: bucket by floor(t / tf), order by (time, id) inside each bucket."""
    buckets: dict[int, list] = defaultdict(list)
    for ts, tid, price, qty in trades:
        buckets[ts // tf_us * tf_us].append((ts, tid, float(price), float(qty)))
    out = []
    for start in sorted(buckets):
        rows = sorted(buckets[start])
        prices = [r[2] for r in rows]
        out.append(
            (
                start,
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                sum(r[3] for r in rows),
                len(rows),
            )
        )
    return out


def assert_bars_equal(bars: pl.DataFrame, expected: list[tuple]) -> None:
    assert bars.height == len(expected)
    for got, want in zip(bars.iter_rows(), expected, strict=True):
        assert got[:5] == want[:5]  # times and prices exactly
        assert got[5] == pytest.approx(want[5], rel=1e-12)  # volume: float sums
        assert got[6] == want[6]


def nautilus_trades() -> list[tuple[int, int, str, str]]:
    lines = (SAMPLES / "nautilus_btcusdt_spot_trades_2021-01-08_DERIVED.csv").read_text()
    out = []
    for line in lines.splitlines()[1:]:
        tid, price, qty, ms, _ = line.split(",")
        out.append((int(ms) * 1000, int(tid), price, qty))
    return out


def generated_trades(n: int, seed: int) -> list[tuple[int, int, str, str]]:
    """Bursty arrivals with many equal timestamps, shuffled so order must be restored."""
    rng = random.Random(seed)
    ts, out = 1_700_000_000_000_000, []
    for tid in range(n):
        ts += rng.choice([0, 0, 1000, 250_000, 3_000_000, 61_000_000])
        out.append((ts, 10_000 + tid, f"{rng.uniform(100, 101):.2f}", f"{rng.uniform(0, 2):.5f}"))
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("tf", list(TIMEFRAMES))
def test_real_trades_match_an_independent_resample(tf):
    trades = nautilus_trades()
    assert len(trades) == 2001
    assert_bars_equal(
        resample(trades_frame(trades), TIMEFRAMES[tf]), reference_bars(trades, TIMEFRAMES[tf])
    )


@pytest.mark.parametrize("tf", list(TIMEFRAMES))
@pytest.mark.parametrize("seed", [1, 2])
def test_generated_tapes_match_an_independent_resample(tf, seed):
    trades = generated_trades(3000, seed)
    bars = resample(trades_frame(trades), TIMEFRAMES[tf])
    assert_bars_equal(bars, reference_bars(trades, TIMEFRAMES[tf]))


def test_open_and_close_break_time_ties_by_trade_id():
    t = 1_700_000_000_000_000
    trades = [(t, 7, "3", "1"), (t, 5, "1", "1"), (t, 6, "2", "1")]
    bar = resample(trades_frame(trades), 1_000_000).row(0, named=True)
    assert (bar["open"], bar["close"], bar["trades"]) == (1.0, 3.0, 3)


def test_empty_intervals_have_no_bar():
    t = 1_700_000_000_000_000
    bars = resample(trades_frame([(t, 1, "1", "1"), (t + 5_000_000, 2, "2", "1")]), 1_000_000)
    assert bars["ts_us"].to_list() == [t, t + 5_000_000]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 399), max_size=12),
    tf=st.sampled_from(list(TIMEFRAMES)),
)
def test_folding_random_chunks_equals_one_shot(seed, cuts, tf):
    trades = sorted(generated_trades(400, seed), key=lambda r: r[1])  # arrival = id order
    tf_us = TIMEFRAMES[tf]
    bars = empty_bars()
    edges = [0, *sorted(set(cuts)), len(trades)]
    for lo, hi in pairwise(edges):
        bars = fold(bars, resample(trades_frame(trades[lo:hi]), tf_us))
    assert_bars_equal(bars, reference_bars(trades, tf_us))


def test_fold_keeps_only_the_newest_bars():
    trades = sorted(generated_trades(500, 3), key=lambda r: r[1])
    expected = reference_bars(trades, 1_000_000)
    bars = empty_bars()
    for lo in range(0, 500, 37):
        bars = fold(bars, resample(trades_frame(trades[lo : lo + 37]), 1_000_000), keep=25)
    assert_bars_equal(bars, expected[-25:])
