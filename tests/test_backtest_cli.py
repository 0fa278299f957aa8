"""`pairs-tui backtest` on a real store: its files hold what `backtest.py` computes on the
bars `pairs-tui export --what bars` gives for the same pair (an independent read of the
store), with the columns pinned, sidecars beside them, and bad input one line, exit 2."""

from __future__ import annotations

import asyncio
import csv
import json
import math

import numpy as np
import polars as pl
import pytest
from conftest import run_in_process as run
from conftest import store_tape

from pairs_tui.backtest import BacktestParams, PairBars, backtest
from pairs_tui.cli import main
from pairs_tui.model import iso

pytestmark = pytest.mark.server

VIEW = ("--timeframe", "1s", "--window", "10", "--lookback", "100")
RULE = ("--entry", "1.5", "--exit", "0", "--stop", "3", "--fee-bps", "2")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Ten minutes of the fixed demo tape of BTCUSDT and ETHUSDT."""
    db = tmp_path_factory.mktemp("backtest") / "ticks.db"
    asyncio.run(store_tape(db, 600, seed=3))
    return db


@pytest.fixture(scope="module")
def exported_bars(store, tmp_path_factory) -> PairBars:
    """The pair's joined bars, read through `pairs-tui export --what bars` (once)."""
    out = tmp_path_factory.mktemp("export") / "bars.csv"
    args = ["export", "btcusdt", "ethusdt", *VIEW, "--what", "bars", "-o", str(out)]
    with pytest.raises(SystemExit) as done:
        main([*args, "--db", str(store)])
    assert done.value.code == 0
    bars = pl.read_csv(out)
    a, b = (bars.filter(pl.col("symbol") == s) for s in ("BTCUSDT", "ETHUSDT"))
    joined = a.join(b, on="ts", suffix="_b").sort("ts")
    ts = joined["ts"].str.to_datetime().dt.epoch("us").to_numpy()
    return PairBars(
        ts.astype(np.int64),
        *(joined[c].to_numpy().astype(float) for c in ("open", "close", "open_b", "close_b")),
    )


@pytest.mark.parametrize("hedge", ["rolling", "static", "kalman"])
def test_the_files_hold_the_backtest_of_the_exported_bars(
    store, exported_bars, tmp_path, capsys, hedge
):
    out = tmp_path / hedge
    out.mkdir()
    args = ["backtest", "btcusdt", "ethusdt", *VIEW, *RULE, "--hedge", hedge]
    code, printed, err = run([*args, "-o", str(out), "--db", str(store)], capsys)
    assert code == 0, err
    bars = exported_bars
    expected = backtest(bars, BacktestParams(10, 100, 1.5, 0.0, 3.0, 2.0, hedge), 1_000_000)
    assert expected.trades, "the tape should trade at |z| >= 1.5"

    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert list(trades[0]) == [
        "side", "signal_ts", "entry_ts", "exit_ts", "beta", "entry_a", "entry_b",
        "exit_a", "exit_b", "reason", "gross", "fees", "net",
    ]  # fmt: skip
    assert len(trades) == len(expected.trades)
    for row, trade in zip(trades, expected.trades, strict=True):
        assert int(row["side"]) == trade.side and row["reason"] == trade.reason
        assert row["entry_ts"] == iso(trade.entry_ts) and row["exit_ts"] == iso(trade.exit_ts)
        for name in ("beta", "entry_a", "exit_b", "gross", "fees", "net"):
            assert float(row[name]) == pytest.approx(getattr(trade, name), rel=1e-12), name

    equity = pl.read_csv(out / "equity.csv")
    assert equity.columns == ["ts", "position", "equity", "z", "beta"]
    assert equity.height == len(bars)
    assert np.allclose(equity["equity"].to_numpy(), expected.curve.equity, rtol=1e-12)
    assert equity["position"][-1] == 0  # closed at the end

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == [
        "trades", "win_rate", "total_pnl", "max_drawdown", "sharpe", "exposure", "look_ahead",
    ]  # fmt: skip
    assert summary["trades"] == len(trades)
    assert math.isclose(summary["total_pnl"], sum(float(r["net"]) for r in trades), rel_tol=1e-9)
    assert summary["look_ahead"] is (hedge == "static")
    assert ("look-ahead" in printed) is (hedge == "static")
    sidecar = json.loads((out / "trades.csv.meta.json").read_text())
    assert sidecar["backtest"]["hedge"] == hedge and sidecar["pair"] == ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--entry", "0.5", "--exit", "1"), "entry must be above exit: entry 0.5, exit 1"),
        (("--fee-bps", "-1"), "fee_bps must not be negative"),
        (("--entry", "2,x"), "--entry: '2,x' is not a number or a list like 1.5,2,2.5"),
        (("--hedge", "ridge"), "Invalid value for '--hedge'"),
        (("--lookback", "5000"), "needs at least 5001"),
        (
            ("--from", "2025-01-01T00:05:00Z", "--to", "2025-01-01T00:01:00Z"),
            "--from 2025-01-01T00:05:00Z is not before --to",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, tmp_path, capsys, extra, says):
    out = tmp_path / "out"
    out.mkdir()
    args = ["backtest", "btcusdt", "ethusdt", *VIEW, *extra, "-o", str(out)]
    code, _, err = run([*args, "--db", str(store)], capsys)
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not list(out.iterdir())  # nothing written


def test_a_sweep_runs_every_combination_best_sharpe_first(store, exported_bars, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    args = ["backtest", "btcusdt", "ethusdt", *VIEW, "--entry", "1,1.5,2", "--exit", "0,1.5"]
    code, printed, err = run([*args, "--stop", "0,3", "-o", str(out), "--db", str(store)], capsys)
    assert code == 0, err
    assert "skipped 4 combination(s): entry must be above exit: entry 1, exit 1.5" in err
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 8 and "8 combinations" in printed  # entry above exit: 8 of 12
    sharpe = [float(r["sharpe"]) if r["sharpe"] else -math.inf for r in rows]
    assert sharpe == sorted(sharpe, reverse=True)
    for row in rows:  # each row is that combination's own backtest
        e, x, s = (float(row[k]) for k in ("entry", "exit", "stop"))
        alone = backtest(exported_bars, BacktestParams(10, 100, e, x, s), 1_000_000).summary
        assert int(row["trades"]) == alone.trades
        assert float(row["total_pnl"]) == pytest.approx(alone.total_pnl, rel=1e-12, abs=1e-15)
    assert json.loads((out / "sweep.csv.meta.json").read_text())["backtest"]["hedge"] == "rolling"


def test_the_rule_comes_from_backtest_in_config_toml_and_flags_win(store, tmp_path, capsys):
    """[backtest] is the rule of the command and of the cockpit (`b`, the stats' hedge)."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[backtest]\nentry = 1.5\nexit = 0.0\nstop = 3.0\nfee_bps = 2.0\nhedge = "static"\n'
    )
    outputs = []
    for name, extra in (("config", ()), ("flags", RULE), ("both", ("--hedge", "kalman"))):
        out = tmp_path / name
        out.mkdir()
        args = ["backtest", "btcusdt", "ethusdt", *VIEW, *extra, "-o", str(out)]
        if name != "flags":
            args += ["--config", str(config)]
        code, _, err = run([*args, "--db", str(store)], capsys)
        assert code == 0, err
        outputs.append(json.loads((out / "summary.json.meta.json").read_text())["backtest"])
    from_config, from_flags, both = outputs
    assert from_config == {**from_flags, "hedge": "static"}  # the same rule, either way
    assert both == {**from_config, "hedge": "kalman"}  # a flag over the file

    from pairs_tui.cli import _session_plan, _view
    from pairs_tui.config import load_config

    settings = load_config(config)
    view = _view(settings, "btcusdt", "ethusdt")
    plan = _session_plan(
        settings, view, store, demo=False, seed=None, no_feed=True, rules=(), watchlist=()
    )
    assert plan.backtest == BacktestParams(view.window, view.lookback, 1.5, 0.0, 3.0, 2.0, "static")
    # and a file whose rule means nothing is refused before anything runs
    config.write_text("[backtest]\nentry = 0.5\nexit = 1.0\n")
    code, _, err = run(["backtest", "btcusdt", "ethusdt", "-o", str(tmp_path), "--config",
                        str(config), "--db", str(store)], capsys)  # fmt: skip
    assert code == 2 and "[backtest]: entry must be above exit" in err
