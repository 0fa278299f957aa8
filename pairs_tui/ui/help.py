"""The `?` screen: every key and palette command, so nothing has to be remembered."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

from pairs_tui.ui.commands import FIXED, TYPED


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def __init__(self, keys: list[tuple[str, str]], store: str = "") -> None:
        super().__init__()
        self.keys = keys
        self.store = store  # where the trades go: the first thing to check when none show

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        if self.store:
            table.add_row("store", Text(self.store))
            table.add_row("", "")
        for key, what in self.keys:
            table.add_row(key, what)
        table.add_row("", "")
        table.add_row("ctrl+p", "command palette:")
        for s in FIXED:
            table.add_row("", s.title)
        for _, title, how in TYPED:
            table.add_row("", f"{title}  ({how})")
        yield Static(table, id="help")
