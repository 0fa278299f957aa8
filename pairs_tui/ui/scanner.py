"""The `w` screen: every pair of the watchlist ranked by cointegration, live.

The app hands it each new ranking (`Ranking`, computed off the loop by the session);
the screen turns it into rows (off the loop too), sorts them and hands them to a
`PairTable`, which draws only those on screen. Enter sends the highlighted pair up to the
app (`PairChosen`), which opens it in the cockpit with the same view.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from pairs_tui.analytics import Z_ENTRY
from pairs_tui.scan import SPARK_BARS, ScanRow
from pairs_tui.session import Ranking
from pairs_tui.ui.pair_table import Column, PairTable, Row

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_RANGE = 3.0  # z from -3 to +3 fills the sparkline's height: rows compare by eye


def sparkline(values: Sequence[float], bound: float = SPARK_RANGE) -> str:
    """One block per value, -bound at the bottom, +bound at the top (clipped); a space
    where there is no value yet."""
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
            continue
        frac = (min(bound, max(-bound, v)) + bound) / (2 * bound)
        out.append(SPARKS[min(len(SPARKS) - 1, int(frac * len(SPARKS)))])
    return "".join(out)


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    assert isinstance(value, float)
    return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"


_NUMBERS = {
    "zscore": "z",
    "corr": "corr",
    "beta": "beta",
    "half_life": "half-life",
    "adf_pvalue": "ADF p",
    "eg_pvalue": "EG p",
    "n_bars": "bars",
}
COLUMNS = (
    Column("pair", "pair", 0, numeric=False),  # as wide as the longest pair
    Column("zscore", "z", 8),
    Column("trend", f"z, last {SPARK_BARS} bars", SPARK_BARS, numeric=False),
    *(Column(key, label, 9) for key, label in _NUMBERS.items() if key != "zscore"),
    Column("verdict", "verdict", 24, numeric=False),
)
_KEYS = tuple(c.key for c in COLUMNS)


@dataclass(frozen=True, slots=True)
class Line:
    """A pair as the table shows it: what each column sorts by, and its row."""

    pair: str
    values: dict[str, object]  # by column key; None: missing, sorted last
    row: Row

    @classmethod
    def of(cls, scanned: ScanRow) -> Line:
        values = scanned.values()
        pair = "/".join(scanned.pair)
        keyed = {"pair": pair, "trend": values["zscore"], **values}
        cells = [pair, _number(values["zscore"]), sparkline(scanned.recent_z)]
        cells += [_number(values[key]) for key in _NUMBERS if key != "zscore"]
        cells.append(str(values["verdict"] or "-"))
        signal = scanned.summary is not None and scanned.summary.signal
        return cls(pair, {key: keyed[key] for key in _KEYS}, Row(tuple(cells), signal))


def sort_lines(lines: Sequence[Line], key: str, descending: bool) -> list[Line]:
    """Lines by one column; missing values last either way."""
    have = [line for line in lines if line.values[key] is not None]
    missing = [line for line in lines if line.values[key] is None]
    by: Any = lambda line: line.values[key]  # noqa: E731  (numbers or text, per column)
    return sorted(have, key=by, reverse=descending) + missing


class ScannerScreen(Screen[None]):
    """The watchlist's pairs in a table, most cointegrated first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,w", "dismiss", "Back", id="scanner-back"),
        Binding("enter", "open", "Open pair", id="scanner-open"),  # the table's own Enter
        Binding("s", "sort(1)", "Sort →", id="scanner-sort-next"),
        Binding("S", "sort(-1)", "Sort ←", id="scanner-sort-back"),
        Binding("r", "reverse", "Reverse", id="scanner-reverse"),
    ]

    order: reactive[tuple[str, bool]] = reactive(("eg_pvalue", False))  # column, descending
    ranking: reactive[Ranking | None] = reactive(None, always_update=True)
    watchlist: reactive[tuple[str, ...]] = reactive(())

    class PairChosen(Message):
        """Open this pair in the cockpit."""

        def __init__(self, symbol_a: str, symbol_b: str) -> None:
            super().__init__()
            self.symbol_a = symbol_a
            self.symbol_b = symbol_b

    def __init__(self, watchlist: tuple[str, ...], ranking: Ranking | None = None) -> None:
        super().__init__()
        self._lined: tuple[Ranking | None, list[Line]] = (None, [])
        self.lines: list[Line] = []  # as the table shows them, in order
        self.set_reactive(ScannerScreen.watchlist, watchlist)
        self.set_reactive(ScannerScreen.ranking, ranking)

    def compose(self) -> ComposeResult:
        yield Static("", id="scanner-head")
        yield PairTable(COLUMNS)
        yield Footer()

    def on_mount(self) -> None:
        self._draw()

    def watch_ranking(self) -> None:
        self._draw()

    def watch_watchlist(self) -> None:
        self._draw()

    def watch_order(self) -> None:
        self._draw()

    def _draw(self) -> None:
        """The head line, then the rows in the order asked for."""
        if not self.is_mounted:
            return
        head = self.query_one("#scanner-head", Static)
        ranking = self.ranking
        n = len(self.watchlist)
        if n < 2:
            head.update(
                "the watchlist needs two symbols or more: type `watchlist add SOLUSDT`"
                " in the palette (ctrl+p), or start with --watchlist btcusdt,ethusdt,solusdt"
            )
        elif ranking is None:
            head.update(f"ranking {n * (n - 1) // 2:,} pairs of {n} symbols...")
        else:
            view = ranking.view
            label = COLUMNS[_KEYS.index(self.order[0])].label
            order = "descending" if self.order[1] else "ascending"
            hot = sum(r.summary is not None and r.summary.signal for r in ranking.rows)
            head.update(
                Text.assemble(
                    f"{len(ranking.rows):,} pairs of {len(ranking.symbols)} symbols, "
                    f"{view.timeframe} bars, W={view.window}, L={view.lookback}; "
                    f"sorted by {label} {order}; ",
                    (f"{hot} with |z| ≥ {Z_ENTRY:g} on a cointegrated pair", "bold" * bool(hot)),
                )
            )
        if ranking is None:
            self._show([])
        elif ranking is self._lined[0]:
            self._show(sort_lines(self._lined[1], *self.order))
        else:
            self._line()

    @work(exclusive=True, group="lines")
    async def _line(self) -> None:
        """A new ranking's rows, made off the loop (thousands of them). No arguments:
        Textual describes a worker by the repr of its arguments, and a ranking's is long."""
        ranking = self.ranking
        if ranking is None:
            return
        lines = await asyncio.to_thread(lambda: [Line.of(row) for row in ranking.rows])
        self._lined = (ranking, lines)
        self._show(sort_lines(lines, *self.order))

    def _show(self, lines: list[Line]) -> None:
        """The table shows these; the cursor stays on its pair."""
        table = self.query_one(PairTable)
        current = self._cursor_pair()
        self.lines = lines
        table.show([line.row for line in lines])
        if current is not None:
            at = next((i for i, line in enumerate(lines) if line.pair == current), None)
            if at is not None:
                table.cursor_row = at

    def _cursor_pair(self) -> str | None:
        row = self.query_one(PairTable).cursor_row
        return self.lines[row].pair if 0 <= row < len(self.lines) else None

    # -- keys and mouse -------------------------------------------------------------
    def action_open(self) -> None:
        pair = self._cursor_pair()
        if pair is not None:
            a, b = pair.split("/")
            self.post_message(self.PairChosen(a, b))

    @on(PairTable.RowSelected)
    def _row_selected(self, event: PairTable.RowSelected) -> None:
        """Enter, or a click on the cursor's row, opens it."""
        event.stop()
        self.action_open()

    def action_sort(self, step: int) -> None:
        """Sort by the next (or previous) column, ascending."""
        self.order = (_KEYS[(_KEYS.index(self.order[0]) + step) % len(_KEYS)], False)

    def action_reverse(self) -> None:
        self.order = (self.order[0], not self.order[1])

    @on(PairTable.HeaderSelected)
    def _header(self, event: PairTable.HeaderSelected) -> None:
        """A click on a header sorts by it; a second click reverses."""
        event.stop()
        key = event.key
        self.order = (key, not self.order[1] if key == self.order[0] else False)
