"""The watchlist: every pair of a list of symbols, ranked live (the scanner screen and
the alerts set on the whole watchlist).

The symbols' bars are kept current from the store as the pair's are (`BarSet`: only new
trades folded in), at the timeframes wanted; the pairs are ranked again, off the event
loop, only when a bar has closed (at most every `RANK_EVERY_S`). A ranking is
`pairs-tui scan`'s (`scan.rank_pairs`, the tests batched across pairs) over the same
bars, so a row's numbers are the ones `scan` prints for the store cut at the same moment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context, resource_tracker

import polars as pl

from pairs_tui.engine import SETTLE_US, BarSet, PairView
from pairs_tui.model import TIMEFRAMES, AlertEvent, StreamKind
from pairs_tui.scan import ScanRow, rank_pairs
from pairs_tui.store import TickStore

RANK_EVERY_S = 2.0  # the least time between two rankings: a 1s view recomputes this often
PROCESS_PAIRS = 100  # rankings of more pairs run in a worker process: no GIL shared
SHAPE_SETTLE_S = 0.5  # a new timeframe, W, L or watchlist is ranked once it stayed this long


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


def rank_frames(
    frames: Mapping[str, Mapping[str, pl.DataFrame]],
    symbols: tuple[str, ...],
    view: PairView,
    kind: StreamKind,
    now_us: int,
) -> dict[str, tuple[ScanRow, ...]]:
    """Every pair ranked at each timeframe of `frames` (timeframe -> symbol -> bars): what
    a worker thread or process runs."""
    return {
        tf: tuple(rank_pairs(bars, symbols, replace(view, timeframe=tf), kind, now_us))
        for tf, bars in frames.items()
    }


def _worker_pool() -> ProcessPoolExecutor:
    """One spawned worker process, quiet and deaf to Ctrl-C (its parent decides).

    Spawning starts multiprocessing's resource tracker once, handing it the process's
    stderr: the real one, as a full-screen app may have put an object without a file
    descriptor in `sys.stderr`."""
    stderr, sys.stderr = sys.stderr, sys.__stderr__
    try:
        resource_tracker.ensure_running()
    finally:
        sys.stderr = stderr
    return ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_quiet)


def _quiet() -> None:
    """In the worker: nothing it prints reaches the terminal the parent draws on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _frames(bars: BarSet) -> dict[str, pl.DataFrame]:
    """Each symbol's bars (history merged) at the set's one timeframe, the older ones
    dropped for good: a ranking reads L + W + 2 bars of time."""
    [tf] = bars.timeframes
    out = {}
    for symbol, side in bars.sides.items():
        side.keep_last(bars.span_us)
        out[symbol] = side.merged(tf)
    return out


class WatchlistEngine:
    """Ranks the watchlist's pairs from the store, again whenever a bar closes.

    Each timeframe ranked has its own `BarSet`, kept while the watchlist and L + W stay:
    switching the view's timeframe back and forth folds in only the new trades. A
    ranking of more than PROCESS_PAIRS pairs runs in a worker process (started at the
    first, stopped by `close`), so the screen's thread never waits for the GIL."""

    def __init__(self, store: TickStore, kind: StreamKind = StreamKind.TRADE) -> None:
        self.store = store
        self.kind = kind
        self._bars: dict[str, BarSet] = {}
        self._last: Ranking | None = None
        self._key: tuple[object, object] = (None, None)  # what the last one was made of
        self._ranked_at = -1e9
        self._due: tuple[object, object] = (None, None)  # bars closed, history: last look
        self._pending: tuple[object, float] = (None, 0.0)  # a new shape, and since when
        self._pool: ProcessPoolExecutor | None = None

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
            self._bars, self._last = {}, None
            return None
        wanted = tuple(tf for tf in TIMEFRAMES if tf == view.timeframe or tf in timeframes)
        if any((b.symbols, b.keep) != (symbols, view.keep) for b in self._bars.values()):
            self._bars = {}
        for tf in wanted:
            if tf not in self._bars:
                self._bars[tf] = BarSet(self.store, self.kind, symbols, (tf,), view.keep)
        now = now_us if now_us is not None else time.time_ns() // 1000
        shape = (view.timeframe, view.window, view.lookback, wanted, symbols)
        clock, last = time.monotonic(), self._last
        if last is not None and self._key[0] != shape:
            # ranked again once the view has stayed put SHAPE_SETTLE_S: keys pressed in a
            # row (1 2 1 2) start one ranking, not one each
            if self._pending[0] != shape:
                self._pending = (shape, clock)
            if clock - self._pending[1] < SHAPE_SETTLE_S:
                return last
        if last is not None and self._key[0] == shape:
            # nothing to rank before a bar closes: the trades wait in the store till then
            # (what this costs is one query, not one per symbol)
            due = tuple((now - SETTLE_US) // TIMEFRAMES[tf] for tf in wanted)
            revs = await self.store.history_rev()
            if clock - self._ranked_at < RANK_EVERY_S or (due, revs) == self._due:
                return last
            self._due = (due, revs)
        cuts = [await self._bars[tf].update(now) for tf in wanted]
        cut = min(cuts)  # the same moment for all (each set settles on the same clock)
        moment = (
            tuple(cut // TIMEFRAMES[tf] for tf in wanted),
            tuple(self._bars[tf].revs for tf in wanted),
        )
        if last is not None and self._key == (shape, moment):
            return last
        frames = {tf: await asyncio.to_thread(_frames, self._bars[tf]) for tf in wanted}
        args = (frames, symbols, view, self.kind, cut)
        if len(symbols) * (len(symbols) - 1) // 2 > PROCESS_PAIRS:
            self._pool = self._pool or _worker_pool()
            try:
                ranked = await asyncio.get_running_loop().run_in_executor(
                    self._pool, rank_frames, *args
                )
            except BrokenProcessPool:  # the worker was killed: a new one next time
                self.close()
                raise
        else:
            ranked = await asyncio.to_thread(rank_frames, *args)
        self._key, self._ranked_at = (shape, moment), clock
        self._last = Ranking(view, symbols, ranked, cut)
        return self._last

    def close(self) -> None:
        """Stop the worker process, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
