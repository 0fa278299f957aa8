"""Import throughput: rows/s of `import_file` on a Binance trades dump, against bare SQLite.

Run by hand (not a test):  python benchmarks/import_dump.py [--rows N] [--runs K] [--zip]
                                                        [--postgres]

A spot trades dump in the data.binance.vision layout is generated first:
`BTCUSDT-trades-2025-01.csv`, no header, the 7 columns id,price,qty,quote_qty,time,
is_buyer_maker,is_best_match, times in µs (16 digits, as Binance writes them since 2025),
decimals with 8 places, booleans True/False. numpy draws the numbers (a price random walk
near 94,000, exponential gaps and sizes); polars formats them and writes the file in
200,000-row chunks. With --zip the file is also deflated into `BTCUSDT-trades-2025-01.zip`
(one member, as downloaded) and the zip is what gets imported.

Each run measures, one after the other:

* import      - `import_file` into a fresh store (`TickStore.open` untimed): read, split into
                chunks, parse and validate with polars, INSERT OR IGNORE, one transaction;
* bare insert - the floor any importer pays: plain `sqlite3` `executemany` of the same rows,
                already parsed into the tuples the importer inserts, 200,000 per call, one
                transaction, into a fresh store of the same schema (created by
                `TickStore.open`, then closed), with the store's pragmas (WAL, synchronous
                NORMAL). Only `executemany` and COMMIT are timed, not building the tuples.

With --postgres, each run also imports the file into a fresh database of a throwaway
PostgreSQL server on loopback (durable settings; see benchmarks/ingest.py), beside SQLite.

The ratio import/bare is taken per run. After the first import the store must hold exactly
the dump's rows, and importing the same file again must add none.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

SYMBOL = "BTCUSDT"
NAME = f"{SYMBOL}-trades-2025-01"
FIRST_ID = 4_367_290_836
FIRST_US = 1_735_689_600_000_000  # 2025-01-01 00:00:00 UTC
CHUNK = 200_000
INSERT = "INSERT OR IGNORE INTO trades VALUES (?, ?, ?, NULL, ?, ?, ?)"  # as the importer
TARGET_RATE = 300_000


class Dump:
    """The dump's numbers, drawn once; text and row tuples are made chunk by chunk."""

    def __init__(self, rows: int, seed: int = 2025) -> None:
        rng = np.random.default_rng(seed)
        self.rows = rows
        self.ids = FIRST_ID + np.arange(rows, dtype=np.int64)
        gaps = np.rint(rng.exponential(500_000, rows)).astype(np.int64)  # µs, ~2 trades/s
        self.time_us = FIRST_US + np.cumsum(gaps) - gaps[0]
        steps = rng.integers(-60, 61, rows)  # cents
        self.cents = np.maximum(9_400_000 + np.cumsum(steps), 100)
        self.qty = np.ceil(rng.exponential(2_000, rows)).astype(np.int64)  # 1e-5 BTC units
        self.maker = rng.random(rows) < 0.5

    def frame(self, start: int, stop: int) -> pl.DataFrame:
        """Rows [start, stop) with every column as the dump's text."""
        cut = slice(start, stop)
        numbers = pl.DataFrame(
            {
                "id": self.ids[cut],
                "price": self.cents[cut] * 1_000_000,  # in 1e-8
                "qty": self.qty[cut] * 1_000,
                "quote_qty": self.cents[cut] * self.qty[cut] * 10,
                "time": self.time_us[cut],
                "maker": self.maker[cut],
            }
        )
        true, false = pl.lit("True"), pl.lit("False")
        return numbers.select(
            pl.col("id").cast(pl.Utf8),
            decimal("price", 8),
            decimal("qty", 8),
            decimal("quote_qty", 8),
            pl.col("time").cast(pl.Utf8),
            pl.when(pl.col("maker")).then(true).otherwise(false).alias("is_buyer_maker"),
            true.alias("is_best_match"),
        )

    def parsed(self, start: int, stop: int) -> list[tuple]:
        """Rows [start, stop) as the tuples the importer inserts."""
        text = self.frame(start, stop)
        return text.select(
            pl.lit(1, dtype=pl.Int64).alias("series"),  # the first series of a fresh store
            pl.Series("trade_id", self.ids[start:stop]),
            pl.Series("ts_us", self.time_us[start:stop]),
            "price",
            "qty",
            pl.Series("buyer_maker", self.maker[start:stop]).cast(pl.Int64),
        ).rows()

    def write_csv(self, path: Path) -> None:
        with path.open("wb") as fh:
            for start in range(0, self.rows, CHUNK):
                frame = self.frame(start, min(start + CHUNK, self.rows))
                frame.write_csv(fh, include_header=False, quote_style="never")


def decimal(column: str, places: int) -> pl.Expr:
    """An integer count of 10**-places as decimal text (9400012000000, 8 -> "94000.12000000")."""
    unit = 10**places
    frac = (pl.col(column) % unit).cast(pl.Utf8).str.zfill(places)
    return pl.format("{}.{}", pl.col(column) // unit, frac).alias(column)


PG_TARGET_RATE = 200_000  # the team store's import target (issue: PostgreSQL)


def unlink_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def import_run(source: Path, db: Path | str, rows: int, *, check: bool) -> tuple[float, dict]:
    """rows/s of one import into a fresh store; with `check`, verify counts and a re-import."""
    from pairs_tui.importer import identify, import_file
    from pairs_tui.store import TickStore

    store = await TickStore.open(db)
    facts: dict = {}
    try:
        dump = identify(source)
        gc.collect()
        clock = time.perf_counter()
        result = await import_file(store, dump)
        rate = rows / (time.perf_counter() - clock)
        if (result.rows, result.inserted) != (rows, rows):
            raise SystemExit(f"import read {result.rows:,}, inserted {result.inserted:,}")
        if check:
            facts["stored"] = (await store.counts()).get(SYMBOL, 0)
            clock = time.perf_counter()
            again = await import_file(store, dump)
            facts["reimport_s"] = time.perf_counter() - clock
            facts["reimport_rows"] = again.rows
            facts["reimport_inserted"] = again.inserted
            facts["stored_after"] = (await store.counts()).get(SYMBOL, 0)
    finally:
        await store.close()
        if isinstance(db, Path):
            unlink_db(db)
    return rate, facts


def bare_run(dump: Dump, db: Path) -> float:
    """rows/s of plain executemany of the parsed rows, one transaction, store schema."""
    from pairs_tui.store import TickStore

    async def create() -> None:
        from pairs_tui.model import StreamKind

        store = await TickStore.open(db)
        assert await store.series_ids([SYMBOL], StreamKind.TRADE) == {SYMBOL: 1}
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")  # journal_mode WAL is kept in the file
        gc.collect()
        busy = 0.0
        conn.execute("BEGIN IMMEDIATE")
        for start in range(0, dump.rows, CHUNK):
            batch = dump.parsed(start, min(start + CHUNK, dump.rows))
            clock = time.perf_counter()
            conn.executemany(INSERT, batch)
            busy += time.perf_counter() - clock
        clock = time.perf_counter()
        conn.execute("COMMIT")
        busy += time.perf_counter() - clock
        stored = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    finally:
        conn.close()
        unlink_db(db)
    if stored != dump.rows:
        raise SystemExit(f"bare insert stored {stored:,} rows, expected {dump.rows:,}")
    return dump.rows / busy


def report(args, name: str, size: str, ours: list, bare: list, facts: dict, pg: list) -> bool:
    med = statistics.median
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    print(
        f"\nimport benchmark: {name} ({size}), {args.rows:,} rows x {args.runs} runs"
        f"\nPython {platform.python_version()}, numpy {np.__version__}, "
        f"polars {pl.__version__}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores\n"
    )
    print(f"{'measure':<30}{'median':>12}{'min':>12}{'max':>12}")
    rows = [("import_file (rows/s)", ours), ("bare SQLite insert (rows/s)", bare)]
    if pg:
        rows.append(("import into PostgreSQL (rows/s)", pg))
    for name, xs in rows:
        print(f"{name:<32}{med(xs):>12,.0f}{min(xs):>12,.0f}{max(xs):>12,.0f}")
    print(f"{'ratio import/bare':<30}{med(ratios):>12.3f}{min(ratios):>12.3f}{max(ratios):>12.3f}")
    print(
        f"re-import of the same file: {facts['reimport_rows']:,} rows read in "
        f"{facts['reimport_s']:.1f} s, {facts['reimport_inserted']:,} inserted"
    )
    added = facts["stored_after"] - facts["stored"]
    checks = [
        (f"import >= {TARGET_RATE:,} rows/s", f"{med(ours):,.0f}", med(ours) >= TARGET_RATE),
        ("stored rows == dump rows", f"{facts['stored']:,}", facts["stored"] == args.rows),
        (
            "re-import adds 0",
            f"{facts['reimport_inserted']:,} / {added:,}",
            facts["reimport_inserted"] == 0 and added == 0,
        ),
    ]
    if pg:
        pg_ok = med(pg) >= PG_TARGET_RATE
        checks.append((f"PostgreSQL >= {PG_TARGET_RATE:,}/s", f"{med(pg):,.0f}", pg_ok))
    print(f"\n{'target':<30}{'value':>12}  result")
    for name, value, ok in checks:
        print(f"{name:<30}{value:>12}  {'PASS' if ok else 'FAIL'}")
    return all(ok for *_, ok in checks)


def start_postgres():
    from ingest import start_postgres as start  # benchmarks/ingest.py: one way to start it

    return start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--zip", action="store_true", help="import the .zip, not the .csv")
    parser.add_argument("--postgres", action="store_true", help="also into PostgreSQL")
    args = parser.parse_args()
    if args.rows < 1 or args.runs < 1:
        parser.error("--rows and --runs must be positive")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up when killed, too
    tmp = Path(tempfile.mkdtemp(prefix="pairs-import-"))
    cluster = start_postgres() if args.postgres else None
    pg: list[float] = []
    try:
        clock = time.perf_counter()
        dump = Dump(args.rows)
        source = tmp / f"{NAME}.csv"
        dump.write_csv(source)
        size = f"{source.stat().st_size / 1e6:,.0f} MB"
        print(f"wrote {source.name}: {size}", end="", flush=True)
        if args.zip:
            with zipfile.ZipFile(tmp / f"{NAME}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
                archive.write(source, arcname=source.name)
            source.unlink()
            source = tmp / f"{NAME}.zip"
            size = f"{source.stat().st_size / 1e6:,.0f} MB, {size} unzipped"
            print(f", {source.name}: {source.stat().st_size / 1e6:,.0f} MB", end="")
        print(f" in {time.perf_counter() - clock:.1f} s", flush=True)
        ours, bare, facts = [], [], {}
        for run in range(1, args.runs + 1):
            db = tmp / f"import{run}.db"
            rate, got = asyncio.run(import_run(source, db, args.rows, check=run == 1))
            ours.append(rate)
            facts.update(got)
            bare.append(bare_run(dump, tmp / f"bare{run}.db"))
            line = f"run {run}: import {ours[-1]:>10,.0f} rows/s  bare {bare[-1]:>10,.0f} rows/s"
            if cluster is not None:
                target = cluster.new_database()
                pg.append(asyncio.run(import_run(source, target, args.rows, check=False))[0])
                line += f"  postgresql {pg[-1]:>10,.0f} rows/s"
            print(line, flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report(args, source.name, size, ours, bare, facts, pg) else 1


if __name__ == "__main__":
    sys.exit(main())
