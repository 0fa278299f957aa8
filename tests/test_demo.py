"""The embedded demo feed: Binance's protocol on loopback, and a believable market that
is a function of the seed and the clock, so that runs continue each other and two runs at
once send the very same trades."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import sqlite3
import subprocess
import time

import numpy as np
import pytest
from conftest import TAPE_START_MS, cli_env, pairs_tui_cmd
from statsmodels.tsa.stattools import coint
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pairs_tui.analytics import half_life
from pairs_tui.feed.demo import DEFAULT_SEED, EPOCH_MS, DemoServer, DemoTrade, SyntheticMarket

pytestmark = pytest.mark.server

PAIR = ("BTCUSDT", "ETHUSDT")


async def recv_json(ws) -> dict:
    return json.loads(await ws.recv())


async def test_combined_stream_wraps_payloads():
    async with DemoServer(seed=1, rate=200) as server:
        url = f"{server.url}/stream?streams=btcusdt@trade/ethusdt@aggTrade"
        async with connect(url, proxy=None) as ws:
            seen = {}
            while len(seen) < 2:
                frame = await recv_json(ws)
                seen[frame["stream"]] = frame["data"]
    trade, agg = seen["btcusdt@trade"], seen["ethusdt@aggTrade"]
    assert trade["e"] == "trade" and trade["s"] == "BTCUSDT" and isinstance(trade["p"], str)
    assert set(trade) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
    assert agg["e"] == "aggTrade" and agg["f"] <= agg["l"] and set(agg) >= {"a", "f", "l", "T"}


async def test_raw_stream_and_subscribe_replies():
    async with DemoServer(seed=1, rate=200) as server:
        async with connect(f"{server.url}/ws/btcusdt@trade", proxy=None) as ws:
            frame = await recv_json(ws)
            assert "stream" not in frame and frame["s"] == "BTCUSDT"
        async with connect(f"{server.url}/ws", proxy=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}))
            frames = [await recv_json(ws) for _ in range(3)]
            assert {"result": None, "id": 1} in frames
            assert any(f.get("s") == "ETHUSDT" for f in frames)
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
            while (reply := await recv_json(ws)).get("id") != 3:
                pass
            assert reply == {"result": ["ethusdt@trade"], "id": 3}


async def test_unknown_endpoint_is_404():
    async with DemoServer(seed=1) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{server.url}/api/v3/trades", proxy=None):
                pass
    assert info.value.response.status_code == 404


def fixed(seed: int = 1, rate: float = 20, start_ms: int = TAPE_START_MS, symbols=PAIR):
    market = SyntheticMarket(seed=seed, rate=rate, start_ms=start_ms)
    for symbol in symbols:
        market.add(symbol)
    return market


def by_symbol(trades: list[DemoTrade]) -> dict[str, list[DemoTrade]]:
    out: dict[str, list[DemoTrade]] = {}
    for t in trades:
        out.setdefault(t.symbol, []).append(t)
    return out


def test_seed_makes_the_tape_deterministic_and_the_default_seed_is_fixed():
    symbols = (*PAIR, "FOOUSDT")
    assert fixed(5, symbols=symbols).advance_to(60) == fixed(5, symbols=symbols).advance_to(60)
    five, six = fixed(5).advance_to(60), fixed(6).advance_to(60)
    assert [t.price for t in five] != [t.price for t in six]
    # without a seed: the same market in every run (and --seed N picks another)
    now = time.time_ns() // 1_000_000
    first = SyntheticMarket().trades_between("BTCUSDT", now - 5_000, now)
    time.sleep(0.05)
    again = SyntheticMarket(seed=None).trades_between("BTCUSDT", now - 5_000, now)
    assert first == again and len(first) > 50 and DemoServer().market.seed == DEFAULT_SEED


def test_price_ranges_arrival_rate_and_ids():
    market = fixed(8, symbols=(*PAIR, "FOOUSDT"))
    tape = by_symbol(market.advance_to(120))
    first = {s: float(trades[0].price) for s, trades in tape.items()}
    assert 60_000 <= first["BTCUSDT"] <= 100_000
    assert 2_000 <= first["ETHUSDT"] <= 4_000
    assert 70 <= first["FOOUSDT"] <= 140  # anything else: around 100
    for trades in tape.values():
        ids = [t.trade_id for t in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive, like Binance
        times = [t.time_ms for t in trades]
        assert times == sorted(times) and times[0] >= TAPE_START_MS  # in order, in the span
        assert times[-1] < TAPE_START_MS + 120_000
        assert abs(len(ids) - 20 * 120) <= 32  # 20/s: 16 arrivals in every 0.8 s slot
        per_second = np.bincount([(t - TAPE_START_MS) // 1000 for t in times])
        assert per_second.std() > 1  # yet not a metronome: they bunch and thin out


def test_prices_stay_in_their_ranges_for_years():
    market = SyntheticMarket(seed=3)
    hours = range(0, 3 * 365 * 24, 83)  # 3 years, a price every 3.5 days (4 ms each)
    for symbol, (low, high) in {"BTCUSDT": (60e3, 100e3), "ETHUSDT": (2e3, 4e3)}.items():
        prices = np.array([market.price_at(symbol, EPOCH_MS + h * 3_600_000) for h in hours])
        assert np.mean((low <= prices) & (prices <= high)) > 0.97, symbol
        assert low * 0.8 < prices.min() and prices.max() < high * 1.2, symbol


def test_two_markets_started_apart_give_the_same_trades_where_they_overlap():
    """Two processes at once: whenever each started, and however often it advanced, the
    trades of a moment are the same (ids, times, prices, quantities, sides)."""
    early, late = fixed(start_ms=TAPE_START_MS), fixed(start_ms=TAPE_START_MS + 7_777)
    ticks = [early.advance_to(k * 0.02) for k in range(1, 1_001)]  # 20 s in server ticks
    one = [t for tick in ticks for t in tick]
    other = late.advance_to(20 - 7.777)
    overlap = [t for t in one if t.time_ms >= TAPE_START_MS + 7_777]
    assert len(other) > 400 and by_symbol(overlap) == by_symbol(other)
    # and any interval on demand (the REST history to come) is that same tape
    for symbol in PAIR:
        mine = [t for t in one if t.symbol == symbol]
        assert early.trades_between(symbol, TAPE_START_MS, TAPE_START_MS + 20_000) == mine
        cuts = sorted(random.Random(1).sample(range(TAPE_START_MS, TAPE_START_MS + 20_000), 9))
        edges = [TAPE_START_MS, *cuts, TAPE_START_MS + 20_000]
        pieces = [late.trades_between(symbol, a, b) for a, b in itertools.pairwise(edges)]
        assert [t for piece in pieces for t in piece] == mine


def test_a_restart_continues_the_market_without_a_jump():
    first = fixed()
    before = by_symbol(first.advance_to(30))
    later = fixed(start_ms=TAPE_START_MS + 30_000)  # a new process, started as it stopped
    after = by_symbol(later.advance_to(30))
    for symbol in PAIR:
        last, nxt = before[symbol][-1], after[symbol][0]
        assert nxt.trade_id == last.trade_id + 1  # no gap, no repeat
        assert abs(float(nxt.price) / float(last.price) - 1) < 0.002  # same path, no jump
        assert nxt == first.trades_between(symbol, nxt.time_ms, nxt.time_ms + 1)[0]
        for t in range(TAPE_START_MS, TAPE_START_MS + 60_000, 1_234):
            assert first.price_at(symbol, t) == later.price_at(symbol, t)
    # and a restart an hour later meets the same prices as one running all along
    hour = TAPE_START_MS + 3_600_000
    tapes = [first.trades_between(symbol, hour, hour + 5_000) for symbol in PAIR]
    merged = sorted(itertools.chain(*tapes), key=lambda t: t.time_ms)
    assert fixed(start_ms=hour).advance_to(5) == merged


def test_the_rate_changes_the_trades_not_the_prices():
    slow, fast = SyntheticMarket(rate=20), SyntheticMarket(rate=2_500)
    for t in range(TAPE_START_MS, TAPE_START_MS + 10_000, 77):
        assert slow.price_at("ETHUSDT", t) == fast.price_at("ETHUSDT", t)
    trades = fast.trades_between("ETHUSDT", TAPE_START_MS, TAPE_START_MS + 2_000)
    assert 4_900 < len(trades) < 5_100
    for t in trades[::97]:  # each trade is half the bid-ask spread off the mid
        assert abs(float(t.price) / slow.price_at("ETHUSDT", t.time_ms) - 1) < 1e-4
    # ids: trade n at about n / rate seconds after EPOCH_MS, far below 2**53 at any rate
    year_2100 = 4_102_444_800_000
    assert SyntheticMarket(rate=100_000).id_at("BTCUSDT", year_2100) < 2**50
    assert slow.id_at("BTCUSDT", TAPE_START_MS) == pytest.approx(
        (TAPE_START_MS - EPOCH_MS) / 1000 * 20, abs=16
    )


def test_generating_a_busy_tape_is_cheap():
    market = fixed(rate=2_000)
    market.advance_to(0.02)
    start = time.process_time()
    produced = sum(len(market.advance_to(k * 0.02)) for k in range(2, 502))  # 10 s
    cpu = time.process_time() - start
    assert produced > 39_000 and cpu < 1.5  # about 0.13 s on a 2-core machine


async def collect(url: str, frames: dict, stop: asyncio.Event) -> None:
    async with connect(f"{url}/stream?streams=btcusdt@trade/ethusdt@trade", proxy=None) as ws:
        while not stop.is_set():
            with_timeout = await asyncio.wait_for(ws.recv(), 5)
            data = json.loads(with_timeout)["data"]
            frames[(data["s"], data["t"])] = data


async def test_two_servers_started_apart_send_the_same_trades():
    """Two demo servers, the second started 0.6 s after the first: every trade both sent
    is the same trade, and both are the market of the wall clock that any process can
    compute afterwards."""
    stop = asyncio.Event()
    one: dict = {}
    other: dict = {}
    started = time.time_ns() // 1_000_000
    async with DemoServer(rate=200) as first:
        task = asyncio.create_task(collect(first.url, one, stop))
        await asyncio.sleep(0.6)
        async with DemoServer(rate=200) as second:
            other_task = asyncio.create_task(collect(second.url, other, stop))
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(task, other_task)
    both = sorted(set(one) & set(other))
    assert len(both) > 200 and len(one) > len(both) + 150
    assert all(one[key] == other[key] for key in both)
    now = time.time_ns() // 1_000_000
    replay = SyntheticMarket(rate=200)
    for symbol in PAIR:
        sent = sorted((f for f in one.values() if f["s"] == symbol), key=lambda f: f["t"])
        assert started - 1_000 < sent[0]["T"] < now  # the wall clock's market, then
        again = replay.trades_between(symbol, sent[0]["T"], sent[-1]["T"] + 1)
        again = [t for t in again if sent[0]["t"] <= t.trade_id <= sent[-1]["t"]]
        assert [(t.trade_id, t.time_ms, t.price, t.qty, t.buyer_maker) for t in again] == [
            (f["t"], f["T"], f["p"], f["q"], f["m"]) for f in sent
        ]


def test_two_demo_recorders_at_once_store_each_trade_once_and_no_gap(tmp_path, isolated_home):
    """Two `record --demo` processes on one store at the same time: they send themselves
    the very same trades, so the store holds one consecutive tape, each trade once, with
    nothing missing and no gap recorded. (Commits are held for 1.5 s so that the second
    starts before the first has committed: a recorder continues id tracking from the
    store's last id, so one started after the other has committed would record the ids
    between that id and its own first trade as a gap, though the other stores them.)"""
    db = tmp_path / "shared.db"
    config = tmp_path / "slow-commits.toml"
    config.write_text("[store]\nflush_interval = 1.5\n")
    argv = pairs_tui_cmd(
        "record", "btcusdt", "ethusdt", "--demo", "--duration", "3", "--db", str(db)
    )
    argv += ["--config", str(config)]
    env = cli_env(isolated_home)
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert "(seed 1)" in out and "gaps 0, duplicates 0" in out, out
    stored: dict[str, list[int]] = {}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM gaps").fetchall() == []
        for symbol in PAIR:
            rows = conn.execute(
                "SELECT trade_id, ts_us, price, qty, buyer_maker FROM trades JOIN series"
                " ON series.id = trades.series WHERE symbol = ? ORDER BY trade_id",
                (symbol,),
            ).fetchall()
            ids = stored[symbol] = [r[0] for r in rows]
            assert len(ids) > 40 and ids == list(range(ids[0], ids[-1] + 1)), symbol
            # every stored row, whichever process wrote it, is the market's own trade
            start_ms, end_ms = rows[0][1] // 1000, rows[-1][1] // 1000 + 1
            tape = SyntheticMarket().trades_between(symbol, start_ms, end_ms)
            tape = [t for t in tape if ids[0] <= t.trade_id <= ids[-1]]
            want = [(t.trade_id, t.time_ms * 1000, t.price, t.qty, t.buyer_maker) for t in tape]
            assert want == [(i, ts, p, q, bool(m)) for i, ts, p, q, m in rows], symbol
    each = [int(n) for out, _ in outputs for n in re.findall(r"BTCUSDT (\d+)", out)]
    assert len(each) == 2 and sum(each) > len(stored["BTCUSDT"])  # both recorded them


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_are_cointegrated_and_z_swings_every_minute(seed):
    market = fixed(seed)
    closes: dict[str, dict[int, float]] = {"BTCUSDT": {}, "ETHUSDT": {}}
    for t in market.advance_to(600):
        closes[t.symbol][(t.time_ms - market.start_ms) // 1000] = float(t.price)
    secs = sorted(set(closes["BTCUSDT"]) & set(closes["ETHUSDT"]))
    a = np.log([closes["BTCUSDT"][s] for s in secs])
    b = np.log([closes["ETHUSDT"][s] for s in secs])
    assert coint(a, b)[1] < 0.05
    beta, alpha = np.polyfit(b, a, 1)
    spread = a - beta * b - alpha
    assert 3 < half_life(spread) < 30  # seconds, on 1s bars: the spread's 12 s, roughly
    w = 20
    windows = np.lib.stride_tricks.sliding_window_view(spread, w)
    z = (spread[w - 1 :] - windows.mean(axis=1)) / windows.std(axis=1, ddof=1)
    per_minute = [np.abs(z[i : i + 60]).max() for i in range(0, len(z) - 60, 60)]
    assert min(per_minute) > 2.0
