"""The cockpit's widgets: nouns that show one thing each."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from pairs_tui.analytics import Summary


class StatusLine(Static):
    """Pair, view and feed state in one line."""


class ChartView(Static):
    """A chart rendered as text elsewhere (see charts.py); shows a reason when empty."""


def _fmt(value: float | int | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def stats_table(s: Summary) -> Group:
    """The numbers a trader quotes, with missing ones shown as '-', never guessed."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        (f"{s.symbol_a}", _fmt(s.price_a, ",.8g")),
        (f"{s.symbol_b}", _fmt(s.price_b, ",.8g")),
        ("beta", _fmt(s.beta)),
        ("alpha", _fmt(s.alpha)),
        ("R²", _fmt(s.r2, ".3f")),
        ("spread", _fmt(s.spread, ".3e")),
        ("z-score", _fmt(s.zscore, "+.2f")),
        ("corr", _fmt(s.corr, "+.3f")),
        ("ADF stat / p", f"{_fmt(s.adf_stat, '.2f')} / {_fmt(s.adf_pvalue, '.3f')}"),
        ("EG stat / p", f"{_fmt(s.eg_stat, '.2f')} / {_fmt(s.eg_pvalue, '.3f')}"),
        ("verdict", s.verdict or "-"),
        (
            "half-life",
            "-" if s.half_life is None else f"{s.half_life:.1f} bars ({s.half_life_seconds:.0f} s)",
        ),
        ("bars / trades", f"{s.n_bars:,} / {s.n_trades:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    notes = [Text(s.reason, style="yellow")] if s.reason else []
    conventions = f"log prices, OLS with intercept, sample sd, W={s.window}, L={s.lookback}"
    # below the grid, so long lines wrap instead of squeezing the numbers out of view
    return Group(table, *notes, Text(conventions, style="dim"))


class StatsPanel(Static):
    def show(self, summary: Summary) -> None:
        self.update(stats_table(summary))
