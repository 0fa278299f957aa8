"""The fault matrix, through the session the cockpit and `watch` run on (feed → store →
engine → snapshots), and through a `record` process.

For each fault: the session keeps running, says what happened (reconnecting, gaps),
stores every trade the server delivered exactly once and in order, and its live bars
equal bars computed independently from those trades.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, pairs_tui_cmd, wait_until

from pairs_tui.engine import PairSnapshot, PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.feed.demo import DemoServer, Faults
from pairs_tui.model import FeedState
from pairs_tui.session import Session, SessionPlan
from pairs_tui.ui.app import feed_text

pytestmark = pytest.mark.server

PAIR = ("BTCUSDT", "ETHUSDT")
FAST = FeedOptions(backoff_initial=0.05, backoff_max=0.5, stale_after=0.6)


@dataclass
class Fault:
    faults: Faults = field(default_factory=Faults)
    done: object = None  # server -> bool: enough of the fault has happened
    reconnects: bool = True  # the fault makes the feed reconnect
    skip_ids_every: int = 0


MATRIX = {
    "cut without close frame (1006) x20": Fault(
        Faults(cut_every=12), lambda s: s.counters.cuts >= 20
    ),
    "clean close 1001": Fault(Faults(close_every=30), lambda s: s.counters.closes >= 3),
    "serverShutdown": Fault(Faults(shutdown_every=30), lambda s: s.counters.shutdowns >= 3),
    "accepts but never sends": Fault(
        Faults(stall_after=20, stalls=2), lambda s: s.counters.stalls >= 2
    ),
    "malformed, truncated, huge, unknown and control frames": Fault(
        Faults(malformed_every=7, huge_every=50, other_every=9),
        lambda s: s.counters.huge >= 2 and s.counters.malformed >= 8 and s.counters.others >= 6,
    ),
    "trades re-sent after a reconnect": Fault(
        Faults(cut_every=40, resend_on_reconnect=25), lambda s: s.counters.resent >= 50
    ),
    "skipped ids": Fault(
        done=lambda s: sum(map(len, s.delivered.values())) > 300,
        reconnects=False,
        skip_ids_every=20,
    ),
    "out of order across the symbols": Fault(
        Faults(lag_symbol="ethusdt", lag_ms=400),
        lambda s: sum(map(len, s.delivered.values())) > 400,
        reconnects=False,
    ),
}


def independent_closes(db: Path, until_us: int) -> dict[str, dict[int, float]]:
    """1s closes straight from the stored trades: the last trade by (time, id) per second."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT symbol, ts_us, trade_id, price FROM trades JOIN series ON series.id ="
            " trades.series WHERE ts_us < ? ORDER BY symbol, ts_us, trade_id",
            (until_us,),
        )
        for symbol, ts, _, price in rows:
            out[symbol][ts // 1_000_000 * 1_000_000] = float(price)
    return out


def assert_bars_match(snapshot: PairSnapshot, db: Path) -> None:
    closes = independent_closes(db, snapshot.asof_us)
    a, b = closes[PAIR[0]], closes[PAIR[1]]
    joined = sorted(set(a) & set(b))[-snapshot.view.lookback :]
    series = snapshot.series
    assert series.ts_us.tolist() == joined
    np.testing.assert_array_equal(series.close_a, [a[t] for t in joined])
    np.testing.assert_array_equal(series.close_b, [b[t] for t in joined])


def assert_stored_once(db: Path, delivered: dict[str, list[int]]) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for symbol in PAIR:
            rows = conn.execute(
                "SELECT trade_id, ts_us FROM trades JOIN series ON series.id = trades.series"
                " WHERE symbol = ? ORDER BY trade_id",
                (symbol,),
            ).fetchall()
            assert [r[0] for r in rows] == sorted(set(delivered[symbol])), symbol  # once
            times = [r[1] for r in rows]
            assert times == sorted(times), symbol  # ids follow time: stored in order
            gaps = conn.execute(
                "SELECT from_id, to_id FROM gaps WHERE symbol = ? ORDER BY rowid", (symbol,)
            ).fetchall()
            ids = sorted(set(delivered[symbol]))
            holes = [(x + 1, y - 1) for x, y in itertools.pairwise(ids) if y > x + 1]
            assert gaps == holes, symbol


async def run_session(db: Path, url: str, until, seen: set) -> tuple[Session, PairSnapshot]:
    """The session until `until()`; `seen` collects feed states, headers and events."""
    plan = SessionPlan(PairView(*PAIR, "1s", 5, 600), db, replace(FAST, ws_url=url))
    session = Session(plan, on_event=seen.add)
    await session.start()
    snapshot = await session.refresh()
    while not until():
        snapshot = await session.refresh()
        stats = session.feed_stats()
        seen.add(stats.state)
        seen.add(feed_text("live", stats, 0.0, asyncio.get_running_loop().time()))
        await asyncio.sleep(0.05)
    return session, snapshot


async def settle(session: Session, server: DemoServer) -> PairSnapshot:
    """The server goes away; once the feed has seen it and 2 s have passed (the engine's
    settling time), the live snapshot holds every stored trade."""
    await server.stop()
    await wait_until(lambda: session.feed_stats().state is not FeedState.CONNECTED, 10)
    await asyncio.sleep(2.2)
    return await session.refresh()


@pytest.mark.parametrize("name", list(MATRIX))
async def test_fault(db_path, name):
    fault = MATRIX[name]
    server = DemoServer(record_delivered=True, seed=4, rate=120, faults=fault.faults)
    server.market.skip_ids_every = fault.skip_ids_every
    await server.start()
    seen: set = set()
    session, _ = await run_session(db_path, server.url, lambda: fault.done(server), seen)
    try:
        snapshot = await settle(session, server)
        stats = session.feed_stats()
    finally:
        await session.stop()
    assert_stored_once(db_path, server.delivered)
    assert_bars_match(snapshot, db_path)
    if fault.reconnects:  # each reconnect is announced (the header shows the same words)
        assert stats.reconnects >= 2
        assert any(s.startswith("disconnected (") for s in seen if isinstance(s, str))
    if "malformed" in name:
        assert stats.malformed == server.counters.malformed + server.counters.huge
        assert stats.ignored == server.counters.others
    if fault.faults.lag_ms:  # ETHUSDT really did arrive after newer BTCUSDT trades
        with sqlite3.connect(db_path) as conn:
            late = dict(
                conn.execute(
                    "SELECT symbol, avg(recv_us - ts_us) FROM trades JOIN series"
                    " ON series.id = trades.series GROUP BY symbol"
                )
            )
        assert late["ETHUSDT"] > late["BTCUSDT"] + 300_000
    if fault.skip_ids_every:  # the header says so
        assert stats.gaps > 0 and any(" gaps " in s for s in seen if isinstance(s, str))


# How long the server stays down. Backoff reaches its 0.5 s cap after four attempts, so
# even the short outage escalates fully and is refused many times; the full 20 s runs in
# the `slow` tier (`pytest -m slow`).
OUTAGES = [pytest.param(5.0, id="5s"), pytest.param(20.0, id="20s", marks=pytest.mark.slow)]


@pytest.mark.parametrize("outage_s", OUTAGES)
async def test_a_server_down_then_back(db_path, outage_s):
    """Refused connections with backoff for the whole outage, then recovery on the same
    address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = await DemoServer(record_delivered=True, port=port, seed=1, rate=100).start()
    seen: set = set()
    session, _ = await run_session(
        db_path, first.url, lambda: sum(map(len, first.delivered.values())) > 100, seen
    )
    try:
        await first.stop()
        loop = asyncio.get_running_loop()
        down_until = loop.time() + outage_s
        while loop.time() < down_until:  # the session keeps refreshing meanwhile
            await session.refresh()
            stats = session.feed_stats()
            seen.add(stats.state)
            seen.add(feed_text("live", stats, 0.0, loop.time()))
            await asyncio.sleep(0.2)
        stats = session.feed_stats()
        assert stats.reconnects >= outage_s / 0.5  # refused again and again, at the cap
        assert "ConnectionRefused" in (stats.last_error or "")
        second = await DemoServer(record_delivered=True, port=port, seed=2, rate=100).start()
        await wait_until(lambda: session.feed_stats().state is FeedState.CONNECTED, 5)
        await wait_until(lambda: sum(map(len, second.delivered.values())) > 100, 10)
        snapshot = await settle(session, second)
    finally:
        await session.stop()
    assert any("reconnecting in" in s for s in seen if isinstance(s, str))
    delivered = {s: first.delivered[s] + second.delivered[s] for s in PAIR}
    assert_stored_once(db_path, delivered)
    assert_bars_match(snapshot, db_path)


@pytest.mark.parametrize("outage_s", OUTAGES)
async def test_record_through_every_fault_in_a_row(tmp_path, isolated_home, outage_s):
    """`record` as a process: cuts, closes, shutdowns, junk, re-sends, skipped ids and an
    outage one after another; it logs each, keeps running and stores every delivered
    trade once."""
    db = tmp_path / "ticks.db"
    config = tmp_path / "fast.toml"
    config.write_text(
        "[feed]\nbackoff_initial = 0.05\nbackoff_max = 0.5\nstale_after = 0.6\n"
        "[store]\nflush_interval = 0.05\n"
    )
    faults = Faults(resend_on_reconnect=10)
    server = DemoServer(record_delivered=True, seed=6, rate=150, faults=faults)
    await server.start()
    proc = await asyncio.create_subprocess_exec(
        *pairs_tui_cmd("record", "btcusdt", "ethusdt", "--ws-url", server.url, "--no-backfill"),
        *("--db", str(db), "--config", str(config)),
        env=cli_env(isolated_home),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    steps = [
        ("cut_every", 15, lambda: server.counters.cuts >= 20),
        ("close_every", 30, lambda: server.counters.closes >= 2),
        ("shutdown_every", 30, lambda: server.counters.shutdowns >= 2),
        ("stall_after", 20, lambda: server.counters.stalls >= 1),
        ("huge_every", 40, lambda: server.counters.huge >= 2),
        ("malformed_every", 5, lambda: server.counters.malformed >= 10),
        ("other_every", 5, lambda: server.counters.others >= 10),
    ]
    for name, value, done in steps:
        setattr(faults, name, value)
        await wait_until(done, 30)
        setattr(faults, name, 0)
    server.market.skip_ids_every = 25
    total = sum(map(len, server.delivered.values()))
    await wait_until(lambda: sum(map(len, server.delivered.values())) > total + 200, 20)
    await server.stop()  # down: refused connections, backoff
    await asyncio.sleep(outage_s)
    assert proc.returncode is None  # still running
    back = await DemoServer(record_delivered=True, port=server.port, seed=7, rate=150).start()
    await wait_until(lambda: sum(map(len, back.delivered.values())) > 200, 20)
    await back.stop()
    await asyncio.sleep(0.5)
    proc.terminate()
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    log = out.decode()
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()
    assert "connection lost without a close frame (1006)" in log
    assert "closed by server (1001 going away)" in log
    assert "server announced shutdown" in log and "no data for 0.6s" in log
    assert "(1009): skipped" in log and "gap in BTCUSDT" in log
    assert "ConnectionRefusedError" in log  # while it was down
    assert_stored_once(db, {s: server.delivered[s] + back.delivered[s] for s in PAIR})


async def test_the_cockpit_survives_resizes_and_key_mashing_during_reconnects(db_path, tmp_path):
    from pairs_tui.ui.app import make_app
    from pairs_tui.ui.widgets import StatusLine

    server = await DemoServer(
        record_delivered=True, seed=8, rate=100, faults=Faults(cut_every=25)
    ).start()
    plan = SessionPlan(PairView(*PAIR, "1s", 5, 60), db_path, replace(FAST, ws_url=server.url))
    app = make_app(plan, refresh_every=0.25, export_dir=tmp_path)
    keys = ["1", "2", "3", "left_square_bracket", "right_square_bracket", "minus", "plus"]
    keys += ["space", "left", "right", "escape", "e"]
    sizes = [(80, 24), (160, 48), (40, 12), (30, 8), (120, 40), (100, 30), (200, 60)]
    rng = random.Random(3)
    headers: set[str] = set()
    async with app.run_test(size=(120, 40)) as pilot:
        loop = asyncio.get_running_loop()
        end = loop.time() + 6
        while loop.time() < end or server.counters.cuts < 5:
            await pilot.resize_terminal(*rng.choice(sizes))
            await pilot.press(*rng.choices(keys, k=4))
            headers.add(str(app.query_one(StatusLine).render()))
            await pilot.pause(0.02)
        await pilot.resize_terminal(120, 40)
        await pilot.press("escape", "1")
        await wait_until(lambda: app.snapshot is not None and app.snapshot.view.timeframe == "1s")
        await server.stop()
        await pilot.press("q")
    assert app.return_value == 0
    assert any("reconnecting in" in h for h in headers), headers
    assert_stored_once(db_path, server.delivered)


async def test_a_slow_disk_holds_the_feed_back_without_losing_a_trade(db_path, monkeypatch):
    """Every commit takes 0.6 s (an fsync stuck behind other I/O): the session's pending
    trades stop at the bound, the consumer stops reading until the disk catches up, the
    watchdog does not mistake that for a dead server, and nothing is dropped."""
    from pairs_tui.store import SqliteStore

    real_write = SqliteStore._write_once

    async def slow_write(self, rows, gaps):
        await asyncio.sleep(0.6)
        return await real_write(self, rows, gaps)

    monkeypatch.setattr(SqliteStore, "_write_once", slow_write)
    server = await DemoServer(record_delivered=True, seed=12, rate=2500).start()
    options = replace(FAST, ws_url=server.url, max_pending=1000, batch_rows=200, stale_after=0.3)
    session = Session(SessionPlan(PairView(*PAIR, "1s", 5, 600), db_path, options))
    await session.start()
    peak = 0
    try:
        feed = session.recording.ingest.feed
        while feed.counters.backpressure_waits < 3:
            peak = max(peak, feed.pending)
            await asyncio.sleep(0.002)
        await session.refresh()  # the engine reads while the writer is behind
        stale = feed.counters.stale_reconnects
        await server.stop()
        delivered = sum(len(set(ids)) for ids in server.delivered.values())
        await wait_until(lambda: sum(session.recording.ingest.stored.values()) == delivered, 30)
        await asyncio.sleep(2.2)  # the engine's settling time
        snapshot = await session.refresh()
    finally:
        await session.stop()
    assert 0 < peak <= 1000 and stale == 0  # bounded, and the wait was not taken as "stale"
    assert_stored_once(db_path, server.delivered)
    assert_bars_match(snapshot, db_path)
