"""From the tick store to pair snapshots: bars kept up to date, analytics on demand.

`SymbolBars` holds one symbol's bars at every timeframe and folds in only the trades
newer than its watermark. `PairEngine` owns two of them and turns them into an
immutable `PairSnapshot`; the heavy part runs in a worker thread so the event loop
stays free, and the cointegration tests are recomputed only when a bar closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from pairs_tui.analytics import (
    Cointegration,
    PairSeries,
    Summary,
    cointegration,
    ols_fit,
    pair_series,
    spread_of,
    summarize,
)
from pairs_tui.backtest import BacktestParams, HedgeNow, hedge_now
from pairs_tui.bars import (
    empty_bars,
    fold,
    history_frame,
    merge_history,
    resample,
    trades_frame,
)
from pairs_tui.model import (
    LOOKBACK_MAX,
    TIMEFRAMES,
    WINDOW_RANGE,
    AlertEvent,
    StreamKind,
    one_of,
)
from pairs_tui.store import TickStore

_CHUNK = 500_000  # trades per read while loading history: bounds memory


class ViewError(ValueError):
    pass


def bars_wanted(window: int, lookback: int, first: str | None = None) -> dict[str, int]:
    """Bars of history per timeframe for a full view at once: L + W (+2, as kept); the
    timeframe `first` (the one on screen) is fetched first."""
    order = sorted(TIMEFRAMES, key=lambda tf: tf != first)
    return {tf: bars_kept(window, lookback) for tf in order}


def bars_kept(window: int, lookback: int) -> int:
    """Bars kept per timeframe: L, the window before its first z, and the forming one."""
    return lookback + window + 2


@dataclass(frozen=True, slots=True)
class PairView:
    """What the user is looking at: the pair, the bar size, W and L."""

    symbol_a: str
    symbol_b: str
    timeframe: str = "1m"
    window: int = 20
    lookback: int = 600

    def __post_init__(self) -> None:
        if self.timeframe not in TIMEFRAMES:
            raise ViewError(f"unknown timeframe {self.timeframe!r}: use {one_of(TIMEFRAMES)}")
        if self.symbol_a == self.symbol_b:
            raise ViewError(f"a pair needs two different symbols, got {self.symbol_a} twice")
        low, high = WINDOW_RANGE
        if not low <= self.window <= high:
            bound = f"at least {low}" if self.window < low else f"at most {high:,}"
            raise ViewError(f"window must be {bound} bars, got {self.window}")
        if self.lookback < self.window + 2:
            need = self.window + 2
            raise ViewError(
                f"lookback must be at least window + 2 = {need} bars, got {self.lookback}"
            )
        if self.lookback > LOOKBACK_MAX:
            raise ViewError(f"lookback must be at most {LOOKBACK_MAX:,} bars, got {self.lookback}")

    @property
    def tf_us(self) -> int:
        return TIMEFRAMES[self.timeframe]

    def history_wanted(self) -> dict[str, int]:
        return bars_wanted(self.window, self.lookback, self.timeframe)

    @property
    def keep(self) -> int:
        return bars_kept(self.window, self.lookback)

    @property
    def symbols(self) -> tuple[str, str]:
        return self.symbol_a, self.symbol_b


@dataclass(frozen=True, slots=True)
class PairSnapshot:
    view: PairView
    series: PairSeries
    summary: Summary
    tests: Cointegration | None
    glances: tuple[Summary, ...] = ()  # every timeframe's numbers, 1s first
    asof_us: int | None = None  # the snapshot holds every stored trade before this time
    fired: tuple[AlertEvent, ...] = ()  # alerts this update set off
    hedge: HedgeNow | None = None  # the trader's chosen hedge at the newest bar


class SymbolBars:
    """One symbol's bars at the given timeframes, folded in from the store incrementally."""

    def __init__(
        self,
        symbol: str,
        kind: StreamKind,
        timeframes: Iterable[str] = TIMEFRAMES,
        *,
        until_us: int | None = None,
    ) -> None:
        self.symbol = symbol
        self.kind = kind
        self.until_us = until_us
        self.bars: dict[str, pl.DataFrame] = {tf: empty_bars() for tf in timeframes}
        self.history: dict[str, pl.DataFrame] = {tf: history_frame([]) for tf in self.bars}
        self.watermark = -1  # the last trade id folded in
        self.trades = 0
        self.late = 0  # trades older than a bar already formed: skipped, counted

    async def start_at(self, store: TickStore, since_us: int | None) -> None:
        """Begin from the first trade at or after `since_us` (None: from the first trade)."""
        if since_us is None:
            return
        first = await store.first_id_since(self.symbol, self.kind, since_us)
        if first is not None:
            self.watermark = first - 1
        else:  # nothing that recent: only trades stored from now on count
            self.watermark = await store.last_id(self.symbol, self.kind) or -1

    async def load_history(self, store: TickStore, since_us: Mapping[str, int]) -> None:
        """The exchange's history bars opening at or after `since_us[tf]` (and before
        `until_us`), in place of those loaded before."""
        for tf in self.bars:
            rows = await store.history_rows(self.symbol, self.kind, tf, since_us[tf])
            until = self.until_us
            if until is not None:
                rows = [r for r in rows if r[0] < until]  # open_us
            self.history[tf] = await asyncio.to_thread(history_frame, rows)

    def merged(self, tf: str) -> pl.DataFrame:
        """The bars with the history before them (column `rest`: from history)."""
        return merge_history(self.bars[tf], self.history[tf])

    def merged_all(self) -> dict[str, pl.DataFrame]:
        return {tf: self.merged(tf) for tf in self.bars}

    async def update(self, store: TickStore, until_us: int | None = None) -> int:
        """Fold in every trade newer than the watermark (and before `until_us`, if given);
        returns how many there were."""
        until = min((t for t in (until_us, self.until_us) if t is not None), default=None)
        total = 0
        while True:
            rows = await store.read_trades(
                self.symbol, self.kind, after_id=self.watermark, until_us=until, limit=_CHUNK
            )
            if not rows:
                return total
            await asyncio.to_thread(self._fold, rows)
            total += len(rows)
            if len(rows) < _CHUNK:
                return total

    def _fold(self, rows: list[tuple[int, int, str, str]]) -> None:
        """Bars and watermark move together here, in the thread: a caller cancelled
        while it runs can never fold the same rows twice."""
        trades = trades_frame(rows)
        for i, (tf, bars) in enumerate(self.bars.items()):
            fresh = trades
            if not bars.is_empty():  # ids follow time on Binance; anything else is skipped
                fresh = trades.filter(pl.col("ts_us") >= bars["ts_us"][-1])
                if i == 0:
                    self.late += trades.height - fresh.height
            self.bars[tf] = fold(bars, resample(fresh, TIMEFRAMES[tf]))
        self.watermark = rows[-1][1]
        self.trades += len(rows)

    def keep_last(self, span_us: int) -> None:
        """Forget bars (and history) opening more than `span_us` before the newest."""
        for tf in self.bars:
            ends = [int(f["ts_us"][-1]) for f in (self.bars[tf], self.history[tf]) if f.height]
            if ends:  # each frame is in time order
                since = pl.col("ts_us") >= max(ends) - span_us
                self.bars[tf] = self.bars[tf].filter(since)
                self.history[tf] = self.history[tf].filter(since)

    def trim(self, other: SymbolBars, keep: int) -> None:
        """Drop bars older than the `keep`-th newest bar both symbols have, on both sides:
        what is kept is bounded, yet always holds `keep` joined bars when there are."""
        for tf in self.bars:
            joined = join_bars(self.bars[tf], other.bars[tf])
            if joined.height > keep:
                cut = joined["ts_us"][-keep]
                self.bars[tf] = self.bars[tf].filter(pl.col("ts_us") >= cut)
                other.bars[tf] = other.bars[tf].filter(pl.col("ts_us") >= cut)


def join_bars(bars_a: pl.DataFrame, bars_b: pl.DataFrame) -> pl.DataFrame:
    """The pair series: bars inner-joined on open time, oldest first: open, close and
    trades of each side (with `rest`, true where either side holds history, when the bars
    say). Each side has one bar per open
    time, so the join is an intersection of sorted keys: numpy does it in microseconds,
    where a polars join costs a millisecond (a scan makes one per pair)."""
    ts_a, ts_b = bars_a["ts_us"].to_numpy(), bars_b["ts_us"].to_numpy()
    ts, ia, ib = np.intersect1d(ts_a, ts_b, assume_unique=True, return_indices=True)
    columns: dict[str, object] = {"ts_us": ts}
    for suffix, bars, index in (("", bars_a, ia), ("_b", bars_b, ib)):
        for name in ("open", "close", "trades"):
            columns[name + suffix] = bars[name].to_numpy()[index]
    if "rest" in bars_a.columns:
        columns["rest"] = bars_a["rest"].to_numpy()[ia] | bars_b["rest"].to_numpy()[ib]
    order = ["ts_us", "open", "close", "trades", *(["rest"] if "rest" in columns else [])]
    return pl.DataFrame({name: columns[name] for name in [*order, "open_b", "close_b", "trades_b"]})


def closed_bar_tests(joined: pl.DataFrame) -> Cointegration | None:
    """ADF / Engle-Granger / half-life over the last L closed joined bars."""
    log_a = np.log(joined["close"].to_numpy())
    log_b = np.log(joined["close_b"].to_numpy())
    fit = ols_fit(log_a, log_b)
    return cointegration(log_a, log_b, spread_of(log_a, log_b, fit)) if fit else None


def closed_bars(joined: pl.DataFrame, view: PairView, now_us: int) -> pl.DataFrame:
    """The last L joined bars that had ended by `now_us`: what the tests run on."""
    end = int(np.searchsorted(joined["ts_us"].to_numpy(), now_us - view.tf_us, side="right"))
    return joined.slice(max(0, end - view.lookback), min(end, view.lookback))


def tests_key(view: PairView, closed: pl.DataFrame, with_tests: bool = True) -> object:
    """What a cached test result was computed on (see `analyze`'s `cached`)."""
    return (view, closed["ts_us"].max(), closed.height, with_tests)


def analyze(
    view: PairView,
    everything: pl.DataFrame,
    *,
    now_us: int,
    cached: tuple[object, Cointegration | None] | None = None,
    with_tests: bool = True,
) -> tuple[PairSnapshot, tuple[object, Cointegration | None]]:
    """Snapshot of the pair over the last L of its joined bars (`join_bars`; the forming
    bar included).

    The cointegration tests use the last L *closed* bars (a bar is closed once its
    interval has ended), so they change only when a bar closes; `cached` carries the
    previous result and the closed bars it was computed on. `with_tests=False` skips
    them for a quick glance.
    """
    joined = everything.tail(view.lookback)
    ts = joined["ts_us"].to_numpy()
    series = pair_series(ts, joined["close"].to_numpy(), joined["close_b"].to_numpy(), view.window)
    closed = closed_bars(everything, view, now_us)
    key = tests_key(view, closed, with_tests)
    if cached is not None and cached[0] == key:
        tests = cached[1]
    else:
        tests = closed_bar_tests(closed) if with_tests else None
    n_trades = int(joined["trades"].sum()) + int(joined["trades_b"].sum()) if len(joined) else 0
    summary = summarize(
        series,
        tests,
        symbols=view.symbols,
        timeframe=view.timeframe,
        tf_us=view.tf_us,
        window=view.window,
        lookback=view.lookback,
        n_trades=n_trades,
    )
    summary = replace(
        summary,
        history_bars=int(joined["rest"].sum()) if "rest" in joined.columns else 0,
        tests_start_us=closed["ts_us"].min() if tests else None,  # type: ignore[arg-type]
        tests_end_us=closed["ts_us"].max() if tests else None,  # type: ignore[arg-type]
        tests_n=closed.height if tests else 0,
    )
    return PairSnapshot(view, series, summary, tests), (key, tests)


SETTLE_US = 2_000_000  # a symbol this long without a trade is taken as quiet, not late
HISTORY_EVERY_S = 1.0  # history that keeps arriving (a backfill) is read again this often


def settled_cut(lasts: Iterable[int | None], now_us: int) -> int:
    """The time before which every symbol's trades are all stored (`lasts`: each one's
    newest stored trade time).

    Each symbol's trades arrive in time order, so everything before its newest stored
    trade is in (the newest one's same-time siblings may still be on their way); a symbol
    quiet for `SETTLE_US` is complete up to then. A snapshot cut there is one consistent
    moment of all the symbols, and `pairs-tui export --asof` that time reproduces it.
    """
    quiet = now_us - SETTLE_US
    return min(max(last if last is not None else quiet, quiet) for last in lasts)


class BarSet:
    """Several symbols' bars at some timeframes, kept current from the store: loaded
    once (the last `keep` bars' worth of time), then only new trades folded in; the
    exchange's history bars read again when the store's history moves, and everything
    when trades were stored behind the tape (a hole filled)."""

    def __init__(
        self,
        store: TickStore,
        kind: StreamKind,
        symbols: Iterable[str],
        timeframes: Iterable[str],
        keep: int,
    ) -> None:
        self.store = store
        self.kind = kind
        self.symbols = tuple(symbols)
        self.timeframes = tuple(timeframes)
        self.keep = keep
        self.span_us = max(TIMEFRAMES[tf] for tf in self.timeframes) * keep
        self.sides: dict[str, SymbolBars] = {}
        self._revs = (-1, -1)  # the store's history revisions the loaded sides hold
        self._history_at = -1e9  # when history was last read (time.monotonic)

    @property
    def trades(self) -> int:
        return sum(side.trades for side in self.sides.values())

    @property
    def revs(self) -> tuple[int, int]:
        """The store's history revisions the bars hold (they move when history lands)."""
        return self._revs

    async def update(self, now_us: int) -> int:
        """Every symbol's bars up to the settled cut (see `settled_cut`), returned."""
        store = self.store
        bars_rev, fills_rev = await store.history_rev()
        if fills_rev != self._revs[1] or not self.sides:
            self.sides = {}
            for symbol in self.symbols:
                side = self.sides[symbol] = SymbolBars(symbol, self.kind, self.timeframes)
                last = await store.last_time(symbol, self.kind)
                if last is not None:
                    await side.start_at(store, last - self.span_us)
            self._revs = (-1, fills_rev)
        clock = time.monotonic()
        if self._revs[0] == -1 or (
            bars_rev != self._revs[0] and clock - self._history_at >= HISTORY_EVERY_S
        ):
            since = {tf: (now_us // TIMEFRAMES[tf] - self.keep - 1) * TIMEFRAMES[tf]
                     for tf in self.timeframes}  # fmt: skip
            for side in self.sides.values():
                await side.load_history(store, since)
            self._revs, self._history_at = (bars_rev, fills_rev), clock
        lasts = [await store.last_time(s, self.kind) for s in self.symbols]
        cut = settled_cut(lasts, now_us)
        for side in self.sides.values():
            await side.update(store, cut)
        return cut


class PairEngine:
    """Keeps a pair's bars current from the store and computes snapshots off the loop.

    `tested` names timeframes besides the shown one whose cointegration tests are
    wanted (an alert on adf_p at 5m while 1m is shown)."""

    def __init__(self, store: TickStore, view: PairView, kind: StreamKind = StreamKind.TRADE):
        self.store = store
        self.view = view
        self.kind = kind
        self.tested: frozenset[str] = frozenset()
        self.trading: BacktestParams | None = None  # whose hedge the snapshot shows; W, L: view's
        self._bars: BarSet | None = None
        self._cached: dict[str, tuple[object, Cointegration | None]] = {}

    def set_view(self, view: PairView) -> None:
        """Timeframe and window changes reuse the bars; a new pair or a longer lookback
        reloads from the store."""
        if self._bars is not None and (
            view.symbols != self._bars.symbols or view.keep > self._bars.keep
        ):
            self._bars = None
        self.view = view

    @property
    def trades_seen(self) -> int:
        return self._bars.trades if self._bars is not None else 0

    @property
    def sides(self) -> tuple[SymbolBars, SymbolBars] | None:
        """The pair's bars as loaded (None before a refresh, or after a reload is due)."""
        if self._bars is None or not self._bars.sides:
            return None
        a, b = (self._bars.sides[s] for s in self._bars.symbols)
        return a, b

    async def refresh(self, now_us: int | None = None) -> PairSnapshot:
        view = self.view  # the view this refresh is for, though it may change meanwhile
        trading = self.trading  # kept in step with the view by the session
        if self._bars is None:
            self._bars = BarSet(self.store, self.kind, view.symbols, TIMEFRAMES, view.keep)
        bars = self._bars
        now = now_us if now_us is not None else time.time_ns() // 1000
        cut = await bars.update(now)
        a, b = (bars.sides[s] for s in bars.symbols)  # loaded by the update
        await asyncio.to_thread(a.trim, b, bars.keep)
        # bars that ended before the cut are final: the tests run on those
        snapshot = await asyncio.to_thread(
            lambda: self._analyze(
                view, a.merged_all(), b.merged_all(), cut, self.tested, self._cached, trading
            )
        )
        return replace(snapshot, asof_us=cut)

    @staticmethod
    def _analyze(
        view: PairView,
        bars_a: dict[str, pl.DataFrame],
        bars_b: dict[str, pl.DataFrame],
        now_us: int,
        tested: frozenset[str],
        cached: dict[str, tuple[object, Cointegration | None]],
        trading: BacktestParams | None = None,
    ) -> PairSnapshot:
        """The shown timeframe in full and every other one at a glance (with the tests
        too where `tested` asks, and the hedge of `trading` on the shown bars); `cached`
        is updated in place."""
        shown: PairSnapshot | None = None
        glances = []
        for tf in TIMEFRAMES:
            snapshot, cached[tf] = analyze(
                replace(view, timeframe=tf),
                join_bars(bars_a[tf], bars_b[tf]),
                now_us=now_us,
                cached=cached.get(tf),
                with_tests=tf == view.timeframe or tf in tested,
            )
            shown = snapshot if tf == view.timeframe else shown
            glances.append(snapshot.summary)
        assert shown is not None
        hedge = None
        if trading is not None:
            hedge = hedge_now(shown.series.close_a, shown.series.close_b, trading)
        return replace(shown, glances=tuple(glances), hedge=hedge)
