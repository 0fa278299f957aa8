"""Feed → store: commits the consumer's pending batch at least every flush interval.

One transaction per batch keeps SQLite at hundreds of thousands of rows per second;
the flush interval bounds what a crash can lose. While a batch is being written the
consumer keeps filling the next one, so the socket is never left unread.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from pairs_tui.feed.binance import Batch, BinanceFeed
from pairs_tui.model import FeedStats, describe
from pairs_tui.store import STORE_ERRORS, StoreTarget, TickStore, target_text


class RecordingStopped(Exception):
    """The feed → store pipeline ended by itself (a full disk, a broken store, a bug):
    the cause, worded once for every front."""

    def __init__(self, cause: BaseException, db_path: StoreTarget) -> None:
        where = f"cannot write {target_text(db_path)}: " if isinstance(cause, STORE_ERRORS) else ""
        super().__init__(f"recording stopped: {where}{describe(cause)}")
        self.cause = cause

    @property
    def is_bug(self) -> bool:
        """Not the machine's fault: worth a crash log with the traceback."""
        return not isinstance(self.cause, STORE_ERRORS)


class Ingest:
    def __init__(self, feed: BinanceFeed, store: TickStore, *, flush_interval: float = 0.25):
        self.feed = feed
        self.store = store
        self.flush_interval = flush_interval
        self.stored: Counter[str] = Counter()
        self._held: Batch | None = None  # a batch whose write failed, tried again first
        self.stopped = False  # asked to stop: ending is no failure then

    def stats(self) -> FeedStats:
        return self.feed.stats(self.stored)

    async def run(self) -> None:
        """Run until the feed is stopped (`stop()`), then commit whatever is pending."""
        kind, symbols = self.feed.options.kind, self.feed.symbols
        self.feed.bind(
            await self.store.series_ids(symbols, kind),
            {s: await self.store.last_id(s, kind) for s in symbols},
        )
        feed_task = asyncio.create_task(self.feed.run(), name="feed")
        loop = asyncio.get_running_loop()
        try:
            due = loop.time() + self.flush_interval
            while not feed_task.done():
                await self.feed.wait_batch(max(0.0, due - loop.time()))
                due = loop.time() + self.flush_interval  # flushes start at most this far apart
                await self._flush()
            await feed_task  # surfaces an unexpected crash of the consumer
        finally:
            if not feed_task.done():
                self.feed.stop()
                await asyncio.gather(feed_task, return_exceptions=True)
            await self._flush()

    def stop(self) -> None:
        self.stopped = True
        self.feed.stop()

    async def _flush(self) -> None:
        batch = self.feed.drain()
        if self._held is not None:
            batch, self._held = self._held + batch, None
        if not batch:
            return
        try:
            await self.store.write(batch.rows, batch.gaps)
        except BaseException:  # a failed or cancelled write keeps its trades for the next try
            self._held = batch
            raise
        self.stored.update(batch.counts)
