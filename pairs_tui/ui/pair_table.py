"""A table that draws only the rows on screen, for the scanner's thousands of pairs.

Textual's DataTable measures every cell it is given and re-renders its rows after each
change: 1,225 rows that all change at every ranking cost a quarter of a second of the
event loop, 19,900 several seconds. This table holds its rows as text and draws a line
when the screen asks for it (Textual's line API), so a new ranking or another sort costs
what the visible rows cost, whatever the number of pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = 2  # spaces between columns


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int  # 0: as wide as the widest cell (the pair)
    numeric: bool = True  # right-aligned


@dataclass(frozen=True, slots=True)
class Row:
    cells: tuple[str, ...]
    marked: bool = False  # drawn in the `--marked` style


class PairTable(ScrollView, can_focus=True):
    """Rows of text under a header that stays put; a cursor row; a click on a header
    asks for a sort, Enter (or a click on the cursor row) selects."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "pair-table--header",
        "pair-table--cursor",
        "pair-table--marked",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "move(-1_000_000_000)", show=False),
        Binding("end", "move(1_000_000_000)", show=False),
        Binding("enter", "select", show=False),
    ]

    cursor_row: reactive[int] = reactive(0)

    class HeaderSelected(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    class RowSelected(Message):
        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__()
        self.columns = tuple(columns)
        self.rows: list[Row] = []
        self._widths = [c.width for c in self.columns]

    def show(self, rows: list[Row]) -> None:
        """These rows from now on (the cursor keeps its place, within the rows)."""
        self.rows = rows
        self._widths = [
            c.width or max([len(c.label), *(len(r.cells[i]) for r in rows)])
            for i, c in enumerate(self.columns)
        ]
        width = sum(self._widths) + GAP * (len(self.columns) - 1)
        self.virtual_size = Size(width, len(rows) + 1)
        self.cursor_row = min(self.cursor_row, max(0, len(rows) - 1))
        self.refresh()

    # -- drawing ----------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            labels = tuple(c.label for c in self.columns)
            text, style = self._text(labels), self.get_component_rich_style("pair-table--header")
        else:
            i = scroll_y + y - 1
            if i >= len(self.rows):
                return Strip.blank(width, self.rich_style)
            row = self.rows[i]
            text, style = self._text(row.cells), self.rich_style
            if row.marked:
                style += self.get_component_rich_style("pair-table--marked")
            if i == self.cursor_row:
                style += self.get_component_rich_style("pair-table--cursor")
        strip = Strip([Segment(text, style)]).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, style)

    def _text(self, cells: Sequence[str]) -> str:
        parts = []
        for column, width, cell in zip(self.columns, self._widths, cells, strict=True):
            cell = cell[:width]
            parts.append(cell.rjust(width) if column.numeric else cell.ljust(width))
        return (" " * GAP).join(parts)

    def watch_cursor_row(self, old: int, new: int) -> None:
        top = self.scroll_offset.y
        visible = max(1, self.scrollable_content_region.height - 1)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + visible:
            self.scroll_to(y=new - visible + 1, animate=False)
        self.refresh()

    # -- keys and mouse ---------------------------------------------------------------
    def action_move(self, step: int) -> None:
        if self.rows:
            self.cursor_row = min(len(self.rows) - 1, max(0, self.cursor_row + step))

    def action_page(self, step: int) -> None:
        self.action_move(step * max(1, self.scrollable_content_region.height - 1))

    def action_select(self) -> None:
        if self.rows:
            self.post_message(self.RowSelected(self.cursor_row))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        x, y = offset.x + self.scroll_offset.x, offset.y
        if y == 0:
            for column, width in zip(self.columns, self._widths, strict=True):
                if x < width + GAP:
                    self.post_message(self.HeaderSelected(column.key))
                    return
                x -= width + GAP
            return
        row = self.scroll_offset.y + y - 1
        if row < len(self.rows):
            if row == self.cursor_row:
                self.action_select()
            self.cursor_row = row
