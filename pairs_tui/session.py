"""A live session: feed (optional) → store → pair engine, behind one small interface.

This is the door the cockpit uses: it starts and stops everything, hands out immutable
snapshots and feed statistics, and takes view changes. It never imports the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from pairs_tui.engine import PairEngine, PairSnapshot, PairView
from pairs_tui.feed.binance import BinanceFeed, FeedOptions
from pairs_tui.feed.demo import DemoServer
from pairs_tui.ingest import Ingest
from pairs_tui.model import FeedStats, StreamKind
from pairs_tui.store import TickStore


@dataclass(frozen=True)
class SessionPlan:
    view: PairView
    db_path: Path
    feed: FeedOptions | None  # None: view the store only (another process records)
    demo: bool = False
    seed: int | None = None
    demo_rate: float = 20.0
    flush_interval: float = 0.25
    kind: StreamKind = StreamKind.TRADE


class Session:
    def __init__(self, plan: SessionPlan) -> None:
        self.plan = plan
        self.view = plan.view
        self.store: TickStore | None = None
        self.server: DemoServer | None = None
        self.ingest: Ingest | None = None
        self._engine: PairEngine | None = None
        self._ingest_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        plan = self.plan
        self.store = await TickStore.open(plan.db_path)
        self._engine = PairEngine(self.store, self.view, plan.kind)
        if plan.feed is None:
            return
        options = plan.feed
        if plan.demo:
            self.server = await DemoServer(seed=plan.seed, rate=plan.demo_rate).start()
            options = replace(options, ws_url=self.server.url)
        feed = BinanceFeed(self.view.symbols, options, on_event=lambda text: None)
        self.ingest = Ingest(feed, self.store, flush_interval=plan.flush_interval)
        self._ingest_task = asyncio.create_task(self.ingest.run(), name="ingest")

    async def stop(self) -> None:
        """Stop the feed, commit everything pending, close the store."""
        if self.ingest is not None and self._ingest_task is not None:
            self.ingest.stop()
            with contextlib.suppress(Exception):
                await self._ingest_task
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await self.store.close()

    def set_view(self, view: PairView) -> None:
        self.view = view
        if self._engine is not None:
            self._engine.set_view(view)

    async def refresh(self) -> PairSnapshot:
        assert self._engine is not None, "start() first"
        return await self._engine.refresh()

    def feed_stats(self) -> FeedStats | None:
        return self.ingest.stats() if self.ingest is not None else None
