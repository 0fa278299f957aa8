"""`pairs-tui scan` over a store of several symbols: every row equals `export --what
summary` for its pair and view (its cointegration tests, batched, to 1e-9), rows are
ranked by the Engle-Granger p-value, and bad input is one line and exit 2."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest
from conftest import run_in_process as run
from conftest import store_tape

from pairs_tui.model import MAX_SYMBOLS
from pairs_tui.scan import COLUMNS

pytestmark = pytest.mark.server

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
VIEW = ("--timeframe", "1s", "--window", "5", "--lookback", "120")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Ten minutes of the fixed demo tape of four symbols (every bar closed long ago)."""
    db = tmp_path_factory.mktemp("scan") / "ticks.db"

    asyncio.run(store_tape(db, 600, seed=2, symbols=SYMBOLS))
    return db


def scanned(store, capsys, *extra: str, symbols=SYMBOLS) -> list[dict]:
    code, out, err = run(["scan", *symbols, *VIEW, "--db", str(store), *extra], capsys)
    assert code == 0, err
    return json.loads(out) if "json" in extra else list(csv.DictReader(io.StringIO(out)))


def test_every_row_is_the_pairs_export_summary(store, capsys, tmp_path):
    rows = scanned(store, capsys, "--format", "json")
    assert len(rows) == 6 and list(rows[0]) == list(COLUMNS)
    order = {s: i for i, s in enumerate(SYMBOLS)}
    assert all(order[r["symbol_a"]] < order[r["symbol_b"]] for r in rows)  # A given first
    for row in rows:
        out = tmp_path / f"{row['symbol_a']}-{row['symbol_b']}.json"
        pair = [row["symbol_a"], row["symbol_b"]]
        code, _, err = run(
            ["export", *pair, *VIEW, "--what", "summary", "--db", str(store), "-o", str(out)],
            capsys,
        )
        assert code == 0, err
        summary = json.loads(out.read_text())
        for name in COLUMNS[2:-1]:  # the tests batched: statsmodels' numbers to 1e-9
            assert row[name] == pytest.approx(summary[name], rel=1e-9, abs=1e-12), (pair, name)
        assert row["verdict"] == summary["verdict"]
    p = [r["eg_pvalue"] for r in rows]
    assert p == sorted(p)  # the most cointegrated first


def test_csv_top_and_a_symbol_without_data(store, capsys):
    rows = scanned(store, capsys, "--format", "csv", symbols=(*SYMBOLS, "XRPUSDT"))
    assert len(rows) == 10 and list(rows[0]) == list(COLUMNS)
    assert [r["eg_pvalue"] == "" for r in rows] == [False] * 6 + [True] * 4  # missing last
    assert rows[-1]["verdict"] == "no trades of XRPUSDT in the store"
    top = scanned(store, capsys, "--format", "csv", "--top", "2")
    assert [(r["symbol_a"], r["symbol_b"]) for r in top] == [
        (r["symbol_a"], r["symbol_b"]) for r in rows[:2]
    ]


def test_the_table_says_the_view_and_ranks_the_pairs(store, capsys):
    code, out, err = run(["scan", *SYMBOLS, *VIEW, "--db", str(store)], capsys)
    assert code == 0, err
    assert "6 pairs, 1s bars, W=5, L=120" in out and "cointegrated" in out


@pytest.mark.parametrize(
    ("symbols", "says"),
    [
        (["btcusdt"], "give at least two symbols to scan, not 1"),
        (["btcusdt", "ethusdt", "BTCUSDT"], "given twice"),
        (["btc-usdt", "ethusdt"], "invalid symbol btc-usdt"),
        ([f"S{i}USDT" for i in range(MAX_SYMBOLS + 1)], "is more than a scan takes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, capsys, symbols, says):
    code, out, err = run(["scan", *symbols, "--db", str(store)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err, err


def test_backfill_fills_a_fresh_store_from_rest_then_scans_it(tmp_path, capsys):
    """`--demo --backfill`: the embedded server's REST history, L + W bars of each symbol,
    stored, then scanned; the rows are `export --what summary` of the store it left."""
    fresh = tmp_path / "fresh.db"
    view = ("--timeframe", "1m", "--window", "5", "--lookback", "60")
    args = ["scan", "--demo", "--backfill", *SYMBOLS[:3], *view, "--db", str(fresh)]
    code, out, err = run([*args, "--format", "json"], capsys)
    assert code == 0, err
    assert "history: " in err and "bars from http://127.0.0.1:" in err
    rows = json.loads(out)
    assert len(rows) == 3 and all(r["n_bars"] == 60 for r in rows)
    for row in rows:
        pair = [row["symbol_a"], row["symbol_b"]]
        target = tmp_path / "summary.json"
        code, _, err = run(
            ["export", *pair, *view, "--what", "summary", "--db", str(fresh), "-o", str(target)],
            capsys,
        )
        assert code == 0, err
        summary = json.loads(target.read_text())
        assert row["eg_pvalue"] == pytest.approx(summary["eg_pvalue"], rel=1e-6)  # batched
        assert row["zscore"] == pytest.approx(summary["zscore"], rel=1e-9)
    # the second time, nothing is asked again: the store has it
    code, out, err = run(args, capsys)
    assert code == 0 and "history: 0 bars" in err


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--demo", "--backfill", "btcusdt", "foousdt"], 2, "unknown symbol FOOUSDT on Binance"),
        (["--backfill", "--rest-url", "http://127.0.0.1:9", "btcusdt", "ethusdt"], 1,
         "history unavailable: http://127.0.0.1:9/api/v3/exchangeInfo"),
        (["--demo", "btcusdt", "ethusdt"], 2, "they need --backfill"),
    ],
)  # fmt: skip
def test_backfill_problems_are_one_line(tmp_path, capsys, args, code, says):
    got, out, err = run(["scan", *args, "--db", str(tmp_path / "x.db")], capsys)
    assert got == code and out == "" and says in err and err.count("\n") == 1, err
