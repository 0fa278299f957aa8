"""The cockpit driven by Textual's Pilot, on the real demo feed and a real store."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import store_tape, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from textual.command import CommandList
from textual.content import Content
from textual.geometry import Region
from textual.widgets._footer import FooterKey

from pairs_tui.alerts import AlertRule, parse_rule
from pairs_tui.cli import main
from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.session import SessionPlan
from pairs_tui.ui import app as ui
from pairs_tui.ui.app import CHARTS, PairsApp
from pairs_tui.ui.commands import interpret, literal
from pairs_tui.ui.help import HelpScreen
from pairs_tui.ui.widgets import AlertPanel, ChartView, Readout, StatsPanel, StatusLine

pytestmark = pytest.mark.server


def make_app(db_path, *, window=3, lookback=40, timeframe="1s", feed=True, **options) -> PairsApp:
    plan = SessionPlan(
        PairView("BTCUSDT", "ETHUSDT", timeframe, window, lookback),
        db_path,
        FeedOptions() if feed else None,
        demo=True,
        seed=1,
        demo_rate=40.0,
        flush_interval=0.1,
    )
    return ui.make_app(plan, refresh_every=0.25, **options)


def exit_code(args: list[str]) -> int:
    """`pairs-tui ARGS` in this process (off the loop: it runs its own)."""
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code


async def replayed(db_path, **options) -> PairsApp:
    """The app without a feed on two minutes of the fixed demo tape: the same every run."""
    await store_tape(db_path, 120)
    return make_app(db_path, feed=False, window=5, lookback=60, **options)


def drawn(app: PairsApp, bars: int = 1) -> bool:
    return app.snapshot is not None and app.snapshot.summary.n_bars >= bars


def on_screen(widget) -> str:
    """The text the widget currently puts on the screen."""
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.size)))


def colours(widget) -> set:
    """The foreground colours the widget puts on the screen."""
    lines = widget.render_lines(Region(0, 0, *widget.size))
    return {seg.style.color for strip in lines for seg in strip if seg.style and seg.style.color}


def text(app: PairsApp, widget) -> str:
    return str(app.screen.query_one(widget).render())


def chart(app: PairsApp, name: str) -> str:
    return str(app.screen.query_one(f"#{name}", ChartView).render())


async def test_the_screen_fills_in_on_the_demo_feed(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: "Collecting data:" in chart(app, "zscore"), 10)  # no fake values
        assert re.search(r"Collecting data: \d / 4 bars", chart(app, "zscore"))  # W + 1
        await wait_until(lambda: "Collecting" not in chart(app, "corr"), 20)  # drawn
        await pilot.pause(0.5)
        status = text(app, StatusLine)
        assert "BTCUSDT/ETHUSDT  1s  W=3  L=40  demo connected" in status and "trades/s" in status
        assert re.search(r"latency \d+ ms", status)
        assert "z-score (W=3)" in chart(app, "zscore")
        assert "rolling correlation" in chart(app, "corr")
        assert "Collecting" not in chart(app, "prices")
        stats = on_screen(app.screen.query_one(StatsPanel))
        assert re.search(r"bars / trades\s+\d+ / [\d,]+", stats)
        assert re.search(r"z-score\s+([+-]\d+\.\d\d|-)", stats)
        assert re.search(r"beta\s+-?\d", stats) and "EG stat / p" in stats
        assert re.search(r"1s\s+1m\s+5m", stats)  # the few numbers at every timeframe
        assert re.search(r"z\s+[+-]\d\.\d\d", stats)
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
        await wait_until(lambda: app.session.recording.ingest.stats().symbols[0].received > 50, 10)
        await pilot.press("q")
    stored = {s.symbol: s.stored for s in app.session.recording.ingest.stats().symbols}
    received = {s.symbol: s.received for s in app.session.recording.ingest.stats().symbols}
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


async def test_pause_freezes_the_numbers_while_recording_goes_on(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app, 5), 15)
        await pilot.press("space")
        frozen = on_screen(app.screen.query_one(StatsPanel)), chart(app, "zscore")
        await wait_until(lambda: re.search(r"PAUSED \+[1-9][\d,]* trades", text(app, StatusLine)))
        first = int(re.search(r"PAUSED \+([\d,]+)", text(app, StatusLine))[1].replace(",", ""))
        await pilot.pause(1.5)  # a second bar closes, trades keep coming
        later = int(re.search(r"PAUSED \+([\d,]+)", text(app, StatusLine))[1].replace(",", ""))
        assert later > first
        assert (on_screen(app.screen.query_one(StatsPanel)), chart(app, "zscore")) == frozen
        await pilot.press("space")
        await wait_until(lambda: on_screen(app.screen.query_one(StatsPanel)) != frozen[0], 5)
        assert "PAUSED" not in text(app, StatusLine)
        await pilot.press("q")


async def test_the_cursor_reads_out_bars_and_esc_returns_to_live(db_path):
    app = await replayed(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app, 60), 10)
        readout = app.screen.query_one(Readout)
        assert not readout.display
        series = app.snapshot.series
        await pilot.press("left")
        assert app.paused and readout.display
        stamp = datetime.fromtimestamp(series.ts_us[-1] / 1e6, UTC).strftime("%H:%M:%S")
        assert stamp in text(app, Readout) and f"{series.close_a[-1]:,.8g}" in text(app, Readout)
        for _ in range(3):
            await pilot.press("left")
        earlier = datetime.fromtimestamp(series.ts_us[-4] / 1e6, UTC).strftime("%H:%M:%S")
        assert earlier in text(app, Readout)
        assert f"z {series.zscore[-4]:+.2f}" in text(app, Readout)
        await pilot.press("right")
        assert app.cursor == len(series) - 3
        await pilot.press("escape")
        assert not app.paused and not readout.display and app.cursor is None
        await pilot.press("q")


async def test_export_hotkey_writes_what_pairs_tui_export_writes(db_path, tmp_path, capsys):
    await store_tape(db_path, 300)
    out = tmp_path / "exports"
    out.mkdir()
    app = make_app(db_path, feed=False, window=5, lookback=60, export_dir=out)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await pilot.press("e")
        await wait_until(lambda: any(n.title == "exported" for n in app._notifications), 10)
        toast = next(n for n in app._notifications if n.title == "exported").message
        await pilot.press("q")
    files = sorted(out.glob("*.csv"))
    assert [f.name.split("-")[3] for f in files] == ["analytics", "bars"]
    assert all(str(f) in toast for f in files)
    assert all(f.with_suffix(".csv.meta.json").is_file() for f in files)
    for f in files:
        what = f.name.split("-")[3]
        cli = tmp_path / f"cli-{what}.csv"
        args = ["export", "btcusdt", "ethusdt", "--what", what, "--db", str(db_path)]
        args += ["--timeframe", "1s", "--window", "5", "--lookback", "60", "-o", str(cli)]
        assert await asyncio.to_thread(exit_code, args) == 0, capsys.readouterr().err
        assert f.read_text() == cli.read_text()


async def test_an_unwritable_export_directory_is_an_error_toast_not_a_crash(db_path, tmp_path):
    await store_tape(db_path, 120)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere it may chmod: take a read-only mount
        locked = Path("/sys")
    app = make_app(db_path, feed=False, window=5, lookback=60, export_dir=locked)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await pilot.press("e")
        await wait_until(lambda: any(n.title == "export failed" for n in app._notifications), 10)
        note = next(n for n in app._notifications if n.title == "export failed")
        assert f"cannot write {locked}" in note.message
        await pilot.press("1")  # the app goes on
        assert app.session.view.timeframe == "1s"
        await pilot.press("q")
    assert app.return_value == 0


async def test_export_into_a_missing_directory_says_so(db_path, tmp_path):
    app = await replayed(db_path, export_dir=tmp_path / "nope")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await pilot.press("e")
        await wait_until(lambda: any(n.title == "export failed" for n in app._notifications), 10)
        note = next(n for n in app._notifications if n.title == "export failed")
        assert note.message == f"no directory {tmp_path / 'nope'}: create it first"
        await pilot.press("q")


async def palette(pilot, query: str) -> str:
    """Open the command palette, type `query`, return the text of the hit list."""
    await pilot.press("ctrl+p")
    await pilot.pause(0.2)
    await pilot.press(*query)
    await pilot.pause(0.5)  # the search runs in the background
    return str(pilot.app.screen.query_one(CommandList).render_lines(Region(0, 0, 100, 10)))


async def test_the_palette_sets_an_exact_window_and_explains_a_bad_one(db_path):
    await store_tape(db_path, 120)
    app = make_app(db_path, feed=False, window=5, lookback=100)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: drawn(app), 10)
        hits = await palette(pilot, "window 12")
        assert "view: window 12" in hits
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.session.view.window == 12 and "W=12" in text(app, StatusLine)
        hits = await palette(pilot, "window many")
        assert "type a whole number of bars" in hits
        await pilot.press("escape")
        hits = await palette(pilot, "pair solusdt solusdt")
        assert "given twice" in hits
        await pilot.press("escape")
        hits = await palette(pilot, "lookback 3")
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.session.view.lookback == 100  # refused: L < W + 2
        assert any("lookback must be at least" in n.message for n in app._notifications)
        await pilot.press("q")


async def test_the_palette_switches_the_pair_and_the_feed_follows(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app), 15)
        await palette(pilot, "pair solusdt bnbusdt")
        await pilot.press("enter")
        await wait_until(lambda: app.snapshot.view.symbols == ("SOLUSDT", "BNBUSDT"), 10)
        assert "SOLUSDT/BNBUSDT" in text(app, StatusLine)
        await wait_until(lambda: drawn(app, 2), 15)  # trades of the new pair arrive
        await pilot.press("q")
    with sqlite3.connect(db_path) as conn:
        symbols = {row[0] for row in conn.execute("SELECT symbol FROM series")}
    assert {"SOLUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT"} <= symbols


def test_interpret_parses_arguments_and_explains_bad_ones():
    themes = ["nord", "textual-dark"]
    [hit] = interpret("lookback 900", themes)
    assert (hit.title, hit.action) == ("view: lookback 900", "set_lookback(900)")
    [hit] = interpret("pair SOLUSDT bnbusdt", themes)
    assert hit.action == "pair('SOLUSDT', 'BNBUSDT')"
    [hit] = interpret("refresh 9", themes)
    assert hit.action is None and "between 0.25 and 5" in hit.help
    [hit] = interpret("refresh 2", themes)
    assert hit.action == "refresh_every(2.0)"
    [hit] = interpret("theme no", themes)
    assert hit.title == "display: theme nord" and hit.action == "theme('nord')"
    [hit] = interpret("export bars /no/such/dir/x.csv", themes)
    assert hit.action is None and "no directory /no/such/dir" in hit.help
    [hit] = interpret("tf 2m", themes)
    assert hit.action is None and "use '1s', '1m' or '5m'" in hit.help
    assert list(interpret("help", themes)) == []  # left to the fuzzy search
    [hit] = interpret("alert  abs(zscore)>2 cooldown 60s", themes)
    assert hit.title == "alerts: add abs(z) > 2 cooldown 1m"
    assert hit.action == "add_alert('abs(z) > 2 cooldown 1m')"
    [hit] = interpret("alert z >", themes)
    assert hit.action is None and "column 4" in hit.help
    [hit] = interpret("alert remove 3", themes)
    assert hit.action is None and "no such rule (rules: none yet)" in hit.help
    rule = AlertRule(3, parse_rule("z > 2"), "BTCUSDT", "ETHUSDT", "1m", muted=True)
    [hit] = interpret("alert remove #3", themes, [rule])
    assert hit.action == "remove_alert(3)"
    hits = list(interpret("alerts", themes, [rule]))
    assert [h.action for h in hits] == [
        "mute_alert(3, False)",
        "remove_alert(3)",
        "mute_alert(None, True)",
        "mute_alert(None, False)",
    ]
    [hit] = interpret("alerts mute", themes, [rule])
    assert hit.action == "mute_alert(None, True)"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]/\\ab =#@", max_size=20))
def test_typed_text_reaches_the_palette_as_text(typed):
    """Whatever is typed after `alert` or `export` shows as itself, never as markup."""
    assert Content.from_markup(literal(typed)).plain == typed


async def test_help_lists_every_key(db_path):
    app = make_app(db_path, feed=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert isinstance(app.screen, HelpScreen)
        shown = on_screen(app.screen.query_one("#help"))
        for key, _ in PairsApp.KEYS_HELP:
            assert key in shown
        assert "view: pair A B" in shown and "alerts: add a rule" in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")


async def test_every_key_is_in_the_footer(db_path):
    app = make_app(db_path, feed=False)
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.pause(0.2)
        footer = " ".join(on_screen(key) for key in app.screen.query(FooterKey))
        for label in (
            "1s",
            "1m",
            "5m",
            "W-",
            "W+",
            "L-",
            "L+",
            "Pause",
            "Live",
            "Export",
            "Help",
            "Quit",
        ):
            assert label in footer, label
        await pilot.press("q")


async def test_small_terminals_collapse_the_layout(db_path):
    app = await replayed(db_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await pilot.pause(0.3)
        stats = app.screen.query_one(StatsPanel)
        assert stats.region.width == 80 and stats.region.y == 1  # on top, full width
        assert re.search(r"z [+-]\d\.\d\d  corr", on_screen(stats))
        assert not app.screen.query_one("#prices").display  # 24 rows: three charts, not four
        for name in ("spread", "zscore", "corr"):
            assert app.screen.query_one(f"#{name}", ChartView).region.height >= 5, name
        await pilot.resize_terminal(39, 11)
        await pilot.pause(0.3)
        assert "too small" in on_screen(app.screen.query_one("#too-small"))
        await pilot.resize_terminal(160, 48)
        await pilot.pause(0.5)
        assert app.screen.query_one(StatsPanel).region.x > 100  # back beside the charts
        await pilot.press("q")


async def test_lean_mode_draws_monochrome_charts(db_path):
    app = await replayed(db_path, lean=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await pilot.pause(0.3)
        assert len(colours(app.screen.query_one("#zscore"))) == 1  # the text colour alone
        await palette(pilot, "lean")
        await pilot.press("enter")
        await wait_until(lambda: not app.lean, 5)
        await pilot.pause(0.5)
        assert len(colours(app.screen.query_one("#zscore"))) > 2  # line, thresholds, text
        await pilot.press("q")


async def test_charts_are_not_redrawn_when_nothing_changed(db_path):
    app = await replayed(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await pilot.pause(0.3)
        charts = [app.screen.query_one(f"#{name}", ChartView) for name in CHARTS]
        shown = [c.visual for c in charts]
        await pilot.pause(1.0)  # four ticks of the clock, no new trades
        assert [c.visual for c in charts] == shown and all(
            a is b for a, b in zip((c.visual for c in charts), shown, strict=True)
        )
        await pilot.press("q")


async def test_any_way_out_commits_and_closes_the_store(db_path):
    """Not only `q`: Textual's own exits (the palette's quit, app.exit) close the store."""
    app = make_app(db_path)
    async with app.run_test(size=(80, 24)):
        await wait_until(lambda: app.session.recording.ingest.stats().symbols[0].received > 20, 10)
        app.exit(0)
    stats = app.session.recording.ingest.stats()
    assert [s.stored for s in stats.symbols] == [s.received for s in stats.symbols]
    assert not db_path.with_name(db_path.name + "-wal").exists()  # the last close removes it


def fired_toasts(app: PairsApp) -> list:
    return [n for n in app._notifications if n.title == "alert BTCUSDT/ETHUSDT 1s"]


async def test_an_alert_set_in_the_palette_fires_and_survives_a_restart(db_path):
    app = await replayed(db_path)
    rang = []
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        app.bell = lambda: rang.append(True)
        await wait_until(lambda: drawn(app), 10)
        assert "no rules" in on_screen(app.screen.query_one(AlertPanel))
        hits = await palette(pilot, "alert zz > 2")
        assert "unknown metric 'zz' at column 1; did you mean 'z'?" in hits
        await pilot.press("escape")
        hits = await palette(pilot, "alert z > [/]")  # typed text is never markup
        assert "unexpected character '[' at column 5" in hits
        await pilot.press("escape")
        hits = await palette(pilot, "alert price_a>0")
        assert "alerts: add price_a > 0" in hits  # the rule as parsed
        await pilot.press("enter")
        await wait_until(lambda: fired_toasts(app))
        [toast] = fired_toasts(app)
        price = app.snapshot.summary.price_a
        assert toast.title == "alert BTCUSDT/ETHUSDT 1s"
        assert toast.message == f"price_a > 0  {price:.6g}"
        assert rang == [True]
        panel = on_screen(app.screen.query_one(AlertPanel))
        assert re.search(r"#1\s+price_a > 0\s+1s", panel)  # the rule...
        assert re.search(rf"\d\d:\d\d:\d\d\s+price_a > 0\s+{price:.6g}", panel)  # ...its firing
        hits = await palette(pilot, "alerts")
        assert "alerts: mute #1 price_a > 0" in hits and "alerts: remove #1" in hits
        await pilot.press("enter")  # the first hit: mute
        await pilot.pause(0.2)
        assert re.search(
            r"#1\s+price_a > 0\s+1s muted", on_screen(app.screen.query_one(AlertPanel))
        )
        await palette(pilot, "alert unmute 1")
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "muted" not in on_screen(app.screen.query_one(AlertPanel))
        assert len(fired_toasts(app)) == 1  # unmuted while true: no stale firing
        await pilot.press("q")

    again = make_app(db_path, feed=False, window=5, lookback=60, bell=False)  # ui.bell
    async with again.run_test(size=(120, 40), notifications=True) as pilot:
        again.bell = lambda: rang.append(True)
        await wait_until(lambda: drawn(again), 10)
        panel = on_screen(again.screen.query_one(AlertPanel))
        assert re.search(r"#1\s+price_a > 0\s+1s", panel)  # the rule came back...
        assert re.search(r"\d\d:\d\d:\d\d\s+price_a > 0", panel)  # ...and so did its log
        await wait_until(lambda: fired_toasts(again))  # a new run: true now, so it fires
        assert rang == [True]  # the first run's bell only
        await pilot.press("q")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT rule, muted FROM alert_rules").fetchall() == [
            ("price_a > 0", 0)
        ]
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone() == (2,)
