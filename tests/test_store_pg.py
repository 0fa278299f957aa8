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
