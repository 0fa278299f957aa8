"""Backtest of the z rule: vectorised hedge and z against a per-bar loop, and a sweep.

Run by hand (not a test):
    python benchmarks/backtest.py [--bars 10080] [--lookback 600] [--window 20] [--runs 5]

One core (BLAS threads 1, the process pinned where the OS allows). The series is a
synthetic cointegrated pair of 1m bars: ln b a random walk, ln a = 1.3 ln b + an
Ornstein-Uhlenbeck deviation (half-life 30 bars); opens are the previous closes.

Each run measures:

* baseline - the same backtest with the hedge and z computed bar by bar: an OLS
             (numpy lstsq) over the L bars ending at each bar, then the W-bar z of its
             spread, as a notebook would write it;
* shipped  - `pairs_tui.backtest.backtest` (cumulative sums), the same trades checked
             equal to the baseline's before timing;
* sweep    - 100 combinations (entry 1.5..2.4 x exit 0, 0.25, 0.5, 0.75, 1.0 x stop 0,
             4): the hedge and z once, `simulate` and `summarize` per combination.

Targets: 10,080 bars at L = 600 in <= 0.5 s and >= 20x the baseline; the sweep <= 5 s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS

import argparse  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pairs_tui.backtest import (  # noqa: E402
    BacktestParams,
    PairBars,
    backtest,
    hedge_ratios,
    simulate,
    summarize,
    zscores,
)

SEED = 20_261_201
MINUTE_US = 60_000_000
TARGET_S, TARGET_RATIO, TARGET_SWEEP_S = 0.5, 20.0, 5.0


def market(n: int) -> PairBars:
    rng = np.random.default_rng(SEED)
    log_b = 4.0 + np.cumsum(rng.normal(0, 1e-3, n))
    dev = np.zeros(n)
    phi = 0.5 ** (1 / 30)
    for t in range(1, n):
        dev[t] = phi * dev[t - 1] + rng.normal(0, 4e-4)
    close_a, close_b = np.exp(1.3 * log_b + 0.2 + dev), np.exp(log_b)
    open_a, open_b = np.r_[close_a[0], close_a[:-1]], np.r_[close_b[0], close_b[:-1]]
    ts = (1_764_547_200_000_000 // MINUTE_US + np.arange(n)) * MINUTE_US
    return PairBars(ts.astype(np.int64), open_a, close_a, open_b, close_b)


def baseline(bars: PairBars, params: BacktestParams) -> tuple:
    """Hedge and z bar by bar, then the same trading."""
    log_a, log_b = np.log(bars.close_a), np.log(bars.close_b)
    n, lb, w = len(bars), params.lookback, params.window
    beta, z = np.full(n, np.nan), np.full(n, np.nan)
    for t in range(lb - 1, n):
        x = np.c_[log_b[t - lb + 1 : t + 1], np.ones(lb)]
        (b, a), *_ = np.linalg.lstsq(x, log_a[t - lb + 1 : t + 1], rcond=None)
        beta[t] = b
        if t >= w - 1:
            s = log_a[t - w + 1 : t + 1] - b * log_b[t - w + 1 : t + 1] - a
            z[t] = (s[-1] - s.mean()) / s.std(ddof=1)
    return simulate(bars, z, beta, params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=10_080)
    parser.add_argument("--lookback", type=int, default=600)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    bars = market(args.bars)
    params = BacktestParams(args.window, args.lookback, 2.0, 0.5, 4.0, 5.0)

    shipped_trades = backtest(bars, params, MINUTE_US).trades
    base_trades, _ = baseline(bars, params)
    assert len(shipped_trades) == len(base_trades) > 0, "the two disagree on the trades"
    for ours, theirs in zip(shipped_trades, base_trades, strict=True):
        assert (ours.entry_ts, ours.exit_ts, ours.reason) == (
            theirs.entry_ts,
            theirs.exit_ts,
            theirs.reason,
        )
        assert abs(ours.net - theirs.net) <= 1e-9 * max(1.0, abs(theirs.net))
    print(f"check: {len(shipped_trades)} trades, the same in both", flush=True)

    grid = list(
        itertools.product(
            np.round(np.arange(1.5, 2.45, 0.1), 2), (0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 4.0)
        )
    )
    base, ours, sweep = [], [], []
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        baseline(bars, params)
        base.append(time.perf_counter() - start)
        start = time.perf_counter()
        backtest(bars, params, MINUTE_US)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        log_a, log_b = np.log(bars.close_a), np.log(bars.close_b)
        beta, _ = hedge_ratios(log_a, log_b, params)
        z = zscores(log_a, log_b, beta, params.window)
        for entry, exit_, stop in grid:
            combo = BacktestParams(args.window, args.lookback, entry, exit_, stop, 5.0)
            trades, curve = simulate(bars, z, beta, combo)
            summarize(trades, curve, tf_us=MINUTE_US, look_ahead=False)
        sweep.append(time.perf_counter() - start)
        print(
            f"run {run}: baseline {base[-1]:.3f} s  shipped {ours[-1]:.4f} s  "
            f"ratio {base[-1] / ours[-1]:.1f}  sweep of {len(grid)} {sweep[-1]:.2f} s",
            flush=True,
        )
    med = statistics.median
    print(
        f"\nbacktest benchmark: {args.bars:,} 1m bars, L={args.lookback}, W={args.window}, "
        f"{args.runs} runs, one core; Python {platform.python_version()}, numpy "
        f"{np.__version__}\n"
    )
    ratio = med(b / o for b, o in zip(base, ours, strict=True))
    rows = (
        ("baseline, per-bar hedge and z (s)", f"{med(base):.3f}", ""),
        ("shipped backtest (s)", f"{med(ours):.4f}", f"<= {TARGET_S:g}", med(ours) <= TARGET_S),
        ("ratio baseline/shipped", f"{ratio:.1f}", f">= {TARGET_RATIO:g}", ratio >= TARGET_RATIO),
        (
            f"sweep of {len(grid)} combinations (s)",
            f"{med(sweep):.2f}",
            f"<= {TARGET_SWEEP_S:g}",
            med(sweep) <= TARGET_SWEEP_S,
        ),
    )
    ok = True
    print(f"{'measure (medians)':<40}{'value':>10}  target")
    for name, value, target, *passed in rows:
        verdict = "" if not passed else ("PASS" if passed[0] else "FAIL")
        ok &= all(passed)
        print(f"{name:<40}{value:>10}  {target} {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
