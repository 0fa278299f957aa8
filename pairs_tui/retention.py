"""`store.retention`: old raw trades pruned while recording, on a connection of its own.

Pruning deletes in small batches, so the recorder's commits wait milliseconds at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pairs_tui.model import describe, iso
from pairs_tui.store import StoreTarget, TickStore

EVERY_S = 600.0  # prune at start, then this often


async def keep_pruned(
    path: StoreTarget, keep_s: float, on_event: Callable[[str], None], *, every_s: float = EVERY_S
) -> None:
    """Run until cancelled: trades older than `keep_s` seconds are deleted. Whatever goes
    wrong is said and tried again next time (recording goes on either way)."""
    while True:
        cutoff = time.time_ns() // 1000 - int(keep_s * 1e6)
        try:
            async with await TickStore.open(path) as store:
                deleted = await store.prune(cutoff)
        except Exception as exc:  # a store error, or a bug: never silent, never fatal
            on_event(f"retention: could not prune ({describe(exc)}); trying again in {every_s:g}s")
        else:
            if deleted:
                on_event(f"retention: pruned {deleted:,} trades older than {iso(cutoff)}")
        await asyncio.sleep(every_s)
