"""History at start: how soon a fresh cockpit is full, what REST weight it spends, and
what `record --backfill 7d` costs.

Run by hand (not a test):
    python benchmarks/history.py [--runs N] [--span 7d] [--skip-start] [--skip-span]

(i) Start to all four charts at the default view (1m, W=20, L=600) on an EMPTY store with
    `--demo`: the real program in a 120 x 40 pseudo-terminal (the driver of
    benchmarks/cockpit.py), from spawn until the four charts are drawn with no
    "Collecting data" left; median of N runs (5). Target <= 3 s. Without history this
    takes 22 minutes (21 one-minute bars for the correlation); the baseline measured in
    the same run is the start on a store that already holds 10 h of recorded trades,
    with --no-feed (the app's own cost: imports, store, one refresh over 600 bars,
    drawing; a store of imported live trades takes no demo feed).
(ii) REST weight one start spends: a session on the demo server (BTCUSDT/ETHUSDT, the
    default view), until history is in; Binance's documented weights as the client
    counted them, and the demo server's own count. Target <= 60.
(iii) `record --backfill SPAN` of one pair (7d): wall time until every symbol's history
    is stored, the weight and requests spent, the bars stored, and the time the client
    was held back by the weight budget (80 % of 6,000 per minute).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cockpit import (
    CHART_TIMEOUT,
    DEFAULT_VIEW,
    SEED,
    SYMBOLS,
    Bench,
    build_recorded_store,
    chart_ready,
    cockpit_argv,
    quit_app,
)

from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.feed.demo import DemoServer
from pairs_tui.model import TIMEFRAMES, parse_span
from pairs_tui.recording import Recording, RecordingPlan
from pairs_tui.store import TickStore


def start_times(bench: Bench, recorded: bool) -> list[float]:
    times = []
    for _ in range(bench.args.runs):
        db = bench.copy_of_recorded() if recorded else bench.fresh_db()
        feed = ("--no-feed",) if recorded else ("--demo", "--seed", str(SEED))
        argv = cockpit_argv("shipped", *SYMBOLS, *feed)  # a store of live trades: no demo
        with bench.terminal([*argv, "--db", str(db), *DEFAULT_VIEW]) as term:
            times.append(term.wait_for(chart_ready, CHART_TIMEOUT, since=term.started_at))
            quit_app(term, "the cockpit")
    return times


async def backfill(db: Path, bars: dict[str, int]) -> dict[str, float]:
    """A recording of the pair on the demo server until its history is in."""
    server = await DemoServer(seed=SEED).start()
    plan = RecordingPlan(db, FeedOptions(ws_url=server.url), rest_url=server.rest_url, history=bars)
    try:
        async with await TickStore.open(db) as store:
            recording = Recording(plan, store, on_event=lambda _: None, on_notice=print)
            started = time.perf_counter()
            await recording.start(tuple(s.upper() for s in SYMBOLS))
            while not recording.history_settled():
                await asyncio.sleep(0.05)
            took = time.perf_counter() - started
            assert recording.rest is not None and recording.history is not None
            spent, history = recording.rest.spent, recording.history
            await recording.stop()
    finally:
        await server.stop()
    return {
        "seconds": took,
        "weight": spent.weight,
        "requests": spent.requests,
        "held_s": spent.waited_s,
        "bars": history.bars_stored,
        "server_weight": float(getattr(server, "weight_used", float("nan"))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--span", default="7d")
    parser.add_argument("--skip-start", action="store_true")
    parser.add_argument("--skip-span", action="store_true")
    args = parser.parse_args()
    args.embedded_feed = True
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), args)
        if not args.skip_start:
            build_recorded_store(bench, 10.0)
            fresh = start_times(bench, recorded=False)
            baseline = start_times(bench, recorded=True)
            med, base = statistics.median(fresh), statistics.median(baseline)
            print("(i) start to all four charts, 1m W=20 L=600, median of", args.runs)
            print(f"    empty store + REST history: {med:6.2f} s  runs {fresh}  target <= 3 s")
            print(f"    10 h recorded store (base): {base:6.2f} s  runs {baseline}")
            print(f"    ratio history / recorded:   {med / base:6.2f}")
        view = PairView("BTCUSDT", "ETHUSDT")
        one = asyncio.run(backfill(Path(tmp) / "start.db", view.history_wanted()))
        print("(ii) REST weight of one start (default view):")
        print(f"    weight {one['weight']:.0f} (target <= 60), requests {one['requests']:.0f},"
              f" {one['seconds']:.2f} s, bars {one['bars']:.0f}")  # fmt: skip
        if not args.skip_span:
            span_s = parse_span(args.span)
            bars = {tf: int(span_s * 1e6 // us) for tf, us in TIMEFRAMES.items()}
            long = asyncio.run(backfill(Path(tmp) / "span.db", bars))
            print(f"(iii) record --backfill {args.span} of {'/'.join(SYMBOLS)}:")
            print(f"    {long['seconds']:.1f} s, weight {long['weight']:.0f},"
                  f" requests {long['requests']:.0f}, bars {long['bars']:.0f},"
                  f" held back by the budget {long['held_s']:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
