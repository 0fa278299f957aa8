"""The watchlist live: the `w` scanner screen driven by Pilot (rows equal to `pairs-tui
scan` on the same store at the same moment, sorted by keys and by a click on a header,
Enter opens a row as the main view, Esc goes back), the palette's `watchlist add/remove`,
the feed recording every watchlist symbol on one stream with its history, and alerts set
on the whole watchlist firing once per pair, named (palette, config and `watch`)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sqlite3
import time
from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
from conftest import store_tape, wait_until

from pairs_tui import watchlist
from pairs_tui.alerts import WATCHLIST
from pairs_tui.cli import main
from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.model import StreamKind, SymbolError
from pairs_tui.scan import scan
from pairs_tui.session import Session, SessionPlan, UnknownSymbol
from pairs_tui.store import TickStore
from pairs_tui.ui import app as ui
from pairs_tui.ui.app import PairsApp
from pairs_tui.ui.commands import interpret
from pairs_tui.ui.pair_table import PairTable
from pairs_tui.ui.scanner import ScannerScreen, sparkline
from pairs_tui.watchlist import WatchlistEngine

pytestmark = pytest.mark.server

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
PAIRS = set(combinations(SYMBOLS, 2))


@pytest.fixture(scope="module")
def tape(tmp_path_factory):
    """Ten minutes of the fixed demo tape of four symbols."""
    db = tmp_path_factory.mktemp("watchlist") / "ticks.db"

    asyncio.run(store_tape(db, 600, seed=2, symbols=SYMBOLS))
    return db


@pytest.fixture
def db(tape, tmp_path):
    """A copy of the tape each test may write to (rules, firings)."""
    return shutil.copy(tape, tmp_path / "ticks.db")


def replay(db, watchlist=SYMBOLS, **plan) -> PairsApp:
    """The cockpit without a feed, on the tape, with a watchlist."""
    view = PairView("BTCUSDT", "ETHUSDT", "1s", 5, 120)
    return ui.make_app(
        SessionPlan(view, db, None, watchlist=watchlist, **plan), refresh_every=0.25, bell=False
    )


def cells(table: PairTable, column: int) -> list[str]:
    return [row.cells[column] for row in table.rows]


async def shows(table: PairTable, pairs: list[str]) -> None:
    """The table lists these pairs in this order (it is filled a few rows at a time)."""
    await wait_until(lambda: cells(table, 0) == pairs, 5)


async def test_w_ranks_every_pair_as_scan_does_sorts_marks_and_opens_one(db):
    app = replay(db)
    async with app.run_test(size=(180, 40)) as pilot:
        await wait_until(lambda: app.snapshot is not None, 15)
        await pilot.press("w")
        screen = app.screen
        assert isinstance(screen, ScannerScreen) and app.session.scanning
        await wait_until(lambda: screen.ranking is not None, 15)
        ranking = screen.ranking
        table = screen.query_one(PairTable)
        await wait_until(lambda: len(table.rows) == 6, 5)

        # the rows are `pairs-tui scan` of the same store cut at the same moment
        async with await TickStore.open(db, readonly=True) as store:
            rows = await scan(
                store, SYMBOLS, ranking.view, StreamKind.TRADE, now_us=ranking.asof_us
            )
        assert [r.pair for r in ranking.rows] == [r.pair for r in rows]
        for live, batch in zip(ranking.rows, rows, strict=True):
            for name, value in batch.values().items():
                shown = live.values()[name]
                if isinstance(value, float):
                    assert math.isclose(shown, value, rel_tol=1e-9, abs_tol=1e-12), name
                else:
                    assert shown == value, name
        ranked = ["/".join(r.pair) for r in rows]
        await shows(table, ranked)  # most cointegrated first

        await pilot.press("r")  # reverse: least cointegrated first
        assert screen.order == ("eg_pvalue", True)
        await shows(table, ranked[::-1])
        await pilot.press("S")  # the column before: ADF p, ascending
        assert screen.order == ("adf_pvalue", False)
        await wait_until(lambda: cells(table, 6) == sorted(cells(table, 6), key=float), 5)
        await pilot.click(PairTable, offset=(2, 0))  # the `pair` header
        assert screen.order == ("pair", False)
        await shows(table, sorted(ranked))
        await pilot.click(PairTable, offset=(2, 0))  # again: the other way
        assert screen.order == ("pair", True)
        await shows(table, sorted(ranked, reverse=True))

        await pilot.press("down")  # the cursor stayed on its pair through the sorts
        chosen = tuple(cells(table, 0)[table.cursor_row].split("/"))
        await pilot.press("enter")
        await wait_until(lambda: not isinstance(app.screen, ScannerScreen), 5)
        assert app.session.view == replace(ranking.view, symbol_a=chosen[0], symbol_b=chosen[1])
        assert not app.session.scanning
        await wait_until(lambda: app.snapshot.view.symbols == chosen, 10)

        await pilot.press("w")  # a click puts the cursor on a row, a second opens it
        table = app.screen.query_one(PairTable)
        await wait_until(lambda: len(table.rows) == 6, 5)
        await pilot.click(PairTable, offset=(2, 4))  # the header, then the 4th row
        assert table.cursor_row == 3 and isinstance(app.screen, ScannerScreen)
        clicked = tuple(cells(table, 0)[3].split("/"))
        await pilot.click(PairTable, offset=(2, 4))
        await wait_until(lambda: app.session.view.symbols == clicked, 5)

        await pilot.press("w")  # a signal row is marked, and counted in the head line
        screen = app.screen
        app.session.scanning = False  # no new ranking over the one made up below
        await wait_until(lambda: screen.ranking is not None and not app._ranking, 10)
        row, other = ranking.rows[:2]
        hot = replace(row, summary=replace(row.summary, zscore=-2.5, eg_pvalue=0.01))
        cold = replace(other, summary=replace(other.summary, zscore=1.9, eg_pvalue=0.01))
        assert hot.summary.signal and not cold.summary.signal
        screen.ranking = replace(ranking, by_timeframe={ranking.view.timeframe: (hot, cold)})
        table = screen.query_one(PairTable)
        await wait_until(lambda: [r.marked for r in table.rows] == [True, False], 5)
        marked, plain = table.render_line(1), table.render_line(2)  # under the header
        assert all(seg.style.bold and seg.style.reverse for seg in marked if seg.text.strip())
        assert not any(seg.style.reverse for seg in plain)
        assert sparkline(row.recent_z) in cells(table, 2)
        head = str(screen.query_one("#scanner-head").render())
        assert "1 with |z| ≥ 2 on a cointegrated pair" in head
        await pilot.press("escape")
        assert not isinstance(app.screen, ScannerScreen) and not app.session.scanning
        await pilot.press("q")
    assert app.return_value == 0
    assert sparkline([-3.0, -1.0, 0.0, 1.0, 3.0, 9.0, float("nan")]) == "▁▃▅▆██ "


async def test_the_palette_edits_the_watchlist_and_sets_alerts_on_every_pair(db):
    app = replay(db, watchlist=SYMBOLS[:2])
    async with app.run_test(size=(180, 40), notifications=True) as pilot:
        await wait_until(lambda: app.snapshot is not None, 15)
        await pilot.press("w")  # one pair: it says so; two more symbols: six
        await wait_until(lambda: app.screen.ranking is not None, 15)
        await wait_until(lambda: len(app.screen.query_one(PairTable).rows) == 1, 5)
        await app.run_action("set_watchlist(('BTCUSDT', 'ETHUSDT', 'SOLUSDT', 'BNBUSDT'))")
        await wait_until(lambda: len(app.screen.query_one(PairTable).rows) == 6, 15)
        await pilot.press("escape")

        await app.run_action("add_alert('abs(z) > 0', True)")
        rule = app.session.rules()[-1]
        assert rule.pair == WATCHLIST and rule.target == "watchlist"
        crowd = lambda: [n for n in app._notifications if n.title.startswith("alerts on")]  # noqa: E731
        await wait_until(crowd, 15)  # one toast counts them all (it lasts 8 s: look now)
        [toast] = crowd()
        assert toast.title == "alerts on 6 pairs"
        assert toast.message.startswith("ETHUSDT/SOLUSDT") and "and 3 more" in toast.message
        await wait_until(lambda: {e.symbols for e in app._events} == PAIRS, 10)
        await pilot.press("q")
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT symbol_a, symbol_b FROM alert_rules").fetchall()
        fired = conn.execute("SELECT symbol_a, symbol_b FROM alert_events").fetchall()
    assert stored == [WATCHLIST]
    assert sorted(fired) == sorted(PAIRS)  # each pair once: edge-triggered per pair

    watchlist = ("BTCUSDT", "ETHUSDT")
    [hit] = interpret("watchlist add solusdt bnbusdt", [], (), watchlist)
    assert hit.action == f"set_watchlist({(*watchlist, 'SOLUSDT', 'BNBUSDT')!r})"
    [hit] = interpret("watchlist remove btcusdt", [], (), watchlist)
    assert hit.action == "set_watchlist(('ETHUSDT',))"
    for typed, says in [
        ("watchlist add ethusdt", "ETHUSDT already on the watchlist"),
        ("watchlist remove xrpusdt", "XRPUSDT not on the watchlist"),
        ("watchlist add sol-usdt", "invalid symbol sol-usdt"),
        ("watchlist add", "type the symbols"),
    ]:
        [hit] = interpret(typed, [], (), watchlist)
        assert hit.action is None and says in hit.help, typed
    [hit] = interpret("alert abs(z) > 2 on watchlist", [], (), watchlist)
    assert hit.action == "add_alert('abs(z) > 2', True)"
    [hit] = interpret("watchlist", [], (), watchlist)
    assert hit.action == "scanner" and "BTCUSDT, ETHUSDT" in hit.title


async def test_the_feed_records_every_watchlist_symbol_with_its_history(db_path):
    view = PairView("BTCUSDT", "ETHUSDT", "1m", 5, 30)
    plan = SessionPlan(
        view,
        db_path,
        FeedOptions(),
        demo=True,
        seed=3,
        flush_interval=0.1,
        rest_url="http://127.0.0.1:9",  # the demo server answers REST itself
        watchlist=("SOLUSDT", "BNBUSDT", "BTCUSDT"),
    )
    session = Session(plan)
    await session.start()
    try:

        def received() -> dict[str, int]:
            return {s.symbol: s.received for s in session.feed_stats().symbols}

        await wait_until(lambda: len(received()) == 4 and all(received().values()), 15)
        assert list(received()) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]  # one stream
        await wait_until(session.recording.history_settled, 20)
        for symbol in ("SOLUSDT", "BNBUSDT"):
            bars = await session.store.history(symbol, StreamKind.TRADE, "1m", 0)
            assert len(bars) >= view.keep, symbol

        await session.set_watchlist(("SOLUSDT", "XRPUSDT"))
        await wait_until(lambda: received().get("XRPUSDT", 0) > 0, 15)
        assert "BNBUSDT" not in received()
        with pytest.raises(UnknownSymbol, match="FOOUSDT"):
            await session.set_watchlist(("SOLUSDT", "FOOUSDT"))
        with pytest.raises(SymbolError, match="given twice"):
            await session.set_watchlist(("SOLUSDT", "solusdt"))
        assert session.watchlist == ("SOLUSDT", "XRPUSDT")
    finally:
        await session.stop()


def test_watch_prints_each_watchlist_pair_once_from_flag_and_config(db, tmp_path, capsys):
    config = tmp_path / "rules.toml"
    config.write_text('[[alerts]]\nrule = "abs(z) > 0"\npair = "watchlist"\ntimeframe = "1s"\n')
    args = ["watch", "--watchlist", ",".join(SYMBOLS[1:]), "--no-feed", "--db", str(db)]
    args += ["--timeframe", "1s", "--window", "5", "--lookback", "120", "--duration", "2"]
    for extra in (["--alert", "abs(z) > 0"], ["--config", str(config)]):
        with pytest.raises(SystemExit) as done:
            main([*args, *extra])
        out, err = capsys.readouterr()
        assert done.value.code == 0, err
        assert "watching the watchlist (3 symbols, 3 pairs): abs(z) > 0 (1s)" in err
        fired = [json.loads(line) for line in out.splitlines()]
        assert sorted(e["pair"] for e in fired) == sorted(
            f"{a}/{b}" for a, b in combinations(SYMBOLS[1:], 2)
        )
        assert all(e["rule"] == "abs(z) > 0" and e["timeframe"] == "1s" for e in fired)


async def test_a_large_ranking_runs_in_a_worker_process_and_gives_the_same_rows(db, monkeypatch):
    view = PairView("BTCUSDT", "ETHUSDT", "1s", 5, 120)
    now = time.time_ns() // 1000
    async with await TickStore.open(db, readonly=True) as store:
        threaded = await WatchlistEngine(store).refresh(SYMBOLS, view, ("1m",), now_us=now)
        monkeypatch.setattr(watchlist, "PROCESS_PAIRS", 0)
        engine = WatchlistEngine(store)
        try:
            pooled = await engine.refresh(SYMBOLS, view, ("1m",), now_us=now)
            assert engine._pool is not None  # it did go to a process
        finally:
            engine.close()
    assert set(pooled.by_timeframe) == {"1s", "1m"} == set(threaded.by_timeframe)
    for tf, rows in threaded.by_timeframe.items():
        for one, other in zip(rows, pooled.by_timeframe[tf], strict=True):
            assert one.values() == other.values()
            assert np.array_equal(one.recent_z, other.recent_z, equal_nan=True)
