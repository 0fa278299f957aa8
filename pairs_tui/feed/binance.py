"""The Binance trade consumer: one combined-stream connection, kept alive forever.

The hot path (one frame) is: recv bytes, two msgspec decodes, the door check every
trade passes (`model.check_trade`: the same rule as for imported dumps), an id check, a
tuple appended to the pending batch. No per-trade awaits, objects or queue hops: the store
takes whole batches via `drain()`, and the consumer only waits when the pending batch
reaches its bound (backpressure, never a silent drop). A frame that fails the check is
counted as malformed and skipped; it never reaches the store nor moves the id tracking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from pairs_tui.model import (
    DROPPING_WARN_US,
    MAX_ID_JUMP,
    MAX_TRADE_ID,
    MICROS_THRESHOLD,
    FeedState,
    FeedStats,
    Gap,
    StreamKind,
    SymbolStats,
    TradeRow,
    check_trade,
    clip,
    describe,
)

log = logging.getLogger(__name__)

DEFAULT_WS_URL = "wss://stream.binance.com:9443"
SHUTDOWN_STREAM = "!serverShutdown"
DROPPING_MIN = 10  # duplicates in a run before it can be a silent loss, not a re-send
DROPPING_QUIET_US = 2_000_000  # a run whose latest duplicate is older than this has ended


class MalformedFrame(ValueError):
    """A frame that is not valid JSON or not a well-formed event."""


class ShutdownNotice(Exception):
    """The server announced it will drop the connection (`serverShutdown`)."""


class _Trade(msgspec.Struct, kw_only=True):
    e: str
    s: str
    id: int = msgspec.field(name="t")
    p: str
    q: str
    T: int
    m: bool
    X: str = "MARKET"  # futures only: insurance-fund and ADL fills are not market prices

    @property
    def first(self) -> int:
        return self.id

    last = first


class _AggTrade(msgspec.Struct, kw_only=True):
    """Continuity is checked on the aggregate id `a` (PROTOCOL.md §8); old futures frames
    without `a` fall back to the underlying trade ids `f`/`l`."""

    e: str
    s: str
    f: int
    last_trade: int = msgspec.field(name="l")
    p: str
    q: str
    T: int
    m: bool
    a: int = -1
    X: str = "MARKET"

    @property
    def id(self) -> int:
        return self.a if self.a >= 0 else self.f

    @property
    def first(self) -> int:
        return self.a if self.a >= 0 else self.f

    @property
    def last(self) -> int:
        return self.a if self.a >= 0 else self.last_trade


class _Envelope(msgspec.Struct):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw()


class _Head(msgspec.Struct):
    e: str = ""
    s: str = ""


TradeMsg = _Trade | _AggTrade
S = TypeVar("S")


def stream_name(symbol: str, kind: StreamKind) -> str:
    return f"{symbol.lower()}@{kind.value}"


def combined_url(ws_url: str, symbols: tuple[str, ...], kind: StreamKind) -> str:
    streams = "/".join(stream_name(s, kind) for s in symbols)
    return f"{ws_url.rstrip('/')}/stream?streams={streams}"


def check_ws_url(url: str) -> str:
    """Reject anything but ws:// or wss:// before a connection is ever tried."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(
            f"invalid --ws-url {clip(url)!r}: it must start with ws:// or wss:// and name a host"
        )
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError(f"invalid --ws-url {clip(url)!r}: the port must be 0-65535") from None
    return url.rstrip("/")


class FrameDecoder(Generic[S]):
    """Turns one frame into (subscriber, trade) or None for frames we do not want.

    `subscribers` maps stream names (`btcusdt@trade`) to whatever the caller wants back
    for that stream. Combined (`{"stream":..,"data":..}`) and raw frames are accepted.
    """

    def __init__(self, subscribers: Mapping[str, S], kind: StreamKind) -> None:
        self._subs = dict(subscribers)
        self._event = kind.value
        self._envelope = msgspec.json.Decoder(_Envelope)
        self._head = msgspec.json.Decoder(_Head)
        self._payload: msgspec.json.Decoder[TradeMsg] = msgspec.json.Decoder(
            _Trade if kind is StreamKind.TRADE else _AggTrade
        )

    def decode(self, frame: bytes | str) -> tuple[S, TradeMsg] | None:
        try:
            env = self._envelope.decode(frame)
            if env.stream:
                sub = self._subs.get(env.stream)
                if sub is None:
                    if env.stream == SHUTDOWN_STREAM:
                        raise ShutdownNotice
                    return None
                msg = self._payload.decode(env.data)
            else:
                head = self._head.decode(frame)
                if head.e == "serverShutdown":
                    raise ShutdownNotice
                sub = self._subs.get(f"{head.s.lower()}@{head.e}")
                if sub is None:
                    return None  # control replies, errors, other event types
                msg = self._payload.decode(frame)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            raise MalformedFrame(str(exc)) from None
        if msg.e != self._event:
            return None
        return sub, msg


@dataclass(frozen=True, slots=True)
class FeedOptions:
    ws_url: str = DEFAULT_WS_URL
    kind: StreamKind = StreamKind.TRADE
    stale_after: float = 30.0  # watchdog: reconnect when no frame arrives for this long
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 60.0  # a connection this old resets the backoff
    batch_rows: int = 5_000  # wake the writer early once this many trades are pending
    max_pending: int = 200_000  # bound of the pending batch: beyond it the consumer waits
    open_timeout: float = 10.0
    max_frame_bytes: int = 1 << 20


@dataclass(slots=True)
class Batch:
    """Everything received since the last drain, ready for one store transaction."""

    rows: list[TradeRow]
    gaps: list[Gap]
    counts: dict[str, int]  # trades per symbol in `rows`

    def __bool__(self) -> bool:
        return bool(self.rows or self.gaps)

    def __add__(self, later: Batch) -> Batch:
        counts = dict(self.counts)
        for symbol, n in later.counts.items():
            counts[symbol] = counts.get(symbol, 0) + n
        return Batch(self.rows + later.rows, self.gaps + later.gaps, counts)


@dataclass(slots=True)
class _Held:
    """A trade whose id is far from the last one: stored only if the next continues it."""

    msg: TradeMsg
    ts: int
    recv: int


@dataclass(slots=True)
class _Symbol:
    symbol: str
    wire: str = ""  # the symbol as trade frames spell it (`s`: BTCUSDT)
    series: int = -1  # the store's id for this symbol's trades
    last_id: int = -1  # the id tracking: trades up to this one are duplicates
    held: _Held | None = None
    received: int = 0
    drained: int = 0
    last_trade_us: int | None = None
    latency_us: int | None = None  # receive time minus trade time, last trade
    # a run of duplicates: since when and the latest (µs), how many, at which `received`,
    # and whether it was said
    dup_since: int | None = None
    dup_last: int = 0
    dup_count: int = 0
    dup_at: int = -1
    dup_said: bool = False

    def dropping_us(self, now_us: int) -> int | None:
        """How long every trade of this symbol has been one already stored, or None: a
        run still going (its latest duplicate recent) of more than a few re-sends."""
        if self.dup_since is None or self.dup_at != self.received:
            return None
        if self.dup_count < DROPPING_MIN or now_us - self.dup_last > DROPPING_QUIET_US:
            return None
        return now_us - self.dup_since


def full_jitter(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """AWS 'full jitter': uniform in [0, min(cap, initial * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, initial * (2.0 ** min(attempt, 30))))


@dataclass
class _Counters:
    reconnects: int = 0
    gaps: int = 0
    duplicates: int = 0
    malformed: int = 0
    ignored: int = 0
    frames: int = 0
    backpressure_waits: int = 0
    stale_reconnects: int = 0
    shutdown_notices: int = 0


class BinanceFeed:
    """Consumes `<symbol>@trade` (or `@aggTrade`) for several symbols over one connection."""

    def __init__(
        self,
        symbols: tuple[str, ...],
        options: FeedOptions = FeedOptions(),
        *,
        rng: random.Random | None = None,
        on_event: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.symbols = symbols
        self.options = options
        self.url = combined_url(options.ws_url, symbols, options.kind)
        self.state = FeedState.CONNECTING
        self.retry_at: float | None = None
        self.last_error: str | None = None
        self.counters = _Counters()
        self._rng = rng or random.Random()
        self._on_event = on_event or (lambda text: log.info("%s", text))
        self._on_warning = on_warning or self._on_event  # what must reach the user
        self._states = {s: _Symbol(s, wire=s.upper()) for s in symbols}
        self._decoder = FrameDecoder(
            {stream_name(s, options.kind): st for s, st in self._states.items()}, options.kind
        )
        self._rows: list[TradeRow] = []
        self._gaps: list[Gap] = []
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._stop = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._backpressured = False

    # -- the store side ---------------------------------------------------------------
    def drain(self) -> Batch:
        rows, self._rows = self._rows, []
        gaps, self._gaps = self._gaps, []
        counts = {}
        for st in self._states.values():
            if st.received != st.drained:
                counts[st.symbol] = st.received - st.drained
                st.drained = st.received
        self._ready.clear()
        self._drained.set()
        return Batch(rows, gaps, counts)

    async def wait_batch(self, timeout: float) -> None:
        """Return when a full batch is pending, the feed stops, or after `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def stats(self, stored: Mapping[str, int] | None = None) -> FeedStats:
        stored = stored or {}
        c = self.counters
        now_us = time.time_ns() // 1000
        return FeedStats(
            state=self.state,
            url=self.url,
            symbols=tuple(
                SymbolStats(
                    st.symbol,
                    st.received,
                    stored.get(st.symbol, 0),
                    st.last_trade_us,
                    st.latency_us,
                    st.dropping_us(now_us),
                )
                for st in self._states.values()
            ),
            reconnects=c.reconnects,
            gaps=c.gaps,
            duplicates=c.duplicates,
            malformed=c.malformed,
            ignored=c.ignored,
            backpressure_waits=c.backpressure_waits,
            retry_at=self.retry_at,
            last_error=self.last_error,
        )

    def bind(self, series: Mapping[str, int], last_ids: Mapping[str, int | None]) -> None:
        """Take the store's series ids for the rows, and continue id tracking from what
        the store already holds, so a gap across a restart is recorded like any other."""
        for symbol, st in self._states.items():
            st.series = series[symbol]
            last = last_ids.get(symbol)
            if last is not None:
                st.last_id = max(st.last_id, last)

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._ready.set()
        self._drained.set()
        if self._ws is not None:
            self._ws.transport.abort()

    async def run(self) -> None:
        """Connect, consume, reconnect with backoff, until `stop()`."""
        loop = asyncio.get_running_loop()
        opts = self.options
        attempt = 0
        while not self._stop.is_set():
            session = asyncio.create_task(self._session())
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait({session, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if self._stop.is_set():  # also while still connecting
                session.cancel()
                await asyncio.gather(session, return_exceptions=True)
                break
            reason, lived, immediate = session.result()
            self.last_error = reason
            self.counters.reconnects += 1
            if immediate or (lived is not None and lived >= opts.healthy_after):
                attempt = 0
            if immediate:  # orderly: soon, but never a spin against a server that repeats it
                delay = self._rng.uniform(0.0, min(1.0, opts.backoff_initial))
            else:
                delay = full_jitter(attempt, opts.backoff_initial, opts.backoff_max, self._rng)
                attempt += 1
            self.state = FeedState.RECONNECTING
            self.retry_at = loop.time() + delay
            self._on_event(f"disconnected ({reason}); reconnecting in {delay:.1f}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
        self.state = FeedState.STOPPED
        self._ready.set()

    async def _session(self) -> tuple[str, float | None, bool]:
        """One connection from open to end: why it ended, how long it was up (None if it
        never opened), and whether to reconnect at once."""
        loop = asyncio.get_running_loop()
        opts = self.options
        connected_at: float | None = None
        watchdog: asyncio.Task[str] | None = None
        immediate = False
        try:
            async with connect(
                self.url,
                compression=None,
                max_size=opts.max_frame_bytes,
                open_timeout=opts.open_timeout,
                proxy=None if _is_loopback(self.url) else True,
            ) as ws:
                self._ws = ws
                connected_at = loop.time()
                self.state = FeedState.CONNECTED
                self.retry_at = None
                self._on_event(f"connected to {self.url}")
                watchdog = asyncio.create_task(self._watch(ws))
                try:
                    await self._consume(ws)
                except ShutdownNotice:
                    ws.transport.abort()  # the server's close reply may be stuck behind data
                    raise
        except ShutdownNotice:
            self.counters.shutdown_notices += 1
            reason, immediate = "server announced shutdown", True
        except ConnectionClosed as exc:
            reason = _describe_close(exc)
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.counters.malformed += 1  # a frame cannot be skipped: the socket goes
                reason = f"a frame over {opts.max_frame_bytes:,} bytes (1009): skipped"
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError, EOFError, ValueError) as exc:
            reason = clip(describe(exc))
        self._ws = None
        if watchdog is not None:
            if watchdog.done():
                # A quiet stream is not a failing server: reconnect soon, without
                # escalating the backoff (its wait already spaces the attempts).
                reason, immediate = watchdog.result(), True
            else:
                watchdog.cancel()
        lived = None if connected_at is None else loop.time() - connected_at
        return reason, lived, immediate

    async def _watch(self, ws: ClientConnection) -> str:
        """Data watchdog: a connection that delivers nothing for `stale_after` is dead."""
        loop = asyncio.get_running_loop()
        stale_after = self.options.stale_after
        tick = min(1.0, stale_after / 4)
        seen, since = self.counters.frames, loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if self.counters.frames != seen or self._backpressured:
                seen, since = self.counters.frames, now
            elif now - since >= stale_after:
                self.counters.stale_reconnects += 1
                ws.transport.abort()
                return f"no data for {stale_after:g}s"

    async def _consume(self, ws: ClientConnection) -> None:
        decode = self._decoder.decode
        counters = self.counters
        max_pending = self.options.max_pending
        batch_rows = min(self.options.batch_rows, max_pending)
        while True:
            frame = await ws.recv(decode=False)
            counters.frames += 1
            try:
                item = decode(frame)
            except MalformedFrame:
                counters.malformed += 1
                continue
            if item is None:
                counters.ignored += 1
                continue
            st, msg = item
            t = msg.T
            ts = t if t >= MICROS_THRESHOLD else t * 1000
            recv = time.time_ns() // 1000
            first, last = msg.first, msg.last
            if (
                check_trade(msg.p, msg.q, msg.id, ts, recv) is not None
                or (msg.s != st.wire and msg.s.upper() != st.wire)
                or (first != last and not first < last <= min(first + MAX_ID_JUMP, MAX_TRADE_ID))
            ):
                counters.malformed += 1
                continue
            last_id = st.last_id
            if st.held is None and last_id < first <= last_id + MAX_ID_JUMP:
                if first != last_id + 1 and last_id >= 0:
                    self._gap(st.symbol, last_id + 1, first - 1)
                st.last_id = last
            elif not self._unusual_id(st, msg, ts, recv):
                continue
            if msg.X != "MARKET":  # futures insurance-fund/ADL fills: not a market price
                counters.ignored += 1
                continue
            st.last_trade_us, st.latency_us = ts, recv - ts
            st.received += 1
            rows = self._rows
            rows.append((st.series, msg.id, ts, recv, msg.p, msg.q, msg.m))
            if len(rows) >= batch_rows:
                self._ready.set()
                if len(rows) >= max_pending:
                    counters.backpressure_waits += 1
                    self._drained.clear()
                    self._backpressured = True
                    await self._drained.wait()
                    self._backpressured = False

    def _duplicate(self, st: _Symbol, recv: int) -> None:
        """Dropped as already stored. A few are re-sends; all of them for seconds means
        nothing new is being recorded (ids that went backwards): that is said, once."""
        self.counters.duplicates += 1
        if st.dup_since is None or st.dup_at != st.received:  # a new run
            st.dup_since, st.dup_at, st.dup_count, st.dup_said = recv, st.received, 0, False
        st.dup_last = recv
        st.dup_count += 1
        if not st.dup_said and (st.dropping_us(recv) or 0) >= DROPPING_WARN_US:
            st.dup_said = True
            self._on_warning(
                f"{st.symbol}: every trade for {DROPPING_WARN_US // 1_000_000}s was already"
                f" stored (ids up to {st.last_id}): nothing new is being recorded"
            )

    def _unusual_id(self, st: _Symbol, msg: TradeMsg, ts: int, recv: int) -> bool:
        """Id tracking off the hot path: a duplicate, a trade that overlaps the last one, an
        id more than `MAX_ID_JUMP` away from the last, either way, or a trade held for being
        so. A far id is not taken on its word, since it would move the tracking so that
        every later trade looks like a duplicate (or like a gap of billions): it is held
        until the next trade of its symbol. If that one continues from it (within
        `MAX_ID_JUMP`), both are stored, with the gap between: a restart after months away,
        a demo server started anew, a store whose last id was never real. If not, the held
        one was a stray and is counted as malformed. The first trade ever (`last_id` -1)
        with an id past `MAX_ID_JUMP` is held the same way.

        True when `msg` is to be stored, the tracking already moved past it."""
        first, last = msg.first, msg.last
        held = st.held
        if held is not None:
            h = held.msg
            if h.first <= first and last <= h.last:  # the held trade re-sent
                self._duplicate(st, recv)
                return False
            st.held = None
            if h.last < first <= h.last + MAX_ID_JUMP:  # it follows the held one: both real
                self._track(st, h.first, h.last)
                self._store_held(st, held)
                self._track(st, first, last)
                return True
            self.counters.malformed += 1  # the held one was a stray: nothing followed it
        last_id = st.last_id
        if last_id < first <= last_id + MAX_ID_JUMP or first <= last_id < last:
            self._track(st, first, last)
            return True
        if last_id - MAX_ID_JUMP <= last <= last_id:
            self._duplicate(st, recv)
            return False
        st.held = _Held(msg, ts, recv)
        return False

    def _track(self, st: _Symbol, first: int, last: int) -> None:
        """Move the id tracking to `last`, recording the ids skipped before `first`."""
        if st.last_id >= 0 and first > st.last_id + 1:
            self._gap(st.symbol, st.last_id + 1, first - 1)
        st.last_id = last

    def _store_held(self, st: _Symbol, held: _Held) -> None:
        """A held trade turned out real: into the batch as `_consume` would have put it."""
        msg, ts, recv = held.msg, held.ts, held.recv
        if msg.X != "MARKET":
            self.counters.ignored += 1
            return
        st.last_trade_us, st.latency_us = ts, recv - ts
        st.received += 1
        self._rows.append((st.series, msg.id, ts, recv, msg.p, msg.q, msg.m))

    def _gap(self, symbol: str, from_id: int, to_id: int) -> None:
        gap = Gap(symbol, self.options.kind, from_id, to_id, time.time_ns() // 1000)
        self._gaps.append(gap)
        self.counters.gaps += 1
        self._on_event(f"gap in {symbol}: ids {from_id}..{to_id} ({gap.missing} missing)")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _describe_close(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection lost without a close frame (1006)"
    reason = f" {clip(rcvd.reason)}" if rcvd.reason else ""  # at most 123 bytes anyway
    return f"closed by server ({rcvd.code}{reason})"
