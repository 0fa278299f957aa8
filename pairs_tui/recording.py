"""The feed lifecycle every front shares (`record`, `watch`, the cockpit): demo server →
symbols checked on REST → feed → ingest → store, with history (backfill, holes filled)
and retention beside it, started and stopped in one order.

Ingestion runs until it is stopped; ending by itself, or failing to commit what was
pending when stopped, is a failure: kept in `failure` and told through `on_failure`.
History is a bonus: when the REST API cannot give it, that is said once and recording
goes on live-only; the start never waits for REST longer than `CHECK_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

from pairs_tui.feed.binance import BinanceFeed, FeedOptions
from pairs_tui.feed.demo import DemoServer
from pairs_tui.feed.rest import Banned, HistoryUnavailable, Listing, RestClient, UnknownSymbol
from pairs_tui.history import History
from pairs_tui.ingest import Ingest, RecordingStopped
from pairs_tui.model import FeedStats, describe
from pairs_tui.retention import keep_pruned
from pairs_tui.store import StoreTarget, TickStore, target_text

CHECK_S = 5.0  # the longest REST may hold the start up (exchangeInfo)
FIRST_TRADE_S = 2.0  # history waits this long for the stream's first trade (the seam)
RETRY_S = 30.0  # after REST failed, history is asked again this much later


@dataclass(frozen=True)
class RecordingPlan:
    db_path: StoreTarget
    feed: FeedOptions
    demo: bool = False  # an embedded demo server, its URL replacing the feed's
    seed: int | None = None
    demo_rate: float = 20.0
    flush_interval: float = 0.25
    retention_s: float | None = None  # prune trades older than this while recording
    rest_url: str | None = None  # Binance REST for history; None: live only
    history: Mapping[str, int] = field(default_factory=dict)  # bars per timeframe wanted


class Recording:
    def __init__(
        self,
        plan: RecordingPlan,
        store: TickStore,
        *,
        on_event: Callable[[str], None],
        on_notice: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.store = store
        self.on_event = on_event  # the feed's connects, gaps, ...
        self.on_notice = on_notice  # what must be heard even on a screen
        self.on_failure: Callable[[RecordingStopped], object] = lambda failure: None
        self.failure: RecordingStopped | None = None
        self.server: DemoServer | None = None
        self.ingest: Ingest | None = None
        self.rest: RestClient | None = None
        self.history: History | None = None
        self.history_error: str | None = None  # why there is no history, when there is none
        self._listing: Listing | None = None
        self._task: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._historian: asyncio.Task[None] | None = None
        self._wanted = dict(plan.history)
        self._settled = False  # every symbol backfilled up to its tape

    async def start(self, symbols: tuple[str, ...]) -> None:
        """Raises UnknownSymbol (before anything streams) for a symbol Binance lists not."""
        plan = self.plan
        source = "demo" if plan.demo else "live"
        await self.store.check_source(source)  # a wrong store is said before REST is asked
        if plan.demo:
            self.server = await DemoServer(seed=plan.seed, rate=plan.demo_rate).start()
        rest_url = plan.rest_url  # None: live only; the demo answers REST itself
        if rest_url is not None and self.server is not None:
            rest_url = self.server.rest_url
        if rest_url is not None:
            self.rest = RestClient(rest_url)
            self.history = History(self.rest, self.store, plan.feed.kind, self.on_notice)
            await self._check(symbols)  # before anything is written
        await self.store.claim(source)
        self._start_feed(symbols)
        if plan.retention_s is not None:
            self._pruner = asyncio.create_task(
                keep_pruned(plan.db_path, plan.retention_s, self.on_notice), name="retention"
            )

    async def switch(self, symbols: tuple[str, ...]) -> None:
        """Subscribe to other symbols (UnknownSymbol when Binance lists one not); a failed
        recording stays stopped (and says so)."""
        if self._listing is not None:
            for warning in self._listing.check(symbols):
                self.on_notice(warning)
        if self.failure is None:
            await self._stop_feed()
            self._start_feed(symbols)

    def history_settled(self) -> bool:
        """Every symbol's history is in (or REST failed): only holes are left to fill."""
        return self.history_error is not None or self._settled

    def want(self, bars: Mapping[str, int]) -> None:
        """At least this many bars of history per timeframe (a longer lookback)."""
        if any(bars[tf] > self._wanted.get(tf, 0) for tf in bars) and self.history is not None:
            self._wanted = {tf: max(n, self._wanted.get(tf, 0)) for tf, n in bars.items()}
            self._start_history(self.ingest.feed.symbols if self.ingest else ())

    async def _check(self, symbols: tuple[str, ...]) -> None:
        """exchangeInfo: unknown symbols refused, halted ones said; no REST, no history."""
        assert self.rest is not None
        try:
            self._listing = await asyncio.wait_for(self.rest.listing(), CHECK_S)
        except HistoryUnavailable as exc:
            self._unavailable(str(exc))
            return
        except TimeoutError:
            why = f" (last: {self.rest.last_error})" if self.rest.last_error else ""
            self._unavailable(f"no answer from {self.rest.base_url} in {CHECK_S:g}s{why}")
            return
        for warning in self._listing.check(symbols):
            self.on_notice(warning)

    def _unavailable(self, reason: str) -> None:
        if reason != self.history_error:
            self.on_notice(f"history unavailable: {reason}")
        self.history_error = reason

    def _start_history(self, symbols: tuple[str, ...]) -> None:
        if self._historian is not None:
            self._historian.cancel()
        self._settled = False  # other symbols, or more bars: not in yet
        if self.history is not None:
            self._historian = asyncio.create_task(self._keep_history(symbols), name="history")

    async def _keep_history(self, symbols: tuple[str, ...]) -> None:
        """Backfill each symbol once its tape has begun (or after FIRST_TRADE_S, up to
        now, and again at its first trade), then fill holes as they appear. Whatever goes
        wrong is said once and tried again RETRY_S later; only a ban ends it."""
        assert self.history is not None and self.rest is not None
        history, kind = self.history, self.plan.feed.kind
        seamed: set[str] = set()  # backfilled up to the tape's start
        early: set[str] = set()  # backfilled up to a moment before its first trade
        started = asyncio.get_running_loop().time()
        if self._listing is None:  # REST was away at the start (and that was said)
            await asyncio.sleep(RETRY_S)
        while True:
            try:
                if self._listing is None:  # ask again
                    self._listing = await self.rest.listing()
                if self._wanted and len(seamed) < len(symbols):
                    begun = {
                        s for s in symbols if await self.store.first_trade(s, kind) is not None
                    }
                    waited = asyncio.get_running_loop().time() - started >= FIRST_TRADE_S
                    due = tuple(  # a quiet symbol: its history now, its seam when it trades
                        s for s in symbols
                        if s not in seamed and (s in begun or (waited and s not in early))
                    )  # fmt: skip
                    if len(begun) < len(symbols) and not waited:
                        due = ()  # all together, the view's bars of each symbol first
                    if due:
                        seamed |= await history.backfill(due, self._wanted)
                        early |= set(due)
                self._settled = not self._wanted or all(s in seamed | early for s in symbols)
                await history.fill_gaps(self._wanted)  # a cheap query when there is none
                self.history_error = None
            except Banned as exc:
                self._unavailable(str(exc))
                return
            except Exception as exc:  # REST away or answering nonsense, a store error
                said = isinstance(exc, HistoryUnavailable | UnknownSymbol)
                self._unavailable(str(exc) if said else describe(exc))
                await asyncio.sleep(RETRY_S)
                continue
            await asyncio.sleep(0.1 if len(seamed) < len(symbols) else 1.0)

    def stats(self) -> FeedStats | None:
        return self.ingest.stats() if self.ingest is not None else None

    async def stop(self) -> None:
        """Stop history and the feed, commit everything pending, then the demo server."""
        for task in (self._pruner, self._historian):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._stop_feed()
        if self.rest is not None:
            await self.rest.close()
        if self.server is not None:
            await self.server.stop()

    def _start_feed(self, symbols: tuple[str, ...]) -> None:
        options = self.plan.feed
        if self.server is not None:
            options = replace(options, ws_url=self.server.url)
        feed = BinanceFeed(
            symbols,
            options,
            on_event=self.on_event,
            on_warning=lambda text: self.on_notice(f"{text} in {target_text(self.plan.db_path)}"),
        )
        self.ingest = Ingest(feed, self.store, flush_interval=self.plan.flush_interval)
        self._task = asyncio.create_task(self.ingest.run(), name="ingest")
        self._task.add_done_callback(partial(self._ended, self.ingest))
        self._start_history(symbols)

    async def _stop_feed(self) -> None:
        if self.ingest is not None and self._task is not None:
            self.ingest.stop()
            await asyncio.gather(self._task, return_exceptions=True)

    def _ended(self, ingest: Ingest, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.failure is not None:
            return
        cause = task.exception()
        if cause is None and ingest.stopped:
            return
        self.failure = RecordingStopped(cause or RuntimeError("the feed ended"), self.plan.db_path)
        self.on_failure(self.failure)
