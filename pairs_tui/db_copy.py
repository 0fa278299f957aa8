"""`pairs-tui db copy SRC DST`: a store's trades, history, gaps and alerts into another
store, SQLite or PostgreSQL either way.

Trades go across per series in id order, `CHUNK` at a time, each chunk one transaction
that skips what the destination already holds: a copy cut short is run again and goes
on where it stopped, and nothing is ever stored twice. At the end the two stores are
counted, series by series; a difference is said, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pairs_tui.model import TIMEFRAMES, AlertEvent, Gap, StreamKind
from pairs_tui.store import StoreError, StoreTarget, TickStore

CHUNK = 50_000  # trades per transaction: big enough for COPY, small enough to resume


@dataclass(frozen=True, slots=True)
class Copied:
    """What a copy did, and what the count at the end found."""

    trades: int  # new in the destination
    counts: dict[str, tuple[int, int]]  # trades per symbol: (source, destination)
    history: int
    rules: int
    events: int

    @property
    def mismatched(self) -> list[str]:
        return [
            f"{symbol}: {src:,} trades in the source, {dst:,} in the destination"
            for symbol, (src, dst) in self.counts.items()
            if src != dst
        ]


async def copy_store(
    source: StoreTarget,
    destination: StoreTarget,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Copied:
    """Copy everything; `progress(trades done, trades in all)` as it goes."""
    async with (
        await TickStore.open(source, readonly=True) as src,
        await TickStore.open(destination) as dst,
    ):
        if src.path == dst.path:
            raise StoreError(f"{src.path} is both the source and the destination")
        held = await src.source()
        if held is not None:
            await dst.claim(held)  # a demo store stays a demo store
        wanted = await src.counts()
        new = await _copy_trades(src, dst, wanted, progress)
        history = await _copy_history(src, dst)
        there_gaps = {_gap_key(g) for g in await dst.gaps()}
        if gaps := [g for g in await src.gaps() if _gap_key(g) not in there_gaps]:
            await dst.write([], gaps)  # what the destination holds of them is no gap there
        rules, events = await _copy_alerts(src, dst)
        counted = await dst.counts()
        counts = {symbol: (n, counted.get(symbol, 0)) for symbol, n in wanted.items()}
        return Copied(new, counts, history, rules, events)


async def _copy_trades(
    src: TickStore, dst: TickStore, wanted: dict[str, int], progress: Callable[[int, int], None]
) -> int:
    """Every series from where the destination's ids stop (a copy cut short goes on from
    there); a series still short after that is copied whole (what is there is skipped)."""
    there = await dst.counts()
    total = sum(wanted.values())
    done = sum(min(n, there.get(symbol, 0)) for symbol, n in wanted.items())

    def step(rows: int) -> None:
        nonlocal done
        done = min(total, done + rows)
        progress(done, total)

    progress(done, total)
    series = await src.series()
    new = 0
    for symbol, kind in series:
        last = await dst.last_id(symbol, kind)
        new += await _trades(src, dst, symbol, kind, -1 if last is None else last, step)
    counted = await dst.counts()
    for symbol, kind in series:
        if counted.get(symbol, 0) < wanted.get(symbol, 0):  # ids below where it resumed
            new += await _trades(src, dst, symbol, kind, -1, lambda rows: None)
    progress(total, total)
    return new


async def _copy_history(src: TickStore, dst: TickStore) -> int:
    """The exchange's bars, every series and timeframe (stored again, they replace)."""
    copied = 0
    for symbol, kind in await src.series():
        for tf in TIMEFRAMES:
            bars = await src.history(symbol, kind, tf)
            await dst.add_history(symbol, kind, tf, bars)
            copied += len(bars)
    return copied


async def _copy_alerts(src: TickStore, dst: TickStore) -> tuple[int, int]:
    """The rules (muted or not) and the firings the destination lacks, each firing naming
    its rule by the destination's id; how many rules, and how many new firings."""
    rules = await src.rules()
    rule_ids: dict[int, int] = {}  # the destination numbers its rules its own way
    for rule in rules:
        pair = (rule.symbol_a, rule.symbol_b)
        rule_ids[rule.id] = await dst.add_rule(pair, rule.timeframe, rule.rule, 0)
        await dst.mute_rule(rule_ids[rule.id], rule.muted)
    there = {_event_key(e) for e in await dst.events()}
    fresh = [
        replace(e, rule_id=rule_ids.get(e.rule_id) if e.rule_id is not None else None)
        for e in await src.events()
        if _event_key(e) not in there
    ]
    if fresh:
        await dst.add_events(fresh)
    return len(rules), len(fresh)


def _gap_key(gap: Gap) -> tuple[str, StreamKind, int, int]:
    return gap.symbol, gap.kind, gap.from_id, gap.to_id


def _event_key(e: AlertEvent) -> tuple[object, ...]:
    """A firing by what it says, not by ids a store gave: copied twice, it is one."""
    return e.rule, e.symbol_a, e.symbol_b, e.timeframe, e.fired_us, e.bar_us


async def _trades(
    src: TickStore,
    dst: TickStore,
    symbol: str,
    kind: StreamKind,
    after_id: int,
    step: Callable[[int], None],
) -> int:
    """The series' trades after `after_id`, a chunk per transaction; how many were new."""
    [series] = (await dst.series_ids([symbol], kind)).values()
    new = 0
    while rows := await src.trades(symbol, kind, after_id=after_id, limit=CHUNK):
        new += await dst.write([(series, *row[1:]) for row in rows])
        after_id = rows[-1][1]
        step(len(rows))
    return new
