"""Import Binance historical trade dumps (the data.binance.vision layout) into the store.

Spot and futures `trades` (id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match])
and `aggTrades` (agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match])
as `.csv` or the downloaded `.zip`, with or without a header, times in ms or µs.

A file is read in chunks of lines (memory stays bounded for multi-GB files), parsed by
polars, and inserted in one transaction per file: a bad row rolls the whole file back
and is reported with its line number. Skipping rows whose key exists makes a re-import add nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import re
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TextIO

import polars as pl

from pairs_tui.model import StreamKind, SymbolError, normalise_symbols
from pairs_tui.store import ImportRow, TickStore

CHUNK_LINES = 200_000
_NAME = re.compile(r"^([A-Za-z0-9]+)-(trades|aggTrades)-", re.IGNORECASE)
_BOOLS = {"true": True, "false": False}
_MICROS = 10**15
# Times must be ms or µs since the epoch, from 2009 (before Bitcoin) to 2100: seconds and
# nanoseconds would otherwise be misread.
_EARLIEST_MS, _LATEST_MS = 1_230_768_000_000, 4_102_444_800_000


class DumpError(ValueError):
    """A file that cannot be imported; the message names the file (and line)."""


@dataclass(frozen=True, slots=True)
class DumpFile:
    path: Path
    symbol: str
    kind: StreamKind


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: Path
    symbol: str
    kind: StreamKind
    rows: int
    inserted: int


def identify(path: Path, symbol: str | None = None) -> DumpFile:
    """Symbol and kind from the Binance file name (`BTCUSDT-trades-2024-01.zip`)."""
    match = _NAME.match(path.name)
    if symbol is None:
        if match is None:
            raise DumpError(f"{path}: cannot tell the symbol from the file name; pass --symbol")
        symbol = match.group(1)
    try:
        (name,) = normalise_symbols([symbol])
    except SymbolError as exc:
        raise DumpError(f"{path}: {exc}") from None
    kind = None
    if match is not None:
        kind = StreamKind.AGG_TRADE if match.group(2).lower() == "aggtrades" else StreamKind.TRADE
    return DumpFile(path, name, kind or _sniff_kind(path))


@contextmanager
def open_text(path: Path) -> Iterator[tuple[TextIO, int]]:
    """The CSV as text (a .zip's single .csv member is streamed), and its size in bytes."""
    if not path.is_file():
        raise DumpError(f"{path}: no such file")
    if path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DumpError(f"{path}: not a valid zip file") from None
        with archive:
            members = [i for i in archive.infolist() if i.filename.lower().endswith(".csv")]
            if len(members) != 1:
                raise DumpError(f"{path}: expected one .csv inside, found {len(members)}")
            with archive.open(members[0]) as raw:
                yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), members[0].file_size
    else:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            yield fh, path.stat().st_size


def _sniff_kind(path: Path) -> StreamKind:
    """Without a telling name: trades have a boolean in column 6, aggTrades an id."""
    with open_text(path) as (fh, _):
        for row in islice(csv.reader(fh), 2):
            if len(row) >= 6 and row[0].strip().lstrip("-").isdigit():
                return StreamKind.TRADE if row[5].lower() in _BOOLS else StreamKind.AGG_TRADE
    raise DumpError(f"{path}: cannot tell trades from aggTrades; name it like Binance does")


def _columns(kind: StreamKind) -> tuple[int, int, int, int, int, tuple[int, ...]]:
    """Indexes of id, price, qty, time, is_buyer_maker, and the allowed column counts."""
    if kind is StreamKind.TRADE:
        return 0, 1, 2, 4, 5, (6, 7)
    return 0, 1, 2, 5, 6, (7, 8)


def parse_chunk(lines: list[str], first_line: int, dump: DumpFile, series: int) -> list[ImportRow]:
    """Validate and convert CSV lines; raise DumpError naming the first bad line."""
    i_id, i_price, i_qty, i_time, i_maker, widths = _columns(dump.kind)
    try:
        frame = pl.read_csv(
            io.StringIO("".join(lines)),
            has_header=False,
            infer_schema=False,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.PolarsError:
        frame = None
    if frame is None or frame.width not in widths:
        _find_bad_line(lines, first_line, dump, widths)
        raise DumpError(f"{dump.path}: line {first_line}: unexpected columns")
    cols = frame.columns
    price_text = pl.col(cols[i_price]).str.strip_chars()
    qty_text = pl.col(cols[i_qty]).str.strip_chars()
    parsed = frame.select(
        pl.col(cols[i_id]).str.strip_chars().cast(pl.Int64, strict=False).alias("id"),
        pl.col(cols[i_time]).str.strip_chars().cast(pl.Int64, strict=False).alias("time"),
        price_text.alias("price"),
        qty_text.alias("qty"),
        price_text.cast(pl.Float64, strict=False).alias("price_f"),
        qty_text.cast(pl.Float64, strict=False).alias("qty_f"),
        pl.col(cols[i_maker]).str.strip_chars().str.to_lowercase().alias("maker"),
    )
    bad = parsed.with_row_index("row").filter(
        pl.col("id").is_null()
        | pl.col("time").is_null()
        | pl.col("price_f").is_null()
        | ~(pl.col("price_f") > 0)
        | ~pl.col("price_f").is_finite()
        | ~pl.col("qty_f").is_finite()
        | ~(
            pl.col("time").is_between(_EARLIEST_MS, _LATEST_MS)
            | pl.col("time").is_between(_EARLIEST_MS * 1000, _LATEST_MS * 1000)
        )
        | pl.col("qty_f").is_null()
        | ~(pl.col("qty_f") >= 0)
        | ~pl.col("maker").is_in(list(_BOOLS)).fill_null(False)
    )
    if not bad.is_empty():
        row = bad.row(0, named=True)
        raise DumpError(
            f"{dump.path}: line {first_line + row['row']}: "
            f"{_why(row)}: {lines[row['row']].strip()!r}"
        )
    out = parsed.select(
        pl.lit(series, dtype=pl.Int64).alias("series"),
        pl.col("id"),
        pl.when(pl.col("time") >= _MICROS)
        .then(pl.col("time"))
        .otherwise(pl.col("time") * 1000)
        .alias("ts_us"),
        pl.col("price"),
        pl.col("qty"),
        (pl.col("maker") == "true").cast(pl.Int64).alias("buyer_maker"),
    )
    return out.rows()


def _why(row: dict) -> str:
    if row["id"] is None:
        return "the trade id is not an integer"
    time = row["time"]
    if time is None or not (
        _EARLIEST_MS <= time <= _LATEST_MS or _EARLIEST_MS * 1000 <= time <= _LATEST_MS * 1000
    ):
        return "the time is not in milliseconds or microseconds since 1970 (2009-2100)"
    price, qty = row["price_f"], row["qty_f"]
    if price is None or not 0 < price < math.inf:
        return "the price is not a positive number"
    if qty is None or not 0 <= qty < math.inf:
        return "the quantity is not a number"
    return "is_buyer_maker is not true/false"


def _find_bad_line(lines: list[str], first_line: int, dump: DumpFile, widths) -> None:
    for offset, row in enumerate(csv.reader(lines)):
        if len(row) not in widths:
            raise DumpError(
                f"{dump.path}: line {first_line + offset}: expected {widths[0]} or "
                f"{widths[1]} columns for {dump.kind.value}s, found {len(row)}"
            )


def _is_header(line: str) -> bool:
    """A header names columns: none of its fields is a number (a bad data row has some)."""

    def numeric(field: str) -> bool:
        try:
            float(field)
        except ValueError:
            return False
        return True

    return not any(numeric(field) for field in line.split(","))


def chunks(fh: TextIO, size: int = CHUNK_LINES) -> Iterator[tuple[int, list[str], int]]:
    """(first line number, lines, characters) per chunk, header and blank lines skipped."""
    line_no = 1
    first = True
    while True:
        lines = list(islice(fh, size))
        if not lines:
            return
        chars = sum(map(len, lines))
        start = line_no
        line_no += len(lines)
        if first:
            first = False
            while lines and not lines[0].strip():
                lines, start = lines[1:], start + 1
            if lines and _is_header(lines[0]):
                lines, start = lines[1:], start + 1
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            yield start, lines, chars


async def import_file(
    store: TickStore,
    dump: DumpFile,
    *,
    progress: Callable[[int, int], None] = lambda done, rows: None,
    on_size: Callable[[int], None] = lambda size: None,
) -> ImportResult:
    """Import one file in one transaction; a bad row imports nothing from it.

    The next chunk is read and parsed in a worker thread while the current one is
    inserted, so parsing and SQLite overlap on two cores.
    """

    def parse_next(source: Iterator[tuple[int, list[str], int]]):
        item = next(source, None)
        if item is None:
            return None
        start, lines, chars = item
        return parse_chunk(lines, start, dump, series), chars

    series = (await store.series_ids([dump.symbol], dump.kind))[dump.symbol]
    rows = inserted = 0
    async with store.bulk() as insert:
        with open_text(dump.path) as (fh, total):
            on_size(total)
            source = chunks(fh)
            done = 0
            pending = asyncio.ensure_future(asyncio.to_thread(parse_next, source))
            try:
                while (parsed := await pending) is not None:
                    batch, chars = parsed
                    pending = asyncio.ensure_future(asyncio.to_thread(parse_next, source))
                    inserted += await insert(batch)
                    rows += len(batch)
                    done += chars
                    progress(min(done, total), rows)
            finally:  # the file closes after the worker is done with it
                await asyncio.gather(pending, return_exceptions=True)
    return ImportResult(dump.path, dump.symbol, dump.kind, rows, inserted)


async def run_imports(dumps: list[DumpFile], db_path: Path) -> list[DumpFile]:
    """`pairs-tui import`: each file with a progress bar (rows/s) on stderr; the failures."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    failed = []
    async with await TickStore.open(db_path) as store:
        for dump in dumps:
            clock = time.monotonic()
            try:
                result = await _import_with_progress(store, dump, console)
            except (DumpError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error, OSError) as exc:
                failed.append(dump)
                why = str(exc) if isinstance(exc, DumpError) else f"{dump.path}: {exc}"
                print(f"pairs-tui: error: {why}; nothing imported from it", file=sys.stderr)
                continue
            elapsed = max(time.monotonic() - clock, 1e-9)
            print(
                f"{dump.path.name}: {result.rows:,} {dump.symbol} {dump.kind.value}s "
                f"({result.inserted:,} new) in {elapsed:.1f}s, {result.rows / elapsed:,.0f} rows/s",
                file=sys.stderr,
            )
    return failed


async def _import_with_progress(store: TickStore, dump: DumpFile, console) -> ImportResult:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(dump.path.name, total=None, rows=0, rate=0.0)
        clock = time.monotonic()

        def show(done: int, rows: int) -> None:
            rate = rows / max(time.monotonic() - clock, 1e-9)
            bar.update(task, completed=done, rows=rows, rate=rate)

        return await import_file(
            store, dump, progress=show, on_size=lambda size: bar.update(task, total=size)
        )
