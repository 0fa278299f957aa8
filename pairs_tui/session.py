"""A live session: feed (optional) → store → pair engine, behind one small interface.

This is the door the cockpit uses: it starts and stops everything, hands out immutable
snapshots and feed statistics, and takes view changes. It never imports the UI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pairs_tui.alerts import WATCHLIST, AlertBook, AlertRule, RuleSpec, load_rules, parse_rule
from pairs_tui.analytics import Summary
from pairs_tui.backtest import BacktestParams
from pairs_tui.backtest_files import BacktestRun, TooFewBars, run
from pairs_tui.engine import PairEngine, PairSnapshot, PairView
from pairs_tui.export import export_target, pair_export, write_export
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.feed.rest import UnknownSymbol
from pairs_tui.ingest import RecordingStopped
from pairs_tui.model import AlertEvent, FeedStats, StreamKind, printable, symbol_list
from pairs_tui.recording import Recording, RecordingPlan
from pairs_tui.store import STORE_ERRORS, StoreTarget, TickStore, target_text
from pairs_tui.watchlist import Ranking, WatchlistEngine

__all__ = [
    "STORE_ERRORS",
    "BacktestRun",
    "Ranking",
    "RecordingStopped",
    "Session",
    "SessionPlan",
    "StoreTarget",
    "TooFewBars",
    "UnknownSymbol",
    "export_target",
    "target_text",
]


@dataclass(frozen=True)
class SessionPlan:
    view: PairView
    db_path: StoreTarget
    feed: FeedOptions | None  # None: view the store only (another process records)
    demo: bool = False
    seed: int | None = None
    demo_rate: float = 20.0
    flush_interval: float = 0.25
    kind: StreamKind = StreamKind.TRADE
    rules: tuple[RuleSpec, ...] = ()  # from config.toml and --alert
    keep_rules: bool = True  # store them (the cockpit) or only use them (watch)
    retention_s: float | None = None  # prune trades older than this while recording
    rest_url: str | None = None  # Binance REST for history; None: live only
    watchlist: tuple[str, ...] = ()  # symbols whose every pair is ranked (the scanner)
    backtest: BacktestParams | None = None  # the z rule `b` trades ([backtest]); W, L: the view's

    @property
    def recording_plan(self) -> RecordingPlan | None:
        """The feed's lifecycle, from these settings; None: view the store only."""
        if self.feed is None:
            return None
        return RecordingPlan(
            self.db_path,
            self.feed,
            demo=self.demo,
            seed=self.seed,
            demo_rate=self.demo_rate,
            flush_interval=self.flush_interval,
            retention_s=self.retention_s,
            rest_url=self.rest_url,
            history=self.view.history_wanted(),
        )


def feed_symbols(view: PairView, watchlist: tuple[str, ...]) -> tuple[str, ...]:
    """What the feed subscribes to, on one stream: the pair in view, then the watchlist."""
    return tuple(dict.fromkeys((*view.symbols, *watchlist)))


_NEEDS_TESTS = {"adf_p", "half_life"}


class Session:
    def __init__(
        self,
        plan: SessionPlan,
        on_event: Callable[[str], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_event = on_event or (lambda text: None)  # the feed's connects, gaps, ...
        # what the user must hear of even on a screen (pruning, a store that failed)
        self.on_notice = on_notice or self.on_event
        self.view = plan.view
        trading = plan.backtest or BacktestParams(self.view.window, self.view.lookback)
        self.trading = self._fitted(trading, self.view)  # the z rule: `b` and the stats' hedge
        self.asof_us: int | None = None  # the newest snapshot's: a backtest stops there
        self.store: TickStore | None = None
        self.recording: Recording | None = None
        self._engine: PairEngine | None = None
        self.watchlist = plan.watchlist
        self.scanning = False  # the scanner is on screen: rank even without a rule to feed
        self._ranker: WatchlistEngine | None = None
        self._ranking: Ranking | None = None  # the last one, as the alerts saw it
        self._stopped = False
        self.on_failure: Callable[[RecordingStopped], object] = lambda failure: None
        self.alerts = AlertBook()

    @property
    def failure(self) -> RecordingStopped | None:
        """How the recording ended by itself, if it did."""
        return self.recording.failure if self.recording is not None else None

    async def start(self) -> None:
        plan = self.plan
        self.store = await TickStore.open(plan.db_path)
        self._engine = PairEngine(self.store, self.view, plan.kind)
        self._engine.trading = self.trading
        self._ranker = WatchlistEngine(self.store, plan.kind)
        await self._load_rules()
        recording_plan = plan.recording_plan
        if recording_plan is None:
            return
        self.recording = Recording(
            recording_plan, self.store, on_event=self.on_event, on_notice=self.on_notice
        )
        self.recording.on_failure = lambda failure: self.on_failure(failure)
        await self.recording.start(feed_symbols(self.view, self.watchlist))

    async def stop(self) -> None:
        """Stop the feed, commit everything pending, close the store. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.recording is not None:
            await self.recording.stop()
        if self._ranker is not None:
            self._ranker.close()
        if self.store is not None:
            await self.store.close()

    @property
    def feed_label(self) -> str | None:
        """How the header names the feed: None when there is none."""
        if self.plan.feed is None:
            return None
        return "demo" if self.plan.demo else "live"

    async def set_view(self, view: PairView) -> None:
        """A new pair subscribes the feed to its symbols (the store keeps the old ones);
        UnknownSymbol, and nothing changes, when Binance does not list one."""
        symbols = feed_symbols(view, self.watchlist)
        if self.recording is not None and symbols != feed_symbols(self.view, self.watchlist):
            await self.recording.switch(symbols)
        if replace(view, timeframe=self.view.timeframe) != self.view:
            self.alerts.forget_history()  # W, L or the pair: values jump, nothing crosses
        self.view = view
        self.trading = self._fitted(self.trading, view)
        if self._engine is not None:
            self._engine.set_view(view)
            self._engine.trading = self.trading
        self._want_tests()
        if self.recording is not None:
            self.recording.want(view.history_wanted())

    async def refresh(self) -> PairSnapshot:
        """The newest snapshot, with the alerts it fired (stored, unless the store fails)."""
        assert self._engine is not None and self.store is not None, "start() first"
        snapshot = await self._engine.refresh()
        self.asof_us = snapshot.asof_us
        summaries = {s.timeframe: s for s in snapshot.glances}
        now_us = time.time_ns() // 1000
        fired = self.alerts.check(
            snapshot.view.symbols, summaries, now_us=now_us, asof_us=snapshot.asof_us
        )
        if not fired:
            return snapshot
        await self._store_events(fired)
        return replace(snapshot, fired=tuple(fired))

    async def _store_events(self, fired: list[AlertEvent]) -> None:
        assert self.store is not None
        if not fired:
            return
        try:
            await self.store.add_events(fired)
        except STORE_ERRORS as exc:  # shown and printed all the same
            self.on_notice(f"could not store {len(fired)} alert firing(s): {exc}")

    # -- the z rule, backtested ---------------------------------------------------------
    @staticmethod
    def _fitted(trading: BacktestParams, view: PairView) -> BacktestParams:
        """The rule with the view's W and L: the backtest sees the bars the screen shows."""
        return replace(trading, window=view.window, lookback=view.lookback)

    def set_trading(self, **changes: float | str) -> BacktestParams:
        """Change the rule (entry, exit, stop, fee_bps, hedge, delta, ve); ValueError, and
        nothing changes, for one that means nothing."""
        self.trading = replace(self.trading, **changes)  # type: ignore[arg-type]
        if self._engine is not None:
            self._engine.trading = self.trading
        return self.trading

    async def backtest(self) -> BacktestRun:
        """The rule on every stored bar of the view that had closed by the newest
        snapshot (what `pairs-tui backtest --to` that bar's open reproduces); TooFewBars
        when there are not enough."""
        assert self.store is not None, "start() first"
        view = self.view
        cut = self.asof_us if self.asof_us is not None else time.time_ns() // 1000
        until = cut // view.tf_us * view.tf_us
        return await run(self.store, view, self.plan.kind, self.trading, (None, until))

    # -- the watchlist ------------------------------------------------------------------
    async def set_watchlist(self, symbols: tuple[str, ...]) -> None:
        """Rank every pair of these symbols and record them: SymbolError for a bad list,
        UnknownSymbol (and nothing changes) for a symbol Binance does not list."""
        symbols = symbol_list(symbols, "watchlist")
        feeds = feed_symbols(self.view, symbols)
        if self.recording is not None and feeds != feed_symbols(self.view, self.watchlist):
            await self.recording.switch(feeds)
        self.watchlist = symbols

    def ranking_wanted(self) -> bool:
        """Is there a reason to rank: the scanner on screen, or a rule on the watchlist."""
        return len(self.watchlist) >= 2 and (
            self.scanning or any(r.on_watchlist for r in self.alerts.rules.values())
        )

    async def rank(self) -> Ranking | None:
        """A new ranking of every pair of the watchlist at the view's timeframe, W and L
        (there is one once a bar has closed), with what the watchlist's rules fired on
        it; None when there is no new one, or nothing asks for one (`ranking_wanted`)."""
        assert self._ranker is not None and self.store is not None, "start() first"
        if not self.ranking_wanted():
            return None
        timeframes = {r.timeframe for r in self.alerts.rules.values() if r.on_watchlist}
        ranking = await self._ranker.refresh(self.watchlist, self.view, timeframes)
        if ranking is None or ranking is self._ranking:
            return None
        self._ranking = ranking
        pairs: dict[tuple[str, str], dict[str, Summary]] = {}
        for tf, rows in ranking.by_timeframe.items():
            for row in rows:
                if row.summary is not None:
                    pairs.setdefault(row.pair, {})[tf] = row.summary
        fired = self.alerts.check_watchlist(
            pairs, now_us=time.time_ns() // 1000, asof_us=ranking.asof_us
        )
        await self._store_events(fired)
        return replace(ranking, fired=tuple(fired))

    # -- alert rules --------------------------------------------------------------------
    async def _load_rules(self) -> None:
        assert self.store is not None
        now_us = time.time_ns() // 1000
        if not self.plan.keep_rules:
            for i, spec in enumerate(self.plan.rules, 1):
                self.alerts.put(AlertRule(-i, spec.rule, *spec.pair, spec.timeframe))
        else:
            for spec in self.plan.rules:
                await self.store.add_rule(spec.pair, spec.timeframe, spec.rule.text, now_us)
            rules, problems = load_rules(await self.store.rules())
            for rule in rules:
                self.alerts.put(rule)
            for problem in problems:  # a later grammar, or too long: said, left in the store
                self.on_notice(problem)
        self._want_tests()

    def _want_tests(self) -> None:
        """Cointegration tests at the timeframes whose rules read them."""
        if self._engine is not None:
            self._engine.tested = frozenset(
                r.timeframe
                for r in self.alerts.rules.values()
                if r.pair == self.view.symbols and _NEEDS_TESTS & set(r.rule.metrics)
            )

    def rules(self) -> tuple[AlertRule, ...]:
        return tuple(sorted(self.alerts.rules.values(), key=lambda r: r.id))

    async def add_rule(self, text: str, *, on_watchlist: bool = False) -> AlertRule:
        """A rule on the pair (or every pair of the watchlist) at the timeframe in view,
        stored; raises RuleError."""
        assert self.store is not None, "start() first"
        rule = parse_rule(text)
        view = self.view
        pair = WATCHLIST if on_watchlist else view.symbols
        rule_id = await self.store.add_rule(pair, view.timeframe, rule.text, time.time_ns() // 1000)
        if rule_id not in self.alerts.rules:  # the same rule again keeps its state
            self.alerts.put(AlertRule(rule_id, rule, *pair, view.timeframe))
        self._want_tests()
        return self.alerts.rules[rule_id]

    async def remove_rule(self, rule_id: int) -> None:
        assert self.store is not None, "start() first"
        await self.store.remove_rule(rule_id)
        self.alerts.drop(rule_id)
        self._want_tests()

    async def mute(self, rule_id: int | None, muted: bool) -> None:
        """Mute (or unmute) one rule, or every rule with None."""
        assert self.store is not None, "start() first"
        ids = list(self.alerts.rules) if rule_id is None else [rule_id]
        for i in ids:
            await self.store.mute_rule(i, muted)
            if i in self.alerts.rules:
                self.alerts.put(replace(self.alerts.rules[i], muted=muted))

    async def events(self, limit: int = 50) -> list[AlertEvent]:
        assert self.store is not None, "start() first"
        return await self.store.events(limit)

    def trades_seen(self) -> int:
        """Trades of the pair folded into bars so far: moves whenever new data arrives."""
        assert self._engine is not None, "start() first"
        return self._engine.trades_seen

    def history_text(self) -> str | None:
        """Where the charts' history came from, or why there is none, in words."""
        recording = self.recording
        if recording is None or recording.rest is None:
            return None
        if recording.history_error is not None:  # may quote a server: text, never escapes
            return f"history unavailable: {printable(recording.history_error)}"
        history = recording.history
        if history is not None and history.gaps_filled:
            return f"gap filled ({history.gaps_filled}, {history.trades_filled:,} trades)"
        return None

    def feed_stats(self) -> FeedStats | None:
        return self.recording.stats() if self.recording is not None else None

    async def export(self, target: str, whats: tuple[str, ...]) -> list[Path]:
        """The current view's CSVs, as `pairs-tui export` writes them (same data, same
        sidecars) of what is stored now, into the directory `target` (files named after
        the view and the time) or to the file `target` (see `export_target`: ValueError
        for a directory that does not exist)."""
        assert self.store is not None, "start() first"
        target_path, into_dir = export_target(target)
        view, kind = self.view, self.plan.kind
        now_us = time.time_ns() // 1000
        bars_a, bars_b, snapshot = await pair_export(
            self.store, view, kind, until_us=now_us, now_us=now_us
        )
        stamp = datetime.fromtimestamp(now_us / 1e6, UTC).strftime("%Y%m%dT%H%M%SZ")
        written: list[Path] = []
        for what in whats:
            out = target_path
            if into_dir:
                name = f"{view.symbol_a}-{view.symbol_b}-{view.timeframe}-{what}-{stamp}.csv"
                out = target_path / name.lower()
            written += await asyncio.to_thread(
                write_export, what, out, view, kind, bars_a, bars_b, snapshot, (None, now_us)
            )
        return written
