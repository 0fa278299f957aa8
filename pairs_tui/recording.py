"""The feed lifecycle every front shares (`record`, `watch`, the cockpit): demo server →
feed → ingest → store, with retention beside it, started and stopped in one order.

Ingestion runs until it is stopped; ending by itself, or failing to commit what was
pending when stopped, is a failure: kept in `failure` and told through `on_failure`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from pairs_tui.feed.binance import BinanceFeed, FeedOptions
from pairs_tui.feed.demo import DemoServer
from pairs_tui.ingest import Ingest, RecordingStopped
from pairs_tui.model import FeedStats
from pairs_tui.retention import keep_pruned
from pairs_tui.store import TickStore


@dataclass(frozen=True)
class RecordingPlan:
    db_path: Path
    feed: FeedOptions
    demo: bool = False  # an embedded demo server, its URL replacing the feed's
    seed: int | None = None
    demo_rate: float = 20.0
    flush_interval: float = 0.25
    retention_s: float | None = None  # prune trades older than this while recording


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
        self._task: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    async def start(self, symbols: tuple[str, ...]) -> None:
        plan = self.plan
        await self.store.claim("demo" if plan.demo else "live")
        if plan.demo:
            self.server = await DemoServer(seed=plan.seed, rate=plan.demo_rate).start()
        self._start_feed(symbols)
        if plan.retention_s is not None:
            self._pruner = asyncio.create_task(
                keep_pruned(plan.db_path, plan.retention_s, self.on_notice), name="retention"
            )

    async def switch(self, symbols: tuple[str, ...]) -> None:
        """Subscribe to other symbols; a failed recording stays stopped (and says so)."""
        if self.failure is None:
            await self._stop_feed()
            self._start_feed(symbols)

    def stats(self) -> FeedStats | None:
        return self.ingest.stats() if self.ingest is not None else None

    async def stop(self) -> None:
        """Stop the feed and commit everything pending, then the demo server."""
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        await self._stop_feed()
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
            on_warning=lambda text: self.on_notice(f"{text} in {self.plan.db_path}"),
        )
        self.ingest = Ingest(feed, self.store, flush_interval=self.plan.flush_interval)
        self._task = asyncio.create_task(self.ingest.run(), name="ingest")
        self._task.add_done_callback(partial(self._ended, self.ingest))

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
