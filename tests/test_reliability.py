"""Breaking things on purpose: killed recorders, two writers on one file, long-run pruning."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import subprocess
import time

import pytest
from conftest import cli_env, pairs_tui_cmd, wait_until

from pairs_tui.feed.demo import DemoServer
from pairs_tui.model import StreamKind
from pairs_tui.store import TickStore

pytestmark = pytest.mark.server

RATE = 400.0  # trades per second per symbol
FLUSH_S = 0.25


def stored_ids(db, symbol: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT trade_id FROM trades JOIN series ON series.id = trades.series"
                " WHERE symbol = ? ORDER BY trade_id",
                (symbol,),
            )
        ]


async def start_record(db, url: str, home) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *pairs_tui_cmd(
            "record", "btcusdt", "ethusdt", "--ws-url", url, "--no-backfill", "--db", str(db)
        ),
        env=cli_env(home),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


# Ten kills take 15-20 s of wall clock: the `slow` tier (`pytest -m slow`); the default run
# kills four times, each at another point of a batch, on one file.
KILLS = [pytest.param(4, id="4"), pytest.param(10, id="10", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kills", KILLS)
async def test_sigkill_loses_at_most_the_last_batch(tmp_path, isolated_home, kills):
    """`record` killed (SIGKILL: no handler, no flush) mid-stream, again and again on one file.
    Each time the file opens sound, what was stored is a gap-free prefix of what the server
    sent on that connection, short by at most the last unflushed batch, and the next
    recorder carries on."""
    db = tmp_path / "ticks.db"
    rng = random.Random(7)
    # what a batch can hold: one flush interval of trades, plus the time the kill takes to
    # land and what was still in the socket buffers
    unflushed = RATE * (FLUSH_S + 0.5)
    async with DemoServer(record_delivered=True, seed=2, rate=RATE) as server:
        for run in range(kills):
            sent_before = {s: len(ids) for s, ids in server.delivered.items()}
            kept_before = {s: stored_ids(db, s) for s in server.delivered} if run else {}
            proc = await start_record(db, server.url, isolated_home)
            await wait_until(
                lambda sb=sent_before: (
                    sum(len(v) for v in server.delivered.values()) > sum(sb.values()) + RATE
                ),
                20,
            )
            await asyncio.sleep(rng.uniform(0.2, 1.0))  # somewhere inside a batch
            proc.kill()
            await proc.wait()
            await asyncio.sleep(0.1)  # the server notices the dead connection
            with sqlite3.connect(db) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            for symbol, delivered in server.delivered.items():
                sent = delivered[sent_before.get(symbol, 0) :]
                before = kept_before.get(symbol, [])
                now = stored_ids(db, symbol)
                assert now[: len(before)] == before, f"run {run}: earlier trades changed"
                kept = now[len(before) :]
                assert kept, f"run {run}: {symbol}: the recorder stored nothing"
                assert kept == sent[: len(kept)], f"run {run}: {symbol}: not a prefix"
                assert len(sent) - len(kept) <= unflushed, (run, symbol, len(sent), len(kept))


DAY_US = 86_400_000_000


async def fill_days(db, days: int, per_day: int, end_us: int, first_id: int = 0) -> None:
    """`days` days of trades of BTCUSDT and ETHUSDT ending at `end_us`, evenly spaced."""
    async with await TickStore.open(db) as store:
        ids = await store.series_ids(["BTCUSDT", "ETHUSDT"], StreamKind.TRADE)
        n = days * per_day
        start = end_us - days * DAY_US
        rows = [
            (ids[s], first_id + i, start + i * (days * DAY_US) // n, None, "100.5", "0.01", 0)
            for s in ids
            for i in range(n)
        ]
        for k in range(0, len(rows), 50_000):
            await store.write(rows[k : k + 50_000])


async def test_prune_deletes_only_old_trades_in_batches_and_gives_space_back(db_path):
    now = time.time_ns() // 1000
    await fill_days(db_path, 10, 20_000, now)
    size_before = db_path.stat().st_size
    cutoff = now - 7 * DAY_US
    with sqlite3.connect(db_path) as conn:
        (old,) = conn.execute("SELECT count(*) FROM trades WHERE ts_us < ?", (cutoff,)).fetchone()
        (total,) = conn.execute("SELECT count(*) FROM trades").fetchone()
    writes_during_prune = 0
    pruning = True

    async def writer() -> None:  # a recorder on its own connection, committing meanwhile
        nonlocal writes_during_prune
        async with await TickStore.open(db_path) as store:
            ids = await store.series_ids(["SOLUSDT"], StreamKind.TRADE)
            i = 0
            while pruning:
                await store.write([(ids["SOLUSDT"], i, now, now, "1.5", "2", True)])
                writes_during_prune += 1
                i += 1
                await asyncio.sleep(0.005)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    steps: list[int] = []
    writes_at: list[int] = []  # the writer's count at each batch the prune committed

    def progress(deleted: int) -> None:
        steps.append(deleted)
        writes_at.append(writes_during_prune)

    async with await TickStore.open(db_path) as store:
        deleted = await store.prune(cutoff, batch=5_000, progress=progress)
    pruning = False
    await task
    assert deleted == old and len(steps) > 10 and steps[-1] == deleted
    # between the batches the writer got in, again and again: never shut out
    assert writes_at[-1] - writes_at[0] >= len(steps) // 2
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT min(ts_us) FROM trades").fetchone()[0] >= cutoff
        (left,) = conn.execute(
            "SELECT count(*) FROM trades JOIN series ON series.id = trades.series"
            " WHERE symbol != 'SOLUSDT'"
        ).fetchone()
    assert left == total - old
    assert db_path.stat().st_size < size_before * 0.8  # 30 % of rows gone, and their space


def test_prune_command_and_retention_while_recording(tmp_path, isolated_home):
    db = tmp_path / "ticks.db"
    now = time.time_ns() // 1000

    async def demo_store() -> None:  # the demo records into it below
        async with await TickStore.open(db) as store:
            await store.claim("demo")

    asyncio.run(demo_store())
    asyncio.run(fill_days(db, 1, 1_000, now - 5 * DAY_US // 2))  # 2.5 to 3.5 days old
    asyncio.run(fill_days(db, 1, 1_000, now - DAY_US // 2, first_id=10_000))  # 0.5 to 1.5
    env = cli_env(isolated_home)
    done = subprocess.run(
        pairs_tui_cmd("prune", "--older-than", "2d", "--db", str(db)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert re.match(
        r"pruned 2,000 trades older than \S+Z from \S+ \(\S+ MiB -> \S+ MiB\)", done.stdout
    )
    config = tmp_path / "keep.toml"
    config.write_text('[store]\nretention = "12h"\n')
    record = ("record", "btcusdt", "ethusdt", "--demo", "--duration", "2", "--db", str(db))
    rec = subprocess.run(
        pairs_tui_cmd(*record, "--config", str(config)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rec.returncode == 0, rec.stderr
    # each symbol's newest trade stays, so the next start still sees where ids left off
    assert "retention: pruned 1,998 trades older than" in rec.stdout
    with sqlite3.connect(db) as conn:
        old = conn.execute("SELECT count(*) FROM trades WHERE ts_us < ?", (now - DAY_US // 4,))
        (count,) = conn.execute("SELECT count(*) FROM trades").fetchone()
        assert old.fetchone() == (2,) and count > 20  # the two newest old ones, and new ones


async def test_two_recorders_and_readers_on_one_store(tmp_path, isolated_home):
    """Two `record` processes write the same file while a session reads it: no "database
    is locked", no duplicate, nothing missing."""
    from pairs_tui.engine import PairView
    from pairs_tui.session import Session, SessionPlan

    db = tmp_path / "ticks.db"
    async with DemoServer(record_delivered=True, seed=9, rate=RATE) as server:
        first = await start_record(db, server.url, isolated_home)
        await wait_until(db.exists, 10)
        second = await start_record(db, server.url, isolated_home)
        reader = Session(SessionPlan(PairView("BTCUSDT", "ETHUSDT", "1s", 5, 60), db, None))
        await reader.start()
        refreshes = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 4
        while loop.time() < end:
            snapshot = await reader.refresh()
            refreshes += 1
            await asyncio.sleep(0.05)
        await reader.stop()
        server.paused = True
        await wait_until(  # what was in flight arrives and is committed
            lambda: all(set(stored_ids(db, s)) >= set(ids) for s, ids in server.delivered.items()),
            20,
        )
        for proc in (first, second):
            proc.terminate()
        errors = [(await proc.communicate())[1].decode() for proc in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], errors
    assert not any("locked" in e or "Traceback" in e for e in errors), errors
    assert refreshes > 20 and snapshot.summary.n_bars >= 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for symbol, delivered in server.delivered.items():
        assert stored_ids(db, symbol) == sorted(set(delivered)), symbol
        assert len(delivered) > len(set(delivered))  # both really recorded the same trades


async def test_the_cockpits_session_prunes_by_retention_too(db_path):
    from pairs_tui.engine import PairView
    from pairs_tui.feed.binance import FeedOptions
    from pairs_tui.session import Session, SessionPlan

    now = time.time_ns() // 1000
    await fill_days(db_path, 1, 1_000, now - DAY_US)  # one to two days old
    async with DemoServer(seed=3, rate=50) as server:
        plan = SessionPlan(
            PairView("BTCUSDT", "ETHUSDT", "1s", 5, 60),
            db_path,
            FeedOptions(ws_url=server.url),
            retention_s=3600.0,
        )
        events: list[str] = []
        session = Session(plan, on_event=events.append)
        await session.start()
        await wait_until(lambda: any("retention: pruned 1,998 trades" in e for e in events), 10)
        await session.stop()
    with sqlite3.connect(db_path) as conn:
        old = conn.execute("SELECT count(*) FROM trades WHERE ts_us < ?", (now - 3600e6,))
        assert old.fetchone() == (2,)  # each symbol's newest old trade marks where ids were


async def test_retention_prunes_again_every_interval(db_path):
    from pairs_tui.retention import keep_pruned

    now = time.time_ns() // 1000
    await fill_days(db_path, 1, 100, now - 2 * DAY_US)
    events: list[str] = []
    task = asyncio.create_task(keep_pruned(db_path, 86_400.0, events.append, every_s=0.3))
    await wait_until(lambda: len(events) == 1, 10)  # at start
    await fill_days(db_path, 1, 100, now - 3 * DAY_US, first_id=1_000)  # more old trades
    await wait_until(lambda: len(events) == 2, 10)  # and again, by itself
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert events[0].startswith("retention: pruned 198 trades older than")
    assert events[1].startswith("retention: pruned 200 trades older than")
