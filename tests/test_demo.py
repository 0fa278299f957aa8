"""The embedded demo feed: Binance's protocol on loopback and a believable market."""

from __future__ import annotations

import json

import numpy as np
import pytest
from statsmodels.tsa.stattools import coint
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pairs_tui.feed.demo import DemoServer, SyntheticMarket


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


def tape(seed: int, seconds: float = 60.0) -> list:
    market = SyntheticMarket(seed=seed, rate=20)
    market.add("BTCUSDT")
    market.add("ETHUSDT")
    market.add("FOOUSDT")
    return [
        (t.symbol, t.trade_id - market.start_ms * 1000, t.time_ms - market.start_ms, t.price, t.qty)
        for t in market.advance_to(seconds)
    ]


def test_seed_makes_the_tape_deterministic():
    assert tape(5) == tape(5)
    assert tape(5) != tape(6)


def test_start_prices_arrival_rate_and_ids():
    trades = tape(8, seconds=120)
    first = {}
    for symbol, _tid, _, price, _ in trades:
        first.setdefault(symbol, float(price))
    assert 60_000 <= first["BTCUSDT"] <= 100_000 * 1.01
    assert 2_000 * 0.99 <= first["ETHUSDT"] <= 4_000 * 1.01
    assert 95 <= first["FOOUSDT"] <= 105
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [tid for s, tid, *_ in trades if s == symbol]
        assert ids == list(range(len(ids)))  # consecutive, like Binance
        assert 20 * 120 * 0.85 < len(ids) < 20 * 120 * 1.15  # Poisson, about 20/s
    times = [t for _, _, t, _, _ in trades]
    assert times == sorted(times)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_are_cointegrated_and_z_swings_every_minute(seed):
    market = SyntheticMarket(seed=seed, rate=20)
    market.add("BTCUSDT")
    market.add("ETHUSDT")
    closes: dict[str, dict[int, float]] = {"BTCUSDT": {}, "ETHUSDT": {}}
    for t in market.advance_to(600):
        closes[t.symbol][(t.time_ms - market.start_ms) // 1000] = float(t.price)
    secs = sorted(set(closes["BTCUSDT"]) & set(closes["ETHUSDT"]))
    a = np.log([closes["BTCUSDT"][s] for s in secs])
    b = np.log([closes["ETHUSDT"][s] for s in secs])
    assert coint(a, b)[1] < 0.05
    beta, alpha = np.polyfit(b, a, 1)
    spread = a - beta * b - alpha
    w = 20
    windows = np.lib.stride_tricks.sliding_window_view(spread, w)
    z = (spread[w - 1 :] - windows.mean(axis=1)) / windows.std(axis=1, ddof=1)
    per_minute = [np.abs(z[i : i + 60]).max() for i in range(0, len(z) - 60, 60)]
    assert min(per_minute) > 2.0
