"""The `b` panel: the z rule backtested on every stored bar of the pair in view.

The app hands it the session's `backtest` (a coroutine function); the screen runs it in a
worker and draws the z-score and the equity on one time axis, entries and exits marked,
with the summary and the trades below. `r` runs it again on the newest bars. The numbers
are `pairs-tui backtest`'s, and the panel prints the command line that writes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from pairs_tui.backtest_files import number_text, summary_rows
from pairs_tui.model import describe, printable
from pairs_tui.session import BacktestRun, StoreTarget, TooFewBars
from pairs_tui.ui.charts import Z_TICK_STEPS, ChartSpec, Line, Marks, render
from pairs_tui.ui.pair_table import Column, PairTable, Row
from pairs_tui.ui.widgets import ChartView

SIDES = {1: "long", -1: "short"}
CHARTS = ("backtest-z", "backtest-equity")
TRADE_COLUMNS = (
    Column("n", "#", 3),
    Column("side", "side", 5, numeric=False),
    Column("entry", "entry", 0, numeric=False),  # as wide as the times
    Column("exit", "exit", 0, numeric=False),
    Column("beta", "beta", 8),
    Column("reason", "reason", 6, numeric=False),
    Column("gross", "gross", 9),
    Column("fees", "fees", 9),
    Column("net", "net", 9),
)
DAY_US = 86_400_000_000


def _clock(ts_us: int, long_span: bool) -> str:
    """As the charts' time labels: the date only when the run spans more than a day."""
    fmt = "%m-%d %H:%M" if long_span else "%H:%M:%S"
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime(fmt)


def _span_us(run: BacktestRun) -> int:
    ts = run.bars.ts_us
    return int(ts[-1] - ts[0]) if len(ts) else 0


def trade_rows(run: BacktestRun) -> list[Row]:
    """One row per trade, numbers as `pairs-tui backtest` prints them; losers marked."""
    long_span = _span_us(run) >= DAY_US
    return [
        Row(
            (
                str(i),
                SIDES[t.side],
                _clock(t.entry_ts, long_span),
                _clock(t.exit_ts, long_span),
                number_text(t.beta),
                t.reason,
                number_text(t.gross),
                number_text(t.fees),
                number_text(t.net),
            ),
            marked=t.net < 0,
        )
        for i, t in enumerate(run.result.trades, 1)
    ]


def chart_specs(run: BacktestRun) -> dict[str, ChartSpec]:
    """z with its levels and equity below, on the same bars: each trade marked where its
    entry and its exit filled."""
    p, ts, curve = run.params, run.bars.ts_us, run.result.curve
    trades = run.result.trades
    entry_at = np.searchsorted(ts, [t.entry_ts for t in trades]).astype(np.int64)
    exit_at = np.searchsorted(ts, [t.exit_ts for t in trades]).astype(np.int64)
    sides = np.array([t.side for t in trades], dtype=np.int64)

    def marks(y: np.ndarray, legend: bool) -> tuple[Marks, ...]:
        longs, shorts = entry_at[sides > 0], entry_at[sides < 0]
        return tuple(
            Marks(at, y[at], label * legend, color, marker)
            for at, label, color, marker in (
                (longs, "long", "green", "▲"),
                (shorts, "short", "red", "▼"),
                (exit_at, "exit", "yellow", "●"),
            )
        )

    levels = [(p.entry, "red"), (-p.entry, "red"), (p.exit, "yellow"), (-p.exit, "yellow")]
    if p.stop:
        levels += [(p.stop, "magenta"), (-p.stop, "magenta")]
    bar_s = run.view.tf_us / 1e6
    rule = f"entry ±{p.entry:g}, exit ±{p.exit:g}" + (f", stop ±{p.stop:g}" if p.stop else "")
    return {
        "backtest-z": ChartSpec(
            f"z-score, {p.hedge} hedge (W={p.window}, L={p.lookback}); {rule}",
            ts,
            (Line(curve.z, "z", "green"),),
            tuple(levels),
            steps=Z_TICK_STEPS,
            bar_s=bar_s,
            marks=marks(curve.z, legend=False),
        ),
        "backtest-equity": ChartSpec(
            "equity: P&L per quote unit of A, net of fees",
            ts,
            (Line(curve.equity, "equity", "cyan"),),
            ((0.0, "white"),),
            bar_s=bar_s,
            utc=True,
            marks=marks(curve.equity, legend=True),
        ),
    }


def head_text(run: BacktestRun) -> Text:
    view, p, ts = run.view, run.params, run.bars.ts_us
    hedge = f"{p.hedge} hedge"
    if p.hedge == "kalman":
        hedge += f" (delta {p.delta:g}, ve {p.ve:g})"
    long_span = _span_us(run) >= DAY_US
    when = f"{_clock(int(ts[0]), long_span)} to {_clock(int(ts[-1]), long_span)} UTC"
    text = Text(
        f"{view.symbol_a}/{view.symbol_b} {view.timeframe} W={view.window} L={view.lookback}, "
        f"{hedge}, entry {p.entry:g} exit {p.exit:g} stop {p.stop:g}, fee {p.fee_bps:g} bps; "
        f"{len(ts):,} stored bars, {when}"
    )
    if run.result.summary.look_ahead:
        text.append(
            "\nLOOK-AHEAD: the static hedge is fitted on every bar, the future included",
            style="bold yellow",
        )
    return text


def summary_panel(run: BacktestRun, db: StoreTarget) -> Group:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, shown in summary_rows(run.result):
        table.add_row(name, shown)
    return Group(
        table,
        Text("P&L per quote unit of A; fills at the next bar's open", style="dim"),
        Text(f"the same in files: {printable(run.command(db))}", style="dim"),
    )


class BacktestScreen(Screen[None]):
    """The backtest of the pair and view on screen, with the rule of the session."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,b", "dismiss", "Back", id="backtest-back"),
        Binding("r", "rerun", "Run again", id="backtest-rerun"),
    ]

    run: reactive[BacktestRun | None] = reactive(None, always_update=True)

    def __init__(
        self, backtest: Callable[[], Awaitable[BacktestRun]], db: StoreTarget, *, lean: bool = False
    ) -> None:
        super().__init__()
        self._backtest = backtest
        self._db = db
        self._lean = lean
        self.problem: str | None = None  # why there is no run to show

    def compose(self) -> ComposeResult:
        yield Static("", id="backtest-head")
        with Vertical(id="backtest-charts"):
            for name in CHARTS:
                yield ChartView("", id=name)
        with Horizontal(id="backtest-bottom"):
            yield Static("", id="backtest-summary")
            yield PairTable(TRADE_COLUMNS)
        yield Footer()

    def on_mount(self) -> None:
        self.action_rerun()

    def action_rerun(self) -> None:
        """Backtest again: the rule may have changed, and more bars may be stored."""
        self.problem = None
        self._say("running the backtest on the stored bars...")
        self._run()

    @work(exclusive=True, group="backtest", exit_on_error=False)
    async def _run(self) -> None:
        try:
            run = await self._backtest()
        except TooFewBars as exc:
            self.problem = str(exc)
        except Exception as exc:  # a store problem shows here, it never kills the screen
            self.problem = f"backtest failed: {describe(exc)}"
        else:
            self.run = run
            return
        self._say(self.problem, style="yellow")

    def _say(self, text: str, style: str = "") -> None:
        self.query_one("#backtest-head", Static).update(Text(printable(text), style=style))

    def watch_run(self, run: BacktestRun | None) -> None:
        if run is None or not self.is_mounted:
            return
        self.query_one("#backtest-head", Static).update(head_text(run))
        self.query_one("#backtest-summary", Static).update(summary_panel(run, self._db))
        self.query_one(PairTable).show(trade_rows(run))
        self._draw()

    def on_resize(self, _: Resize) -> None:
        self._draw()

    @work(exclusive=True, group="backtest-draw", exit_on_error=False)
    async def _draw(self) -> None:
        """Both charts, rendered off the loop at the size they have now."""
        run = self.run
        if run is None:
            return
        views = {name: self.query_one(f"#{name}", ChartView) for name in CHARTS}
        sizes = {name: view.size for name, view in views.items()}
        specs = chart_specs(run)
        texts = await asyncio.to_thread(
            lambda: {
                name: render(spec, sizes[name].width, sizes[name].height, mono=self._lean)
                for name, spec in specs.items()
            }
        )
        with self.app.batch_update():
            for name, text in texts.items():
                views[name].update(text)
