"""The watchlist: every pair of a list of symbols, ranked live (the scanner screen and
the alerts set on the whole watchlist).

The symbols' bars are kept current from the store as the pair's are (`BarSet`: only new
trades folded in), at the timeframes wanted; the pairs are ranked again, in a worker
thread, only when a bar has closed (at most every `RANK_EVERY_S`). A ranking is
`pairs-tui scan`'s (`scan.rank_pairs`, the tests batched across pairs) over the same
bars, so a row's numbers are the ones `scan` prints for the store cut at the same moment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pairs_tui.engine import BarSet, PairView
from pairs_tui.model import TIMEFRAMES, AlertEvent, StreamKind
from pairs_tui.scan import ScanRow, rank_pairs
from pairs_tui.store import TickStore

RANK_EVERY_S = 2.0  # the least time between two rankings: a 1s view recomputes this often


@dataclass(frozen=True, slots=True)
class Ranking:
    """Every pair of the watchlist at every timeframe wanted, as of one moment."""

    view: PairView  # timeframe, W and L of `rows` (its pair is the one in the cockpit)
    symbols: tuple[str, ...]
    by_timeframe: Mapping[str, tuple[ScanRow, ...]]  # each sorted as `pairs-tui scan`
    asof_us: int  # every trade stored before this time is in the rows
    fired: tuple[AlertEvent, ...] = ()  # what the watchlist's alerts said of these rows

    @property
    def rows(self) -> tuple[ScanRow, ...]:
        return self.by_timeframe[self.view.timeframe]


@dataclass
class WatchlistEngine:
    """Ranks the watchlist's pairs from the store, again whenever a bar closes."""

    store: TickStore
    kind: StreamKind = StreamKind.TRADE
    _bars: BarSet | None = None
    _last: Ranking | None = None
    _key: tuple[object, object] = (None, None)  # what the last ranking was computed on
    _ranked_at: float = field(default=-1e9)

    async def refresh(
        self,
        symbols: tuple[str, ...],
        view: PairView,
        timeframes: Iterable[str] = (),
        *,
        now_us: int | None = None,
    ) -> Ranking | None:
        """The ranking of every pair of `symbols` at the view's timeframe (and at
        `timeframes`, for alerts): a new one once a bar has closed, else the last one;
        None with fewer than two symbols."""
        if len(symbols) < 2:
            self._bars = self._last = None
            return None
        wanted = tuple(tf for tf in TIMEFRAMES if tf == view.timeframe or tf in timeframes)
        bars = self._bars
        if bars is None or (bars.symbols, bars.timeframes, bars.keep) != (
            symbols,
            wanted,
            view.keep,
        ):
            bars = self._bars = BarSet(self.store, self.kind, symbols, wanted, view.keep)
        now = now_us if now_us is not None else time.time_ns() // 1000
        cut = await bars.update(now)
        shape = (view, wanted, symbols)  # a change of these is ranked at once
        moment = (tuple(cut // TIMEFRAMES[tf] for tf in wanted), bars.revs)
        clock = time.monotonic()
        last = self._last
        if last is not None and self._key == (shape, moment):
            return last
        if last is not None and self._key[0] == shape and clock - self._ranked_at < RANK_EVERY_S:
            return last
        for side in bars.sides.values():  # what a ranking reads: L + W + 2 bars of time
            side.keep_last(bars.span_us)
        frames = {s: side.merged_all() for s, side in bars.sides.items()}
        ranked = await asyncio.to_thread(
            lambda: {
                tf: tuple(
                    rank_pairs(
                        {s: f[tf] for s, f in frames.items()},
                        symbols,
                        PairView(view.symbol_a, view.symbol_b, tf, view.window, view.lookback),
                        self.kind,
                        cut,
                    )
                )
                for tf in wanted
            }
        )
        self._key, self._ranked_at = (shape, moment), clock
        self._last = Ranking(view, symbols, ranked, cut)
        return self._last
