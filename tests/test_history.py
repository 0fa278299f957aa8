"""History at start and holes filled, against the demo's REST endpoints on loopback: the
bars of stored history plus stored trades equal the bars of the complete tape, every
timeframe, the seam bar included; an outage is filled with the trades it missed."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from conftest import cli_env, pairs_tui_cmd, wait_until, write_trades

from pairs_tui.bars import resample, trades_frame
from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.feed.demo import DemoServer
from pairs_tui.history import History
from pairs_tui.model import TIMEFRAMES, FeedState
from pairs_tui.session import Session, SessionPlan
from pairs_tui.store import TickStore

pytestmark = pytest.mark.server

PAIR = ("BTCUSDT", "ETHUSDT")
FAST = FeedOptions(backoff_initial=0.05, backoff_max=0.5, stale_after=2.0)


def tape_bars(server: DemoServer, symbol: str, tf: str, start_us: int, last: tuple[int, int]):
    """Bars straight from the demo market's complete tape up to the trade `last`
    (id, time µs), resampled independently."""
    last_id, last_us = last
    trades = server.market.trades_between(symbol, start_us // 1000, last_us // 1000 + 1)
    rows = [(t.time_ms * 1000, t.trade_id, t.price, t.qty) for t in trades if t.trade_id <= last_id]
    return resample(trades_frame(rows), TIMEFRAMES[tf])


def assert_same_bars(got: pl.DataFrame, want: pl.DataFrame, what: str) -> None:
    got = got.select(want.columns)
    assert got["ts_us"].to_list() == want["ts_us"].to_list(), what
    for column in ("open", "high", "low", "close", "trades"):
        assert got[column].to_list() == want[column].to_list(), (what, column)
    # the exchange sums decimals, the tape's bars binary floats: equal to rounding
    for g, w in zip(got["volume"].to_list(), want["volume"].to_list(), strict=True):
        assert g == pytest.approx(w, rel=1e-9), what


async def recorded(server: DemoServer, db: Path, view: PairView, until) -> Session:
    plan = SessionPlan(view, db, replace(FAST, ws_url=server.url), rest_url=server.rest_url)
    session = Session(plan)
    await session.start()
    await wait_until(lambda: session.recording.history_settled() and until(), 20)
    return session


async def settled_sides(session: Session, server: DemoServer):
    """Stop the server; once every trade sent is stored, the engine's bars of both sides."""
    await server.stop()
    await wait_until(lambda: session.feed_stats().state is not FeedState.CONNECTED, 10)
    await asyncio.sleep(2.2)  # the engine's settling time
    snapshot = await session.refresh()
    sides = session._engine.sides
    assert sides is not None
    return snapshot, sides


async def test_history_and_trades_give_the_bars_of_the_complete_tape(db_path):
    server = await DemoServer(seed=3, rate=40, record_delivered=True).start()
    view = PairView(*PAIR, "1s", 3, 20)
    session = await recorded(
        server, db_path, view, lambda: sum(map(len, server.delivered.values())) > 100
    )
    try:
        snapshot, sides = await settled_sides(session, server)
        assert snapshot.summary.history_bars > 0
        seams = 0
        for side in sides:
            first_id, first_us = await session.store.first_trade(side.symbol, side.kind)
            last = await session.store.last_trade(side.symbol, side.kind)
            for tf, tf_us in TIMEFRAMES.items():
                begin = (first_us // tf_us - 20) * tf_us  # history from 20 bars before
                got = side.merged(tf).filter(pl.col("ts_us") >= begin)
                want = tape_bars(server, side.symbol, tf, begin, last)
                assert_same_bars(got, want, f"{side.symbol} {tf}")
                # the bar the stored tape begins in holds history too when the exchange
                # traded in it before the tape's first trade
                opened = first_us // tf_us * tf_us
                before = server.market.trades_between(
                    side.symbol, opened // 1000, first_us // 1000 + 1
                )
                earlier = any(t.trade_id < first_id for t in before)
                seam = got.filter(pl.col("ts_us") == opened)
                assert seam["rest"].to_list() == [earlier], (side.symbol, tf)
                seams += earlier
        assert seams >= 2  # at 1m and 5m at least: the seam was really made
    finally:
        await session.stop()


async def test_a_start_spends_little_weight_and_history_is_never_asked_twice(db_path):
    server = await DemoServer(seed=2, rate=20).start()
    # as the default view (1m, W = 20, L = 600) asks one page of each timeframe: the same
    # requests; the demo computes 8 h of 5m bars, not 52 (benchmarks/history.py: 40 there)
    view = PairView(*PAIR, "1m", 20, 80)
    session = await recorded(server, db_path, view, lambda: True)
    try:
        counters = server.rest_counters
        spent = session.recording.rest.spent.weight
        assert spent == counters.weight <= 60  # exchangeInfo 20, klines 2 x 6, aggTrades 4 x 2
        assert counters.too_many == counters.banned == 0
        asked = dict(counters.requests)
        again = History(session.recording.rest, session.store, session.plan.kind)
        assert await again.backfill(PAIR, view.history_wanted()) == set(PAIR)
        assert counters.requests == asked  # every page and seam is stored: nothing asked
    finally:
        await session.stop()
        await server.stop()


OUTAGES = [pytest.param(5.0, id="5s"), pytest.param(20.0, id="20s", marks=pytest.mark.slow)]


@pytest.mark.parametrize("outage_s", OUTAGES)
async def test_an_outage_is_filled_with_the_trades_it_missed(db_path, outage_s):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = await DemoServer(seed=5, rate=40, port=port, record_delivered=True).start()
    view = PairView(*PAIR, "1s", 3, 20)
    events: list[str] = []
    plan = SessionPlan(view, db_path, replace(FAST, ws_url=first.url), rest_url=first.rest_url)
    session = Session(plan, on_event=events.append, on_notice=events.append)
    await session.start()
    try:
        await wait_until(lambda: session.recording.history_settled(), 20)
        await first.stop()
        await asyncio.sleep(outage_s)  # the market goes on; nobody records it
        second = await DemoServer(seed=5, rate=40, port=port, record_delivered=True).start()
        await wait_until(lambda: session.recording.history.gaps_filled >= 2, 30)
        assert "gap filled" in (session.history_text() or "")
        _, sides = await settled_sides(session, second)
        lasts = [await session.store.last_trade(side.symbol, side.kind) for side in sides]
    finally:
        await session.stop()
    assert any(e.startswith("gap filled: BTCUSDT") for e in events), events
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM gaps WHERE filled_us IS NULL").fetchone() == (0,)
        for symbol in PAIR:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT trade_id FROM trades JOIN series ON series.id = trades.series"
                    " WHERE symbol = ? ORDER BY trade_id",
                    (symbol,),
                )
            ]
            assert ids == list(range(ids[0], ids[-1] + 1)), symbol  # no hole left
    for side, last in zip(sides, lasts, strict=True):  # no hole in the bars either
        merged = side.merged("1s")
        assert_same_bars(
            merged, tape_bars(second, side.symbol, "1s", int(merged["ts_us"][0]), last), side.symbol
        )


def run(home, *args, timeout=60):
    """`pairs-tui ARGS` with history at start on, as users have it."""
    config = home / "config" / "pairs-tui" / "config.toml"
    config.write_text(config.read_text().replace("backfill = false", "backfill = true"))
    return subprocess.run(
        pairs_tui_cmd(*args), env=cli_env(home), capture_output=True, text=True, timeout=timeout
    )


def test_an_unknown_symbol_exits_2_naming_the_closest(isolated_home, tmp_path):
    for command in (
        ["record", "btcusd", "ethusdt"],
        ["watch", "btcusd", "ethusdt", "--alert", "z > 2"],
    ):
        done = run(isolated_home, *command, "--demo", "--db", str(tmp_path / "t.db"))
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            "pairs-tui: error: unknown symbol BTCUSD on Binance; did you mean BTCUSDT?\n"
        )


def test_no_rest_is_said_and_recording_goes_on_live_only(isolated_home, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    db = tmp_path / "t.db"
    server = subprocess.Popen(
        pairs_tui_cmd("demo-server", "--port", "0"),
        env=cli_env(isolated_home),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ws_url = ""
        while not ws_url:
            ws_url = next(iter(re.findall(r"ws://\S+", server.stdout.readline())), "")
        started = time.monotonic()
        done = run(
            isolated_home,
            "record", "btcusdt", "--ws-url", ws_url, "--rest-url", f"http://127.0.0.1:{closed}",
            "--duration", "7", "--db", str(db),
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 0, done.stderr
    assert "history unavailable: " in done.stdout and f"127.0.0.1:{closed}" in done.stdout
    assert time.monotonic() - started < 15  # REST held the start up 5 s at most
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM history").fetchone() == (0,)


def test_record_backfill_is_seen_by_export_and_by_viewers(isolated_home, tmp_path):
    db = tmp_path / "t.db"
    args = ["record", "btcusdt", "ethusdt", "--demo", "--db", str(db), "--backfill", "45min"]
    run(isolated_home, "--version")  # history at start on, as users have it
    recorder = subprocess.Popen(
        pairs_tui_cmd(*args), env=cli_env(isolated_home), stdout=subprocess.PIPE, text=True
    )
    try:
        assert recorder.stdout is not None
        for line in recorder.stdout:  # logged once every symbol's history is stored
            if "bars from REST" in line:
                break
    finally:
        recorder.terminate()
        assert recorder.wait(10) == 0
    with sqlite3.connect(db) as conn:
        held = dict(conn.execute("SELECT timeframe, count(*) FROM history GROUP BY timeframe"))
    assert held["1s"] >= 2700 * 2 and held["1m"] >= 45 * 2 and held["5m"] >= 9 * 2
    out = tmp_path / "bars.csv"
    done = run(
        isolated_home,
        "export", "btcusdt", "ethusdt", "--timeframe", "1m", "--what", "bars",
        "--db", str(db), "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["rest_history"]["BTCUSDT"]["bars"] >= 45
    summary = tmp_path / "summary.json"
    done = run(
        isolated_home,
        "export", "btcusdt", "ethusdt", "--timeframe", "1m", "--window", "5", "--lookback", "30",
        "--what", "summary", "--db", str(db), "-o", str(summary),
    )  # fmt: skip
    doc = json.loads(summary.read_text())
    assert doc["tests_n"] == 30 and doc["tests_end"] is not None
    assert doc["history_bars"] >= 29

    async def viewer():  # a --no-feed cockpit on the store another process recorded
        session = Session(SessionPlan(PairView(*PAIR, "1m", 5, 30), db, None))
        await session.start()
        try:
            return await session.refresh()
        finally:
            await session.stop()

    seen = asyncio.run(viewer()).summary
    assert seen.history_bars >= 29 and seen.zscore is not None and seen.verdict is not None


async def test_a_restart_after_an_hour_is_bridged_with_klines(db_path):
    """An hour since the last run is far more than MAX_FILL trades: the hole is bridged
    with whole klines, equal to the tape's bars; only the bar at each end lacks trades."""
    server = await DemoServer(seed=4, rate=20, record_delivered=True).start()
    now_ms = time.time_ns() // 1_000_000
    then_ms = now_ms - 3_600_000
    async with await TickStore.open(db_path) as store:  # the last run: 20 s an hour ago
        old = [
            t
            for symbol in PAIR
            for t in server.market.trades_between(symbol, then_ms, then_ms + 20_000)
        ]
        await write_trades(store, old)
    view = PairView(*PAIR, "1m", 3, 20)
    session = await recorded(
        server, db_path, view, lambda: sum(map(len, server.delivered.values())) > 40
    )
    try:
        await wait_until(lambda: session.recording.history.gaps_filled >= 2, 20)
        _, sides = await settled_sides(session, server)
        for side in sides:
            old_last = max(t.time_ms for t in old if t.symbol == side.symbol) * 1000
            old_last_id = max(t.trade_id for t in old if t.symbol == side.symbol)
            new = await session.store.first_trade(side.symbol, side.kind, old_last_id + 1)
            assert new is not None  # this run's first trade, an hour of ids later
            inside = (old_last // 60_000_000 + 1) * 60_000_000, new[1] // 60_000_000 * 60_000_000
            got = side.merged("1m").filter(
                (pl.col("ts_us") >= inside[0]) & (pl.col("ts_us") < inside[1])
            )
            want = tape_bars(server, side.symbol, "1m", inside[0], (new[0] - 1, inside[1] - 1))
            assert got.height >= 20  # the view's 20 + 3 bars, from the hole
            assert_same_bars(got, want.filter(pl.col("ts_us") >= got["ts_us"][0]), side.symbol)
    finally:
        await session.stop()


def test_no_backfill_asks_rest_nothing(isolated_home, tmp_path):
    db = tmp_path / "t.db"
    done = run(isolated_home, "record", "btcusd", "--demo", "--no-backfill", "--duration", "1.5")
    assert done.returncode == 0, done.stderr  # not even the symbol check: live only
    done = run(
        isolated_home, "record", "btcusdt", "--demo", "--no-backfill", "--duration", "1.5",
        "--db", str(db),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM history").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] > 0
