"""The demo server's REST market data: Binance's paths, shapes, weights and bans, and a
history that is exactly the market's own trades, by real HTTP requests on loopback."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

import aiohttp
import numpy as np
import pytest
from conftest import TAPE_START_MS

from pairs_tui.feed import demo
from pairs_tui.feed.demo import EPOCH_MS, DemoServer, DemoTrade, SyntheticMarket
from pairs_tui.feed.demo_rest import DEMO_SYMBOLS

pytestmark = pytest.mark.server

MINUTE = 60_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def get(session: aiohttp.ClientSession, server: DemoServer, endpoint: str, **params):
    """(status, headers, decoded JSON) of GET /api/v3/<endpoint>?<params>."""
    query = {name: str(value) for name, value in params.items()}
    async with session.get(f"{server.rest_url}/api/v3/{endpoint}", params=query) as r:
        return r.status, r.headers, await r.json()


async def ok(session: aiohttp.ClientSession, server: DemoServer, endpoint: str, **params):
    status, _, body = await get(session, server, endpoint, **params)
    assert status == 200, body
    return body


def units(text: str) -> int:
    return int(text.replace(".", ""))


def text(n: int) -> str:
    return f"{n // 10**8}.{n % 10**8:08d}"


def resample(trades: list[DemoTrade], lo: int, step: int, count: int, close: str) -> list:
    """Binance's klines of these trades (all within [lo, lo + count * step)), by hand."""
    groups: dict[int, list[DemoTrade]] = defaultdict(list)
    for t in trades:
        groups[(t.time_ms - lo) // step].append(t)
    rows = []
    for j in range(count):
        bar, t0 = groups.get(j, []), lo + j * step
        takers = [t for t in bar if not t.buyer_maker]
        if bar:
            o, c = bar[0].price, bar[-1].price
            h = max(bar, key=lambda t: Decimal(t.price)).price
            low = min(bar, key=lambda t: Decimal(t.price)).price
            close = c
        else:
            o = h = low = c = close
        rows.append(
            [
                t0,
                o,
                h,
                low,
                c,
                text(sum(units(t.qty) for t in bar)),
                t0 + step - 1,
                sum(float(t.price) * float(t.qty) for t in bar),
                len(bar),
                text(sum(units(t.qty) for t in takers)),
                sum(float(t.price) * float(t.qty) for t in takers),
                "0",
            ]
        )
    return rows


def assert_klines(got: list, want: list) -> None:
    """Everything exactly, the quote volumes (float sums) to 1e-9."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        exact = [0, 1, 2, 3, 4, 5, 6, 8, 9, 11]
        assert [g[i] for i in exact] == [w[i] for i in exact], (g, w)
        assert isinstance(g[7], str) and isinstance(g[10], str)
        assert float(g[7]) == pytest.approx(w[7], rel=1e-9, abs=1e-8)
        assert float(g[10]) == pytest.approx(w[10], rel=1e-9, abs=1e-8)


def before(market: SyntheticMarket, symbol: str, time_ms: int) -> DemoTrade:
    """The last trade before `time_ms`."""
    span = 1_000
    while not (trades := market.trades_between(symbol, time_ms - span, time_ms)):
        span *= 4
    return trades[-1]


async def minute_with_room(seconds: float = 2.0) -> None:
    """Weight counts per calendar minute: start a check with `seconds` of it left."""
    left = MINUTE - wall_ms() % MINUTE
    if left < seconds * 1000:
        await asyncio.sleep(left / 1000 + 0.01)


# -- shapes ------------------------------------------------------------------------------------
async def test_ping_time_and_the_weight_header():
    await minute_with_room()
    async with DemoServer(seed=1) as server, aiohttp.ClientSession() as s:
        assert server.rest_url == f"http://127.0.0.1:{server.port}"
        status, headers, body = await get(s, server, "ping")
        assert (status, body, headers["X-MBX-USED-WEIGHT-1M"]) == (200, {}, "1")
        assert headers["Content-Type"].startswith("application/json")
        start = wall_ms()
        status, headers, body = await get(s, server, "time")
        assert status == 200 and list(body) == ["serverTime"]
        assert start <= body["serverTime"] <= wall_ms()
        assert headers["X-MBX-USED-WEIGHT-1M"] == "2"
        _, headers, _ = await get(s, server, "exchangeInfo")
        assert headers["X-MBX-USED-WEIGHT-1M"] == "22"  # weight 20
        await get(s, server, "klines", symbol="BTCUSDT", interval="1m", limit=1)  # 2
        await get(s, server, "aggTrades", symbol="BTCUSDT", limit=1)  # 4
        _, headers, _ = await get(s, server, "historicalTrades", symbol="BTCUSDT", limit=1)
        assert headers["X-MBX-USED-WEIGHT-1M"] == "53"  # 25
        _, headers, _ = await get(s, server, "klines", symbol="NOPEUSDT", interval="1m")
        assert headers["X-MBX-USED-WEIGHT-1M"] == "55"  # a refused request counts too
        assert server.used_weight == 55
        counters = server.rest_counters
        assert counters.weight == 55 and counters.rejected == 1
        assert counters.requests["/api/v3/klines"] == 2
        assert counters.requests["/api/v3/ping"] == 1


async def test_exchange_info_lists_the_universe():
    async with (
        DemoServer(seed=1, halted=frozenset({"XRPUSDT"})) as server,
        aiohttp.ClientSession() as s,
    ):
        info = await ok(s, server, "exchangeInfo")
        one = await ok(s, server, "exchangeInfo", symbol="ETHBTC")
        two = await ok(s, server, "exchangeInfo", symbols='["SOLUSDT","XRPUSDT"]')
        unknown = await get(s, server, "exchangeInfo", symbol="NOPEUSDT")
        unknown_in_list = await get(s, server, "exchangeInfo", symbols='["BTCUSDT","NOPEUSDT"]')
        lower = await get(s, server, "exchangeInfo", symbol="btcusdt")
    assert info["timezone"] == "UTC" and isinstance(info["serverTime"], int)
    assert info["exchangeFilters"] == []
    weight, *_, raw = info["rateLimits"]
    assert weight == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }
    assert raw == {
        "rateLimitType": "RAW_REQUESTS",
        "interval": "MINUTE",
        "intervalNum": 5,
        "limit": 61000,
    }
    symbols = {e["symbol"]: e for e in info["symbols"]}
    assert 55 <= len(symbols) <= 65 and set(demo._START_PRICES) <= set(symbols)
    assert {"XRPUSDT", "ADAUSDT", "DOGEUSDT", "LINKUSDT", "BNBBTC"} <= set(symbols)
    assert list(symbols) == list(DEMO_SYMBOLS)
    for name, entry in symbols.items():
        assert entry["baseAsset"] + entry["quoteAsset"] == name
        assert entry["quoteAsset"] in ("USDT", "BTC")
        assert entry["status"] == ("BREAK" if name == "XRPUSDT" else "TRADING")
        ticks = {f["filterType"]: f for f in entry["filters"]}
        assert Decimal(ticks["PRICE_FILTER"]["tickSize"]) > 0
    assert [e["symbol"] for e in one["symbols"]] == ["ETHBTC"]
    assert [(e["symbol"], e["status"]) for e in two["symbols"]] == [
        ("SOLUSDT", "TRADING"),
        ("XRPUSDT", "BREAK"),
    ]
    for status, _, body in (unknown, unknown_in_list):
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert lower[0] == 400 and lower[2]["code"] == -1100


async def test_bad_parameters_get_binance_errors():
    async with DemoServer(seed=1) as server, aiohttp.ClientSession() as s:
        answers = {
            "no symbol": await get(s, server, "klines", interval="1m"),
            "no interval": await get(s, server, "klines", symbol="BTCUSDT"),
            "interval": await get(s, server, "klines", symbol="BTCUSDT", interval="7m"),
            "limit": await get(s, server, "klines", symbol="BTCUSDT", interval="1m", limit="x"),
            "time": await get(s, server, "aggTrades", symbol="BTCUSDT", startTime="-5"),
            "order": await get(
                s, server, "klines", symbol="BTCUSDT", interval="1m", startTime=9, endTime=8
            ),
            "unknown": await get(s, server, "historicalTrades", symbol="NOPEUSDT"),
            "combination": await get(
                s, server, "aggTrades", symbol="BTCUSDT", fromId=5, startTime=TAPE_START_MS
            ),
            "symbols": await get(s, server, "exchangeInfo", symbols='["BTCUSDT"'),
        }
        assert server.rest_counters.rejected == len(answers)
    codes = {what: (status, body["code"]) for what, (status, _, body) in answers.items()}
    assert codes == {
        "no symbol": (400, -1102),
        "no interval": (400, -1102),
        "interval": (400, -1120),
        "limit": (400, -1100),
        "time": (400, -1100),
        "order": (400, -1023),
        "unknown": (400, -1121),
        "combination": (400, -1128),
        "symbols": (400, -1100),
    }
    assert answers["interval"][2] == {"code": -1120, "msg": "Invalid interval."}
    assert "'symbol'" in answers["no symbol"][2]["msg"]


# -- klines --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("symbol", "interval", "step", "rate", "bars"),
    [
        ("ETHUSDT", "1s", 1_000, 2_000, 15),  # ~2 trades a ms, both sides: ties for high/low
        ("BTCUSDT", "1s", 1_000, 20, 300),
        ("ETHBTC", "1m", MINUTE, 20, 45),
        ("XRPUSDT", "5m", 5 * MINUTE, 20, 16),
    ],
)
async def test_klines_are_the_trades_resampled(symbol, interval, step, rate, bars):
    start = TAPE_START_MS + 123_456  # not an open: the first kline opens after it
    lo = -(-start // step) * step
    end = lo + (bars - 1) * step + step // 3  # inside the last bar: it is included
    async with DemoServer(seed=4, rate=rate) as server, aiohttp.ClientSession() as s:
        params = {"symbol": symbol, "interval": interval, "startTime": start, "endTime": end}
        got = await ok(s, server, "klines", **params, limit=1000)
        limited = await ok(s, server, "klines", **params, limit=bars // 2)
    market = SyntheticMarket(seed=4, rate=rate)
    trades = market.trades_between(symbol, lo, lo + bars * step)
    assert_klines(got, resample(trades, lo, step, bars, before(market, symbol, lo).price))
    assert limited == got[: bars // 2]  # startTime: the oldest first


async def test_an_interval_without_trades_has_a_kline_at_the_previous_close():
    rate = 0.05  # a trade every 20 s: most 1s klines are empty
    lo = TAPE_START_MS + 3_600_000
    async with DemoServer(seed=5, rate=rate) as server, aiohttp.ClientSession() as s:
        got = await ok(s, server, "klines", symbol="SOLUSDT", interval="1s", startTime=lo)
        first = await ok(s, server, "klines", symbol="SOLUSDT", interval="1m", startTime=0)
    market = SyntheticMarket(seed=5, rate=rate)
    trades = market.trades_between("SOLUSDT", lo, lo + 500_000)
    want = resample(trades, lo, 1_000, 500, before(market, "SOLUSDT", lo).price)
    assert_klines(got, want)  # 500 by default
    empty = [(prev, row) for prev, row in itertools.pairwise(got) if row[8] == 0]
    assert len(empty) > 400 and any(prev[8] > 0 for prev, _ in empty)
    for prev, row in empty:
        assert row[1:5] == [prev[4]] * 4 and row[5] == row[9] == "0.00000000"
        assert row[7] == row[10] == "0.00000000"
    # the history begins with the bar of the symbol's first trade (trade 0)
    assert first[0][0] == EPOCH_MS and first[0][8] > 0


async def test_the_last_kline_is_the_bar_still_forming():
    market = SyntheticMarket(seed=2)
    async with DemoServer(seed=2) as server, aiohttp.ClientSession() as s:
        start = wall_ms()
        rows = await ok(s, server, "klines", symbol="BNBUSDT", interval="1m", limit=3)
        end = wall_ms()
    last = rows[-1]
    assert last[0] in (start // MINUTE * MINUTE, end // MINUTE * MINUTE)
    assert [r[0] for r in rows] == [last[0] - 2 * MINUTE, last[0] - MINUTE, last[0]]
    lo = rows[0][0]
    trades = market.trades_between("BNBUSDT", lo, end + 1)
    n = sum(r[8] for r in rows)  # the server had the trades before its clock: a prefix
    assert n == len(trades) or trades[n].time_ms >= start
    assert_klines(rows, resample(trades[:n], lo, MINUTE, 3, before(market, "BNBUSDT", lo).price))
    assert last[6] == last[0] + MINUTE - 1  # the close time of the bar, not of its trades


async def test_klines_pages_join_without_a_gap_or_a_repeat():
    lo = TAPE_START_MS + 7 * MINUTE
    async with (
        DemoServer(seed=6) as one,
        DemoServer(seed=6) as other,  # a cache of its own
        aiohttp.ClientSession() as s,
    ):
        whole = await ok(s, one, "klines", symbol="ETHUSDT", interval="1m", startTime=lo)
        assert len(whole) == 500
        asked = wall_ms()
        recent = await ok(s, other, "klines", symbol="ETHUSDT", interval="1m", limit=7)
        now = wall_ms()
        assert recent[-1][0] in (asked // MINUTE * MINUTE, now // MINUTE * MINUTE)  # forming
        assert [r[0] for r in recent] == [recent[-1][0] - k * MINUTE for k in range(6, -1, -1)]
        forward: list = []
        start = lo
        while len(forward) < 500:
            page = await ok(
                s, other, "klines", symbol="ETHUSDT", interval="1m", startTime=start, limit=170
            )
            forward += page
            start = page[-1][0] + 1  # the next open after the last
        backward: list = []
        end = whole[-1][0]
        while len(backward) < 500:
            page = await ok(
                s, one, "klines", symbol="ETHUSDT", interval="1m", endTime=end, limit=130
            )
            backward = page + backward
            end = page[0][0] - 1
    assert forward[:500] == whole
    assert backward[-500:] == whole


# -- trades --------------------------------------------------------------------------------
async def test_aggregate_trades_are_the_trades_grouped():
    rate, symbol = 2_000, "BTCUSDT"
    start = TAPE_START_MS + 10_000
    end = start + 999  # inclusive
    market = SyntheticMarket(seed=8, rate=rate)
    trades = market.trades_between(symbol, start, end + 1)
    by_id = {t.trade_id: t for t in trades}
    async with DemoServer(seed=8, rate=rate) as server, aiohttp.ClientSession() as s:
        params = {"symbol": symbol, "startTime": start, "endTime": end}
        aggs = await ok(s, server, "aggTrades", **params, limit=1000)
        rest = await ok(s, server, "aggTrades", symbol=symbol, fromId=aggs[-1]["a"] + 1)
        newest = await ok(s, server, "aggTrades", symbol=symbol, endTime=end, limit=5)
        multi = next(a for a in aggs if a["l"] > a["f"])
        inside = await ok(s, server, "aggTrades", symbol=symbol, fromId=multi["f"] + 1, limit=1)
        hist = await ok(s, server, "historicalTrades", symbol=symbol, fromId=aggs[0]["f"])
        recent = await ok(s, server, "historicalTrades", symbol=symbol, limit=20)
        latest = await ok(s, server, "aggTrades", symbol=symbol, limit=20)
        now = wall_ms()
    assert len(aggs) == 1000 and aggs[0]["f"] == trades[0].trade_id
    whole = aggs + [a for a in rest if a["l"] <= trades[-1].trade_id]
    assert whole[-1]["l"] == trades[-1].trade_id  # rest goes on after: no aggregate is cut
    assert [a["f"] for a in whole[1:]] == [a["l"] + 1 for a in whole[:-1]]  # no gap, no repeat
    for a in whole:
        assert set(a) == {"a", "p", "q", "f", "l", "T", "m", "M"} and a["M"] is True
        assert a["a"] == a["f"] <= a["l"]
        members = [by_id[i] for i in range(a["f"], a["l"] + 1)]
        assert {(t.time_ms, t.price, t.buyer_maker) for t in members} == {(a["T"], a["p"], a["m"])}
        assert units(a["q"]) == sum(units(t.qty) for t in members)  # exact
        after = by_id.get(a["l"] + 1)
        assert after is None or (after.time_ms, after.buyer_maker) != (a["T"], a["m"])
    assert sum(a["l"] > a["f"] for a in whole) > 100  # busy: many trades share a ms and side
    assert newest == whole[-5:]  # endTime only: the newest up to it
    assert inside[0] == whole[whole.index(multi) + 1]  # from inside one: the next one
    # historicalTrades: the same trades, one by one
    assert len(hist) == 500  # the default limit
    for h, t in zip(hist, trades, strict=False):
        assert (h["id"], h["price"], h["qty"], h["time"], h["isBuyerMaker"]) == (
            t.trade_id,
            t.price,
            t.qty,
            t.time_ms,
            t.buyer_maker,
        )
        exact = (Decimal(t.price) * Decimal(t.qty)).quantize(Decimal("1e-8"), ROUND_HALF_UP)
        assert h["quoteQty"] == f"{exact:.8f}" and h["isBestMatch"] is True
    # neither id nor time: the most recent, before the server's clock
    assert [h["id"] for h in recent] == list(range(recent[0]["id"], recent[0]["id"] + 20))
    assert now - 5_000 < recent[-1]["time"] < now
    assert [a["f"] for a in latest[1:]] == [a["l"] + 1 for a in latest[:-1]]
    assert latest[-1]["l"] >= recent[-1]["id"] and latest[-1]["T"] < now  # asked after


# -- weights and bans ------------------------------------------------------------------------
async def test_over_the_weight_limit_429_then_a_ban_418():
    await minute_with_room()
    async with DemoServer(seed=1, weight_limit=10) as server, aiohttp.ClientSession() as s:
        used = []
        for _ in range(5):
            status, headers, _ = await get(s, server, "klines", symbol="BTCUSDT", interval="1s")
            assert status == 200
            used.append(headers["X-MBX-USED-WEIGHT-1M"])
        assert used == ["2", "4", "6", "8", "10"]
        asked = wall_ms()
        status, headers, body = await get(s, server, "ping")  # 1 more: over the limit
        assert status == 429 and body["code"] == -1003 and "request weight" in body["msg"]
        assert headers["X-MBX-USED-WEIGHT-1M"] == "10"
        to_next_minute = math.ceil((MINUTE - asked % MINUTE) / 1000)
        assert int(headers["Retry-After"]) in (to_next_minute, to_next_minute - 1)
        status, headers, body = await get(s, server, "time")  # before Retry-After: banned
        assert status == 418 and body["code"] == -1003 and "banned" in body["msg"]
        assert 118 <= int(headers["Retry-After"]) <= 120
        status, headers, _ = await get(s, server, "ping")  # and it lasts
        assert status == 418 and int(headers["Retry-After"]) <= 120
        counters = server.rest_counters
        assert (counters.too_many, counters.banned, counters.weight) == (1, 2, 10)
        assert counters.requests == {"/api/v3/klines": 5, "/api/v3/ping": 2, "/api/v3/time": 1}


async def test_a_long_history_does_not_hold_up_the_event_loop():
    async with DemoServer(seed=3) as server, aiohttp.ClientSession() as s:
        params = {"symbol": "BTCUSDT", "interval": "5m", "limit": 1000}  # 3.5 days, 6 M trades
        long = asyncio.create_task(ok(s, server, "klines", **params))
        await asyncio.sleep(0.05)
        assert await ok(s, server, "ping") == {}
        assert not long.done()  # the ping was answered while the klines were computed
        assert len(await long) == 1000


# -- the market's spread, vectorised ---------------------------------------------------------
def loop_segment(tape: demo._Tape, c: int) -> np.ndarray:
    """`_Tape.segment` as it was: the OU recursion as a Python loop (the reference)."""
    first = (c << demo._SEGMENT_BITS) - demo._SPREAD_WARMUP
    index = np.arange(first, (c + 1) << demo._SEGMENT_BITS)
    shocks = (demo._normal(demo._hash(tape._shock, index)) * demo._SPREAD_SHOCK).tolist()
    u = demo._uniform(demo._hash(tape._kick, index))
    at = np.flatnonzero(u < demo._KICK_P)
    size = (demo._uniform(demo._hash(tape._kick_size, index[at])) + 2.0) * demo._SPREAD_STD
    kicks = np.where(u[at] < demo._KICK_P / 2, -size, size).tolist()
    return np.array(loop(shocks, at.tolist(), kicks)[demo._SPREAD_WARMUP :])


def loop(shocks: list[float], at: list[int], kicks: list[float]) -> list[float]:
    out: list[float] = []
    x, phi, done = 0.0, demo._SPREAD_PHI, 0
    for pos, kick in zip([*at, len(shocks)], [*kicks, 0.0], strict=True):
        for s in shocks[done:pos]:
            x = phi * x + s
            out.append(x)
        if pos < len(shocks):  # the kick replaces the state
            x = kick
            out.append(x)
        done = pos + 1
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


def test_the_vectorised_spread_is_the_loop_bit_for_bit():
    """The history's spread (lfilter) is the stream's (the loop), float for float."""
    rng = random.Random(11)
    for seed, symbol in [(1, "BTCUSDT"), (2, "ETHUSDT"), (9, "DOGEUSDT")]:
        common = demo._CommonWalk(seed)
        filtered = demo._Tape(seed, symbol, common, filtered=True)
        looped = demo._Tape(seed, symbol, common)
        now_segment = (wall_ms() - EPOCH_MS) // demo.STEP_MS >> demo._SEGMENT_BITS
        for c in [0, 1, now_segment, *rng.sample(range(-1000, 10**6), 3)]:
            want = loop_segment(filtered, c)
            assert same_bits(filtered.segment(c), want), (seed, symbol, c)
            assert same_bits(looped.segment(c), want), (seed, symbol, c)
    # kicks back to back, at the first and the last step, and none at all
    shocks = np.array([rng.gauss(0, 1e-4) for _ in range(500)])
    for at in ([0, 1, 2, 50, 51, 499], [], [499], [0], rng.sample(range(500), 40)):
        at = sorted(at)
        kicks = np.array([rng.choice((-1, 1)) * rng.uniform(3e-3, 4.5e-3) for _ in at])
        want = np.array(loop(shocks.tolist(), at, kicks.tolist()))
        for filtered in (True, False):
            got = demo._kicked_ou(shocks, np.array(at, dtype=np.intp), kicks, filtered)
            assert same_bits(got, want), (at, filtered)
