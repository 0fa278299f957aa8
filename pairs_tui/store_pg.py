"""The PostgreSQL store: one database a desk's recorders, cockpits and notifiers share.

`--db postgresql://user@host:port/dbname` (the password from the URL, PGPASSWORD or
~/.pgpass, as libpq reads them; it is never shown: messages name the URL without it).
The driver is asyncpg: the event loop never waits on a socket, rows travel in the binary
protocol, and `copy_records_to_table` speaks COPY, the fastest way into PostgreSQL.

The schema is the SQLite store's, with PostgreSQL's types. Trades are partitioned by day
of `ts_us` (declarative range partitions, attached as the first trade of a day arrives),
so retention drops whole days. A partitioned table's primary key must hold the partition
key, so it is (series, trade_id, ts_us); a trade is still its id (its time comes in ms
from the stream, in µs from dumps), so an insert also looks for the id within that
millisecond. A batch goes in by COPY into a temporary table, then `INSERT ... ON CONFLICT
DO NOTHING`: re-delivered trades, two recorders on different machines and re-imports
store each trade once. Migrations are versioned as SQLite's are, under an advisory lock,
so two processes starting together migrate once.

A lost connection is retried with exponential backoff and jitter for up to
`RETRY_FOR_S`; the recorder's batch waits (its pending trades are kept) and nothing it
received is lost.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from pairs_tui.model import AlertEvent, Gap, HistoryBar, RuleRecord, StreamKind, TradeRow
from pairs_tui.store import (
    IMPORT_COLUMNS,
    ImportBatch,
    StoreError,
    TickStore,
    other_source,
    shown_url,
    unstored_part,
)

T = TypeVar("T")

PG_SCHEMA_VERSION = 1
DAY_US = 86_400_000_000  # one partition of trades per UTC day
RETRY_FOR_S = 30.0  # a lost connection is tried again this long before the store gives up
_MIGRATION_LOCK = 0x70616972  # pg_advisory_xact_lock key: one migrator at a time
_PARTITION_LOCK = 0x70617274  # and one process making a day's partition

# Forward migrations: entry i takes a database from version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE pairs_tui_schema (version integer NOT NULL)",
        "INSERT INTO pairs_tui_schema VALUES (0)",
        """CREATE TABLE series (
            id          serial  PRIMARY KEY,
            symbol      text    NOT NULL,
            kind        text    NOT NULL,
            UNIQUE (symbol, kind)
        )""",
        """CREATE TABLE trades (
            series      integer NOT NULL,
            trade_id    bigint  NOT NULL,
            ts_us       bigint  NOT NULL,
            recv_us     bigint,
            price       text    NOT NULL,
            qty         text    NOT NULL,
            buyer_maker boolean NOT NULL,
            PRIMARY KEY (series, trade_id, ts_us)
        ) PARTITION BY RANGE (ts_us)""",
        "CREATE INDEX trades_by_time ON trades (series, ts_us)",
        """CREATE TABLE gaps (
            id          bigserial PRIMARY KEY,
            symbol      text    NOT NULL,
            kind        text    NOT NULL,
            from_id     bigint  NOT NULL,
            to_id       bigint  NOT NULL,
            detected_us bigint  NOT NULL,
            filled_us   bigint,
            UNIQUE (symbol, kind, from_id, to_id)
        )""",
        """CREATE TABLE alert_rules (
            id          bigserial PRIMARY KEY,
            symbol_a    text    NOT NULL,
            symbol_b    text    NOT NULL,
            timeframe   text    NOT NULL,
            rule        text    NOT NULL,
            muted       boolean NOT NULL DEFAULT false,
            created_us  bigint  NOT NULL,
            UNIQUE (symbol_a, symbol_b, timeframe, rule)
        )""",
        """CREATE TABLE alert_events (
            id          bigserial PRIMARY KEY,
            rule_id     bigint,
            rule        text    NOT NULL,
            symbol_a    text    NOT NULL,
            symbol_b    text    NOT NULL,
            timeframe   text    NOT NULL,
            fired_us    bigint  NOT NULL,
            bar_us      bigint,
            asof_us     bigint,
            value       text    NOT NULL
        )""",
        # a firing stored twice (a commit whose answer was lost, then tried again) is one
        """CREATE UNIQUE INDEX alert_events_once ON alert_events
            (symbol_a, symbol_b, timeframe, rule, fired_us, coalesce(bar_us, -1))""",
        "CREATE INDEX alert_events_by_time ON alert_events (fired_us)",
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE history (
            series      integer NOT NULL REFERENCES series (id),
            timeframe   text    NOT NULL,
            open_us     bigint  NOT NULL,
            open        float8  NOT NULL,
            high        float8  NOT NULL,
            low         float8  NOT NULL,
            close       float8  NOT NULL,
            volume      float8  NOT NULL,
            trades      integer NOT NULL,
            until_id    bigint,
            source      text    NOT NULL,
            PRIMARY KEY (series, timeframe, open_us)
        )""",
    ),
)
assert len(_MIGRATIONS) == PG_SCHEMA_VERSION
_TABLES = frozenset(
    name for step in _MIGRATIONS for sql in step for name in re.findall(r"CREATE TABLE (\w+)", sql)
)

_SERIES = "(SELECT id FROM series WHERE symbol = $1 AND kind = $2)"
_TRADE_COLUMNS = ("series", "trade_id", "ts_us", "recv_us", "price", "qty", "buyer_maker")
# per connection, emptied at each commit: where COPY puts a batch. buyer_maker is a number
# there, so rows may carry True or 1 (Python's bool is an int) without being rebuilt.
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS trades_in (series integer, trade_id bigint, ts_us bigint,"
    " recv_us bigint, price text, qty text, buyer_maker smallint) ON COMMIT DELETE ROWS"
)
# A trade is its (series, trade_id): the stream and REST give its time in ms (stored as
# ms * 1000), Binance's dumps since 2025 in µs, so the same trade may come with two times
# less than 1 ms apart. The key holds the time (a partitioned table's key must), so the
# insert looks for the id within that millisecond (a probe of one or two day partitions)
# and keeps one row per id of the batch.
_FROM_STAGE = (
    "INSERT INTO trades SELECT DISTINCT ON (series, trade_id) series, trade_id, ts_us,"
    " recv_us, price, qty, buyer_maker <> 0 FROM trades_in s WHERE NOT EXISTS (SELECT 1"
    " FROM trades t WHERE t.series = s.series AND t.trade_id = s.trade_id"
    " AND t.ts_us > s.ts_us - 1000 AND t.ts_us < s.ts_us + 1000)"
    " ORDER BY series, trade_id ON CONFLICT DO NOTHING"
)
_BARS_REV, _FILLS_REV = "history_bars_rev", "history_fills_rev"
# a connection that broke, or a server that is restarting: worth another try (a pooled
# connection the server closed may also fail as the client notices: InterfaceError)
_TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
)


_IMPORT_STAGE = ("series", "trade_id", "ts_us", "price", "qty", "buyer_maker")  # no recv_us


def _csv(batch: ImportBatch) -> bytes:
    """A dump's chunk as COPY reads it (no header; recv_us is left NULL)."""
    return batch.select(IMPORT_COLUMNS).write_csv(include_header=False).encode()


def _inserted(status: str) -> int:
    """Rows an INSERT's status (`INSERT 0 42`) says it wrote."""
    return int(status.rsplit(" ", 1)[-1])


def _partition(day: int) -> str:
    return f"trades_d{day}"


class PgStore(TickStore):
    """A pairs-tui store in a PostgreSQL database."""

    path: str

    def __init__(self, url: str, pool: asyncpg.Pool, *, readonly: bool) -> None:
        self.path = shown_url(url)
        self.readonly = readonly
        self.schema_version = PG_SCHEMA_VERSION
        self._pool = pool
        self._days: set[int] = set()  # days that have their partition
        self.retries = 0  # operations tried again after a lost connection

    @classmethod
    async def connect(cls, url: str, *, readonly: bool = False) -> PgStore:
        """Connect (creating or migrating the schema unless `readonly`); StoreError with a
        plain reason, the password never in it."""
        shown = shown_url(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=4,
                command_timeout=120,
                server_settings={"application_name": "pairs-tui"},
                init=None if readonly else cls._stage,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, *_TRANSIENT, ValueError) as exc:
            raise StoreError(f"cannot connect to {shown}: {_reason(exc, url)}") from None
        store = cls(url, pool, readonly=readonly)
        try:
            await store._check(readonly)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, *_TRANSIENT) as exc:
            await pool.close()  # e.g. no right to create tables in the schema
            raise StoreError(f"cannot use {shown}: {_reason(exc, url)}") from None
        except BaseException:
            await pool.close()
            raise
        return store

    @staticmethod
    async def _stage(conn: asyncpg.Connection) -> None:
        """Each connection of a writing store gets its staging table once (after the
        schema exists: `_check` makes it before any write)."""
        exists = await conn.fetchval("SELECT to_regclass('trades') IS NOT NULL")
        if exists:
            await conn.execute(_STAGE)

    async def _check(self, readonly: bool) -> None:
        """Refuse a database holding another application's tables; migrate ours."""
        async with self._pool.acquire() as conn:
            tables = set(
                await conn.fetchval(
                    "SELECT coalesce(array_agg(tablename::text), '{}') FROM pg_tables"
                    " WHERE schemaname = current_schema()"
                )
            )
            version = 0
            if "pairs_tui_schema" in tables:
                version = await conn.fetchval("SELECT max(version) FROM pairs_tui_schema") or 0
            foreign = sorted(t for t in tables - _TABLES if not t.startswith("trades_d"))
            if foreign and "pairs_tui_schema" not in tables:
                listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise StoreError(
                    f"{self.path} is not a pairs-tui store (it has tables {listed}):"
                    " pass another --db"
                )
            if version > PG_SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer pairs-tui (schema {version}, this"
                    f" version reads up to {PG_SCHEMA_VERSION}): upgrade pairs-tui"
                )
            if readonly:
                if version == 0:
                    raise StoreError(
                        f"no tick store in {self.path} yet: record or import trades first"
                    )
                return
            if version < PG_SCHEMA_VERSION:
                await self._migrate(conn)
            await conn.execute(_STAGE)
        self._days = await self._known_days()

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            exists = await conn.fetchval("SELECT to_regclass('pairs_tui_schema') IS NOT NULL")
            version = (
                await conn.fetchval("SELECT max(version) FROM pairs_tui_schema") if exists else 0
            )
            for step in range(version or 0, PG_SCHEMA_VERSION):  # another may have won
                for statement in _MIGRATIONS[step]:
                    await conn.execute(statement)
            await conn.execute("UPDATE pairs_tui_schema SET version = $1", PG_SCHEMA_VERSION)

    async def _known_days(self) -> set[int]:
        rows = await self._fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'trades'::regclass"
        )
        return {int(r[0].removeprefix("trades_d")) for r in rows if r[0].startswith("trades_d")}

    async def close(self) -> None:
        await self._pool.close()

    # -- plumbing ---------------------------------------------------------------------
    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` again after a lost connection, backing off with jitter (so many
        clients coming back at once do not arrive together), for up to RETRY_FOR_S."""
        deadline = time.monotonic() + RETRY_FOR_S
        delay = 0.05
        while True:
            try:
                return await attempt()
            except _TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"lost the connection to {self.path} for {RETRY_FOR_S:g} s:"
                        f" {_reason(exc, '')}"
                    ) from None
                self.retries += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)
            except asyncpg.CheckViolationError:
                raise  # a row for a day with no partition: `_into_days` makes it and retries
            except asyncpg.PostgresError as exc:
                raise StoreError(f"{self.path}: {_reason(exc, '')}") from None

    async def _into_days(self, ts: list[int], attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` (which writes trades of these times) once their days' partitions
        are there; again if another process pruned one of those days meanwhile."""
        await self._make_days(ts)
        try:
            return await self._retrying(attempt)
        except asyncpg.CheckViolationError:
            self._days = await self._known_days()
            await self._make_days(ts)
            try:
                return await self._retrying(attempt)
            except asyncpg.CheckViolationError as exc:
                raise StoreError(f"{self.path}: {_reason(exc, '')}") from None

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        async def once() -> list[Any]:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(sql, *args))

        return await self._retrying(once)

    async def _value(self, sql: str, *args: object) -> Any:
        async def once() -> Any:
            async with self._pool.acquire() as conn:
                return await conn.fetchval(sql, *args)

        return await self._retrying(once)

    async def _execute(self, sql: str, *args: object) -> str:
        self._writing()

        async def once() -> str:
            async with self._pool.acquire() as conn:
                return str(await conn.execute(sql, *args))

        return await self._retrying(once)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def _make_days(self, ts: Iterable[int]) -> None:
        """The partitions these trade times fall in, made if they are not yet: each in a
        short transaction of its own, created apart and then attached, which takes a lock
        that neither readers nor writers of `trades` wait for (CREATE TABLE ... PARTITION
        OF would lock them all out, and an import's open transaction would lock it out)."""
        days = {t // DAY_US for t in ts} - self._days
        if not days:
            return

        async def once() -> None:
            async with self._transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
                for day in sorted(days):
                    name = _partition(day)
                    if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
                        continue  # another process made it
                    await conn.execute(f"CREATE TABLE {name} (LIKE trades INCLUDING DEFAULTS)")
                    await conn.execute(
                        f"ALTER TABLE trades ATTACH PARTITION {name}"
                        f" FOR VALUES FROM ({day * DAY_US}) TO ({(day + 1) * DAY_US})"
                    )

        await self._retrying(once)
        self._days |= days

    async def _copy_in(self, conn: asyncpg.Connection, rows: Sequence[tuple[object, ...]]) -> int:
        """One batch through the staging table; how many were new (inside a transaction)."""
        await conn.copy_records_to_table("trades_in", records=rows, columns=_TRADE_COLUMNS)
        return await self._from_stage(conn)

    @staticmethod
    async def _from_stage(conn: asyncpg.Connection) -> int:
        """The staged rows into `trades`; the stage emptied for the next batch of the same
        transaction (an import's chunks), not only at commit."""
        inserted = _inserted(await conn.execute(_FROM_STAGE))
        await conn.execute("TRUNCATE trades_in")
        return inserted

    # -- the source -------------------------------------------------------------------
    async def claim(self, source: str) -> None:
        self._writing()

        async def once() -> None:
            async with self._transaction() as conn:
                await self._claim(conn, source)

        await self._retrying(once)

    async def _claim(self, conn: asyncpg.Connection, source: str) -> None:
        """The store's source named, on this connection (inside its transaction), and
        checked: StoreError (as `other_source`) when it holds another's trades."""
        has_series = await conn.fetchval("SELECT count(*) FROM series")
        await conn.execute(
            "INSERT INTO meta VALUES ('source', $1) ON CONFLICT DO NOTHING",
            "live" if has_series else source,
        )
        held = await conn.fetchval("SELECT value FROM meta WHERE key = 'source'")
        if held != source:
            raise other_source(self.path, held, source)

    async def source(self) -> str | None:
        held = await self._value("SELECT value FROM meta WHERE key = 'source'")
        if held is None and await self._value("SELECT count(*) FROM series"):
            return "live"
        return None if held is None else str(held)

    async def series_ids(self, symbols: Iterable[str], kind: StreamKind) -> dict[str, int]:
        self._writing()
        ids = {}
        for symbol in symbols:
            await self._execute(
                "INSERT INTO series (symbol, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                symbol,
                kind.value,
            )
            ids[symbol] = int(await self._value(_SERIES.strip("()"), symbol, kind.value))
        return ids

    # -- writing ----------------------------------------------------------------------
    async def write(self, rows: Sequence[TradeRow], gaps: Sequence[Gap] = ()) -> int:
        self._writing()

        async def once() -> int:
            async with self._transaction() as conn:
                inserted = await self._copy_in(conn, rows) if rows else 0
                for gap in gaps:
                    held = await conn.fetchrow(
                        f"SELECT count(*), min(trade_id), max(trade_id) FROM trades"
                        f" WHERE series = {_SERIES} AND trade_id BETWEEN $3 AND $4",
                        gap.symbol,
                        gap.kind.value,
                        gap.from_id,
                        gap.to_id,
                    )
                    missing = unstored_part(gap, *held)
                    if missing is not None:
                        await conn.execute(
                            "INSERT INTO gaps (symbol, kind, from_id, to_id, detected_us)"
                            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                            missing.symbol,
                            missing.kind.value,
                            missing.from_id,
                            missing.to_id,
                            missing.detected_us,
                        )
            return inserted

        return await self._into_days([r[2] for r in rows], once)

    @asynccontextmanager
    async def bulk(self) -> AsyncIterator[Callable[[ImportBatch], Awaitable[int]]]:
        self._writing()
        try:
            async with self._transaction() as conn:
                await self._claim(conn, "live")  # with the import: a failed one claims nothing

                async def insert(batch: ImportBatch) -> int:
                    await self._make_days((batch["ts_us"] // DAY_US * DAY_US).unique().to_list())
                    text = await asyncio.to_thread(_csv, batch)  # polars writes it, in Rust
                    return await self._import_chunk(conn, batch, text)

                yield insert
        except asyncpg.PostgresError as exc:
            raise StoreError(f"{self.path}: {_reason(exc, '')}") from None

    @staticmethod
    async def _import_chunk(conn: asyncpg.Connection, batch: ImportBatch, text: bytes) -> int:
        """A dump's chunk, COPYed straight into `trades` when the store holds none of its
        ids (a first import: twice as fast as through the staging table), else, or when
        that meets a duplicate (within the chunk, or a recorder's), the safe way."""
        ids = batch["id"]
        clash = await conn.fetchval(
            "SELECT 1 FROM trades WHERE series = $1 AND trade_id BETWEEN $2 AND $3 LIMIT 1",
            int(batch["series"][0]),
            ids.min(),
            ids.max(),
        )
        if clash is None and batch["series"].n_unique() == 1:
            try:
                async with conn.transaction():  # a savepoint: a duplicate undoes only this
                    status = await conn.copy_to_table(
                        "trades", source=io.BytesIO(text), columns=_IMPORT_STAGE, format="csv"
                    )
                return _inserted(status)
            except asyncpg.UniqueViolationError:
                pass
        await conn.copy_to_table(
            "trades_in", source=io.BytesIO(text), columns=_IMPORT_STAGE, format="csv"
        )
        return await PgStore._from_stage(conn)

    # -- pruning ----------------------------------------------------------------------
    # trades older than $1 but each series' newest (kept, as on SQLite); the newest ids
    # come from the key, a few index probes, never a scan of the table
    _OLD = (
        " FROM trades t JOIN (SELECT s.id AS series, (SELECT max(trade_id) FROM trades x"
        " WHERE x.series = s.id) AS newest FROM series s) n USING (series)"
        " WHERE t.ts_us < $1 AND t.trade_id < n.newest"
    )

    async def count_older(self, before_us: int) -> int:
        return int(await self._value("SELECT count(*)" + self._OLD, before_us))

    async def prune(
        self,
        before_us: int,
        *,
        batch: int = 20_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Whole days go at once (DROP of their partition, which gives the space back);
        a day that holds a series' newest trade, and the day `before_us` cuts, lose
        their old rows in batches."""
        self._writing()
        deleted = 0
        newest = await self._fetch(
            "SELECT (SELECT ts_us FROM trades x WHERE x.series = s.id ORDER BY trade_id DESC"
            " LIMIT 1) FROM series s"
        )
        keep = {row[0] // DAY_US for row in newest if row[0] is not None}
        for day in sorted(await self._known_days()):
            if (day + 1) * DAY_US > before_us or day in keep:
                continue
            name = _partition(day)
            count = int(await self._value(f"SELECT count(*) FROM {name}"))
            # detached without locking readers and writers out (it waits for them), then
            # dropped: the space goes back at once
            await self._execute(f"ALTER TABLE trades DETACH PARTITION {name} CONCURRENTLY")
            await self._execute(f"DROP TABLE IF EXISTS {name}")
            self._days.discard(day)
            deleted += count
            if progress is not None:
                progress(deleted)
        while True:
            status = await self._execute(
                "DELETE FROM trades WHERE (series, trade_id, ts_us) IN (SELECT t.series,"
                " t.trade_id, t.ts_us" + self._OLD + " LIMIT $2)",
                before_us,
                batch,
            )
            done = _inserted(status)
            deleted += done
            if progress is not None:
                progress(deleted)
            if done < batch:
                return deleted

    # -- alert rules and events ---------------------------------------------------------
    async def add_rule(self, pair: tuple[str, str], timeframe: str, rule: str, now_us: int) -> int:
        await self._execute(
            "INSERT INTO alert_rules (symbol_a, symbol_b, timeframe, rule, created_us)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            *pair,
            timeframe,
            rule,
            now_us,
        )
        return int(
            await self._value(
                "SELECT id FROM alert_rules WHERE symbol_a = $1 AND symbol_b = $2"
                " AND timeframe = $3 AND rule = $4",
                *pair,
                timeframe,
                rule,
            )
        )

    async def rules(self) -> list[RuleRecord]:
        rows = await self._fetch(
            "SELECT id, rule, symbol_a, symbol_b, timeframe, muted FROM alert_rules ORDER BY id"
        )
        return [RuleRecord(*row) for row in rows]

    async def remove_rule(self, rule_id: int) -> None:
        await self._execute("DELETE FROM alert_rules WHERE id = $1", rule_id)

    async def mute_rule(self, rule_id: int, muted: bool) -> None:
        await self._execute("UPDATE alert_rules SET muted = $1 WHERE id = $2", muted, rule_id)

    async def add_events(self, events: Sequence[AlertEvent]) -> None:
        self._writing()
        rows = [
            (e.rule_id, e.rule, e.symbol_a, e.symbol_b, e.timeframe, e.fired_us, e.bar_us,
             e.asof_us, json.dumps(e.value))
            for e in events
        ]  # fmt: skip

        async def once() -> None:
            async with self._pool.acquire() as conn:
                await conn.executemany(
                    "INSERT INTO alert_events (rule_id, rule, symbol_a, symbol_b, timeframe,"
                    " fired_us, bar_us, asof_us, value) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                    " $8, $9) ON CONFLICT DO NOTHING",
                    rows,
                )

        await self._retrying(once)

    async def events(self, limit: int | None = None) -> list[AlertEvent]:
        rows = await self._fetch(
            "SELECT * FROM (SELECT rule_id, rule, symbol_a, symbol_b, timeframe, fired_us,"
            " bar_us, asof_us, value, id FROM alert_events ORDER BY fired_us DESC, id DESC"
            " LIMIT $1) newest ORDER BY fired_us, id",
            limit,
        )
        return [
            AlertEvent(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], json.loads(row[8])
            )
            for row in rows
        ]

    # -- reading ----------------------------------------------------------------------
    async def trade_ids(self, symbol: str, kind: StreamKind = StreamKind.TRADE) -> list[int]:
        rows = await self._fetch(
            f"SELECT trade_id FROM trades WHERE series = {_SERIES} ORDER BY trade_id",
            symbol,
            kind.value,
        )
        return [row[0] for row in rows]

    async def trades(
        self,
        symbol: str,
        kind: StreamKind = StreamKind.TRADE,
        *,
        after_id: int = -1,
        limit: int = 2**62,
    ) -> list[TradeRow]:
        rows = await self._fetch(
            "SELECT series, trade_id, ts_us, recv_us, price, qty, buyer_maker FROM trades"
            f" WHERE series = {_SERIES} AND trade_id > $3 ORDER BY trade_id LIMIT $4",
            symbol,
            kind.value,
            after_id,
            limit,
        )
        return [tuple(row) for row in rows]

    async def series(self) -> list[tuple[str, StreamKind]]:
        rows = await self._fetch("SELECT symbol, kind FROM series ORDER BY id")
        return [(row[0], StreamKind(row[1])) for row in rows]

    async def add_history(
        self, symbol: str, kind: StreamKind, timeframe: str, bars: Sequence[HistoryBar]
    ) -> None:
        self._writing()
        if not bars:
            return
        series = (await self.series_ids([symbol], kind))[symbol]
        rows = [(series, timeframe, *astuple(b), "rest") for b in bars]

        async def once() -> None:
            async with self._transaction() as conn:
                await conn.executemany(
                    "INSERT INTO history VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                    " ON CONFLICT (series, timeframe, open_us) DO UPDATE SET open ="
                    " excluded.open, high = excluded.high, low = excluded.low, close ="
                    " excluded.close, volume = excluded.volume, trades = excluded.trades,"
                    " until_id = excluded.until_id, source = excluded.source",
                    rows,
                )
                await self._bump(conn, _BARS_REV)

        await self._retrying(once)

    @staticmethod
    async def _bump(conn: asyncpg.Connection, key: str) -> None:
        await conn.execute(
            "INSERT INTO meta VALUES ($1, '1') ON CONFLICT (key) DO UPDATE"
            " SET value = (meta.value::bigint + 1)::text",
            key,
        )

    async def history_rev(self) -> tuple[int, int]:
        rows = await self._fetch(
            "SELECT key, value FROM meta WHERE key IN ($1, $2)", _BARS_REV, _FILLS_REV
        )
        revs = {key: int(value) for key, value in rows}
        return revs.get(_BARS_REV, 0), revs.get(_FILLS_REV, 0)

    async def history_rows(
        self, symbol: str, kind: StreamKind, timeframe: str, since_us: int = -(2**62)
    ) -> list[tuple[int, float, float, float, float, float, int, int | None]]:
        rows = await self._fetch(
            "SELECT open_us, open, high, low, close, volume, trades, until_id FROM history"
            f" WHERE series = {_SERIES} AND timeframe = $3 AND open_us >= $4 ORDER BY open_us",
            symbol,
            kind.value,
            timeframe,
            since_us,
        )
        return [tuple(row) for row in rows]

    async def history_opens(self, symbol: str, kind: StreamKind, timeframe: str) -> set[int]:
        rows = await self._fetch(
            f"SELECT open_us FROM history WHERE series = {_SERIES} AND timeframe = $3"
            " AND until_id IS NULL",
            symbol,
            kind.value,
            timeframe,
        )
        return {row[0] for row in rows}

    async def first_trade(
        self, symbol: str, kind: StreamKind, from_id: int = -1
    ) -> tuple[int, int] | None:
        return await self._trade_row(
            f"SELECT trade_id, ts_us FROM trades WHERE series = {_SERIES} AND trade_id >= $3"
            " ORDER BY trade_id LIMIT 1",
            symbol,
            kind.value,
            from_id,
        )

    async def last_trade(
        self, symbol: str, kind: StreamKind, before_id: int = 2**62
    ) -> tuple[int, int] | None:
        return await self._trade_row(
            f"SELECT trade_id, ts_us FROM trades WHERE series = {_SERIES} AND trade_id < $3"
            " ORDER BY trade_id DESC LIMIT 1",
            symbol,
            kind.value,
            before_id,
        )

    async def _trade_row(self, sql: str, *args: object) -> tuple[int, int] | None:
        rows = await self._fetch(sql, *args)
        return (rows[0][0], rows[0][1]) if rows else None

    async def qty_between(self, symbol: str, kind: StreamKind, first: int, last: int) -> list[str]:
        rows = await self._fetch(
            f"SELECT qty FROM trades WHERE series = {_SERIES} AND trade_id BETWEEN $3 AND $4"
            " ORDER BY trade_id",
            symbol,
            kind.value,
            first,
            last,
        )
        return [row[0] for row in rows]

    async def open_gaps(self) -> list[tuple[int, Gap]]:
        rows = await self._fetch(
            "SELECT id, symbol, kind, from_id, to_id, detected_us FROM gaps"
            " WHERE filled_us IS NULL ORDER BY id"
        )
        return [(row[0], Gap(row[1], StreamKind(row[2]), *row[3:6])) for row in rows]

    async def fill_gap(self, rowid: int, rows: Sequence[TradeRow], now_us: int) -> int:
        self._writing()

        async def once() -> int:
            async with self._transaction() as conn:
                inserted = await self._copy_in(conn, rows) if rows else 0
                await conn.execute("UPDATE gaps SET filled_us = $1 WHERE id = $2", now_us, rowid)
                await self._bump(conn, _FILLS_REV)
            return inserted

        return await self._into_days([r[2] for r in rows], once)

    async def read_trades(
        self,
        symbol: str,
        kind: StreamKind,
        *,
        after_id: int = -1,
        until_us: int | None = None,
        limit: int = 500_000,
    ) -> list[tuple[int, int, str, str]]:
        rows = await self._fetch(
            "SELECT ts_us, trade_id, price, qty FROM trades"
            f" WHERE series = {_SERIES} AND trade_id > $3 AND ts_us < $4"
            " ORDER BY trade_id LIMIT $5",
            symbol,
            kind.value,
            after_id,
            until_us if until_us is not None else 2**62,
            limit,
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def first_id_since(self, symbol: str, kind: StreamKind, since_us: int) -> int | None:
        value = await self._value(
            f"SELECT min(trade_id) FROM trades WHERE series = {_SERIES} AND ts_us >= $3",
            symbol,
            kind.value,
            since_us,
        )
        return None if value is None else int(value)

    async def last_id(self, symbol: str, kind: StreamKind) -> int | None:
        value = await self._value(
            f"SELECT max(trade_id) FROM trades WHERE series = {_SERIES}", symbol, kind.value
        )
        return None if value is None else int(value)

    async def last_time(self, symbol: str, kind: StreamKind) -> int | None:
        value = await self._value(
            f"SELECT max(ts_us) FROM trades WHERE series = {_SERIES}", symbol, kind.value
        )
        return None if value is None else int(value)

    async def counts(self) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT symbol, count(*) FROM trades JOIN series ON series.id = trades.series"
            " GROUP BY symbol ORDER BY symbol"
        )
        return {row[0]: row[1] for row in rows}

    async def gaps(self) -> list[Gap]:
        rows = await self._fetch(
            "SELECT symbol, kind, from_id, to_id, detected_us FROM gaps ORDER BY id"
        )
        return [Gap(row[0], StreamKind(row[1]), *row[2:5]) for row in rows]

    async def size(self) -> int:
        return int(await self._value("SELECT pg_database_size(current_database())"))

    async def integrity_ok(self) -> bool:
        """PostgreSQL checks its own pages; what is ours to check is that every trade
        sits in the partition of its day (a partition attached by hand could break it)."""
        wrong = await self._value(
            "SELECT count(*) FROM trades WHERE tableoid::regclass::text <>"
            " 'trades_d' || (ts_us / $1)::text",
            DAY_US,
        )
        return bool(wrong == 0)


def _reason(exc: BaseException, url: str) -> str:
    """The error in words, the password never among them."""
    text = str(exc) or type(exc).__name__
    password = urlsplit(url).password if url else None
    return text.replace(password, "***") if password else text
