"""Soak: memory and refresh time stay flat over a long run at 2,000 trades/s.

Run by hand (not a test):  python benchmarks/soak.py [--minutes 30] [--rate 1000]

The demo feed runs in its own process (`pairs-tui demo-server --rate R`, R trades/s per
symbol, two symbols: 2,000 trades/s by default), so its work does not count against us. This
process runs the whole engine the cockpit and `watch` run on, a `Session`: the feed consumer,
the SQLite store (a fresh file), bars at 1s/1m/5m, the analytics of BTCUSDT/ETHUSDT (1s bars,
W = 20, L = 600, cointegration tests whenever a bar closes) and an alert rule, refreshed
every 0.5 s (2 Hz). The CPU time of each refresh is not what this measures (see refresh.py);
its wall time is sampled to show it does not creep up as the store grows.

Every 10 s: resident memory (RSS, from /proc/self/statm), the median refresh time of the last
10 s, and the trades stored. The baseline is the run's own minute 5, after the warm-up (the
first L = 600 one-second bars take 10 minutes to fill, so memory still grows a little until
then, and is checked again at the end). Targets: RSS growth after minute 5 < 10 %; the
median refresh time of the last 5 minutes no more than 1.3 times that of minutes 11 to 16
(the first five minutes with all L bars: before that each refresh has more bars to do).
`--report FILE` reads the series a run printed and reports on it again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pairs_tui.alerts import RuleSpec, parse_rule
from pairs_tui.engine import PairView
from pairs_tui.feed.binance import FeedOptions
from pairs_tui.session import Session, SessionPlan

PAIR = ("BTCUSDT", "ETHUSDT")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def soak(minutes: float, rate: float, db: Path) -> list[tuple[float, float, float, int]]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pairs_tui",
            "demo-server",
            "--port",
            str(port),
            "--rate",
            str(rate),
            "--seed",
            "1",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(2.0)  # the server is listening
        rule = RuleSpec(parse_rule("abs(z) > 2 cooldown 1m"), PAIR, "1s")
        plan = SessionPlan(
            PairView(*PAIR, "1s", 20, 600),
            db,
            FeedOptions(ws_url=f"ws://127.0.0.1:{port}"),
            rules=(rule,),
        )
        session = Session(plan)
        await session.start()
        samples: list[tuple[float, float, float, int]] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_sample = start + 10
        times: list[float] = []
        fired = 0
        while loop.time() - start < minutes * 60:
            t0 = time.perf_counter()
            snapshot = await session.refresh()
            times.append(time.perf_counter() - t0)
            fired += len(snapshot.fired)
            if loop.time() >= next_sample:
                stats = session.feed_stats()
                stored = sum(s.stored for s in stats.symbols) if stats else 0
                row = (loop.time() - start, rss_mib(), statistics.median(times) * 1000, stored)
                samples.append(row)
                print(
                    f"{row[0] / 60:6.1f} min  RSS {row[1]:7.1f} MiB  refresh {row[2]:6.1f} ms"
                    f"  stored {row[3]:>11,}  alerts {fired}",
                    flush=True,
                )
                times = []
                next_sample += 10
            await asyncio.sleep(max(0.0, 0.5 - (time.perf_counter() - t0)))
        await session.stop()
        return samples
    finally:
        server.terminate()
        server.wait()


def report(samples: list[tuple[float, float, float, int]], minutes: float) -> bool:
    def window(lo: float, hi: float) -> list[tuple[float, float, float, int]]:
        return [s for s in samples if lo * 60 <= s[0] < hi * 60]

    base = window(5, 5.2) or samples[:1]
    rss0 = base[0][1]
    rss_end = samples[-1][1]
    early = [s[2] for s in window(11, 16)] or [samples[0][2]]
    late = [s[2] for s in window(minutes - 5, minutes + 1)] or [samples[-1][2]]
    growth = rss_end / rss0 - 1
    ratio = statistics.median(late) / statistics.median(early)
    rate = samples[-1][3] / samples[-1][0]
    print()
    print(f"soak: {minutes:g} min, {rate:,.0f} trades/s stored on average; 1s bars, W=20, L=600")
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores")
    print()
    print(f"{'measure':40}{'value':>12}{'baseline':>12}{'ratio':>8}  target")
    print(f"{'RSS at the end (MiB)':40}{rss_end:12.1f}{rss0:12.1f}{rss_end / rss0:8.3f}  < 1.10")
    print(
        f"{'median refresh, last 5 min (ms)':40}{statistics.median(late):12.1f}"
        f"{statistics.median(early):12.1f}{ratio:8.3f}  <= 1.30"
    )
    settled = window(5, 10**6) or samples
    print(f"{'max RSS after minute 5 (MiB)':40}{max(s[1] for s in settled):12.1f}")
    ok = growth < 0.10 and ratio <= 1.3
    print("PASS" if ok else "FAIL")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="trades/s per symbol")
    parser.add_argument("--report", type=Path, help="report on a series printed before")
    args = parser.parse_args()
    if args.report:
        samples = [
            (float(m[1]) * 60, float(m[2]), float(m[3]), int(m[4].replace(",", "")))
            for m in re.finditer(
                r"([\d.]+) min  RSS +([\d.]+) MiB  refresh +([\d.]+) ms  stored +([\d,]+)",
                args.report.read_text(),
            )
        ]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            samples = asyncio.run(soak(args.minutes, args.rate, Path(tmp) / "soak.db"))
    sys.exit(0 if report(samples, args.minutes) else 1)


if __name__ == "__main__":
    main()
