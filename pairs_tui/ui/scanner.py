"""The `w` screen: every pair of the watchlist ranked by cointegration, live.

The app hands it each new ranking (`Ranking`, computed off the loop by the session);
the screen only sorts and draws rows. Enter sends the highlighted pair up to the app
(`PairChosen`), which opens it in the cockpit with the same view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.console import JustifyMethod
from rich.text import Text
from textual import on
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
    key: str  # the DataTable's column key, a `ScanRow.values()` name where it is one
    label: str
    value: Callable[[ScanRow], object]  # what it sorts by (None: missing, sorted last)
    cell: Callable[[ScanRow], str]
    numeric: bool = True


def _field(name: str) -> Column:
    label = {"eg_pvalue": "EG p", "adf_pvalue": "ADF p", "half_life": "half-life"}
    return Column(
        name,
        label.get(name, name.replace("_", " ")),
        lambda r: r.values()[name],
        lambda r: _number(r.values()[name]),
    )


COLUMNS = (
    Column("pair", "pair", lambda r: "/".join(r.pair), lambda r: "/".join(r.pair), False),
    _field("zscore"),
    Column(
        "trend",
        f"z, last {SPARK_BARS} bars",
        lambda r: r.values()["zscore"],
        lambda r: sparkline(r.recent_z),
    ),
    _field("corr"),
    _field("beta"),
    _field("half_life"),
    _field("adf_pvalue"),
    _field("eg_pvalue"),
    _field("n_bars"),
    Column(
        "verdict",
        "verdict",
        lambda r: r.values()["verdict"],
        lambda r: str(r.values()["verdict"] or "-"),
        False,
    ),
)
_BY_KEY = {c.key: c for c in COLUMNS}


def sort_rows(rows: Sequence[ScanRow], key: str, reverse: bool) -> list[ScanRow]:
    """Rows by one column; missing values last either way."""
    column = _BY_KEY[key]
    have = [r for r in rows if column.value(r) is not None]
    missing = [r for r in rows if column.value(r) is None]
    return sorted(have, key=column.value, reverse=reverse) + missing  # type: ignore[arg-type]


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
        self.set_reactive(ScannerScreen.watchlist, watchlist)
        self.set_reactive(ScannerScreen.ranking, ranking)

    def compose(self) -> ComposeResult:
        yield Static("", id="scanner-head")
        table: DataTable[str | Text] = DataTable(cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column.label, key=column.key)
        yield table
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
            column = _BY_KEY[self.order[0]]
            order = "descending" if self.order[1] else "ascending"
            hot = sum(r.summary is not None and r.summary.signal for r in ranking.rows)
            head.update(
                Text.assemble(
                    f"{len(ranking.rows):,} pairs of {len(ranking.symbols)} symbols, "
                    f"{view.timeframe} bars, W={view.window}, L={view.lookback}; "
                    f"sorted by {column.label} {order}; ",
                    (f"{hot} with |z| ≥ 2 on a cointegrated pair", "bold" if hot else ""),
                )
            )
        if ranking is None:
            table.clear()
            return
        current = self._cursor_pair()
        rows = sort_rows(ranking.rows, *self.order)
        table.clear()
        for row in rows:
            table.add_row(*self._cells(row), key="/".join(row.pair))
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current), animate=False)

    @staticmethod
    def _cells(row: ScanRow) -> list[str | Text]:
        signal = row.summary is not None and row.summary.signal
        style = "bold reverse" if signal else ""
        cells: list[str | Text] = []
        for column in COLUMNS:
            justify: JustifyMethod = "right" if column.numeric else "left"
            cells.append(Text(column.cell(row), style=style, justify=justify))
        return cells

    def _cursor_pair(self) -> str | None:
        table: DataTable[str | Text] = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

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
