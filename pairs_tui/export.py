"""CSV and JSON exports shared by `pairs-tui export` and the cockpit's hotkey.

Files are written to a temporary name beside the target and renamed into place, so a
failed export never leaves half a file. Every CSV gets a `<file>.meta.json` sidecar with
what is needed to reproduce and audit it later.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl

from pairs_tui import __version__
from pairs_tui.analytics import CONVENTIONS, Summary
from pairs_tui.engine import PairSnapshot, PairView, SymbolBars, analyze, join_bars
from pairs_tui.model import EPOCH, StreamKind, iso
from pairs_tui.store import StoreTarget, TickStore

BARS_HEADER = ("ts", "symbol", "open", "high", "low", "close", "volume", "trades")
ANALYTICS_HEADER = ("ts", "close_a", "close_b", "beta", "alpha", "spread", "zscore", "corr")


class NothingToExport(Exception):
    pass


def export_target(text: str) -> tuple[Path, bool]:
    """Where an export goes, and whether that is a directory to name files in: an
    existing directory (a trailing / says a directory is meant), or a file in one.
    ValueError says which directory is missing; none is ever made, nor a file named
    after a directory the user mistyped."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:
        raise ValueError(f"cannot expand {text}: no such user") from None
    if path.is_dir():
        return path, True
    meant_dir = text.endswith(("/", os.sep))
    missing = path if meant_dir else path.parent
    if meant_dir or not missing.is_dir():
        raise ValueError(f"no directory {missing}: create it first")
    return path, False


def parse_time(text: str) -> int:
    """ISO-8601 (a date, or a date and time; UTC unless it says otherwise) to µs."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def csv_cell(value: object) -> str:
    """One CSV cell, as every export writes it: a float in full (repr), a missing or
    non-finite value empty."""
    if isinstance(value, np.floating):
        value = float(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


async def load_pair(
    store: TickStore,
    view: PairView,
    kind: StreamKind,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All bars of both symbols between the times, folded chunk by chunk from the store."""
    a, b = [
        await load_symbol(store, s, kind, view.timeframe, since_us=since_us, until_us=until_us)
        for s in view.symbols
    ]
    return a, b


async def load_symbol(
    store: TickStore,
    symbol: str,
    kind: StreamKind,
    timeframe: str,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
) -> pl.DataFrame:
    """One symbol's bars between the times (trades and the exchange's history)."""
    side = SymbolBars(symbol, kind, [timeframe], until_us=until_us)
    await side.start_at(store, since_us)
    await side.update(store)
    await side.load_history(store, {timeframe: since_us or -(2**62)})
    return side.merged(timeframe)


async def pair_export(
    store: TickStore,
    view: PairView,
    kind: StreamKind,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    now_us: int,
) -> tuple[pl.DataFrame, pl.DataFrame, PairSnapshot]:
    bars_a, bars_b = await load_pair(store, view, kind, since_us=since_us, until_us=until_us)
    for symbol, bars in zip(view.symbols, (bars_a, bars_b), strict=True):
        if bars.is_empty():
            raise NothingToExport(f"no {kind.value}s of {symbol} in {store.path} for that time")
    snapshot, _ = await asyncio.to_thread(
        lambda: analyze(view, join_bars(bars_a, bars_b), now_us=now_us)
    )
    if snapshot.summary.n_bars == 0:
        raise NothingToExport(f"{view.symbol_a} and {view.symbol_b} have no bars in common")
    return bars_a, bars_b, snapshot


def bars_table(
    bars_a: pl.DataFrame, bars_b: pl.DataFrame, symbols: tuple[str, str]
) -> pl.DataFrame:
    return pl.concat(
        [
            bars_a.with_columns(symbol=pl.lit(symbols[0])),
            bars_b.with_columns(symbol=pl.lit(symbols[1])),
        ]
    ).sort("ts_us", "symbol")


def write_bars(out: TextIO, table: pl.DataFrame) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BARS_HEADER)
    for r in table.iter_rows(named=True):
        # volume is a float sum of decimal quantities: 8 decimals is Binance's own precision
        r["volume"] = round(r["volume"], 8)
        writer.writerow((iso(r["ts_us"]), r["symbol"], *(csv_cell(r[k]) for k in BARS_HEADER[2:])))


def write_analytics(out: TextIO, snapshot: PairSnapshot) -> None:
    s = snapshot.series
    beta = s.fit.beta if s.fit else None
    alpha = s.fit.alpha if s.fit else None
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ANALYTICS_HEADER)
    for i in range(len(s)):
        writer.writerow(
            (
                iso(int(s.ts_us[i])),
                csv_cell(float(s.close_a[i])),
                csv_cell(float(s.close_b[i])),
                csv_cell(beta),
                csv_cell(alpha),
                csv_cell(float(s.spread[i])),
                csv_cell(float(s.zscore[i])),
                csv_cell(float(s.corr[i])),
            )
        )


def summary_dict(summary: Summary) -> dict[str, object]:
    doc = asdict(summary)
    doc["start"] = iso(summary.start_us)
    doc["end"] = iso(summary.end_us)
    doc["tests_start"] = iso(summary.tests_start_us)
    doc["tests_end"] = iso(summary.tests_end_us)
    doc["conventions"] = CONVENTIONS
    return doc


def write_summary(out: TextIO, summary: Summary) -> None:
    json.dump(summary_dict(summary), out, indent=2, allow_nan=False)
    out.write("\n")


def meta(
    view: PairView,
    kind: StreamKind,
    what: str,
    ts_us: pl.Series,
    requested: tuple[int | None, int | None],
) -> dict[str, object]:
    """What a file holds (its own time span and rows) and how it was made."""

    def ver(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "what": what,
        "pair": list(view.symbols),
        "stream": kind.value,
        "timeframe": view.timeframe,
        "window": view.window,
        "lookback": view.lookback,
        "from": iso(requested[0]),
        "to": iso(requested[1]),
        "start": iso(int(ts_us.min())),  # type: ignore[arg-type]
        "end": iso(int(ts_us.max())),  # type: ignore[arg-type]
        "rows": len(ts_us),
        "conventions": CONVENTIONS,
        "bar_convention": "bars labelled by open time (UTC), left-closed; open/close = first/"
        "last trade by (time, id); no bar for an interval without trades",
        "versions": {
            "pairs-tui": __version__,
            "polars": ver("polars"),
            "numpy": ver("numpy"),
            "statsmodels": ver("statsmodels"),
        },
        "exported_at": iso(int(datetime.now(UTC).timestamp()) * 1_000_000),
    }


def rest_history(
    bars_a: pl.DataFrame, bars_b: pl.DataFrame, symbols: tuple[str, str]
) -> dict[str, object]:
    """Which bars hold the exchange's REST history rather than recorded trades alone."""
    per_symbol = {}
    for symbol, bars in zip(symbols, (bars_a, bars_b), strict=True):
        held = bars.filter(pl.col("rest")) if "rest" in bars.columns else bars.clear()
        per_symbol[symbol] = {
            "bars": held.height,
            "first": iso(held["ts_us"].min()) if held.height else None,  # type: ignore[arg-type]
            "last": iso(held["ts_us"].max()) if held.height else None,  # type: ignore[arg-type]
        }
    return {"rest_history": per_symbol, "rest_history_source": "Binance REST klines"}


def write_atomically(path: Path, fill: Callable[[TextIO], object]) -> None:
    """Write via a temporary file in the same directory, then rename into place."""
    directory = path.parent
    if not directory.is_dir():
        raise OSError(f"directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # an export is an ordinary file, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fill(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def emit(target: str | Path, fill: Callable[[TextIO], None], sidecar: dict | None) -> list[Path]:
    """Write to a path (with its sidecar) or to stdout for "-"; the paths written."""
    if str(target) == "-":
        buffer = io.StringIO()
        fill(buffer)
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
        return []
    path = Path(target).expanduser()
    write_atomically(path, fill)
    written = [path]
    if sidecar is not None:
        side = path.with_name(path.name + ".meta.json")
        write_atomically(side, lambda fh: fh.write(json.dumps(sidecar, indent=2) + "\n"))
        written.append(side)
    return written


async def run_export(
    db_path: StoreTarget,
    view: PairView,
    kind: StreamKind,
    what: str,
    output: str,
    since_us: int | None,
    until_us: int | None,
    *,
    asof: bool = False,
) -> list[Path]:
    """`pairs-tui export`: load, analyse and write one kind of export. With `asof`, the
    analytics as the cockpit had them at `until_us`: the bar forming then included, and
    only the bars that had ended by then counted as closed (as the engine does). The
    store is opened read-only: an export never writes to it."""
    now_us = until_us if asof and until_us is not None else time.time_ns() // 1000
    async with await TickStore.open(db_path, readonly=True) as store:
        bars_a, bars_b, snapshot = await pair_export(
            store, view, kind, since_us=since_us, until_us=until_us, now_us=now_us
        )
    return await asyncio.to_thread(
        write_export, what, output, view, kind, bars_a, bars_b, snapshot, (since_us, until_us)
    )


def write_export(
    what: str,
    output: str | Path,
    view: PairView,
    kind: StreamKind,
    bars_a: pl.DataFrame,
    bars_b: pl.DataFrame,
    snapshot: PairSnapshot,
    requested: tuple[int | None, int | None] = (None, None),
) -> list[Path]:
    history = rest_history(bars_a, bars_b, view.symbols)
    if what == "bars":
        table = bars_table(bars_a, bars_b, view.symbols)
        sidecar = meta(view, kind, what, table["ts_us"], requested) | history
        return emit(output, lambda fh: write_bars(fh, table), sidecar)
    if what == "analytics":
        sidecar = meta(view, kind, what, pl.Series(snapshot.series.ts_us), requested) | history
        return emit(output, lambda fh: write_analytics(fh, snapshot), sidecar)
    return emit(output, lambda fh: write_summary(fh, snapshot.summary), None)
