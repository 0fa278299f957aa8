"""The `w` screen: every pair of the watchlist ranked by cointegration, live.

The app hands it each new ranking (`Ranking`, computed off the loop by the session);
the screen only sorts and draws rows. Enter sends the highlighted pair up to the app
(`PairChosen`), which opens it in the cockpit with the same view.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import JustifyMethod
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from pairs_tui.scan import SPARK_BARS, ScanRow
from pairs_tui.session import Ranking

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


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the DataTable's column key; a `ScanRow.values()` name where it is one
    label: str
    width: int  # fixed: a table of 19,900 rows is never measured cell by cell
    numeric: bool = True


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
    Column("trend", f"z, last {SPARK_BARS} bars", SPARK_BARS),
    *(Column(key, label, 9) for key, label in _NUMBERS.items() if key != "zscore"),
    Column("verdict", "verdict", 22, numeric=False),
)
_KEYS = tuple(c.key for c in COLUMNS)


@dataclass(frozen=True, slots=True)
class Line:
    """A row as the table shows it: what each column sorts by, and its cells."""

    pair: str
    values: dict[str, object]  # None: missing, sorted last
    cells: tuple[str, ...]
    signal: bool

    @classmethod
    def of(cls, row: ScanRow) -> Line:
        values = row.values()
        pair = "/".join(row.pair)
        keyed = {"pair": pair, "trend": values["zscore"], **values}
        cells = [pair, _number(values["zscore"]), sparkline(row.recent_z)]
        cells += [_number(values[key]) for key in _NUMBERS if key != "zscore"]
        cells.append(str(values["verdict"] or "-"))
        signal = row.summary is not None and row.summary.signal
        return cls(pair, {key: keyed[key] for key in _KEYS}, tuple(cells), signal)


_CHUNK = 50  # rows changed between two turns of the event loop


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
        self._shown: list[Line] = []  # what the table holds, row by row
        self.set_reactive(ScannerScreen.watchlist, watchlist)
        self.set_reactive(ScannerScreen.ranking, ranking)

    def compose(self) -> ComposeResult:
        yield Static("", id="scanner-head")
        yield DataTable(cursor_type="row", zebra_stripes=True)
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
        """The head line and the rows, in the sort asked for; the cursor stays on its
        pair as rows move."""
        if not self.is_mounted:
            return
        head = self.query_one("#scanner-head", Static)
        table: DataTable[str | Text] = self.query_one(DataTable)
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
                    (f"{hot} with |z| ≥ 2 on a cointegrated pair", "bold" if hot else ""),
                )
            )
        if ranking is None:
            table.clear(columns=True)
            self._shown = []
            return
        self._fill(ranking)

    @work(exclusive=True, group="fill")
    async def _fill(self, ranking: Ranking) -> None:
        """The table brought to the ranking in the order asked for. Row i is the i-th
        line of that order: a new ranking or a new sort changes cells in place, a few
        rows at a time with the loop free between them (a table measures every cell it
        is given and sorts in one go: 1,225 rows at once would hold keys up for a
        quarter of a second). The cursor stays on its pair."""
        table: DataTable[str | Text] = self.query_one(DataTable)
        current = self._cursor_pair()
        if ranking is not self._lined[0]:  # each ranking turned into lines once
            lines = await asyncio.to_thread(lambda: [Line.of(row) for row in ranking.rows])
            self._lined = (ranking, lines)
        ordered = sort_lines(self._lined[1], *self.order)
        if len(ordered) != len(self._shown) or len(table.columns) == 0:
            table.clear(columns=True)
            self._shown = []
            widest = max((len(line.pair) for line in ordered), default=4)
            for column in COLUMNS:
                table.add_column(column.label, key=column.key, width=column.width or widest)
        for i, line in enumerate(ordered):
            if i == len(self._shown):
                table.add_row(*self._cells(line), key=str(i))
                self._shown.append(line)
            elif (self._shown[i].cells, self._shown[i].signal) != (line.cells, line.signal):
                for key, cell in zip(_KEYS, self._cells(line), strict=True):
                    table.update_cell(str(i), key, cell)
                self._shown[i] = line
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
        if current is not None:
            at = next((i for i, line in enumerate(ordered) if line.pair == current), None)
            if at is not None and at != table.cursor_row:
                table.move_cursor(row=at, animate=False)

    @staticmethod
    def _cells(line: Line) -> list[str | Text]:
        style = "bold reverse" if line.signal else ""
        cells: list[str | Text] = []
        for column, cell in zip(COLUMNS, line.cells, strict=True):
            justify: JustifyMethod = "right" if column.numeric else "left"
            cells.append(Text(cell, style=style, justify=justify))
        return cells

    def _cursor_pair(self) -> str | None:
        """The pair under the cursor, as the table shows it now."""
        row = self.query_one(DataTable).cursor_row
        return self._shown[row].pair if 0 <= row < len(self._shown) else None

    # -- keys and mouse -------------------------------------------------------------
    def action_open(self) -> None:
        pair = self._cursor_pair()
        if pair is not None:
            a, b = pair.split("/")
            self.post_message(self.PairChosen(a, b))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        """A click (or Enter) on a row opens it."""
        event.stop()
        self.action_open()

    def action_sort(self, step: int) -> None:
        """Sort by the next (or previous) column, ascending."""
        keys = [c.key for c in COLUMNS]
        self.order = (keys[(keys.index(self.order[0]) + step) % len(keys)], False)

    def action_reverse(self) -> None:
        self.order = (self.order[0], not self.order[1])

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it; a second click reverses."""
        event.stop()
        key = event.column_key.value
        if key is not None:
            self.order = (key, not self.order[1] if key == self.order[0] else False)
