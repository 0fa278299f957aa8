"""Import Binance historical trade dumps (the data.binance.vision layout) into the store.

Spot and futures `trades` (id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match])
and `aggTrades` (agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match])
as `.csv` or the downloaded `.zip`, with or without a header, times in ms or µs.

A file is read in chunks of lines (memory stays bounded for multi-GB files and for
lines of any length: a line longer than `MAX_LINE_CHARS` is a bad row), parsed by polars,
checked by the rule the live feed uses (`model.check_trade`), and inserted in one
transaction per file: a bad row rolls the whole file back and is reported with its line
number. Skipping rows whose key exists makes a re-import add nothing.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
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

from pairs_tui.model import (
    DECIMAL_PATTERN,
    EARLIEST_TRADE_US,
    MICROS_THRESHOLD,
    NONZERO_PATTERN,
    StreamKind,
    SymbolError,
    check_trade,
    clip,
    describe,
    latest_trade_us,
    normalise_symbols,
    printable,
)
from pairs_tui.store import ImportBatch, StoreTarget, TickStore

CHUNK_LINES = 200_000  # lines parsed and inserted at a time ...
CHUNK_CHARS = 32 << 20  # ... or fewer, when they hold this many characters
MAX_LINE_CHARS = 4096  # a trades row is under 100; a longer line is a bad row
_READ_LINES = 256  # lines read between two looks at their length: at most 1 MiB
_NAME = re.compile(r"^([A-Za-z0-9]+)-(trades|aggTrades)-", re.IGNORECASE)
_BOOLS = {"true": True, "false": False}
_DECIMAL = f"^(?:{DECIMAL_PATTERN})$"


class DumpError(ValueError):
    """A file that cannot be imported; the message names the file (and line)."""


# What reading one file can raise besides DumpError: a zip broken midway, bytes that are
# not UTF-8, a CSV field over the csv module's limit, a disk error. Each is reported with
# the file's name; the other files go on.
READ_ERRORS = (
    csv.Error,
    UnicodeError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    pl.exceptions.PolarsError,
)


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
            try:
                raw = archive.open(members[0])
            except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown method
                raise DumpError(f"{path}: cannot read the zip: {exc}") from None
            with raw:
                yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), members[0].file_size
    else:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            yield fh, path.stat().st_size


def _sniff_kind(path: Path) -> StreamKind:
    """Without a telling name: trades have a boolean in column 6, aggTrades an id."""
    try:
        with open_text(path) as (fh, _):
            head = [fh.readline(MAX_LINE_CHARS + 2) for _ in range(2)]
        for row in csv.reader(line for line in head if len(line) <= MAX_LINE_CHARS + 1):
            if len(row) >= 6 and row[0].strip().lstrip("-").isdigit():
                return StreamKind.TRADE if row[5].lower() in _BOOLS else StreamKind.AGG_TRADE
    except READ_ERRORS as exc:
        raise DumpError(f"{path}: {clip(str(exc))}") from None
    raise DumpError(f"{path}: cannot tell trades from aggTrades; name it like Binance does")


def _columns(kind: StreamKind) -> tuple[int, int, int, int, int, tuple[int, ...]]:
    """Indexes of id, price, qty, time, is_buyer_maker, and the allowed column counts."""
    if kind is StreamKind.TRADE:
        return 0, 1, 2, 4, 5, (6, 7)
    return 0, 1, 2, 5, 6, (7, 8)


def parse_chunk(lines: list[str], first_line: int, dump: DumpFile, series: int) -> ImportBatch:
    """Validate and convert CSV lines; raise DumpError naming the first bad line.

    Polars screens the whole chunk with the rule of `check_trade` (the same pattern and
    bounds, as column expressions); `check_trade` itself judges the rows it flags and says
    what is wrong with the first bad one."""
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
    time_raw = pl.col(cols[i_time]).str.strip_chars().cast(pl.Int64, strict=False)
    parsed = frame.select(
        pl.col(cols[i_id]).str.strip_chars().cast(pl.Int64, strict=False).alias("id"),
        pl.when(time_raw >= MICROS_THRESHOLD)
        .then(time_raw)
        .when(time_raw >= 0)  # a negative time stays null: never multiplied past int64
        .then(time_raw * 1000)
        .alias("ts_us"),
        pl.col(cols[i_price]).str.strip_chars().alias("price"),
        pl.col(cols[i_qty]).str.strip_chars().alias("qty"),
        pl.col(cols[i_maker]).str.strip_chars().str.to_lowercase().alias("maker"),
    )
    now_us = time.time_ns() // 1000

    def positive_decimal(column: str) -> pl.Expr:
        text = pl.col(column)
        return text.str.contains(_DECIMAL) & text.str.contains(NONZERO_PATTERN)

    ok = (
        (pl.col("id") >= 0)
        & pl.col("ts_us").is_between(EARLIEST_TRADE_US, latest_trade_us(now_us))
        & positive_decimal("price")
        & positive_decimal("qty")
        & pl.col("maker").is_in(list(_BOOLS))
    ).fill_null(False)
    flagged = parsed.with_row_index("row").filter(~ok)
    for row in flagged.iter_rows(named=True):
        why = _why(row, now_us)
        if why is not None:
            text = lines[row["row"]].strip()
            raise DumpError(f"{dump.path}: line {first_line + row['row']}: {why}: {clip(text)!r}")
    out = parsed.select(
        pl.lit(series, dtype=pl.Int64).alias("series"),
        pl.col("id"),
        pl.col("ts_us"),
        pl.col("price"),
        pl.col("qty"),
        (pl.col("maker") == "true").cast(pl.Int64).alias("buyer_maker"),
    )
    return out


def _why(row: dict, now_us: int) -> str | None:
    """What is wrong with a row the screen flagged: `check_trade`'s verdict, or the flag."""
    why = check_trade(
        row["price"] or "",
        row["qty"] or "",
        -1 if row["id"] is None else row["id"],
        -1 if row["ts_us"] is None else row["ts_us"],
        now_us,
    )
    if why is None and row["maker"] not in _BOOLS:
        return "is_buyer_maker is not true/false"
    return why


def _find_bad_line(lines: list[str], first_line: int, dump: DumpFile, widths) -> None:
    reader = csv.reader(lines)
    start = first_line  # the line the row being read starts on
    try:
        for row in reader:
            if len(row) not in widths:
                raise DumpError(
                    f"{dump.path}: line {start}: expected {widths[0]} or {widths[1]} columns"
                    f" for {dump.kind.value}s, found {len(row)}"
                )
            start = first_line + reader.line_num
    except csv.Error as exc:  # a quote left open, a field over the csv module's limit
        raise DumpError(f"{dump.path}: line {start}: {exc}") from None


def _is_header(line: str) -> bool:
    """A header names columns: none of its fields is a number (a bad data row has some)."""

    def numeric(field: str) -> bool:
        try:
            float(field)
        except ValueError:
            return False
        return True

    return not any(numeric(field) for field in line.split(","))


def read_lines(fh: TextIO, path: Path | str) -> Iterator[list[str]]:
    """The file's lines in lists of at most `_READ_LINES`, each line read with a bound, so
    memory stays flat however long a line is; one over `MAX_LINE_CHARS` is an error."""
    readline = functools.partial(fh.readline, MAX_LINE_CHARS + 2)  # room for \r\n
    source = iter(readline, "")
    line_no = 1
    while lines := list(islice(source, _READ_LINES)):
        if max(map(len, lines)) > MAX_LINE_CHARS:
            for offset, line in enumerate(lines):
                if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
                    raise DumpError(
                        f"{path}: line {line_no + offset}: the line is longer than "
                        f"{MAX_LINE_CHARS} characters"
                    )
        line_no += len(lines)
        yield lines


def chunks(
    fh: TextIO, path: Path | str = "", size: int = CHUNK_LINES, max_chars: int = CHUNK_CHARS
) -> Iterator[tuple[int, list[str], int]]:
    """(first line number, lines, characters) per chunk of at most `size` lines (fewer
    once they hold `max_chars`), header and blank lines skipped."""
    source = read_lines(fh, path)
    line_no = 1
    first = True
    pending: list[str] = []
    while True:
        lines, pending = pending[:size], pending[size:]
        chars = sum(map(len, lines))
        while len(lines) < size and chars < max_chars:
            more = next(source, None)
            if more is None:
                break
            room = size - len(lines)
            lines += more[:room]
            pending += more[room:]
            chars += sum(map(len, more[:room]))
        if not lines:
            return
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
            source = chunks(fh, dump.path)
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


async def run_imports(dumps: list[DumpFile], db_path: StoreTarget) -> list[DumpFile]:
    """`pairs-tui import`: each file with a progress bar (rows/s) on stderr; the failures."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    failed: list[DumpFile] = []
    done: list[DumpFile] = []
    async with await TickStore.open(db_path) as store:
        for n, dump in enumerate(dumps):
            clock = time.monotonic()
            try:
                result = await _import_with_progress(store, dump, console)
            except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C: say what is where
                print(f"pairs-tui: {_interrupted(done, dump, dumps[n + 1 :])}", file=sys.stderr)
                raise
            except (DumpError, *READ_ERRORS) as exc:
                failed.append(dump)
                why = printable(f"{_describe(dump.path, exc)}; nothing imported from it")
                print(f"pairs-tui: error: {why}", file=sys.stderr)
                continue
            done.append(dump)
            elapsed = max(time.monotonic() - clock, 1e-9)
            print(
                f"{printable(dump.path.name)}: {result.rows:,} {dump.symbol} {dump.kind.value}s "
                f"({result.inserted:,} new) in {elapsed:.1f}s, {result.rows / elapsed:,.0f} rows/s",
                file=sys.stderr,
            )
    return failed


def _interrupted(done: list[DumpFile], current: DumpFile, rest: list[DumpFile]) -> str:
    """After Ctrl-C: each file is one transaction, so it is in whole or not at all."""

    def names(files: list[DumpFile]) -> str:
        return ", ".join(printable(f.path.name) for f in files) or "none"

    return (
        f"interrupted: kept {names(done)}; {printable(current.path.name)} rolled back"
        f" (nothing of it kept); not started: {names(rest)}"
    )


def _describe(path: Path, exc: Exception) -> str:
    """One failed file in words, starting with its name."""
    if isinstance(exc, DumpError):
        return str(exc)
    if isinstance(exc, UnicodeError):
        what = f"not UTF-8 text ({exc})"
    elif isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError)):
        what = f"the zip is damaged ({exc})"
    else:
        what = describe(exc)
    return f"{path}: {clip(what)}"


async def _import_with_progress(store: TickStore, dump: DumpFile, console) -> ImportResult:
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        name = escape(printable(dump.path.name))  # a file name is text, not markup
        task = bar.add_task(name, total=None, rows=0, rate=0.0)
        clock = time.monotonic()

        def show(done: int, rows: int) -> None:
            rate = rows / max(time.monotonic() - clock, 1e-9)
            bar.update(task, completed=done, rows=rows, rate=rate)

        return await import_file(
            store, dump, progress=show, on_size=lambda size: bar.update(task, total=size)
        )
