"""Refresh cost must not grow with history: one `PairEngine.refresh` on 1 h and on 7 d of ticks.

Run by hand (not a test):  python benchmarks/refresh.py [--refreshes N] [--days D]

Two tick stores are built for BTCUSDT/ETHUSDT (prices near 90,000 and 3,000: ETH's log price
is a random walk, BTC's follows it with beta 1.2 plus a mean-reverting spread, both sampled
once a second, each trade adding 0.2 bp of noise; prices have 2 decimals, quantities 5). Both
end at the same instant T0 with the same 10 busy minutes (2,000 trades/s in total):

* "1 h" - before those, 50 quiet minutes at 20 trades/s in total (1.26 M rows);
* "7 d" - before those, D days minus 10 minutes at 20 trades/s (D = 7: ~13.3 M rows).

Rows are generated with numpy 50,000 at a time (polars turns the integers into decimal text
and the frame into row tuples) and committed through `TickStore.write`, one chunk being
generated while the previous one commits.

On each store an engine (1s bars, W = 20, L = 600) does its first, loading refresh untimed;
then each of N refreshes follows an append of the next 500 ms of trades at 2,000/s (simulated
time after T0, `now_us` = the simulated clock, so a 1s bar closes every other refresh). Only
`await engine.refresh(now_us=...)` is timed. The engine reads only the trades past its
watermark, so the 7 d refresh should cost what the 1 h one does.

The naive baseline is how the prototype this project replaces works, measured on the 1 h
store with the same appends: every refresh reads all ticks of the lookback (the last 600 s of
both symbols) with a plain sqlite3 query into pandas, resamples them to 1 s closes
(`resample("1s").last()`, empty bars dropped), inner-joins the two, and recomputes everything
(OLS hedge ratio with numpy lstsq, spread, rolling z and correlation with pandas, half-life,
statsmodels `adfuller` and `coint`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FIRST_ID = (4_300_000_000, 2_100_000_000)
T0 = 1_767_225_600_000_000  # 2026-01-01 00:00:00 UTC, µs: the end of the stored history
SECOND = 1_000_000
BUSY_S = 600  # the last 10 minutes before T0
BUSY_RATE, QUIET_RATE = 1_000, 10  # trades/s per symbol (2,000 and 20 in total)
STEP_US = 500_000  # simulated time appended before each refresh
CHUNK_ROWS = 25_000  # per symbol and write: 50,000 rows per transaction
# the market: per-second log prices
PRICE_B, BETA = 3_000.0, 1.2
PRICE_A = 90_000.0
VOL_B = 1e-4  # per-second log volatility of ETH (~56 % a year)
SPREAD_PHI, SPREAD_VOL = 0.95, 3e-5  # AR(1) spread: stationary sd ~1e-4, half-life ~14 s
TRADE_NOISE = 2e-5
QTY_MEAN = (0.02, 0.5)  # mean trade size, coins
VIEW = {"timeframe": "1s", "window": 20, "lookback": 600}
TARGET_GROWTH, TARGET_SPEEDUP = 1.3, 10.0


class Market:
    """Latent per-second log prices of both symbols over [start_us, end_us)."""

    def __init__(self, start_us: int, end_us: int, seed: int = 7) -> None:
        from scipy.signal import lfilter

        self.start_us = start_us
        n = (end_us - start_us) // SECOND + 1
        rng = np.random.default_rng(seed)
        walk = np.cumsum(rng.normal(0.0, VOL_B, n))
        spread = lfilter([1.0], [1.0, -SPREAD_PHI], rng.normal(0.0, SPREAD_VOL, n))
        at_t0 = (T0 - start_us) // SECOND  # anchor both prices at T0
        log_b = math.log(PRICE_B) + walk - walk[at_t0]
        log_a = math.log(PRICE_A) + BETA * (walk - walk[at_t0]) + spread
        self.log = (log_a, log_b)

    def trades(
        self, k: int, start_us: int, end_us: int, rate: int, first_id: int, series: int
    ) -> list:
        """Symbol k's trades in [start_us, end_us) at `rate`/s, ids from first_id, as rows."""
        period = SECOND // rate
        n = (end_us - start_us) // period
        rng = np.random.default_rng((k, start_us))
        ts = start_us + np.arange(n, dtype=np.int64) * period + rng.integers(0, period, n)
        log_p = self.log[k][(ts - self.start_us) // SECOND] + rng.normal(0.0, TRADE_NOISE, n)
        frame = pl.DataFrame(
            {
                "trade_id": first_id + np.arange(n, dtype=np.int64),
                "ts_us": ts,
                "cents": np.rint(np.exp(log_p) * 100).astype(np.int64),
                "qty": np.ceil(rng.exponential(QTY_MEAN[k] * 1e5, n)).astype(np.int64),
                "maker": rng.random(n) < 0.5,
            }
        )
        return frame.select(
            pl.lit(series, dtype=pl.Int64).alias("series"),
            "trade_id",
            "ts_us",
            pl.lit(None, dtype=pl.Int64).alias("recv_us"),
            decimal("cents", 2).alias("price"),
            decimal("qty", 5).alias("qty"),
            "maker",
        ).rows()


def decimal(column: str, places: int) -> pl.Expr:
    """An integer count of 10**-places as decimal text ("9012345" -> "90123.45")."""
    unit = 10**places
    frac = (pl.col(column) % unit).cast(pl.Utf8).str.zfill(places)
    return pl.format("{}.{}", pl.col(column) // unit, frac)


class Tape:
    """Writes the market's trades into a store, both symbols, ids continuing per symbol."""

    def __init__(self, market: Market, store) -> None:
        self.market = market
        self.store = store
        self.next_id = list(FIRST_ID)
        self.series = [1, 2]  # the store's ids for SYMBOLS, set by `build`
        self.now_us = T0
        self.rows = 0

    def chunk(self, start_us: int, end_us: int, rate: int) -> list:
        rows = []
        for k in range(len(SYMBOLS)):
            part = self.market.trades(k, start_us, end_us, rate, self.next_id[k], self.series[k])
            self.next_id[k] += len(part)
            rows += part
        return rows

    async def fill(self, start_us: int, end_us: int, rate: int, say) -> None:
        """History in 50,000-row transactions; the next chunk is built while one commits."""
        span = CHUNK_ROWS * SECOND // rate
        pending = None
        for t in range(start_us, end_us, span):
            rows = self.chunk(t, min(t + span, end_us), rate)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(self.store.write(rows))
            self.rows += len(rows)
            say(self.rows)
        if pending is not None:
            await pending

    async def advance(self, step_us: int = STEP_US) -> None:
        """Append the next `step_us` of busy trading and move the simulated clock."""
        rows = self.chunk(self.now_us, self.now_us + step_us, BUSY_RATE)
        await self.store.write(rows)
        self.rows += len(rows)
        self.now_us += step_us


async def build(store, market: Market, history_s: int, label: str) -> Tape:
    """Fill `store` with trades ending at T0: quiet history, then the busy last 10 minutes."""
    from pairs_tui.model import StreamKind

    tape = Tape(market, store)
    ids = await store.series_ids(SYMBOLS, StreamKind.TRADE)
    tape.series = [ids[s] for s in SYMBOLS]
    quiet = (history_s - BUSY_S) * 2 * QUIET_RATE
    expected = quiet + BUSY_S * 2 * BUSY_RATE
    clock = time.perf_counter()
    shown = [0.0]

    def say(rows: int) -> None:
        elapsed = time.perf_counter() - clock
        if elapsed - shown[0] >= 10 or rows == expected:
            shown[0] = elapsed
            print(
                f"  {label}: {rows:>12,} / {expected:,} rows  {elapsed:6.0f} s  "
                f"({rows / max(elapsed, 1e-9):,.0f} rows/s)",
                flush=True,
            )

    await tape.fill(T0 - history_s * SECOND, T0 - BUSY_S * SECOND, QUIET_RATE, say)
    await tape.fill(T0 - BUSY_S * SECOND, T0, BUSY_RATE, say)
    return tape


async def measure_engine(tape: Tape, refreshes: int, label: str) -> tuple[list[float], dict]:
    """Seconds of each timed refresh (after an untimed loading refresh), and some facts."""
    from pairs_tui.engine import PairEngine, PairView

    engine = PairEngine(tape.store, PairView(*SYMBOLS, **VIEW))
    clock = time.perf_counter()
    first = await engine.refresh(now_us=tape.now_us)
    load_s = time.perf_counter() - clock
    print(f"  {label}: loading refresh {load_s:.1f} s, {first.summary.n_bars} bars", flush=True)
    times, retested = [], 0
    previous = first
    for _ in range(refreshes):
        await tape.advance()
        gc.collect()
        clock = time.perf_counter()
        snapshot = await engine.refresh(now_us=tape.now_us)
        times.append(time.perf_counter() - clock)
        retested += snapshot.tests is not previous.tests
        previous = snapshot
    summary = snapshot.summary
    newest_bar = (tape.now_us - 1) // SECOND * SECOND
    if summary.n_bars != VIEW["lookback"] or summary.end_us != newest_bar or not snapshot.tests:
        raise SystemExit(f"{label}: unexpected last snapshot {summary}")
    facts = {"load_s": load_s, "retested": retested, "eg_pvalue": summary.eg_pvalue}
    return times, facts


def naive_refresh(conn: sqlite3.Connection, now_us: int) -> dict:
    """The prototype: everything from the lookback's ticks, recomputed from scratch."""
    import pandas as pd
    from statsmodels.tsa.stattools import adfuller, coint

    since = now_us - VIEW["lookback"] * SECOND
    closes = []
    for symbol in SYMBOLS:
        ticks = pd.read_sql_query(
            "SELECT ts_us, price FROM trades JOIN series ON series.id = trades.series"
            " WHERE symbol = ? AND kind = 'trade' AND ts_us >= ? AND ts_us < ?"
            " ORDER BY ts_us, trade_id",
            conn,
            params=(symbol, since, now_us),
        )
        prices = pd.Series(
            ticks["price"].astype(float).to_numpy(),
            index=pd.to_datetime(ticks["ts_us"].to_numpy(), unit="us"),
        )
        closes.append(prices.resample("1s").last().dropna())
    joined = pd.concat(closes, axis=1, join="inner", keys=["a", "b"])
    log_a, log_b = np.log(joined["a"]), np.log(joined["b"])
    design = np.column_stack([np.ones(len(log_b)), log_b.to_numpy()])
    (alpha, beta), *_ = np.linalg.lstsq(design, log_a.to_numpy(), rcond=None)
    spread = log_a - beta * log_b - alpha
    w = VIEW["window"]
    zscore = (spread - spread.rolling(w).mean()) / spread.rolling(w).std()
    corr = log_a.diff().rolling(w).corr(log_b.diff())
    lagged = np.column_stack([np.ones(len(spread) - 1), spread.to_numpy()[:-1]])
    (_, slope), *_ = np.linalg.lstsq(lagged, np.diff(spread.to_numpy()), rcond=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adf = adfuller(spread.to_numpy(), regression="c", autolag="AIC")
        eg = coint(log_a.to_numpy(), log_b.to_numpy())
    return {
        "bars": len(joined),
        "z": zscore.iloc[-1],
        "corr": corr.iloc[-1],
        "half_life": -math.log(2) / slope if slope < 0 else None,
        "adf": adf[1],
        "eg": eg[1],
    }


async def measure_naive(tape: Tape, refreshes: int) -> list[float]:
    conn = sqlite3.connect(tape.store.path)
    try:
        naive_refresh(conn, tape.now_us)  # warm-up: imports, page cache
        times = []
        for _ in range(refreshes):
            await tape.advance()
            gc.collect()
            clock = time.perf_counter()
            result = naive_refresh(conn, tape.now_us)
            times.append(time.perf_counter() - clock)
            if result["bars"] not in (VIEW["lookback"], VIEW["lookback"] + 1):
                raise SystemExit(f"naive baseline: unexpected result {result}")
    finally:
        conn.close()
    return times


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


async def run(args: argparse.Namespace, tmp: Path) -> dict:
    from pairs_tui.store import TickStore

    long_label = f"{args.days:g} d"
    history = {"1 h": 3_600, long_label: round(args.days * 86_400)}
    horizon = (max(args.refreshes, 1) + args.baseline_refreshes + 10) * STEP_US
    market = Market(T0 - history[long_label] * SECOND, T0 + horizon)
    out: dict = {"times": {}, "facts": {}, "counts": {}}
    for label, seconds in history.items():
        path = tmp / f"{label.replace(' ', '')}.db"
        print(f"building the {label} store ...", flush=True)
        store = await TickStore.open(path)
        try:
            tape = await build(store, market, seconds, label)
            out["counts"][label] = await store.counts()
            gc.collect()
            times, facts = await measure_engine(tape, args.refreshes, label)
            out["times"][f"ours, {label} store"] = times
            out["facts"][label] = facts
            if label == "1 h":
                print(f"  1 h: naive baseline, {args.baseline_refreshes} refreshes ...", flush=True)
                times = await measure_naive(tape, args.baseline_refreshes)
                out["times"]["naive baseline, 1 h store"] = times
        finally:
            await store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return out


def report(args: argparse.Namespace, out: dict) -> bool:
    import pandas
    import statsmodels

    med = statistics.median
    long_label = f"{args.days:g} d"
    print(
        f"\nrefresh benchmark: {'/'.join(SYMBOLS)}, 1s bars, W={VIEW['window']}, "
        f"L={VIEW['lookback']}; {args.refreshes} timed refreshes per store, each after "
        f"{STEP_US // 1000} ms of trades at {2 * BUSY_RATE:,}/s"
        f"\nPython {platform.python_version()}, numpy {np.__version__}, polars {pl.__version__}, "
        f"pandas {pandas.__version__}, statsmodels {statsmodels.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores\n"
    )
    print(f"{'store':<10}{'rows at T0':>14}  per symbol")
    for label, counts in out["counts"].items():
        per = ", ".join(f"{s} {n:,}" for s, n in counts.items())
        print(f"{label:<10}{sum(counts.values()):>14,}  {per}")
    print(f"\n{'refresh (ms)':<28}{'median':>10}{'p90':>10}{'min':>10}{'max':>10}")
    ms = {name: [x * 1000 for x in xs] for name, xs in out["times"].items()}
    for name, xs in ms.items():
        print(f"{name:<28}{med(xs):>10.1f}{p90(xs):>10.1f}{min(xs):>10.1f}{max(xs):>10.1f}")
    for label, facts in out["facts"].items():
        print(
            f"{label}: loading refresh {facts['load_s']:.1f} s (untimed); cointegration "
            f"recomputed on {facts['retested']} of {args.refreshes} refreshes, "
            f"last Engle-Granger p = {facts['eg_pvalue']:.3g}"
        )
    ours_short = med(ms["ours, 1 h store"])
    ours_long = med(ms[f"ours, {long_label} store"])
    naive = med(ms["naive baseline, 1 h store"])
    growth, speedup = ours_long / ours_short, naive / ours_short
    checks = (
        (f"{long_label} / 1 h <= {TARGET_GROWTH}", f"{growth:.2f}", growth <= TARGET_GROWTH),
        (
            f"baseline / ours >= {TARGET_SPEEDUP:g}x",
            f"{speedup:.1f}x",
            speedup >= TARGET_SPEEDUP,
        ),
    )
    print(f"\n{'target (medians)':<28}{'value':>10}  result")
    for name, value, ok in checks:
        print(f"{name:<28}{value:>10}  {'PASS' if ok else 'FAIL'}")
    return all(ok for *_, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=40, help="timed refreshes per store")
    parser.add_argument("--days", type=float, default=7.0, help="history of the long store")
    parser.add_argument("--baseline-refreshes", type=int, default=10)
    args = parser.parse_args()
    if args.refreshes < 2 or args.baseline_refreshes < 2:
        parser.error("need at least 2 refreshes of each kind")
    if round(args.days * 86_400) <= 3_600:
        parser.error("--days must be more than 1 hour (0.042 d)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up when killed, too
    tmp = Path(tempfile.mkdtemp(prefix="pairs-refresh-"))
    try:
        out = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report(args, out) else 1


if __name__ == "__main__":
    sys.exit(main())
