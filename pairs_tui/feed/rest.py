"""Binance spot REST market data: the exchange's history before the live stream.

A client that would earn a 418 ban is broken, so every request passes one governor:
it spends Binance's documented weight, follows `X-MBX-USED-WEIGHT-1M` (other programs
on the same IP spend from the same budget) and keeps the minute's total under
`WEIGHT_SHARE` of the limit exchangeInfo states; after a 429 nothing is sent until its
`Retry-After` has passed; a 418 stops every further request. 5xx answers, timeouts and
refused connections are retried with backoff and full jitter, then reported as
`HistoryUnavailable` with the reason, which the fronts say and go on live-only.
"""

from __future__ import annotations

import asyncio
import difflib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import msgspec

from pairs_tui.feed.binance import full_jitter
from pairs_tui.model import clip, describe

if TYPE_CHECKING:  # imported when a request is first made: every command starts without it
    import aiohttp

DEFAULT_REST_URL = "https://api.binance.com"
MARKET_DATA_URL = "https://data-api.binance.vision"  # market data only, same API
WEIGHTS = {  # Binance's documented request weights (spot, 2026)
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/aggTrades": 4,
    "/api/v3/historicalTrades": 25,
}
PAGE = 1000  # the most rows klines, aggTrades and historicalTrades give at once
WEIGHT_SHARE = 0.8  # of the per-minute limit: the rest is left for everything else
DEFAULT_WEIGHT_LIMIT = 6000  # per minute, until exchangeInfo states the live one
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

T = TypeVar("T")


def check_rest_url(url: str) -> str:
    """An http(s) base URL, or ValueError saying what is expected."""
    if not url.startswith(("http://", "https://")) or url[-3:] == "://":
        raise ValueError(f"the REST URL must start with http:// or https://, not {url!r}")
    return url


class HistoryUnavailable(Exception):
    """The REST API cannot give history now; the message is the reason, in words."""


class Banned(HistoryUnavailable):
    """HTTP 418: Binance banned this IP. Nothing more is asked until restarted."""


class UnknownSymbol(ValueError):
    def __init__(self, symbol: str, listed: list[str]) -> None:
        close = difflib.get_close_matches(symbol, listed, n=3, cutoff=0.8)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        super().__init__(f"unknown symbol {symbol} on Binance{hint}")
        self.symbol = symbol


# -- answers, decoded straight into typed rows ----------------------------------------
class Kline(msgspec.Struct, array_like=True, frozen=True):
    open_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_ms: int
    quote_volume: str
    trades: int
    taker_base: str
    taker_quote: str
    ignore: str


class AggTrade(msgspec.Struct, frozen=True):
    agg_id: int = msgspec.field(name="a")
    price: str = msgspec.field(name="p")
    qty: str = msgspec.field(name="q")
    first_id: int = msgspec.field(name="f")
    last_id: int = msgspec.field(name="l")
    time_ms: int = msgspec.field(name="T")
    buyer_maker: bool = msgspec.field(name="m")


class RestTrade(msgspec.Struct, frozen=True):
    id: int
    price: str
    qty: str
    time_ms: int = msgspec.field(name="time")
    buyer_maker: bool = msgspec.field(name="isBuyerMaker")


class _RateLimit(msgspec.Struct):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class _Symbol(msgspec.Struct):
    symbol: str
    status: str


class _ExchangeInfo(msgspec.Struct):
    rateLimits: list[_RateLimit]
    symbols: list[_Symbol]


class _Error(msgspec.Struct):
    code: int = 0
    msg: str = ""


@dataclass(frozen=True)
class Listing:
    """What exchangeInfo says of the symbols asked about."""

    statuses: Mapping[str, str]  # symbol -> status ('TRADING', 'BREAK', ...)
    weight_limit: int  # REQUEST_WEIGHT per minute

    def check(self, symbols: tuple[str, ...]) -> list[str]:
        """Raises UnknownSymbol for the first symbol not listed; warnings for the rest."""
        listed = sorted(self.statuses)
        for symbol in symbols:
            if symbol not in self.statuses:
                raise UnknownSymbol(symbol, listed)
        return [
            f"{s} is not trading on Binance now (status {self.statuses[s]})"
            for s in symbols
            if self.statuses[s] != "TRADING"
        ]


@dataclass
class Spending:
    """What this client asked for: the benchmarks and the tests read it."""

    requests: int = 0
    weight: int = 0
    retries: int = 0
    waited_s: float = 0.0  # held back by the weight budget or a Retry-After


class RestClient:
    def __init__(
        self,
        base_url: str = DEFAULT_REST_URL,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = (backoff_initial, backoff_max)
        self.weight_limit = DEFAULT_WEIGHT_LIMIT
        self.spent = Spending()
        self.last_error: str | None = None  # the latest failure, for a deadline's message
        self._clock = clock
        self._rng = random.Random()
        self._lock = asyncio.Lock()  # one admission at a time: the budget is checked whole
        self._minute = -1
        self._used = 0  # weight used this minute, as far as we know
        self._blocked_until = 0.0  # a 429's Retry-After
        self._banned: Banned | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- endpoints ------------------------------------------------------------------
    async def listing(self) -> Listing:
        """Every symbol's status, and the weight limit (which governs from now on)."""
        info = await self._get("/api/v3/exchangeInfo", {}, _ExchangeInfo)
        for limit in info.rateLimits:
            if limit.rateLimitType == "REQUEST_WEIGHT" and limit.interval == "MINUTE":
                self.weight_limit = max(1, limit.limit // max(1, limit.intervalNum))
        return Listing({s.symbol: s.status for s in info.symbols}, self.weight_limit)

    async def klines(
        self, symbol: str, interval: str, *, start_ms: int, end_ms: int, limit: int = PAGE
    ) -> list[Kline]:
        """The oldest `limit` klines opening in [start_ms, end_ms]."""
        params = {"symbol": symbol, "interval": interval, "startTime": start_ms}
        params |= {"endTime": end_ms, "limit": limit}
        return await self._get("/api/v3/klines", params, list[Kline])

    async def agg_trades(
        self, symbol: str, *, start_ms: int, end_ms: int, limit: int = PAGE
    ) -> list[AggTrade]:
        """The oldest `limit` aggregates with a time in [start_ms, end_ms]."""
        params = {"symbol": symbol, "startTime": start_ms, "endTime": end_ms, "limit": limit}
        return await self._get("/api/v3/aggTrades", params, list[AggTrade])

    async def agg_trades_from(self, symbol: str, from_id: int, limit: int = PAGE) -> list[AggTrade]:
        params = {"symbol": symbol, "fromId": from_id, "limit": limit}
        return await self._get("/api/v3/aggTrades", params, list[AggTrade])

    async def historical_trades(
        self, symbol: str, from_id: int, limit: int = PAGE
    ) -> list[RestTrade]:
        params = {"symbol": symbol, "fromId": from_id, "limit": limit}
        return await self._get("/api/v3/historicalTrades", params, list[RestTrade])

    # -- one request, governed ------------------------------------------------------
    async def _get(self, path: str, params: Mapping[str, object], shape: type[T]) -> T:
        import aiohttp  # here, not at the top: see the TYPE_CHECKING import

        attempt = 0
        while True:
            await self._admit(WEIGHTS[path])
            reason: str | None
            try:
                status, headers, body = await self._send(path, params)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{self._where(path)}: {describe(exc)}"
                if isinstance(exc, TimeoutError):
                    reason = f"{self._where(path)}: no answer in {self.timeout:g}s"
            else:
                self._follow(headers)
                if status == 200:
                    return await asyncio.to_thread(_decode, body, shape, self._where(path))
                reason = self._refused(path, status, headers, body)
            attempt += 1
            self.last_error = reason
            if attempt >= self.attempts:
                raise HistoryUnavailable(reason or f"{self._where(path)}: rate limited (HTTP 429)")
            self.spent.retries += 1
            if reason is not None:  # a 429 waits its Retry-After in `_admit` instead
                await asyncio.sleep(full_jitter(attempt, *self.backoff, self._rng))

    async def _send(
        self, path: str, params: Mapping[str, object]
    ) -> tuple[int, Mapping[str, str], bytes]:
        if self._session is None:
            import aiohttp  # here, not at the top: see the TYPE_CHECKING import

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "pairs-tui"},
            )
        query = {k: str(v) for k, v in params.items()}
        self.spent.requests += 1
        async with self._session.get(self.base_url + path, params=query) as response:
            body = await response.read()
            return response.status, response.headers.copy(), body  # case-insensitive

    def _refused(
        self, path: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        """What a non-200 answer means: None to ask again after a 429's wait, a reason to
        retry with backoff (5xx), or an exception for what asking again cannot fix."""
        error = _error(body)
        retry_after = _seconds(headers.get("Retry-After"))
        if status == 429:
            wait = max(1.0, retry_after if retry_after is not None else 60.0)
            self._blocked_until = max(self._blocked_until, self._clock() + wait)
            return None
        if status == 418:
            self._banned = Banned(
                f"Binance banned this IP for {retry_after or 0:g}s (HTTP 418{error}):"
                " no more history requests until restarted"
            )
            raise self._banned
        if status >= 500:
            return f"{self._where(path)}: HTTP {status}{error}"
        if status == 403:
            raise HistoryUnavailable(f"{self._where(path)}: refused by a firewall (HTTP 403)")
        raise HistoryUnavailable(f"{self._where(path)}: HTTP {status}{error}")

    async def _admit(self, weight: int) -> None:
        """Wait until `weight` fits this minute's budget and no Retry-After is running."""
        if self._banned is not None:
            raise self._banned
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._blocked_until:
                    await self._wait(self._blocked_until - now)
                    continue
                minute = int(now // 60)
                if minute != self._minute:
                    self._minute, self._used = minute, 0
                if weight > WEIGHT_SHARE * self.weight_limit:  # would wait forever
                    raise HistoryUnavailable(
                        f"a request of weight {weight} exceeds the budget of"
                        f" {WEIGHT_SHARE:.0%} of {self.weight_limit} per minute"
                    )
                if self._used + weight <= WEIGHT_SHARE * self.weight_limit:
                    self._used += weight
                    self.spent.weight += weight
                    return
                await self._wait((minute + 1) * 60 - now + 0.05)

    async def _wait(self, seconds: float) -> None:
        self.spent.waited_s += seconds
        await asyncio.sleep(seconds)

    def _follow(self, headers: Mapping[str, str]) -> None:
        """The server's count is the truth: other programs share this IP's budget."""
        used = headers.get(WEIGHT_HEADER)
        if used is not None and used.isdigit() and int(self._clock() // 60) == self._minute:
            self._used = max(self._used, int(used))

    def _where(self, path: str) -> str:
        return f"{self.base_url}{path}"


def _decode(body: bytes, shape: type[T], where: str) -> T:
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.DecodeError as exc:
        raise HistoryUnavailable(f"{where}: malformed answer ({clip(str(exc), 120)})") from None


def _error(body: bytes) -> str:
    """Binance's own words for a refusal, when it sent them."""
    try:
        error = msgspec.json.decode(body, type=_Error)
    except msgspec.DecodeError:
        return ""
    return f": {clip(error.msg, 120)} ({error.code})" if error.msg else ""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
