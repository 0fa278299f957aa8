"""Binance's REST market data (spot) on the demo server's port, for history at start.

The paths, parameters, JSON, status codes and error bodies are Binance's (`/api/v3/ping`,
`time`, `exchangeInfo`, `klines`, `aggTrades`, `historicalTrades`), and so is the request
weight: every answer carries `X-MBX-USED-WEIGHT-1M` (this server's weight used in the
current calendar minute); a request that would go over the limit gets HTTP 429 with
`Retry-After` (seconds to the next minute), and one that comes before that has passed
gets HTTP 418, a ban, also with `Retry-After`. The demo lists a fixed universe of real
Binance spot symbols (`DEMO_SYMBOLS`); any other is an invalid symbol here, as on Binance,
though the stream trades it. The history itself is `DemoHistory`'s, computed in a worker
thread so that the event loop (the stream) never waits for it.

Demo simplifications: intervals up to 1h only (`KLINE_INTERVALS`); a `limit` above the
maximum is taken as the maximum; unknown parameters are ignored; `GET /api/v3/trades` is
not served; an aggregate trade's id is its first trade's id (see `DemoHistory`)."""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Response

from pairs_tui.feed.demo import _START_PRICES, tape_constants
from pairs_tui.feed.demo_history import KLINE_INTERVALS, DemoHistory

# The symbols of the known price ranges, then well-known real Binance spot symbols: 60.
_USDT_BASES = (
    "XRP ADA DOGE TRX DOT LINK LTC BCH AVAX XLM ATOM UNI ETC FIL NEAR APT ARB OP INJ SUI AAVE "
    "ALGO VET ICP HBAR SHIB PEPE TON SEI TIA RUNE GRT SAND MANA AXS EGLD THETA XTZ NEO ZEC "
    "DASH CRV LDO STX IMX FET WLD"
)
_BTC_BASES = "BNB SOL XRP ADA LINK LTC DOT DOGE"
DEMO_SYMBOLS: tuple[str, ...] = (
    *_START_PRICES,
    *(f"{base}USDT" for base in _USDT_BASES.split()),
    *(f"{base}BTC" for base in _BTC_BASES.split()),
)
QUOTES = ("USDT", "BTC")
BAN_SECONDS = 120.0  # Binance bans for 2 minutes to 3 days: the demo for the least
_MINUTE_MS = 60_000
_LIMITS = {"klines": (500, 1000), "aggTrades": (500, 1000), "historicalTrades": (500, 1000)}
_INT = re.compile(r"[0-9]{1,20}")
_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")
_JSON = "application/json;charset=UTF-8"
_ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"]


@dataclass
class RestCounters:
    """What the REST side of a demo server answered, for tests."""

    requests: dict[str, int] = field(default_factory=dict)  # by path, e.g. "/api/v3/klines"
    weight: int = 0  # request weight used, all minutes together
    too_many: int = 0  # HTTP 429: over the weight limit
    banned: int = 0  # HTTP 418: asked again before Retry-After passed, or while banned
    rejected: int = 0  # HTTP 400: bad parameters, unknown symbols


class RestError(Exception):
    """A Binance error answer: HTTP status and `{"code": ..., "msg": ...}`."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _mandatory(name: str) -> RestError:
    return RestError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _illegal(name: str, legal: str) -> RestError:
    return RestError(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


Handler = Callable[[dict[str, str], int], Awaitable[bytes]]


class RestApi:
    """The REST endpoints of one demo server (one "IP": one weight count, one ban)."""

    def __init__(
        self,
        seed: int,
        rate: float,
        *,
        weight_limit: int = 6000,
        halted: frozenset[str] = frozenset(),
        ban_seconds: float = BAN_SECONDS,
        counters: RestCounters | None = None,
    ) -> None:
        self.seed = seed
        self.history = DemoHistory(seed, rate)
        self.weight_limit = weight_limit
        self.halted = frozenset(s.upper() for s in halted)
        self.ban_ms = round(ban_seconds * 1000)
        self.counters = counters if counters is not None else RestCounters()
        self._minute = 0  # the calendar minute `_used` counts
        self._used = 0
        self._retry_until = 0  # ms: a 429 said "not before"
        self._banned_until = 0  # ms
        self._listing: dict[str, dict[str, Any]] | None = None
        self._encoder = msgspec.json.Encoder()
        self.endpoints: dict[str, tuple[int, Handler]] = {
            "/api/v3/ping": (1, self._ping),
            "/api/v3/time": (1, self._time),
            "/api/v3/exchangeInfo": (20, self._exchange_info),
            "/api/v3/klines": (2, self._klines),
            "/api/v3/aggTrades": (4, self._agg_trades),
            "/api/v3/historicalTrades": (25, self._historical_trades),
        }

    def used_weight(self, now_ms: int | None = None) -> int:
        """The weight used in the current calendar minute."""
        now = _wall_ms() if now_ms is None else now_ms
        return self._used if now // _MINUTE_MS == self._minute else 0

    async def respond(self, path: str, query: str) -> Response:
        """The answer to `GET path?query` (path one of `endpoints`)."""
        weight, handler = self.endpoints[path]
        self.counters.requests[path] = self.counters.requests.get(path, 0) + 1
        now = _wall_ms()
        if now // _MINUTE_MS != self._minute:
            self._minute, self._used = now // _MINUTE_MS, 0
        if now < self._banned_until or now < self._retry_until:
            if now >= self._banned_until:  # asked again before Retry-After passed: a ban
                self._banned_until = now + self.ban_ms
            self.counters.banned += 1
            until = self._banned_until
            msg = (
                f"Way too much request weight used; IP banned until {until}. Please use "
                "WebSocket Streams for live updates to avoid bans."
            )
            return self._error(RestError(-1003, msg, 418), self._used, _seconds(until - now))
        if self._used + weight > self.weight_limit:
            self.counters.too_many += 1
            self._retry_until = (self._minute + 1) * _MINUTE_MS
            msg = (
                f"Too much request weight used; current limit is {self.weight_limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API."
            )
            wait = _seconds(self._retry_until - now)
            return self._error(RestError(-1003, msg, 429), self._used, wait)
        self._used += weight
        self.counters.weight += weight
        used = self._used  # as the request came: others may come while it is worked out
        params: dict[str, str] = {}
        for name, values in parse_qs(query, keep_blank_values=True).items():
            params[name] = values[0]
        try:
            body = await handler(params, now)
        except RestError as exc:
            self.counters.rejected += 1
            return self._error(exc, used)
        return self._answer(HTTPStatus.OK, body, used)

    # -- answers ------------------------------------------------------------------------
    def _answer(
        self, status: int, body: bytes, used: int, retry_after: int | None = None
    ) -> Response:
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),  # the server closes after one answer
                ("Content-Type", _JSON),
                ("Content-Length", str(len(body))),
                ("X-MBX-USED-WEIGHT-1M", str(used)),
            ]
        )
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def _error(self, exc: RestError, used: int, retry_after: int | None = None) -> Response:
        body = self._encoder.encode({"code": exc.code, "msg": exc.msg})
        return self._answer(exc.status, body, used, retry_after)

    # -- parameters ---------------------------------------------------------------------
    def _symbol(self, params: dict[str, str]) -> str:
        symbol = params.get("symbol", "")
        if not symbol:
            raise _mandatory("symbol")
        if not _SYMBOL.fullmatch(symbol):
            raise _illegal("symbol", "^[A-Z0-9-_.]{1,20}$")
        if symbol not in self.listing:
            raise RestError(-1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _int(params: dict[str, str], name: str) -> int | None:
        value = params.get(name)
        if value is None:
            return None
        if not _INT.fullmatch(value):
            raise _illegal(name, "^[0-9]{1,20}$")
        return int(value)

    def _limit(self, params: dict[str, str], endpoint: str) -> int:
        default, most = _LIMITS[endpoint]
        limit = self._int(params, "limit")
        if limit is None:
            return default
        if limit < 1:
            raise _illegal("limit", f"1 - {most}")
        return min(limit, most)

    def _times(self, params: dict[str, str], now: int) -> tuple[int | None, int | None]:
        start, end = self._int(params, "startTime"), self._int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise RestError(-1023, "Start time is greater than end time.")
        # nothing exists after now: keep the numbers small
        return (None if start is None else min(start, now + 1)), (
            None if end is None else min(end, now)
        )

    # -- endpoints ----------------------------------------------------------------------
    async def _ping(self, params: dict[str, str], now: int) -> bytes:
        return b"{}"

    async def _time(self, params: dict[str, str], now: int) -> bytes:
        return self._encoder.encode({"serverTime": now})

    @property
    def listing(self) -> dict[str, dict[str, Any]]:
        """exchangeInfo's entry of each symbol of the universe, in its order."""
        if self._listing is None:
            self._listing = {s: self._entry(s) for s in DEMO_SYMBOLS}
        return self._listing

    def _entry(self, symbol: str) -> dict[str, Any]:
        quote = next(q for q in QUOTES if symbol.endswith(q))
        decimals = tape_constants(self.seed, symbol)[2]
        tick = f"{10.0**-decimals:.8f}"
        return {
            "symbol": symbol,
            "status": "BREAK" if symbol in self.halted else "TRADING",
            "baseAsset": symbol.removesuffix(quote),
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": _ORDER_TYPES,
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": tick,
                    "maxPrice": "1000000.00000000",
                    "tickSize": tick,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00001000",
                    "maxQty": "9000.00000000",
                    "stepSize": "0.00001000",
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _exchange_info(self, params: dict[str, str], now: int) -> bytes:
        listing = self.listing
        if "symbol" in params and "symbols" in params:
            raise RestError(-1128, "Combination of optional parameters invalid.")
        if "symbol" in params:
            names = [self._symbol(params)]
        elif "symbols" in params:
            try:
                names = msgspec.json.decode(params["symbols"], type=list[str])
            except msgspec.DecodeError:
                raise _illegal(
                    "symbols", '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
                ) from None
            if not names:
                raise _mandatory("symbols")
            for name in names:
                self._symbol({"symbol": name})
            names = list(dict.fromkeys(names))
        else:
            names = list(listing)
        return self._encoder.encode(
            {
                "timezone": "UTC",
                "serverTime": now,
                "rateLimits": [
                    _limit("REQUEST_WEIGHT", "MINUTE", 1, self.weight_limit),
                    _limit("ORDERS", "SECOND", 10, 100),
                    _limit("ORDERS", "DAY", 1, 200_000),
                    _limit("RAW_REQUESTS", "MINUTE", 5, 61_000),
                ],
                "exchangeFilters": [],
                "symbols": [listing[name] for name in names],
            }
        )

    async def _klines(self, params: dict[str, str], now: int) -> bytes:
        symbol = self._symbol(params)
        interval = params.get("interval", "")
        if not interval:
            raise _mandatory("interval")
        if interval not in KLINE_INTERVALS:
            raise RestError(-1120, "Invalid interval.")
        start, end = self._times(params, now)
        limit = self._limit(params, "klines")
        rows = await asyncio.to_thread(
            self.history.klines, symbol, KLINE_INTERVALS[interval], start, end, limit, now
        )
        return _array(rows)

    async def _agg_trades(self, params: dict[str, str], now: int) -> bytes:
        symbol = self._symbol(params)
        from_id = self._int(params, "fromId")
        start, end = self._times(params, now)
        if from_id is not None and (start is not None or end is not None):
            raise RestError(-1128, "Combination of optional parameters invalid.")
        limit = self._limit(params, "aggTrades")
        rows = await asyncio.to_thread(
            self.history.agg_trades, symbol, from_id, start, end, limit, now
        )
        return _array(rows)

    async def _historical_trades(self, params: dict[str, str], now: int) -> bytes:
        symbol = self._symbol(params)
        from_id = self._int(params, "fromId")
        limit = self._limit(params, "historicalTrades")
        rows = await asyncio.to_thread(self.history.trades, symbol, from_id, limit, now)
        return _array(rows)


def _limit(kind: str, interval: str, num: int, limit: int) -> dict[str, Any]:
    return {"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit}


def _array(rows: list[bytes]) -> bytes:
    return b"[" + b",".join(rows) + b"]"


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
