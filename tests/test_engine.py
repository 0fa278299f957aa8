"""The incremental engine: equal to a one-shot computation, cheap when nothing closes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import market
from conftest import write_trades as write

from pairs_tui.engine import PairEngine, PairView, ViewError, analyze, join_bars
from pairs_tui.export import load_pair
from pairs_tui.model import StreamKind
from pairs_tui.store import TickStore

pytestmark = pytest.mark.unit

SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def test_refreshing_chunk_by_chunk_equals_one_shot(db_path):
    """Over more than L bars, with ETHUSDT trading only every third second (an illiquid
    leg: the joined series is sparser than either symbol's bars)."""
    m = market()
    view = PairView(*SYMBOLS, timeframe="1s", window=10, lookback=120)
    async with await TickStore.open(db_path) as store:
        engine = PairEngine(store, view)
        for step in range(1, 1201):  # 600 s of trades arriving in 0.5 s slices
            trades = m.advance_to(step / 2)
            await write(
                store, [t for t in trades if t.symbol == "BTCUSDT" or t.time_ms // 1000 % 3 == 0]
            )
            if step % 17 == 0:  # 70 refreshes, each folding what came since
                await engine.refresh(now_us=(m.start_ms + step * 500) * 1000)
        now = (m.start_ms + 600_000) * 1000
        live = await engine.refresh(now_us=now)
        # the snapshot is one consistent moment: all of both symbols' trades before asof
        assert now - 3_000_000 < live.asof_us <= now
        bars_a, bars_b = await load_pair(store, view, StreamKind.TRADE, until_us=live.asof_us)
    one_shot, _ = analyze(view, join_bars(bars_a, bars_b), now_us=live.asof_us)
    assert live.summary == one_shot.summary
    for field in ("ts_us", "close_a", "close_b", "spread", "zscore", "corr"):
        np.testing.assert_array_equal(getattr(live.series, field), getattr(one_shot.series, field))
    assert live.summary.n_bars == 120 and live.summary.reason is None
    assert bars_b.height < bars_a.height / 2  # the sparse leg really is sparse
    assert live.tests is not None and live.summary.adf_pvalue == one_shot.summary.adf_pvalue


def forming(last_trade_us: int) -> int:
    """A clock 0.3 s into the bar of the last trade: that bar is still forming."""
    return last_trade_us // 1_000_000 * 1_000_000 + 300_000


async def test_cointegration_is_recomputed_only_when_a_bar_closes(db_path):
    m = market(2)
    view = PairView(*SYMBOLS, timeframe="1s", window=10, lookback=200)
    async with await TickStore.open(db_path) as store:
        await write(store, m.advance_to(120.0))
        engine = PairEngine(store, view)
        now = forming(await store.last_time("BTCUSDT", StreamKind.TRADE))
        first = await engine.refresh(now_us=now)
        assert first.tests is not None
        assert first.summary.n_bars >= 100
        again = await engine.refresh(now_us=now + 100_000)  # same bar still forming
        assert again.tests is first.tests
        await write(store, m.advance_to(122.5))
        now = forming(await store.last_time("BTCUSDT", StreamKind.TRADE))
        later = await engine.refresh(now_us=now)  # bars closed meanwhile
        assert later.tests is not first.tests
        assert later.summary.adf_pvalue != first.summary.adf_pvalue


async def test_a_new_forming_bar_alone_does_not_rerun_the_tests(db_path):
    """Once both symbols traded past a bar boundary every earlier bar is final; more
    trades in the forming bar close nothing."""
    m = market(7)
    view = PairView(*SYMBOLS, timeframe="1s", window=10, lookback=60)
    async with await TickStore.open(db_path) as store:
        engine = PairEngine(store, view)
        boundary = (m.start_ms // 1000 + 100) * 1_000_000  # a whole second, in µs
        start_s = m.start_ms / 1e3
        await write(store, m.advance_to(boundary / 1e6 - start_s + 0.3))
        at_boundary = await engine.refresh(now_us=boundary + 300_000)
        assert at_boundary.asof_us > boundary  # both symbols traded in the new bar
        await write(store, m.advance_to(boundary / 1e6 - start_s + 0.8))
        forming = await engine.refresh(now_us=boundary + 800_000)
        assert forming.series.ts_us[-1] == boundary  # the new bar is in the series...
        assert forming.summary.price_a != at_boundary.summary.price_a  # ...and moved
        assert forming.tests is at_boundary.tests  # ...but the tests did not run again
        assert forming.summary.n_bars == 60 and at_boundary.tests is not None


async def test_a_refresh_reads_only_new_trades(db_path):
    m = market(3)
    async with await TickStore.open(db_path) as store:
        await write(store, m.advance_to(30.0))
        engine = PairEngine(store, PairView(*SYMBOLS, timeframe="1s", window=5, lookback=20))
        await engine.refresh()
        a, b = engine.sides
        before = a.trades + b.trades
        fresh = m.advance_to(30.5)
        await write(store, fresh)
        await engine.refresh()
        assert a.trades + b.trades - before == len(fresh)


async def test_collecting_reason_while_there_are_too_few_bars(db_path):
    m = market(4)
    async with await TickStore.open(db_path) as store:
        await write(store, m.advance_to(10.0))
        snap = await PairEngine(store, PairView(*SYMBOLS, "1s", 20, 100)).refresh()
    n = snap.summary.n_bars
    assert 5 <= n <= 11
    assert snap.summary.reason == f"collecting: {n} / 21 bars"
    assert snap.summary.zscore is None and snap.summary.corr is None
    assert snap.summary.adf_pvalue is None and snap.summary.verdict is None


async def test_switching_timeframe_reuses_bars_and_pair_switch_reloads(db_path):
    m = market(5)
    async with await TickStore.open(db_path) as store:
        await write(store, m.advance_to(400.0))
        engine = PairEngine(store, PairView(*SYMBOLS, "1s", 10, 100))
        await engine.refresh()
        sides = engine.sides
        engine.set_view(PairView(*SYMBOLS, "1m", 3, 50))
        snap = await engine.refresh()
        assert engine.sides == sides and snap.summary.n_bars in (7, 8)
        engine.set_view(PairView("ETHUSDT", "BTCUSDT", "1m", 3, 50))
        snap = await engine.refresh()
        assert engine.sides != sides and snap.summary.symbol_a == "ETHUSDT"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("BTCUSDT", "BTCUSDT"), "two different symbols"),
        (("A1", "B1", "2m"), "unknown timeframe"),
        (("A1", "B1", "1m", 1), "window must be at least 2"),
        (("A1", "B1", "1m", 20, 21), r"lookback must be at least window \+ 2 = 22"),
    ],
)
def test_bad_views_are_refused(args, message):
    with pytest.raises(ViewError, match=message):
        PairView(*args)
