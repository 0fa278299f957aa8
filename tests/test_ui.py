"""The cockpit driven by Textual's Pilot, on the real demo feed and a real store."""

from __future__ import annotations

import re
import sqlite3

from conftest import wait_until
from textual.geometry import Region

from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.session import Session, SessionPlan
from pairs_tui.ui.app import PairsApp
from pairs_tui.ui.widgets import ChartView, StatsPanel, StatusLine


def make_app(db_path, *, window=3, lookback=40, timeframe="1s", feed=True) -> PairsApp:
    plan = SessionPlan(
        PairView("BTCUSDT", "ETHUSDT", timeframe, window, lookback),
        db_path,
        FeedOptions() if feed else None,
        demo=True,
        seed=1,
        demo_rate=40.0,
        flush_interval=0.1,
    )
    return PairsApp(Session(plan), refresh_every=0.25)


def on_screen(widget) -> str:
    """The text the widget currently puts on the screen."""
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.size)))


def text(app: PairsApp, widget) -> str:
    return str(app.screen.query_one(widget).render())


def chart(app: PairsApp, name: str) -> str:
    return str(app.screen.query_one(f"#{name}", ChartView).render())


async def test_the_screen_fills_in_on_the_demo_feed(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: "Collecting data:" in chart(app, "zscore"), 10)  # no fake values
        await wait_until(
            lambda: app.snapshot is not None and app.snapshot.summary.zscore is not None, 20
        )
        await pilot.pause(0.5)
        status = text(app, StatusLine)
        assert "BTCUSDT/ETHUSDT  1s  W=3  L=40  connected" in status and "trades/s" in status
        assert "z-score (W=3)" in chart(app, "zscore")
        assert "rolling correlation" in chart(app, "corr")
        assert "Collecting" not in chart(app, "prices")
        stats = on_screen(app.screen.query_one(StatsPanel))
        assert re.search(r"bars / trades\s+\d+ / [\d,]+", stats)
        assert re.search(r"z-score\s+([+-]\d+\.\d\d|-)", stats)
        assert re.search(r"beta\s+-?\d", stats) and "EG stat / p" in stats
        await pilot.press("q")
    assert app.return_value == 0


async def test_keys_change_the_view_and_redraw(db_path):
    app = make_app(db_path, window=20, lookback=600)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: app.snapshot is not None, 10)
        for key, expected in [
            ("2", ("1m", 20, 600)),
            ("3", ("5m", 20, 600)),
            ("1", ("1s", 20, 600)),
            ("left_square_bracket", ("1s", 15, 600)),
            ("right_square_bracket", ("1s", 20, 600)),
            ("minus", ("1s", 20, 500)),
            ("plus", ("1s", 20, 600)),
        ]:
            await pilot.press(key)
            view = app.session.view
            assert (view.timeframe, view.window, view.lookback) == expected, key
            tf, w, lb = expected
            assert f"{tf}  W={w}  L={lb}" in text(app, StatusLine), key
            await wait_until(lambda v=view: app.snapshot.view == v, 10)  # redrawn from data
        await pilot.press("q")


async def test_a_view_that_cannot_be_is_refused_with_a_message(db_path):
    app = make_app(db_path, window=20, lookback=22)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("right_square_bracket")  # W=25 needs L >= 27
        await pilot.pause(0.2)
        assert app.session.view.window == 20
        assert any("lookback must be at least" in n.message for n in app._notifications)
        await pilot.press("q")


async def test_quit_leaves_a_consistent_store(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(lambda: app.session.ingest.stats().symbols[0].received > 50, 10)
        await pilot.press("q")
    stored = {s.symbol: s.stored for s in app.session.ingest.stats().symbols}
    received = {s.symbol: s.received for s in app.session.ingest.stats().symbols}
    assert stored == received  # everything received was committed on quit
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(
            conn.execute(
                "SELECT symbol, count(*) FROM trades JOIN series ON series.id = trades.series"
                " GROUP BY symbol"
            )
        )
    assert counts == stored


async def test_resizing_never_crashes(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(lambda: app.snapshot is not None and app.snapshot.summary.n_bars > 4, 15)
        for size in [(80, 24), (40, 12), (200, 60), (100, 30), (80, 24)]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)  # at least one redraw at this size
            assert "BTCUSDT/ETHUSDT" in text(app, StatusLine)
        await pilot.press("q")
    assert app.return_value == 0
