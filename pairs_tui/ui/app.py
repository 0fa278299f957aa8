"""PairsApp: the cockpit. It reads snapshots from the session on a clock and draws them.

The session (feed, store, engine) runs on the same event loop; the statistics and the
chart rendering run in worker threads, so a key press is handled at once even while a
refresh is being computed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer

from pairs_tui.engine import PairSnapshot, PairView, ViewError
from pairs_tui.model import FeedState, FeedStats
from pairs_tui.session import Session
from pairs_tui.ui.charts import ChartSpec, Line, render
from pairs_tui.ui.widgets import ChartView, StatsPanel, StatusLine

WINDOW_STEP = 5
LOOKBACK_STEP = 100
Z_THRESHOLDS = (2.0, -2.0)
CHARTS = ("prices", "spread", "zscore", "corr")


def chart_specs(snapshot: PairSnapshot) -> dict[str, ChartSpec]:
    """What each chart draws, from one snapshot."""
    s = snapshot.series
    view = snapshot.view
    ts = s.ts_us
    norm_a = s.close_a / s.close_a[0] * 100 if len(ts) else s.close_a
    norm_b = s.close_b / s.close_b[0] * 100 if len(ts) else s.close_b
    summary = snapshot.summary
    bands: tuple[tuple[float, str], ...] = ()
    if summary.spread_mean is not None and summary.spread_std is not None:
        m, sd = summary.spread_mean, summary.spread_std
        bands = ((m, "white"), (m + sd, "yellow"), (m - sd, "yellow"))
        bands += ((m + 2 * sd, "red"), (m - 2 * sd, "red"))
    return {
        "prices": ChartSpec(
            f"prices, 100 = start ({view.symbol_a} cyan, {view.symbol_b} magenta)",
            ts,
            (Line(norm_a, view.symbol_a, "cyan"), Line(norm_b, view.symbol_b, "magenta")),
        ),
        "spread": ChartSpec("spread, mean, ±1 sd, ±2 sd", ts, (Line(s.spread, "spread"),), bands),
        "zscore": ChartSpec(
            f"z-score (W={view.window})",
            ts,
            (Line(s.zscore, "z", "green"),),
            tuple((t, "red") for t in Z_THRESHOLDS),
        ),
        "corr": ChartSpec(
            f"rolling correlation of returns (W={view.window})", ts, (Line(s.corr, "corr", "blue"),)
        ),
    }


def status_text(view: PairView, stats: FeedStats | None, rate: float, now: float) -> str:
    feed = "no feed"
    if stats is not None:
        feed = stats.state.value
        if stats.state is FeedState.RECONNECTING and stats.retry_at is not None:
            feed = f"reconnecting in {max(0.0, stats.retry_at - now):.0f}s"
        last = max((s.last_trade_us or 0 for s in stats.symbols), default=0)
        if last:
            latency_ms = max(0, time.time_ns() // 1000 - last) / 1000
            feed += f"  {rate:.0f} trades/s  latency {latency_ms:.0f} ms"
    return (
        f"{view.symbol_a}/{view.symbol_b}  {view.timeframe}  W={view.window}  "
        f"L={view.lookback}  {feed}"
    )


class PairsApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "pairs-tui"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "timeframe('1s')", "1s", id="timeframe-1s"),
        Binding("2", "timeframe('1m')", "1m", id="timeframe-1m"),
        Binding("3", "timeframe('5m')", "5m", id="timeframe-5m"),
        Binding("left_square_bracket", "window(-1)", "W-", id="window-down"),
        Binding("right_square_bracket", "window(1)", "W+", id="window-up"),
        Binding("minus", "lookback(-1)", "L-", id="lookback-down"),
        Binding("plus,equals_sign", "lookback(1)", "L+", id="lookback-up"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, session: Session, *, refresh_every: float = 0.5) -> None:
        super().__init__()
        self.session = session
        self.refresh_every = refresh_every
        self.snapshot: PairSnapshot | None = None
        self._last_count: tuple[float, int] | None = None
        self._rate = 0.0

    def compose(self) -> ComposeResult:
        yield StatusLine(status_text(self.session.view, None, 0.0, 0.0))
        with Horizontal(id="body"):
            with Vertical(id="charts"):
                for name in CHARTS:
                    yield ChartView("Collecting data...", id=name)
            yield StatsPanel()
        yield Footer()

    async def on_mount(self) -> None:
        await self.session.start()
        self.set_interval(self.refresh_every, self.refresh_data)
        self.refresh_data()

    # -- the clock -------------------------------------------------------------------
    @work(exclusive=True, group="refresh", exit_on_error=False)
    async def refresh_data(self) -> None:
        try:
            snapshot = await self.session.refresh()
        except Exception as exc:  # a store problem must show, not kill the screen
            self.notify(f"refresh failed: {exc}", severity="error")
            return
        sizes = {name: self.query_one(f"#{name}", ChartView).size for name in CHARTS}
        texts = await asyncio.to_thread(self._render, snapshot, sizes)
        self._show(snapshot, texts)

    @staticmethod
    def _render(snapshot: PairSnapshot, sizes) -> dict[str, object]:
        reason = snapshot.summary.reason
        if reason and reason.startswith("collecting") and "ADF" not in reason:
            return {
                name: f"Collecting data: {reason.removeprefix('collecting: ')}" for name in CHARTS
            }
        specs = chart_specs(snapshot)
        return {name: render(specs[name], sizes[name].width, sizes[name].height) for name in CHARTS}

    def _show(self, snapshot: PairSnapshot, texts: dict[str, object]) -> None:
        self.snapshot = snapshot
        with self.batch_update():
            for name, text in texts.items():
                self.query_one(f"#{name}", ChartView).update(text)
            self.query_one(StatsPanel).show(snapshot.summary)
            self._show_status()

    def _show_status(self) -> None:
        stats = self.session.feed_stats()
        now = asyncio.get_running_loop().time()
        if stats is not None:
            count = sum(s.received for s in stats.symbols)
            if self._last_count is not None and now > self._last_count[0]:
                self._rate = (count - self._last_count[1]) / (now - self._last_count[0])
            self._last_count = (now, count)
        self.query_one(StatusLine).update(status_text(self.session.view, stats, self._rate, now))

    # -- keys -------------------------------------------------------------------------
    def _change_view(self, **changes: object) -> None:
        try:
            view = replace(self.session.view, **changes)
        except ViewError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.session.set_view(view)
        self._show_status()
        self.refresh_data()

    def action_timeframe(self, timeframe: str) -> None:
        self._change_view(timeframe=timeframe)

    def action_window(self, direction: int) -> None:
        view = self.session.view
        self._change_view(window=max(2, view.window + direction * WINDOW_STEP))

    def action_lookback(self, direction: int) -> None:
        view = self.session.view
        self._change_view(lookback=max(view.window + 2, view.lookback + direction * LOOKBACK_STEP))

    async def action_quit(self) -> None:
        self.workers.cancel_group(self, "refresh")
        await self.session.stop()
        self.exit(0)
