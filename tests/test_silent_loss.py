"""Silent loss is impossible: a feed whose every trade is one the store already holds (its
ids run behind the store's, as live Binance ids behind a demo's did) is said to record
nothing, with the store's path: in `record`'s log and status line, and in the cockpit's
header and a toast. A few re-sent trades say nothing."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import cli_env, pairs_tui_cmd, wait_until
from websockets.asyncio.server import ServerConnection, serve

from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.model import StreamKind
from pairs_tui.session import Session, SessionPlan
from pairs_tui.store import TickStore
from pairs_tui.ui.app import make_app
from pairs_tui.ui.widgets import StatusLine

pytestmark = pytest.mark.server

STORED_UP_TO = 5_000


def trade(symbol: str, trade_id: int) -> str:
    data = {"e": "trade", "E": 0, "s": symbol, "t": trade_id, "p": "100.5", "q": "1.0"}
    data |= {"T": time.time_ns() // 1_000_000, "m": False}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


async def old_trades(ws: ServerConnection) -> None:
    """BTCUSDT trades the store already holds, ten a second, for ten seconds."""
    for i in range(100):
        await ws.send(trade("BTCUSDT", 1_000 + i))
        await asyncio.sleep(0.1)
    await ws.wait_closed()


async def store_ahead(path) -> None:
    async with await TickStore.open(path) as store:
        await store.claim("live")
        (series,) = (await store.series_ids(["BTCUSDT"], StreamKind.TRADE)).values()
        now = time.time_ns() // 1000 - 60_000_000
        await store.write(
            [(series, i, now + i, None, "100", "1", True) for i in range(1, STORED_UP_TO + 1)]
        )


async def test_record_says_it_records_nothing(tmp_path, isolated_home):
    db = tmp_path / "t.db"
    await store_ahead(db)
    async with serve(old_trades, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        proc = await asyncio.create_subprocess_exec(
            *pairs_tui_cmd("record", "btcusdt", "--ws-url", url, "--no-backfill", "--db", str(db)),
            *("--duration", "8"),
            env=cli_env(isolated_home),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    said = [line for line in out.decode().splitlines() if "nothing new" in line]
    assert len(said) == 1, out.decode()
    assert said[0].endswith(
        f"BTCUSDT: every trade for 5s was already stored (ids up to {STORED_UP_TO}):"
        f" nothing new is being recorded in {db}"
    )
    assert "duplicates " in out.decode().splitlines()[-1]


async def test_the_cockpit_header_and_a_toast_say_it(tmp_path):
    db = tmp_path / "t.db"
    await store_ahead(db)
    async with serve(old_trades, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        view = PairView("BTCUSDT", "ETHUSDT", "1s", 3, 40)
        app = make_app(SessionPlan(view, db, FeedOptions(ws_url=url)), refresh_every=0.25)
        async with app.run_test(size=(200, 40), notifications=True) as pilot:
            await wait_until(
                lambda: "NOTHING RECORDED" in str(app.query_one(StatusLine).render()), 15
            )
            header = str(app.query_one(StatusLine).render())
            assert "live NOTHING RECORDED (BTCUSDT " in header
            assert "every trade already stored" in header
            said = f"nothing new is being recorded in {db}"  # the toast may come a tick later
            await wait_until(lambda: any(n.message.endswith(said) for n in app._notifications), 5)
            await pilot.press("q")


async def test_a_few_resent_trades_say_nothing(tmp_path):
    """Duplicates among new trades (a re-send after a reconnect) are no silent loss."""
    db = tmp_path / "t.db"
    await store_ahead(db)

    async def mixed(ws: ServerConnection) -> None:
        for i in range(70):
            await ws.send(trade("BTCUSDT", STORED_UP_TO - 5 + i))  # 5 old, then new ones
            await ws.send(trade("BTCUSDT", STORED_UP_TO - 5 + i))  # each sent twice
            await asyncio.sleep(0.1)
        await ws.wait_closed()

    async with serve(mixed, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        notes: list[str] = []
        plan = SessionPlan(PairView("BTCUSDT", "ETHUSDT", "1s", 3, 40), db, FeedOptions(ws_url=url))
        session = Session(plan, on_notice=notes.append)
        await session.start()
        try:
            await asyncio.sleep(7.5)
            stats = session.feed_stats()
            assert stats is not None and stats.duplicates > 60
            assert stats.silent_loss() is None and notes == []
        finally:
            await session.stop()


def test_one_resent_trade_then_silence_is_no_loss():
    """A re-send followed by a quiet spell (or a reconnect) is not a run of duplicates."""
    from pairs_tui.feed.binance import DROPPING_MIN, _Symbol

    st = _Symbol("BTCUSDT")
    st.dup_since = st.dup_last = 0
    st.dup_count, st.dup_at = 1, st.received
    assert st.dropping_us(6_000_000) is None  # one duplicate, six quiet seconds
    st.dup_count, st.dup_last = DROPPING_MIN, 5_900_000
    assert st.dropping_us(6_000_000) == 6_000_000  # a run still going
    st.received += 1  # a new trade stored: the run is over
    assert st.dropping_us(6_000_000) is None
