"""The embedded demo feed: a real WebSocket server on loopback that speaks Binance.

`--demo` starts it in-process and points the ordinary consumer at it, so the demo runs
the real pipeline offline. Tests use the same server with fault injection (`Faults`)
to break connections on purpose and `delivered` to check that nothing was lost.

The market: every symbol's log price is a loading on one common random walk plus its
own mean-reverting (Ornstein-Uhlenbeck) spread with occasional 2-3 sigma kicks, so any
two symbols are cointegrated and a pair's z-score swings within a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import islice
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

# Start-price ranges for well-known symbols; anything else starts at 100.
_START_PRICES: dict[str, tuple[float, float]] = {
    "BTCUSDT": (60_000.0, 100_000.0),
    "ETHUSDT": (2_000.0, 4_000.0),
    "BNBUSDT": (400.0, 800.0),
    "SOLUSDT": (100.0, 250.0),
    "ETHBTC": (0.03, 0.06),
}
_COMMON_VOL = 4e-4  # common random walk, per sqrt(second)
_SPREAD_STD = 1.5e-3  # stationary std of each symbol's OU spread
_HALF_LIFE = 12.0  # seconds
_KICK_EVERY = 30.0  # mean seconds between 2-3 sigma excursions, per symbol
_BOUNCE = 0.5e-4  # half the bid-ask spread, relative


@dataclass(frozen=True, slots=True)
class DemoTrade:
    symbol: str  # uppercase
    trade_id: int
    time_ms: int
    price: str
    qty: str
    buyer_maker: bool


@dataclass(slots=True)
class _Instrument:
    symbol: str
    rng: random.Random
    log_p0: float
    loading: float
    decimals: int
    next_id: int
    next_arrival: float
    spread: float = 0.0


class SyntheticMarket:
    """Deterministic for a given seed: the same symbols get the same tape."""

    def __init__(
        self,
        seed: int | None = None,
        rate: float = 20.0,
        *,
        dt: float = 0.05,
        start_ms: int | None = None,  # a fixed start replays the very same tape
    ):
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
        self.rate = rate
        self.dt = dt
        self.start_ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000
        # ids start at the start time in µs, so a later run never reuses a recorded id
        self._first_id = self.start_ms * 1000
        self._common_rng = random.Random(f"{self.seed}:common")
        self._common = 0.0
        self.now = 0.0  # virtual seconds since start
        self._instruments: dict[str, _Instrument] = {}
        self.skip_ids_every = 0  # fault: jump ids after every N trades of a symbol

    def add(self, symbol: str) -> None:
        symbol = symbol.upper()
        if symbol in self._instruments:
            return
        rng = random.Random(f"{self.seed}:{symbol}")
        low, high = _START_PRICES.get(symbol, (100.0, 100.0))
        p0 = rng.uniform(low, high)
        decimals = max(2, min(8, 6 - math.floor(math.log10(p0))))
        self._instruments[symbol] = _Instrument(
            symbol=symbol,
            rng=rng,
            log_p0=math.log(p0),
            loading=1.0 if symbol == "BTCUSDT" else rng.uniform(0.8, 1.5),
            decimals=decimals,
            next_id=self._first_id,
            next_arrival=self.now + rng.expovariate(self.rate),
        )

    def advance_to(self, t: float) -> list[DemoTrade]:
        """Step the market up to virtual time `t`; the trades, in time order."""
        out: list[DemoTrade] = []
        while self.now + self.dt <= t:
            out.extend(self._step())
        out.sort(key=lambda tr: tr.time_ms)
        return out

    def _step(self) -> Iterable[DemoTrade]:
        dt = self.dt
        self._common += _COMMON_VOL * math.sqrt(dt) * self._common_rng.gauss(0.0, 1.0)
        theta = math.log(2) / _HALF_LIFE
        sigma = _SPREAD_STD * math.sqrt(2 * theta)
        end = self.now + dt
        for ins in self._instruments.values():
            rng = ins.rng
            ins.spread += -theta * ins.spread * dt + sigma * math.sqrt(dt) * rng.gauss(0.0, 1.0)
            if rng.random() < dt / _KICK_EVERY:
                ins.spread = rng.choice((-1, 1)) * rng.uniform(2.0, 3.0) * _SPREAD_STD
            log_price = ins.log_p0 + ins.loading * self._common + ins.spread
            while ins.next_arrival < end:
                yield self._trade(ins, log_price)
                ins.next_arrival += rng.expovariate(self.rate)
        self.now = end

    def _trade(self, ins: _Instrument, log_price: float) -> DemoTrade:
        rng = ins.rng
        maker = rng.random() < 0.5
        price = math.exp(log_price) * (1 + (_BOUNCE if not maker else -_BOUNCE))
        qty = max(1e-5, rng.lognormvariate(math.log(0.05), 1.0) / math.exp(ins.log_p0 / 4))
        trade = DemoTrade(
            symbol=ins.symbol,
            trade_id=ins.next_id,
            time_ms=self.start_ms + int(ins.next_arrival * 1000),
            price=f"{round(price, ins.decimals):.8f}",
            qty=f"{qty:.5f}000",
            buyer_maker=maker,
        )
        ins.next_id += 1
        if self.skip_ids_every and (ins.next_id - self._first_id) % self.skip_ids_every == 0:
            ins.next_id += 1 + rng.randrange(3)
        return trade


@dataclass
class Faults:
    """Fault injection for tests; counts are per connection, 0 means off."""

    cut_every: int = 0  # drop the TCP connection, no close frame (1006), after N trades
    close_every: int = 0  # clean close 1001 after N trades
    close_reason: str = "going away"  # the close frame's text
    shutdown_every: int = 0  # send serverShutdown after N trades, then send nothing more
    stall_after: int = 0  # after N trades go silent (connection open, pings answered)
    stalls: int = 1  # how many connections stall before the server behaves again
    malformed_every: int = 0  # after every N trades send one malformed frame
    other_every: int = 0  # after every N trades an unknown event or a control reply
    resend_on_reconnect: int = 0  # a new connection first gets the last N delivered trades
    huge_every: int = 0  # after every N trades send a frame over the client's 1 MiB limit
    lag_symbol: str = ""  # deliver this symbol's trades `lag_ms` late: out of order
    lag_ms: int = 0  # across the symbols (each symbol's own order is kept)


@dataclass
class ServerCounters:
    connections: int = 0
    cuts: int = 0
    closes: int = 0
    shutdowns: int = 0
    stalls: int = 0
    malformed: int = 0
    others: int = 0
    resent: int = 0
    huge: int = 0


_OTHERS = (  # valid frames that are not trades: to be ignored
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}',
    '{"result":null,"id":7}',
    '{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1,"s":"BTCUSDT"}}',
)
_MALFORMED = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":17',  # truncated
    b"not json at all",
    b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"x"}}',  # wrong type
    b"\xff\xfe\x00garbage",
)


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    combined: bool
    streams: set[str]
    sent: int = 0
    held: list[DemoTrade] = field(default_factory=list)  # lagged trades not yet sent


@dataclass(eq=False)
class DemoServer:
    """A Binance-protocol server on loopback. Use `async with DemoServer() as server:`."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int | None = None
    rate: float = 20.0  # trades per second per symbol
    faults: Faults = field(default_factory=Faults)
    tick: float = 0.02
    ping_interval: float = 20.0  # Binance pings every 20 s and drops a client that does not pong
    history: int = 10_000  # recent trades kept for resends
    counters: ServerCounters = field(default_factory=ServerCounters)
    record_delivered: bool = False  # tests: keep every id sent in `delivered`
    delivered: dict[str, list[int]] = field(default_factory=dict)  # ids sent, per symbol
    paused: bool = False  # tests: stop sending on every connection, keep them open

    def __post_init__(self) -> None:
        self.market = SyntheticMarket(self.seed, self.rate)
        self._log: deque[DemoTrade] = deque(maxlen=self.history)
        self._seq = 0  # number of trades ever appended to _log
        self._new = asyncio.Event()
        self._server: Server | None = None
        self._clock: asyncio.Task[None] | None = None
        self._sent: deque[DemoTrade] = deque(maxlen=self.history)
        self._encoder = msgspec.json.Encoder()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> DemoServer:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            process_request=self._route,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        self._clock = asyncio.create_task(self._run_clock(), name="demo-clock")
        return self

    async def stop(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> DemoServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- market clock -----------------------------------------------------------------
    async def _run_clock(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            trades = self.market.advance_to(time.monotonic() - self._started)
            if trades:
                self._log.extend(trades)
                self._seq += len(trades)
                self._new.set()
                self._new = asyncio.Event()

    def _since(self, seq: int) -> tuple[list[DemoTrade], int]:
        """Trades appended after sequence number `seq` still in the log, and the new seq."""
        count = min(self._seq - seq, len(self._log))
        return list(islice(reversed(self._log), count))[::-1], self._seq

    # -- protocol -----------------------------------------------------------------------
    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/stream" or path == "/ws" or path.startswith("/ws/"):
            return None
        return connection.respond(HTTPStatus.NOT_FOUND, "unknown endpoint\n")

    async def _handle(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)
        if parts.path == "/stream":
            combined = True
            streams = parse_qs(parts.query).get("streams", [""])[0].split("/")
        else:
            combined = False
            streams = parts.path.removeprefix("/ws").strip("/").split("/")
        conn = _Conn(ws, combined, set())
        self._subscribe(conn, [s for s in streams if s])
        self.counters.connections += 1
        # The reader ends when the connection closes, whoever closes it; the sender ends
        # on a fault. Either one finishing finishes the connection.
        tasks = {
            asyncio.create_task(self._read_requests(conn)),
            asyncio.create_task(self._send_trades(conn)),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _subscribe(self, conn: _Conn, streams: list[str]) -> None:
        for stream in streams:
            conn.streams.add(stream)
            symbol, _, kind = stream.partition("@")
            if kind in ("trade", "aggTrade") and symbol:
                self.market.add(symbol)

    async def _read_requests(self, conn: _Conn) -> None:
        """Answer SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS like Binance does."""
        with contextlib.suppress(ConnectionClosed):
            async for text in conn.ws:
                try:
                    req = msgspec.json.decode(text)
                    method, rid = req.get("method"), req.get("id")
                except (msgspec.DecodeError, AttributeError):
                    await conn.ws.send('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}')
                    continue
                params = req.get("params") or []
                if method == "SUBSCRIBE":
                    self._subscribe(conn, [str(p) for p in params])
                    reply = {"result": None, "id": rid}
                elif method == "UNSUBSCRIBE":
                    conn.streams.difference_update(str(p) for p in params)
                    reply = {"result": None, "id": rid}
                elif method == "LIST_SUBSCRIPTIONS":
                    reply = {"result": sorted(conn.streams), "id": rid}
                else:
                    reply = {"error": {"code": 2, "msg": f"unknown method {method}"}, "id": rid}
                await conn.ws.send(self._encoder.encode(reply).decode())

    async def _send_trades(self, conn: _Conn) -> None:
        seq = self._seq
        if self.faults.resend_on_reconnect and self.counters.connections > 1:
            again = list(self._sent)[-self.faults.resend_on_reconnect :]
            self.counters.resent += len(again)
            if await self._deliver(conn, again):
                return
        while True:
            trades, seq = self._since(seq)
            if not trades or self.paused:  # while paused, trades happen but are not sent
                await self._new.wait()
            elif await self._deliver(conn, self._lagged(conn, trades)):
                return

    def _lagged(self, conn: _Conn, trades: list[DemoTrade]) -> list[DemoTrade]:
        """With `lag_symbol`, hold that symbol's trades back until they are `lag_ms` old,
        so the other symbol's newer trades overtake them."""
        lag, symbol = self.faults.lag_ms, self.faults.lag_symbol.upper()
        if not lag or not symbol:
            return trades
        conn.held += [t for t in trades if t.symbol == symbol]
        due = max(t.time_ms for t in trades) - lag
        ready = [t for t in conn.held if t.time_ms <= due]
        conn.held = conn.held[len(ready) :]
        return [t for t in trades if t.symbol != symbol] + ready

    async def _deliver(self, conn: _Conn, trades: list[DemoTrade]) -> bool:
        """Send trades this connection subscribed to; True when a fault ended it."""
        for trade in trades:
            frame = self._frame(conn, trade)
            if frame is None:
                continue
            await conn.ws.send(frame)
            conn.sent += 1
            self._sent.append(trade)
            if self.record_delivered:
                self.delivered.setdefault(trade.symbol, []).append(trade.trade_id)
            if await self._inject(conn, self.faults):
                return True
        return False

    def _frame(self, conn: _Conn, trade: DemoTrade) -> str | None:
        low = trade.symbol.lower()
        if f"{low}@trade" in conn.streams:
            stream, payload = f"{low}@trade", _trade_payload(trade)
        elif f"{low}@aggTrade" in conn.streams:
            stream, payload = f"{low}@aggTrade", _agg_payload(trade)
        else:
            return None
        if conn.combined:
            return f'{{"stream":"{stream}","data":{payload}}}'
        return payload

    async def _inject(self, conn: _Conn, faults: Faults) -> bool:
        """Apply faults after a trade was sent; True when this connection is finished."""
        n = conn.sent
        ws = conn.ws
        if faults.malformed_every and n % faults.malformed_every == 0:
            self.counters.malformed += 1
            await ws.send(_MALFORMED[self.counters.malformed % len(_MALFORMED)])
        if faults.other_every and n % faults.other_every == 0:
            self.counters.others += 1
            await ws.send(_OTHERS[self.counters.others % len(_OTHERS)])
        if faults.huge_every and n % faults.huge_every == 0:
            self.counters.huge += 1
            await ws.send('{"stream":"btcusdt@trade","data":"' + "x" * (1 << 20) + '"}')
            try:  # a client with the usual 1 MiB limit refuses it and closes (1009)
                await asyncio.wait_for(ws.wait_closed(), 5)
            except TimeoutError:  # a client with a larger limit took it: go on
                return False
            return True
        if faults.cut_every and n % faults.cut_every == 0:
            self.counters.cuts += 1
            await _drop(ws)
            return True
        if faults.close_every and n % faults.close_every == 0:
            self.counters.closes += 1
            await ws.close(1001, faults.close_reason)
            return True
        if faults.shutdown_every and n % faults.shutdown_every == 0:
            self.counters.shutdowns += 1
            now = time.time_ns() // 1_000_000
            event = f'{{"e":"serverShutdown","E":{now}}}'
            await ws.send(
                f'{{"stream":"!serverShutdown","data":{event}}}' if conn.combined else event
            )
            await ws.wait_closed()
            return True
        if faults.stall_after and n == faults.stall_after and self.counters.stalls < faults.stalls:
            self.counters.stalls += 1
            await ws.wait_closed()
            return True
        return False


async def _drop(ws: ServerConnection) -> None:
    """Cut the TCP connection with no close frame, after what was sent has left."""
    transport = ws.transport
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.001)
    transport.abort()


def _trade_payload(t: DemoTrade) -> str:
    m = "true" if t.buyer_maker else "false"
    return (
        f'{{"e":"trade","E":{t.time_ms},"s":"{t.symbol}","t":{t.trade_id},"p":"{t.price}",'
        f'"q":"{t.qty}","T":{t.time_ms},"m":{m},"M":true}}'
    )


def _agg_payload(t: DemoTrade) -> str:
    m = "true" if t.buyer_maker else "false"
    return (
        f'{{"e":"aggTrade","E":{t.time_ms},"s":"{t.symbol}","a":{t.trade_id},"p":"{t.price}",'
        f'"q":"{t.qty}","f":{t.trade_id},"l":{t.trade_id},"T":{t.time_ms},"m":{m},"M":true}}'
    )
