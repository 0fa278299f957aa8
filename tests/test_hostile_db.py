"""Hostile databases, on real SQLite files and real `pairs-tui` processes.

Another application's SQLite file passed as --db is refused as it is, byte for byte,
with nothing created beside it; an empty file still becomes a store. The commands that
only read open the store read-only: they work on a 0444 file in a 0555 directory as an
unprivileged user (tests run as root, and root ignores permissions, so those commands
run as `nobody`), and they never write, migrate or leave a -wal or -shm behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, market, pairs_tui_cmd, store_tape, write_trades

from pairs_tui.model import AlertEvent, StreamKind
from pairs_tui.store import _MIGRATIONS, SCHEMA_VERSION, StoreError, TickStore

pytestmark = pytest.mark.server

FOREIGN = "is not a pairs-tui store (it has tables app_posts, app_users): pass another --db"


def fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """The file's bytes and mtime, and every file beside it (a -wal, -shm or -journal)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def foreign_db(path: Path, *, journal: str = "delete", version: int = 0) -> Path:
    """Another application's database: its own tables and rows."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA auto_vacuum = FULL")  # a mode ours would switch, were it asked
        conn.execute(f"PRAGMA journal_mode = {journal}")
        conn.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE app_posts (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO app_users (name) VALUES (?)", [("ann",), ("bob",)])
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    return path


# -- another application's file -------------------------------------------------------------


@pytest.mark.parametrize("journal", ["delete", "wal"])
@pytest.mark.parametrize("readonly", [False, True], ids=["writing", "reading"])
async def test_another_applications_database_is_refused_untouched(tmp_path, journal, readonly):
    db = foreign_db(tmp_path / "other.db", journal=journal)
    before = fingerprint(db)
    with pytest.raises(StoreError) as error:
        await TickStore.open(db, readonly=readonly)
    assert str(error.value) == f"{db} {FOREIGN}"
    assert fingerprint(db) == before  # same bytes, same mtime, no -wal or -shm left
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 1  # still FULL


@pytest.mark.parametrize(
    ("version", "make", "says"),
    [
        (1, "CREATE TABLE app_users (id)", "it has table app_users"),  # a version by chance
        (SCHEMA_VERSION, "CREATE TABLE trades (id)", "but no tables alert_events, alert_rules"),
        (0, "CREATE TABLE trades (id)", "it has table trades"),  # our name, no version
        (0, "CREATE VIEW answer AS SELECT 42", "it has schema object answer"),
        (7, "CREATE TABLE app_users (id)", "it has table app_users"),
    ],
)
async def test_a_schema_that_is_not_ours_is_refused(tmp_path, version, make, says):
    db = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(make)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    before = fingerprint(db)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="is not a pairs-tui store") as error:
            await TickStore.open(db, readonly=readonly)
        assert says in str(error.value)
    assert fingerprint(db) == before


async def test_our_tables_beside_another_applications_are_refused(tmp_path):
    db = tmp_path / "mixed.db"
    await store_tape(db, 2)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    before = fingerprint(db)
    for readonly in (False, True):
        with pytest.raises(StoreError) as error:
            await TickStore.open(db, readonly=readonly)
        assert str(error.value) == f"{db} is not a pairs-tui store (it has table notes):" + (
            " pass another --db"
        )
    assert fingerprint(db) == before


async def test_a_store_missing_a_table_is_refused(tmp_path):
    db = tmp_path / "ticks.db"
    await store_tape(db, 1)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE gaps")
        conn.commit()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION} but no table gaps"):
        await TickStore.open(db)


@pytest.mark.parametrize("how", ["new path", "0-byte file", "schema-less SQLite file"])
async def test_an_empty_file_or_a_new_path_becomes_a_store(tmp_path, how):
    db = tmp_path / "ticks.db"
    if how == "0-byte file":
        db.touch()
    elif how == "schema-less SQLite file":
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("CREATE TABLE scratch (x)")
            conn.execute("DROP TABLE scratch")
            conn.commit()
        assert db.stat().st_size > 0
    if how != "new path":
        with pytest.raises(StoreError, match=r"no tick store in .* yet"):  # nothing to read
            await TickStore.open(db, readonly=True)
    async with await TickStore.open(db) as store:
        await write_trades(store, market().advance_to(1))
        assert await store.counts()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_every_command_refuses_a_foreign_database_untouched(tmp_path, isolated_home):
    """What the user sees: one line, exit 2, and the file exactly as it was."""
    db = foreign_db(tmp_path / "other.db", journal="wal")
    (tmp_path / "BTCUSDT-trades-2025-01.csv").write_text("1,100.5,0.1,10.05,1735689600000,true\n")
    before = fingerprint(db)
    for args in (
        ["record", "btcusdt", "--demo", "--duration", "1"],
        ["import", "BTCUSDT-trades-2025-01.csv"],
        ["export", "btcusdt", "ethusdt", "--what", "bars", "-o", "x.csv"],
        ["alerts"],
        ["prune", "--older-than", "7d"],
    ):
        done = subprocess.run(
            pairs_tui_cmd(*args, "--db", "other.db"),
            cwd=tmp_path,
            env=cli_env(isolated_home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr == f"pairs-tui: error: other.db {FOREIGN}\n", (args, done.stderr)
        assert fingerprint(db) == before, args


# -- reading without writing --------------------------------------------------------------


async def test_a_read_only_open_never_writes(tmp_path):
    db = tmp_path / "ticks.db"
    await store_tape(db, 30)
    before = fingerprint(db)
    store = await TickStore.open(db, readonly=True)
    try:
        assert set(await store.counts()) == {"BTCUSDT", "ETHUSDT"}
        assert await store.read_trades("BTCUSDT", StreamKind.TRADE, limit=5)
        assert await store.events() == [] and await store.rules() == []
        assert await store.integrity_ok()
        for attempt in (
            lambda: store.write([]),
            lambda: store.series_ids(["SOLUSDT"], StreamKind.TRADE),
            lambda: store.add_rule(("BTCUSDT", "ETHUSDT"), "1m", "z > 2", 1),
            lambda: store.add_events([]),
            lambda: store.prune(0),
        ):
            with pytest.raises(StoreError, match="is open read-only"):
                await attempt()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # SQLite says no too
            await store._conn.execute("DELETE FROM trades")
    finally:
        await store.close()
    assert fingerprint(db) == before  # not a byte, not the mtime, and no -wal or -shm


async def test_a_read_only_open_reads_an_older_store_as_it_is(tmp_path):
    """Schema 1 (before alert rules): read, not migrated; a writing open migrates it."""
    db = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for statement in _MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("INSERT INTO series VALUES (1, 'BTCUSDT', 'trade')")
        conn.execute("INSERT INTO trades VALUES (1, 7, 1000, NULL, '100.5', '0.1', 0)")
        conn.commit()
    before = fingerprint(db)
    async with await TickStore.open(db, readonly=True) as store:
        assert store.schema_version == 1
        assert await store.counts() == {"BTCUSDT": 1}
        assert await store.events() == [] and await store.rules() == []
    assert fingerprint(db) == before
    async with await TickStore.open(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert await store.rules() == []


async def test_a_read_only_open_leaves_a_writers_files_alone(tmp_path):
    """While a recorder has the store open, a reader shares its -wal and -shm."""
    db = tmp_path / "ticks.db"
    await store_tape(db, 5)
    writer = await TickStore.open(db)
    try:
        await write_trades(writer, market().advance_to(10))
        async with await TickStore.open(db, readonly=True) as reader:
            seen = sum((await reader.counts()).values())
            await write_trades(writer, market().advance_to(15))
            assert sum((await reader.counts()).values()) > seen  # follows the writer
        assert Path(f"{db}-wal").exists()  # still the writer's
        assert sum((await writer.counts()).values()) > seen
    finally:
        await writer.close()


# -- as an unprivileged user: permissions that root would ignore --------------------------


@pytest.fixture(scope="module")
def as_nobody() -> list[str]:
    """The command prefix that runs a process as the unprivileged user nobody."""
    if os.geteuid() != 0:
        pytest.skip("permission tests run the commands as user nobody, which needs root")
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("permission tests need the user nobody, and there is none")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("permission tests need setpriv (util-linux) to run as user nobody")
    prefix = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import pairs_tui"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this checkout's Python: {probe.stderr.strip()}")
    return prefix


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory user nobody can reach (pytest's tmp_path is root's own, 0700)."""
    where = Path(tempfile.mkdtemp(prefix="pairs-tui-ro-", dir="/tmp"))
    where.chmod(0o755)
    home = where / "home"
    for sub in ("config", "data", "state"):
        (home / sub).mkdir(parents=True)
    for path in (home, *home.iterdir()):
        path.chmod(0o777)
    yield where
    for path in (where, *where.rglob("*")):
        with contextlib.suppress(OSError):
            path.chmod(0o777 if path.is_dir() else 0o666)
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A store made by `pairs-tui record`, closed cleanly, with one alert firing."""
    where = tmp_path_factory.mktemp("recorded")
    home = where / "home"
    for sub in ("config", "data", "state"):
        (home / sub).mkdir(parents=True)
    db = where / "ticks.db"
    done = subprocess.run(
        pairs_tui_cmd(
            *("record", "btcusdt", "ethusdt", "--demo", "--seed", "1", "--duration", "2"),
            *("--db", str(db)),
        ),
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    async def fire() -> None:
        async with await TickStore.open(db) as store:
            event = AlertEvent(None, "abs(z) > 2", "BTCUSDT", "ETHUSDT", "1s", 5, 4, 5, 2.5)
            await store.add_events([event])

    asyncio.run(fire())
    assert not Path(f"{db}-wal").exists()  # closed cleanly
    return db


def run_as(prefix: list[str], where: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(where / "home")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [*prefix, *pairs_tui_cmd(*args)],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("dir_mode", [0o555, 0o777], ids=["dir 0555", "dir 0777"])
def test_export_and_alerts_read_a_0444_store_as_another_user(
    as_nobody, public_dir, recorded, dir_mode
):
    store_dir = public_dir / "store"
    store_dir.mkdir()
    db = store_dir / "ticks.db"
    shutil.copy(recorded, db)
    db.chmod(0o444)
    store_dir.chmod(dir_mode)
    before = fingerprint(db)
    db_arg = "store/ticks.db"

    bars = run_as(
        as_nobody,
        public_dir,
        *("export", "btcusdt", "ethusdt", "--what", "bars", "-o", "-", "--timeframe", "1s"),
        *("--db", db_arg),
    )
    assert bars.returncode == 0, bars.stderr
    lines = bars.stdout.splitlines()
    assert lines[0] == "ts,symbol,open,high,low,close,volume,trades" and len(lines) > 2
    summary = run_as(
        as_nobody,
        public_dir,
        *("export", "btcusdt", "ethusdt", "--what", "summary", "-o", "-", "--timeframe", "1s"),
        *("--window", "2", "--lookback", "4", "--db", db_arg),
    )
    assert summary.returncode == 0, summary.stderr
    assert '"n_trades"' in summary.stdout
    alerts = run_as(as_nobody, public_dir, "alerts", "--db", db_arg)
    assert alerts.returncode == 0, alerts.stderr
    assert "BTCUSDT/ETHUSDT  1s  abs(z) > 2  2.5" in alerts.stdout
    listed = run_as(as_nobody, public_dir, "alerts", "--json", "--db", db_arg)
    assert listed.returncode == 0 and '"rule": "abs(z) > 2"' in listed.stdout, listed.stderr
    assert fingerprint(db) == before  # nothing written, nothing left beside it
    assert stat.S_IMODE(db.stat().st_mode) == 0o444


def test_writing_commands_say_the_store_is_read_only(as_nobody, public_dir, recorded):
    store_dir = public_dir / "store"
    store_dir.mkdir()
    db = store_dir / "ticks.db"
    shutil.copy(recorded, db)
    db.chmod(0o444)
    store_dir.chmod(0o555)
    before = fingerprint(db)
    for args in (["prune", "--older-than", "7d"], ["record", "btcusdt", "--duration", "1"]):
        done = run_as(as_nobody, public_dir, *args, "--db", "store/ticks.db")
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            "pairs-tui: error: cannot write to store/ticks.db: the file is read-only"
            " (export and alerts only read it)\n"
        )
    assert fingerprint(db) == before


READER = """
import asyncio, sys
from pairs_tui.store import TickStore

async def main():
    async with await TickStore.open(sys.argv[1], readonly=True) as store:
        for _ in sys.stdin:
            print(sum((await store.counts()).values()), flush=True)

asyncio.run(main())
"""


async def test_a_reader_that_cannot_write_follows_a_writer_that_starts_later(as_nobody, public_dir):
    """In a directory it cannot write, a reader reads the file alone until a writer
    appears: a writer that came and went, then one that stays, are both seen."""
    store_dir = public_dir / "store"
    store_dir.mkdir()
    db = store_dir / "ticks.db"
    await store_tape(db, 5)
    db.chmod(0o644)  # root writes; nobody may not, nor create a -wal or -shm here
    store_dir.chmod(0o755)
    env = cli_env(public_dir / "home")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    reader = subprocess.Popen(
        [*as_nobody, sys.executable, "-c", READER, str(db)],
        cwd=public_dir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def count() -> int:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("\n")
        reader.stdin.flush()
        line = reader.stdout.readline()
        assert line, reader.stderr.read() if reader.stderr else ""
        return int(line)

    try:
        trades = [len(market().advance_to(s)) for s in (5, 10, 15)]
        assert count() == trades[0]
        async with await TickStore.open(db) as writer:  # comes and goes between reads
            await write_trades(writer, market().advance_to(10))
        assert not Path(f"{db}-wal").exists()
        assert count() == trades[1]
        writer = await TickStore.open(db)  # and one that stays
        try:
            await write_trades(writer, market().advance_to(15))
            assert count() == trades[2]
        finally:
            await writer.close()
        assert count() == trades[2]
    finally:
        if reader.stdin is not None:
            reader.stdin.close()
        assert reader.wait(timeout=30) == 0, reader.stderr.read() if reader.stderr else ""
