"""`pairs-tui import` of Binance dumps and `pairs-tui export`, end to end."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import cli_env, pairs_tui_cmd
from test_bars import reference_bars

from pairs_tui.cli import main
from pairs_tui.feed.demo import SyntheticMarket

pytestmark = pytest.mark.server


def strict_json(text: str) -> dict:
    """json.loads, refusing the NaN/Infinity that Python would otherwise accept."""

    def refuse(name: str):
        raise ValueError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def export_pair(capsys, *args: str) -> tuple[int, str, str]:
    return invoke(capsys, "export", "btcusdt", "ethusdt", *args)


def tape(seconds: float = 600.0, seed: int = 1) -> dict[str, list]:
    market = SyntheticMarket(seed=seed, rate=20)
    market.start_ms = 1_735_689_600_000  # 2025-01-01T00:00:00Z
    for symbol in ("BTCUSDT", "ETHUSDT"):
        market.add(symbol)
    out: dict[str, list] = {"BTCUSDT": [], "ETHUSDT": []}
    for t in market.advance_to(seconds):
        out[t.symbol].append(t)
    return out


def dump_lines(trades, *, layout: str, micros: bool, header: bool) -> list[str]:
    """Rows as data.binance.vision writes them (PROTOCOL.md §10)."""
    lines = []
    if header:
        lines.append(
            "id,price,qty,quote_qty,time,is_buyer_maker"
            if layout == "futures-trades"
            else "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
            "is_buyer_maker"
        )
    for t in trades:
        time = t.time_ms * 1000 + 123 if micros else t.time_ms
        quote = f"{float(t.price) * float(t.qty):.8f}"
        if layout == "spot-trades":
            lines.append(f"{t.trade_id},{t.price},{t.qty},{quote},{time},{t.buyer_maker},True")
        elif layout == "futures-trades":
            lines.append(
                f"{t.trade_id},{t.price},{t.qty},{quote},{time},{str(t.buyer_maker).lower()}"
            )
        elif layout == "spot-aggTrades":
            lines.append(
                f"{t.trade_id},{t.price},{t.qty},{t.trade_id},{t.trade_id},{time},{t.buyer_maker},True"
            )
        else:  # futures-aggTrades
            lines.append(
                f"{t.trade_id},{t.price},{t.qty},{t.trade_id},{t.trade_id},{time},{str(t.buyer_maker).lower()}"
            )
    return lines


def write_dump(directory: Path, name: str, lines: list[str], *, zipped: bool) -> Path:
    text = "\n".join(lines) + "\n"
    if not zipped:
        path = directory / f"{name}.csv"
        path.write_text(text)
        return path
    path = directory / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", text)
    return path


def db_rows(db: Path, symbol: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT kind, trade_id, ts_us, recv_us, price, qty, buyer_maker FROM trades"
            " JOIN series ON series.id = trades.series WHERE symbol = ? ORDER BY trade_id",
            (symbol,),
        ).fetchall()


@pytest.mark.parametrize(
    ("layout", "micros", "header", "zipped"),
    [
        ("spot-trades", False, False, True),
        ("spot-trades", True, False, False),
        ("futures-trades", False, True, False),
        ("spot-aggTrades", True, False, True),
        ("futures-aggTrades", False, True, True),
    ],
)
def test_import_then_export_bars_round_trip(tmp_path, capsys, layout, micros, header, zipped):
    trades = tape()
    kind = "aggTrade" if "agg" in layout else "trade"
    files = [
        write_dump(
            tmp_path,
            f"{symbol}-{layout.split('-')[1]}-2025-01",
            dump_lines(rows, layout=layout, micros=micros, header=header),
            zipped=zipped,
        )
        for symbol, rows in trades.items()
    ]
    db = tmp_path / "ticks.db"
    code, _, err = invoke(capsys, "import", *map(str, files), "--db", str(db))
    assert code == 0, err
    assert f"{len(trades['BTCUSDT']):,} BTCUSDT {kind}s ({len(trades['BTCUSDT']):,} new)" in err
    assert "rows/s" in err
    stored = db_rows(db, "ETHUSDT")
    first = trades["ETHUSDT"][0]
    assert stored[0] == (
        kind,
        first.trade_id,
        first.time_ms * 1000 + (123 if micros else 0),
        None,
        first.price,
        first.qty,
        int(first.buyer_maker),
    )
    assert len(stored) == len(trades["ETHUSDT"])

    code, _, err = invoke(capsys, "import", *map(str, files), "--db", str(db))  # again
    assert code == 0 and err.count("(0 new)") == 2

    for tf, tf_us in (("1s", 1_000_000), ("1m", 60_000_000), ("5m", 300_000_000)):
        out = tmp_path / f"bars-{tf}.csv"
        code, _, err = export_pair(
            capsys,
            "--what",
            "bars",
            "-o",
            str(out),
            "--timeframe",
            tf,
            "--stream",
            kind,
            "--db",
            str(db),
        )
        assert code == 0, err
        got = list(csv.DictReader(out.open()))
        for symbol, rows in trades.items():
            ref = reference_bars(
                [
                    (t.time_ms * 1000 + (123 if micros else 0), t.trade_id, t.price, t.qty)
                    for t in rows
                ],
                tf_us,
            )
            mine = [r for r in got if r["symbol"] == symbol]
            assert len(mine) == len(ref)
            for r, (_, o, h, lo, c, v, n) in zip(mine, ref, strict=True):
                assert (
                    float(r["open"]),
                    float(r["high"]),
                    float(r["low"]),
                    float(r["close"]),
                    int(r["trades"]),
                ) == (o, h, lo, c, n)
                assert float(r["volume"]) == pytest.approx(v, rel=1e-12)
        assert [r["ts"] for r in got] == sorted(r["ts"] for r in got)
        assert got[0]["ts"].startswith("2025-01-01T00:00:00Z")


def test_bad_row_names_file_and_line_and_imports_nothing_from_it(tmp_path, isolated_home):
    trades = tape(60)
    good = write_dump(
        tmp_path,
        "ETHUSDT-trades-2025-01",
        dump_lines(trades["ETHUSDT"], layout="spot-trades", micros=True, header=False),
        zipped=False,
    )
    lines = dump_lines(trades["BTCUSDT"], layout="spot-trades", micros=True, header=False)
    lines[56] = lines[56].replace(",", ",abc", 1)  # line 57: price "abc..."
    bad = write_dump(tmp_path, "BTCUSDT-trades-2025-01", lines, zipped=True)
    db = tmp_path / "t.db"
    result = subprocess.run(
        pairs_tui_cmd("import", str(bad), str(good), "--db", str(db)),
        env=cli_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{bad}: line 57: the price is not a positive number" in result.stderr
    assert "Traceback" not in result.stderr
    assert db_rows(db, "BTCUSDT") == []  # nothing from the bad file
    assert len(db_rows(db, "ETHUSDT")) == len(trades["ETHUSDT"])  # the good one went in


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ls: ls.__setitem__(9, ls[9] + ",extra"), "line 10: expected 6 or 7 columns"),
        (lambda ls: ls.__setitem__(3, "x" + ls[3]), "line 4: the trade id is not an integer"),
        (
            lambda ls: ls.__setitem__(4, ",".join([*ls[4].split(",")[:-2], "maybe", "True"])),
            "line 5: is_buyer_maker is not true/false",
        ),
    ],
)
def test_bad_rows_are_pinpointed(tmp_path, capsys, mutate, message):
    lines = dump_lines(tape(30)["BTCUSDT"], layout="spot-trades", micros=False, header=False)
    mutate(lines)
    path = write_dump(tmp_path, "BTCUSDT-trades-2024-12", lines, zipped=False)
    code, _, err = invoke(capsys, "import", str(path), "--db", str(tmp_path / "t.db"))
    assert code == 1 and message in err, err


def test_symbol_from_flag_and_bad_file_names(tmp_path, capsys):
    lines = dump_lines(tape(30)["BTCUSDT"], layout="spot-trades", micros=False, header=False)
    path = write_dump(tmp_path, "mydata", lines, zipped=False)
    code, _, err = invoke(capsys, "import", str(path), "--db", str(tmp_path / "t.db"))
    assert code == 2 and "cannot tell the symbol from the file name; pass --symbol" in err
    code, _, err = invoke(
        capsys, "import", str(path), "--symbol", "solusdt", "--db", str(tmp_path / "t.db")
    )
    assert code == 0, err
    assert len(db_rows(tmp_path / "t.db", "SOLUSDT")) == len(lines)
    code, _, err = invoke(capsys, "import", str(tmp_path / "nope.csv"), "--symbol", "x1")
    assert code == 2 and "no such file" in err


@pytest.fixture
def recorded(tmp_path, capsys) -> Path:
    trades = tape(900, seed=3)
    db = tmp_path / "pair.db"
    files = [
        write_dump(
            tmp_path,
            f"{s}-trades-2025-01",
            dump_lines(r, layout="spot-trades", micros=False, header=False),
            zipped=False,
        )
        for s, r in trades.items()
    ]
    assert invoke(capsys, "import", *map(str, files), "--db", str(db))[0] == 0
    return db


def test_analytics_and_summary_agree_and_carry_a_sidecar(recorded, tmp_path, capsys):
    common = ["--timeframe", "1s", "--window", "20", "--lookback", "300", "--db", str(recorded)]
    out = tmp_path / "analytics.csv"
    code, _, err = export_pair(capsys, "--what", "analytics", "-o", str(out), *common)
    assert code == 0, err
    assert f"wrote {out}" in err and f"wrote {out}.meta.json" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 300 and list(rows[0]) == [
        "ts",
        "close_a",
        "close_b",
        "beta",
        "alpha",
        "spread",
        "zscore",
        "corr",
    ]
    assert rows[0]["zscore"] == "" and rows[19]["zscore"] != "" and rows[19]["corr"] == ""
    code, summary_text, err = export_pair(capsys, "--what", "summary", "-o", "-", *common)
    assert code == 0, err
    summary = strict_json(summary_text)
    for key in (
        "beta",
        "alpha",
        "r2",
        "adf_stat",
        "adf_pvalue",
        "adf_lags",
        "adf_crit",
        "eg_stat",
        "eg_pvalue",
        "half_life",
        "zscore",
        "corr",
        "n_bars",
    ):
        assert key in summary
    assert summary["n_bars"] == 300 and isinstance(summary["adf_lags"], int)
    assert float(rows[-1]["zscore"]) == summary["zscore"]
    assert float(rows[-1]["beta"]) == summary["beta"]
    assert summary["verdict"] in ("cointegrated at 5 %", "not cointegrated")
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["pair"] == ["BTCUSDT", "ETHUSDT"] and meta["window"] == 20
    assert set(meta["versions"]) == {"pairs-tui", "polars", "numpy", "statsmodels"}
    assert "ddof=1" in meta["conventions"] and meta["start"] == rows[0]["ts"]


def test_from_to_and_missing_values_are_null(recorded, capsys):
    code, text, err = export_pair(
        capsys,
        "--what",
        "summary",
        "-o",
        "-",
        "--db",
        str(recorded),
        "--timeframe",
        "1s",
        "--window",
        "20",
        "--lookback",
        "100",
        "--from",
        "2025-01-01T00:01:00Z",
        "--to",
        "2025-01-01T00:01:10",
    )
    assert code == 0, err
    summary = strict_json(text)
    assert summary["n_bars"] == 10 and summary["start"] == "2025-01-01T00:01:00Z"
    assert summary["zscore"] is None and summary["adf_pvalue"] is None
    assert summary["reason"] == "collecting: 10 / 21 bars"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["solusdt", "ethusdt"], 1, "no trades of SOLUSDT"),
        (["btcusdt", "ethusdt", "--from", "2030-01-01"], 1, "no trades of BTCUSDT"),
        (["btcusdt", "ethusdt", "--from", "yesterday"], 2, "invalid --from 'yesterday'"),
        (["btcusdt", "btcusdt"], 2, "given twice"),
        (["btcusdt", "ethusdt", "--window", "1"], 2, "1 is not in the range 2<=x"),
        (
            ["btcusdt", "ethusdt", "--window", "30", "--lookback", "31"],
            2,
            "at least view.window + 2",
        ),
        (["btcusdt", "ethusdt", "--timeframe", "2m"], 2, "Invalid value for '--timeframe'"),
    ],
)
def test_export_errors(recorded, capsys, args, code, message):
    result = invoke(capsys, "export", *args, "--what", "bars", "-o", "-", "--db", str(recorded))
    assert result[0] == code and message in result[2], result[2]
    assert len(result[2].strip().splitlines()) == 1


def test_export_path_problems(recorded, tmp_path, capsys):
    code, _, err = export_pair(
        capsys,
        "--what",
        "bars",
        "-o",
        str(tmp_path / "missing" / "b.csv"),
        "--db",
        str(recorded),
    )
    assert code == 2 and "create it first" in err
    code, _, err = export_pair(
        capsys,
        "--what",
        "bars",
        "-o",
        "-",
        "--db",
        str(tmp_path / "nothing.db"),
    )
    assert code == 2 and "no tick store at" in err
    assert not (tmp_path / "nothing.db").exists()
    assert list(tmp_path.glob(".*.tmp")) == []


def test_stdout_export_is_plain_csv(recorded, isolated_home):
    result = subprocess.run(
        pairs_tui_cmd(
            "export",
            "btcusdt",
            "ethusdt",
            "--what",
            "bars",
            "-o",
            "-",
            "--db",
            str(recorded),
            "--timeframe",
            "5m",
        ),
        env=cli_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["ts", "symbol", "open", "high", "low", "close", "volume", "trades"]
    assert [r[1] for r in rows[1:5]] == ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        (
            "\ufeff1,100.5,1,100.5,1735689600000,True,True\n2,101,1,101,1735689600500,False,True\n",
            [1, 2],
        ),  # a byte-order mark is not a header
        (
            "\n\nid,price,qty,quote_qty,time,is_buyer_maker\n1,100.5,1,100.5,1735689600000,true\n",
            [1],
        ),  # blank lines before a header
        ("x1,100.5,1,100.5,1735689600000,True,True\n", "line 1: the trade id is not an integer"),
        ("1,inf,1,1,1735689600000,True,True\n", "line 1: the price is not a positive number"),
        (
            "1,100,1e400,1,1735689600000,True,True\n",
            "line 1: the quantity is not a positive number",
        ),
        ("1,100,1,1,1735689600000,,True\n", "line 1: is_buyer_maker is not true/false"),
        ("1,100,1,1,1735689600,True,True\n", "line 1: the time is not in milliseconds"),
        ("1,100,1,1,1735689600000000000,True,True\n", "line 1: the time is not in milli"),
    ],
)
def test_import_edge_cases(tmp_path, capsys, text, outcome):
    path = tmp_path / "EDGEUSDT-trades-2025-01.csv"
    path.write_text(text, encoding="utf-8")
    db = tmp_path / "t.db"
    code, _, err = invoke(capsys, "import", str(path), "--db", str(db))
    if isinstance(outcome, list):
        assert code == 0, err
        assert [r[1] for r in db_rows(db, "EDGEUSDT")] == outcome
    else:
        assert code == 1 and outcome in err, err
        assert db_rows(db, "EDGEUSDT") == []


def test_from_to_are_whole_bars_and_must_be_in_order(recorded, tmp_path, capsys):
    out = tmp_path / "bars.csv"
    code, _, err = export_pair(
        capsys,
        "--what",
        "bars",
        "-o",
        str(out),
        "--db",
        str(recorded),
        "--timeframe",
        "1m",
        "--from",
        "2025-01-01T00:02:30.5",
        "--to",
        "2025-01-01T00:07:10",
    )
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    # 00:02:30.5 rounds up to 00:03, 00:07:10 down to 00:07: bars 00:03 .. 00:06, both symbols
    assert sorted({r["ts"] for r in rows}) == [f"2025-01-01T00:0{m}:00Z" for m in range(3, 7)]
    full = export_pair(
        capsys,
        "--what",
        "bars",
        "-o",
        "-",
        "--db",
        str(recorded),
        "--timeframe",
        "1m",
    )[1]
    assert all(",".join(r.values()) in full for r in rows)  # whole bars, same as unfiltered
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert (meta["from"], meta["to"]) == ("2025-01-01T00:03:00Z", "2025-01-01T00:07:00Z")
    assert meta["rows"] == len(rows) and meta["start"] == rows[0]["ts"]
    code, _, err = export_pair(
        capsys,
        "--what",
        "bars",
        "-o",
        "-",
        "--db",
        str(recorded),
        "--from",
        "2025-01-02",
        "--to",
        "2025-01-01",
    )
    assert code == 2 and "is not before --to" in err
