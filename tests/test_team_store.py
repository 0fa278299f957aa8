"""The commands on a PostgreSQL store (a real server on loopback) give what they give on
SQLite: the same trades imported into both export the same bars and analytics, scan and
backtest alike, and a viewer's engine draws the same; two recorders on overlapping symbols
store every trade once; the password never reaches the screen."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import asyncpg
import numpy as np
import pytest
from conftest import cli_env, pairs_tui_cmd, wait_until
from test_import_export import dump_lines, invoke, tape, write_dump
from textual.geometry import Region

from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.feed.demo import DemoServer, SyntheticMarket
from pairs_tui.session import Session, SessionPlan
from pairs_tui.store import TickStore, shown_url

pytestmark = pytest.mark.server

VIEW = ("--timeframe", "1s", "--window", "10", "--lookback", "120")


@pytest.fixture
def both(tmp_path, capsys, pg_url) -> dict[str, str]:
    """The same 15 minutes of two symbols imported into a SQLite file and a PostgreSQL
    database (twice into the latter: the second time stores nothing)."""
    files = [
        str(write_dump(tmp_path, f"{s}-trades-2025-01", dump_lines(r, layout="spot-trades",
                       micros=False, header=False), zipped=False))
        for s, r in tape(900, seed=3).items()
    ]  # fmt: skip
    stores = {"sqlite": str(tmp_path / "ticks.db"), "postgresql": pg_url}
    for db in stores.values():
        code, out, err = invoke(capsys, "import", *files, "--db", db)
        assert code == 0, err
    code, out, err = invoke(capsys, "import", *files, "--db", pg_url)
    assert code == 0 and "0 new" in out + err, out + err
    return stores


def test_every_reading_command_says_the_same_on_both(both, tmp_path, capsys):
    shown = shown_url(both["postgresql"])
    for what in ("bars", "analytics", "summary"):
        texts = []
        for name, db in both.items():
            out = tmp_path / f"{name}-{what}"
            code, _, err = invoke(
                capsys, "export", "btcusdt", "ethusdt", *VIEW, "--what", what, "-o", str(out),
                "--db", db,
            )  # fmt: skip
            assert code == 0, err
            texts.append(out.read_text())
            sidecar = out.with_name(out.name + ".meta.json")
            if sidecar.exists():
                assert "s3cret" not in sidecar.read_text()
        assert texts[0] == texts[1], what
    for args in (
        [
            "watch",
            "btcusdt",
            "ethusdt",
            *VIEW,
            "--no-feed",
            "--duration",
            "0.5",
            "--alert",
            "abs(z) > -1",
        ],  # fires at once on the last bar: the same line from either store
        ["scan", "btcusdt", "ethusdt", *VIEW],
        ["alerts"],
        ["prune", "--older-than", "1d", "--dry-run"],
    ):
        said = []
        for db in both.values():
            code, out, err = invoke(capsys, *args, "--db", db)
            assert code == 0, err
            out = re.sub(r"older than \S+", "older than T", out)  # the clock moved on
            out = re.sub(r"[-\d]+T[:\d]+\.\d+Z", "NOW", out)  # when it fired, and asof
            said.append(out.replace(db, "STORE").replace(shown, "STORE"))
        assert said[0] == said[1], args
        assert "s3cret" not in said[1]
    summaries = []
    for name, db in both.items():
        out = tmp_path / f"backtest-{name}"
        out.mkdir()
        code, _, err = invoke(
            capsys, "backtest", "btcusdt", "ethusdt", *VIEW, "--entry", "1.5", "--exit", "0",
            "--hedge", "kalman", "-o", str(out), "--db", db,
        )  # fmt: skip
        assert code == 0, err
        summaries.append(json.loads((out / "summary.json").read_text()))
    assert summaries[0] == summaries[1] and summaries[0]["trades"] > 0


async def test_a_viewer_elsewhere_draws_what_sqlite_draws(both):
    """The cockpit's engine (`--no-feed`) on each store, at the same moment."""
    view = PairView("BTCUSDT", "ETHUSDT", "1s", 10, 120)
    snapshots = []
    for db in both.values():
        session = Session(SessionPlan(view, db, None))
        await session.start()
        try:
            snapshots.append(await session.refresh())
        finally:
            await session.stop()
    a, b = snapshots
    assert a.summary.n_bars == 120 and a.summary.zscore is not None
    assert a.summary == b.summary
    for field in ("ts_us", "close_a", "close_b", "zscore", "corr"):
        np.testing.assert_array_equal(getattr(a.series, field), getattr(b.series, field))


def test_two_recorders_on_overlapping_symbols_store_every_trade_once(
    pg_url, tmp_path, isolated_home
):
    """Two `record --demo` processes, as on two machines, into one database: BTCUSDT and
    ETHUSDT, and ETHUSDT and SOLUSDT. Each sends itself the demo market's own trades, so
    ETHUSDT arrives twice: it is stored once, every id from the first to the last, with no
    gap recorded. (Commits wait 3 s, so both have started before either commits, even on
    a loaded machine.)"""
    config = tmp_path / "slow-commits.toml"
    config.write_text("[store]\nflush_interval = 3\n")
    env = cli_env(isolated_home)
    record = ("--demo", "--duration", "4", "--db", pg_url, "--config", str(config))
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    procs = [
        subprocess.Popen(pairs_tui_cmd("record", *symbols, *record), **pipes)
        for symbols in (("btcusdt", "ethusdt"), ("ethusdt", "solusdt"))
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert "gaps 0, duplicates 0" in out and "s3cret" not in out + err, out
        assert shown_url(pg_url) in out

    async def stored() -> dict[str, list[tuple]]:
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM gaps") == 0
            rows = await conn.fetch(
                "SELECT symbol, trade_id, ts_us, price, qty, buyer_maker FROM trades"
                " JOIN series ON series.id = trades.series ORDER BY symbol, trade_id"
            )
        finally:
            await conn.close()
        out: dict[str, list[tuple]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(tuple(r)[1:])
        return out

    by_symbol = asyncio.run(stored())
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for symbol, rows in by_symbol.items():
        ids = [r[0] for r in rows]
        assert len(ids) > 40 and ids == list(range(ids[0], ids[-1] + 1)), symbol
        start_ms, end_ms = rows[0][1] // 1000, rows[-1][1] // 1000 + 1
        tape_rows = SyntheticMarket().trades_between(symbol, start_ms, end_ms)
        want = [(t.trade_id, t.time_ms * 1000, t.price, t.qty, t.buyer_maker)
                for t in tape_rows if ids[0] <= t.trade_id <= ids[-1]]  # fmt: skip
        assert want == rows, symbol


async def test_a_database_outage_mid_recording_loses_no_trade(pg_url, pg_cluster):
    """The server goes down for 2 s and comes back (every connection cut) while trades
    stream in:
    the recorder's batch is tried again with backoff, its pending trades wait, and every
    delivered trade is stored once; alert rules written by one session are another's."""
    server = await DemoServer(record_delivered=True, seed=12, rate=400).start()
    options = FeedOptions(ws_url=server.url, backoff_initial=0.05, backoff_max=0.5, stale_after=5)
    view = PairView("BTCUSDT", "ETHUSDT", "1s", 5, 100)
    session = Session(SessionPlan(view, pg_url, options))
    await session.start()
    viewer = Session(SessionPlan(view, pg_url, None))  # another machine's cockpit, following
    try:
        stored = session.recording.ingest.stored
        await wait_until(lambda: sum(stored.values()) > 0, 15)
        await viewer.start()
        await viewer.refresh()
        seen_before = viewer.trades_seen()
        await wait_until(lambda: sum(stored.values()) > 300, 15)
        await session.add_rule("abs(z) > 2")
        await asyncio.to_thread(pg_cluster.outage, 2.0)
        at_restart = sum(stored.values())
        await wait_until(lambda: sum(stored.values()) > at_restart + 300, 30)
        await server.stop()
        delivered = {s: sorted(set(ids)) for s, ids in server.delivered.items()}
        await wait_until(lambda: sum(stored.values()) == sum(map(len, delivered.values())), 30)
        await asyncio.sleep(2.1)  # the engine's settling time: every symbol's trades are in
        await viewer.refresh()  # the same incremental engine, reading what is new
        assert viewer.trades_seen() > seen_before
    finally:
        await viewer.stop()
        await session.stop()
    assert session.failure is None
    assert session.store.retries > 0  # the outage was met, and waited out

    viewer = Session(SessionPlan(view, pg_url, None))  # a cockpit attaching now
    await viewer.start()
    try:
        assert [r.rule.text for r in viewer.rules()] == ["abs(z) > 2"]
        for symbol, ids in delivered.items():
            assert [t[1] for t in await viewer.store.trades(symbol)] == ids, symbol
        assert await viewer.store.gaps() == []
    finally:
        await viewer.stop()


def test_db_copy_goes_both_ways_resumes_and_counts(tmp_path, capsys, pg_cluster, monkeypatch):
    """SQLite into PostgreSQL (cut short, then run again) and back into a new SQLite file:
    each store exports the same bars, holds the rules and firings, and says its count."""
    from pairs_tui import db_copy
    from pairs_tui.model import AlertEvent, Gap, StreamKind

    files = [
        str(write_dump(tmp_path, f"{s}-trades-2025-01", dump_lines(r, layout="spot-trades",
                       micros=False, header=False), zipped=False))
        for s, r in tape(300, seed=4).items()
    ]  # fmt: skip
    first = tmp_path / "first.db"
    assert invoke(capsys, "import", *files, "--db", str(first))[0] == 0

    async def alerts() -> None:
        async with await TickStore.open(first) as store:
            await store.add_rule(("SOLUSDT", "BNBUSDT"), "1m", "z > 3", 1)  # ids differ there
            await store.remove_rule(1)
            rule = await store.add_rule(("BTCUSDT", "ETHUSDT"), "1s", "abs(z) > 2", 1)
            await store.mute_rule(rule, True)
            event = AlertEvent(rule, "abs(z) > 2", "BTCUSDT", "ETHUSDT", "1s", 5, 4, 5, 2.5)
            await store.add_events([event])
            await store.write([], [Gap("ETHUSDT", StreamKind.TRADE, 10**12, 10**12 + 5, 1)])

    asyncio.run(alerts())
    team = pg_cluster.new_database()
    monkeypatch.setattr(db_copy, "CHUNK", 1000)

    def cut_short(done: int, total: int) -> None:
        if done >= 3000:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the copy

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(db_copy.copy_store(first, team, cut_short))
    code, out, err = invoke(capsys, "db", "copy", str(first), team)
    assert code == 0, err
    assert "s3cret" not in out and f"into {shown_url(team)}:" in out
    total = sum(len(r) for r in tape(300, seed=4).values())
    new = int(re.search(r"([\d,]+) new trades", out)[1].replace(",", ""))
    assert 0 < new <= total - 3000 and "1 alert rules, 1 alert firings" in out
    assert "counted: both hold BTCUSDT" in out

    back = tmp_path / "back.db"
    code, out, err = invoke(capsys, "db", "copy", team, str(back))
    assert code == 0 and f"{total:,} new trades" in out, out + err
    code, out, err = invoke(capsys, "db", "copy", team, str(back))  # again: nothing new
    assert code == 0 and " 0 new trades" in out and "1 alert rules, 0 alert firings" in out
    code, out, err = invoke(capsys, "db", "copy", str(first), team)  # and into it again
    assert code == 0 and " 0 new trades" in out and "0 alert firings" in out

    async def alert_history(db: str) -> tuple[list, list, list]:
        async with await TickStore.open(db, readonly=True) as store:
            return await store.rules(), await store.events(), await store.gaps()

    for db in (team, str(back)):  # copied twice into each: everything once, still matched
        rules, events, gaps = asyncio.run(alert_history(db))
        assert [(r.rule, r.muted) for r in rules] == [("abs(z) > 2", True)]
        assert [e.rule_id for e in events] == [rules[0].id]  # the firing names its rule
        assert [(g.from_id, g.to_id) for g in gaps] == [(10**12, 10**12 + 5)]

    bars = []
    for db in (str(first), team, str(back)):
        out_file = tmp_path / f"bars-{len(bars)}.csv"
        code, _, err = invoke(
            capsys, "export", "btcusdt", "ethusdt", *VIEW, "--what", "bars", "-o",
            str(out_file), "--db", db,
        )  # fmt: skip
        assert code == 0, err
        bars.append(out_file.read_text())
        code, out, _ = invoke(capsys, "alerts", "--db", db)
        assert "abs(z) > 2" in out and "2.5" in out
    assert bars[0] == bars[1] == bars[2]


async def test_the_cockpit_draws_from_the_team_store_and_never_shows_its_password(both):
    """The real app (Pilot) with `--no-feed --db postgresql://...`: the charts fill in from
    the database, and the help screen names the store without its password."""
    from pairs_tui.ui.app import make_app

    url = both["postgresql"]
    app = make_app(SessionPlan(PairView("BTCUSDT", "ETHUSDT", "1s", 10, 120), url, None))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: app.snapshot is not None and app.snapshot.summary.n_bars == 120)
        assert app.snapshot.summary.zscore is not None
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        help_text = app.screen.query_one("#help")
        lines = help_text.render_lines(Region(0, 0, *help_text.outer_size))
        shown = "".join("".join(strip.text.split()) for strip in lines)  # folded lines joined
        url_shown = "".join(shown_url(url).split())
        assert url_shown in shown and "s3cret" not in shown
        await pilot.press("escape", "q")
