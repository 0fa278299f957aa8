"""Hostile input at the door of `import`: the live feed's rule for every row, memory that
stays flat whatever the length of a line, and one bad file among many reported by name
while the others go in."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import cli_env, pairs_tui_cmd
from hostile import CHECK_CASES, GOOD

from pairs_tui.importer import MAX_LINE_CHARS, DumpError, DumpFile, identify, parse_chunk
from pairs_tui.model import MICROS_THRESHOLD, StreamKind, check_trade

pytestmark = pytest.mark.server

FIRST_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def rows(n: int, first_id: int = 1000) -> list[str]:
    return [
        f"{first_id + i},65000.{i % 100:02d}000000,0.00100000,65.00,{FIRST_MS + i},true,true"
        for i in range(n)
    ]


def stored_ids(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(
            conn.execute(
                "SELECT symbol, count(*) FROM trades JOIN series ON series.id = trades.series"
                " GROUP BY symbol"
            ).fetchall()
        )


def import_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        pairs_tui_cmd("import", *args),
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- one rule: the importer judges each row as the feed judges each frame ----------------------
ROW_CASES = [c for c in CHECK_CASES if all(len(str(v)) < 1000 for v in c[1].values())]  # a
# longer field makes a longer line than a dump may have: see the line tests


@pytest.mark.parametrize(("what", "fields", "reason"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_a_dump_row_is_judged_by_the_feeds_rule(what, fields, reason):
    """The table of `check_trade` as rows of a dump: imported exactly when the feed would
    store the trade, and otherwise refused with the same reason. A dump's fields may have
    spaces around them; the time is read as ms or µs by its size, as the feed does."""
    f = {**GOOD, **fields}
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [f["trade_id"], f["price"], f["qty"], "1", f["time_us"], "true", "true"]
    )
    dump = DumpFile(Path("BTCUSDT-trades-2025-01.csv"), "BTCUSDT", StreamKind.TRADE)
    t = f["time_us"]
    time_us = t if t >= MICROS_THRESHOLD else t * 1000
    expected = check_trade(
        f["price"].strip(), f["qty"].strip(), f["trade_id"], time_us, time.time_ns() // 1000
    )
    if expected is None:
        [row] = parse_chunk([out.getvalue()], 1, dump, series=7).rows()
        assert row == (7, f["trade_id"], time_us, f["price"].strip(), f["qty"].strip(), 1)
    else:
        with pytest.raises(DumpError, match=re.escape(f"line 1: {expected}: ")):
            parse_chunk([out.getvalue()], 1, dump, series=7)


# -- memory stays flat whatever the length of a line -----------------------------------------
PEAK = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)\n"
)


def peak_import(home: Path, *args: str) -> tuple[int, int, str]:
    """Run `pairs-tui import` under a parent of its own: the child's peak RSS in KiB, its
    exit code and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *pairs_tui_cmd("import", *args)],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    peak, code = map(int, done.stdout.split()[-2:])
    return peak, code, done.stderr


def test_a_50mb_line_is_a_bad_row_and_memory_stays_flat(tmp_path, isolated_home):
    huge = 50 << 20
    piece = "9" * (1 << 20)
    head = "\n".join(rows(2)) + "\n3,"
    csv_path = tmp_path / "BTCUSDT-trades-2025-01.csv"
    with csv_path.open("w") as fh:
        fh.write(head)
        for _ in range(huge // len(piece)):
            fh.write(piece)
        fh.write(",0.1,1,1735689600000,true,true\n")
    zip_path = tmp_path / "ETHUSDT-trades-2025-01.zip"
    with (
        zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("ETHUSDT-trades-2025-01.csv", "w") as member,
    ):
        member.write(head.encode())
        for _ in range(huge // len(piece)):
            member.write(piece.encode())
    assert zip_path.stat().st_size < 1 << 20
    good = tmp_path / "SOLUSDT-trades-2025-01.csv"
    good.write_text("\n".join(rows(3)) + "\n")

    base, code, err = peak_import(isolated_home, str(good), "--db", str(tmp_path / "base.db"))
    assert code == 0, err
    db = tmp_path / "t.db"
    peak, code, err = peak_import(
        isolated_home, str(csv_path), str(zip_path), str(good), "--db", str(db)
    )
    assert code == 1, err
    for path in (csv_path, zip_path):
        assert f"{path}: line 3: the line is longer than {MAX_LINE_CHARS} characters" in err
    assert all(len(line) < 1000 for line in err.splitlines())
    assert stored_ids(db) == {"SOLUSDT": 3}
    assert peak - base < 30 << 10, f"peak {peak} KiB against {base} KiB importing 3 rows"


# -- one bad file among many: named, and the others go in ----------------------------------
def test_one_bad_file_among_many_is_named_and_the_others_go_in(tmp_path, isolated_home):
    good = rows(50)
    files = {
        "ETHUSDT": "\n".join(good) + "\n",  # good
        # a 200 KiB field on one line
        "BTCUSDT": "\n".join([*good[:4], '5,"' + "1" * (200 << 10) + ",1,1,1,true", *good[5:]]),
        # a quote left open: a field of 200 KiB over many short lines
        "BNBUSDT": "\n".join([*good[:6], '7,"65000', *["1" * 60] * 3500, *good[7:]]),
        "SOLUSDT": "\n".join(good) + "\n",  # good
    }
    paths = []
    for symbol, text in files.items():
        path = tmp_path / f"{symbol}-trades-2025-01.csv"
        path.write_text(text)
        paths.append(path)
    not_utf8 = tmp_path / "XRPUSDT-trades-2025-01.csv"
    not_utf8.write_bytes(("\n".join(good[:9]) + "\n").encode() + b"10,\xff\xfe,1,1\n")
    cut_short = tmp_path / "ADAUSDT-trades-2025-01.zip"
    with zipfile.ZipFile(cut_short, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ADAUSDT-trades-2025-01.csv", "\n".join(rows(20_000)))
    data = bytearray(cut_short.read_bytes())
    data[200:400] = bytes(200)  # the compressed stream, broken
    cut_short.write_bytes(bytes(data))
    paths[2:2] = [not_utf8, cut_short]

    db = tmp_path / "t.db"
    done = import_cli(isolated_home, *map(str, paths), "--db", str(db))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("pairs-tui: error")]
    assert "Traceback" not in done.stderr
    assert all(len(line) < 1000 for line in done.stderr.splitlines())
    assert len(errors) == 4, errors
    btc, not_text, zipped, bnb = errors
    assert f"{paths[1]}: line 5: the line is longer than {MAX_LINE_CHARS} characters" in btc
    assert f"{not_utf8}: not UTF-8 text ('utf-8' codec can't decode byte 0xff" in not_text
    assert f"{cut_short}: the zip is damaged" in zipped
    assert f"{paths[4]}: line 7: field larger than field limit" in bnb  # where it starts
    assert all(e.endswith("; nothing imported from it") for e in errors)
    assert stored_ids(db) == {"ETHUSDT": 50, "SOLUSDT": 50}


def test_telling_trades_from_aggtrades_reads_a_bounded_head(tmp_path):
    """Without a Binance file name the kind is read from the first rows: a first line of
    50 MB, or a 200 KiB field, is a file whose kind cannot be told, not a crash."""
    for name, first in (("huge", "9" * (50 << 20)), ("field", '1,"' + "1" * (200 << 10))):
        path = tmp_path / f"{name}.csv"
        path.write_text(first + "\n" + "\n".join(rows(3)) + "\n")
        with pytest.raises(DumpError, match="cannot tell trades from aggTrades"):
            identify(path, "btcusdt")
    path = tmp_path / "fine.csv"
    path.write_text("\n".join(rows(3)) + "\n")
    assert identify(path, "btcusdt").kind is StreamKind.TRADE
