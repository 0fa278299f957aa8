"""The demo market's history as Binance's REST market data serves it: klines, aggregate
trades and trades of any interval, computed from the seed and the clock like the stream.

Every answer is made of the very trades the stream sends and `trades_between` returns
(the same `_Tape` code, the same seed and rate): a kline's open, high, low and close are
the price strings of its first, dearest, cheapest and last trade, its volume the exact
sum of their quantities. Klines are computed on arrays (`_Tape.columns`), 2^16 ids at a
time, so that a day of trades costs well under a second and little memory: only each
bar's first and last trade and its few candidates for the high and the low go through
`_Tape.price_value`, the one place a log price becomes a price, so the strings are those
of the trades. Candidates: a price is round(exp(ln mid) * bounce), non-decreasing in
ln(mid) + ln(bounce) (up to the ~1e-16 errors of exp and the product); that sum computed
by numpy is within ~1e-15 of the truth. So a trade whose sum is more than 1e-12 below the
bar's largest has an exact value below the dearest trade's and a price no higher: the
high is the largest price of the trades within 1e-12 of the largest sum, all of them
priced exactly (rounding ties included). The low likewise.

Closed klines are kept (a few MB) so that a client asking again, or paging on, costs
nothing; the tapes of the symbols asked about and their spread segments are bounded too.
All of it runs in a worker thread (`asyncio.to_thread`), one request at a time (a lock).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import partial

import numpy as np

from pairs_tui.feed.demo import (
    _BOUNCE,
    DEFAULT_SEED,
    EPOCH_MS,
    _Cache,
    _CommonWalk,
    _Tape,
)

# Binance's intervals up to an hour (longer ones would take minutes of demo trades).
KLINE_INTERVALS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
}
_IDS = 1 << 16  # ids computed at once: the arrays stay in the CPU's caches
_NEAR = 1e-12  # candidates for a bar's high or low: this close to its extreme in logs
_BOUNCE_BY_MAKER = np.array([1 + _BOUNCE, 1 - _BOUNCE])  # by buyer_maker, as `_Tape.price_value`
_LOG_BOUNCE = np.log(_BOUNCE_BY_MAKER)
_TAPES = 4  # symbols whose tapes (and their cached spread segments) are kept
_KLINES_KEPT = 8_192  # closed klines kept, about 300 bytes each
_UNITS = 100_000_000  # quantities are integers of 1e-8
_MAX_TRADES = 1 << 27  # per klines answer (~15 s): all of 1000 1h bars at 20 trades/s


def _priced(
    value: Callable[[float, bool], float], lps: np.ndarray, makers: np.ndarray, at: np.ndarray
) -> list[float]:
    """The prices of the trades at these positions, exactly as the trades have them."""
    pairs = zip(lps[at].tolist(), makers[at].tolist(), strict=True)
    return [value(lp, m) for lp, m in pairs]


def _units_text(units: int) -> str:
    """An integer of 1e-8 as Binance's 8-decimal string."""
    return f"{units // _UNITS}.{units % _UNITS:08d}"


class DemoHistory:
    """REST history of the demo market of one seed and rate (what `SyntheticMarket` of
    that seed and rate trades), as JSON rows (bytes) ready to join into an answer.

    Times are ms since the Unix epoch; `now` is the server's clock: only trades before it
    exist. Methods are synchronous and CPU-bound: call them in a worker thread."""

    def __init__(self, seed: int | None = None, rate: float = 20.0) -> None:
        self.seed = DEFAULT_SEED if seed is None else seed
        self.rate = float(rate)
        self._period_ms = 1000.0 / self.rate  # as SyntheticMarket: the same ids
        self._common = _CommonWalk(self.seed)
        self._tapes: _Cache = _Cache(_TAPES)
        self._klines: _Cache = _Cache(_KLINES_KEPT)  # (symbol, interval, open) -> row
        self._lock = threading.Lock()

    def _tape(self, symbol: str) -> _Tape:
        if (tape := self._tapes.get(symbol)) is None:
            tape = _Tape(self.seed, symbol, self._common, filtered=True)
            self._tapes.put(symbol, tape)
        return tape

    def _id_at(self, tape: _Tape, time_ms: int) -> int:
        """The first id at or after `time_ms`: the ids before it are the trades before."""
        return tape.id_at(time_ms - EPOCH_MS, self._period_ms)

    # -- klines ---------------------------------------------------------------------------
    def klines(
        self,
        symbol: str,
        interval_ms: int,
        start: int | None,
        end: int | None,
        limit: int,
        now: int,
    ) -> list[bytes]:
        """Klines identified by their open time, like Binance's: with `start`, the oldest
        `limit` opening at or after it; else the newest `limit` opening at or before `end`
        (or now). None opens after now (the last may be the bar still forming: its trades
        so far) nor before the bar of the symbol's first trade. A bar without trades is
        there too: no trades, zero volume, every price the previous close.

        Unlike Binance, an answer holds at most about 2^27 trades (15 s of work): at a
        high demo rate a long request gets fewer bars than `limit` (the oldest from
        `start`, else the newest), and a client paging on gets the rest."""
        step = interval_ms
        with self._lock:
            tape = self._tape(symbol)
            first_ms = EPOCH_MS + int(tape.times(0, 1, self._period_ms)[0])
            oldest, newest = first_ms // step * step, now // step * step
            if end is not None:
                newest = min(newest, end // step * step)
            if start is not None:
                lo = max(oldest, -(-start // step) * step)
                hi = min(newest, lo + (limit - 1) * step)
            else:
                hi = newest
                lo = max(oldest, hi - (limit - 1) * step)
            most = max(1, int(_MAX_TRADES / (self.rate * step / 1000)))  # bars
            if (hi - lo) // step >= most:  # a busy tape: fewer bars, the pager asks again
                if start is not None:
                    hi = lo + (most - 1) * step
                else:
                    lo = hi - (most - 1) * step
            if hi < lo:
                return []
            opens = range(lo, hi + step, step)
            rows = [self._klines.get((symbol, step, o)) for o in opens]
            missing = [i for i, row in enumerate(rows) if row is None]
            if missing:
                a, b = missing[0], missing[-1] + 1
                fresh = self._bars(tape, opens[a], b - a, step, now)
                rows[a:b] = fresh
                for o, row in zip(opens[a:b], fresh, strict=True):
                    if o + step <= now:  # closed: it cannot change any more
                        self._klines.put((symbol, step, o), row)
            return [row for row in rows if row]

    def _bars(self, tape: _Tape, lo: int, count: int, step: int, now: int) -> list[bytes]:
        """Bars opening at lo, lo + step, ... (count of them) from the trades before now;
        b"" for a bar before the symbol's first trade."""
        value = tape.price_value
        trades = np.zeros(count, np.int64)
        volume = np.zeros(count, np.int64)
        taker = np.zeros(count, np.int64)
        quote = np.zeros(count)
        taker_quote = np.zeros(count)
        high = np.full(count, -math.inf)
        low = np.full(count, math.inf)
        opens: list[float | None] = [None] * count
        closes: list[float | None] = [None] * count
        first = self._id_at(tape, lo)
        stop = self._id_at(tape, min(lo + count * step, now))
        for a in range(first, stop, _IDS):
            cols = tape.columns(a, min(a + _IDS, stop), self._period_ms)
            bar = (cols.rel_ms + (EPOCH_MS - lo)) // step  # non-decreasing
            starts = np.flatnonzero(np.concatenate(([True], bar[1:] != bar[:-1])))
            ends = np.append(starts[1:], len(bar))
            which = bar[starts]  # the bars this chunk touches, each once
            maker, qty = cols.buyer_maker, cols.qty_units
            taking = np.where(maker, 0, qty)
            side = maker.astype(np.intp)
            key = cols.log_prices + _LOG_BOUNCE[side]
            # the prices for the quote volumes: a float sum, so numpy's exp and rounding
            # will do (at most an ulp off the trades' own, or a tick in a rare half case)
            price = np.round(np.exp(cols.log_prices) * _BOUNCE_BY_MAKER[side], tape.decimals)
            trades[which] += ends - starts
            volume[which] += np.add.reduceat(qty, starts)
            taker[which] += np.add.reduceat(taking, starts)
            quote[which] += np.add.reduceat(price * qty, starts) / _UNITS
            taker_quote[which] += np.add.reduceat(price * taking, starts) / _UNITS
            group = np.repeat(np.arange(len(starts)), ends - starts)
            priced = partial(_priced, value, cols.log_prices, maker)
            for extreme, reduce, accumulate, sign in (
                (high, np.maximum, np.maximum.at, -1),
                (low, np.minimum, np.minimum.at, 1),
            ):
                top = reduce.reduceat(key, starts)[group]
                (cand,) = np.nonzero(sign * (key - top) <= _NEAR)
                accumulate(extreme, bar[cand], priced(cand))
            for j, first_price, last_price in zip(
                which.tolist(), priced(starts), priced(ends - 1), strict=True
            ):
                if opens[j] is None:
                    opens[j] = first_price
                closes[j] = last_price
        close = None  # the previous close, for bars without trades
        if first > 0:
            before = tape.columns(first - 1, first, self._period_ms)
            close = value(float(before.log_prices[0]), bool(before.buyer_maker[0]))
        rows = []
        for j in range(count):
            o, c = opens[j], closes[j]
            if o is not None and c is not None:
                h, lw = float(high[j]), float(low[j])
            elif close is not None:  # no trades: every price the previous close
                o = h = lw = c = close
            else:  # none before either: the symbol had not begun
                rows.append(b"")
                continue
            close = c
            t = lo + j * step
            rows.append(
                f'[{t},"{o:.8f}","{h:.8f}","{lw:.8f}","{c:.8f}","{_units_text(int(volume[j]))}",'
                f'{t + step - 1},"{quote[j]:.8f}",{int(trades[j])},'
                f'"{_units_text(int(taker[j]))}","{taker_quote[j]:.8f}","0"]'.encode()
            )
        return rows

    # -- aggregate trades -----------------------------------------------------------------
    def agg_trades(
        self,
        symbol: str,
        from_id: int | None,
        start: int | None,
        end: int | None,
        limit: int,
        now: int,
    ) -> list[bytes]:
        """Aggregate trades as Binance's `aggTrades`: consecutive trades (by id) of the same
        millisecond, price and side make one. From `from_id`, or from `start`, the oldest
        `limit`; else the newest `limit` up to `end` (inclusive) or now.

        Binance numbers the aggregates 0, 1, 2, ...; the demo cannot without counting them
        from the epoch, so an aggregate's id `a` is its first trade's id `f` (increasing,
        not consecutive). `fromId` is then a trade id: an aggregate that begins before it
        is left out, so asking from `a + 1` or `l + 1` of the last one continues the list
        without a gap or a repeat. One millisecond has one price per side (the price is a
        function of the 50 ms grid step and the side), so "same millisecond and side" is
        "same millisecond, price and side"."""
        with self._lock:
            tape = self._tape(symbol)
            hi = self._id_at(tape, now)
            if end is not None:
                hi = min(hi, self._id_at(tape, end + 1))
            if from_id is not None or start is not None:
                lo = from_id if from_id is not None else self._id_at(tape, start or 0)
                return self._forward(tape, lo, hi, limit)
            return self._backward(tape, hi, limit)

    def _forward(self, tape: _Tape, lo: int, hi: int, limit: int) -> list[bytes]:
        span = 2 * limit + 64
        while True:
            b = min(hi, lo + span)
            found = self._aggregates(tape, lo, b, b == hi)
            if len(found) >= limit or b >= hi:
                return found[:limit]
            span *= 4

    def _backward(self, tape: _Tape, hi: int, limit: int) -> list[bytes]:
        span = 2 * limit + 64
        while True:
            a = max(0, hi - span)
            found = self._aggregates(tape, a, hi, True)
            if len(found) >= limit or a == 0:
                return found[len(found) - limit :] if len(found) > limit else found
            span *= 4

    def _aggregates(self, tape: _Tape, a: int, b: int, closed: bool) -> list[bytes]:
        """The aggregates of ids a ... b - 1 that begin at or after a and end before b.
        `closed`: no trade at b either (the end of the history); else an aggregate that
        goes on past b - 1 is left out."""
        if b <= a:
            return []
        c0 = a - 1 if a > 0 else 0  # the trade before: does id a begin an aggregate?
        cols = tape.columns(c0, b if closed else b + 1, self._period_ms)
        t, m = cols.rel_ms, cols.buyer_maker
        new = np.ones(len(t), bool)
        new[1:] = (t[1:] != t[:-1]) | (m[1:] != m[:-1])
        bounds = np.append(np.flatnonzero(new), len(t))
        begin, end = bounds[:-1], bounds[1:]
        keep = (begin >= a - c0) & (end <= b - c0)
        begin, end = begin[keep], end[keep]
        total = np.concatenate(([0], np.cumsum(cols.qty_units)))
        qty = (total[end] - total[begin]).tolist()
        lps, makers = cols.log_prices.tolist(), m.tolist()
        times = (t + EPOCH_MS).tolist()
        out = []
        for i, e, q in zip(begin.tolist(), end.tolist(), qty, strict=True):
            p = tape.price_value(lps[i], makers[i])
            mm = "true" if makers[i] else "false"
            out.append(
                f'{{"a":{c0 + i},"p":"{p:.8f}","q":"{_units_text(q)}","f":{c0 + i},'
                f'"l":{c0 + e - 1},"T":{times[i]},"m":{mm},"M":true}}'.encode()
            )
        return out

    # -- trades ---------------------------------------------------------------------------
    def trades(self, symbol: str, from_id: int | None, limit: int, now: int) -> list[bytes]:
        """Trades as Binance's `historicalTrades`: `limit` from `from_id` on, or the most
        recent `limit`; only trades before now."""
        with self._lock:
            tape = self._tape(symbol)
            hi = self._id_at(tape, now)
            lo = max(0, hi - limit) if from_id is None else from_id
            hi = min(hi, lo + limit)
            out = []
            for t in tape.batch(lo, hi, self._period_ms) if hi > lo else []:
                p, q = int(t.price.replace(".", "")), int(t.qty.replace(".", ""))
                quote = (p * q + _UNITS // 2) // _UNITS  # exact, rounded to 1e-8
                mm = "true" if t.buyer_maker else "false"
                out.append(
                    f'{{"id":{t.trade_id},"price":"{t.price}","qty":"{t.qty}",'
                    f'"quoteQty":"{_units_text(quote)}","time":{t.time_ms},'
                    f'"isBuyerMaker":{mm},"isBestMatch":true}}'.encode()
                )
            return out
