"""The tick store: `TickStore` says what every backend does, `SqliteStore` is the default.

Only this module and `store_pg.py` (the PostgreSQL backend, for a desk sharing one
database) speak SQL; `TickStore.open` picks the backend from what `--db` names. The
SQLite store is one file, WAL, shared by a recorder and any number of readers. A file is
looked at before anything is written to it: one that holds another application's tables
is refused as it is, byte for byte, and a read-only open (`readonly=True`, for commands
that only read) never writes, migrates or switches the journal mode. Each (symbol, kind)
is a row of `series`; trades are keyed by (series, trade_id) and inserted with ON
CONFLICT DO NOTHING, so a re-delivered trade, a second recorder or a re-import never
makes a duplicate. An integer series key instead of repeating the symbol text makes
inserts about 40 % faster and the file about 30 % smaller. Prices and quantities are
stored as the exchange's decimal text.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeGuard, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiosqlite
import platformdirs

from pairs_tui.model import AlertEvent, Gap, HistoryBar, RuleRecord, StreamKind, TradeRow

if TYPE_CHECKING:
    import polars as pl

# a chunk of a dump, parsed: a polars frame of IMPORT_COLUMNS (buyer_maker as 0/1); each
# backend takes it as it inserts fastest (SQLite as tuples, PostgreSQL as CSV for COPY)
ImportBatch: TypeAlias = "pl.DataFrame"
IMPORT_COLUMNS = ("series", "id", "ts_us", "price", "qty", "buyer_maker")

SCHEMA_VERSION = 4
T = TypeVar("T")

# Forward migrations: entry i takes a database from user_version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE series (
            id          INTEGER PRIMARY KEY,
            symbol      TEXT    NOT NULL,
            kind        TEXT    NOT NULL,   -- 'trade' or 'aggTrade': separate id spaces
            UNIQUE (symbol, kind)
        )""",
        """CREATE TABLE trades (
            series      INTEGER NOT NULL REFERENCES series (id),
            trade_id    INTEGER NOT NULL,
            ts_us       INTEGER NOT NULL,   -- exchange trade time, µs since the epoch
            recv_us     INTEGER,            -- local receive time, µs; NULL when imported
            price       TEXT    NOT NULL,   -- decimal text exactly as the exchange sent it
            qty         TEXT    NOT NULL,
            buyer_maker INTEGER NOT NULL,
            PRIMARY KEY (series, trade_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX trades_by_time ON trades (series, ts_us)",
        """CREATE TABLE gaps (
            symbol      TEXT    NOT NULL,
            kind        TEXT    NOT NULL,
            from_id     INTEGER NOT NULL,
            to_id       INTEGER NOT NULL,
            detected_us INTEGER NOT NULL
        )""",
    ),
    (
        """CREATE TABLE alert_rules (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: events name it
            symbol_a    TEXT    NOT NULL,
            symbol_b    TEXT    NOT NULL,
            timeframe   TEXT    NOT NULL,
            rule        TEXT    NOT NULL,   -- the canonical text: parsed again on load
            muted       INTEGER NOT NULL DEFAULT 0,
            created_us  INTEGER NOT NULL,
            UNIQUE (symbol_a, symbol_b, timeframe, rule)
        )""",
        """CREATE TABLE alert_events (
            rule_id     INTEGER,            -- NULL for a rule given to `watch` only
            rule        TEXT    NOT NULL,
            symbol_a    TEXT    NOT NULL,
            symbol_b    TEXT    NOT NULL,
            timeframe   TEXT    NOT NULL,
            fired_us    INTEGER NOT NULL,
            bar_us      INTEGER,
            asof_us     INTEGER,
            value       TEXT    NOT NULL    -- JSON: a number, or an object of numbers
        )""",
        "CREATE INDEX alert_events_by_time ON alert_events (fired_us)",
    ),
    (
        """CREATE TABLE meta (
            key         TEXT    PRIMARY KEY,  -- 'source': 'live' or 'demo' trades
            value       TEXT    NOT NULL
        )""",
    ),
    (
        """CREATE TABLE history (
            series      INTEGER NOT NULL REFERENCES series (id),
            timeframe   TEXT    NOT NULL,
            open_us     INTEGER NOT NULL,   -- the bar's open time
            open        REAL    NOT NULL,
            high        REAL    NOT NULL,
            low         REAL    NOT NULL,
            close       REAL    NOT NULL,
            volume      REAL    NOT NULL,
            trades      INTEGER NOT NULL,
            until_id    INTEGER,            -- the seam: only trades before this id; NULL: all
            source      TEXT    NOT NULL,   -- where it came from: 'rest'
            PRIMARY KEY (series, timeframe, open_us)
        ) WITHOUT ROWID""",
        "ALTER TABLE gaps ADD COLUMN filled_us INTEGER",  # when REST history filled it
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


def _tables_of(version: int) -> frozenset[str]:
    """The tables a store of this schema version has (SQLite's own sqlite_* aside)."""
    return frozenset(
        name
        for step in _MIGRATIONS[:version]
        for statement in step
        for name in re.findall(r"CREATE TABLE (\w+)", statement)
    )


# The schema version and what the file holds, SQLite's own objects (sqlite_sequence,
# autoindexes) aside: one statement, so one read transaction sees both as they were
# together (a store being created by another process is never caught half made).
_SCHEMA = (
    "SELECT user_version, type, name FROM pragma_user_version LEFT JOIN"
    " (SELECT type, name FROM sqlite_master WHERE substr(name, 1, 7) != 'sqlite_')"
)

# ON CONFLICT DO NOTHING skips only duplicates; OR IGNORE would also swallow a NOT NULL
# violation, silently dropping a broken row.
_INSERT_TRADE = "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# Imported trades have no receive time; binding NULL and 0/1 in SQL is measurably faster
# than sqlite3 adapting None and bool for every row.
_INSERT_IMPORTED = "INSERT INTO trades VALUES (?, ?, ?, NULL, ?, ?, ?) ON CONFLICT DO NOTHING"
_SERIES_ID = "SELECT id FROM series WHERE symbol = ? AND kind = ?"
_SERIES = f"({_SERIES_ID})"
_INSERT_GAP = "INSERT INTO gaps (symbol, kind, from_id, to_id, detected_us) VALUES (?, ?, ?, ?, ?)"
_INSERT_HISTORY = "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# meta keys bumped by every change: history bars added, gaps filled (trades behind the tape)
_BARS_REV, _FILLS_REV = "history_bars_rev", "history_fills_rev"
_LOCK_RETRIES = 20


class StoreError(Exception):
    """A database problem the user can act on; the message says what and how."""


class StoreBusy(Exception):
    """Another process held the write lock for longer than all our retries."""


# what the store or its disk can raise: said to the user, never taken for a bug
STORE_ERRORS = (sqlite3.Error, StoreBusy, StoreError, OSError)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# what --db and store.path name: a SQLite file, or a postgresql:// URL (never a Path: that
# would fold its // into /)
StoreTarget: TypeAlias = Path | str


def is_postgres(target: StoreTarget) -> TypeGuard[str]:
    """Does `--db` (or store.path) name a PostgreSQL database rather than a file?"""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


_SECRET_PARAMS = ("password", "sslpassword")


def shown_url(url: str) -> str:
    """A database URL as messages show it: without a password, in its user part or in its
    query (`?password=...`, which libpq and asyncpg also take)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    if parts.password is not None:
        user = netloc[0].partition(":")[0]
        parts = parts._replace(netloc=f"{user}@{netloc[2]}")
    if parts.query:
        kept = [p for p in parts.query.split("&") if p.partition("=")[0] not in _SECRET_PARAMS]
        parts = parts._replace(query="&".join(kept))
    return urlunsplit(parts)


_DATABASE_URL = re.compile(r"postgres(?:ql)?://\S+")


def hide_passwords(text: str) -> str:
    """Any database URL in `text` without its password (a command line in a crash log)."""
    return _DATABASE_URL.sub(lambda m: shown_url(m.group()), text)


def target_text(target: StoreTarget) -> str:
    """Where the trades are, as the user may see it: a path, or the URL without password."""
    return shown_url(target) if is_postgres(target) else str(target)


def default_db_path() -> Path:
    return platformdirs.user_data_path("pairs-tui", appauthor=False) / "ticks.db"


def unstored_part(gap: Gap, held: int, low: int | None, high: int | None) -> Gap | None:
    """The part of a gap the store does not hold, from what it holds in the gap's span
    (how many, the lowest and highest id): another recorder on the same store may have
    stored those trades (it started first), so they are no gap at all."""
    if not held:
        return gap
    assert low is not None and high is not None
    if held == gap.missing:
        return None
    if low == gap.from_id and high == low + held - 1:  # the start is stored
        return replace(gap, from_id=high + 1)
    if high == gap.to_id and low == high - held + 1:  # the end is stored
        return replace(gap, to_id=low - 1)
    return gap  # holes between stored trades: the span as the feed saw it


def other_source(where: object, held: str, source: str) -> StoreError:
    """A store holds trades of one source only: the demo's never mix with Binance's."""
    other = (
        "leave out --db (the demo records into demo.db beside ticks.db)"
        if source == "demo"
        else "use another --db"
    )
    return StoreError(
        f"{where} holds {held} trades: a {source} feed does not write into it; {other}"
    )


def _listing(names: Sequence[str], most: int = 5) -> str:
    shown = [name if len(name) <= 40 else name[:37] + "..." for name in names[:most]]
    return ", ".join(shown) + (", ..." if len(names) > most else "")


def _refuse_foreign(path: Path, version: int, objects: Sequence[tuple[str, str]]) -> None:
    """StoreError unless the schema is a pairs-tui store's (of any version) or empty."""
    tables = {name for kind, name in objects if kind == "table"}
    ours = _tables_of(SCHEMA_VERSION)
    if version > SCHEMA_VERSION and (not objects or tables & ours):
        raise StoreError(
            f"{path} was written by a newer pairs-tui (schema {version}, this "
            f"version reads up to {SCHEMA_VERSION}): upgrade pairs-tui"
        )
    if version == 0 and not objects:
        return  # empty: a store still to be made
    expected = _tables_of(version) if version <= SCHEMA_VERSION else frozenset()
    extra = sorted(tables - expected)
    if version == 0 or extra or version > SCHEMA_VERSION:
        names, what = extra or sorted(tables), "table"
        if not names:  # views or triggers only
            names, what = sorted(name for _, name in objects), "schema object"
        what += "s" if len(names) > 1 else ""
        raise StoreError(
            f"{path} is not a pairs-tui store (it has {what} {_listing(names)}): pass another --db"
        )
    missing = sorted(expected - tables)
    if missing:
        raise StoreError(
            f"{path} is not a pairs-tui store (schema version {version} but no"
            f" table{'s' if len(missing) > 1 else ''} {_listing(missing)}): pass another --db"
        )


def _is_wal_file(path: Path) -> bool:
    """Does the file's header say WAL (read and write versions 2)?"""
    try:
        with path.open("rb") as fh:
            header = fh.read(20)
    except OSError:
        return False
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _read_only_file(path: Path) -> str:
    return f"cannot write to {path}: the file is read-only (export and alerts only read it)"


def _drop_shared_files(path: Path) -> None:
    """Remove the -wal and -shm that SQLite created for a read-only connection, the way
    SQLite itself does: a connection that joins the WAL and closes last deletes them. Only
    when the -wal is empty, so nothing is ever checkpointed into the file; a process
    still using them keeps them."""
    wal = Path(f"{path}-wal")
    with contextlib.suppress(OSError, sqlite3.Error):
        if wal.stat().st_size == 0:
            with contextlib.closing(sqlite3.connect(path, timeout=0.1)) as conn:
                conn.execute("PRAGMA user_version").fetchone()


async def _connect(path: Path, *, readonly: bool, immutable: bool = False) -> aiosqlite.Connection:
    if not readonly:
        return await aiosqlite.connect(path, isolation_level=None)
    # mode=ro: SQLite itself refuses every write, whatever a caller tries
    uri = path.absolute().as_uri() + "?mode=ro" + ("&immutable=1" if immutable else "")
    return await aiosqlite.connect(uri, uri=True, isolation_level=None)


class TickStore(abc.ABC):
    """What every store backend does: the engine, the recorder, the importer, alerts and
    pruning use only this. `open` picks the backend from the target."""

    path: Path | str  # what messages name: the file, or the URL without its password
    readonly: bool
    schema_version: int

    @staticmethod
    async def open(
        target: StoreTarget, *, busy_timeout: float = 10.0, readonly: bool = False
    ) -> TickStore:
        """The store `target` names: a `postgresql://` URL, else a SQLite file (see
        `SqliteStore.open_file` and `PgStore.connect`); StoreError with a plain reason."""
        if is_postgres(target):
            from pairs_tui.store_pg import PgStore

            return await PgStore.connect(target, readonly=readonly)
        return await SqliteStore.open_file(target, busy_timeout=busy_timeout, readonly=readonly)

    async def __aenter__(self) -> TickStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _writing(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only: nothing can be written to it")

    async def history(
        self, symbol: str, kind: StreamKind, timeframe: str, since_us: int = -(2**62)
    ) -> list[HistoryBar]:
        """History bars opening at or after `since_us`, oldest first."""
        return [
            HistoryBar(*row) for row in await self.history_rows(symbol, kind, timeframe, since_us)
        ]

    @abc.abstractmethod
    async def claim(self, source: str) -> None:
        """Trades of one source only: the demo's synthetic market never mixes with
        Binance's. The first feed to write names the store's source; another is refused
        (StoreError). A store from before sources were kept is taken as live."""

    async def check_source(self, source: str) -> None:
        """StoreError if the store holds trades of another source (nothing is written)."""
        held = await self.source()
        if held is not None and held != source:
            raise other_source(self.path, held, source)

    @abc.abstractmethod
    async def source(self) -> str | None:
        """Whose trades the store holds: 'live' or 'demo'; None while it holds none (a
        store from before sources were kept is live)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit nothing more and let go of the database."""

    @abc.abstractmethod
    async def series_ids(self, symbols: Iterable[str], kind: StreamKind) -> dict[str, int]:
        """The series id of each symbol for this kind of trade, created when new."""

    @abc.abstractmethod
    async def write(self, rows: Sequence[TradeRow], gaps: Sequence[Gap] = ()) -> int:
        """Commit one batch in one transaction; returns how many trades were new."""

    @abc.abstractmethod
    def bulk(
        self,
    ) -> contextlib.AbstractAsyncContextManager[Callable[[ImportBatch], Awaitable[int]]]:
        """One transaction for many batches (an import of Binance's own trades): all of
        them or none, the store claimed for live trades with them."""

    @abc.abstractmethod
    async def count_older(self, before_us: int) -> int:
        """How many trades `prune(before_us)` would delete (the time index, per series)."""

    @abc.abstractmethod
    async def prune(
        self,
        before_us: int,
        *,
        batch: int = 20_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete trades older than `before_us` (each series keeps its newest trade, so a
        later recorder sees the gap from there), in short steps, so a recorder writing
        meanwhile waits milliseconds, not minutes; returns how many. Use a store opened
        for it alone (`TickStore.open` again)."""

    @abc.abstractmethod
    async def add_rule(self, pair: tuple[str, str], timeframe: str, rule: str, now_us: int) -> int:
        """Store a rule (its canonical text); the id of the stored one if already there."""

    @abc.abstractmethod
    async def rules(self) -> list[RuleRecord]:
        """Every stored rule, as stored: `alerts.load_rules` parses them (and says which
        cannot be)."""

    @abc.abstractmethod
    async def remove_rule(self, rule_id: int) -> None:
        """Delete the rule (its past firings stay)."""

    @abc.abstractmethod
    async def mute_rule(self, rule_id: int, muted: bool) -> None:
        """No toast, bell or log for the rule until unmuted."""

    @abc.abstractmethod
    async def add_events(self, events: Sequence[AlertEvent]) -> None:
        """Store alert firings."""

    @abc.abstractmethod
    async def events(self, limit: int | None = None) -> list[AlertEvent]:
        """Stored firings, oldest first (the newest `limit` of them)."""

    @abc.abstractmethod
    async def trade_ids(self, symbol: str, kind: StreamKind = StreamKind.TRADE) -> list[int]:
        """Every stored trade id of the symbol, ascending."""

    @abc.abstractmethod
    async def trades(
        self,
        symbol: str,
        kind: StreamKind = StreamKind.TRADE,
        *,
        after_id: int = -1,
        limit: int = 2**62,
    ) -> list[TradeRow]:
        """Stored trades after `after_id` (the first `limit`), as rows, in id order."""

    @abc.abstractmethod
    async def series(self) -> list[tuple[str, StreamKind]]:
        """Every (symbol, kind) the store has trades or history of."""

    @abc.abstractmethod
    async def add_history(
        self, symbol: str, kind: StreamKind, timeframe: str, bars: Sequence[HistoryBar]
    ) -> None:
        """Store history bars (a seam bar stored again replaces the old one)."""

    @abc.abstractmethod
    async def history_rev(self) -> tuple[int, int]:
        """(bars, fills): each moves when history bars are added or a gap is filled,
        by any process, so readers know to load them."""

    @abc.abstractmethod
    async def history_rows(
        self, symbol: str, kind: StreamKind, timeframe: str, since_us: int = -(2**62)
    ) -> list[tuple[int, float, float, float, float, float, int, int | None]]:
        """The same, as tuples in HistoryBar's field order: a watchlist reads tens of
        thousands, and turns them into a frame off the event loop."""

    @abc.abstractmethod
    async def history_opens(self, symbol: str, kind: StreamKind, timeframe: str) -> set[int]:
        """The open times of the whole history bars held: what is never asked again."""

    @abc.abstractmethod
    async def first_trade(
        self, symbol: str, kind: StreamKind, from_id: int = -1
    ) -> tuple[int, int] | None:
        """(trade id, time µs) of the oldest stored trade (from `from_id` on): where the
        stream's tape begins."""

    @abc.abstractmethod
    async def last_trade(
        self, symbol: str, kind: StreamKind, before_id: int = 2**62
    ) -> tuple[int, int] | None:
        """(trade id, time µs) of the newest stored trade (before `before_id`)."""

    @abc.abstractmethod
    async def qty_between(self, symbol: str, kind: StreamKind, first: int, last: int) -> list[str]:
        """The quantities of stored trades `first`..`last` (ids), as sent."""

    @abc.abstractmethod
    async def open_gaps(self) -> list[tuple[int, Gap]]:
        """(rowid, gap) of the gaps no history has filled yet, oldest first."""

    @abc.abstractmethod
    async def fill_gap(self, rowid: int, rows: Sequence[TradeRow], now_us: int) -> int:
        """The missing trades stored and the gap marked filled, in one transaction;
        returns how many trades were new."""

    @abc.abstractmethod
    async def read_trades(
        self,
        symbol: str,
        kind: StreamKind,
        *,
        after_id: int = -1,
        until_us: int | None = None,
        limit: int = 500_000,
    ) -> list[tuple[int, int, str, str]]:
        """(ts_us, trade_id, price, qty) of trades with id > after_id, in id order.

        Reads walk the primary key from a watermark, so a refresh costs what is new,
        not what is stored.
        """

    @abc.abstractmethod
    async def first_id_since(self, symbol: str, kind: StreamKind, since_us: int) -> int | None:
        """The smallest trade id at or after `since_us` (found through the time index)."""

    @abc.abstractmethod
    async def last_id(self, symbol: str, kind: StreamKind) -> int | None:
        """The newest stored trade id."""

    @abc.abstractmethod
    async def last_time(self, symbol: str, kind: StreamKind) -> int | None:
        """The newest stored trade time, µs."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """Stored trades per symbol."""

    @abc.abstractmethod
    async def gaps(self) -> list[Gap]:
        """Every gap the feed saw, oldest first."""

    @abc.abstractmethod
    async def size(self) -> int:
        """Bytes the store takes (what pruning gives back shows here)."""

    @abc.abstractmethod
    async def integrity_ok(self) -> bool:
        """Does the database check itself as sound?"""


class SqliteStore(TickStore):
    """The default store: one SQLite file in WAL mode."""

    path: Path

    def __init__(self, path: Path, conn: aiosqlite.Connection, *, readonly: bool = False):
        self.path = path
        self._conn = conn
        self.readonly = readonly
        self.schema_version = SCHEMA_VERSION  # what the file holds, once open() looked
        self._busy_ms = 10_000
        self._one_transaction = asyncio.Lock()
        self._immutable = False  # reading the file alone, until a writer shows up
        self._tidy = False  # remove the -wal and -shm SQLite made for us when closing
        self._stamp: tuple[int, int] | None = None  # the file's mtime and size at open

    @classmethod
    async def open_file(
        cls, path: Path | str, *, busy_timeout: float = 10.0, readonly: bool = False
    ) -> SqliteStore:
        """Open (creating or migrating) the store; raise StoreError with a plain reason.

        A file that is not a pairs-tui store (another application's tables, with or
        without ours) is refused before anything is written to it. With `readonly` the
        file is opened read-only (`mode=ro`): nothing is created, migrated or written, and
        nothing is left beside it; a store of an older schema is read as it is (what it
        cannot hold yet reads as empty).
        """
        path = Path(path).expanduser()
        if path.exists() and path.is_dir():
            raise StoreError(f"database path {path} is a directory: give a file name")
        if path.exists() and not path.is_file():  # /dev/null, a fifo: SQLite would mangle it
            raise StoreError(f"database path {path} is not a regular file")
        if readonly and not path.is_file():
            raise StoreError(
                f"no tick store at {path}: record or import trades first, or pass --db"
            )
        if not path.parent.is_dir():
            raise StoreError(
                f"cannot create database {path}: directory {path.parent} does not exist"
            )
        if not path.exists():
            try:  # aiosqlite, if it cannot create the file, fails with a thread traceback
                with tempfile.TemporaryFile(dir=path.parent):
                    pass
            except OSError as exc:
                raise StoreError(
                    f"cannot create database {path}: {exc.strerror};"
                    f" can files be created in {path.parent}?"
                ) from None
        immutable = tidy = False
        if readonly and _is_wal_file(path) and not Path(f"{path}-wal").exists():
            # Nobody has the store open (a WAL store's -wal lives as long as a connection
            # does). SQLite reads a WAL file through a -wal and -shm it creates; when we
            # may write here it does, and closing removes them again. When we may not
            # (a 0444 file, a read-only directory), read the file alone (immutable) until
            # a writer's -wal appears.
            tidy = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
            immutable = not tidy
        try:
            conn = await _connect(path, readonly=readonly, immutable=immutable)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        store = cls(path, conn, readonly=readonly)
        store._busy_ms = int(busy_timeout * 1000)
        store._immutable, store._tidy, store._stamp = immutable, tidy, _stamp(path)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            new = await store._check()
            if readonly:
                if new:
                    raise StoreError(
                        f"no tick store in {path} yet (the file is empty): record or import"
                        " trades first, or pass --db"
                    )
                return store
            if not os.access(path, os.W_OK):
                raise StoreError(_read_only_file(path))
            if new:  # only possible before the first table: pruned space goes back
                await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await store._migrate()
            # switching to WAL needs the file to itself and does not wait: a second process
            # opening a new store at the same moment gets "locked" at once, so try again
            await store._retrying(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            await conn.execute("PRAGMA synchronous = NORMAL")
        except StoreError:
            await store.close()
            raise
        except StoreBusy:
            await store.close()
            raise StoreError(f"{path} stayed locked by another process: try again") from None
        except sqlite3.DatabaseError as exc:
            await store.close()
            text = str(exc)
            if "not a database" in text or "malformed" in text:
                raise StoreError(f"{path} is not a pairs-tui SQLite database ({text})") from None
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_DIRECTORY":
                if not os.access(path, os.W_OK):
                    raise StoreError(_read_only_file(path)) from None
                raise StoreError(
                    f"cannot write to {path}: directory {path.parent} is read-only (SQLite"
                    " keeps its -wal and -shm files beside the store)"
                ) from None
            raise StoreError(f"cannot use database {path}: {text}") from None
        return store

    async def _follow_writer(self) -> None:
        """Reading the file alone (immutable) assumes it does not change: once a writer's
        -wal appears, read through it from now on (read-only still), and if the file
        changed all the same (a writer came and went), start again from the file as it
        is now. Either way new trades are seen and no stale page is read."""
        if not self._immutable:
            return
        wal = Path(f"{self.path}-wal").exists()
        if not wal and _stamp(self.path) == self._stamp:
            return
        stamp = _stamp(self.path)
        try:
            conn = await _connect(self.path, readonly=True, immutable=not wal)
        except sqlite3.Error:
            return
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            await (await conn.execute("PRAGMA user_version")).fetchone()
        except sqlite3.Error:  # the writer's -shm not there yet: the next read tries again
            await conn.close()
            return
        old, self._conn, self._immutable, self._stamp = self._conn, conn, not wal, stamp
        await old.close()

    async def _check(self) -> bool:
        """Refuse a file that is not a pairs-tui store (before anything is written to it);
        note its schema version. True when it is empty: a store still to be made."""
        cursor = await self._conn.execute(_SCHEMA)
        rows = list(await cursor.fetchall())
        version = rows[0][0]
        objects = [(kind, name) for _, kind, name in rows if name is not None]
        _refuse_foreign(self.path, version, objects)
        self.schema_version = version
        return version == 0 and not objects

    async def _migrate(self) -> None:
        version = self.schema_version
        if version == SCHEMA_VERSION:
            return
        async with self._transaction() as conn:
            await self._check()  # another process may have won, or filled an empty file
            for step in range(self.schema_version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.schema_version = SCHEMA_VERSION

    async def claim(self, source: str) -> None:
        self._writing()
        await self._conn.execute(
            "INSERT INTO meta VALUES ('source', ?) ON CONFLICT DO NOTHING",
            ("live" if await self._scalar("SELECT count(*) FROM series") else source,),
        )  # autocommit, or part of the caller's transaction (an import's)
        await self.check_source(source)

    async def source(self) -> str | None:
        held = await self._scalar("SELECT max(value) FROM meta WHERE key = 'source'")
        if held is None and await self._scalar("SELECT count(*) FROM series"):
            return "live"
        return None if held is None else str(held)

    async def close(self) -> None:
        await self._conn.close()
        if self._tidy:
            self._tidy = False
            await asyncio.to_thread(_drop_shared_files, self.path)

    async def series_ids(self, symbols: Iterable[str], kind: StreamKind) -> dict[str, int]:
        self._writing()
        conn = self._conn
        ids = {}
        for symbol in symbols:
            await conn.execute(
                "INSERT OR IGNORE INTO series (symbol, kind) VALUES (?, ?)", (symbol, kind.value)
            )
            ids[symbol] = await self._count(_SERIES_ID, (symbol, kind.value))
        return ids

    # -- writing ------------------------------------------------------------------------
    async def write(self, rows: Sequence[TradeRow], gaps: Sequence[Gap] = ()) -> int:
        self._writing()
        return await self._retrying(lambda: self._write_once(rows, gaps))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` again while another process holds the write lock."""
        for tries in range(_LOCK_RETRIES):
            try:
                return await attempt()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if tries == _LOCK_RETRIES - 1:
                    raise StoreBusy(f"{self.path} stayed locked by another process") from None
                await asyncio.sleep(0.05 * (tries + 1))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error. One at a time on this
        connection: the recorder's batches, history and filled gaps share it, and a
        statement sent while another's transaction is open would land inside it."""
        async with self._one_transaction:
            conn = self._conn
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # never hide the error that got us here
                    await conn.execute("ROLLBACK")
                raise

    async def _write_once(self, rows: Sequence[TradeRow], gaps: Sequence[Gap]) -> int:
        async with self._transaction() as conn:
            cursor = await conn.executemany(_INSERT_TRADE, rows)
            inserted = cursor.rowcount
            missing = [g for g in [await self._unstored(g) for g in gaps] if g is not None]
            if missing:
                await conn.executemany(
                    _INSERT_GAP,
                    [(g.symbol, g.kind.value, g.from_id, g.to_id, g.detected_us) for g in missing],
                )
        return max(inserted, 0)

    async def _unstored(self, gap: Gap) -> Gap | None:
        cursor = await self._conn.execute(
            f"SELECT count(*), min(trade_id), max(trade_id) FROM trades"
            f" WHERE series = {_SERIES} AND trade_id BETWEEN ? AND ?",
            (gap.symbol, gap.kind.value, gap.from_id, gap.to_id),
        )
        row = await cursor.fetchone()
        assert row is not None
        return unstored_part(gap, *row)

    @asynccontextmanager
    async def bulk(self) -> AsyncIterator[Callable[[ImportBatch], Awaitable[int]]]:
        self._writing()
        async with self._transaction() as conn:

            async def insert(batch: ImportBatch) -> int:
                rows = await asyncio.to_thread(batch.rows)
                cursor = await conn.executemany(_INSERT_IMPORTED, rows)
                return max(cursor.rowcount, 0)

            await self.claim("live")
            yield insert

    # -- pruning --------------------------------------------------------------------------
    async def count_older(self, before_us: int) -> int:
        await self._follow_writer()
        cursor = await self._conn.execute("SELECT id FROM series")
        total = 0
        for (series,) in await cursor.fetchall():
            total += await self._count(
                "SELECT count(*) FROM trades WHERE series = ? AND ts_us < ? AND trade_id <"
                " (SELECT max(trade_id) FROM trades WHERE series = ?)",
                (series, before_us, series),
            )  # as `prune`: the newest trade stays
        return total

    async def prune(
        self,
        before_us: int,
        *,
        batch: int = 20_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete trades older than `before_us`, `batch` rows per short transaction, so a
        recorder writing meanwhile waits milliseconds, not minutes; returns how many.
        Freed pages are reused for new trades, and given back to the file system when
        the store was created with incremental auto-vacuum (every store since v2).

        Use a connection of its own (`TickStore.open` again): the vacuum step commits
        whatever else the connection has open."""
        self._writing()
        cursor = await self._conn.execute("SELECT id FROM series ORDER BY id")
        deleted = 0
        for (series,) in await cursor.fetchall():
            while True:
                started = time.perf_counter()
                cursor = await self._retrying(
                    partial(
                        self._conn.execute,
                        "DELETE FROM trades WHERE series = ? AND trade_id IN (SELECT trade_id"
                        " FROM trades WHERE series = ? AND ts_us < ? AND trade_id < (SELECT"
                        " max(trade_id) FROM trades WHERE series = ?) LIMIT ?)",
                        (series, series, before_us, series, batch),
                    )  # the newest trade stays: a later recorder sees the gap from there
                )
                deleted += max(cursor.rowcount, 0)
                if progress is not None:
                    progress(deleted)
                if cursor.rowcount < batch:
                    break
                await self._let_writers_in(started)
        if await self._count("PRAGMA auto_vacuum") == 2:  # incremental
            while await self._count("PRAGMA freelist_count") > 0:
                started = time.perf_counter()
                # executescript runs the pragma to the end; execute would free one page
                await self._retrying(
                    lambda: self._conn.executescript("PRAGMA incremental_vacuum(2000);")
                )
                await self._let_writers_in(started)
        return deleted

    @staticmethod
    async def _let_writers_in(started: float) -> None:
        """Pause as long as the last step held the lock (20 ms at least): a writer waiting
        on its busy timeout polls every few ms, so a pause shorter than that shuts it out."""
        await asyncio.sleep(max(0.02, time.perf_counter() - started))

    # -- alert rules and events -----------------------------------------------------------
    async def add_rule(self, pair: tuple[str, str], timeframe: str, rule: str, now_us: int) -> int:
        self._writing()
        await self._conn.execute(
            "INSERT INTO alert_rules (symbol_a, symbol_b, timeframe, rule, created_us)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (*pair, timeframe, rule, now_us),
        )
        rule_id = await self._int(
            "SELECT id FROM alert_rules WHERE symbol_a = ? AND symbol_b = ? AND timeframe = ?"
            " AND rule = ?",
            (*pair, timeframe, rule),
        )
        assert rule_id is not None, "inserted or already there"
        return rule_id

    async def rules(self) -> list[RuleRecord]:
        if self.schema_version < 2:  # read-only, not migrated: it cannot hold any
            return []
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT id, rule, symbol_a, symbol_b, timeframe, muted FROM alert_rules ORDER BY id"
        )
        return [
            RuleRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
            for row in await cursor.fetchall()
        ]

    async def remove_rule(self, rule_id: int) -> None:
        self._writing()
        await self._conn.execute("DELETE FROM alert_rules WHERE id = ?", (rule_id,))

    async def mute_rule(self, rule_id: int, muted: bool) -> None:
        self._writing()
        await self._conn.execute(
            "UPDATE alert_rules SET muted = ? WHERE id = ?", (int(muted), rule_id)
        )

    async def add_events(self, events: Sequence[AlertEvent]) -> None:
        self._writing()
        rows = [
            (
                e.rule_id,
                e.rule,
                e.symbol_a,
                e.symbol_b,
                e.timeframe,
                e.fired_us,
                e.bar_us,
                e.asof_us,
                json.dumps(e.value),
            )
            for e in events
        ]
        await self._retrying(
            lambda: self._conn.executemany(
                "INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
        )

    async def events(self, limit: int | None = None) -> list[AlertEvent]:
        if self.schema_version < 2:  # read-only, not migrated: it cannot hold any
            return []
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT * FROM (SELECT rule_id, rule, symbol_a, symbol_b, timeframe, fired_us,"
            " bar_us, asof_us, value, rowid FROM alert_events ORDER BY fired_us DESC, rowid DESC"
            " LIMIT ?) ORDER BY fired_us, rowid",
            (limit if limit is not None else -1,),
        )
        return [
            AlertEvent(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], json.loads(row[8])
            )
            for row in await cursor.fetchall()
        ]

    # -- reading ------------------------------------------------------------------------
    async def trade_ids(self, symbol: str, kind: StreamKind = StreamKind.TRADE) -> list[int]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            f"SELECT trade_id FROM trades WHERE series = {_SERIES} ORDER BY trade_id",
            (symbol, kind.value),
        )
        return [row[0] for row in await cursor.fetchall()]

    async def trades(
        self,
        symbol: str,
        kind: StreamKind = StreamKind.TRADE,
        *,
        after_id: int = -1,
        limit: int = 2**62,
    ) -> list[TradeRow]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT series, trade_id, ts_us, recv_us, price, qty, buyer_maker FROM trades"
            f" WHERE series = {_SERIES} AND trade_id > ? ORDER BY trade_id LIMIT ?",
            (symbol, kind.value, after_id, limit),
        )
        return [(*row[:6], bool(row[6])) for row in await cursor.fetchall()]

    async def series(self) -> list[tuple[str, StreamKind]]:
        await self._follow_writer()
        cursor = await self._conn.execute("SELECT symbol, kind FROM series ORDER BY id")
        return [(row[0], StreamKind(row[1])) for row in await cursor.fetchall()]

    # -- the exchange's history ------------------------------------------------------
    async def add_history(
        self, symbol: str, kind: StreamKind, timeframe: str, bars: Sequence[HistoryBar]
    ) -> None:
        self._writing()
        if not bars:
            return
        series = (await self.series_ids([symbol], kind))[symbol]
        rows = [
            (series, timeframe, *astuple(b), "rest")  # the columns in HistoryBar's order
            for b in bars
        ]

        async def once() -> None:
            async with self._transaction() as conn:
                await conn.executemany(_INSERT_HISTORY, rows)
                await self._bump(_BARS_REV)

        await self._retrying(once)

    async def _bump(self, key: str) -> None:
        await self._conn.execute(
            "INSERT INTO meta VALUES (?, '1') ON CONFLICT DO UPDATE SET value = value + 1",
            (key,),
        )

    async def history_rev(self) -> tuple[int, int]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?)", (_BARS_REV, _FILLS_REV)
        )
        revs = {key: int(value) for key, value in await cursor.fetchall()}
        return revs.get(_BARS_REV, 0), revs.get(_FILLS_REV, 0)

    async def history_rows(
        self, symbol: str, kind: StreamKind, timeframe: str, since_us: int = -(2**62)
    ) -> list[tuple[int, float, float, float, float, float, int, int | None]]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT open_us, open, high, low, close, volume, trades, until_id FROM history"
            f" WHERE series = {_SERIES} AND timeframe = ? AND open_us >= ? ORDER BY open_us",
            (symbol, kind.value, timeframe, since_us),
        )
        return list(await cursor.fetchall())  # type: ignore[arg-type]

    async def history_opens(self, symbol: str, kind: StreamKind, timeframe: str) -> set[int]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            f"SELECT open_us FROM history WHERE series = {_SERIES} AND timeframe = ?"
            " AND until_id IS NULL",
            (symbol, kind.value, timeframe),
        )
        return {row[0] for row in await cursor.fetchall()}

    async def first_trade(
        self, symbol: str, kind: StreamKind, from_id: int = -1
    ) -> tuple[int, int] | None:
        return await self._trade_row(
            f"SELECT trade_id, ts_us FROM trades WHERE series = {_SERIES} AND trade_id >= ?"
            " ORDER BY trade_id LIMIT 1",
            (symbol, kind.value, from_id),
        )

    async def last_trade(
        self, symbol: str, kind: StreamKind, before_id: int = 2**62
    ) -> tuple[int, int] | None:
        return await self._trade_row(
            f"SELECT trade_id, ts_us FROM trades WHERE series = {_SERIES} AND trade_id < ?"
            " ORDER BY trade_id DESC LIMIT 1",
            (symbol, kind.value, before_id),
        )

    async def _trade_row(self, sql: str, params: tuple[object, ...]) -> tuple[int, int] | None:
        await self._follow_writer()
        cursor = await self._conn.execute(sql, params)
        row = await cursor.fetchone()
        return (row[0], row[1]) if row is not None else None

    async def qty_between(self, symbol: str, kind: StreamKind, first: int, last: int) -> list[str]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            f"SELECT qty FROM trades WHERE series = {_SERIES} AND trade_id BETWEEN ? AND ?",
            (symbol, kind.value, first, last),
        )
        return [row[0] for row in await cursor.fetchall()]

    async def open_gaps(self) -> list[tuple[int, Gap]]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT rowid, symbol, kind, from_id, to_id, detected_us FROM gaps"
            " WHERE filled_us IS NULL ORDER BY rowid"
        )
        return [
            (row[0], Gap(row[1], StreamKind(row[2]), row[3], row[4], row[5]))
            for row in await cursor.fetchall()
        ]

    async def fill_gap(self, rowid: int, rows: Sequence[TradeRow], now_us: int) -> int:
        self._writing()

        async def once() -> int:
            async with self._transaction() as conn:
                cursor = await conn.executemany(_INSERT_TRADE, rows)
                await conn.execute("UPDATE gaps SET filled_us = ? WHERE rowid = ?", (now_us, rowid))
                await self._bump(_FILLS_REV)
            return max(cursor.rowcount, 0)

        return await self._retrying(once)

    async def read_trades(
        self,
        symbol: str,
        kind: StreamKind,
        *,
        after_id: int = -1,
        until_us: int | None = None,
        limit: int = 500_000,
    ) -> list[tuple[int, int, str, str]]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT ts_us, trade_id, price, qty FROM trades"
            f" WHERE series = {_SERIES} AND trade_id > ? AND ts_us < ?"
            " ORDER BY trade_id LIMIT ?",
            (symbol, kind.value, after_id, until_us if until_us is not None else 2**62, limit),
        )
        return [(r[0], r[1], r[2], r[3]) for r in await cursor.fetchall()]

    async def first_id_since(self, symbol: str, kind: StreamKind, since_us: int) -> int | None:
        return await self._int(
            f"SELECT min(trade_id) FROM trades WHERE series = {_SERIES} AND ts_us >= ?",
            (symbol, kind.value, since_us),
        )

    async def last_id(self, symbol: str, kind: StreamKind) -> int | None:
        return await self._int(
            f"SELECT max(trade_id) FROM trades WHERE series = {_SERIES}", (symbol, kind.value)
        )

    async def last_time(self, symbol: str, kind: StreamKind) -> int | None:
        return await self._int(
            f"SELECT max(ts_us) FROM trades WHERE series = {_SERIES}", (symbol, kind.value)
        )

    async def counts(self) -> dict[str, int]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT symbol, count(*) FROM trades JOIN series ON series.id = trades.series"
            " GROUP BY symbol ORDER BY symbol"
        )
        return {row[0]: row[1] for row in await cursor.fetchall()}

    async def gaps(self) -> list[Gap]:
        await self._follow_writer()
        cursor = await self._conn.execute(
            "SELECT symbol, kind, from_id, to_id, detected_us FROM gaps ORDER BY rowid"
        )
        return [
            Gap(row[0], StreamKind(row[1]), row[2], row[3], row[4])
            for row in await cursor.fetchall()
        ]

    async def size(self) -> int:
        return (await asyncio.to_thread(self.path.stat)).st_size

    async def integrity_ok(self) -> bool:
        return await self._scalar("PRAGMA integrity_check") == "ok"

    async def _scalar(self, sql: str, params: tuple[object, ...] = ()) -> object:
        await self._follow_writer()
        cursor = await self._conn.execute(sql, params)
        row = await cursor.fetchone()
        assert row is not None, "an aggregate or a pragma: always one row"
        value: object = row[0]
        return value

    async def _int(self, sql: str, params: tuple[object, ...] = ()) -> int | None:
        value = await self._scalar(sql, params)
        assert value is None or isinstance(value, int), value
        return value

    async def _count(self, sql: str, params: tuple[object, ...] = ()) -> int:
        """A scalar that is always a number (a count, an id just inserted, a pragma)."""
        value = await self._int(sql, params)
        assert value is not None, sql
        return value
