"""Small typed records shared by every layer.

Trades travel as plain tuples (`TradeRow`) because the ingest path handles tens of
thousands per second and a tuple is the cheapest record Python can build; everything
that is not per-trade is a frozen dataclass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

# (series, trade_id, trade_time_us, recv_time_us, price, qty, buyer_is_maker), where
# series is the store's id for (symbol, stream kind); price and qty are the exchange's
# decimal text, kept verbatim so no precision is lost.
TradeRow: TypeAlias = tuple[int, int, int, int | None, str, str, bool]
# what made an alert fire: one metric's value, or each metric's for a rule reading several
AlertValue: TypeAlias = float | dict[str, float | None] | None

_SYMBOL = re.compile(r"[a-z0-9]{2,20}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ts_us: int | None) -> str | None:
    """ISO-8601 UTC with a Z: whole seconds when whole, microseconds otherwise."""
    if ts_us is None:
        return None
    moment = EPOCH + timedelta(microseconds=int(ts_us))
    spec = "seconds" if ts_us % 1_000_000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


class StreamKind(StrEnum):
    """Which Binance stream a trade came from; their id spaces differ, so it keys the store."""

    TRADE = "trade"
    AGG_TRADE = "aggTrade"


class FeedState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Gap:
    """Trade ids that never arrived: `from_id`..`to_id` inclusive."""

    symbol: str
    kind: StreamKind
    from_id: int
    to_id: int
    detected_us: int

    @property
    def missing(self) -> int:
        return self.to_id - self.from_id + 1


@dataclass(frozen=True, slots=True)
class SymbolStats:
    symbol: str
    received: int
    stored: int
    last_trade_us: int | None
    latency_us: int | None = None  # receive time minus trade time, last trade


@dataclass(frozen=True, slots=True)
class FeedStats:
    """A snapshot of the consumer for status lines and headers."""

    state: FeedState
    url: str
    symbols: tuple[SymbolStats, ...]
    reconnects: int
    gaps: int
    duplicates: int
    malformed: int
    ignored: int
    backpressure_waits: int
    retry_at: float | None  # loop time of the next connection attempt while reconnecting
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """An alert rule as stored: its text is parsed again when loaded."""

    id: int
    rule: str
    symbol_a: str
    symbol_b: str
    timeframe: str
    muted: bool


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One firing, as shown, printed and stored."""

    rule_id: int | None
    rule: str
    symbol_a: str
    symbol_b: str
    timeframe: str
    fired_us: int  # wall-clock time of the update that fired
    bar_us: int | None  # open time of the bar the value belongs to
    asof_us: int | None  # the analytics hold every trade before this time
    value: AlertValue

    @property
    def pair(self) -> str:
        return f"{self.symbol_a}/{self.symbol_b}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # newlines too: one event, one line


def printable(text: str) -> str:
    """Text from outside (a server's close reason, a typed symbol) made safe for a
    terminal: control characters, escape sequences among them, are shown as `\\x1b`."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str) -> float:
    """`90s`, `30m`, `12h`, `7d`, `2w` in seconds; ValueError says how to write one."""
    match = _SPAN.fullmatch(text.strip().lower())
    seconds = float(match.group(1)) * _SPAN_UNITS[match.group(2)] if match else 0.0
    if not 0 < seconds <= 100 * 365 * 86400:
        raise ValueError(
            f"invalid time span {text!r}: use a number and s, m, h, d or w, like 7d"
            " (at most 100 years)"
        )
    return seconds


class SymbolError(ValueError):
    pass


def normalise_symbols(raw: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate user-typed symbols and return them uppercase, as Binance spells them."""
    seen: list[str] = []
    for text in raw:
        low = text.strip().lower()
        if not _SYMBOL.fullmatch(low):
            shown = text if text else "''"
            raise SymbolError(
                f"invalid symbol {shown!s}: use 2-20 letters and digits, like btcusdt"
            )
        if low.upper() in seen:
            raise SymbolError(f"symbol {low} given twice: name each symbol once")
        seen.append(low.upper())
    return tuple(seen)
