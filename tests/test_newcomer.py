"""What a newcomer meets first: the demo in a store of its own that a live feed never
writes into, charts that say what they wait for, keys that refuse an impossible view in
words, a footer that keeps the keys that matter at 80 columns, a header that says why
there is no feed, and exports that never invent a file for a missing directory."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import cli_env, pairs_tui_cmd, store_tape, wait_until
from ptyterm import PtyTerminal
from test_ui import chart, drawn, make_app, on_screen, palette, replayed, text
from textual.widgets._footer import FooterKey

from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.session import SessionPlan
from pairs_tui.store import StoreError, TickStore
from pairs_tui.ui import app as ui
from pairs_tui.ui.commands import interpret
from pairs_tui.ui.widgets import StatsPanel, StatusLine

pytestmark = pytest.mark.pty


def run(home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pairs_tui_cmd(*args), env=cli_env(home), capture_output=True, text=True, timeout=60
    )


def test_the_demo_records_into_its_own_store(isolated_home):
    done = run(isolated_home, "record", "btcusdt", "ethusdt", "--demo", "--duration", "1")
    assert done.returncode == 0, done.stderr
    data = isolated_home / "data" / "pairs-tui"
    assert (data / "demo.db").is_file() and not (data / "ticks.db").exists()
    assert "demo.db" in done.stdout
    with sqlite3.connect(data / "demo.db") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'source'").fetchone() == ("demo",)


def test_a_live_feed_never_writes_into_a_demo_store_nor_the_reverse(tmp_path, isolated_home):
    demo = tmp_path / "d.db"
    done = run(isolated_home, "record", "btcusdt", "--demo", "--db", str(demo), "--duration", "1")
    assert done.returncode == 0, done.stderr
    for argv in (
        ("record", "btcusdt", "--db", str(demo), "--ws-url", "ws://127.0.0.1:9"),
        ("btcusdt", "ethusdt", "--db", str(demo)),
        ("watch", "btcusdt", "ethusdt", "--alert", "z > 9", "--db", str(demo)),
    ):
        done = run(isolated_home, *argv)
        assert done.returncode == 2, argv
        assert done.stderr == (
            f"pairs-tui: error: {demo} holds demo trades: a live feed does not write into"
            " it; use another --db\n"
        )
    dump = tmp_path / "BTCUSDT-trades-2025-01.csv"
    dump.write_text("1,100.5,0.1,10.05,1735689600000,true\n")
    done = run(isolated_home, "import", str(dump), "--db", str(demo))  # Binance's own trades
    assert done.returncode == 2 and f"{demo} holds demo trades" in done.stderr, done.stderr
    live = tmp_path / "l.db"
    asyncio.run(store_tape(live, 5))  # trades of a store from before sources were kept
    done = run(isolated_home, "record", "btcusdt", "--demo", "--db", str(live), "--duration", "1")
    assert done.returncode == 2
    assert (
        "holds live trades: a demo feed does not write into it; leave out --db (the demo"
        " records into demo.db beside ticks.db)"
    ) in done.stderr


async def test_the_source_is_claimed_once_per_store(tmp_path):
    async with await TickStore.open(tmp_path / "s.db") as store:
        await store.claim("demo")
        await store.claim("demo")  # the same source again: fine
        try:
            await store.claim("live")
        except StoreError as exc:
            assert "holds demo trades" in str(exc)
        else:
            raise AssertionError("a live feed was let into a demo store")


async def test_placeholders_say_what_they_wait_for_and_how_long(db_path):
    app = make_app(db_path, window=20, lookback=600, timeframe="1m")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: app.snapshot is not None, 10)
        await pilot.pause(0.3)
        z = chart(app, "zscore")
        assert z.startswith("z-score (W=20)\nCollecting data: ")
        assert re.search(r"/ 21 bars, about (19|20|21) min - press 1 for 1s bars$", z), z
        await pilot.press("q")


async def test_beta_from_few_bars_is_marked_provisional(db_path):
    app = make_app(db_path)  # the demo feed from an empty store, 1s bars
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app) and app.snapshot.summary.beta is not None, 10)
        await pilot.pause(0.3)
        panel = " ".join(on_screen(app.screen.query_one(StatsPanel)).split())
        bars = app.snapshot.summary.n_bars
        assert bars < 30 and f"beta, alpha, R² provisional: {bars} / 30 bars" in panel, panel
        await pilot.press("q")


async def test_lean_charts_tell_the_two_prices_apart(db_path):
    app = await replayed(db_path, lean=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app, 10), 10)
        await pilot.pause(0.5)
        prices = on_screen(app.screen.query_one("#prices"))
        assert "prices, 100 = start (BTCUSDT +, ETHUSDT x)" in prices
        body = prices.split("\n", 1)[1]
        assert "+" in body and "x" in body  # each line drawn with its own marker
        await pilot.press("q")


async def test_the_footer_at_80_columns_keeps_the_keys_a_newcomer_needs(db_path):
    app = make_app(db_path, feed=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        seen = [k for k in app.screen.query(FooterKey) if k.region.width and k.region.right <= 80]
        footer = " ".join(" ".join(on_screen(k).split()) for k in seen)
        for shown in ("? Help", "q Quit", "e Export", "^p"):
            assert shown in footer, footer
        await pilot.press("q")


async def test_keys_refuse_an_impossible_view_with_the_palettes_words(db_path):
    app = make_app(db_path, feed=False, window=2, lookback=4)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.pause(0.2)
        await pilot.press("left_square_bracket")  # W 2 - 5
        await pilot.press("minus")  # L 4 - 100
        await pilot.pause(0.3)
        assert app.session.view.window == 2 and app.session.view.lookback == 4
        said = [n.message for n in app._notifications]
        assert "window must be at least 2 bars, got -3" in said
        assert "lookback must be at least window + 2 = 4 bars, got -96" in said
        await pilot.press("q")


async def test_the_header_says_why_there_is_no_feed(db_path):
    nowhere = FeedOptions(ws_url="ws://127.0.0.1:9", backoff_max=1)  # nothing listens
    plan = SessionPlan(PairView("BTCUSDT", "ETHUSDT", "1s", 3, 40), db_path, nowhere)
    app = ui.make_app(plan, refresh_every=0.25)
    async with app.run_test(size=(200, 40)) as pilot:
        await wait_until(lambda: "reconnecting" in text(app, StatusLine), 10)
        header = text(app, StatusLine)
        assert "live reconnecting in" in header
        assert "Connect call failed" in header and "no network? try --demo" in header
        await pilot.press("q")


async def test_the_palette_never_exports_into_a_mistyped_directory(db_path, tmp_path):
    typed = f"export bars {tmp_path}/missing-dir/"
    [hit] = interpret(typed, ())
    assert hit.action is None  # nothing to run: the hit explains
    assert hit.help == f"no directory {tmp_path}/missing-dir: create it first"
    [good] = interpret(f"export bars {tmp_path}/", ())
    assert good.action is not None and "into" in good.title
    app = await replayed(db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: drawn(app), 10)
        await palette(pilot, typed)
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert not (tmp_path / "missing-dir").exists()
        assert list(tmp_path.glob("*.csv")) == []
        await pilot.press("escape", "q")


async def test_help_shows_where_the_trades_go(db_path):
    app = make_app(db_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        shown = " ".join(on_screen(app.screen.query_one("#help")).split())
        assert f"store {db_path} (demo trades are recorded" in shown
        await pilot.press("escape", "q")


def test_prune_spans_cannot_be_misread():
    from pairs_tui.model import parse_span

    assert [parse_span(t) for t in ("90s", "30min", "12h", "7d", "2w")] == [
        90,
        1800,
        43200,
        604800,
        1209600,
    ]
    for span in ("30m", "1mo", "2months"):
        with pytest.raises(ValueError, match="ambiguous time span"):
            parse_span(span)


def test_prune_dry_run_says_what_would_go_and_deletes_nothing(tmp_path, isolated_home):
    db = tmp_path / "t.db"
    asyncio.run(store_tape(db, 60))  # trades of 2025: all older than a day
    before = sqlite3.connect(db).execute("SELECT count(*) FROM trades").fetchone()[0] - 2
    done = run(isolated_home, "prune", "--older-than", "1d", "--dry-run", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"would prune {before:,} trades older than ")
    assert done.stdout.rstrip().endswith(f"from {db} (dry run: nothing deleted)")
    assert sqlite3.connect(db).execute("SELECT count(*) FROM trades").fetchone()[0] == before + 2


@pytest.mark.parametrize(("answer", "left"), [("n", "all"), ("y", "none")])
def test_prune_on_a_terminal_asks_first(tmp_path, isolated_home, answer, left):
    db = tmp_path / "t.db"
    asyncio.run(store_tape(db, 60))
    before = sqlite3.connect(db).execute("SELECT count(*) FROM trades").fetchone()[0] - 2
    argv = pairs_tui_cmd("prune", "--older-than", "1d", "--db", str(db))
    with PtyTerminal(argv, cols=160, rows=10, env=cli_env(isolated_home), cwd=tmp_path) as t:
        t.wait_for(f"prune {before:,} trades older than", timeout=20)
        t.send(f"{answer}\r")
        assert t.wait_exit(20) == 0
    count = sqlite3.connect(db).execute("SELECT count(*) FROM trades").fetchone()[0]
    assert count == (before + 2 if left == "all" else 2)  # each symbol's newest stays


def test_ctrl_c_during_import_says_what_was_kept(tmp_path, isolated_home):
    """Each file is one transaction: Ctrl-C keeps the files done, rolls back the one under
    way and starts no other; the user is told which is which."""
    rows = "".join(f"{i},100.5,0.1,10.05,{1735689600000 + i},true\n" for i in range(1, 2001))
    (tmp_path / "BTCUSDT-trades-2025-01.csv").write_text(rows)
    big = tmp_path / "ETHUSDT-trades-2025-01.csv"
    with big.open("w") as out:
        for start in range(1, 1_000_001, 100_000):  # seconds of work: Ctrl-C lands in it
            out.write(
                "".join(
                    f"{i},3000.5,0.1,300.05,{1735689600000 + i},false\n"
                    for i in range(start, start + 100_000)
                )
            )
    (tmp_path / "SOLUSDT-trades-2025-01.csv").write_text(rows)
    db = tmp_path / "t.db"
    files = ["BTCUSDT-trades-2025-01.csv", big.name, "SOLUSDT-trades-2025-01.csv"]
    proc = subprocess.Popen(
        pairs_tui_cmd("import", *files, "--db", str(db)),
        cwd=tmp_path,
        env=cli_env(isolated_home),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the first file is in: interrupt the second
        if line.startswith("BTCUSDT-trades-2025-01.csv: 2,000"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(30) == 130
    assert (
        "pairs-tui: interrupted: kept BTCUSDT-trades-2025-01.csv; ETHUSDT-trades-2025-01.csv"
        " rolled back (nothing of it kept); not started: SOLUSDT-trades-2025-01.csv"
    ) in rest
    with sqlite3.connect(db) as conn:
        kept = conn.execute(
            "SELECT symbol, count(*) FROM trades JOIN series ON series.id = trades.series"
            " GROUP BY symbol"
        ).fetchall()
    assert kept == [("BTCUSDT", 2000)]


def test_the_readme_command_shows_every_chart_and_the_verdict_at_1m_at_once(
    isolated_home, tmp_path
):
    """`pairs-tui btcusdt ethusdt --demo` with the shipped defaults (1m, W = 20, L = 600,
    history at start): without history the z-score takes 21 minutes and the verdict 30."""
    config = isolated_home / "config" / "pairs-tui" / "config.toml"
    config.write_text(config.read_text().replace("backfill = false", "backfill = true"))
    argv = pairs_tui_cmd("btcusdt", "ethusdt", "--demo", "--db", str(tmp_path / "demo.db"))
    titles = ("prices", "spread", "z-score (W=20)", "rolling correlation of returns")

    def full(lines: list[str]) -> bool:
        screen = "\n".join(lines)
        return (
            all(t in screen for t in titles)
            and "Collecting data" not in screen
            and "cointegrated" in screen  # the Engle-Granger verdict, either way
            and int((re.search(r"history: ([\d,]+) bars|$", lines[0])[1] or "0").replace(",", ""))
            >= 500
        )  # the header says how many of the 600 bars came from REST

    with PtyTerminal(argv, cols=120, rows=40, env=cli_env(isolated_home)) as term:
        try:
            term.wait_for(full, timeout=20, since=term.started_at)
        except TimeoutError:
            pytest.fail(f"not full after 20 s:\n{term.dump()}")
        term.send("q")
        assert term.wait_exit(10) == 0


def test_record_backfill_shows_its_progress_on_a_terminal(isolated_home, tmp_path):
    config = isolated_home / "config" / "pairs-tui" / "config.toml"
    config.write_text(config.read_text().replace("backfill = false", "backfill = true"))
    argv = pairs_tui_cmd(
        "record", "btcusdt", "ethusdt", "--demo", "--backfill", "6h", "--db", str(tmp_path / "d.db")
    )
    with PtyTerminal(argv, cols=120, rows=20, env=cli_env(isolated_home)) as term:
        term.wait_for("history: ", timeout=30)  # the bar, then what it stored
        term.wait_for(lambda lines: any("bars from REST" in line for line in lines), 30)
        term.wait_for("connected", timeout=10)  # then the status line, as ever
        [said] = [line for line in term.text() if "bars from REST" in line]
        term.signal(signal.SIGINT)
        assert term.wait_exit(10) == 0
    assert int(said.split("history: ")[1].split()[0].replace(",", "")) > 2 * 6 * 3600
