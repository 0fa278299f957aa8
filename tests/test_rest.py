"""The REST client against fault servers on loopback: Binance's weights, 429 with
Retry-After, 418, 5xx, malformed answers, a slow server and no server at all."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from pairs_tui.feed.rest import (
    WEIGHT_HEADER,
    Banned,
    HistoryUnavailable,
    Listing,
    RestClient,
    UnknownSymbol,
)

pytestmark = pytest.mark.server

KLINE = [1_700_000_000_000, "1.0", "2.0", "0.5", "1.5", "10.0", 1_700_000_059_999]
KLINE += ["15.0", 7, "5.0", "7.5", "0"]


class FaultServer:
    """A Binance-shaped HTTP server whose answers the test scripts, one per request;
    it records when each request arrived (loop time)."""

    def __init__(self) -> None:
        self.script: list[web.Response | float] = []  # a float: sleep that long first
        self.arrivals: list[tuple[float, str]] = []
        self.used = 0  # what X-MBX-USED-WEIGHT-1M says
        self.weight_header = WEIGHT_HEADER
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append((asyncio.get_running_loop().time(), request.path))
        answer = self.script.pop(0) if self.script else ok([KLINE])
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            answer = ok([KLINE])
        answer.headers[self.weight_header] = str(self.used)
        return answer

    async def __aenter__(self) -> FaultServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def ok(body: object) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


def refusal(status: int, code: int, msg: str, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = json.dumps({"code": code, "msg": msg}).encode()
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def client(url: str, **options) -> RestClient:
    return RestClient(url, timeout=options.pop("timeout", 2.0), backoff_initial=0.05, **options)


async def klines(rest: RestClient):
    return await rest.klines("BTCUSDT", "1m", start_ms=0, end_ms=1)


async def test_a_kline_is_read_as_binance_sends_it():
    async with FaultServer() as server, client(server.url) as rest:
        [k] = await klines(rest)
    assert (k.open_ms, k.open, k.high, k.close, k.volume, k.trades) == (
        1_700_000_000_000, "1.0", "2.0", "1.5", "10.0", 7,
    )  # fmt: skip
    assert rest.spent.weight == 2 and rest.spent.requests == 1


async def test_429_waits_its_retry_after_and_sends_nothing_before():
    async with FaultServer() as server, client(server.url) as rest:
        server.script = [refusal(429, -1003, "Too much request weight used", "2")]
        [k] = await klines(rest)
    (first, _), (second, _) = server.arrivals
    assert second - first >= 2.0  # nothing in between: no 418
    assert k.trades == 7 and rest.spent.waited_s >= 1.9


async def test_headers_are_read_whatever_their_case():
    """HTTP header names are case-insensitive; servers and proxies send them lowercase."""
    async with FaultServer() as server, client(server.url) as rest:
        server.weight_header = WEIGHT_HEADER.lower()
        server.script = [refusal(429, -1003, "Too much request weight used")]
        server.script[0].headers["retry-after"] = "2"
        await klines(rest)  # waited the 2 s it was told, not the 60 s of no Retry-After
    (first, _), (second, _) = server.arrivals
    assert 2.0 <= second - first < 10
    loop = asyncio.get_running_loop()
    boundary = loop.time() + 1.0
    clock = lambda: 600.0 + (loop.time() - boundary)  # noqa: E731
    async with FaultServer() as server, client(server.url, clock=clock) as rest:
        server.weight_header = WEIGHT_HEADER.lower()
        server.used = 4799
        await klines(rest)
        server.used = 0
        await klines(rest)
    assert server.arrivals[0][0] < boundary <= server.arrivals[1][0]


def test_a_request_heavier_than_the_budget_is_refused_not_waited_for_forever():
    async def ask() -> None:
        async with client("http://127.0.0.1:9") as rest:
            rest.weight_limit = 30  # 80 % is 24: historicalTrades weighs 25
            await rest.historical_trades("BTCUSDT", 1)

    with pytest.raises(HistoryUnavailable, match="exceeds the budget"):
        asyncio.run(ask())


async def test_418_stops_every_request_after_it():
    async with FaultServer() as server, client(server.url) as rest:
        server.script = [refusal(418, -1003, "Way too much request weight used", "7200")]
        with pytest.raises(Banned, match=r"banned this IP for 7200s \(HTTP 418"):
            await klines(rest)
        with pytest.raises(Banned):
            await rest.agg_trades("BTCUSDT", start_ms=0, end_ms=1)
    assert len(server.arrivals) == 1  # the second was never sent


async def test_5xx_is_retried_with_backoff_then_reported():
    async with FaultServer() as server, client(server.url, attempts=3) as rest:
        server.script = [web.Response(status=502), web.Response(status=503)]
        [k] = await klines(rest)  # two failures, then an answer
        assert k.trades == 7 and rest.spent.retries == 2
        server.script = [web.Response(status=500) for _ in range(3)]
        with pytest.raises(HistoryUnavailable, match=r"/api/v3/klines: HTTP 500"):
            await klines(rest)


async def test_malformed_answers_are_refused_with_the_reason():
    async with FaultServer() as server, client(server.url) as rest:
        server.script = [web.Response(body=b"[[1, 2", content_type="application/json")]
        with pytest.raises(HistoryUnavailable, match="malformed answer"):
            await klines(rest)
        server.script = [ok([["not", "a", "kline"]])]
        with pytest.raises(HistoryUnavailable, match="malformed answer"):
            await klines(rest)


async def test_a_slow_server_times_out_and_says_so():
    async with FaultServer() as server, client(server.url, timeout=0.3, attempts=2) as rest:
        server.script = [1.0, 1.0]
        with pytest.raises(HistoryUnavailable, match=r"no answer in 0\.3s"):
            await klines(rest)


async def test_no_server_is_history_unavailable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}", attempts=2) as rest:
        with pytest.raises(HistoryUnavailable, match="Connect"):
            await klines(rest)


async def test_the_weight_budget_holds_requests_until_the_next_minute():
    """80 % of the limit exchangeInfo states: of 100 per minute, exchangeInfo (20) and
    30 klines calls (2 each) spend the 80; the next waits for the next minute."""
    loop = asyncio.get_running_loop()
    boundary = loop.time() + 1.5  # the next minute starts in 1.5 s on this clock
    clock = lambda: 600.0 + (loop.time() - boundary)  # noqa: E731
    info = {
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 100,
            }
        ],
        "symbols": [{"symbol": "BTCUSDT", "status": "TRADING"}],
    }
    async with FaultServer() as server, client(server.url, clock=clock) as rest:
        server.script = [ok(info)]
        listing = await rest.listing()
        assert listing.weight_limit == 100
        for _ in range(30):  # 20 + 30 * 2 = 80: the budget, spent
            await klines(rest)
        await klines(rest)
    assert all(t < boundary for t, _ in server.arrivals[:31])
    assert server.arrivals[31][0] >= boundary  # held back to the next minute


async def test_the_servers_count_of_used_weight_is_followed():
    """Another program on the same IP spent most of the minute: we wait."""
    loop = asyncio.get_running_loop()
    boundary = loop.time() + 1.0
    clock = lambda: 600.0 + (loop.time() - boundary)  # noqa: E731
    async with FaultServer() as server, client(server.url, clock=clock) as rest:
        server.used = 4799  # of 6000: 80 % is 4800
        await klines(rest)
        server.used = 0
        await klines(rest)
    assert server.arrivals[0][0] < boundary <= server.arrivals[1][0]


def test_an_unknown_symbol_names_the_closest_listed_ones():
    listing = Listing({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "XYZUSDT": "BREAK"}, 6000)
    with pytest.raises(
        UnknownSymbol, match=r"^unknown symbol BTCUSD on Binance; did you mean BTCUSDT\?$"
    ):
        listing.check(("BTCUSD", "ETHUSDT"))
    with pytest.raises(UnknownSymbol, match=r"^unknown symbol QQQQQQ on Binance$"):
        listing.check(("QQQQQQ",))
    assert listing.check(("BTCUSDT", "XYZUSDT")) == [
        "XYZUSDT is not trading on Binance now (status BREAK)"
    ]
