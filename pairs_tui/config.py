"""Settings: built-in defaults < user config file < `--config FILE` < command-line flags.

Every layer is validated strictly, so a typo in a file is an error that names the key
and the file rather than a setting silently ignored. `config.toml` at the top of the
repository documents the same defaults (a test keeps the two equal).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import platformdirs

from pairs_tui.backtest import BacktestParams
from pairs_tui.feed.binance import DEFAULT_WS_URL, check_ws_url
from pairs_tui.feed.rest import DEFAULT_REST_URL, check_rest_url
from pairs_tui.model import (
    LOOKBACK_MAX,
    REFRESH_RANGE,
    TIMEFRAMES,
    WINDOW_RANGE,
    StreamKind,
    one_of,
    parse_span,
)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PairConfig:
    a: str = "btcusdt"
    b: str = "ethusdt"


@dataclass(frozen=True)
class FeedConfig:
    ws_url: str = DEFAULT_WS_URL
    rest_url: str = DEFAULT_REST_URL  # history at start and holes filled
    backfill: bool = True  # false: live only, REST is never asked
    stream: str = "trade"
    stale_after: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 60.0


@dataclass(frozen=True)
class StoreConfig:
    path: str = ""
    flush_interval: float = 0.25
    max_pending: int = 200_000
    retention: str = ""  # e.g. "7d"; empty: keep every trade

    @property
    def retention_s(self) -> float | None:
        return parse_span(self.retention) if self.retention else None


@dataclass(frozen=True)
class ViewConfig:
    timeframe: str = "1m"
    window: int = 20
    lookback: int = 600


@dataclass(frozen=True)
class DemoConfig:
    rate: float = 20.0


@dataclass(frozen=True)
class UiConfig:
    refresh: float = 0.5
    lean: bool = False
    bell: bool = True


@dataclass(frozen=True)
class WatchlistConfig:
    symbols: tuple[str, ...] = ()  # every pair of these is ranked (key w), and recorded


@dataclass(frozen=True)
class AlertConfig:
    """One `[[alerts]]` entry: a rule, on a pair (or `pair = "watchlist"`: every pair of
    the watchlist) and timeframe (default: the view's)."""

    rule: str
    pair: tuple[str, str] | None = None
    timeframe: str | None = None


# the z rule's defaults are BacktestParams's own: one place for them
_TRADING: dict[str, Any] = {f.name: f.default for f in fields(BacktestParams)}


@dataclass(frozen=True)
class BacktestConfig:
    """The z rule the cockpit's `b` panel and `pairs-tui backtest` trade, and the hedge
    the stats panel shows; W and L are the view's."""

    entry: float = _TRADING["entry"]
    exit: float = _TRADING["exit"]
    stop: float = _TRADING["stop"]
    fee_bps: float = _TRADING["fee_bps"]
    hedge: str = _TRADING["hedge"]
    delta: float = _TRADING["delta"]
    ve: float = _TRADING["ve"]

    def params(self, window: int, lookback: int) -> BacktestParams:
        """ValueError, saying why, for a rule that means nothing (entry below exit...)."""
        return BacktestParams(window, lookback, **asdict(self))


@dataclass(frozen=True)
class ExportConfig:
    dir: str = ""


@dataclass(frozen=True)
class Config:
    pair: PairConfig = field(default_factory=PairConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    watchlist: WatchlistConfig = field(default_factory=WatchlistConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    alerts: tuple[AlertConfig, ...] = ()

    @property
    def stream_kind(self) -> StreamKind:
        return StreamKind(self.feed.stream)

    @property
    def rest_url(self) -> str | None:
        """Where history comes from; None when backfill is off (live only)."""
        return self.feed.rest_url if self.feed.backfill else None


_SECTIONS = {f.name: f.type for f in fields(Config) if f.name != "alerts"}


def user_config_path() -> Path:
    return platformdirs.user_config_path("pairs-tui", appauthor=False) / "config.toml"


def load_config(explicit: Path | None = None, *, user_file: Path | None = None) -> Config:
    """Defaults, then the user's file if it exists, then `explicit` (which must exist)."""
    config = Config()
    user_file = user_file if user_file is not None else user_config_path()
    if user_file.is_file():
        config = apply_file(config, user_file)
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        config = apply_file(config, explicit)
    return config


def apply_file(config: Config, path: Path) -> Config:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (TOML must be UTF-8)") from None
    return apply(config, data, str(path))


def apply(config: Config, data: dict[str, Any], source: str) -> Config:
    """Overlay one layer of settings (a parsed TOML document or flags) onto `config`."""
    for section, values in data.items():
        if section == "alerts":
            config = replace(config, alerts=_alerts(values, source))
            continue
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}]{_hint(section, _SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: '{section}' must be a table ([{section}])")
        current = getattr(config, section)
        hints = get_type_hints(type(current))
        updates = {}
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in hints:
                raise ConfigError(f"{source}: unknown key '{name}'{_hint(key, hints, section)}")
            updates[key] = _coerce(value, hints[key], name, source)
        config = replace(config, **{section: replace(current, **updates)})
    _validate(config, source)
    return config


def _alerts(entries: Any, source: str) -> tuple[AlertConfig, ...]:
    """`[[alerts]]` tables: each rule parsed now, so a typo is caught before running."""
    from pairs_tui.alerts import WATCHLIST, RuleError, parse_rule
    from pairs_tui.model import SymbolError, normalise_symbols

    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f'{source}: alerts must be [[alerts]] tables with rule = "..."')
    out = []
    for i, entry in enumerate(entries, 1):
        name = f"alerts #{i}"
        unknown = set(entry) - {"rule", "pair", "timeframe"}
        if unknown:
            raise ConfigError(f"{source}: unknown key '{min(unknown)}' in {name}")
        rule = entry.get("rule")
        if not isinstance(rule, str):
            raise ConfigError(f'{source}: {name} needs rule = "...", like rule = "z > 2"')
        try:
            parse_rule(rule)
        except RuleError as exc:
            raise ConfigError(f"{source}: {name}: bad rule {rule!r}: {exc}") from None
        pair = entry.get("pair")
        if pair == "watchlist":
            pair = WATCHLIST
        elif pair is not None:
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            ):
                raise ConfigError(
                    f"{source}: {name}: pair must be two symbols, like"
                    f' ["btcusdt", "ethusdt"], or "watchlist"'
                )
            try:
                pair = normalise_symbols(pair)
            except SymbolError as exc:
                raise ConfigError(f"{source}: {name}: {exc}") from None
        timeframe = entry.get("timeframe")
        if timeframe is not None and timeframe not in TIMEFRAMES:
            raise ConfigError(
                f"{source}: {name}: timeframe must be {one_of(TIMEFRAMES)}, not {timeframe!r}"
            )
        out.append(AlertConfig(rule, pair, timeframe))
    return tuple(out)


def _coerce(value: Any, kind: type, name: str, source: str) -> Any:
    ok = (
        (kind is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
        or (kind is bool and isinstance(value, bool))
        or (kind == tuple[str, ...] and isinstance(value, list))
    )
    if not ok:
        raise ConfigError(
            f"{source}: '{name}' must be {_TYPE_WORDS[kind]}, not {type(value).__name__} {value!r}"
        )
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{source}: '{name}' must be a finite number, not {value!r}")
    if kind == tuple[str, ...]:
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: '{name}' must be {_TYPE_WORDS[kind]}, not {value!r}")
        return tuple(value)
    return float(value) if kind is float else value


_TYPE_WORDS: dict[object, str] = {
    float: "a number",
    int: "an integer",
    str: "a string",
    bool: "true or false",
    tuple[str, ...]: 'a list of strings, like ["btcusdt", "ethusdt"]',
}


def _validate(config: Config, source: str) -> None:
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{source}: '{name}' {why}")

    feed, store = config.feed, config.store
    if feed.stream not in {k.value for k in StreamKind}:
        fail("feed.stream", f"must be 'trade' or 'aggTrade', not {feed.stream!r}")
    try:
        check_ws_url(feed.ws_url)
    except ValueError:
        fail("feed.ws_url", f"must start with ws:// or wss://, not {feed.ws_url!r}")
    try:
        check_rest_url(feed.rest_url)
    except ValueError:
        fail("feed.rest_url", f"must start with http:// or https://, not {feed.rest_url!r}")
    for name in ("stale_after", "backoff_initial", "backoff_max", "healthy_after"):
        if getattr(feed, name) <= 0:
            fail(f"feed.{name}", "must be greater than 0")
    if not 0.01 <= store.flush_interval <= 5:
        fail("store.flush_interval", "must be between 0.01 and 5 seconds")
    if store.max_pending < 1000:
        fail("store.max_pending", "must be at least 1000")
    if store.retention:
        try:
            parse_span(store.retention)
        except ValueError as exc:
            fail("store.retention", f"is an {exc}")
    view = config.view
    if view.timeframe not in TIMEFRAMES:
        fail("view.timeframe", f"must be {one_of(TIMEFRAMES)}, not {view.timeframe!r}")
    if not WINDOW_RANGE[0] <= view.window <= WINDOW_RANGE[1]:
        fail("view.window", f"must be from {WINDOW_RANGE[0]} to {WINDOW_RANGE[1]}")
    if view.lookback < view.window + 2:
        fail("view.lookback", f"must be at least view.window + 2 = {view.window + 2}")
    if view.lookback > LOOKBACK_MAX:
        fail("view.lookback", f"must be at most {LOOKBACK_MAX}")
    low, high = REFRESH_RANGE
    if not low <= config.ui.refresh <= high:
        fail("ui.refresh", f"must be between {low:g} and {high:g} seconds")
    if not 0 < config.demo.rate <= 100_000:
        fail("demo.rate", "must be greater than 0 and at most 100000")
    try:
        config.backtest.params(view.window, view.lookback)
    except ValueError as exc:
        raise ConfigError(f"{source}: [backtest]: {exc}") from None
    from pairs_tui.model import SymbolError, symbol_list

    try:
        symbol_list(config.watchlist.symbols, "watchlist")
    except SymbolError as exc:
        fail("watchlist.symbols", f"is not a watchlist: {exc}")


def _hint(word: str, choices: Any, section: str | None = None) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    if not close:
        return ""
    return f"; did you mean '{section}.{close[0]}'?" if section else f"; did you mean [{close[0]}]?"
