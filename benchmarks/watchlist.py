"""The cockpit with a 50-symbol watchlist: key latency while 1,225 pairs are ranked live.

Run by hand (not a test):
    python benchmarks/watchlist.py [--symbols 50] [--presses 40] [--rate 20] [--settle 5]

Every figure comes from the real program, `python -m pairs_tui ...`, in a pseudo-terminal
of 160 x 45 (tests/ptyterm.py, the driver of the end-to-end tests), fed by a separate
`pairs-tui demo-server` process on loopback (its WebSocket stream and its REST history),
at --rate trades/s per symbol. Each child gets temporary XDG dirs and its own store.

The view is 1s bars, W = 20, L = 600: the hardest case, as a 1s bar closes every second
and the watchlist is ranked again every 2 s (`RANK_EVERY_S`): 1,225 pairs, their ADF and
Engle-Granger tests batched, in a worker thread. Variants, measured one after the other
in the same run:

* baseline  - the pair alone (`--watchlist` empty): what the cockpit costs without it;
* watchlist - the same pair plus a watchlist of S symbols (the pair's two among them) and
              a rule on every pair (`abs(z) > 2 on watchlist`), so the ranking runs while
              the main screen is shown;
* scanner   - as `watchlist`, with the scanner screen (key w) open: its table of S(S-1)/2
              rows is updated in place at every ranking.

Keys: `1` and `2` (1s / 1m) alternately on the main screen, each 0.2-0.5 s after the screen
showed the previous change (a fixed pseudo-random sequence, so presses fall at every phase
of the ranking); the latency runs from the write to the pty until the header shows the
new timeframe. Each press at 1m or 1s also changes what the watchlist is ranked at, so it
starts a full ranking: the screen must answer while it runs. In `scanner`, `s` is pressed
instead (sort by the next column) and the latency runs until the head line names it.
Median and p95; target p95 < 100 ms. A press not answered within 2 s counts as 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cockpit import demo_server  # the same demo-server process as the cockpit benchmark
from ptyterm import PtyTerminal  # the one pty driver, shared with the tests

from pairs_tui.feed.demo_rest import DEMO_SYMBOLS
from pairs_tui.ui.scanner import COLUMNS

COLS, ROWS = 160, 45
SEED = 1
PAIR = ("BTCUSDT", "ETHUSDT")
VIEW = ("--timeframe", "1s", "--window", "20", "--lookback", "600")
READY_TIMEOUT, KEY_TIMEOUT = 120.0, 2.0
TARGET_P95_MS = 100.0
VARIANTS = ("baseline", "watchlist", "scanner")


def header_shows(timeframe: str) -> Callable[[list[str]], bool]:
    pattern = re.compile(rf"^\s*{PAIR[0]}/{PAIR[1]}\s+{timeframe}\s")
    return lambda lines: bool(pattern.search(lines[0]))


def charts_up(lines: list[str]) -> bool:
    screen = "\n".join(lines)
    return "z-score (W=" in screen and "Collecting data" not in screen


def ranked(lines: list[str]) -> bool:
    return any(re.search(r"[\d,]+ pairs of \d+ symbols", line) for line in lines[:3])


def sorted_by(label: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(f"sorted by {label} " in line for line in lines[:3])


def measure(variant: str, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> list[float]:
    """Milliseconds from each key press to the screen showing it."""
    symbols = [*PAIR, *(s for s in DEMO_SYMBOLS if s not in PAIR)][: args.symbols]
    config = tmp / f"{variant}.toml"
    text = ""
    if variant != "baseline":
        listed = ", ".join(f'"{s.lower()}"' for s in symbols)
        text = f'[watchlist]\nsymbols = [{listed}]\n\n[[alerts]]\nrule = "{args.rule}"\n'
        text += 'pair = "watchlist"\n'
    config.write_text(text)
    pauses = random.Random(SEED)
    latencies = []
    with demo_server(env, args.rate) as (ws, rest, _):
        argv = [sys.executable, "-m", "pairs_tui", *PAIR, *VIEW, "--ws-url", ws]
        argv += ["--rest-url", rest, "--db", str(tmp / f"{variant}.db"), "--config", str(config)]
        with PtyTerminal(argv, cols=COLS, rows=ROWS, env=env, keep_transcript=False) as term:
            term.wait_for(charts_up, READY_TIMEOUT)
            if variant == "scanner":
                term.send("w")
                term.wait_for(ranked, READY_TIMEOUT)
            time.sleep(args.settle)
            keys = [c.key for c in COLUMNS]
            for i in range(args.presses):
                if variant == "scanner":
                    key, seen = (
                        "s",
                        sorted_by(COLUMNS[(keys.index("eg_pvalue") + i + 1) % len(keys)].label),
                    )
                else:
                    key, seen = ("1", header_shows("1s")) if i % 2 else ("2", header_shows("1m"))
                sent = term.send(key)
                try:
                    latencies.append(1000 * term.wait_for(seen, KEY_TIMEOUT, since=sent))
                except TimeoutError:
                    latencies.append(1000 * KEY_TIMEOUT)
                time.sleep(pauses.uniform(0.2, 0.5))
            term.send("q")
            with contextlib.suppress(TimeoutError):
                term.wait_exit(20)
    return latencies


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50, help="watchlist size (at most 60)")
    parser.add_argument("--presses", type=int, default=40, help="key presses per variant")
    parser.add_argument("--rate", type=float, default=20.0, help="trades/s per symbol")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before pressing")
    parser.add_argument("--rule", default="abs(z) > 2", help="the rule on every watchlist pair")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which, comma-separated")
    args = parser.parse_args()
    if not 2 <= args.symbols <= len(DEMO_SYMBOLS) or args.presses < 2:
        parser.error(f"need 2 <= --symbols <= {len(DEMO_SYMBOLS)} and --presses >= 2")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="pairs-watchlist-"))
    env = dict(os.environ)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
        (tmp / sub).mkdir()
        env[var] = str(tmp / sub)
    env.pop("PAIRS_TUI_DEBUG", None)
    load = os.getloadavg()[0]
    results: dict[str, list[float]] = {}
    try:
        for variant in args.variants.split(","):
            print(f"{variant}: {args.presses} presses ...", flush=True)
            results[variant] = measure(variant, args, tmp, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = args.symbols
    print(
        f"\nwatchlist benchmark: {n} symbols ({n * (n - 1) // 2:,} pairs), 1s bars, W=20, "
        f"L=600, {args.rate:g} trades/s per symbol, {COLS}x{ROWS}\nPython "
        f"{platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at start\n"
    )
    base = statistics.median(results.get("baseline", [float("nan")]))
    print(f"{'variant':<12}{'median ms':>10}{'p95 ms':>8}{'vs baseline':>13}  target p95")
    ok = True
    for variant, xs in results.items():
        passed = p95(xs) < TARGET_P95_MS
        ok &= passed
        ratio = statistics.median(xs) / base if base > 0 else float("nan")
        verdict = f"< {TARGET_P95_MS:g}  {'PASS' if passed else 'FAIL'}"
        print(
            f"{variant:<12}{statistics.median(xs):>10.0f}{p95(xs):>8.0f}{ratio:>12.1f}x  {verdict}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
