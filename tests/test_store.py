"""The tick store on real SQLite files and a real PostgreSQL server: schema, idempotence,
bad files and databases, sharing. Tests taking `store_at` run on both backends."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pairs_tui.model import Gap, HistoryBar, StreamKind
from pairs_tui.store import SCHEMA_VERSION, StoreError, TickStore

pytestmark = pytest.mark.unit


def row(tid: int, series: int = 1, price: str = "102571.17000000"):
    return (
        series,
        tid,
        1_762_578_805_372_000 + tid,
        1_762_578_805_400_000,
        price,
        "0.00100000",
        True,
    )


async def test_schema_wal_and_version(db_path):
    async with await TickStore.open(db_path):
        pass
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM trades WHERE series = 1 AND ts_us > 5 ORDER BY ts_us"
    ).fetchall()
    assert "trades_by_time" in str(plan)  # reading one symbol by time uses the index


async def test_prices_keep_their_exact_text_and_inserts_are_idempotent(store_at):
    async with await TickStore.open(store_at) as store:
        assert await store.series_ids(["BTCUSDT"], StreamKind.TRADE) == {"BTCUSDT": 1}
        rows = [row(1, price="0.00000638"), row(2, price="102571.17000000"), row(3, price="1e-8")]
        assert await store.write(rows) == 3
        assert await store.write([*rows, row(4)]) == 1  # re-delivery adds only the new one
        stored = await store.trades("BTCUSDT")
    assert [r[4] for r in stored] == ["0.00000638", "102571.17000000", "1e-8", "102571.17000000"]
    assert stored[0] == rows[0]


async def test_trade_and_aggtrade_ids_do_not_collide(store_at):
    async with await TickStore.open(store_at) as store:
        trade = await store.series_ids(["BTCUSDT"], StreamKind.TRADE)
        agg = await store.series_ids(["BTCUSDT"], StreamKind.AGG_TRADE)
        assert trade != agg
        await store.write([row(1, trade["BTCUSDT"]), row(1, agg["BTCUSDT"])])
        assert await store.trade_ids("BTCUSDT", StreamKind.TRADE) == [1]
        assert await store.trade_ids("BTCUSDT", StreamKind.AGG_TRADE) == [1]


async def test_gaps_are_stored_with_the_batch(store_at):
    gap = Gap("ETHUSDT", StreamKind.TRADE, 10, 12, 99)
    async with await TickStore.open(store_at) as store:
        ids = await store.series_ids(["ETHUSDT"], StreamKind.TRADE)
        await store.write([row(1, ids["ETHUSDT"])], [gap])
        assert await store.gaps() == [gap]
    assert gap.missing == 3


async def test_a_gap_another_recorder_filled_is_not_recorded(store_at):
    """Two recorders on one file: the later one's tracking starts at the store's last id
    and may take trades the first one stored meanwhile for missing ones."""
    async with await TickStore.open(store_at) as store:
        s = (await store.series_ids(["ETHUSDT"], StreamKind.TRADE))["ETHUSDT"]
        await store.write([row(i, s) for i in (10, 11, 12, 20, 21, 31, 33)])

        def gap(a: int, b: int) -> Gap:
            return Gap("ETHUSDT", StreamKind.TRADE, a, b, 99)

        await store.write(
            [row(50, s)],
            [gap(10, 12), gap(20, 25), gap(18, 21), gap(30, 34), gap(40, 45)],
        )
        assert await store.gaps() == [gap(22, 25), gap(18, 19), gap(30, 34), gap(40, 45)]


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(StoreError, match="not a pairs-tui SQLite database"):
        await TickStore.open(path)
    assert path.read_text().startswith("these are my notes")  # left untouched


async def test_missing_directory_and_directory_path(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        await TickStore.open(tmp_path / "nope" / "ticks.db")
    with pytest.raises(StoreError, match="is a directory"):
        await TickStore.open(tmp_path)
    with pytest.raises(StoreError, match="is not a regular file"):
        await TickStore.open("/dev/null")
    assert not Path("/dev/null-journal").exists()


async def test_newer_schema_is_refused(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer pairs-tui"):
        await TickStore.open(db_path)


async def test_two_writers_and_a_reader_share_one_file(store_at):
    """Two recorders of the same trades (say two machines' feeds) never duplicate or lock."""
    stores = [await TickStore.open(store_at) for _ in range(3)]
    writer_a, writer_b, reader = stores
    ids = [await s.series_ids(["BTCUSDT"], StreamKind.TRADE) for s in stores]
    assert ids[0] == ids[1] == ids[2] == {"BTCUSDT": 1}  # one series, whoever asks

    async def write(store, start):
        for base in range(start, 4000, 500):
            await store.write([row(i) for i in range(base, base + 500)])

    await asyncio.gather(write(writer_a, 0), write(writer_b, 0), reader.counts())
    assert await reader.trade_ids("BTCUSDT") == list(range(4000))
    assert await reader.counts() == {"BTCUSDT": 4000}
    for store in stores:
        await store.close()


async def test_concurrent_first_open_migrates_once(db_path):
    stores = await asyncio.gather(*(TickStore.open(db_path) for _ in range(4)))
    for store in stores:
        await store.close()
    assert sqlite3.connect(db_path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_history_and_trades_written_at_once_share_the_connection(store_at):
    """The recorder's batches and history (backfill, filled gaps) are written by two
    tasks through one connection: each transaction waits for the other, none fails."""
    async with await TickStore.open(store_at) as store:
        [series] = (await store.series_ids(["BTCUSDT"], StreamKind.TRADE)).values()
        trades = [
            store.write([(series, i, 1_700_000_000_000_000 + i, None, "1.5", "0.1", 0)])
            for i in range(50)
        ]
        bars = [
            store.add_history(
                "BTCUSDT",
                StreamKind.TRADE,
                "1m",
                [HistoryBar(i * 60_000_000, 1, 2, 0.5, 1.5, 3, 4)],
            )
            for i in range(50)
        ]
        await asyncio.gather(*(x for pair in zip(trades, bars, strict=True) for x in pair))
        assert len(await store.trade_ids("BTCUSDT")) == 50
        assert len(await store.history("BTCUSDT", StreamKind.TRADE, "1m")) == 50
        assert await store.history_rev() == (50, 0)
