"""Small typed records shared by every layer.

Trades travel as plain tuples (`TradeRow`) because the ingest path handles tens of
thousands per second and a tuple is the cheapest record Python can build; everything
that is not per-trade is a frozen dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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

# The view's rules, each once: the CLI, the config file, the palette, the keys and the
# help derive theirs from these (a 15m bar is one line here).
TIMEFRAMES: dict[str, int] = {"1s": 1_000_000, "1m": 60_000_000, "5m": 300_000_000}  # µs
WINDOW_RANGE = (2, 100_000)  # W, bars
LOOKBACK_MAX = 1_000_000  # L, bars; at least W + 2
MAX_SYMBOLS = 200  # in a scan or a watchlist: 19,900 pairs, 200 streams on one connection
REFRESH_RANGE = (0.25, 5.0)  # seconds between redraws (or watch's evaluations)


def one_of(names: Iterable[str]) -> str:
    """`'1s', '1m' or '5m'`: the choices, for a message."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


_SYMBOL = re.compile(r"[a-z0-9]{2,20}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# -- what a trade must look like, from the feed or from a dump: one rule, `check_trade` ----
MAX_TRADE_ID = 2**63 - 1  # SQLite's INTEGER; ids are never negative
# A trade id more than this far from the last one of its symbol, either way, is not taken
# on its word: it waits for the next trade to continue from it (BinanceFeed._unusual_id).
# A reconnect misses thousands to millions of ids; the busiest symbols make up to about
# 10**7 a day, so this is months of trading.
MAX_ID_JUMP = 10**9
MICROS_THRESHOLD = 10**15  # a trade time at or above this is in µs, below it in ms
EARLIEST_TRADE_US = 1_230_768_000_000_000  # 2009-01-01: before Bitcoin; seconds fail here
LATEST_TRADE_US = 4_102_444_800_000_000  # 2100-01-01: nanoseconds fail here
MAX_AHEAD_US = 86_400_000_000  # a trade time more than a day ahead of the local clock
# Prices and quantities are plain decimals: digits, at most one point, no sign, exponent
# or spaces; below 1e15 and at most 15 + 1 + 24 = 40 characters; above zero.
DECIMAL_INT_DIGITS, DECIMAL_FRAC_DIGITS = 15, 24
DECIMAL_PATTERN = rf"[0-9]{{1,{DECIMAL_INT_DIGITS}}}(?:\.[0-9]{{1,{DECIMAL_FRAC_DIGITS}}})?"
NONZERO_PATTERN = "[1-9]"  # with DECIMAL_PATTERN: a positive decimal

BAD_TRADE_ID = "the trade id is not an integer from 0 to 2^63-1"
BAD_TIME = "the time is not in milliseconds or microseconds since 1970 (2009-2100)"
TIME_AHEAD = "the time is more than a day ahead of this computer's clock"
BAD_PRICE = "the price is not a positive number"
BAD_QTY = "the quantity is not a positive number"

_positive_decimal = re.compile(rf"(?=[0.]*{NONZERO_PATTERN}){DECIMAL_PATTERN}").fullmatch


def latest_trade_us(now_us: int | None) -> int:
    """The latest trade time accepted when the local clock says `now_us` (None: no clock)."""
    return LATEST_TRADE_US if now_us is None else min(LATEST_TRADE_US, now_us + MAX_AHEAD_US)


def check_trade(
    price: str, qty: str, trade_id: int, time_us: int, now_us: int | None = None
) -> str | None:
    """Why a trade cannot be stored, or None when it can: the one rule at the door for the
    live feed and for imported dumps. `time_us` is already in µs (see `MICROS_THRESHOLD`);
    `now_us` is the local clock, when a trade from the future should be refused. A
    precompiled pattern and integer comparisons: the feed calls it for every trade."""
    if not 0 <= trade_id <= MAX_TRADE_ID:
        return BAD_TRADE_ID
    if not EARLIEST_TRADE_US <= time_us <= LATEST_TRADE_US:
        return BAD_TIME
    if now_us is not None and time_us > now_us + MAX_AHEAD_US:
        return TIME_AHEAD
    if _positive_decimal(price) is None:
        return BAD_PRICE
    if _positive_decimal(qty) is None:
        return BAD_QTY
    return None


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


DROPPING_WARN_US = 5_000_000  # every trade a duplicate this long: say nothing is recorded


@dataclass(frozen=True, slots=True)
class SymbolStats:
    symbol: str
    received: int
    stored: int
    last_trade_us: int | None
    latency_us: int | None = None  # receive time minus trade time, last trade
    dropping_us: int | None = None  # every trade already stored, for this long


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

    def state_text(self, now: float) -> str:
        """The connection in words, `now` on the loop clock `retry_at` is on."""
        if self.state is FeedState.RECONNECTING and self.retry_at is not None:
            return f"reconnecting in {max(0.0, self.retry_at - now):.0f}s"
        return self.state.value

    def silent_loss(self) -> str | None:
        """Symbols whose every trade has been one already stored for a while, in words
        (a store whose ids run ahead of the feed's: nothing new is being recorded)."""
        late = [s for s in self.symbols if (s.dropping_us or 0) >= DROPPING_WARN_US]
        if not late:
            return None
        names = ", ".join(f"{s.symbol} {(s.dropping_us or 0) / 1e6:.0f}s" for s in late)
        return f"NOTHING RECORDED ({names}: every trade already stored)"


@dataclass(frozen=True, slots=True)
class HistoryBar:
    """A bar of the exchange's history (a kline), as stored beside the trades.

    `until_id` marks the seam with the stream: the bar holds only the trades before that
    id, and the stored trades from it on complete it. None: the whole bar."""

    open_us: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    until_id: int | None = None


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

    @property
    def symbols(self) -> tuple[str, str]:
        return self.symbol_a, self.symbol_b


# -- text from outside, echoed in messages ------------------------------------------------
ECHO_CHARS = 200  # outside text quoted in a message (a symbol, a row, a reason), at most
LINE_CHARS = 400  # one message line as printed, at most: `printable` cuts longer ones


def describe(exc: BaseException) -> str:
    """An error in words, as every message quotes one: `Type: message`, or `Type` alone."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # newlines too: one event, one line


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` cut to about `limit` characters: the start and the end are kept (where a
    message says what and how to fix it), the middle says how much was cut."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - limit
    return f"{text[:head]}...[{cut:,} characters cut]...{text[len(text) - tail :]}"


def printable(text: str, limit: int = LINE_CHARS) -> str:
    """Text from outside (a server's close reason, a typed symbol) made safe for a
    terminal: control characters, escape sequences among them, are shown as `\\x1b`, and
    text longer than `limit` has its middle cut (`clip`)."""
    return clip(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text), limit)


_SPAN = re.compile(r"(\d+(?:\.\d+)?)(s|min|h|d|w|m|mo|month|months)")
_SPAN_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str) -> float:
    """`90s`, `30min`, `12h`, `7d`, `2w` in seconds; ValueError says how to write one.
    A bare `m` is refused: to many a month, to others a minute, and a prune by it wrong
    either way deletes what was meant to stay."""
    match = _SPAN.fullmatch(text.strip().lower())
    if match and match.group(2) not in _SPAN_UNITS:
        number = match.group(1)
        months = f"{float(number) * 30:g}d" if match.group(2) != "m" else f"{number}d"
        raise ValueError(
            f"ambiguous time span {clip(text)!r}: write {number}min for minutes,"
            f" or days and weeks, like {months}"
        )
    seconds = float(match.group(1)) * _SPAN_UNITS[match.group(2)] if match else 0.0
    if not 0 < seconds <= 100 * 365 * 86400:
        raise ValueError(
            f"invalid time span {clip(text)!r}: use a number and s, min, h, d or w, like 7d"
            " (at most 100 years)"
        )
    return seconds


class SymbolError(ValueError):
    pass


def symbol_list(raw: list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    """The symbols of a scan or a watchlist (`what`): valid, each once, not too many."""
    if len(raw) > MAX_SYMBOLS:
        raise SymbolError(
            f"{len(raw)} symbols is more than a {what} takes"
            f" ({MAX_SYMBOLS}: {MAX_SYMBOLS * (MAX_SYMBOLS - 1) // 2:,} pairs)"
        )
    return normalise_symbols(raw)


def normalise_symbols(raw: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate user-typed symbols and return them uppercase, as Binance spells them."""
    seen: list[str] = []
    for text in raw:
        low = text.strip().lower()
        if not _SYMBOL.fullmatch(low):
            shown = clip(text) if text else "''"
            raise SymbolError(
                f"invalid symbol {shown!s}: use 2-20 letters and digits, like btcusdt"
            )
        if low.upper() in seen:
            raise SymbolError(f"symbol {low} given twice: name each symbol once")
        seen.append(low.upper())
    return tuple(seen)
