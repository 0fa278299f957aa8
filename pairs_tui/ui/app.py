"""PairsApp: the cockpit. It reads snapshots from the session on a clock and draws them.

The session (feed, store, engine) runs on the same event loop; the statistics and the
chart rendering run in worker threads, so a key press is handled at once even while a
refresh is being computed. A chart is sent to the terminal only when its text changed:
over a slow SSH link the bytes are the budget.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Footer, Static

from pairs_tui.alerts import RuleError, value_text
from pairs_tui.analytics import MIN_OLS_BARS, Z_ENTRY
from pairs_tui.engine import PairSnapshot, PairView, ViewError
from pairs_tui.model import (
    REFRESH_RANGE,
    TIMEFRAMES,
    AlertEvent,
    FeedState,
    FeedStats,
    SymbolError,
    describe,
    normalise_symbols,
    printable,
)
from pairs_tui.session import (
    STORE_ERRORS,
    Ranking,
    RecordingStopped,
    Session,
    SessionPlan,
    UnknownSymbol,
    target_text,
)
from pairs_tui.ui.backtest import BacktestScreen
from pairs_tui.ui.charts import Z_TICK_STEPS, ChartSpec, Line, fingerprint, render, waiting_for
from pairs_tui.ui.commands import PairCommands, rule_text
from pairs_tui.ui.help import HelpScreen
from pairs_tui.ui.scanner import ScannerScreen
from pairs_tui.ui.widgets import (
    AlertPanel,
    ChartView,
    Readout,
    StatsPanel,
    StatusLine,
    readout,
)

WINDOW_STEP = 5
LOOKBACK_STEP = 100
Z_THRESHOLDS = (Z_ENTRY, -Z_ENTRY)
CHARTS = ("prices", "spread", "zscore", "corr")
NARROW = (100, 30)  # below either: stacked charts, short stats
TOO_SMALL = (40, 12)
STALE_AFTER_S = 10.0  # connected, yet no trade for this long: say so
ALERT_LOG = 50  # firings kept in the log panel
TOASTS = 3  # toasts one update may raise; more firings than that share one
CROWD_TOAST_S = 8.0  # and such a shared toast is raised at most this often


def chart_specs(
    snapshot: PairSnapshot, cursor: int | None = None, *, lean: bool = False
) -> dict[str, ChartSpec]:
    """What each chart draws, from one snapshot. Lean charts are monochrome: the two
    price lines differ by marker, and the title says which is which."""
    s = snapshot.series
    view = snapshot.view
    bar_s = view.tf_us / 1e6
    ts = s.ts_us
    a_mark, b_mark = ("+", "x") if lean else ("cyan", "magenta")
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
            f"prices, 100 = start ({view.symbol_a} {a_mark}, {view.symbol_b} {b_mark})",
            ts,
            (
                Line(norm_a, view.symbol_a, "cyan", marker="+"),
                Line(norm_b, view.symbol_b, "magenta", marker="x"),
            ),
            cursor=cursor,
            bar_s=bar_s,
        ),
        "spread": ChartSpec(
            "spread, mean, ±1 sd, ±2 sd",
            ts,
            (Line(s.spread, "spread"),),
            bands,
            cursor,
            needs=MIN_OLS_BARS,
            bar_s=bar_s,
        ),
        "zscore": ChartSpec(
            f"z-score (W={view.window})",
            ts,
            (Line(s.zscore, "z", "green"),),
            tuple((t, "red") for t in Z_THRESHOLDS),
            cursor,
            needs=view.window + 1,
            steps=Z_TICK_STEPS,
            bar_s=bar_s,
        ),
        "corr": ChartSpec(  # the bottom chart in every layout: it says UTC
            f"rolling correlation of returns (W={view.window})",
            ts,
            (Line(s.corr, "corr", "blue"),),
            cursor=cursor,
            needs=view.window + 2,  # W returns need W + 1 bars
            bar_s=bar_s,
            utc=True,
        ),
    }


def feed_text(label: str | None, stats: FeedStats | None, rate: float, now: float) -> str:
    """connected / reconnecting in Ns / stale / demo / no feed, then rate and latency."""
    if label is None or stats is None:
        return "no feed (viewing the store)"
    state = stats.state_text(now)
    last = max((s.last_trade_us or 0 for s in stats.symbols), default=0)
    if stats.state is FeedState.RECONNECTING and stats.retry_at is not None:
        if stats.last_error:
            state += f" ({printable(stats.last_error)})"
        if label == "live" and not last:  # never a trade: likely no way to Binance
            state += " - no network? try --demo"
    if stats.state is FeedState.CONNECTED and last:
        quiet = time.time() - last / 1e6
        if quiet > STALE_AFTER_S:
            state = f"stale (no trades for {quiet:.0f}s)"
    if loss := stats.silent_loss():  # beside the state: a reconnect's reason still shows
        state = f"{loss}  {state}"
    text = f"{label} {state}  {rate:.0f} trades/s"
    latencies = [s.latency_us for s in stats.symbols if s.latency_us is not None]
    if latencies:
        text += f"  latency {max(0, max(latencies)) / 1000:.0f} ms"
    if stats.gaps:  # ids the exchange skipped or that passed while disconnected
        text += f"  gaps {stats.gaps}"
    if stats.malformed:  # frames refused at the door: skipped, and said
        text += f"  malformed {stats.malformed}"
    return text


def status_text(view: PairView, feed: str, paused: int | None) -> str:
    head = f"{view.symbol_a}/{view.symbol_b}  {view.timeframe}  W={view.window}  L={view.lookback}"
    pause = "" if paused is None else f"  PAUSED +{paused:,} trades"
    return f"{head}  {feed}{pause}"


def make_app(
    plan: SessionPlan,
    *,
    refresh_every: float = 0.5,
    lean: bool = False,
    export_dir: Path | None = None,
    bell: bool = True,
    debug: bool = False,
    redraw_always: bool = False,
) -> PairsApp:
    """The cockpit for a session plan: what the CLI runs, the tests drive and the
    benchmark measures (`redraw_always`: the naive baseline that redraws every tick)."""
    return PairsApp(
        Session(plan),
        refresh_every=refresh_every,
        lean=lean,
        export_dir=export_dir,
        bell=bell,
        debug=debug,
        redraw_always=redraw_always,
    )


class PairsApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "pairs-tui"
    COMMANDS = App.COMMANDS | {PairCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        # a newcomer's keys first: a narrow footer keeps them (the rest are on the ? screen)
        Binding("question_mark", "help", "Help", id="help"),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("e", "export", "Export", id="export"),
        Binding("w", "scanner", "Scanner", id="scanner"),
        Binding("b", "backtest", "Backtest", id="backtest"),
        *(
            Binding(str(key), f"timeframe({tf!r})", tf, id=f"timeframe-{tf}")
            for key, tf in enumerate(TIMEFRAMES, 1)
        ),
        Binding("left_square_bracket", "window(-1)", "W-", id="window-down"),
        Binding("right_square_bracket", "window(1)", "W+", id="window-up"),
        Binding("minus", "lookback(-1)", "L-", id="lookback-down"),
        Binding("plus,equals_sign", "lookback(1)", "L+", id="lookback-up"),
        Binding("space", "pause", "Pause", id="pause"),
        Binding("left", "cursor(-1)", "◀", id="cursor-left"),
        Binding("right", "cursor(1)", "▶", id="cursor-right"),
        Binding("escape", "live", "Live", id="live"),
    ]
    KEYS_HELP: ClassVar[list[tuple[str, str]]] = [  # not HELP: Textual's own, a str
        (
            " ".join(str(key) for key, _ in enumerate(TIMEFRAMES, 1)),
            f"timeframe {' / '.join(TIMEFRAMES)}",
        ),
        ("[ ]", f"window W -/+ {WINDOW_STEP} bars"),
        ("- +", f"lookback L -/+ {LOOKBACK_STEP} bars"),
        ("space", "pause / resume the display (recording and alerts go on)"),
        ("← →", "inspection cursor along the charts (pauses)"),
        ("esc", "back to live"),
        ("e", "export bars and analytics CSV of this view"),
        ("w", "scanner: every pair of the watchlist ranked by cointegration"),
        ("b", "backtest the z rule on every stored bar of this view ([backtest] in config)"),
        ("?", "this help"),
        ("q", "quit (the store is flushed)"),
    ]

    paused: reactive[bool] = reactive(False)
    cursor: reactive[int | None] = reactive(None)  # a bar index of the shown snapshot
    lean: reactive[bool] = reactive(False)

    def __init__(
        self,
        session: Session,
        *,
        refresh_every: float = 0.5,
        lean: bool = False,
        export_dir: Path | None = None,
        redraw_always: bool = False,
        bell: bool = True,
        debug: bool = False,
    ) -> None:
        super().__init__()
        self.crash: BaseException | None = None  # the unhandled error the app died of
        self._crash_report = io.StringIO()
        if not debug:  # Textual's crash screen goes to the crash log, not the terminal
            self.error_console = Console(
                file=self._crash_report, width=120, markup=False, highlight=False
            )
        self.session = session
        session.on_notice = lambda text: self.say(text, severity="warning", timeout=8)
        # from a task's done-callback: drawn on the app's next turn, never mid-teardown
        session.on_failure = lambda failure: self.call_later(self._recording_stopped, failure)
        self.ring_bell = bell
        self.refresh_every = refresh_every
        self.export_dir = export_dir
        self.redraw_always = redraw_always  # the naive baseline the benchmark compares to
        self.snapshot: PairSnapshot | None = None  # what the screen shows
        self._prints: dict[str, object] = {}  # what each chart shows, as a fingerprint
        self._shown: dict[str, Text | str] = {}  # and as text: sent only when it differs
        self._stats: object = None  # what the stats panel shows
        self._paused_at = 0  # trades seen when the display froze
        self._last_count: tuple[float, int] | None = None
        self._rate = 0.0
        self._quitting = False
        self._refreshing = self._again = False
        self._ranking = False  # a ranking of the watchlist is being computed
        self._crowd_said = -1e9  # when many firings last shared a toast
        self.ranking: Ranking | None = None  # the last one
        self._timer: Timer | None = None
        self._events: deque[AlertEvent] = deque(maxlen=ALERT_LOG)  # the log panel's rows
        self.usage_error: str | None = None  # why it never started (said by the CLI)
        self.set_reactive(PairsApp.lean, lean)

    def compose(self) -> ComposeResult:
        yield StatusLine("")
        yield Static("terminal too small: make it at least 40 x 12", id="too-small")
        with Horizontal(id="body"):
            with Vertical(id="charts"):
                for name in CHARTS:
                    yield ChartView("Collecting data...", id=name)
                yield Readout("")
            with Vertical(id="side"):
                yield StatsPanel()
                yield AlertPanel("")
        yield Footer()

    async def on_mount(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: self.run_worker(self._quit()))
        # a dropped SSH session: flush and go, even if the terminal cannot be restored
        loop.add_signal_handler(signal.SIGHUP, lambda: self.run_worker(self._quit(hang_up=True)))
        self._layout(self.size.width, self.size.height)
        self._show_status()
        try:
            await self.session.start()
        except UnknownSymbol as exc:
            self.usage_error = str(exc)
            self.exit(2)
            return
        self._events.extend(await self.session.events(ALERT_LOG))
        self._show_alerts()
        self._timer = self.set_interval(self.refresh_every, self._tick)
        self._tick()

    def _tick(self) -> None:
        self.refresh_data()
        self.rank_watchlist()

    async def on_unmount(self) -> None:
        """However the app ends, the store is committed and closed."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        self.workers.cancel_group(self, "refresh")
        self.workers.cancel_group(self, "rank")
        await self.session.stop()

    def _handle_exception(self, error: Exception) -> None:
        """Textual's one door for an unhandled error: keep it, so the exit status and the
        crash log can name it, then let Textual shut down and restore the terminal."""
        if self.crash is None:
            self.crash = error
        super()._handle_exception(error)

    def crash_report(self) -> str:
        """What Textual would have printed about the crash (empty with `debug`)."""
        return self._crash_report.getvalue()

    def say(self, message: str, **options) -> None:
        """A toast of ours: paths, rules and error text (from a feed, a file, a store) are
        shown as text, never markup, and never as escape sequences for the terminal."""
        text = "\n".join(printable(line) for line in message.split("\n"))
        self.notify(text, markup=False, **options)

    # -- layout -----------------------------------------------------------------------
    def on_resize(self, event: Resize) -> None:
        self._layout(event.size.width, event.size.height)
        self._show_alerts()
        if self._timer is not None:  # started: redraw at the new size
            self.refresh_data()

    def _layout(self, width: int, height: int) -> None:
        self.screen.set_class(width < NARROW[0] or height < NARROW[1], "narrow")
        self.screen.set_class(width < TOO_SMALL[0] or height < TOO_SMALL[1], "too-small")
        self.screen.set_class(height < NARROW[1], "short")

    def watch_lean(self, lean: bool) -> None:
        self.screen.set_class(lean, "lean")

    # -- the clock --------------------------------------------------------------------
    def refresh_data(self) -> None:
        """Ask for a redraw. One refresh runs at a time, to its end (a long first load
        is never cut short by the next tick); asks meanwhile make one more run."""
        if self._refreshing:
            self._again = True
            return
        self._refreshing = True
        self._refresh_loop()

    @work(group="refresh", exit_on_error=False)
    async def _refresh_loop(self) -> None:
        try:
            self._again = True
            while self._again and not self._quitting:
                self._again = False
                await self._refresh_once()
        finally:
            self._refreshing = False

    async def _refresh_once(self) -> None:
        try:
            snapshot = await self.session.refresh()
        except Exception as exc:  # a store problem must show, not kill the screen
            self.say(f"refresh failed: {exc}", severity="error")
            return
        if snapshot.fired:  # paused or not: alerts are why the screen can be left alone
            self._fired(snapshot.fired)
        if self.paused and self.snapshot is not None:
            if self.snapshot.view == snapshot.view:
                self._show_status()
                return  # ingestion goes on; the screen keeps what it showed
            # a new view while paused: show it once, frozen from here
            self.cursor = None
            self._paused_at = self.session.trades_seen()
        await self._draw(snapshot)

    def rank_watchlist(self) -> None:
        """Ask for the watchlist's ranking (a new one only once a bar has closed); one
        runs at a time, beside the pair's refresh, never holding it up."""
        if not self._ranking and not self._quitting and self.session.ranking_wanted():
            self._ranking = True
            self._rank()

    @work(group="rank", exit_on_error=False)
    async def _rank(self) -> None:
        try:
            ranking = await self.session.rank()
        except Exception as exc:  # a store problem must show, not kill the screen
            self.say(f"ranking the watchlist failed: {describe(exc)}", severity="error")
            return
        finally:
            self._ranking = False
        if ranking is None:  # nothing new
            return
        self.ranking = ranking
        if ranking.fired:
            self._fired(ranking.fired)
        if isinstance(self.screen, ScannerScreen):
            self.screen.ranking = ranking

    def action_scanner(self) -> None:
        self.session.scanning = True
        self.push_screen(
            ScannerScreen(self.session.watchlist, self.ranking), callback=self._scanner_closed
        )
        self.rank_watchlist()

    def _scanner_closed(self, _: None) -> None:
        self.session.scanning = False

    async def on_scanner_screen_pair_chosen(self, message: ScannerScreen.PairChosen) -> None:
        """A row of the scanner opened: that pair, with the same timeframe, W and L."""
        self.screen.dismiss()
        await self._change_view(symbol_a=message.symbol_a, symbol_b=message.symbol_b)

    async def _draw(self, snapshot: PairSnapshot) -> None:
        sizes = {name: self.query_one(f"#{name}", ChartView).size for name in CHARTS}
        prints = {} if self.redraw_always else self._prints
        try:
            charts = await asyncio.to_thread(
                self._render, snapshot, sizes, self.cursor, self.lean, prints
            )
        except Exception as exc:  # a chart that cannot be drawn must say so, not freeze
            self.say(f"drawing failed: {describe(exc)}", severity="error")
            return
        short = self.screen.has_class("narrow")
        stats = (snapshot.summary, snapshot.glances, snapshot.hedge, short)
        self.snapshot = snapshot
        with self.batch_update():
            for name, (fp, content) in charts.items():
                self._prints[name] = fp
                if self.redraw_always or content != self._shown.get(name):
                    self.query_one(f"#{name}", ChartView).update(content)
                    self._shown[name] = content
            if stats != self._stats or self.redraw_always:
                self.query_one(StatsPanel).show(
                    snapshot.summary, snapshot.glances, snapshot.hedge, short=short
                )
                self._stats = stats
            self._show_readout()
            self._show_status()

    @staticmethod
    def _render(
        snapshot: PairSnapshot, sizes, cursor: int | None, lean: bool, prints: dict[str, object]
    ) -> dict[str, tuple[object, Text | str]]:
        """The charts whose fingerprint changed, rendered; each chart draws as soon as it
        has two points (prices before the z-score, which needs W + 1 bars)."""
        out: dict[str, tuple[object, Text | str]] = {}
        for name, spec in chart_specs(snapshot, cursor, lean=lean).items():
            size = sizes[name]
            waiting = waiting_for(spec)
            fp = waiting or fingerprint(spec, size.width, size.height, mono=lean)
            if fp != prints.get(name):
                out[name] = (fp, waiting or render(spec, size.width, size.height, mono=lean))
        return out

    def _fired(self, events: tuple[AlertEvent, ...]) -> None:
        """One toast per pair and timeframe, however many rules fired on this update;
        past TOASTS of them (a rule on a long watchlist), one toast that counts them."""
        groups: dict[str, list[str]] = {}
        for e in events:
            groups.setdefault(f"alert {e.pair} {e.timeframe}", []).append(
                f"{e.rule}  {value_text(e.value)}"
            )
        if len(groups) > TOASTS:
            shown = [title.removeprefix("alert ") for title in groups]
            more = f" and {len(shown) - TOASTS} more"
            now = time.monotonic()
            if now - self._crowd_said >= CROWD_TOAST_S:  # else the panel and bell say it
                self._crowd_said = now
                self.say(
                    f"{', '.join(shown[:TOASTS])}{more} (the alert panel lists each)",
                    title=f"alerts on {len(groups)} pairs",
                    severity="warning",
                    timeout=CROWD_TOAST_S,
                )
            groups = {}
        for title, lines in groups.items():
            self.say("\n".join(lines), title=title, severity="warning", timeout=8)
        if self.ring_bell:
            self.bell()
        self._events.extend(events)
        self._show_alerts()

    def _show_alerts(self) -> None:
        pair = self.session.view.symbols
        rules = [r for r in self.session.rules() if r.pair == pair or r.on_watchlist]
        watching = {r.id for r in rules if r.on_watchlist}
        events = [e for e in self._events if e.symbols == pair or e.rule_id in watching]
        short = self.screen.has_class("narrow")
        self.query_one(AlertPanel).show(rules, events, short=short)

    def _show_readout(self) -> None:
        widget = self.query_one(Readout)
        snapshot, i = self.snapshot, self.cursor
        widget.display = snapshot is not None and i is not None
        if snapshot is not None and i is not None:
            widget.update(readout(snapshot.series, i, snapshot.view.symbols))

    def _show_status(self) -> None:
        session = self.session
        stats = session.feed_stats()
        now = asyncio.get_running_loop().time()
        if stats is not None:
            count = sum(s.received for s in stats.symbols)
            if self._last_count is not None and now > self._last_count[0]:
                self._rate = (count - self._last_count[1]) / (now - self._last_count[0])
            self._last_count = (now, count)
        feed = feed_text(session.feed_label, stats, self._rate, now)
        if session.failure is not None:
            feed = f"{session.feed_label} FAILED: {printable(str(session.failure.cause))}"
        paused = None
        if self.paused and session.store is not None:
            paused = max(0, session.trades_seen() - self._paused_at)
        snapshot = self.snapshot
        if snapshot is not None and snapshot.summary.history_bars:
            feed += f"  history: {snapshot.summary.history_bars:,} bars from Binance REST"
        if said := session.history_text():
            feed += f"  {said}"
        text = status_text(session.view, feed, paused)
        line = self.query_one(StatusLine)
        if str(line.render()) != text:
            line.update(Text(text))

    def _recording_stopped(self, failure: RecordingStopped) -> None:
        """Nothing is recorded any more: say so until the user has seen it (quitting then
        exits 1, see `_quit`)."""
        self.say(str(failure), title="recording stopped", severity="error", timeout=3600)
        self._show_status()

    # -- keys: the view ---------------------------------------------------------------
    async def _change_view(self, **changes: str | int) -> None:
        try:
            view = replace(self.session.view, **changes)  # type: ignore[arg-type]
        except ViewError as exc:
            self.say(str(exc), severity="warning")
            return
        try:
            await self.session.set_view(view)
        except UnknownSymbol as exc:
            self.say(str(exc), severity="warning")
            return
        self._show_status()
        self._show_alerts()
        self.refresh_data()

    async def action_timeframe(self, timeframe: str) -> None:
        await self._change_view(timeframe=timeframe)

    async def action_window(self, direction: int) -> None:
        """A step past what a view can be is refused, with the palette's message."""
        await self.action_set_window(self.session.view.window + direction * WINDOW_STEP)

    async def action_lookback(self, direction: int) -> None:
        await self.action_set_lookback(self.session.view.lookback + direction * LOOKBACK_STEP)

    async def action_set_window(self, window: int) -> None:
        await self._change_view(window=window)

    async def action_set_lookback(self, lookback: int) -> None:
        await self._change_view(lookback=lookback)

    async def action_pair(self, symbol_a: str, symbol_b: str) -> None:
        try:
            a, b = normalise_symbols([symbol_a, symbol_b])
        except SymbolError as exc:
            self.say(str(exc), severity="warning")
            return
        await self._change_view(symbol_a=a, symbol_b=b)

    # -- keys: the display ------------------------------------------------------------
    def watch_paused(self, paused: bool) -> None:
        if paused and self.session.store is not None:
            self._paused_at = self.session.trades_seen()
        if not paused:
            self.cursor = None
        if self._timer is not None:  # started (App.is_mounted is a method: always true)
            self._show_status()

    def watch_cursor(self) -> None:
        if self.snapshot is not None:  # something drawn: the screen is there
            self.run_worker(self._draw(self.snapshot), group="cursor", exclusive=True)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.refresh_data()

    def action_cursor(self, step: int) -> None:
        """The first press puts the cursor on the newest bar and freezes the display."""
        if self.snapshot is None or len(self.snapshot.series) == 0:
            return
        last = len(self.snapshot.series) - 1
        if self.cursor is None:
            self.paused = True
            self.cursor = last
        else:
            self.cursor = min(last, max(0, self.cursor + step))

    def action_live(self) -> None:
        if self.paused:
            self.action_pause()

    def action_lean(self) -> None:
        self.lean = not self.lean
        self.refresh_data()

    def action_redraw(self) -> None:
        self._prints, self._shown, self._stats = {}, {}, None
        self.refresh_data()

    def action_refresh_every(self, seconds: float) -> None:
        low, high = REFRESH_RANGE
        self.refresh_every = min(high, max(low, seconds))
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.refresh_every, self._tick)
        self.say(f"redrawing every {self.refresh_every:g} s")

    def action_theme(self, name: str) -> None:
        self.theme = name

    def action_help(self) -> None:
        session = self.session
        store = printable(target_text(session.plan.db_path))
        if session.feed_label:
            store += f"  ({session.feed_label} trades are recorded here)"
        self.push_screen(HelpScreen(self.KEYS_HELP, store))

    # -- the backtest (key b and the palette) ------------------------------------------
    def action_backtest(self) -> None:
        if isinstance(self.screen, BacktestScreen):
            self.screen.action_rerun()
            return
        screen = BacktestScreen(self.session.backtest, self.session.plan.db_path, lean=self.lean)
        self.push_screen(screen)

    def action_set_trading(self, changes: dict[str, float | str]) -> bool:
        """The z rule changed from the palette (checked there; refused here all the same
        if it means nothing): the stats panel's hedge follows at the next refresh."""
        try:
            rule = self.session.set_trading(**changes)
        except ValueError as exc:
            self.say(str(exc), title="backtest rule unchanged", severity="warning")
            return False
        self.say(rule_text(rule), title="z rule")
        self.refresh_data()
        return True

    def action_run_backtest(self, changes: dict[str, float | str]) -> None:
        if self.action_set_trading(changes):
            self.action_backtest()

    # -- alerts (from the palette) ----------------------------------------------------
    async def action_add_alert(self, text: str, on_watchlist: bool = False) -> None:
        try:
            alert = await self.session.add_rule(text, on_watchlist=on_watchlist)
        except (RuleError, *STORE_ERRORS) as exc:
            self.say(str(exc), title="alert not set", severity="error")
            return
        self.say(f"#{alert.id} {alert.rule} on {alert.target} {alert.timeframe}", title="alert set")
        if on_watchlist and len(self.session.watchlist) < 2:
            self.say("the watchlist needs two symbols or more: watchlist add SOLUSDT")
        self._show_alerts()
        self.rank_watchlist()

    # -- the watchlist (from the palette) ---------------------------------------------
    async def action_set_watchlist(self, symbols: tuple[str, ...]) -> None:
        try:
            await self.session.set_watchlist(symbols)
        except (SymbolError, UnknownSymbol) as exc:
            self.say(str(exc), title="watchlist unchanged", severity="warning")
            return
        n = len(symbols)
        self.say(f"{', '.join(symbols) or 'empty'}: {n * (n - 1) // 2:,} pairs", title="watchlist")
        if isinstance(self.screen, ScannerScreen):
            self.screen.watchlist = self.session.watchlist
            self.screen.ranking = None  # ranking the new list...
        self.ranking = None
        self.rank_watchlist()

    async def action_remove_alert(self, rule_id: int) -> None:
        try:
            await self.session.remove_rule(rule_id)
        except STORE_ERRORS as exc:
            self.say(str(exc), title="alert not removed", severity="error")
            return
        self.say(f"alert #{rule_id} removed")
        self._show_alerts()

    async def action_mute_alert(self, rule_id: int | None, muted: bool) -> None:
        try:
            await self.session.mute(rule_id, muted)
        except STORE_ERRORS as exc:
            self.say(str(exc), title="alerts unchanged", severity="error")
            return
        which = "every alert" if rule_id is None else f"alert #{rule_id}"
        self.say(f"{which} {'muted' if muted else 'unmuted'}")
        self._show_alerts()

    # -- keys: export and quit --------------------------------------------------------
    def action_export(self) -> None:
        self._export(f"{self.export_dir or Path.cwd()}{os.sep}", ("bars", "analytics"))

    def action_export_to(self, what: str, path: str) -> None:
        self._export(path, (what,))

    @work(group="export", exit_on_error=False)
    async def _export(self, target: str, whats: tuple[str, ...]) -> None:
        """Runs beside the clock: the export reads the store, the screen goes on."""
        try:
            written = await self.session.export(target, whats)
        except OSError as exc:  # an unwritable directory: say so, go on
            where = exc.filename or target
            why = exc.strerror or str(exc)
            self.say(f"cannot write {where}: {why}", title="export failed", severity="error")
            return
        except Exception as exc:  # a missing directory, nothing stored yet for this view
            self.say(str(exc), title="export failed", severity="error")
            return
        self.say("\n".join(str(p) for p in written), title="exported", timeout=8)

    async def action_quit(self) -> None:
        await self._quit()

    async def _quit(self, *, hang_up: bool = False) -> None:
        if self._quitting:
            return
        self._quitting = True
        self.workers.cancel_group(self, "refresh")
        await self.session.stop()
        if hang_up:  # Textual's writer dies with the terminal and its shutdown may then block
            timer = threading.Timer(2.0, os._exit, (0 if self.session.failure is None else 1,))
            timer.daemon = True
            timer.start()
        code = 0 if self.session.failure is None else 1
        self.exit(code, return_code=code)
