"""Pair scan: ADF + Engle-Granger for every pair of S symbols, batched against statsmodels.

Run by hand (not a test):
    python benchmarks/scan.py [--symbols 50] [--bars 600] [--runs 5] [--sample 100]
                              [--big 200] [--full]

One core: OMP/OPENBLAS/MKL threads are set to 1 before numpy is imported, and the process
is pinned to one CPU where the OS allows it.

The market is synthetic, L one-minute log closes per symbol: a common random walk with
per-symbol loadings, three sector walks, an Ornstein-Uhlenbeck deviation per symbol (half
life 3..50 bars) and, for half of the symbols, an idiosyncratic walk (the check below
prints how many pairs come out cointegrated). Fixed seed: every run scans the same tape.

Each run measures, one after the other:

* baseline  - what the app does per pair, in a Python loop: `ols_fit`, `spread_of`,
              statsmodels `adfuller(spread, "c", autolag="AIC")` and
              `coint(log a, log b, trend="c", autolag="aic")`. Timed on a fixed sample of
              --sample pairs and extrapolated to all S(S-1)/2 pairs (--full times them all);
* batched   - `pairs_tui.batched.cointegration_many` over all the pairs (the same five
              numbers and the ADF critical values);
* big scan  - the batched scan of --big symbols (19,900 pairs for 200), no baseline;
* whole     - `scan.rank_pairs` on the same closes as bar frames: every column of every
              pair (the bars joined, z, corr, OLS and the batched tests), what `pairs-tui
              scan` and the cockpit's scanner run, for S and for --big symbols.

The ratio baseline/batched is taken per run. Before timing, the batched numbers of the
sampled pairs are checked against statsmodels (same lags, statistics and p-values to 1e-6).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS

import argparse  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

SEED = 20_250_101
TARGET_SECONDS, TARGET_RATIO = 1.0, 20.0


def synthetic_market(n_symbols: int, bars: int, seed: int = SEED) -> np.ndarray:
    """(n_symbols, bars) log closes of one-minute bars, see the module docstring."""
    rng = np.random.default_rng(seed)
    common = np.cumsum(rng.standard_normal(bars)) * 8e-4
    sectors = np.cumsum(rng.standard_normal((3, bars)), axis=1) * 5e-4
    sector = rng.integers(0, 3, n_symbols)
    loading = rng.uniform(0.6, 1.6, (n_symbols, 1))
    phi = np.exp(-math.log(2) / rng.uniform(3, 50, n_symbols))  # OU: half-life 3..50 bars
    shocks = rng.standard_normal((n_symbols, bars)) * 4e-4
    ou = np.zeros((n_symbols, bars))
    for t in range(1, bars):
        ou[:, t] = phi * ou[:, t - 1] + shocks[:, t]
    wander = np.cumsum(rng.standard_normal((n_symbols, bars)) * 3e-4, axis=1)
    wander *= rng.random((n_symbols, 1)) < 0.5
    level = np.log(rng.uniform(0.05, 1e5, (n_symbols, 1)))
    return level + loading * common + sectors[sector] + ou + wander


def all_pairs(n_symbols: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n_symbols), 2))


def baseline_pair(log_a: np.ndarray, log_b: np.ndarray) -> tuple[float, ...] | None:
    """The app's per-pair path: OLS, spread, adfuller, coint (statsmodels)."""
    from statsmodels.tsa.stattools import adfuller, coint

    from pairs_tui.analytics import ols_fit, spread_of

    fit = ols_fit(log_a, log_b)
    if fit is None:
        return None
    spread = spread_of(log_a, log_b, fit)
    stat, pvalue, lags, _, _, _ = adfuller(spread, regression="c", autolag="AIC")
    eg_stat, eg_pvalue, _ = coint(log_a, log_b, trend="c", autolag="aic")
    return stat, pvalue, lags, eg_stat, eg_pvalue


def time_baseline(logs: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    start = time.perf_counter()
    for i, j in pairs:
        baseline_pair(logs[i], logs[j])
    return time.perf_counter() - start


def time_batched(logs: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    from pairs_tui.batched import cointegration_many

    a = [logs[i] for i, _ in pairs]
    b = [logs[j] for _, j in pairs]
    start = time.perf_counter()
    cointegration_many(a, b)
    return time.perf_counter() - start


def bar_frames(logs: np.ndarray) -> dict:
    """The closes as one-minute bar frames of each symbol, as the store would give them."""
    import polars as pl

    from pairs_tui.bars import empty_bars

    n = logs.shape[1]
    ts = (1_735_689_600_000_000 // 60_000_000 + np.arange(n)) * 60_000_000
    out = {}
    for i, row in enumerate(logs):
        close = np.exp(row)
        frame = {"ts_us": ts, "open": close, "high": close, "low": close, "close": close}
        frame |= {"volume": np.ones(n), "trades": np.ones(n, dtype=np.int64)}
        out[f"S{i:03d}USDT"] = pl.DataFrame(frame).cast(empty_bars().schema)
    return out


def time_whole(frames: dict) -> float:
    """`scan.rank_pairs`: every column of every pair (joins, z, corr, OLS, the batched
    tests), what `pairs-tui scan` and the cockpit's scanner run on the bars."""
    from pairs_tui.engine import PairView
    from pairs_tui.model import StreamKind
    from pairs_tui.scan import rank_pairs

    symbols = list(frames)
    view = PairView(symbols[0], symbols[1], "1m", 20, len(next(iter(frames.values()))))
    now = int(next(iter(frames.values()))["ts_us"][-1]) + 120_000_000
    start = time.perf_counter()
    rank_pairs(frames, symbols, view, StreamKind.TRADE, now)
    return time.perf_counter() - start


def check_equal(logs: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[float, int, int]:
    """Batched against statsmodels on `pairs`: (max rel. difference, lag mismatches, coint.)"""
    from pairs_tui.batched import cointegration_many

    ours = cointegration_many([logs[i] for i, _ in pairs], [logs[j] for _, j in pairs])
    worst, mismatches, cointegrated = 0.0, 0, 0
    for (i, j), got in zip(pairs, ours, strict=True):
        ref = baseline_pair(logs[i], logs[j])
        if got is None or ref is None:
            raise SystemExit(f"pair {i},{j}: batched {got}, statsmodels {ref}")
        mine = (got.adf_stat, got.adf_pvalue, got.eg_stat, got.eg_pvalue)
        theirs = (ref[0], ref[1], ref[3], ref[4])
        for x, y in zip(mine, theirs, strict=True):
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
        mismatches += got.adf_lags != ref[2]
        cointegrated += got.eg_pvalue < 0.05
    return worst, mismatches, cointegrated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=600)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sample", type=int, default=100, help="pairs timed for the baseline")
    parser.add_argument("--big", type=int, default=200, help="symbols of the big scan (0: none)")
    parser.add_argument("--full", action="store_true", help="time the baseline on every pair")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    warnings.simplefilter("ignore")  # adfuller's FutureWarning about its return type

    logs = synthetic_market(args.symbols, args.bars)
    pairs = all_pairs(args.symbols)
    rng = np.random.default_rng(SEED)
    sample = pairs
    if not args.full and args.sample < len(pairs):
        picked = sorted(rng.choice(len(pairs), args.sample, replace=False).tolist())
        sample = [pairs[k] for k in picked]
    big_logs = synthetic_market(args.big, args.bars, SEED + 1) if args.big else None
    big_pairs = all_pairs(args.big) if args.big else []

    worst, mismatches, cointegrated = check_equal(logs, sample)  # also warms up the imports
    print(
        f"check on {len(sample)} pairs: max rel. difference {worst:.1e}, "
        f"{mismatches} lag mismatches, {cointegrated} cointegrated at 5 %",
        flush=True,
    )
    if worst > 1e-6 or mismatches:
        raise SystemExit("batched and statsmodels disagree")

    scale = len(pairs) / len(sample)
    base, batch, big, whole, whole_big = [], [], [], [], []
    frames = bar_frames(logs)
    big_frames = bar_frames(big_logs) if big_logs is not None else None
    for run in range(1, args.runs + 1):
        gc.collect()
        base.append(time_baseline(logs, sample) * scale)
        gc.collect()
        batch.append(time_batched(logs, pairs))
        gc.collect()
        whole.append(time_whole(frames))
        if big_logs is not None and big_frames is not None:
            gc.collect()
            big.append(time_batched(big_logs, big_pairs))
            gc.collect()
            whole_big.append(time_whole(big_frames))
        print(
            f"run {run}: baseline {base[-1]:7.2f} s  batched {batch[-1]:6.3f} s  "
            f"ratio {base[-1] / batch[-1]:6.1f}" + (f"  big scan {big[-1]:6.2f} s" if big else ""),
            flush=True,
        )
    ok = report(args, len(pairs), len(sample), base, batch, big, len(big_pairs))
    med = statistics.median
    print(
        f"\nwhole scan (scan.rank_pairs, every column): {args.symbols} symbols {med(whole):.2f} s"
    )
    if whole_big:
        print(f"whole scan: {args.big} symbols {med(whole_big):.2f} s (medians of {args.runs})")
    return 0 if ok else 1


def report(
    args: argparse.Namespace,
    n_pairs: int,
    n_sample: int,
    base: list[float],
    batch: list[float],
    big: list[float],
    n_big: int,
) -> bool:
    import scipy
    import statsmodels

    med = statistics.median
    ratios = [b / x for b, x in zip(base, batch, strict=True)]
    how = "every pair timed" if n_sample == n_pairs else f"{n_sample} pairs timed, extrapolated"
    print(
        f"\nscan benchmark: {args.symbols} symbols ({n_pairs:,} pairs) x {args.bars} bars, "
        f"{args.runs} runs, one core\nPython {platform.python_version()}, numpy "
        f"{np.__version__}, scipy {scipy.__version__}, statsmodels {statsmodels.__version__}\n"
        f"baseline: {how}\n"
    )
    print(f"{'measure':<44}{'median':>10}{'min':>10}{'max':>10}")
    rows = [
        ("baseline, statsmodels loop (s)", base, ".2f"),
        ("batched (s)", batch, ".3f"),
        ("ratio baseline/batched", ratios, ".1f"),
    ]
    if big:
        rows.append((f"big scan, {args.big} symbols, {n_big:,} pairs (s)", big, ".2f"))
    for name, xs, f in rows:
        print(f"{name:<44}{med(xs):>10{f}}{min(xs):>10{f}}{max(xs):>10{f}}")
    print(f"{'baseline per pair (ms)':<44}{1e3 * med(base) / n_pairs:>10.2f}")
    print(f"{'batched per pair (us)':<44}{1e6 * med(batch) / n_pairs:>10.1f}")
    if big:
        print(f"{'big scan per pair (us)':<44}{1e6 * med(big) / n_big:>10.1f}")
    checks = (
        (f"batched <= {TARGET_SECONDS:g} s", f"{med(batch):.3f}", med(batch) <= TARGET_SECONDS),
        (f"ratio >= {TARGET_RATIO:g}", f"{med(ratios):.1f}", med(ratios) >= TARGET_RATIO),
    )
    print(f"\n{'target':<44}{'median':>10}  result")
    for name, value, ok in checks:
        print(f"{name:<44}{value:>10}  {'PASS' if ok else 'FAIL'}")
    return all(ok for *_, ok in checks)


if __name__ == "__main__":
    sys.exit(main())
