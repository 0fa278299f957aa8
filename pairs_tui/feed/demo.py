"""The embedded demo feed: a real WebSocket server on loopback that speaks Binance.

`--demo` starts it in-process and points the ordinary consumer at it, so the demo runs
the real pipeline offline. Tests use the same server with fault injection (`Faults`)
to break connections on purpose and `delivered` to check that nothing was lost. The same
port serves Binance's REST market data (klines, aggregate and historical trades, weights
and bans: `demo_rest`), computed from the same market (`demo_history`).

The market is a function of the seed and the wall clock, not a simulation that starts
when the process does: the price at 12:00:05 is the same whichever process computes it,
a restart continues the same price path, and two demo processes running at once send
the very same trades (ids, times, prices, quantities, sides), so a store they share
keeps each trade once. Every symbol's log price is a loading on one common random walk
plus its own mean-reverting (Ornstein-Uhlenbeck) spread with occasional 2-3 sigma kicks,
so any two symbols are cointegrated and a pair's z-score swings within a minute.

How each part is computed from time alone (all randomness is a counter-based hash of
(seed, symbol, what, index), never a generator's state; t is measured from `EPOCH_MS`):

- Trades and ids. Per symbol, trade n (ids 0, 1, 2, ... consecutive, like Binance's)
  lies in slot s = n // 16, which spans 16/rate seconds; a slot's 16 trades sit at the
  sorted positions of 16 hashed uniforms within it (Poisson-like inside a slot, exactly
  `rate` trades/s on average). Times never decrease along the ids, and the id at any
  instant is found in O(1) (the slot of that instant, and its neighbours). The id space
  depends on the rate: another `demo.rate` numbers the trades differently (the prices,
  a function of time only, stay the same).
- Common walk. An OU process with a half-life of 12 hours: locally a random walk with
  `_COMMON_VOL`, but bounded over the years (its stationary sigma is 7 %), so each
  symbol's price stays in its range (it is centred so that ±2.5 sigma fits). Its values
  at anchors every 2^16 grid steps (54.6 min) are the exact OU recursion run from 0 over
  the 264 anchors before (20 half-lives: the start is forgotten to 1e-6); between two
  anchors a Brownian bridge is filled in by random midpoint displacement (Lévy's
  construction) down to the 50 ms grid, one block at a time, cached.
- Spread. Per symbol an OU with a 12 s half-life on the 50 ms grid: its value over a
  segment of 2^14 steps (13.7 min) is the exact recursion, with the kicks (the state set
  to ±2-3 sigma, on average every 30 s), run from 0 starting 2^13 steps (410 s, 34
  half-lives) before the segment, once per segment, cached. For the REST history scipy's
  `lfilter` runs it between two kicks: the loop's very floating-point operations, three
  times as fast (`_kicked_ou`).

A trade's price is the grid value at the 50 ms step holding its time, off by half the
bid-ask spread towards its side. The hashes are integer arithmetic, the normals sums of
four 16-bit uniforms (Irwin-Hall: + and * only), the recursions fixed sequences of
multiplications and additions, so every process computes the same floats and prices. A
market computes each symbol's trades ahead, in batches of a quarter second (at least 64
ids), and hands them out as the clock passes them: about 0.7 % of a core for 2 symbols at
2,000 trades/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import islice
from operator import attrgetter
from statistics import NormalDist
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import msgspec
import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from pairs_tui.feed.demo_rest import RestApi, RestCounters

# Price ranges for well-known symbols; anything else trades around 100.
_START_PRICES: dict[str, tuple[float, float]] = {
    "BTCUSDT": (60_000.0, 100_000.0),
    "ETHUSDT": (2_000.0, 4_000.0),
    "BNBUSDT": (400.0, 800.0),
    "SOLUSDT": (100.0, 250.0),
    "ETHBTC": (0.03, 0.06),
}
_COMMON_VOL = 4e-4  # common random walk, per sqrt(second)
_COMMON_HALF_LIFE = 12 * 3600.0  # seconds: over days the common walk stays near its centre
_SPREAD_STD = 1.5e-3  # stationary std of each symbol's OU spread
_HALF_LIFE = 12.0  # seconds
_KICK_EVERY = 30.0  # mean seconds between 2-3 sigma excursions, per symbol
_BOUNCE = 0.5e-4  # half the bid-ask spread, relative
_BOUNCES = {True: 1 - _BOUNCE, False: 1 + _BOUNCE}  # by buyer_maker: a seller hits the bid

DEFAULT_SEED = 1  # without --seed every demo run shows the same market
EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: trade 0 of every symbol, at any rate
STEP_MS = 50  # the price grid
_SLOT = 16  # trades per arrival slot
_SEGMENT_BITS = 14  # spread: 2^14 grid steps per segment
_SPREAD_WARMUP = 1 << 13  # spread: steps run from 0 before a segment
_BLOCK_BITS = 16  # common walk: 2^16 grid steps between anchors
_ANCHOR_WARMUP = 264  # common walk: anchors run from 0 before an anchor (20 half-lives)
_CHUNK = 1 << 16  # ids computed at once
_MAX_CATCH_UP_MS = 10_000  # a server clock this far behind skips ahead (a gap) instead
_OPEN_TIMEOUT = 120.0  # s: a REST answer is made inside the handshake (up to ~15 s)

_STEP_S = STEP_MS / 1000
_SPREAD_PHI = 2.0 ** (-_STEP_S / _HALF_LIFE)
_SPREAD_SHOCK = _SPREAD_STD * math.sqrt(1 - _SPREAD_PHI**2)
_KICK_P = _STEP_S / _KICK_EVERY
_COMMON_STD = _COMMON_VOL * math.sqrt(_COMMON_HALF_LIFE / (2 * math.log(2)))
_BLOCK_S = (1 << _BLOCK_BITS) * _STEP_S
_ANCHOR_PHI = 2.0 ** (-_BLOCK_S / _COMMON_HALF_LIFE)
_ANCHOR_SHOCK = _COMMON_STD * math.sqrt(1 - _ANCHOR_PHI**2)
_AR_B = np.array([1.0])  # lfilter's y[n] = 1.0 * x[n] + phi * y[n - 1]
_AR_A = np.array([1.0, -_SPREAD_PHI])


@dataclass(frozen=True, slots=True)
class DemoTrade:
    symbol: str  # uppercase
    trade_id: int
    time_ms: int
    price: str
    qty: str
    buyer_maker: bool


# -- counter-based randomness -------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U16 = np.uint64(0xFFFF)
_SQRT3 = math.sqrt(3.0)


def _key(*parts: object) -> np.uint64:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _hash(key: np.uint64, index: np.ndarray) -> np.ndarray:
    """SplitMix64 of key + index * golden ratio: 64 random bits per index (uint64)."""
    z = index.astype(np.uint64) * _GOLDEN + key
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def _uniform(bits: np.ndarray) -> np.ndarray:
    """[0, 1) from the top 53 bits: exact."""
    return (bits >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def _normal(bits: np.ndarray) -> np.ndarray:
    """About N(0, 1), within ±3.46: the sum of four 16-bit uniforms, with + and * only,
    so every process gets the very same floats."""
    s = (bits & _U16) + ((bits >> np.uint64(16)) & _U16)
    s += ((bits >> np.uint64(32)) & _U16) + (bits >> np.uint64(48))
    return ((s.astype(np.float64) + 2.0) * (1.0 / 65536.0) - 2.0) * _SQRT3


def _piecewise(k: np.ndarray, bits: int, part) -> np.ndarray:
    """`part(j)[k - (j << bits)]` for sorted grid steps k spanning blocks j = k >> bits."""
    blocks = k >> bits
    first, last = int(blocks[0]), int(blocks[-1])
    if first == last:
        return part(first)[k - (first << bits)]
    out = np.empty(len(k))
    for j in range(first, last + 1):
        lo, hi = np.searchsorted(blocks, [j, j + 1])
        if hi > lo:
            out[lo:hi] = part(j)[k[lo:hi] - (j << bits)]
    return out


class _Cache(dict):
    """A small dict that forgets its oldest entry."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key, value):
        if len(self) >= self.size:
            del self[next(iter(self))]
        self[key] = value
        return value


# -- the market as a function of time -------------------------------------------------------
class _CommonWalk:
    """The common factor on the 50 ms grid: anchors by OU recursion, bridges between."""

    def __init__(self, seed: int) -> None:
        self._anchor_key = _key(seed, "common", "anchor")
        self._bridge_key = _key(seed, "common", "bridge")
        self._anchors = _Cache(64)
        self._blocks = _Cache(3)

    def anchor(self, j: int) -> float:
        if (x := self._anchors.get(j)) is not None:
            return x
        shocks = _normal(_hash(self._anchor_key, np.arange(j - _ANCHOR_WARMUP, j + 1)))
        x, phi, scale = 0.0, _ANCHOR_PHI, _ANCHOR_SHOCK
        for z in shocks.tolist():
            x = phi * x + scale * z
        return self._anchors.put(j, x)

    def block(self, j: int) -> np.ndarray:
        """The walk at grid steps j·2^16 ... (j+1)·2^16 (both anchors included)."""
        if (values := self._blocks.get(j)) is not None:
            return values
        n = 1 << _BLOCK_BITS
        values = np.empty(n + 1)
        values[0], values[n] = self.anchor(j), self.anchor(j + 1)
        z = _normal(_hash(self._bridge_key, np.arange(j * n, (j + 1) * n)))
        step = n
        while step > 1:  # the midpoint of each interval, given its ends
            half = step // 2
            sd = _COMMON_VOL * math.sqrt(step * _STEP_S) / 2
            ends = values[0:n:step] + values[step : n + 1 : step]
            values[half:n:step] = ends * 0.5 + z[half:n:step] * sd
            step = half
        return self._blocks.put(j, values)

    def at(self, k: np.ndarray) -> np.ndarray:
        return _piecewise(k, _BLOCK_BITS, self.block)


def tape_constants(seed: int, symbol: str) -> tuple[float, float, int]:
    """A symbol's loading on the common walk, log mid price and price decimals."""
    rng = random.Random(f"{seed}:{symbol}")
    loading = 1.0 if symbol == "BTCUSDT" else rng.uniform(0.8, 1.5)
    low, high = _START_PRICES.get(symbol, (100.0, 100.0))
    half = (math.log(high) - math.log(low)) / 2
    slack = max(0.0, half - 2.5 * loading * _COMMON_STD)  # stay inside the range
    log_mid = math.log(low) + half + rng.uniform(-slack, slack)
    decimals = max(2, min(8, 6 - math.floor(math.log10(math.exp(log_mid)))))
    return loading, log_mid, decimals


def _kicked_ou(shocks: np.ndarray, at: np.ndarray, kicks: np.ndarray, filtered: bool) -> np.ndarray:
    """x[i] = phi * x[i - 1] + shocks[i] from x = 0, except that x[at[j]] = kicks[j] (the
    kick replaces the state). `filtered`: scipy's lfilter runs each stretch between two
    kicks, in a third of the loop's time, to the very same floats: lfilter([1], [1, -phi])
    computes y = (1.0 * x) + (phi * y_prev, held in its state as 0.0 * x - (-phi) * y_prev),
    the loop's two roundings, with or without fused multiply-adds (1.0 * x and 0.0 * x
    are exact); a stretch's first step takes phi * x_prev, rounded by Python, as the
    filter's initial state. The stream computes one segment per 13.7 minutes and uses the
    loop: importing scipy.signal takes half a second, which would delay every demo start;
    the REST history (hours of segments, in a worker thread) filters."""
    x, done, count = 0.0, 0, len(shocks)
    stops = zip([*at.tolist(), count], [*kicks.tolist(), 0.0], strict=True)
    if not filtered:
        values, phi = shocks.tolist(), _SPREAD_PHI
        out: list[float] = []
        for pos, kick in stops:
            for s in values[done:pos]:
                x = phi * x + s
                out.append(x)
            if pos < count:  # the kick replaces the state
                x = kick
                out.append(x)
            done = pos + 1
        return np.array(out)
    from scipy.signal import lfilter  # half a second, once: see above

    y = np.empty(count)
    for pos, kick in stops:
        if pos > done:
            y[done:pos] = lfilter(_AR_B, _AR_A, shocks[done:pos], zi=[_SPREAD_PHI * x])[0]
            x = float(y[pos - 1])
        if pos < count:
            y[pos] = x = kick
        done = pos + 1
    return y


@dataclass(frozen=True, slots=True)
class TradeColumns:
    """Consecutive trades of one symbol as arrays (see `_Tape.columns`)."""

    first: int  # the id of element 0
    rel_ms: np.ndarray  # int64 ms since EPOCH_MS, non-decreasing
    log_prices: np.ndarray  # float64 ln(mid) at the trade's grid step
    buyer_maker: np.ndarray  # bool
    qty_units: np.ndarray  # int64 quantity in units of 1e-8


class _Tape:
    """One symbol of one seed: its constants, arrivals, spread and trades."""

    def __init__(
        self, seed: int, symbol: str, common: _CommonWalk, *, filtered: bool = False
    ) -> None:
        self.symbol = symbol
        self.common = common
        self.filtered = filtered  # the spread by lfilter, not the loop: see `_kicked_ou`
        self.loading, self.log_mid, self.decimals = tape_constants(seed, symbol)
        # 4096 quantiles of the lognormal quantity, median 0.05 / price^(1/4)
        unit = NormalDist()
        scale = 0.05 / math.exp(self.log_mid / 4)
        self.qtys = [
            f"{max(1e-5, scale * math.exp(unit.inv_cdf((i + 0.5) / 4096))):.5f}000"
            for i in range(4096)
        ]
        self.qty_units = np.array([int(q.replace(".", "")) for q in self.qtys])  # of 1e-8
        self._arrival = _key(seed, symbol, "arrival")
        self._side = _key(seed, symbol, "side")
        self._shock = _key(seed, symbol, "shock")
        self._kick = _key(seed, symbol, "kick")
        self._kick_size = _key(seed, symbol, "kick size")
        self._segments = _Cache(3)

    # -- prices
    def segment(self, c: int) -> np.ndarray:
        """The spread at grid steps c·2^14 ... (c+1)·2^14 - 1."""
        if (values := self._segments.get(c)) is not None:
            return values
        first = (c << _SEGMENT_BITS) - _SPREAD_WARMUP
        index = np.arange(first, (c + 1) << _SEGMENT_BITS)
        shocks = _normal(_hash(self._shock, index)) * _SPREAD_SHOCK
        u = _uniform(_hash(self._kick, index))
        at = np.flatnonzero(u < _KICK_P)
        size = (_uniform(_hash(self._kick_size, index[at])) + 2.0) * _SPREAD_STD
        kicks = np.where(u[at] < _KICK_P / 2, -size, size)
        spread = _kicked_ou(shocks, at, kicks, self.filtered)[_SPREAD_WARMUP:].copy()
        return self._segments.put(c, spread)

    def log_prices(self, k: np.ndarray) -> np.ndarray:
        """ln(price) at sorted grid steps k (steps of `STEP_MS` since `EPOCH_MS`)."""
        spread = _piecewise(k, _SEGMENT_BITS, self.segment)
        return self.log_mid + self.loading * self.common.at(k) + spread

    # -- arrivals
    def times(self, first: int, stop: int, period_ms: float) -> np.ndarray:
        """Trade times in ms since `EPOCH_MS` of ids first ... stop - 1 (non-decreasing)."""
        s0, s1 = first // _SLOT, -(-stop // _SLOT)
        u = _uniform(_hash(self._arrival, np.arange(s0 * _SLOT, s1 * _SLOT)))
        u = np.sort(u.reshape(-1, _SLOT), axis=1)
        u += np.arange(s0, s1, dtype=np.float64)[:, None]
        ms = np.floor(u.reshape(-1) * (period_ms * _SLOT)).astype(np.int64)
        return ms[first - s0 * _SLOT : stop - s0 * _SLOT]

    def id_at(self, rel_ms: int, period_ms: float) -> int:
        """The first id whose time (ms since `EPOCH_MS`) is at or after `rel_ms`."""
        if rel_ms <= 0:
            return 0
        slot = int(rel_ms // (period_ms * _SLOT))  # the slot of that instant
        first = max(0, (slot - 1) * _SLOT)
        times = self.times(first, (slot + 2) * _SLOT, period_ms)
        return first + int(np.searchsorted(times, rel_ms, "left"))

    def trades(
        self, first: int, end_ms: int, period_ms: float, limit: int = _CHUNK
    ) -> list[DemoTrade]:
        """Ids from `first` on whose time is before `end_ms` (absolute), at most `limit`."""
        end_rel = end_ms - EPOCH_MS
        # id n lies in slot n // 16, so its time is at least (n - 15) * period_ms
        stop = min(first + limit, int(end_rel // period_ms) + 2 * _SLOT)
        if end_rel <= 0 or stop <= first:
            return []
        rel = self.times(first, stop, period_ms)
        return self._build(first, rel[: int(np.searchsorted(rel, end_rel, "left"))])

    def batch(self, first: int, stop: int, period_ms: float) -> list[DemoTrade]:
        """Ids first ... stop - 1."""
        return self._build(first, self.times(first, stop, period_ms))

    def price_value(self, log_price: float, buyer_maker: bool) -> float:
        """A trade's price as a float rounded to the symbol's decimals: the one place a
        log price becomes a price (its text is `f"{value:.8f}"`). Non-decreasing in
        `log_price + ln(bounce)`, but for float errors: see `demo_history` for finding a
        bar's high and low from that sum."""
        return round(math.exp(log_price) * _BOUNCES[buyer_maker], self.decimals)

    def columns(self, first: int, stop: int, period_ms: float) -> TradeColumns:
        """Ids first ... stop - 1 as arrays, not objects: for bars of millions of trades."""
        rel = self.times(first, stop, period_ms)
        side = _hash(self._side, np.arange(first, stop))
        return TradeColumns(
            first,
            rel,
            self.log_prices(rel // STEP_MS) if len(rel) else np.empty(0),
            (side & np.uint64(1)).astype(bool),
            self.qty_units[((side >> np.uint64(1)) & np.uint64(4095)).astype(np.intp)],
        )

    def _build(self, first: int, rel: np.ndarray) -> list[DemoTrade]:
        """The trades from id `first` on, at these times (ms since `EPOCH_MS`)."""
        count = len(rel)
        if not count:
            return []
        log_prices = self.log_prices(rel // STEP_MS).tolist()
        side = _hash(self._side, np.arange(first, first + count))
        makers = (side & np.uint64(1)).astype(bool).tolist()
        qtys = [self.qtys[i] for i in ((side >> np.uint64(1)) & np.uint64(4095)).tolist()]
        symbol, value = self.symbol, self.price_value
        text: dict[tuple[float, bool], str] = {}  # busy tapes: many trades per grid step
        out = []
        for n, t, lp, m, q in zip(
            range(first, first + count),
            (rel + EPOCH_MS).tolist(),
            log_prices,
            makers,
            qtys,
            strict=True,
        ):
            if (price := text.get((lp, m))) is None:
                price = text[lp, m] = f"{value(lp, m):.8f}"
            out.append(DemoTrade(symbol, n, t, price, q, m))
        return out


@dataclass(slots=True)
class _Instrument:
    tape: _Tape
    rng: random.Random  # for the skipped-ids fault only
    next_id: int | None = None  # the next id to compute; None: from the market's clock
    ahead: list[DemoTrade] = field(default_factory=list)  # computed, not produced yet
    ahead_ms: list[int] = field(default_factory=list)  # their times
    pos: int = 0  # the next of `ahead` to produce
    emitted: int = 0
    skip: int = 0  # ids still to leave out (fault)


class SyntheticMarket:
    """The demo market of one seed, produced in time order from `start_ms` on.

    Its trades and prices depend on the seed, the symbol, the rate and the time only:
    two markets of one seed and rate give the very same trades for the same interval,
    whenever they start. `advance_to(t)` gives the trades of the next stretch up to `t`
    seconds after `start_ms` (wall-clock now unless given: a fixed start replays the very
    same tape); `trades_between` gives any interval of any symbol without state."""

    def __init__(
        self,
        seed: int | None = None,
        rate: float = 20.0,
        *,
        dt: float = 0.05,  # kept for old callers: the price grid is fixed at STEP_MS
        start_ms: int | None = None,
    ):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number, not {rate!r}")
        self.seed = DEFAULT_SEED if seed is None else seed
        self.rate = float(rate)
        self.dt = dt
        self.start_ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000
        self.now = 0.0  # seconds since start_ms produced so far
        self._cut_ms: int | None = None  # trades before this time have been produced
        self._period_ms = 1000.0 / self.rate  # mean ms between two trades of a symbol
        self._common = _CommonWalk(self.seed)
        self._tapes: dict[str, _Tape] = {}
        self._instruments: dict[str, _Instrument] = {}
        self.skip_ids_every = 0  # fault: leave out 1-3 ids after every N trades of a symbol

    @property
    def cut_ms(self) -> int:
        """Every trade before this time (ms) has been produced."""
        return self.start_ms if self._cut_ms is None else self._cut_ms

    def add(self, symbol: str) -> None:
        """Produce this symbol's trades too, from the market's clock on."""
        symbol = symbol.upper()
        if symbol not in self._instruments:
            rng = random.Random(f"{self.seed}:{symbol}:faults")
            self._instruments[symbol] = _Instrument(self._tape(symbol), rng)

    def advance_to(self, t: float) -> list[DemoTrade]:
        """The trades up to `t` seconds after `start_ms` not produced yet, in time order."""
        return self.advance_until(self.start_ms + round(t * 1000))

    def advance_until(self, end_ms: int) -> list[DemoTrade]:
        """The trades before `end_ms` (ms since the Unix epoch) not produced yet, in time
        order (each symbol's in id order)."""
        cut = self.cut_ms
        if end_ms <= cut:
            return []
        out: list[DemoTrade] = []
        ahead = max(64, int(self.rate / 4))  # ids computed at once: 0.25 s, or 64
        for ins in self._instruments.values():
            if ins.next_id is None:
                ins.next_id = ins.tape.id_at(cut - EPOCH_MS, self._period_ms)
            while True:
                if ins.pos == len(ins.ahead):
                    first, ins.next_id = ins.next_id, ins.next_id + ahead
                    ins.ahead = ins.tape.batch(first, ins.next_id, self._period_ms)
                    ins.ahead_ms = [t.time_ms for t in ins.ahead]
                    ins.pos = 0
                stop = bisect_left(ins.ahead_ms, end_ms, ins.pos)
                due = ins.ahead[ins.pos : stop]
                ins.pos = stop
                out.extend(self._skipping(ins, due) if self.skip_ids_every else due)
                if stop < len(ins.ahead):
                    break
        self._cut_ms = end_ms
        self.now = (end_ms - self.start_ms) / 1000
        if len(self._instruments) > 1:
            out.sort(key=attrgetter("time_ms"))  # stable: each symbol keeps its id order
        return out

    def skip_until(self, end_ms: int) -> None:
        """Move the clock to `end_ms` without producing the trades before it."""
        if end_ms <= self.cut_ms:
            return
        for ins in self._instruments.values():
            ins.next_id = ins.tape.id_at(end_ms - EPOCH_MS, self._period_ms)
            if ins.pos < len(ins.ahead):  # never go back
                ins.next_id = max(ins.next_id, ins.ahead[ins.pos].trade_id)
            ins.ahead, ins.ahead_ms, ins.pos = [], [], 0
        self._cut_ms = end_ms
        self.now = (end_ms - self.start_ms) / 1000

    def trades_between(self, symbol: str, start_ms: int, end_ms: int) -> list[DemoTrade]:
        """Every trade of `symbol` from `start_ms` (included) to `end_ms` (excluded), in
        id order, as any market of this seed and rate produces them at any time."""
        tape = self._tape(symbol.upper())
        next_id = tape.id_at(start_ms - EPOCH_MS, self._period_ms)
        out: list[DemoTrade] = []
        while True:
            trades = tape.trades(next_id, end_ms, self._period_ms)
            out.extend(trades)
            if len(trades) < _CHUNK:
                return out
            next_id += _CHUNK

    def id_at(self, symbol: str, time_ms: int) -> int:
        """The id of the first trade of `symbol` at or after `time_ms`."""
        return self._tape(symbol.upper()).id_at(time_ms - EPOCH_MS, self._period_ms)

    def price_at(self, symbol: str, time_ms: int) -> float:
        """The mid price of `symbol` at `time_ms` (trades are half the spread off it)."""
        k = np.array([(time_ms - EPOCH_MS) // STEP_MS])
        return math.exp(float(self._tape(symbol.upper()).log_prices(k)[0]))

    def _tape(self, symbol: str) -> _Tape:
        if (tape := self._tapes.get(symbol)) is None:
            tape = self._tapes[symbol] = _Tape(self.seed, symbol, self._common)
        return tape

    def _skipping(self, ins: _Instrument, trades: list[DemoTrade]) -> list[DemoTrade]:
        kept = []
        for trade in trades:
            if ins.skip:
                ins.skip -= 1
                continue
            kept.append(trade)
            ins.emitted += 1
            if ins.emitted % self.skip_ids_every == 0:
                ins.skip = 1 + ins.rng.randrange(3)
        return kept


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
    """A Binance-protocol server on loopback. Use `async with DemoServer() as server:`.

    It streams trades at `url` and serves Binance's REST market data at `rest_url`, the
    same port (`pairs_tui.feed.demo_rest`): history, request weights, 429s and bans."""

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
    weight_limit: int = 6000  # REST request weight per minute, as Binance's
    halted: frozenset[str] = frozenset()  # REST: symbols listed with status BREAK
    ban_seconds: float = 120.0  # REST: HTTP 418 for this long after ignoring a 429

    def __post_init__(self) -> None:
        from pairs_tui.feed.demo_rest import RestApi  # it imports this module

        self.market = SyntheticMarket(self.seed, self.rate)
        self.rest: RestApi = RestApi(
            self.market.seed,
            self.market.rate,
            weight_limit=self.weight_limit,
            halted=self.halted,
            ban_seconds=self.ban_seconds,
        )
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

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def rest_counters(self) -> RestCounters:
        """REST requests by path, weight used, 429s, 418s and 400s since the start."""
        return self.rest.counters

    @property
    def used_weight(self) -> int:
        """The REST request weight used in the current calendar minute."""
        return self.rest.used_weight()

    async def start(self) -> DemoServer:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            process_request=self._route,
            open_timeout=_OPEN_TIMEOUT,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.market.skip_until(_wall_ms())  # trades from now on, as Binance sends
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
            now = _wall_ms()  # the market is a function of the wall clock
            if now - self.market.cut_ms > _MAX_CATCH_UP_MS:  # the process was suspended
                self.market.skip_until(now - _MAX_CATCH_UP_MS)
            trades = self.market.advance_until(now)
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
    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path
        if path in self.rest.endpoints:
            return await self.rest.respond(path, parts.query)
        if path == "/stream" or path == "/ws" or path.startswith("/ws/"):
            return None
        return connection.respond(HTTPStatus.NOT_FOUND, "unknown endpoint\n")

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None, "handlers run after the handshake"
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


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
