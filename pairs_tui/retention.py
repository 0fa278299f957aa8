"""`store.retention`: old raw trades pruned while recording, on a connection of its own.

Pruning deletes in small batches, so the recorder's commits wait milliseconds at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from pairs_tui.model import iso
from pairs_tui.store import STORE_ERRORS, TickStore

EVERY_S = 600.0  # prune at start, then this often


async def keep_pruned(
    path: Path, keep_s: float, on_event: Callable[[str], None], *, every_s: float = EVERY_S
) -> None:
    """Run until cancelled: trades older than `keep_s` seconds are deleted."""
    store = await TickStore.open(path)
    try:
        while True:
            cutoff = time.time_ns() // 1000 - int(keep_s * 1e6)
            try:
                deleted = await store.prune(cutoff)
            except STORE_ERRORS as exc:  # say so, and try again next time
                on_event(f"retention: could not prune ({exc}); trying again in {every_s:g}s")
            else:
                if deleted:
                    on_event(f"retention: pruned {deleted:,} trades older than {iso(cutoff)}")
            await asyncio.sleep(every_s)
    finally:
        await store.close()
