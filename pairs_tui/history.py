"""History at start and holes filled: Binance's REST market data stitched onto the tape.

The tape of a series begins at its first stored trade (id X, time T). Before it, each
timeframe gets the exchange's closed klines. The bar in which T falls is made exact
without fetching thousands of trades: at the finest timeframe it is the aggregates of
`aggTrades` before X (one request), and at each coarser one it is the finer klines from
its open up to the finer seam bar, then that seam bar (1m = 1s klines + the 1s seam;
5m = 1m klines + the 1m seam). Stored with `until_id = X`, the engine completes it with
the stored trades, so every bar equals the one the complete tape would give.

A hole in the tape (a reconnect, an outage) is filled with the very trades that were
missed (`historicalTrades` by id, or `aggTrades` for an aggregate stream) and the gap is
marked filled; a hole longer than `MAX_FILL` trades is left and said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from pairs_tui.feed.rest import PAGE, AggTrade, Kline, RestClient
from pairs_tui.model import TIMEFRAMES, Gap, HistoryBar, StreamKind, TradeRow, check_trade
from pairs_tui.store import TickStore

MAX_FILL = 20_000  # trades one hole may be filled with (historicalTrades: 25 weight / 1000)
CLOCK_SLACK_US = 2_000_000  # "closed" by the local clock only this long after: skew


@dataclass(frozen=True)
class Piece:
    """Part of a bar, in tape order."""

    open: float
    high: float
    low: float
    close: float
    volume: Decimal
    trades: int


def compose(pieces: Sequence[Piece], open_us: int, until_id: int) -> HistoryBar | None:
    """One bar of consecutive pieces: first open, last close, extremes, sums."""
    if not pieces:
        return None
    return HistoryBar(
        open_us,
        pieces[0].open,
        max(p.high for p in pieces),
        min(p.low for p in pieces),
        pieces[-1].close,
        float(sum((p.volume for p in pieces), Decimal(0))),
        sum(p.trades for p in pieces),
        until_id,
    )


def kline_bar(k: Kline) -> HistoryBar:
    return HistoryBar(
        k.open_ms * 1000,
        float(k.open),
        float(k.high),
        float(k.low),
        float(k.close),
        float(k.volume),
        k.trades,
    )


def kline_piece(bar: HistoryBar) -> Piece:
    return Piece(bar.open, bar.high, bar.low, bar.close, Decimal(repr(bar.volume)), bar.trades)


def finer(timeframe: str) -> str | None:
    """The next smaller timeframe (each divides the next: 1s, 1m, 5m)."""
    ordered = sorted(TIMEFRAMES, key=TIMEFRAMES.__getitem__)
    i = ordered.index(timeframe)
    return ordered[i - 1] if i else None


def floor(ts_us: int, timeframe: str) -> int:
    tf = TIMEFRAMES[timeframe]
    return ts_us // tf * tf


class History:
    """Fetches history for one store's series and stores it."""

    def __init__(
        self,
        rest: RestClient,
        store: TickStore,
        kind: StreamKind,
        on_event: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.rest = rest
        self.store = store
        self.kind = kind
        self.on_event = on_event
        self.bars_stored = 0  # with trades, as fetched by this object
        self.covered = 0  # bars asked for so far, stored now or before (for progress bars)
        self.total = 0  # bars asked for in all
        self.trades_filled = 0
        self.gaps_filled = 0
        self._said: set[tuple[str, int]] = set()  # gaps whose trouble was said (once)

    async def backfill(
        self, symbols: tuple[str, ...], bars: Mapping[str, int], *, now_us: int | None = None
    ) -> set[str]:
        """`bars[tf]` closed bars of each timeframe before each symbol's tape (before
        now, when nothing is stored yet), timeframe by timeframe in the order given (the
        one on screen first), then the seam bars; returns the symbols whose tape has
        begun, so are complete. What is stored is not asked again."""
        firsts = {s: await self.store.first_trade(s, self.kind) for s in symbols}
        now = (now_us or time.time_ns() // 1000) - CLOCK_SLACK_US
        spans: dict[tuple[str, str], tuple[int, int]] = {}
        for symbol, first in firsts.items():
            start_us = first[1] if first else now
            for tf in bars:
                seam = floor(start_us, tf)
                begin = seam - bars[tf] * TIMEFRAMES[tf]
                for t in bars:  # the coarser seam bars are made of this timeframe's klines
                    if TIMEFRAMES[t] > TIMEFRAMES[tf]:
                        begin = min(begin, floor(start_us, t))
                spans[tf, symbol] = (begin, seam)
                self.total += (seam - begin) // TIMEFRAMES[tf]
        for tf in bars:
            for symbol in symbols:
                await self._klines(symbol, tf, *spans[tf, symbol])
        ordered = sorted(bars, key=TIMEFRAMES.__getitem__)
        return {
            symbol
            for symbol, first in firsts.items()
            if first is not None and await self._seam(symbol, *first, ordered)
        }

    async def _klines(self, symbol: str, tf: str, begin: int, end: int) -> None:
        """Closed klines opening in [begin, end), page by page, skipping stored pages."""
        tf_us = TIMEFRAMES[tf]
        held = await self.store.history_opens(symbol, self.kind, tf)
        page = begin
        while page < end:
            stop = min(end, page + PAGE * tf_us)
            if all(t in held for t in range(page, stop, tf_us)):
                self.covered += (stop - page) // tf_us
                page = stop
                continue
            klines = await self.rest.klines(
                symbol, tf, start_ms=page // 1000, end_ms=(stop - 1) // 1000
            )
            got = [kline_bar(k) for k in klines if page <= k.open_ms * 1000 < stop]
            await self.store.add_history(symbol, self.kind, tf, [b for b in got if _sane(b)])
            self.bars_stored += sum(1 for b in got if b.trades)
            self.covered += (stop - page) // tf_us
            page = stop  # at most PAGE bars were asked for: they all came

    async def _seam(self, symbol: str, first_id: int, first_us: int, tfs: list[str]) -> bool:
        """The bars in which the tape begins, each holding the trades before it; False
        when that cannot be made yet (the tape's first trades are not all stored)."""
        stored = await self.store.history(symbol, self.kind, tfs[-1], floor(first_us, tfs[-1]))
        if any(b.until_id == first_id for b in stored):  # made before: the tape is the same
            return True
        pieces = await self._before(symbol, first_id, first_us)
        if pieces is None:
            return False
        seam = {tfs[0]: compose(pieces, floor(first_us, tfs[0]), first_id)}
        for tf in tfs[1:]:
            fine = finer(tf)
            assert fine is not None and fine in seam, "the timeframes nest"
            opened, fine_seam = floor(first_us, tf), floor(first_us, fine)
            klines = await self.store.history(symbol, self.kind, fine, opened)
            parts = [kline_piece(b) for b in klines if b.until_id is None and b.open_us < fine_seam]
            below = seam[fine]
            if below is not None:
                parts.append(kline_piece(below))
            seam[tf] = compose([p for p in parts if p.trades], opened, first_id)
        for tf, bar in seam.items():
            if bar is not None:
                await self.store.add_history(symbol, self.kind, tf, [bar])
        return True

    async def _before(self, symbol: str, first_id: int, first_us: int) -> list[Piece] | None:
        """The trades of the tape's first second before its first trade, as pieces (None:
        not yet, see `_part_before`)."""
        second = floor(first_us, min(TIMEFRAMES, key=TIMEFRAMES.__getitem__))
        aggs = await self.rest.agg_trades(symbol, start_ms=second // 1000, end_ms=first_us // 1000)
        while len(aggs) % PAGE == 0 and aggs and aggs[-1].time_ms * 1000 <= first_us:
            more = await self.rest.agg_trades_from(symbol, aggs[-1].agg_id + 1)
            if not more:
                break
            aggs += more
        pieces = []
        for agg in aggs:
            if (agg.agg_id if self.kind is StreamKind.AGG_TRADE else agg.first_id) >= first_id:
                break  # the tape from here on
            piece = await self._part_before(symbol, agg, first_id)
            if piece is None:
                return None
            pieces.append(piece)
        return pieces

    async def _part_before(self, symbol: str, agg: AggTrade, first_id: int) -> Piece | None:
        """The part of an aggregate before the tape's first id. One that straddles it
        leaves the rest of its quantity to the stored trades: None until they are all
        stored (they come in the same frames, committed within a flush interval)."""
        price = float(agg.price)
        qty = Decimal(agg.qty)
        if self.kind is StreamKind.AGG_TRADE:  # the tape's ids are aggregate ids
            return Piece(price, price, price, price, qty, 1)
        if agg.last_id >= first_id:
            stored = await self.store.qty_between(symbol, self.kind, first_id, agg.last_id)
            if len(stored) < agg.last_id - first_id + 1:
                return None
            qty -= sum((Decimal(q) for q in stored), Decimal(0))
        count = min(agg.last_id, first_id - 1) - agg.first_id + 1
        return Piece(price, price, price, price, qty, count)

    async def fill_gaps(self, bars: Mapping[str, int]) -> None:
        """Every hole in the tape filled with the trades that were missed; one of more
        than MAX_FILL trades (a restart after hours) bridged with klines instead, as many
        as `bars[tf]` before its end."""
        for rowid, gap in await self.store.open_gaps():
            if gap.kind is not self.kind:
                continue
            if gap.missing > MAX_FILL:
                await self._bridge(rowid, gap, bars)
                continue
            rows = await self._missed(gap)
            if len(rows) < gap.missing:  # asked again next time; said once
                if (gap.symbol, rowid) not in self._said:
                    self._said.add((gap.symbol, rowid))
                    self.on_event(
                        f"gap in {gap.symbol}: REST gave {len(rows):,} of its"
                        f" {gap.missing:,} trades; trying again"
                    )
                continue
            await self.store.fill_gap(rowid, rows, time.time_ns() // 1000)
            self.gaps_filled += 1
            self.trades_filled += len(rows)
            self.on_event(f"gap filled: {gap.symbol} {len(rows):,} trades from Binance REST")

    async def _bridge(self, rowid: int, gap: Gap, bars: Mapping[str, int]) -> None:
        """Whole klines between the last trade before the hole and the first after it;
        the bar at each end keeps only its stored trades (trades win where both exist)."""
        before = await self.store.last_trade(gap.symbol, self.kind, gap.from_id)
        after = await self.store.first_trade(gap.symbol, self.kind, gap.to_id + 1)
        if before is None or after is None:
            return
        for tf, n in bars.items():
            tf_us = TIMEFRAMES[tf]
            end = floor(after[1], tf)
            await self._klines(
                gap.symbol, tf, max(floor(before[1], tf) + tf_us, end - n * tf_us), end
            )
        await self.store.fill_gap(rowid, [], time.time_ns() // 1000)
        self.gaps_filled += 1
        self.on_event(
            f"gap filled: {gap.symbol} {gap.missing:,} trades too many to fetch (at most"
            f" {MAX_FILL:,}): bridged with klines; the bar at each end lacks the trades"
            " of the gap"
        )

    async def _missed(self, gap: Gap) -> list[TradeRow]:
        series = (await self.store.series_ids([gap.symbol], self.kind))[gap.symbol]
        rows: list[TradeRow] = []
        next_id = gap.from_id
        while next_id <= gap.to_id:
            limit = min(PAGE, gap.to_id - next_id + 1)
            if self.kind is StreamKind.AGG_TRADE:
                aggs = await self.rest.agg_trades_from(gap.symbol, next_id, limit)
                got = [(a.agg_id, a.time_ms, a.price, a.qty, a.buyer_maker) for a in aggs]
            else:
                trades = await self.rest.historical_trades(gap.symbol, next_id, limit)
                got = [(t.id, t.time_ms, t.price, t.qty, t.buyer_maker) for t in trades]
            got = [g for g in got if next_id <= g[0] <= gap.to_id]
            if not got:
                break
            for trade_id, ms, price, qty, maker in got:
                if check_trade(price, qty, trade_id, ms * 1000) is None:
                    rows.append((series, trade_id, ms * 1000, None, price, qty, maker))
            next_id = got[-1][0] + 1
        return rows


def _sane(bar: HistoryBar) -> bool:
    """A kline the charts can take: finite, positive, low <= open/close <= high."""
    values = (bar.open, bar.high, bar.low, bar.close)
    return (
        all(v > 0 and v != float("inf") for v in values)
        and bar.low <= min(bar.open, bar.close)
        and max(bar.open, bar.close) <= bar.high
        and bar.volume >= 0
        and bar.trades >= 0
    ) or bar.trades == 0
