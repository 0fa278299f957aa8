"""`pairs-tui backtest`: a pair's joined bars from the store in, the backtest's files out.

The bars are the ones `pairs-tui export` reads (trades and the exchange's history, between
the times asked for), joined as everywhere else; the maths is `backtest.py`'s. Each file
is written atomically with a `.meta.json` sidecar, as the exports are.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, astuple, fields
from pathlib import Path
from typing import TextIO

import polars as pl

from pairs_tui.backtest import BacktestParams, BacktestResult, PairBars, Summary, Trade
from pairs_tui.engine import PairView, join_bars
from pairs_tui.export import csv_cell, emit, load_pair, meta
from pairs_tui.model import StreamKind, iso
from pairs_tui.store import TickStore

TRADE_COLUMNS = tuple(f.name for f in fields(Trade))
SWEEP_COLUMNS = ("entry", "exit", "stop", *(f.name for f in fields(Summary)))
EQUITY_COLUMNS = ("ts", "position", "equity", "z", "beta")
_TIMES = {"signal_ts", "entry_ts", "exit_ts"}


async def load_bars(
    store: TickStore,
    view: PairView,
    kind: StreamKind,
    *,
    since_us: int | None,
    until_us: int | None,
) -> PairBars:
    """The pair's joined bars between the times (empty when a side has none)."""
    bars_a, bars_b = await load_pair(store, view, kind, since_us=since_us, until_us=until_us)
    joined = join_bars(bars_a, bars_b)
    return PairBars(
        *(joined[c].to_numpy() for c in ("ts_us", "open", "close", "open_b", "close_b"))
    )


def write(
    out_dir: Path,
    result: BacktestResult,
    bars: PairBars,
    params: BacktestParams,
    view: PairView,
    kind: StreamKind,
    requested: tuple[int | None, int | None],
) -> list[Path]:
    """trades.csv, equity.csv and summary.json (each with its sidecar) into out_dir."""
    ts = pl.Series("ts_us", bars.ts_us)
    written: list[Path] = []
    for name, fill in (
        ("trades.csv", lambda fh: _trades(fh, result.trades)),
        ("equity.csv", lambda fh: _equity(fh, result, bars)),
        ("summary.json", lambda fh: fh.write(json.dumps(summary_dict(result), indent=2) + "\n")),
    ):
        sidecar = meta(view, kind, f"backtest {name}", ts, requested)
        sidecar["backtest"] = asdict(params)
        written += emit(out_dir / name, fill, sidecar)
    return written


def summary_dict(result: BacktestResult) -> dict[str, object]:
    """The summary for JSON: a non-finite number (an inf sharpe) as null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in asdict(result.summary).items()
    }


def _trades(out: TextIO, trades: tuple[Trade, ...]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRADE_COLUMNS)
    for trade in trades:
        writer.writerow(
            iso(v) if name in _TIMES else csv_cell(v)
            for name, v in zip(TRADE_COLUMNS, astuple(trade), strict=True)
        )


def _equity(out: TextIO, result: BacktestResult, bars: PairBars) -> None:
    curve = result.curve
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EQUITY_COLUMNS)
    for row in zip(bars.ts_us, curve.position, curve.equity, curve.z, curve.beta, strict=True):
        t, position, equity, z, beta = row
        writer.writerow((iso(int(t)), int(position), csv_cell(equity), csv_cell(z), csv_cell(beta)))


def sweep_rows(results: list[tuple[BacktestParams, Summary]]) -> list[tuple[object, ...]]:
    """One row per combination, in SWEEP_COLUMNS order."""
    return [(p.entry, p.exit, p.stop, *astuple(s)) for p, s in results]


def write_sweep(
    out_dir: Path,
    results: list[tuple[BacktestParams, Summary]],
    bars: PairBars,
    view: PairView,
    kind: StreamKind,
    requested: tuple[int | None, int | None],
) -> list[Path]:
    """sweep.csv (with its sidecar) into out_dir, best sharpe first."""

    def fill(out: TextIO) -> None:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(SWEEP_COLUMNS)
        for row in sweep_rows(results):
            writer.writerow(csv_cell(v) for v in row)

    sidecar = meta(view, kind, "backtest sweep.csv", pl.Series("ts_us", bars.ts_us), requested)
    sidecar["backtest"] = {k: v for k, v in asdict(results[0][0]).items()
                           if k not in ("entry", "exit", "stop")}  # fmt: skip
    return emit(out_dir / "sweep.csv", fill, sidecar)
