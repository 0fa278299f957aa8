"""The consumer against the real demo server on loopback, with faults injected.

The invariant everywhere: once the server has stopped and the consumer has seen the
end, the store holds every trade the server delivered exactly once, and the recorded
gaps are exactly the holes in what was delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import socket
from contextlib import asynccontextmanager

import pytest
from conftest import wait_until

from pairs_tui.feed.binance import BinanceFeed, FeedOptions, full_jitter
from pairs_tui.feed.demo import DemoServer, Faults
from pairs_tui.ingest import Ingest
from pairs_tui.model import FeedState, StreamKind
from pairs_tui.store import TickStore

pytestmark = pytest.mark.server

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FAST = dict(backoff_initial=0.02, backoff_max=0.1, stale_after=5.0)


@asynccontextmanager
async def recording(server: DemoServer, db_path, *, store=None, symbols=SYMBOLS, **options):
    real = await TickStore.open(db_path)
    events: list[str] = []
    feed = BinanceFeed(
        symbols, FeedOptions(ws_url=server.url, **{**FAST, **options}), on_event=events.append
    )
    feed.events = events
    ingest = Ingest(feed, store(real) if store else real, flush_interval=0.05)
    task = asyncio.create_task(ingest.run())
    try:
        yield ingest
    finally:
        ingest.stop()
        await task
        await real.close()


async def settle(server: DemoServer, ingest: Ingest) -> None:
    """Stop the server (close frames come after all data) and let the consumer see it."""
    await server.stop()
    await wait_until(lambda: ingest.feed.state is not FeedState.CONNECTED)


def holes(ids: list[int]) -> list[tuple[int, int]]:
    unique = sorted(set(ids))
    return [(a + 1, b - 1) for a, b in itertools.pairwise(unique) if b > a + 1]


async def assert_exactly_once(server: DemoServer, db_path, symbols=SYMBOLS) -> None:
    async with await TickStore.open(db_path) as store:
        gaps = await store.gaps()
        for symbol in symbols:
            delivered = server.delivered[symbol]
            stored = await store.trade_ids(symbol)
            assert stored == sorted(set(delivered)), symbol
            recorded = [(g.from_id, g.to_id) for g in gaps if g.symbol == symbol]
            assert recorded == holes(delivered), symbol
        assert await store.integrity_ok()


async def test_every_delivered_trade_stored_once_across_disconnects_stall_and_junk(db_path):
    faults = Faults(cut_every=40, resend_on_reconnect=15, malformed_every=23)
    server = await DemoServer(record_delivered=True, seed=7, rate=150, faults=faults).start()
    async with recording(server, db_path, stale_after=0.5) as ingest:
        feed = ingest.feed
        await wait_until(lambda: server.counters.cuts >= 3, 30)  # 1006: no close frame
        faults.cut_every, faults.close_every = 0, 40
        await wait_until(lambda: server.counters.closes >= 3, 30)  # 1001: going away
        faults.close_every, faults.stall_after = 0, 25
        await wait_until(lambda: feed.counters.stale_reconnects >= 1, 30)  # the watchdog
        faults.stall_after = 0
        frames = feed.counters.frames  # the reconnect may already be done: watch data instead
        await wait_until(lambda: feed.counters.frames > frames + 50, 30)
        await wait_until(
            lambda: feed.counters.frames > 50 + sum(map(len, server.delivered.values())) // 2
        )
        await settle(server, ingest)
    stats = ingest.stats()  # after the final flush
    assert stats.reconnects >= 7
    assert feed.counters.duplicates >= server.counters.resent - 15 > 0
    assert stats.malformed == server.counters.malformed > 0
    assert stats.gaps > 0  # trades generated while disconnected were never delivered
    assert any("1006" in e for e in feed.events) and any("1001" in e for e in feed.events)
    assert any("no data for 0.5s" in e for e in feed.events)
    assert {s.symbol: s.stored for s in stats.symbols} == {
        s: len(set(server.delivered[s])) for s in SYMBOLS
    }
    await assert_exactly_once(server, db_path)


async def test_skipped_ids_are_recorded_as_gaps(db_path):
    server = await DemoServer(record_delivered=True, seed=3, rate=200).start()
    server.market.skip_ids_every = 25
    async with recording(server, db_path) as ingest:
        await wait_until(lambda: ingest.feed.counters.gaps >= 6)
        await settle(server, ingest)
    await assert_exactly_once(server, db_path)


async def test_server_shutdown_reconnects_at_once(db_path):
    """serverShutdown is an orderly reconnect: no backoff, even with a slow schedule."""
    server = await DemoServer(
        record_delivered=True, seed=5, rate=200, faults=Faults(shutdown_every=30)
    ).start()
    async with recording(server, db_path, backoff_initial=30.0, backoff_max=30.0) as ingest:
        await wait_until(lambda: ingest.feed.counters.shutdown_notices >= 3, timeout=15)
        await settle(server, ingest)
    await assert_exactly_once(server, db_path)


async def test_aggtrade_stream_end_to_end(db_path):
    server = await DemoServer(
        record_delivered=True, seed=9, rate=200, faults=Faults(cut_every=50)
    ).start()
    async with recording(server, db_path, kind=StreamKind.AGG_TRADE) as ingest:
        await wait_until(lambda: server.counters.cuts >= 2)
        await settle(server, ingest)
    async with await TickStore.open(db_path) as store:
        for symbol in SYMBOLS:
            assert await store.trade_ids(symbol, StreamKind.AGG_TRADE) == sorted(
                set(server.delivered[symbol])
            )
            assert await store.trade_ids(symbol, StreamKind.TRADE) == []


async def test_backpressure_when_the_writer_falls_behind(db_path):
    """A slow disk: pending trades stop at the bound, the consumer waits (and the watchdog
    does not take that wait for a dead server), nothing is lost."""

    class SlowStore:
        def __init__(self, real: TickStore) -> None:
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        async def write(self, rows, gaps=()):
            await asyncio.sleep(0.8)
            return await self.real.write(rows, gaps)

    server = await DemoServer(record_delivered=True, seed=11, rate=2500).start()
    peak = 0
    async with recording(
        server, db_path, store=SlowStore, max_pending=1000, batch_rows=200, stale_after=0.3
    ) as ingest:

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, ingest.feed.pending)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        await wait_until(lambda: ingest.feed.counters.backpressure_waits >= 3, timeout=20)
        await settle(server, ingest)
        watcher.cancel()
    assert peak == 1000
    assert ingest.feed.counters.stale_reconnects == 0
    await assert_exactly_once(server, db_path)


async def test_refused_connections_back_off_then_recover(db_path):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = DemoServer(record_delivered=True, port=port, seed=2, rate=100)
    server_url = f"ws://127.0.0.1:{port}"
    async with await TickStore.open(db_path) as store:
        feed = BinanceFeed(SYMBOLS, FeedOptions(ws_url=server_url, **FAST))
        ingest = Ingest(feed, store, flush_interval=0.05)
        task = asyncio.create_task(ingest.run())
        await wait_until(lambda: feed.counters.reconnects >= 4)
        assert feed.state is FeedState.RECONNECTING
        assert "ConnectionRefused" in (feed.last_error or "")
        await server.start()
        await wait_until(lambda: ingest.stored["ETHUSDT"] >= 20)
        await settle(server, ingest)
        ingest.stop()
        await task
    await assert_exactly_once(server, db_path)


@pytest.mark.parametrize(("healthy_after", "resets"), [(0.01, True), (600.0, False)])
async def test_backoff_is_full_jitter_and_resets_after_a_healthy_connection(
    db_path, healthy_after, resets
):
    server = await DemoServer(
        record_delivered=True, seed=4, rate=300, faults=Faults(cut_every=20)
    ).start()
    initial, cap = 0.01, 0.08
    events: list[str] = []
    async with await TickStore.open(db_path) as store:
        feed = BinanceFeed(
            SYMBOLS,
            FeedOptions(
                ws_url=server.url,
                backoff_initial=initial,
                backoff_max=cap,
                healthy_after=healthy_after,
            ),
            rng=random.Random(42),
            on_event=events.append,
        )
        ingest = Ingest(feed, store)
        task = asyncio.create_task(ingest.run())
        await wait_until(lambda: feed.counters.reconnects >= 6)
        ingest.stop()
        await task
    await server.stop()
    delays = [float(m) for e in events for m in re.findall(r"reconnecting in ([\d.]+)s", e)]
    rng = random.Random(42)
    expected = [full_jitter(0 if resets else n, initial, cap, rng) for n in range(len(delays))]
    assert delays == [float(f"{d:.1f}") for d in expected]
    assert all(0 <= d <= cap for d in expected)


def test_full_jitter_bounds():
    rng = random.Random(0)
    for attempt in range(40):
        bound = min(30.0, 0.5 * 2**attempt)
        draws = [full_jitter(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in draws)
        assert max(draws) > bound * 0.8  # it does spread over the whole range


async def scripted_server(frames: list[str]):
    """A bare Binance-protocol server that sends exactly these frames, then holds."""
    from websockets.asyncio.server import serve

    async def handler(ws):
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    return await serve(handler, "127.0.0.1", 0)


async def test_aggtrade_gaps_use_aggregate_ids_and_futures_non_market_fills_are_no_gap(db_path):
    def agg(a, f, last, x="MARKET"):
        return (
            f'{{"stream":"btcusdt@aggTrade","data":{{"e":"aggTrade","E":1,"s":"BTCUSDT","a":{a},'
            f'"p":"1.5","q":"2","f":{f},"l":{last},"T":1700000000000,"m":true,"X":"{x}"}}}}'
        )

    frames = [
        agg(10, 100, 104),
        agg(11, 105, 105),
        agg(12, 106, 107, "INSURANCE_FUND"),
        agg(13, 108, 108),
        agg(15, 111, 111),
    ]
    server = await scripted_server(frames)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with await TickStore.open(db_path) as store:
        feed = BinanceFeed(("BTCUSDT",), FeedOptions(ws_url=url, kind=StreamKind.AGG_TRADE))
        ingest = Ingest(feed, store, flush_interval=0.05)
        task = asyncio.create_task(ingest.run())
        await wait_until(lambda: feed.counters.frames == 5)
        ingest.stop()
        await task
        assert await store.trade_ids("BTCUSDT", StreamKind.AGG_TRADE) == [10, 11, 13, 15]
        assert [(g.from_id, g.to_id) for g in await store.gaps()] == [(14, 14)]
    server.close()


async def test_a_gap_across_a_restart_is_recorded(db_path):
    server = await DemoServer(record_delivered=True, seed=6, rate=200).start()
    async with recording(server, db_path) as ingest:
        await wait_until(lambda: ingest.stored["BTCUSDT"] > 20)
    await asyncio.sleep(0.3)  # trades happen while nobody records
    async with recording(server, db_path) as ingest:
        await wait_until(lambda: ingest.stored["BTCUSDT"] > 20)
        await settle(server, ingest)
    async with await TickStore.open(db_path) as store:
        gaps = [g for g in await store.gaps() if g.symbol == "BTCUSDT"]
        stored = await store.trade_ids("BTCUSDT")
    # the hole is every id between the two recordings: those sent while nobody listened,
    # and any the first one had not read yet when it stopped
    assert set(stored) <= set(server.delivered["BTCUSDT"])
    assert [(g.from_id, g.to_id) for g in gaps] == holes(stored)
    assert len(gaps) == 1


async def test_a_failed_write_keeps_its_trades_for_the_next_one(db_path):
    """A write that fails once (a disk hiccup, a cancelled flush) loses nothing."""

    class FlakyStore:
        def __init__(self, real: TickStore) -> None:
            self.real, self.failures = real, 0

        def __getattr__(self, name):
            return getattr(self.real, name)

        async def write(self, rows, gaps=()):
            if self.failures == 0 and len(rows) > 50:
                self.failures += 1
                raise OSError("disk hiccup")
            return await self.real.write(rows, gaps)

    server = await DemoServer(record_delivered=True, seed=12, rate=400).start()
    real = await TickStore.open(db_path)
    flaky = FlakyStore(real)
    feed = BinanceFeed(SYMBOLS, FeedOptions(ws_url=server.url, **FAST))
    ingest = Ingest(feed, flaky, flush_interval=0.3)
    with pytest.raises(OSError, match="disk hiccup"):
        await ingest.run()  # the failure surfaces; the final flush writes what it held
    assert flaky.failures == 1
    await server.stop()
    stored = await real.trade_ids("BTCUSDT")
    await real.close()
    assert stored == sorted(set(server.delivered["BTCUSDT"]))[: len(stored)]
    assert len(stored) == ingest.stored["BTCUSDT"] > 50


async def test_a_quiet_stream_reconnects_soon_without_escalating_backoff(db_path):
    faults = Faults(stall_after=10, stalls=3)
    server = await DemoServer(record_delivered=True, seed=13, rate=200, faults=faults).start()
    async with recording(
        server, db_path, stale_after=0.3, backoff_initial=30.0, backoff_max=30.0
    ) as ingest:
        await wait_until(lambda: ingest.feed.counters.stale_reconnects >= 3, timeout=8)
        await settle(server, ingest)
    stale = [e for e in ingest.feed.events if "no data for 0.3s" in e]
    assert len(stale) >= 3  # each came back within a second despite a 30 s backoff floor
    await assert_exactly_once(server, db_path)


async def test_server_pings_are_answered_while_trades_stream(db_path):
    """Binance drops a client that does not pong; ours answers even at a high rate."""
    server = await DemoServer(record_delivered=True, seed=14, rate=2000, ping_interval=0.25).start()
    async with recording(server, db_path) as ingest:
        await asyncio.sleep(2.0)  # ~8 pings, each needing a pong within 0.25 s
        assert ingest.feed.counters.reconnects == 0
        assert server.counters.connections == 1
        await settle(server, ingest)
    await assert_exactly_once(server, db_path)
