"""The `pairs-tui` command: parse, validate, build the engine, pick a front.

Every mistake a user can make on the command line ends in one line on stderr and exit
code 2; a failure while running ends in one line and exit code 1. Never a traceback: a
crash is one line naming the error and its crash log (`pairs-tui --debug` shows it).
"""

from __future__ import annotations

import asyncio
import difflib
import io
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pairs_tui import __version__
from pairs_tui.backtest import HEDGES
from pairs_tui.config import Config, ConfigError, apply, load_config
from pairs_tui.crash import Crashed, report_crash
from pairs_tui.feed.binance import check_ws_url
from pairs_tui.feed.rest import MARKET_DATA_URL, UnknownSymbol, check_rest_url
from pairs_tui.ingest import RecordingStopped
from pairs_tui.model import (
    LOOKBACK_MAX,
    REFRESH_RANGE,
    TIMEFRAMES,
    WINDOW_RANGE,
    SymbolError,
    describe,
    normalise_symbols,
    parse_span,
    printable,
    symbol_list,
)
from pairs_tui.store import (
    STORE_ERRORS,
    StoreError,
    StoreTarget,
    default_db_path,
    is_postgres,
    target_text,
)

if TYPE_CHECKING:
    from pairs_tui.alerts import RuleSpec
    from pairs_tui.backtest import BacktestParams
    from pairs_tui.engine import PairView
    from pairs_tui.model import StreamKind
    from pairs_tui.session import SessionPlan

USAGE_ERROR = 2
DEMO_DB = "demo.db"  # the demo feed's store, beside the live one
RUNTIME_ERROR = 1


class UsageProblem(Exception):
    """Bad input that the user can fix; exit code 2."""


class RuntimeProblem(Exception):
    """Something went wrong while running (no data, a bad row); exit code 1."""


def _config(config_file: Path | None, **flags: dict[str, object]) -> Config:
    config = load_config(config_file)
    layer = {
        section: {k: v for k, v in values.items() if v is not None}
        for section, values in flags.items()
    }
    return apply(config, {k: v for k, v in layer.items() if v}, "command line")


def _db_path(config: Config, db: str | None, *, demo: bool = False) -> StoreTarget:
    """--db, else store.path, else the user data directory's ticks.db; the demo's
    synthetic trades go to demo.db beside it unless --db names a store. A postgresql://
    URL is a database server's (the demo never writes into one that store.path names)."""
    if db is not None:
        return db if is_postgres(db) else _expand(Path(db))
    configured = config.store.path
    if is_postgres(configured) and not demo:
        return configured
    path = _expand(Path(configured)) if configured and not is_postgres(configured) else None
    path = path or default_db_path()
    if demo:
        path = path.with_name(DEMO_DB)
    if not configured or is_postgres(configured):
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _finite(value: float | None, flag: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", param_hint=flag)
    return value


def _expand(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:
        raise UsageProblem(f"cannot expand {path}: no such user") from None


def _ws_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_ws_url(value)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A config.toml to apply over the defaults and your user config.",
)
db_option = click.option(
    "--db",
    help="The tick store: a SQLite file, or postgresql://user@host:port/dbname"
    " (default: store.path, or ticks.db in the user data directory).",
)
seed_option = click.option("--seed", type=int, help="Pick another demo market (default 1).")
ws_url_option = click.option("--ws-url", help="Binance WebSocket base URL (ws:// or wss://).")
duration_option = click.option(
    "--duration",
    type=click.FloatRange(min=0, max=10 * 365 * 86400, min_open=True),
    callback=lambda ctx, param, value: _finite(value, "--duration"),
    help="Stop by itself after this many seconds.",
)


def _rest_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_rest_url(value)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


def rest_options(fn):
    """--rest-url and --no-backfill: where history comes from, or none at all."""
    fn = click.option(
        "--no-backfill",
        "no_backfill",
        is_flag=True,
        help="Live only: no history from REST (feed.backfill = false).",
    )(fn)
    return click.option(
        "--rest-url",
        help=f"Binance REST base URL for history (feed.rest_url; market data only:"
        f" {MARKET_DATA_URL}).",
    )(fn)


def _feed_settings(ws_url: str | None, rest_url: str | None, no_backfill: bool) -> dict:
    """The feed's command-line settings, checked, as config overrides."""
    return {
        "ws_url": _ws_url(ws_url),
        "rest_url": _rest_url(rest_url),
        "backfill": False if no_backfill else None,
    }


no_feed_option = click.option(
    "--no-feed", is_flag=True, help="Only read the store (another process records)."
)


def demo_option(verb: str):
    return click.option(
        "--demo", is_flag=True, help=f"{verb} the embedded demo feed (no internet)."
    )


def refresh_option(what: str):
    return click.option(
        "--refresh",
        "refresh_every",
        type=click.FloatRange(*REFRESH_RANGE),
        help=f"Seconds between {what} (config ui.refresh, default 0.5).",
    )


GROUP_FLAGS = ("--debug",)  # options of pairs-tui itself, given before any command


def leading_flags(args: list[str]) -> list[str]:
    """The group's own flags at the head of the command line."""
    head = 0
    while head < len(args) and args[head] in GROUP_FLAGS:
        head += 1
    return args[:head]


class CockpitByDefault(click.Group):
    """`pairs-tui btcusdt ethusdt` means `pairs-tui cockpit btcusdt ethusdt`, and a bare
    `pairs-tui` (or `pairs-tui --demo`) opens the configured pair."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own = {"-h", "--help", "--version"}
        flags = leading_flags(args)
        rest = args[len(flags) :]
        if not rest or (rest[0] not in self.commands and rest[0] not in own):
            if rest and (near := difflib.get_close_matches(rest[0], self.commands, 1, 0.75)):
                raise UsageProblem(f"no command {rest[0]!r}; did you mean {near[0]!r}?")
            args = [*flags, "cockpit", *rest]
        return super().parse_args(ctx, args)


@click.group(cls=CockpitByDefault, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pairs-tui")
@click.option(
    "--debug",
    is_flag=True,
    help="On a crash, show the traceback (the cockpit: Textual's crash screen) instead of "
    "one line and a crash log. Give it before the command: pairs-tui --debug record ...",
)
def cli(debug: bool) -> None:
    """pairs-tui: live Binance pairs analytics in the terminal."""


@cli.command()
@click.argument("symbols", nargs=-1, required=True)
@demo_option("Record from")
@seed_option
@duration_option
@db_option
@ws_url_option
@rest_options
@click.option(
    "--backfill",
    "backfill_span",
    help="History to fetch before streaming, of 1s, 1m and 5m bars: 4h, 7d"
    " (default: the configured view's L + W bars).",
)
@click.option(
    "--stream",
    type=click.Choice(["trade", "aggTrade"]),
    help="Which Binance trade stream to record (feed.stream).",
)
@config_option
def record(
    symbols: tuple[str, ...],
    demo: bool,
    seed: int | None,
    duration: float | None,
    db: str | None,
    ws_url: str | None,
    rest_url: str | None,
    no_backfill: bool,
    backfill_span: str | None,
    stream: str | None,
    config_file: Path | None,
) -> None:
    """Record live trades of SYMBOLS into the tick store, headless, until Ctrl-C."""
    from pairs_tui.record import RecordPlan, run_record

    try:
        names = normalise_symbols(symbols)
    except SymbolError as exc:
        raise UsageProblem(str(exc)) from None
    if backfill_span is not None and no_backfill:
        raise UsageProblem("--backfill and --no-backfill contradict each other: give one")
    span_s = None
    if backfill_span is not None:
        try:
            span_s = parse_span(backfill_span)
        except ValueError as exc:
            raise UsageProblem(f"--backfill: {exc}") from None
    feed = _feed_settings(ws_url, rest_url, no_backfill) | {"stream": stream}
    config = _config(config_file, feed=feed)
    path = _db_path(config, db, demo=demo)
    plan = RecordPlan(names, path, demo=demo, seed=seed, duration=duration, backfill_s=span_s)
    try:
        asyncio.run(run_record(plan, config))
    except UnknownSymbol as exc:
        raise UsageProblem(str(exc)) from None


async def _check_store(path: StoreTarget, source: str | None) -> None:
    """Open the store as the command will (StoreError says what is wrong with it) and,
    for a feed, check that it holds trades of the same source."""
    from pairs_tui.store import TickStore

    async with await TickStore.open(path) as store:
        if source is not None:
            await store.claim(source)


def _existing_db(config: Config, db: str | None, *, demo: bool = False) -> StoreTarget:
    """Reading commands never create an empty store by accident (a database server's
    store is checked when it is opened read-only)."""
    path = _db_path(config, db, demo=demo)
    if not is_postgres(path) and not Path(path).is_file():
        raise UsageProblem(f"no tick store at {path}: record or import trades first, or pass --db")
    return path


def _check_output(output: str) -> None:
    """An output file (or - for stdout) that can be written, said before any work."""
    if output == "-":
        return
    from pairs_tui.export import export_target

    try:
        if export_target(output)[1]:
            raise UsageProblem(f"{output} is a directory: give a file name in it")
    except ValueError as exc:
        raise UsageProblem(f"cannot write {output}: {exc}") from None


def _view(config: Config, symbol_a: str, symbol_b: str) -> PairView:
    """The pair and the configured view, validated: bad input is a usage error."""
    from pairs_tui.engine import PairView, ViewError

    try:
        a, b = normalise_symbols([symbol_a, symbol_b])
        v = config.view
        return PairView(a, b, v.timeframe, v.window, v.lookback)
    except (SymbolError, ViewError) as exc:
        raise UsageProblem(str(exc)) from None


def _whole_bars(
    since: str | None, until: str | None, view: PairView
) -> tuple[int | None, int | None]:
    """--from and --to as times, in whole bars: a bar cut by them would lie."""
    since_us, until_us = _time(since, "--from"), _time(until, "--to")
    tf = view.tf_us
    if since_us is not None:
        since_us = -(-since_us // tf) * tf
    if until_us is not None:
        until_us = until_us // tf * tf
    return since_us, until_us


def _time(value: str | None, flag: str) -> int | None:
    from pairs_tui.export import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise UsageProblem(
            f"invalid {flag} {value!r}: use an ISO time like 2026-01-31 or 2026-01-31T14:00:00Z"
        ) from None


view_options = [
    click.option("--timeframe", type=click.Choice(list(TIMEFRAMES)), help="Bar size."),
    click.option(
        "--window",
        type=click.IntRange(*WINDOW_RANGE),
        help="W: bars in rolling z-score and correlation.",
    ),
    click.option(
        "--lookback",
        type=click.IntRange(WINDOW_RANGE[0] + 2, LOOKBACK_MAX),
        help="L: joined bars for the hedge ratio and ADF.",
    ),
]


alert_option = click.option(
    "--alert",
    "alerts",
    multiple=True,
    metavar="RULE",
    help="An alert rule on this pair and timeframe, like 'abs(z) > 2' (repeatable).",
)


watchlist_option = click.option(
    "--watchlist",
    metavar="SYM,SYM,...",
    help="Symbols whose every pair is ranked by cointegration (key w in the cockpit),"
    " recorded with the pair; in place of [watchlist] symbols.",
)


def _watchlist(config: Config, flag: str | None) -> tuple[str, ...]:
    raw = config.watchlist.symbols if flag is None else [s for s in flag.split(",") if s]
    try:
        return symbol_list(list(raw), "watchlist")
    except SymbolError as exc:
        raise UsageProblem(f"bad --watchlist: {exc}" if flag is not None else str(exc)) from None


def _rule_specs(
    config: Config,
    alerts: tuple[str, ...],
    view: PairView,
    on: tuple[str, str] | None = None,
) -> tuple[RuleSpec, ...]:
    """The config file's [[alerts]] (on their pair, or this one) and the --alert rules
    (on `on`, by default the pair in view)."""
    from pairs_tui.alerts import RuleError, RuleSpec, parse_rule

    specs = [
        RuleSpec(parse_rule(a.rule), a.pair or view.symbols, a.timeframe or view.timeframe)
        for a in config.alerts
    ]
    for text in alerts:
        try:
            specs.append(RuleSpec(parse_rule(text), on or view.symbols, view.timeframe))
        except RuleError as exc:
            raise UsageProblem(f"bad --alert {text!r}: {exc}") from None
    return tuple(specs)


def _session_plan(
    config: Config,
    view: PairView,
    db_path: StoreTarget,
    *,
    demo: bool,
    seed: int | None,
    no_feed: bool,
    rules: tuple[RuleSpec, ...],
    watchlist: tuple[str, ...],
    keep_rules: bool = True,
) -> SessionPlan:
    """What the cockpit and `watch` run: the same session, from the same settings."""
    from pairs_tui.record import feed_options
    from pairs_tui.session import SessionPlan

    return SessionPlan(
        view=view,
        db_path=db_path,
        feed=None if no_feed else feed_options(config),
        demo=demo,
        seed=seed,
        demo_rate=config.demo.rate,
        flush_interval=config.store.flush_interval,
        kind=config.stream_kind,
        rules=rules,
        keep_rules=keep_rules,
        retention_s=None if no_feed else config.store.retention_s,
        rest_url=None if no_feed else config.rest_url,
        watchlist=watchlist,
        backtest=config.backtest.params(view.window, view.lookback),
    )


def with_view_options(fn):
    for option in reversed(view_options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("symbols", nargs=-1)
@with_view_options
@demo_option("Run on")
@seed_option
@no_feed_option
@refresh_option("redraws")
@click.option("--lean", is_flag=True, default=None, help="Monochrome charts for slow links.")
@alert_option
@watchlist_option
@db_option
@ws_url_option
@rest_options
@config_option
def cockpit(
    symbols: tuple[str, ...],
    timeframe: str | None,
    window: int | None,
    lookback: int | None,
    demo: bool,
    seed: int | None,
    no_feed: bool,
    refresh_every: float | None,
    lean: bool | None,
    alerts: tuple[str, ...],
    watchlist: str | None,
    db: str | None,
    ws_url: str | None,
    rest_url: str | None,
    no_backfill: bool,
    config_file: Path | None,
) -> None:
    """The terminal cockpit for a pair: `pairs-tui btcusdt ethusdt`, or `pairs-tui` for
    the pair in the config file."""
    from pairs_tui.ui import app as ui  # looked up when run: the benchmark swaps make_app

    config = _config(
        config_file,
        view={"timeframe": timeframe, "window": window, "lookback": lookback},
        feed=_feed_settings(ws_url, rest_url, no_backfill),
        ui={"refresh": refresh_every, "lean": lean},
    )
    if len(symbols) not in (0, 2):
        raise UsageProblem(
            f"give two symbols (or none for the configured pair), not {len(symbols)}"
        )
    symbol_a, symbol_b = symbols or (config.pair.a, config.pair.b)
    view = _view(config, symbol_a, symbol_b)
    names = _watchlist(config, watchlist)
    db_path = (_existing_db if no_feed else _db_path)(config, db, demo=demo)
    source = None if no_feed else "demo" if demo else "live"
    asyncio.run(_check_store(db_path, source))  # a bad --db is one line, before the screen
    plan = _session_plan(
        config,
        view,
        db_path,
        demo=demo,
        seed=seed,
        no_feed=no_feed,
        rules=_rule_specs(config, alerts, view),
        watchlist=names,
    )
    export_dir = _expand(Path(config.export.dir)) if config.export.dir else None
    app = ui.make_app(
        plan,
        refresh_every=config.ui.refresh,
        lean=config.ui.lean,
        export_dir=export_dir,
        bell=config.ui.bell,
        debug=_debugging(click.get_current_context().find_root().params["debug"]),
    )
    app.run()
    if app.crash is not None:  # Textual has shut down and restored the terminal
        raise Crashed(app.crash, app.crash_report())
    if app.usage_error is not None:  # a symbol Binance does not list
        raise UsageProblem(app.usage_error)
    if app.session.failure is not None:
        raise app.session.failure
    if (stats := app.session.feed_stats()) is not None:
        from pairs_tui.record import stopped_line

        click.echo(printable(stopped_line(stats, db_path)))
    sys.exit(app.return_code or 0)


@cli.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--symbol", help="The symbol, when the file name does not say it.")
@db_option
@config_option
def import_(files: tuple[Path, ...], symbol: str | None, db: str | None, config_file: Path | None):
    """Load Binance trade dumps (data.binance.vision .zip or .csv) into the tick store."""
    from pairs_tui.importer import DumpError, identify, run_imports

    config = _config(config_file)
    for path in files:
        if not path.is_file():
            raise UsageProblem(f"{path}: no such file")
    try:
        dumps = [identify(path, symbol) for path in files]
    except DumpError as exc:
        raise UsageProblem(str(exc)) from None
    failed = asyncio.run(run_imports(dumps, _db_path(config, db)))
    if failed:
        sys.exit(RUNTIME_ERROR)


@cli.command()
@click.argument("symbol_a")
@click.argument("symbol_b")
@click.option(
    "--what",
    type=click.Choice(["bars", "analytics", "summary"]),
    required=True,
    help="bars CSV, analytics CSV or summary JSON.",
)
@click.option("-o", "--output", required=True, help="Output file, or - for stdout.")
@with_view_options
@click.option("--from", "since", help="Start time, ISO-8601 (UTC unless stated).")
@click.option("--to", "until", help="End time (exclusive), ISO-8601.")
@click.option(
    "--asof",
    help="Analytics as they stood at this instant: every trade before it, the bar then "
    "forming included (give an alert's asof to see why it fired).",
)
@click.option("--stream", type=click.Choice(["trade", "aggTrade"]), help="Which trades to use.")
@db_option
@config_option
def export(
    symbol_a: str,
    symbol_b: str,
    what: str,
    output: str,
    timeframe: str | None,
    window: int | None,
    lookback: int | None,
    since: str | None,
    until: str | None,
    asof: str | None,
    stream: str | None,
    db: str | None,
    config_file: Path | None,
) -> None:
    """Export bars, analytics or the summary of a pair from the tick store."""
    from pairs_tui.export import NothingToExport, run_export

    config = _config(
        config_file,
        view={"timeframe": timeframe, "window": window, "lookback": lookback},
        feed={"stream": stream},
    )
    view = _view(config, symbol_a, symbol_b)
    _check_output(output)
    since_us, until_us = _whole_bars(since, until, view)
    if asof is not None:
        if until is not None:
            raise UsageProblem("give --to or --asof, not both")
        until_us = _time(asof, "--asof")  # to the microsecond: a moment, not a bar
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise UsageProblem(
            f"--from {since} is not before --asof {asof}"
            if asof
            else f"--from {since} is not before --to {until} (in whole {view.timeframe} bars)"
        )
    span = (since_us, until_us)
    path = _existing_db(config, db)
    try:
        written = asyncio.run(
            run_export(path, view, config.stream_kind, what, output, *span, asof=asof is not None)
        )
    except NothingToExport as exc:
        raise RuntimeProblem(str(exc)) from None
    except OSError as exc:
        raise RuntimeProblem(f"cannot write {output}: {exc.strerror or exc}") from None
    for item in written:
        click.echo(f"wrote {item}", err=True)


@cli.command()
@click.argument("symbols", nargs=-1)
@alert_option
@watchlist_option
@with_view_options
@demo_option("Run on")
@seed_option
@no_feed_option
@duration_option
@refresh_option("evaluations")
@db_option
@ws_url_option
@rest_options
@config_option
def watch(
    symbols: tuple[str, ...],
    alerts: tuple[str, ...],
    watchlist: str | None,
    timeframe: str | None,
    window: int | None,
    lookback: int | None,
    demo: bool,
    seed: int | None,
    no_feed: bool,
    duration: float | None,
    refresh_every: float | None,
    db: str | None,
    ws_url: str | None,
    rest_url: str | None,
    no_backfill: bool,
    config_file: Path | None,
) -> None:
    """Alerts without a screen: each firing of a --alert rule is one JSON line on stdout
    (time, pair, timeframe, rule, value, bar, asof), until Ctrl-C or --duration. The
    rules watch SYMBOL_A SYMBOL_B, or with --watchlist every pair of those symbols."""
    from pairs_tui.alerts import WATCHLIST
    from pairs_tui.watch import run_watch

    config = _config(
        config_file,
        view={"timeframe": timeframe, "window": window, "lookback": lookback},
        feed=_feed_settings(ws_url, rest_url, no_backfill),
        ui={"refresh": refresh_every},
    )
    names: tuple[str, ...] = ()
    if watchlist is not None:
        if symbols:
            raise UsageProblem("give a pair or --watchlist, not both")
        names = _watchlist(config, watchlist)
        if len(names) < 2:
            raise UsageProblem(f"a watchlist needs at least two symbols, not {len(names)}")
        symbols = names[:2]  # the session's pair: rules given here watch every pair
    elif len(symbols) != 2:
        raise UsageProblem(f"give two symbols (or --watchlist), not {len(symbols)}")
    view = _view(config, *symbols)
    target = WATCHLIST if names else view.symbols
    rules = tuple(r for r in _rule_specs(config, alerts, view, target) if r.pair == target)
    if not rules:
        raise UsageProblem("nothing to watch: give a rule with --alert 'abs(z) > 2'")
    plan = _session_plan(
        config,
        view,
        (_existing_db if no_feed else _db_path)(config, db, demo=demo),
        demo=demo,
        seed=seed,
        no_feed=no_feed,
        rules=rules,
        watchlist=names,
        keep_rules=False,
    )
    try:
        asyncio.run(run_watch(plan, every=config.ui.refresh, duration=duration))
    except UnknownSymbol as exc:
        raise UsageProblem(str(exc)) from None


@cli.command()
@click.argument("symbols", nargs=-1)
@with_view_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="A table for people, CSV or JSON for programs.",
)
@click.option("-o", "--output", default="-", help="Output file, or - for stdout (default).")
@click.option("--top", type=click.IntRange(min=1), help="Only the N most cointegrated pairs.")
@click.option("--stream", type=click.Choice(["trade", "aggTrade"]), help="Which trades to use.")
@click.option(
    "--backfill",
    is_flag=True,
    help="First fetch each symbol's L + W bars of history from Binance REST into the store.",
)
@click.option(
    "--rest-url",
    help=f"Binance REST base URL for --backfill (feed.rest_url; market data only:"
    f" {MARKET_DATA_URL}).",
)
@demo_option("Backfill from")
@db_option
@config_option
def scan(
    symbols: tuple[str, ...],
    timeframe: str | None,
    window: int | None,
    lookback: int | None,
    fmt: str,
    output: str,
    top: int | None,
    stream: str | None,
    backfill: bool,
    rest_url: str | None,
    demo: bool,
    db: str | None,
    config_file: Path | None,
) -> None:
    """Every pair of SYMBOLS ranked by cointegration (Engle-Granger p-value), from the
    store, with the numbers `export --what summary` gives for each; with --backfill, the
    exchange's history is fetched into the store first (a fresh store works)."""
    if len(symbols) < 2:
        raise UsageProblem(f"give at least two symbols to scan, not {len(symbols)}")
    try:
        names = symbol_list(symbols, "scan")
    except SymbolError as exc:
        raise UsageProblem(str(exc)) from None
    if (rest_url is not None or demo) and not backfill:
        raise UsageProblem("--rest-url and --demo say where from: they need --backfill")
    config = _config(
        config_file,
        view={"timeframe": timeframe, "window": window, "lookback": lookback},
        feed={"stream": stream, "rest_url": _rest_url(rest_url)},
    )
    view = _view(config, names[0], names[1])
    _check_output(output)
    path = (_db_path if backfill else _existing_db)(config, db, demo=demo)
    if backfill:
        asyncio.run(_check_store(path, "demo" if demo else "live"))
    fetch = _BackfillFrom(None if demo else config.feed.rest_url) if backfill else None
    try:
        asyncio.run(_scan(path, names, view, config, fmt, output, top, fetch))
    except UnknownSymbol as exc:
        raise UsageProblem(str(exc)) from None
    except OSError as exc:
        raise RuntimeProblem(f"cannot write {output}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class _BackfillFrom:
    rest_url: str | None  # None: an embedded demo server


async def _backfill(
    path: StoreTarget,
    names: tuple[str, ...],
    view: PairView,
    kind: StreamKind,
    rest_url: str | None,
    shown: bool,
) -> None:
    """The scan's L + W bars of each symbol from REST into the store (None: from an
    embedded demo server), with a progress bar on a terminal; what is stored already is
    not asked again. Unknown symbols raise UnknownSymbol before anything is fetched."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pairs_tui.feed.demo import DemoServer
    from pairs_tui.feed.rest import HistoryUnavailable, RestClient
    from pairs_tui.history import History
    from pairs_tui.store import TickStore

    def say(text: str) -> None:
        click.echo(printable(text), err=True)

    server = None
    if rest_url is None:
        server = await DemoServer(seed=1).start()
        rest_url = server.rest_url
    rest = RestClient(rest_url)
    try:
        async with await TickStore.open(path) as store:
            for warning in (await rest.listing()).check(names):
                say(warning)
            await store.claim("demo" if server is not None else "live")
            history = History(rest, store, kind, say)
            columns = (TextColumn("history"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"))
            console = Console(file=sys.stderr)
            with Progress(*columns, console=console, transient=True, disable=not shown) as bar:
                task = bar.add_task("history", total=None)
                job = asyncio.create_task(history.backfill(names, {view.timeframe: view.keep}))
                while not job.done():
                    await asyncio.wait({job}, timeout=0.1)
                    bar.update(task, completed=history.covered, total=history.total or None)
                await job
            say(f"history: {history.bars_stored:,} bars from {rest.base_url}")
    except HistoryUnavailable as exc:
        raise RuntimeProblem(f"history unavailable: {exc}") from None
    finally:
        await rest.close()
        if server is not None:
            await server.stop()


async def _scan(
    path: StoreTarget,
    names: tuple[str, ...],
    view: PairView,
    config: Config,
    fmt: str,
    output: str,
    top: int | None,
    fetch: _BackfillFrom | None,
) -> None:
    """The scan, after fetching history into the store when `fetch` says where from."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pairs_tui.export import write_atomically
    from pairs_tui.scan import scan, table, to_csv, to_json
    from pairs_tui.store import TickStore

    shown = sys.stderr.isatty()
    if fetch is not None:
        await _backfill(path, names, view, config.stream_kind, fetch.rest_url, shown)
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pairs"),
        console=Console(file=sys.stderr),
        transient=True,
        disable=not shown,
    ) as bar:
        task = bar.add_task("scan", total=None)
        async with await TickStore.open(path, readonly=True) as store:
            rows = await scan(
                store,
                names,
                view,
                config.stream_kind,
                now_us=time.time_ns() // 1000,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    rows = rows[:top] if top is not None else rows
    if fmt == "table":
        to_file = output != "-"
        wide = to_file or not sys.stdout.isatty()  # a terminal's own width, else all columns
        buffer = io.StringIO()
        console = Console(file=buffer if to_file else sys.stdout, width=200 if wide else None)
        console.print(table(rows, view))
        text = buffer.getvalue()
    else:
        text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomically(Path(output).expanduser(), lambda fh: fh.write(text))
        click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("symbol_a")
@click.argument("symbol_b")
@with_view_options
@click.option("--entry", help="Enter at |z| >= E [backtest.entry: 2] (E,E,...: a sweep).")
@click.option("--exit", "exit_", help="Exit at X [backtest.exit: 0.5] (X,X,...).")
@click.option("--stop", help="Stop at S; 0: none [backtest.stop: 0] (S,S,...).")
@click.option("--fee-bps", type=float, help="Fee per leg, bps [backtest.fee_bps: 0].")
@click.option(
    "--hedge",
    type=click.Choice(HEDGES),
    help="Hedge ratio: OLS over the last L bars, one OLS over all (look-ahead), or Kalman"
    " [backtest.hedge: rolling].",
)
@click.option("--delta", type=float, help="Kalman state noise [backtest.delta: 1e-4].")
@click.option("--ve", type=float, help="Kalman observation noise [backtest.ve: 1e-3].")
@click.option("--from", "since", help="Start time, ISO-8601 (UTC unless stated).")
@click.option("--to", "until", help="End time (exclusive), ISO-8601.")
@click.option(
    "-o", "--output", "out_dir", required=True, help="Directory for trades, equity, summary."
)
@click.option("--stream", type=click.Choice(["trade", "aggTrade"]), help="Which trades to use.")
@db_option
@config_option
def backtest(
    symbol_a: str,
    symbol_b: str,
    timeframe: str | None,
    window: int | None,
    lookback: int | None,
    entry: str | None,
    exit_: str | None,
    stop: str | None,
    fee_bps: float | None,
    hedge: str | None,
    delta: float | None,
    ve: float | None,
    since: str | None,
    until: str | None,
    out_dir: str,
    stream: str | None,
    db: str | None,
    config_file: Path | None,
) -> None:
    """Trade the pair's z-score on the stored bars: enter at |z| >= E, exit at X, stop at S,
    fills at the next bar's open, fees on both legs. Writes trades.csv, equity.csv and
    summary.json into the directory -o, and prints the summary. Lists of E, X or S run
    every combination instead: sweep.csv, best sharpe first."""
    from itertools import product

    config = _config(
        config_file,
        view={"timeframe": timeframe, "window": window, "lookback": lookback},
        feed={"stream": stream},
    )
    view = _view(config, symbol_a, symbol_b)
    # the flags over [backtest], checked as one rule: `--entry 0.4` against exit = 0.5 is
    # refused for what it is, whichever layer each came from
    rule = config.backtest
    flags: dict[str, Any] = {"fee_bps": fee_bps, "hedge": hedge, "delta": delta, "ve": ve}
    rule = replace(rule, **{k: v for k, v in flags.items() if v is not None})
    levels = [
        _levels(text, flag) if text is not None else (getattr(rule, name),)
        for text, flag, name in ((entry, "--entry", "entry"), (exit_, "--exit", "exit"),
                                 (stop, "--stop", "stop"))
    ]  # fmt: skip
    grid, refused = [], []
    for e, x, st in product(*levels):
        try:
            grid.append(replace(rule, entry=e, exit=x, stop=st).params(view.window, view.lookback))
        except ValueError as exc:
            refused.append(str(exc))
    if not grid or (len(grid) == 1 and refused):
        raise UsageProblem(refused[0])
    if refused:
        click.echo(f"skipped {len(refused)} combination(s): {refused[0]}", err=True)
    target = Path(out_dir).expanduser()
    if not target.is_dir():
        raise UsageProblem(f"-o {out_dir}: no such directory: create it first")
    since_us, until_us = _whole_bars(since, until, view)
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise UsageProblem(f"--from {since} is not before --to {until}")
    path = _existing_db(config, db)
    span = (since_us, until_us)
    try:
        if len(grid) == 1:
            asyncio.run(_backtest(path, view, config.stream_kind, grid[0], target, span))
        else:
            asyncio.run(_sweep(path, view, config.stream_kind, grid, target, span))
    except OSError as exc:
        raise RuntimeProblem(f"cannot write into {out_dir}: {exc.strerror or exc}") from None


def _levels(text: str, flag: str) -> tuple[float, ...]:
    """`2` or `1.5,2,2.5`: the values a backtest (or a sweep) tries."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageProblem(f"{flag}: {text!r} is not a number or a list like 1.5,2,2.5") from None


async def _sweep(
    path: StoreTarget,
    view: PairView,
    kind: StreamKind,
    grid: list[BacktestParams],
    target: Path,
    span: tuple[int | None, int | None],
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from pairs_tui.backtest import sweep, too_few_bars
    from pairs_tui.backtest_files import (
        SWEEP_COLUMNS,
        load_bars,
        number_text,
        sweep_rows,
        write_sweep,
    )
    from pairs_tui.store import TickStore

    async with await TickStore.open(path, readonly=True) as store:
        bars = await load_bars(store, view, kind, since_us=span[0], until_us=span[1])
    if (problem := too_few_bars(len(bars), grid[0])) is not None:
        raise UsageProblem(f"{view.symbol_a}/{view.symbol_b} {view.timeframe}: {problem}")
    columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"))
    shown = sys.stderr.isatty()
    with Progress(
        *columns, console=Console(file=sys.stderr), transient=True, disable=not shown
    ) as bar:
        task = bar.add_task("sweep", total=len(grid))
        results = await asyncio.to_thread(
            sweep, bars, grid, view.tf_us, lambda done, _: bar.update(task, completed=done)
        )
    written = await asyncio.to_thread(write_sweep, target, results, bars, view, kind, span)
    table = Table(*SWEEP_COLUMNS)
    for row in sweep_rows(results):
        table.add_row(*(number_text(v) for v in row))
    click.echo(f"{view.symbol_a}/{view.symbol_b} {view.timeframe}: {len(grid)} combinations")
    Console().print(table)
    for item in written:
        click.echo(f"wrote {item}", err=True)


async def _backtest(
    path: StoreTarget,
    view: PairView,
    kind: StreamKind,
    params: BacktestParams,
    target: Path,
    span: tuple[int | None, int | None],
) -> None:
    from rich.console import Console
    from rich.table import Table

    from pairs_tui.backtest_files import TooFewBars, run, summary_rows, write
    from pairs_tui.store import TickStore

    async with await TickStore.open(path, readonly=True) as store:
        try:
            done = await run(store, view, kind, params, span)
        except TooFewBars as exc:
            raise UsageProblem(str(exc)) from None
    result, bars = done.result, done.bars
    written = await asyncio.to_thread(write, target, result, bars, params, view, kind, span)
    click.echo(
        f"{view.symbol_a}/{view.symbol_b} {view.timeframe} W={view.window} L={view.lookback},"
        f" {params.hedge} hedge, entry {params.entry:g} exit {params.exit:g}"
        f" stop {params.stop:g}, fee {params.fee_bps:g} bps, {len(bars):,} bars"
    )
    table = Table()
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, shown in summary_rows(result):
        table.add_row(name, shown)
    Console().print(table)
    if result.summary.look_ahead:
        click.echo("look-ahead: the static hedge is fitted on every bar, the future included")
    for item in written:
        click.echo(f"wrote {item}", err=True)


@cli.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as watch prints.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N firings.")
@db_option
@config_option
def alerts_(as_json: bool, limit: int | None, db: str | None, config_file: Path | None) -> None:
    """List the alert firings stored in the tick store, oldest first."""
    import json

    from pairs_tui.alerts import event_record, value_text
    from pairs_tui.model import iso
    from pairs_tui.store import TickStore

    path = _existing_db(_config(config_file), db)

    async def load():
        async with await TickStore.open(path, readonly=True) as store:  # never writes
            return await store.events(limit), await store.rules()

    events, rules = asyncio.run(load())
    if as_json:
        for event in events:
            click.echo(json.dumps(event_record(event)))
        return
    if not events:
        stored = f"{len(rules)} rule(s) stored in {target_text(path)}"
        click.echo(f"no alert has fired yet ({stored})", err=True)
    for e in events:
        line = f"{iso(e.fired_us)}  {e.pair}  {e.timeframe}  {e.rule}  {value_text(e.value)}"
        click.echo(printable(line))  # the store's text: another program may have written it


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="SPAN",
    help="Delete trades older than this: 90s, 30min, 12h, 7d, 2w.",
)
@click.option("--dry-run", is_flag=True, help="Say how many trades would go; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask on a terminal before deleting.")
@db_option
@config_option
def prune(
    older_than: str, dry_run: bool, yes: bool, db: str | None, config_file: Path | None
) -> None:
    """Delete old raw trades from the tick store, in small batches (a recorder writing
    meanwhile is not held up), and give the space back. On a terminal it asks first."""
    import time

    from pairs_tui.model import iso
    from pairs_tui.store import TickStore

    try:
        keep_s = parse_span(older_than)
    except ValueError as exc:
        raise UsageProblem(f"--older-than: {exc}") from None
    path = _existing_db(_config(config_file), db)
    cutoff = time.time_ns() // 1000 - int(keep_s * 1e6)
    if dry_run or (sys.stdin.isatty() and not yes):

        async def count() -> int:
            async with await TickStore.open(path, readonly=True) as store:
                return await store.count_older(cutoff)

        going = f"{asyncio.run(count()):,} trades older than {iso(cutoff)} from {target_text(path)}"
        if dry_run:
            click.echo(f"would prune {going} (dry run: nothing deleted)")
            return
        if not click.confirm(f"prune {going}?", err=True):
            click.echo("nothing pruned", err=True)
            return

    async def size() -> int:
        async with await TickStore.open(path, readonly=True) as store:
            return await store.size()

    size_before = asyncio.run(size())
    live = sys.stderr.isatty()

    def progress(deleted: int) -> None:
        if live:
            click.echo(f"\rpruned {deleted:,} trades ...", nl=False, err=True)

    async def run() -> tuple[int, int]:
        async with await TickStore.open(path) as store:
            return await store.prune(cutoff, progress=progress), await store.size()

    deleted, size_after = asyncio.run(run())
    if live:
        click.echo("\r\x1b[2K", nl=False, err=True)
    mib = 1024 * 1024
    click.echo(
        f"pruned {deleted:,} trades older than {iso(cutoff)} from {target_text(path)}"
        f" ({size_before / mib:,.1f} MiB -> {size_after / mib:,.1f} MiB)"
    )


@cli.group()
def db() -> None:
    """Work on whole stores: `db copy SRC DST`."""


@db.command("copy")
@click.argument("source")
@click.argument("destination")
@config_option
def db_copy(source: str, destination: str, config_file: Path | None) -> None:
    """Copy a store into another: trades, history, gaps, alert rules and firings, SQLite
    or postgresql://user@host:port/dbname either way. Run it again after an interruption:
    it goes on where it stopped, and never stores a trade twice. The two stores are
    counted at the end."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pairs_tui.db_copy import copy_store

    _config(config_file)  # a bad config file is said, as for every command
    src = source if is_postgres(source) else _expand(Path(source))
    if not is_postgres(src) and not Path(src).is_file():
        raise UsageProblem(f"no tick store at {src}: give the store to copy from")
    dst = destination if is_postgres(destination) else _expand(Path(destination))
    columns = (TextColumn("copying"), BarColumn(), MofNCompleteColumn(), TextColumn("trades"))
    shown = sys.stderr.isatty()
    with Progress(
        *columns, console=Console(file=sys.stderr), transient=True, disable=not shown
    ) as bar:
        task = bar.add_task("copy", total=None)
        copied = asyncio.run(
            copy_store(src, dst, lambda done, total: bar.update(task, completed=done, total=total))
        )
    click.echo(
        f"copied {target_text(src)} into {target_text(dst)}: {copied.trades:,} new trades,"
        f" {copied.history:,} history bars, {copied.rules} alert rules,"
        f" {copied.events} alert firings"
    )
    if copied.mismatched:
        raise RuntimeProblem("the counts differ: " + "; ".join(copied.mismatched))
    listed = ", ".join(f"{symbol} {n:,}" for symbol, (n, _) in sorted(copied.counts.items()))
    click.echo(f"counted: both hold {listed or 'no'} trades")


@cli.command("demo-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9443, show_default=True, type=click.IntRange(0, 65535))
@seed_option
@click.option(
    "--rate",
    type=click.FloatRange(min=0, max=100_000, min_open=True),
    callback=lambda ctx, param, value: _finite(value, "--rate"),
    help="Trades per second per symbol (demo.rate).",
)
@config_option
def demo_server(
    host: str, port: int, seed: int | None, rate: float | None, config_file: Path | None
) -> None:
    """Run the Binance-protocol demo feed alone, for other tools or a second pairs-tui."""
    from pairs_tui.feed.demo import DemoServer

    config = _config(config_file, demo={"rate": rate})
    server = DemoServer(host=host, port=port, seed=seed, rate=config.demo.rate)

    async def serve() -> None:
        await server.start()
        click.echo(f"demo feed listening on {server.url} (seed {server.market.seed})")
        click.echo(
            "connect with: pairs-tui record btcusdt ethusdt"
            f" --ws-url {server.url} --rest-url {server.rest_url}"
        )
        try:
            await asyncio.Future()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except OSError as exc:
        raise UsageProblem(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass


def _debugging(flag: bool) -> bool:
    """--debug (or PAIRS_TUI_DEBUG=1, for tests that want tracebacks): errors in full."""
    return flag or bool(os.environ.get("PAIRS_TUI_DEBUG"))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: turn every error into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = _debugging("--debug" in leading_flags(args))
    try:
        cli.main(args=args, prog_name="pairs-tui", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.UsageError as exc:
        _fail(exc.format_message(), USAGE_ERROR, hint=exc.ctx.command_path if exc.ctx else None)
    except (UsageProblem, ConfigError, StoreError) as exc:
        _fail(str(exc), USAGE_ERROR)
    except RuntimeProblem as exc:
        _fail(str(exc), RUNTIME_ERROR)
    except (KeyboardInterrupt, click.Abort):
        sys.exit(130)
    except Crashed as exc:
        if debug:  # the crash screen has been shown
            sys.exit(RUNTIME_ERROR)
        _say(f"pairs-tui: {report_crash(exc.error, args, exc.report)}", RUNTIME_ERROR)
    except RecordingStopped as exc:
        if exc.is_bug:  # a bug: its traceback goes to a crash log, or the screen
            if debug:
                raise exc.cause from None
            _say(f"pairs-tui: {report_crash(exc.cause, args)}", RUNTIME_ERROR)
        _fail(str(exc), RUNTIME_ERROR)
    except STORE_ERRORS as exc:  # a locked, broken or full store: the machine, not a bug
        _fail(describe(exc), RUNTIME_ERROR)
    except Exception as exc:
        if debug:
            raise
        _say(f"pairs-tui: {report_crash(exc, args)}", RUNTIME_ERROR)
    sys.exit(0)


def _fail(message: str, code: int, hint: str | None = None) -> None:
    line = f"pairs-tui: error: {printable(message)}"
    if hint:
        line += f" (see '{hint} --help')"
    _say(line, code)


def _say(line: str, code: int) -> None:
    """The one line, on a line of its own even after a status line left open."""
    clear = "\r\x1b[2K" if sys.stderr.isatty() else ""
    print(f"{clear}{line}", file=sys.stderr)
    sys.exit(code)
