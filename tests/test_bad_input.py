"""The README's bad-input table, row by row: the exit code, the one line on stderr, and
nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import sqlite3
import subprocess

import pytest
from conftest import REPO, cli_env, pairs_tui_cmd, store_tape

ROW = re.compile(
    r"^\| (?P<what>[^|]+) \| `pairs-tui (?P<args>[^`]+)` \| (?P<code>\d) \| `(?P<says>.+)` \|$"
)


def readme_rows() -> list[tuple[str, str, int, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| ")]
    return [(m["what"], m["args"], int(m["code"]), m["says"]) for m in rows if m]


ROWS = readme_rows()


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
    lines = ["1,100.5,0.1,10.05,1735689600000,true", "2,-3,0.1,-0.3,1735689600001,false"]
    (where / "BTCUSDT-trades-2025-01.csv").write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n" + "\n".join(lines) + "\n"
    )
    return where


def test_the_table_is_there():
    assert len(ROWS) >= 20


@pytest.mark.parametrize(("what", "args", "code", "says"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(workdir, isolated_home, what, args, code, says):
    before = {p.name: p.stat().st_size for p in workdir.iterdir()}
    done = subprocess.run(
        pairs_tui_cmd(*shlex.split(args)),
        cwd=workdir,
        env=cli_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("pairs-tui: error: ") and says in lines[0], lines[0]
    after = {p.name: p.stat().st_size for p in workdir.iterdir()}
    assert after == before, "something was left behind"
