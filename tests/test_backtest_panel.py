"""The backtest in the cockpit: key `b` shows the numbers `pairs-tui backtest` writes for
the view on screen (the panel prints the command, and running it gives the same files),
the palette's `backtest ...` and `hedge ...` change the rule, `[backtest]` sets it, and
the stats panel shows the chosen hedge at the newest bar."""

from __future__ import annotations

import asyncio
import csv
import json
import shlex

import pytest
from conftest import run_in_process, store_tape, wait_until
from textual.command import CommandList
from textual.geometry import Region
from textual.widgets import Input

from pairs_tui.backtest import BacktestParams, backtest, hedge_now
from pairs_tui.backtest_files import number_text, summary_rows
from pairs_tui.engine import PairView
from pairs_tui.model import iso
from pairs_tui.session import SessionPlan
from pairs_tui.ui import app as ui
from pairs_tui.ui.backtest import CHARTS, BacktestScreen, trade_rows
from pairs_tui.ui.commands import interpret
from pairs_tui.ui.pair_table import PairTable

RULE = BacktestParams(10, 100, entry=1.5, exit=0.0, stop=3.0, fee_bps=2.0, hedge="kalman")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Ten minutes of the fixed demo tape of BTCUSDT and ETHUSDT."""
    db = tmp_path_factory.mktemp("panel") / "ticks.db"
    asyncio.run(store_tape(db, 600, seed=3))
    return db


def text_of(app, selector: str) -> str:
    """The widget's text on screen, padding and border included (so nothing is cropped)."""
    widget = app.screen.query_one(selector)
    lines = widget.render_lines(Region(0, 0, *widget.outer_size))
    return "\n".join(strip.text for strip in lines)


async def palette(pilot, query: str) -> str:
    """Open the palette with `query` in it (typing 40 keys costs Pilot seconds), return the
    text of its hits."""
    await pilot.press("ctrl+p")
    await pilot.pause(0.1)
    pilot.app.screen.query_one(Input).value = query
    await pilot.pause(0.4)  # the search runs in the background
    return str(pilot.app.screen.query_one(CommandList).render_lines(Region(0, 0, 120, 10)))


async def ran(app, pilot) -> BacktestScreen:
    """The panel on screen with a run drawn (charts included)."""
    screen = app.screen
    assert isinstance(screen, BacktestScreen)
    await wait_until(lambda: screen.run is not None or screen.problem is not None, 15)
    await wait_until(lambda: "equity" in text_of(app, "#backtest-equity"), 10)
    await pilot.pause(0.1)
    return screen


@pytest.mark.server
async def test_b_shows_what_pairs_tui_backtest_writes_and_the_palette_changes_it(
    store, tmp_path, capsys
):
    plan = SessionPlan(PairView("BTCUSDT", "ETHUSDT", "1s", 10, 100), store, None, backtest=RULE)
    app = ui.make_app(plan, refresh_every=0.25, bell=False)
    async with app.run_test(size=(140, 44)) as pilot:
        await wait_until(lambda: app.snapshot is not None and app.snapshot.hedge is not None, 15)
        # the stats panel: the [backtest] hedge at the newest bar, beside the fit over L
        snapshot = app.snapshot
        series = snapshot.series
        expected = hedge_now(series.close_a, series.close_b, RULE)
        assert snapshot.hedge == expected and expected.beta is not None
        await wait_until(lambda: "kalman beta / z" in text_of(app, "StatsPanel"), 5)
        assert f"{expected.beta:.4g} / {expected.zscore:+.2f}" in text_of(app, "StatsPanel")

        await pilot.press("b")
        screen = await ran(app, pilot)
        run = screen.run
        assert run is not None and run.params == RULE
        assert run.span[1] is not None and run.span[1] % 1_000_000 == 0  # whole bars
        assert "kalman hedge" in text_of(app, "#backtest-head")

        # the panel's command line writes the files: they hold the panel's numbers
        summary = text_of(app, "#backtest-summary")
        line = run.command(store)
        shown_line = "".join(summary.replace("│", " ").split())
        assert "".join(line.split()) in shown_line  # shown, folded to fit
        command = shlex.split(line)
        assert command[-2:] == ["-o", "DIR"] and "--from" not in command  # every stored bar
        assert command[command.index("--to") + 1] == iso(run.span[1])
        out = tmp_path / "files"
        out.mkdir()
        args = [*command[1:-1], str(out)]
        code, _, err = await asyncio.to_thread(run_in_process, args, capsys)
        assert code == 0, err
        written = json.loads((out / "summary.json").read_text())
        assert written["trades"] == len(run.result.trades) > 3
        for name, shown in summary_rows(run.result):
            assert number_text(written[name]) == shown
            assert shown in summary  # on screen, as the command prints it
        with (out / "trades.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        table = app.screen.query_one(PairTable)
        assert [r.cells for r in table.rows] == [r.cells for r in trade_rows(run)]
        for row, cells in zip(rows, (r.cells for r in table.rows), strict=True):
            assert cells[1] == {"1": "long", "-1": "short"}[row["side"]]
            assert cells[5] == row["reason"]
            assert cells[6:] == tuple(number_text(float(row[k])) for k in ("gross", "fees", "net"))
        # entries and exits are marked on the equity curve, which spans the z chart's bars
        equity = text_of(app, "#backtest-equity")
        assert "▲" in equity and "▼" in equity and "●" in equity
        labels = [text_of(app, f"#{name}").splitlines()[-1].split() for name in CHARTS]
        assert labels[0][0] == labels[1][0] and labels[0][-1] == labels[1][-2]  # then "UTC"

        # the palette sets the rule and runs it again: static is said to look ahead
        hits = await palette(pilot, "backtest entry 2.5 exit 0.5 stop 0 hedge static")
        assert "entry 2.5 exit 0.5 stop 0 fee 2 hedge static" in hits
        await pilot.press("enter")
        await wait_until(lambda: screen.run is not run and screen.run is not None, 15)
        await pilot.pause(0.1)
        static = screen.run
        assert static is not None and static.params.hedge == "static"
        assert static.params.entry == 2.5 and static.params.fee_bps == 2.0  # the rest kept
        again = backtest(static.bars, static.params, 1_000_000)
        assert [t.net for t in static.result.trades] == [t.net for t in again.trades]
        assert "LOOK-AHEAD" in text_of(app, "#backtest-head")

        # back on the main screen, `hedge rolling` drops the extra row: it is the fit over L
        await pilot.press("escape")
        assert not isinstance(app.screen, BacktestScreen)
        await palette(pilot, "hedge rolling")
        await pilot.press("enter")
        await wait_until(lambda: app.snapshot.hedge.hedge == "rolling", 10)
        await wait_until(lambda: "beta / z" not in text_of(app, "StatsPanel"), 10)
        assert app.session.trading.entry == 2.5

        # a longer lookback than the store holds: the panel says how many bars it needs
        await app.run_action("set_lookback(700)")
        await pilot.press("b")
        await wait_until(lambda: app.screen.problem is not None, 15)
        head = text_of(app, "#backtest-head")
        assert "too few bars" in head and "at least 701" in head


@pytest.mark.unit
def test_the_palette_reads_a_rule_and_explains_a_bad_one():
    themes: list[str] = []
    [hit] = interpret("backtest entry 2 exit 0.5 stop 4 fee 5 hedge kalman", themes, trading=RULE)
    assert hit.title == "backtest: entry 2 exit 0.5 stop 4 fee 5 hedge kalman delta 0.0001 ve 0.001"
    assert hit.action == (
        "run_backtest({'entry': 2.0, 'exit': 0.5, 'stop': 4.0, 'fee_bps': 5.0, 'hedge': 'kalman'})"
    )
    [hit] = interpret("backtest", themes, trading=RULE)
    assert hit.action == "run_backtest({})" and "entry 1.5 exit 0" in hit.title
    [hit] = interpret("hedge STATIC", themes, trading=RULE)
    assert hit.action == "set_trading({'hedge': 'static'})"
    for typed, says in [
        ("backtest entry 0.5 exit 1", "entry must be above exit: entry 0.5, exit 1"),
        ("backtest fee -1", "fee_bps must not be negative"),
        ("backtest entry two", "entry takes a number, not 'two'"),
        ("backtest entyr 2", "unknown word 'entyr'"),
        ("backtest entry", "type a word and its value"),
        ("hedge ridge", "hedge must be one of rolling, static, kalman, not 'ridge'"),
        ("hedge", "type hedge rolling or static or kalman (now kalman)"),
        ("backtest stop 1", "stop must be 0 (no stop) or above entry"),
    ]:
        [hit] = interpret(typed, themes, trading=RULE)
        assert hit.action is None and says in hit.help, (typed, hit.help)
    assert "did you mean entry?" in next(interpret("backtest entyr 2", themes, trading=RULE)).help
    assert list(interpret("backtest entry 2", themes)) == []  # no rule: left to the search
