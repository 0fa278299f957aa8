"""Breaking things on purpose: killed recorders, two writers on one file, long-run pruning."""

from __future__ import annotations

import asyncio
import random
import sqlite3

from conftest import cli_env, pairs_tui_cmd, wait_until

from pairs_tui.feed.demo import DemoServer

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
        *pairs_tui_cmd("record", "btcusdt", "ethusdt", "--ws-url", url, "--db", str(db)),
        env=cli_env(home),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigkill_ten_times_loses_at_most_the_last_batch(tmp_path, isolated_home):
    """`record` killed (SIGKILL: no handler, no flush) mid-stream, ten times on one file.
    Each time the file opens sound, what was stored is a gap-free prefix of what the server
    sent on that connection, short by at most the last unflushed batch, and the next
    recorder carries on."""
    db = tmp_path / "ticks.db"
    rng = random.Random(7)
    # what a batch can hold: one flush interval of trades, plus the time the kill takes to
    # land and what was still in the socket buffers
    unflushed = RATE * (FLUSH_S + 0.25)
    async with DemoServer(record_delivered=True, seed=2, rate=RATE) as server:
        for run in range(10):
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
