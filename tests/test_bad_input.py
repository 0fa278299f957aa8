"""The bad-input table of docs/commands.md, row by row: the exit code, the one line on
stderr, and nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shlex
import sqlite3

import pytest
from conftest import LOOPBACK_ONLY, REPO, run_in_process, store_tape

pytestmark = pytest.mark.server

ROW = re.compile(
    r"^\| (?P<what>[^|]+) \| `pairs-tui (?P<args>[^`]+)` \| (?P<code>\d) \| `(?P<says>.+)` \|$"
)


def table_rows() -> list[tuple[str, str, int, str]]:
    text = (REPO / "docs" / "commands.md").read_text()
    section = text.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| ")]
    return [(m["what"], m["args"], int(m["code"]), m["says"]) for m in rows if m]


ROWS = table_rows()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The files the table's commands name."""
    where = tmp_path_factory.mktemp("bad-input")
    (where / "broken.toml").write_text('[feed]\nstream = "trade"\nstale_after = \n')
    (where / "types.toml").write_text('[view]\nwindow = "20"\n')
    (where / "typo.toml").write_text("[feed]\nstale = 3\n")
    (where / "rules.toml").write_text('[[alerts]]\nrule = "z >> 2"\n')
    (where / "notes.db").write_text("not a database\n" * 100)
    asyncio.run(store_tape(where / "ticks.db", 120))
    asyncio.run(store_tape(where / "newer.db", 1))
    with contextlib.closing(sqlite3.connect(where / "newer.db")) as conn:
        conn.execute("PRAGMA user_version = 99")
    with contextlib.closing(sqlite3.connect(where / "other.db")) as conn:  # not ours at all
        conn.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE app_posts (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO app_users (name) VALUES ('ann')")
        conn.commit()
    asyncio.run(store_tape(where / "mixed.db", 1))
    with contextlib.closing(sqlite3.connect(where / "mixed.db")) as conn:  # ours and theirs
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    lines = ["1,100.5,0.1,10.05,1735689600000,true", "2,-3,0.1,-0.3,1735689600001,false"]
    (where / "BTCUSDT-trades-2025-01.csv").write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n" + "\n".join(lines) + "\n"
    )
    return where


def test_the_table_is_there():
    assert len(ROWS) >= 20


def run_row(workdir, home, args: str, monkeypatch, capsys) -> tuple[int, str]:
    """The row as a user types it, in the shipped defaults (history at start included),
    except that nothing leaves loopback: run by `main` in this process (a subprocess per
    row cost 17 s of CPU; `tests/test_cli.py` runs the real program)."""
    user_config = home / "config" / "pairs-tui" / "config.toml"
    user_config.write_text(LOOPBACK_ONLY.replace("backfill = false", "backfill = true"))
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("PAIRS_TUI_DEBUG", raising=False)
    code, _, err = run_in_process(shlex.split(args), capsys)
    return code, err


def contents(workdir) -> dict[str, str]:
    """Every file there, by its bytes: a refused database is left exactly as it was."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in workdir.iterdir()}


@pytest.mark.parametrize(("what", "args", "code", "says"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(workdir, isolated_home, monkeypatch, capsys, what, args, code, says):
    before = contents(workdir)
    got, stderr = run_row(workdir, isolated_home, args, monkeypatch, capsys)
    lines = stderr.strip().splitlines()
    assert got == code, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("pairs-tui: error: ") and says in lines[0], lines[0]
    assert "hunter2" not in stderr  # a database password in --db is never shown
    assert contents(workdir) == before, "something was left behind or changed"


def test_a_rule_too_long_once_written_out_is_refused_at_entry(
    workdir, isolated_home, monkeypatch, capsys
):
    """Too long for the docs' table: `z>1e15` sixteen times is 395 characters stored."""
    rule = " and ".join(["z>1e15"] * 16)
    args = f"watch btcusdt ethusdt --no-feed --duration 1 --db ticks.db --alert '{rule}'"
    before = contents(workdir)
    code, stderr = run_row(workdir, isolated_home, args, monkeypatch, capsys)
    assert code == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("pairs-tui: error: bad --alert ")
    assert line.endswith(
        "the rule is 395 characters long, more than the 300 a stored rule may have: shorten it"
    )
    assert contents(workdir) == before
