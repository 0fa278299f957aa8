"""`pairs-tui db copy` of a 1-day store, SQLite into PostgreSQL and back, timed.

Run by hand (not a test):  python benchmarks/db_copy.py [--rows N] [--runs K]

The store: one day of BTCUSDT at N trades (default 3,456,000: 40 a second, two busy
symbols' worth), generated as a Binance dump (benchmarks/import_dump.py's `Dump`, its
times stretched over 24 h) and imported into a SQLite file (untimed). Each run then times,
on a fresh PostgreSQL database of a throwaway durable server on loopback
(benchmarks/ingest.py's `start_postgres`):

* copy into PostgreSQL - `copy_store(sqlite, postgresql)`;
* copy again           - the same, run again: what a resumed copy costs when all is there;
* copy back            - `copy_store(postgresql, new sqlite file)`.

The baseline, in the same run: importing the dump itself into a fresh SQLite file
(`import_file`). Every copy is checked to count the N trades on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_dump import FIRST_US, NAME, SYMBOL, Dump
from ingest import start_postgres

DAY_US = 86_400_000_000


async def import_into(source: Path, db: Path) -> float:
    from pairs_tui.importer import identify, import_file
    from pairs_tui.store import TickStore

    async with await TickStore.open(db) as store:
        clock = time.perf_counter()
        await import_file(store, identify(source))
        return time.perf_counter() - clock


async def copy(source: Path | str, destination: Path | str, rows: int) -> float:
    from pairs_tui.db_copy import copy_store

    clock = time.perf_counter()
    done = await copy_store(source, destination)
    elapsed = time.perf_counter() - clock
    if done.counts != {SYMBOL: (rows, rows)}:
        raise SystemExit(f"copy counted {done.counts}, expected {rows:,} on both sides")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_456_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pairs-copy-"))
    cluster = start_postgres()
    times: dict[str, list[float]] = {"import": [], "to_pg": [], "again": [], "back": []}
    try:
        dump = Dump(args.rows)
        span = int(dump.time_us[-1] - FIRST_US) or 1
        dump.time_us = FIRST_US + (dump.time_us - FIRST_US) * (DAY_US - 1) // span
        source = tmp / f"{NAME}.csv"
        dump.write_csv(source)
        store = tmp / "day.db"
        asyncio.run(import_into(source, store))
        for run in range(1, args.runs + 1):
            times["import"].append(asyncio.run(import_into(source, tmp / f"base{run}.db")))
            team = cluster.new_database()
            times["to_pg"].append(asyncio.run(copy(store, team, args.rows)))
            times["again"].append(asyncio.run(copy(store, team, args.rows)))
            times["back"].append(asyncio.run(copy(team, tmp / f"back{run}.db", args.rows)))
            print(f"run {run}: " + "  ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    base = med(times["import"])
    print(f"\ndb copy benchmark: 1 day of {SYMBOL}, {args.rows:,} trades x {args.runs} runs\n")
    print(f"{'measure':<34}{'median s':>10}{'trades/s':>12}{'x import':>10}")
    for name, key in (
        ("baseline: import the dump (SQLite)", "import"),
        ("db copy SQLite -> PostgreSQL", "to_pg"),
        ("db copy again (all there)", "again"),
        ("db copy PostgreSQL -> SQLite", "back"),
    ):
        t = med(times[key])
        print(f"{name:<34}{t:>10.1f}{args.rows / t:>12,.0f}{t / base:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
