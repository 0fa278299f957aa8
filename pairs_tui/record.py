"""`pairs-tui record`: the ingest engine with a status line as its only front.

On a terminal the status line is redrawn in place once a second and events (connects,
disconnects, gaps) scroll above it; when stdout is a file or pipe (systemd, cron) it
prints plain timestamped log lines instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from pairs_tui.config import Config
from pairs_tui.engine import bars_wanted
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.model import TIMEFRAMES, FeedStats, printable
from pairs_tui.recording import Recording, RecordingPlan
from pairs_tui.store import StoreTarget, TickStore, target_text


@dataclass(frozen=True)
class RecordPlan:
    symbols: tuple[str, ...]
    db_path: StoreTarget
    demo: bool = False
    seed: int | None = None
    duration: float | None = None
    backfill_s: float | None = None  # history wanted before streaming (None: the view's)


def history_wanted(plan: RecordPlan, config: Config) -> dict[str, int]:
    """Bars per timeframe: `--backfill SPAN` of each, or the configured view's L + W."""
    if plan.backfill_s is None:
        return bars_wanted(config.view.window, config.view.lookback, config.view.timeframe)
    return {tf: math.ceil(plan.backfill_s * 1e6 / us) for tf, us in TIMEFRAMES.items()}


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
    parts += [loss for loss in (stats.silent_loss(),) if loss]
    parts.append(stats.state_text(now))
    parts.append(f"reconnects {stats.reconnects}")
    parts.append(f"gaps {stats.gaps}")
    parts.append(f"malformed {stats.malformed}")
    return " | ".join(parts)


def stopped_line(stats: FeedStats, db_path: StoreTarget) -> str:
    """What a recording leaves behind, said when it stops (record and the cockpit)."""
    stored = ", ".join(f"{s.symbol} {s.stored:,}" for s in stats.symbols)
    return (
        f"stopped: trades stored {stored} in {target_text(db_path)}; reconnects {stats.reconnects},"
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
    live = out.isatty()
    printer = StatusPrinter(out, live=live, interval=1.0 if live else 10.0)
    recording_plan = RecordingPlan(
        plan.db_path,
        feed_options(config),
        demo=plan.demo,
        seed=plan.seed,
        demo_rate=config.demo.rate,
        flush_interval=config.store.flush_interval,
        retention_s=config.store.retention_s,
        rest_url=config.rest_url,
        history=history_wanted(plan, config),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with await TickStore.open(plan.db_path) as store:
        recording = Recording(
            recording_plan, store, on_event=printer.event, on_notice=printer.event
        )
        recording.on_failure = lambda failure: stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if plan.duration is not None:
            loop.call_later(plan.duration, stop.set)
        tasks: list[asyncio.Task[None]] = []
        try:
            await recording.start(plan.symbols)
            if recording.server is not None:
                server = recording.server
                printer.event(f"demo feed on {server.url} (seed {server.market.seed})")
            printer.event(f"recording {', '.join(plan.symbols)} into {target_text(plan.db_path)}")
            if recording.history is not None:
                if live:  # a progress bar until it is in; the stream is recorded meanwhile
                    await _show_backfill(recording, out, stop)
                tasks.append(asyncio.create_task(_say_when_in(recording, printer, stop)))
            tasks.append(asyncio.create_task(_tick(printer, recording)))
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await recording.stop()
        printer.close()
        if recording.failure is not None:
            raise recording.failure
        stats = recording.stats()
        assert stats is not None
        printer.event(stopped_line(stats, plan.db_path))
        return stats


async def _until_in(
    recording: Recording, stop: asyncio.Event, tick: Callable[[], object] = lambda: None
) -> bool:
    """Wait until every symbol's history is stored (or has failed, which says itself);
    False when stopped first. `tick` runs every 0.1 s meanwhile."""
    while not stop.is_set() and not recording.history_settled():
        tick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return not stop.is_set()


async def _show_backfill(recording: Recording, out: TextIO, stop: asyncio.Event) -> None:
    """A progress bar while history is fetched (the stream is recorded meanwhile)."""
    history = recording.history
    assert history is not None
    columns = (TextColumn("history"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"))
    with Progress(
        *columns, TimeRemainingColumn(), console=Console(file=out), transient=True
    ) as bar:
        task = bar.add_task("history", total=None)
        await _until_in(
            recording,
            stop,
            lambda: bar.update(task, completed=history.covered, total=history.total or None),
        )


async def _say_when_in(recording: Recording, printer: StatusPrinter, stop: asyncio.Event) -> None:
    if await _until_in(recording, stop) and recording.history_error is None:
        assert recording.history is not None
        printer.event(f"history: {recording.history.bars_stored:,} bars from REST")


async def _tick(printer: StatusPrinter, recording: Recording) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(printer.interval)
            if stats := recording.stats():
                printer.show(stats)
