"""The cockpit's widgets: nouns that show one thing each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from pairs_tui.alerts import AlertRule, value_text
from pairs_tui.analytics import MIN_TEST_BARS, PairSeries, Summary
from pairs_tui.backtest import HedgeNow
from pairs_tui.model import AlertEvent


class StatusLine(Static):
    """Pair, view and feed state in one line."""


class ChartView(Static):
    """A chart rendered as text elsewhere (see charts.py); shows a reason when empty."""


class Readout(Static):
    """The values under the inspection cursor; hidden while the display is live."""


class AlertPanel(Static):
    """The pair's alert rules and its latest firings, newest first."""

    def show(
        self, rules: Sequence[AlertRule], events: Sequence[AlertEvent], *, short: bool
    ) -> None:
        self.update(alert_line(rules, events) if short else alert_table(rules, events))


def _clock(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%H:%M:%S")


def _rule_count(rules: Sequence[AlertRule]) -> str:
    if not rules:
        return "no rules: type `alert abs(z) > 2` in the palette (ctrl+p)"
    muted = sum(r.muted for r in rules)
    return f"{len(rules)} rule{'s' if len(rules) != 1 else ''}" + (
        f", {muted} muted" if muted else ""
    )


def alert_table(rules: Sequence[AlertRule], events: Sequence[AlertEvent]) -> Group:
    """Rules with their ids (the palette's remove/mute take them), then the log."""
    head = Text.assemble(("alerts ", "bold"), _rule_count(rules))
    listed = Table.grid(padding=(0, 1))
    for _ in range(3):
        listed.add_column()
    for r in rules:
        where = f"{r.timeframe}{' watchlist' if r.on_watchlist else ''}"
        listed.add_row(f"#{r.id}", Text(r.rule.text), f"{where}{' muted' if r.muted else ''}")
    log = Table.grid(padding=(0, 1))
    for _ in range(3):
        log.add_column()
    for e in reversed(events):
        log.add_row(_clock(e.fired_us), Text(_fired_rule(e, rules)), value_text(e.value))
    parts: list[RenderableType] = [head, listed]
    if events:
        parts += [Text("fired (UTC)", style="bold"), log]
    return Group(*parts)


def alert_line(rules: Sequence[AlertRule], events: Sequence[AlertEvent]) -> Text:
    """One line for a small terminal: the count, and the last firing."""
    text = Text(f"alerts: {_rule_count(rules)}")
    if events:
        e = events[-1]
        what = _fired_rule(e, rules)
        text.append(f"  last {_clock(e.fired_us)} {what} {value_text(e.value)}", style="bold")
    return text


def _fired_rule(event: AlertEvent, rules: Sequence[AlertRule]) -> str:
    """The rule that fired, with the pair it fired on when it watches the watchlist."""
    watching = {r.id for r in rules if r.on_watchlist}
    return f"{event.pair} {event.rule}" if event.rule_id in watching else event.rule


def _fmt(value: float | int | None, spec: str = ".4g") -> str:
    return "-" if value is None else _number(value, spec)


def _number(value: float | int, spec: str) -> str:
    """`format`, but a value that rounds to zero never shows as `-0.00`."""
    text = format(value + 0.0 if value == 0 else value, spec)  # -0.0 + 0.0 is 0.0
    if text.startswith("-") and not text.strip("-+0.,"):
        return ("+" if spec.startswith("+") else "") + text[1:]
    return text


def _half_life(s: Summary) -> str:
    if s.half_life is None or s.half_life_seconds is None:
        return "-"
    return f"{s.half_life:.1f} bars ({s.half_life_seconds:.0f} s)"


def _glance_table(glances: tuple[Summary, ...]) -> Table:
    """z, corr and beta at every timeframe side by side: does the signal agree across
    horizons?"""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    for _ in glances:
        table.add_column(justify="right")
    table.add_row("", *(Text(g.timeframe, style="bold underline") for g in glances))
    table.add_row("z", *(_fmt(g.zscore, "+.2f") for g in glances))
    table.add_row("corr", *(_fmt(g.corr, "+.2f") for g in glances))
    table.add_row("beta", *(_fmt(g.beta, ".3f") for g in glances))
    table.add_row("bars", *(f"{g.n_bars:,}" for g in glances))
    return table


def provisional(s: Summary) -> bool:
    """A hedge ratio from fewer bars than the tests need moves a lot: shown, but dimmed."""
    return s.beta is not None and s.n_bars < MIN_TEST_BARS


def _fit(value: float | None, s: Summary, spec: str = ".4g") -> Text:
    return Text(_fmt(value, spec), style="dim" if provisional(s) else "")


def hedge_row(hedge: HedgeNow | None) -> tuple[str, str] | None:
    """The trader's chosen hedge (`[backtest] hedge`), when it is not the fit above: its
    beta and z at the newest bar, as the backtest computes them."""
    if hedge is None or hedge.hedge == "rolling":  # rolling's last bar is the fit over L
        return None
    return f"{hedge.hedge} beta / z", f"{_fmt(hedge.beta)} / {_fmt(hedge.zscore, '+.2f')}"


def stats_table(
    s: Summary, glances: tuple[Summary, ...] = (), hedge: HedgeNow | None = None
) -> Group:
    """The numbers a trader quotes, with missing ones shown as '-', never guessed."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows: list[tuple[str, str | Text]] = [
        (f"{s.symbol_a}", _fmt(s.price_a, ",.8g")),
        (f"{s.symbol_b}", _fmt(s.price_b, ",.8g")),
        ("beta", _fit(s.beta, s)),
        ("alpha", _fit(s.alpha, s)),
        ("R²", _fit(s.r2, s, ".3f")),
        ("spread", _fmt(s.spread, ".3e")),
        ("z-score", _fmt(s.zscore, "+.2f")),
        *filter(None, [hedge_row(hedge)]),
        ("corr", _fmt(s.corr, "+.3f")),
        ("ADF stat / p", f"{_fmt(s.adf_stat, '.2f')} / {_fmt(s.adf_pvalue, '.3f')}"),
        ("EG stat / p", f"{_fmt(s.eg_stat, '.2f')} / {_fmt(s.eg_pvalue, '.3f')}"),
        ("verdict", s.verdict or "-"),
        ("half-life", _half_life(s)),
        ("bars / trades", f"{s.n_bars:,} / {s.n_trades:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    notes = [Text(s.reason, style="yellow")] if s.reason else []
    if provisional(s):
        notes.append(Text(f"beta, alpha, R² provisional: {s.n_bars} / {MIN_TEST_BARS} bars"))
    parts: list[RenderableType] = [table, *notes, Text(conventions(s), style="dim")]
    if glances:
        parts += [Text(""), _glance_table(glances)]
    # below the grid, so long lines wrap instead of squeezing the numbers out of view
    return Group(*parts)


def short_stats(s: Summary, hedge: HedgeNow | None = None) -> Text:
    """Three lines for a small terminal: the same numbers, fewer words."""
    eg = f"EG p {_fmt(s.eg_pvalue, '.3f')} {s.verdict or ''}".rstrip()
    if (row := hedge_row(hedge)) is not None:
        eg = f"{row[0]} {row[1]}  {eg}"
    lines = [
        f"{s.symbol_a} {_fmt(s.price_a, ',.8g')}  {s.symbol_b} {_fmt(s.price_b, ',.8g')}  "
        f"beta {'~' if provisional(s) else ''}{_fmt(s.beta)}  R² {_fmt(s.r2, '.3f')}",
        f"z {_fmt(s.zscore, '+.2f')}  corr {_fmt(s.corr, '+.3f')}  spread {_fmt(s.spread, '.3e')}"
        f"  {eg}",
        f"ADF p {_fmt(s.adf_pvalue, '.3f')}  half-life {_half_life(s)}  "
        f"bars {s.n_bars:,}  trades {s.n_trades:,}",
    ]
    text = Text("\n".join(lines))
    if s.reason:
        text.append(f"\n{s.reason}", style="yellow")
    return text


def conventions(s: Summary) -> str:
    return f"log prices, OLS with intercept, sample sd, W={s.window}, L={s.lookback}"


def readout(series: PairSeries, i: int, symbols: tuple[str, str]) -> str:
    """What the charts say at bar `i`."""
    when = datetime.fromtimestamp(series.ts_us[i] / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"cursor {when} UTC  {symbols[0]} {series.close_a[i]:,.8g}  "
        f"{symbols[1]} {series.close_b[i]:,.8g}  spread {_num(series.spread[i], '.3e')}  "
        f"z {_num(series.zscore[i], '+.2f')}  corr {_num(series.corr[i], '+.3f')}  "
        "(esc: live)"
    )


def _num(x: float, spec: str) -> str:
    return "-" if x != x else _number(x, spec)  # NaN: not enough bars at that point


class StatsPanel(Static):
    def show(
        self,
        summary: Summary,
        glances: tuple[Summary, ...],
        hedge: HedgeNow | None = None,
        *,
        short: bool,
    ) -> None:
        self.update(short_stats(summary, hedge) if short else stats_table(summary, glances, hedge))
