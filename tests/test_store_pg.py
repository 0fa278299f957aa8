"""The PostgreSQL store on a real server (a throwaway cluster on loopback): what only it
has. Passwords from the URL, PGPASSWORD or ~/.pgpass and never shown; a foreign or newer
database refused untouched; trades partitioned by day, retention dropping whole days;
migrating once when many start at once; a dropped connection taken up again."""

from __future__ import annotations

import asyncio

import asyncpg
import polars as pl
import pytest

from pairs_tui.model import StreamKind
from pairs_tui.store import IMPORT_COLUMNS, StoreError, TickStore, shown_url
from pairs_tui.store_pg import DAY_US, PG_SCHEMA_VERSION, PgStore

pytestmark = pytest.mark.server

T0 = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC


def trade(series: int, tid: int, ts_us: int) -> tuple:
    return (series, tid, ts_us, None, "100.5", "0.1", tid % 2 == 0)


async def sql(url: str, query: str) -> object:
    """One statement's first value, or a script run (several statements)."""
    conn = await asyncpg.connect(url)
    try:
        if ";" in query:
            return await conn.execute(query)
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_the_password_comes_from_the_url_pgpassword_or_pgpass_and_is_never_shown(
    pg_url, pg_cluster, monkeypatch, tmp_path
):
    from pgcluster import PASSWORD

    bare = pg_url.replace(f":{PASSWORD}@", "@")
    assert shown_url(pg_url) == bare
    async with await TickStore.open(pg_url) as store:
        assert store.path == bare and PASSWORD not in str(store.path)
    wrong = pg_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreError) as error:
        await TickStore.open(wrong)
    assert str(error.value).startswith(f"cannot connect to {bare}: ")
    assert "password" in str(error.value) and "not-the-password" not in str(error.value)

    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    async with await TickStore.open(bare):
        pass
    monkeypatch.delenv("PGPASSWORD")
    home = tmp_path / "home-pgpass"
    home.mkdir()
    (home / ".pgpass").write_text(f"127.0.0.1:{pg_cluster.port}:*:pairs:{PASSWORD}\n")
    (home / ".pgpass").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    async with await TickStore.open(bare):
        pass


async def test_a_foreign_database_is_refused_untouched_and_a_newer_one_too(pg_cluster):
    foreign = pg_cluster.new_database()
    await sql(foreign, "CREATE TABLE app_users (id int); INSERT INTO app_users VALUES (7)")
    with pytest.raises(StoreError, match="is not a pairs-tui store \\(it has tables app_users\\)"):
        await TickStore.open(foreign)
    assert await sql(foreign, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 1

    newer = pg_cluster.new_database()
    async with await TickStore.open(newer):
        pass
    await sql(newer, f"UPDATE pairs_tui_schema SET version = {PG_SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer pairs-tui"):
        await TickStore.open(newer)

    empty = pg_cluster.new_database()
    with pytest.raises(StoreError, match=r"no tick store in .* yet"):
        await TickStore.open(empty, readonly=True)
    async with await TickStore.open(empty) as store:
        assert isinstance(store, PgStore)
    async with await TickStore.open(empty, readonly=True) as reader:
        with pytest.raises(StoreError, match="open read-only"):
            await reader.series_ids(["BTCUSDT"], StreamKind.TRADE)


async def test_many_starting_at_once_migrate_once(pg_url):
    stores = await asyncio.gather(*(TickStore.open(pg_url) for _ in range(4)))
    for store in stores:
        await store.close()
    assert await sql(pg_url, "SELECT count(*) FROM pairs_tui_schema") == 1
    assert await sql(pg_url, "SELECT version FROM pairs_tui_schema") == PG_SCHEMA_VERSION


async def test_trades_live_in_a_partition_per_day_and_pruning_drops_whole_days(pg_url):
    async with await TickStore.open(pg_url) as store:
        ids = await store.series_ids(["BTCUSDT", "ETHUSDT"], StreamKind.TRADE)
        btc, eth = ids["BTCUSDT"], ids["ETHUSDT"]
        rows = [trade(btc, i, T0 + i * 3_600_000_000) for i in range(72)]  # 3 days, hourly
        rows.append(trade(eth, 1, T0 + 3_600_000_000))  # ETHUSDT's only trade: day 1
        assert await store.write(rows) == 73
        assert await store.write(rows) == 0  # each trade once
        partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'trades'::regclass"
        assert await sql(pg_url, partitions) == 3
        assert await store.integrity_ok()

        cut = T0 + 2 * DAY_US + 6 * 3_600_000_000  # day 3, 06:00
        assert await store.count_older(cut) == 54  # 48 + 6 of BTCUSDT; ETHUSDT's newest stays
        assert await store.prune(cut, batch=4) == 54
        assert await store.trade_ids("BTCUSDT") == list(range(54, 72))
        assert await store.trade_ids("ETHUSDT") == [1]
        assert await sql(pg_url, partitions) == 2  # day 2 dropped; day 1 holds ETHUSDT's newest

        async with store.bulk() as insert:  # an import lands in its days' partitions too
            later = pl.DataFrame(
                [(btc, 100 + i, T0 + (5 + i) * DAY_US, "1", "2", 0) for i in range(2)],
                schema=list(IMPORT_COLUMNS),
                orient="row",
            )
            assert await insert(later) == 2
            again = pl.concat([later, later.with_columns(id=pl.col("id") + 2)])
            assert await insert(again) == 2  # half of it there: only the new half
            fresh = later.with_columns(id=pl.col("id") + 100)
            assert await insert(pl.concat([fresh, fresh])) == 2  # its own duplicates: once
        assert await sql(pg_url, partitions) == 4


async def test_a_dropped_connection_is_taken_up_again(pg_url):
    async with await TickStore.open(pg_url) as store:
        [series] = (await store.series_ids(["BTCUSDT"], StreamKind.TRADE)).values()
        assert await store.write([trade(series, 1, T0)]) == 1
        killed = await sql(
            pg_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'pairs-tui'",
        )
        assert killed >= 1
        assert await store.write([trade(series, 2, T0 + 1)]) == 1  # a new connection
        assert await store.trade_ids("BTCUSDT") == [1, 2]


async def test_a_trade_is_its_id_whatever_the_precision_of_its_time(pg_url):
    """The stream gives times in ms (stored as ms * 1000), Binance's dumps in µs: a dump
    imported over recorded trades stores none of them twice, as SQLite keeps one."""
    async with await TickStore.open(pg_url) as store:
        [btc] = (await store.series_ids(["BTCUSDT"], StreamKind.TRADE)).values()
        assert await store.write([trade(btc, i, T0 + i * 1000) for i in range(5)]) == 5
        assert await store.write([trade(btc, 2, T0 + 2 * 1000 + 123)]) == 0  # the same, in µs
        dump = pl.DataFrame(
            [(btc, i, T0 + i * 1000 + 456, "1", "2", 0) for i in range(3, 8)],
            schema=list(IMPORT_COLUMNS),
            orient="row",
        )
        async with store.bulk() as insert:
            assert await insert(dump) == 3  # 5, 6, 7: 3 and 4 are there already
        assert await store.trade_ids("BTCUSDT") == list(range(8))


async def test_a_new_day_never_waits_for_an_import_nor_holds_up_readers(pg_url):
    """An import's transaction stays open for the whole file. A recorder crossing midnight
    meanwhile makes its day's partition, readers read, and the import goes on into days of
    its own: partitions are attached apart, never created under a lock on `trades`."""
    async with await TickStore.open(pg_url) as store, await TickStore.open(pg_url) as other:
        [btc] = (await store.series_ids(["BTCUSDT"], StreamKind.TRADE)).values()

        def chunk(day: int, first: int) -> pl.DataFrame:
            rows = [(btc, first + i, T0 + day * DAY_US + i, "1", "2", 0) for i in range(3)]
            return pl.DataFrame(rows, schema=list(IMPORT_COLUMNS), orient="row")

        async with store.bulk() as insert:
            assert await insert(chunk(10, 1000)) == 3
            write = other.write([trade(btc, 5000, T0 + 20 * DAY_US)])  # another day, now
            assert await asyncio.wait_for(write, 10) == 1
            assert await asyncio.wait_for(other.last_id("BTCUSDT", StreamKind.TRADE), 10) == 5000
            assert await insert(chunk(11, 2000)) == 3  # a day the import makes as it goes
        assert len(await store.trade_ids("BTCUSDT")) == 7


def test_passwords_are_hidden_wherever_a_url_carries_one():
    from pairs_tui.store import hide_passwords

    assert shown_url("postgresql://desk:pw@db:5432/t") == "postgresql://desk@db:5432/t"
    assert shown_url("postgresql://desk@db/t?password=pw&sslmode=require") == (
        "postgresql://desk@db/t?sslmode=require"
    )
    assert shown_url("postgresql://db/t") == "postgresql://db/t"
    said = hide_passwords("record --db postgresql://u:pw@h/d?sslpassword=pw2 failed")
    assert "pw" not in said.replace("postgresql", "") and "postgresql://u@h/d" in said
