"""`pairs-tui scan`: every pair of a list of symbols ranked by cointegration.

Each symbol's bars are loaded from the store once; each pair is analysed as `pairs-tui
export --what summary` analyses it (the same bars, the same `analyze`), but with the
cointegration tests of all pairs computed at once (`batched`: equal to statsmodels to
1e-9), so a row's numbers are that export's. Rows are sorted by the Engle-Granger
p-value, the most cointegrated first, pairs without one last with the reason in
`verdict`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl
from rich.table import Table

from pairs_tui.analytics import Summary
from pairs_tui.batched import cointegration_many
from pairs_tui.engine import PairView, analyze, closed_bars, join_bars, tests_key
from pairs_tui.export import csv_cell, load_symbol
from pairs_tui.model import StreamKind
from pairs_tui.store import TickStore

COLUMNS = (
    "symbol_a",
    "symbol_b",
    "n_bars",
    "beta",
    "alpha",
    "corr",
    "zscore",
    "adf_stat",
    "adf_pvalue",
    "eg_stat",
    "eg_pvalue",
    "half_life",
    "verdict",
)


SPARK_BARS = 30  # the newest z-scores a row keeps, for the scanner's sparkline


@dataclass(frozen=True, slots=True)
class ScanRow:
    symbol_a: str
    symbol_b: str
    summary: Summary | None  # None: no bars of one side in the store
    why: str | None = None  # what is missing, said in `verdict`
    recent_z: tuple[float, ...] = ()  # the last SPARK_BARS z-scores (NaN: none yet)

    @property
    def pair(self) -> tuple[str, str]:
        return self.symbol_a, self.symbol_b

    def values(self) -> dict[str, object]:
        """The row by column name: numbers, or None where there is none."""
        s = self.summary
        out: dict[str, object] = {"symbol_a": self.symbol_a, "symbol_b": self.symbol_b}
        for name in COLUMNS[2:-1]:
            value = getattr(s, name) if s is not None else None
            out[name] = None if isinstance(value, float) and not math.isfinite(value) else value
        out["verdict"] = (s.verdict or s.reason) if s is not None else self.why
        return out

    @property
    def rank(self) -> tuple[int, float]:
        p = self.summary.eg_pvalue if self.summary is not None else None
        return (0, p) if p is not None else (1, 0.0)


def pairs_of(symbols: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair, A the symbol given first."""
    return list(combinations(symbols, 2))


async def scan(
    store: TickStore,
    symbols: Sequence[str],
    view: PairView,
    kind: StreamKind,
    *,
    now_us: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[ScanRow]:
    """The rows of every pair, sorted; `progress(done, total)` after each pair."""
    bars = {s: await load_symbol(store, s, kind, view.timeframe) for s in symbols}
    return await asyncio.to_thread(rank_pairs, bars, symbols, view, kind, now_us, progress)


def rank_pairs(
    bars: Mapping[str, pl.DataFrame],
    symbols: Sequence[str],
    view: PairView,
    kind: StreamKind,
    now_us: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[ScanRow]:
    """Every pair's row from each symbol's bars at `view.timeframe`, most cointegrated
    first: CPU-bound, for a worker thread (`pairs-tui scan` and the watchlist)."""
    pairs = pairs_of(symbols)
    rows: dict[tuple[str, str], ScanRow] = {}
    for a, b in pairs:
        missing = [s for s in (a, b) if bars[s].is_empty()]
        if missing:
            why = f"no {kind.value}s of {' or '.join(missing)} in the store"
            rows[a, b] = ScanRow(a, b, None, why)
    todo = [p for p in pairs if p not in rows]
    rows |= {row.pair: row for row in _rows(todo, bars, view, now_us, progress)}
    return sorted((rows[p] for p in pairs), key=lambda r: r.rank)


_BLOCK = 1024  # pairs joined and tested at once: bounds memory on a 19,900-pair scan


def _rows(
    pairs: list[tuple[str, str]],
    bars: Mapping[str, pl.DataFrame],
    view: PairView,
    now_us: int,
    progress: Callable[[int, int], None],
) -> list[ScanRow]:
    """Every pair analysed, its cointegration tests computed for a block of pairs at once
    (`batched`, equal to statsmodels) and handed to `analyze` as already known."""
    out: list[ScanRow] = []
    for start in range(0, len(pairs), _BLOCK):
        block = pairs[start : start + _BLOCK]
        views = [PairView(a, b, view.timeframe, view.window, view.lookback) for a, b in block]
        joined = [join_bars(bars[a], bars[b]) for a, b in block]
        closed = [closed_bars(j, v, now_us) for j, v in zip(joined, views, strict=True)]
        tests = cointegration_many(
            [np.log(c["close"].to_numpy()) for c in closed],
            [np.log(c["close_b"].to_numpy()) for c in closed],
        )
        for v, j, c, t in zip(views, joined, closed, tests, strict=True):
            snapshot, _ = analyze(v, j, now_us=now_us, cached=(tests_key(v, c), t))
            recent = tuple(float(z) for z in snapshot.series.zscore[-SPARK_BARS:])
            out.append(ScanRow(v.symbol_a, v.symbol_b, snapshot.summary, recent_z=recent))
            progress(len(out), len(pairs))
    return out


def table(rows: Sequence[ScanRow], view: PairView) -> Table:
    """The rows for people: numbers rounded, cointegrated pairs first."""
    out = Table(
        title=f"{len(rows)} pairs, {view.timeframe} bars, W={view.window}, L={view.lookback}",
        title_justify="left",
    )
    for name in COLUMNS:
        out.add_column(
            name, justify="left" if name in ("symbol_a", "symbol_b", "verdict") else "right"
        )
    for row in rows:
        values = row.values()
        out.add_row(*(_shown(values[c]) for c in COLUMNS))
    return out


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def to_csv(rows: Sequence[ScanRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        values = row.values()
        writer.writerow(csv_cell(values[c]) for c in COLUMNS)
    return out.getvalue()


def to_json(rows: Sequence[ScanRow]) -> str:
    return json.dumps([row.values() for row in rows], indent=2, allow_nan=False) + "\n"
