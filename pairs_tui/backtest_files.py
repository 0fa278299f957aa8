"""A backtest of the store: a pair's joined bars in, the run (for `pairs-tui backtest` and
the cockpit's `b` panel) and its files out.

The bars are the ones `pairs-tui export` reads (trades and the exchange's history, between
the times asked for), joined as everywhere else; the maths is `backtest.py`'s. Each file
is written atomically with a `.meta.json` sidecar, as the exports are.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import shlex
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path
from typing import TextIO

import polars as pl

from pairs_tui.backtest import (
    BacktestParams,
    BacktestResult,
    PairBars,
    Summary,
    Trade,
    backtest,
    too_few_bars,
)
from pairs_tui.engine import PairView, join_bars
from pairs_tui.export import csv_cell, emit, load_pair, meta
from pairs_tui.model import StreamKind, iso
from pairs_tui.store import StoreTarget, TickStore, target_text

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


class TooFewBars(ValueError):
    """The store holds fewer joined bars than the rule needs (the message says how many)."""


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """One backtest of a pair's stored bars, with what it ran on."""

    view: PairView
    kind: StreamKind
    params: BacktestParams
    bars: PairBars
    result: BacktestResult
    span: tuple[int | None, int | None]  # --from, --to: bars opening in [from, to)

    def command(self, db: StoreTarget) -> str:
        """The `pairs-tui backtest` line that writes this run's files."""
        view, p = self.view, self.params
        args = ["pairs-tui", "backtest", *view.symbols, "--timeframe", view.timeframe]
        args += ["--window", str(view.window), "--lookback", str(view.lookback)]
        args += ["--entry", _arg(p.entry), "--exit", _arg(p.exit), "--stop", _arg(p.stop)]
        args += ["--fee-bps", _arg(p.fee_bps), "--hedge", p.hedge]
        if p.hedge == "kalman":
            args += ["--delta", _arg(p.delta), "--ve", _arg(p.ve)]
        if self.kind is not StreamKind.TRADE:
            args += ["--stream", self.kind.value]
        for flag, at in zip(("--from", "--to"), self.span, strict=True):
            if at is not None:
                args += [flag, str(iso(at))]
        return shlex.join([*args, "--db", target_text(db), "-o", "DIR"])


def _arg(value: float) -> str:
    """A number as short as it can be written and read back the same."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


async def run(
    store: TickStore,
    view: PairView,
    kind: StreamKind,
    params: BacktestParams,
    span: tuple[int | None, int | None],
) -> BacktestRun:
    """Backtest the pair's bars opening in the span; TooFewBars when they cannot do."""
    bars = await load_bars(store, view, kind, since_us=span[0], until_us=span[1])
    if (problem := too_few_bars(len(bars), params)) is not None:
        raise TooFewBars(f"{view.symbol_a}/{view.symbol_b} {view.timeframe}: {problem}")
    result = await asyncio.to_thread(backtest, bars, params, view.tf_us)
    return BacktestRun(view, kind, params, bars, result, span)


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


def number_text(value: object) -> str:
    """A summary or sweep value as the command prints it and the cockpit shows it."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_rows(result: BacktestResult) -> list[tuple[str, str]]:
    return [(name, number_text(value)) for name, value in summary_dict(result).items()]


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
