"""`pairs-tui record`: the ingest engine with a status line as its only front.

On a terminal the status line is redrawn in place once a second and events (connects,
disconnects, gaps) scroll above it; when stdout is a file or pipe (systemd, cron) it
prints plain timestamped log lines instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pairs_tui.config import Config
from pairs_tui.feed.binance import BinanceFeed, FeedOptions
from pairs_tui.feed.demo import DemoServer
from pairs_tui.ingest import Ingest, RecordingStopped
from pairs_tui.model import FeedState, FeedStats, printable
from pairs_tui.retention import keep_pruned
from pairs_tui.store import TickStore


@dataclass(frozen=True)
class RecordPlan:
    symbols: tuple[str, ...]
    db_path: Path
    demo: bool = False
    seed: int | None = None
    duration: float | None = None


def feed_options(config: Config, ws_url: str | None = None) -> FeedOptions:
    feed = config.feed
    return FeedOptions(
        ws_url=ws_url or feed.ws_url,
        kind=config.stream_kind,
        stale_after=feed.stale_after,
        backoff_initial=feed.backoff_initial,
        backoff_max=feed.backoff_max,
        healthy_after=feed.healthy_after,
        max_pending=config.store.max_pending,
    )


def format_status(stats: FeedStats, rates: dict[str, float], now_us: int, now: float) -> str:
    """One line: per symbol stored / rate / last trade age, then the connection."""
    parts = []
    for s in stats.symbols:
        age = "-" if s.last_trade_us is None else f"{max(0, now_us - s.last_trade_us) / 1e6:.1f}s"
        parts.append(f"{s.symbol} {s.stored:,} ({rates.get(s.symbol, 0.0):.0f}/s, last {age})")
    state = stats.state.value
    if stats.state is FeedState.RECONNECTING and stats.retry_at is not None:
        state = f"reconnecting in {max(0.0, stats.retry_at - now):.1f}s"
    parts += [loss for loss in (stats.silent_loss(),) if loss]
    parts.append(state)
    parts.append(f"reconnects {stats.reconnects}")
    parts.append(f"gaps {stats.gaps}")
    parts.append(f"malformed {stats.malformed}")
    return " | ".join(parts)


def stopped_line(stats: FeedStats, db_path: Path) -> str:
    """What a recording leaves behind, said when it stops (record and the cockpit)."""
    stored = ", ".join(f"{s.symbol} {s.stored:,}" for s in stats.symbols)
    return (
        f"stopped: trades stored {stored} in {db_path}; reconnects {stats.reconnects},"
        f" gaps {stats.gaps}, duplicates {stats.duplicates}, malformed {stats.malformed}"
    )


class StatusPrinter:
    """Keeps the rates and decides how the status reaches the user."""

    def __init__(self, out: TextIO, *, live: bool, interval: float) -> None:
        self.out = out
        self.live = live
        self.interval = interval
        self._last: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._line_open = False

    def event(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self._clear()
        self.out.write(f"{stamp} {printable(text)}\n")
        self.out.flush()

    def show(self, stats: FeedStats) -> None:
        now = time.monotonic()
        received = {s.symbol: s.received for s in stats.symbols}
        then, before = self._last
        span = max(now - then, 1e-9)
        rates = {k: (v - before.get(k, 0)) / span for k, v in received.items()}
        self._last = (now, received)
        line = format_status(
            stats, rates, time.time_ns() // 1000, asyncio.get_running_loop().time()
        )
        if self.live:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn
            self.out.write(f"\r\x1b[2K{line[:width]}")
            self._line_open = True
        else:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.out.write(f"{stamp} {line}\n")
        self.out.flush()

    def _clear(self) -> None:
        if self._line_open:
            self.out.write("\r\x1b[2K")
            self._line_open = False

    def close(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.flush()


async def run_record(plan: RecordPlan, config: Config, out: TextIO | None = None) -> FeedStats:
    """Record until SIGINT/SIGTERM or the duration ends; everything pending is committed."""
    out = out or sys.stdout  # looked up now, not when this module was imported
    store = await TickStore.open(plan.db_path)
    try:
        await store.claim("demo" if plan.demo else "live")
    except BaseException:
        await store.close()
        raise
    live = out.isatty()
    printer = StatusPrinter(out, live=live, interval=1.0 if live else 10.0)
    server = DemoServer(seed=plan.seed, rate=config.demo.rate) if plan.demo else None
    try:
        ws_url = None
        if server is not None:
            await server.start()
            ws_url = server.url
            printer.event(f"demo feed on {server.url} (seed {server.market.seed})")
        feed = BinanceFeed(
            plan.symbols,
            feed_options(config, ws_url),
            on_event=printer.event,
            on_warning=lambda text: printer.event(f"{text} in {plan.db_path}"),
        )
        ingest = Ingest(feed, store, flush_interval=config.store.flush_interval)
        printer.event(f"recording {', '.join(plan.symbols)} into {plan.db_path}")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, ingest.stop)
        if plan.duration is not None:
            loop.call_later(plan.duration, ingest.stop)
        ticker = asyncio.create_task(_tick(printer, ingest))
        pruner = None
        if config.store.retention_s is not None:
            pruner = asyncio.create_task(
                keep_pruned(plan.db_path, config.store.retention_s, printer.event)
            )
        try:
            await ingest.run()
        except Exception as exc:
            raise RecordingStopped(exc, plan.db_path) from exc
        finally:
            ticker.cancel()
            if pruner is not None:
                pruner.cancel()
                await asyncio.gather(pruner, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        stats = ingest.stats()
        printer.close()
        printer.event(stopped_line(stats, plan.db_path))
        return stats
    finally:
        if server is not None:
            await server.stop()
        await store.close()


async def _tick(printer: StatusPrinter, ingest: Ingest) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(printer.interval)
            printer.show(ingest.stats())
