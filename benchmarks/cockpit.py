"""The cockpit in a real terminal: start-up time, steady-state cost, key latency, vs a naive redraw.

Run by hand (not a test):
    python benchmarks/cockpit.py [--runs N] [--duration S] [--presses N] [--history-hours H]
                                 [--settle S] [--embedded-feed]

Every figure comes from the real program, `python -m pairs_tui ...`, in a pseudo-terminal of
120 x 40 (TERM=xterm-256color), its output fed into a pyte screen by tests/ptyterm.py, the
driver the end-to-end tests use. Each child gets temporary XDG dirs, so no user config
applies. Times are taken when the output that completes the awaited screen arrives.

(i) Start to first chart: from spawning the process until the first chart is drawn (the
    prices chart, which needs 2 bars; its title shows only once drawn), and until all four
    are, with no "Collecting data" left (the correlation needs W + 2 bars) (medians of N runs), with
    the embedded demo feed (`--demo --seed 1`, 20 trades/s per symbol, as a user starts it):
    * empty store, view 1s W=2 L=60 (W=2 is the least the app takes): the first chart
      needs 2 joined 1 s bars, so about 1-2 s of this is waiting for the market, whatever
      the app does; it is what a first-time user sees. The time to the header's
      `connected` is printed too: the app's own part of the wait;
    * recorded store, the default view 1m W=20 L=600: the app's own start-up cost (imports,
      store, the loading refresh over 600 bars, rendering), charts from history at once.
    Target < 2 s.
(ii) Steady state: CPU of the cockpit process (utime + stime of all its threads from
    /proc/PID/stat, as % of one core) and bytes/s it writes to the terminal, over a window of
    S seconds (30) that starts once the charts are up plus a settle time (5 s), at the
    default view (1m, W=20, L=600) and refresh (0.5 s), fed 200 trades/s in total (100 per
    symbol). Targets: CPU < 10 %, output < 30 KiB/s.
(iii) Key latency: under 2,000 trades/s in total (1,000 per symbol), `1` and `2` are typed
    alternately N times (40), each 0.2-0.5 s after the screen showed the previous change (a
    fixed pseudo-random sequence, so presses fall at every phase of the refresh clock); the
    latency is from the write to the pty until the header shows the new timeframe (`1s` or
    `1m`). Median and p95; target p95 < 100 ms. A press not answered within 2 s counts as
    2 s and is reported as missed.

The recorded store: H hours (10: 600 one-minute bars, a full lookback) of the demo market at
1 trade/s per symbol, written as two Binance trade dumps and loaded with `pairs-tui import`,
ending when the benchmark starts; prices are scaled to end where the demo feed (seed 1)
begins, so history and live trades join without a jump. Each measurement starts from its
own copy of it. With 1m bars on a fresh store nothing would be drawn for 21 minutes.

The feed for (ii) and (iii) is a separate `pairs-tui demo-server` process on loopback, the
cockpit connected to it with --ws-url, so the cockpit's CPU is what consuming a live feed
costs, without generating the market (`--demo` runs the generator inside the cockpit's
process: --embedded-feed measures that way instead).

The naive baseline is the same program with `make_app(..., redraw_always=True)`: every
chart re-rendered and redrawn on every clock tick even when nothing changed. It is launched
through `python -c` that sets that keyword and then runs the same CLI with the same
arguments, so the session plan is the one the shipped app builds. (ii) and (iii) are
measured for both in the same run; ratios are naive / shipped.

The benchmark's own pyte parsing runs on the same machine (a few % of a core at 30 KiB/s);
the load average at the start is printed with the machine facts.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from ptyterm import PtyTerminal  # the one pty driver, shared with tests/test_pty.py

SYMBOLS = ("BTCUSDT", "ETHUSDT")
COLS, ROWS = 120, 40
SEED = 1
HISTORY_RATE = 1.0  # trades/s per symbol in the recorded store
STEADY_RATE, KEYS_RATE = 100.0, 1000.0  # trades/s per symbol
EMPTY_VIEW = ("--timeframe", "1s", "--window", "2", "--lookback", "60")
DEFAULT_VIEW = ("--timeframe", "1m", "--window", "20", "--lookback", "600")
CHART_TIMEOUT = 60.0
KEY_TIMEOUT = 2.0
TARGET_START_S, TARGET_CPU_PCT, TARGET_KIB_S, TARGET_KEY_P95_MS = 2.0, 10.0, 30.0, 100.0

NAIVE = """
import functools
import sys

import pairs_tui.ui.app as ui
from pairs_tui.cli import main

ui.make_app = functools.partial(ui.make_app, redraw_always=True)
main(sys.argv[1:])
"""
VARIANTS = ("shipped", "naive")


def cockpit_argv(variant: str, *args: str) -> list[str]:
    if variant == "naive":
        return [sys.executable, "-c", NAIVE, *args]
    return [sys.executable, "-m", "pairs_tui", *args]


def chart_ready(lines: list[str]) -> bool:
    """All four charts drawn: their titles, and no chart still collecting."""
    screen = "\n".join(lines)
    titles = ("prices", "spread", "z-score (W=", "rolling correlation of returns")
    return all(t in screen for t in titles) and "Collecting data" not in screen


def header_shows(timeframe: str) -> Callable[[list[str]], bool]:
    pattern = re.compile(rf"^\s*{SYMBOLS[0]}/{SYMBOLS[1]}\s+{timeframe}\s")
    return lambda lines: bool(pattern.search(lines[0]))


class Bench:
    """The temporary world the runs share: isolated env, the recorded store, copies of it."""

    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp = tmp
        self.args = args
        self.env = dict(os.environ)
        for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
            (tmp / sub).mkdir()
            self.env[var] = str(tmp / sub)
        self.env.pop("PAIRS_TUI_DEBUG", None)
        self.recorded = tmp / "recorded.db"
        self._copies = 0

    def run_cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "pairs_tui", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise SystemExit(f"pairs-tui {' '.join(args[:2])} failed:\n{result.stderr}")
        return result.stdout

    def fresh_db(self) -> Path:
        self._copies += 1
        return self.tmp / f"run{self._copies}.db"

    def copy_of_recorded(self) -> Path:
        path = self.fresh_db()
        shutil.copyfile(self.recorded, path)
        return path

    def terminal(self, argv: list[str]) -> PtyTerminal:
        return PtyTerminal(argv, cols=COLS, rows=ROWS, env=self.env, keep_transcript=False)

    @contextlib.contextmanager
    def feed(self, rate: float) -> Iterator[tuple[list[str], Callable[[], float]]]:
        """The cockpit's feed arguments for `rate` trades/s per symbol, and a function that
        gives the CPU seconds the feed generator has used outside the cockpit so far."""
        if self.args.embedded_feed:
            config = self.tmp / f"demo-{rate:g}.toml"
            config.write_text(f"[demo]\nrate = {rate!r}\n")
            yield ["--demo", "--seed", str(SEED), "--config", str(config)], lambda: 0.0
            return
        with demo_server(self.env, rate) as (ws_url, _, pid):
            # the steady state is the subject: no REST history (benchmarks/history.py)
            yield ["--ws-url", ws_url, "--no-backfill"], lambda: cpu_seconds(pid)


@contextlib.contextmanager
def demo_server(env: dict[str, str], rate: float) -> Iterator[tuple[str, str, int]]:
    """A `pairs-tui demo-server` process: its WebSocket and REST URLs, and its pid."""
    options = ("--port", "0", "--seed", str(SEED), "--rate", str(rate))
    server = subprocess.Popen(
        [sys.executable, "-m", "pairs_tui", "demo-server", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        said = server.stdout.readline() + server.stdout.readline()  # the URLs, then how
        ws, rest = re.search(r"ws://\S+", said), re.search(r"http://\S+", said)
        if ws is None or rest is None:
            raise SystemExit(f"demo-server did not start: {said!r}")
        yield ws.group(0), rest.group(0), server.pid
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()  # fields from the 3rd (state) on
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def quit_app(term: PtyTerminal, what: str) -> None:
    """`q`, and a word if it does not end with 0 (the figures stand either way)."""
    term.send("q")
    try:
        code = term.wait_exit(10)
    except TimeoutError:
        code = None
    if code != 0:
        print(f"  note: {what} did not quit cleanly with q (exit {code})", flush=True)


# -- the recorded store -----------------------------------------------------------------
def build_recorded_store(bench: Bench, hours: float) -> int:
    """H hours of the demo market, ending now, imported with `pairs-tui import`; rows."""
    from pairs_tui.feed.demo import SyntheticMarket

    span_s = round(hours * 3600)
    history = SyntheticMarket(seed=SEED, rate=HISTORY_RATE, dt=1.0)
    live = SyntheticMarket(seed=SEED, rate=STEADY_RATE)  # where the live feed will begin
    for market in (history, live):
        for symbol in SYMBOLS:
            market.add(symbol)
    trades = history.advance_to(span_s)
    first_live = {t.symbol: float(t.price) for t in reversed(live.advance_to(2.0))}
    last_hist = {t.symbol: float(t.price) for t in trades}
    shift_ms = (time.time_ns() // 1_000_000 - 1_000) - trades[-1].time_ms
    files = []
    for symbol in SYMBOLS:
        scale = first_live[symbol] / last_hist[symbol]
        path = bench.tmp / f"{symbol}-trades-history.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            ids = iter(range(1, len(trades) + 1))
            for t in trades:
                if t.symbol == symbol:
                    price, qty = float(t.price) * scale, float(t.qty)
                    quote = f"{price * qty:.8f}"
                    ts = t.time_ms + shift_ms
                    out.writerow(
                        [next(ids), f"{price:.8f}", f"{qty:.8f}", quote, ts, t.buyer_maker, True]
                    )
        files.append(str(path))
    bench.run_cli("import", *files, "--db", str(bench.recorded))
    return len(trades)


# -- (i) start to first chart -----------------------------------------------------------
def measure_start(bench: Bench, recorded: bool) -> tuple[list[float], list[float], list[float]]:
    """Seconds from spawn to the first chart drawn and to all four, one per run, on the
    embedded demo feed; and from spawn to the header saying the feed is connected (the
    app's part of the wait)."""
    first, charts, connected = [], [], []
    for _ in range(bench.args.runs):
        db = bench.copy_of_recorded() if recorded else bench.fresh_db()
        view = DEFAULT_VIEW if recorded else EMPTY_VIEW
        feed = ("--no-feed",) if recorded else ("--demo", "--seed", str(SEED))
        argv = cockpit_argv("shipped", *SYMBOLS, *feed)  # a store of live trades: no demo
        with bench.terminal([*argv, "--db", str(db), *view]) as term:
            live = term.wait_for(feed_connected, CHART_TIMEOUT, since=term.started_at)
            first.append(term.wait_for(first_chart, CHART_TIMEOUT, since=term.started_at))
            charts.append(term.wait_for(chart_ready, CHART_TIMEOUT, since=term.started_at))
            connected.append(min(live, charts[-1]))
            quit_app(term, "the cockpit")
    return first, charts, connected


def first_chart(lines: list[str]) -> bool:
    """A chart's title shows only once it is drawn (the prices chart needs 2 bars)."""
    return any("prices, 100 = start" in line for line in lines)


def feed_connected(lines: list[str]) -> bool:
    return " connected" in lines[0]


# -- (ii) steady state ------------------------------------------------------------------
@dataclass
class Steady:
    cpu_pct: float
    kib_s: float
    feed_cpu_pct: float  # the external demo server's, for the record
    trades_s: str  # what the header said at the end


def measure_steady(bench: Bench, variant: str) -> Steady:
    args = bench.args
    with bench.feed(STEADY_RATE) as (feed_args, feed_cpu):
        argv = cockpit_argv(variant, *SYMBOLS, *feed_args, "--db", str(bench.copy_of_recorded()))
        with bench.terminal([*argv, *DEFAULT_VIEW, "--refresh", "0.5"]) as term:
            term.wait_for(chart_ready, CHART_TIMEOUT)
            time.sleep(args.settle)
            wall0, cpu0, out0, feed0 = (
                time.perf_counter(),
                cpu_seconds(term.pid),
                term.bytes_read,
                feed_cpu(),
            )
            time.sleep(args.duration)
            wall = time.perf_counter() - wall0
            cpu = cpu_seconds(term.pid) - cpu0
            out = term.bytes_read - out0
            feed = feed_cpu() - feed0
            if not chart_ready(term.text()):
                print(f"  note: {variant}: the charts were gone at the end\n{term.dump()}")
            rate = re.search(r"(\d+) trades/s", term.text()[0])
            quit_app(term, variant)
    return Steady(
        cpu_pct=100 * cpu / wall,
        kib_s=out / wall / 1024,
        feed_cpu_pct=100 * feed / wall,
        trades_s=rate.group(1) if rate else "?",
    )


# -- (iii) key latency ------------------------------------------------------------------
def measure_keys(bench: Bench, variant: str) -> tuple[list[float], int]:
    """Milliseconds from each key press to the header showing it, and how many missed."""
    args = bench.args
    pauses = random.Random(SEED)
    latencies, missed = [], 0
    with bench.feed(KEYS_RATE) as (feed_args, _):
        argv = cockpit_argv(variant, *SYMBOLS, *feed_args, "--db", str(bench.copy_of_recorded()))
        with bench.terminal([*argv, *DEFAULT_VIEW]) as term:
            term.wait_for(chart_ready, CHART_TIMEOUT)
            time.sleep(args.settle)
            for i in range(args.presses):
                key, timeframe = ("1", "1s") if i % 2 == 0 else ("2", "1m")
                sent = term.send(key)
                try:
                    latencies.append(
                        1000 * term.wait_for(header_shows(timeframe), KEY_TIMEOUT, since=sent)
                    )
                except TimeoutError:
                    latencies.append(1000 * KEY_TIMEOUT)
                    missed += 1
                time.sleep(pauses.uniform(0.2, 0.5))
            quit_app(term, variant)
    return latencies, missed


# -- the report -------------------------------------------------------------------------
def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def report(args: argparse.Namespace, out: dict) -> bool:
    import textual

    med = statistics.median
    feed = "embedded --demo" if args.embedded_feed else "external demo-server"
    print(
        f"\ncockpit benchmark: {'/'.join(SYMBOLS)} at {COLS}x{ROWS}, TERM=xterm-256color; "
        f"{args.runs} start-up runs, {args.duration:g} s steady window after {args.settle:g} s "
        f"settle, {args.presses} key presses; (ii)/(iii) fed by the {feed}"
        f"\nPython {platform.python_version()}, Textual {textual.__version__}, "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, "
        f"load average {out['load'][0]:.2f} at start; recorded store {out['rows']:,} trades "
        f"({args.history_hours:g} h)\n"
    )
    for store in ("empty", "recorded"):
        runs = ", ".join(f"{x:.2f}" for x in out[f"start_{store}"])
        live = med(out[f"connected_{store}"])
        every = med(out[f"all_{store}"])
        print(
            f"start to first chart, {store} store (s): {runs}; all four charts after "
            f"{every:.2f} s, header 'connected' after {live:.2f} s (medians)"
        )
    for variant in VARIANTS:
        lat, missed = out["keys"][variant]
        steady = out["steady"][variant]
        generator = (
            "inside the cockpit"
            if args.embedded_feed
            else f"outside the cockpit {steady.feed_cpu_pct:.1f} % of a core"
        )
        print(
            f"{variant}: header said {steady.trades_s} trades/s at the end of (ii); "
            f"feed generator {generator}; key presses missed {missed} of {len(lat)}"
        )

    shipped, naive = out["steady"]["shipped"], out["steady"]["naive"]
    keys = {v: out["keys"][v][0] for v in VARIANTS}
    rows = [  # name, shipped, naive or None, format, target, lower is better
        ("(i) first chart, empty store, s", med(out["start_empty"]), None, ".2f", TARGET_START_S),
        (
            "(i) first chart, recorded store, s",
            med(out["start_recorded"]),
            None,
            ".2f",
            TARGET_START_S,
        ),
        ("(ii) CPU, % of one core", shipped.cpu_pct, naive.cpu_pct, ".1f", TARGET_CPU_PCT),
        ("(ii) terminal output, KiB/s", shipped.kib_s, naive.kib_s, ".1f", TARGET_KIB_S),
        ("(iii) key to header, median ms", med(keys["shipped"]), med(keys["naive"]), ".0f", None),
        (
            "(iii) key to header, p95 ms",
            p95(keys["shipped"]),
            p95(keys["naive"]),
            ".0f",
            TARGET_KEY_P95_MS,
        ),
    ]
    print(f"\n{'measure (medians unless said)':<36}{'shipped':>9}{'naive':>9}{'ratio':>8}  target")
    ok = True
    for name, ours, base, spec, target in rows:
        base_text = "-" if base is None else format(base, spec)
        ratio = "-" if base is None or ours <= 0 else f"{base / ours:.1f}x"
        verdict = ""
        if target is not None:
            passed = ours < target
            ok &= passed
            verdict = f"< {target:g}  {'PASS' if passed else 'FAIL'}"
        print(f"{name:<36}{format(ours, spec):>9}{base_text:>9}{ratio:>8}  {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="start-up runs per store")
    parser.add_argument("--duration", type=float, default=30.0, help="steady window, seconds")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--presses", type=int, default=40, help="key presses per variant")
    parser.add_argument("--history-hours", type=float, default=10.0, help="recorded store span")
    parser.add_argument(
        "--embedded-feed",
        action="store_true",
        help="feed (ii) and (iii) from --demo inside the cockpit, not a demo-server process",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.presses < 2 or args.duration <= 0 or args.settle < 0:
        parser.error("need --runs >= 1, --presses >= 2, --duration > 0, --settle >= 0")
    if args.history_hours * 60 < 25:
        parser.error("--history-hours must give at least 25 one-minute bars (0.42 h)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up when killed, too
    tmp = Path(tempfile.mkdtemp(prefix="pairs-cockpit-"))
    out: dict = {"load": os.getloadavg(), "steady": {}, "keys": {}}
    try:
        bench = Bench(tmp, args)
        print(f"recording {args.history_hours:g} h of the demo market ...", flush=True)
        out["rows"] = build_recorded_store(bench, args.history_hours)
        print(f"(i) start to first chart, {args.runs} runs x 2 stores ...", flush=True)
        for store, recorded in (("empty", False), ("recorded", True)):
            first, charts, live = measure_start(bench, recorded=recorded)
            out[f"start_{store}"], out[f"all_{store}"], out[f"connected_{store}"] = (
                first,
                charts,
                live,
            )
        for variant in VARIANTS:
            print(f"(ii) steady state, {variant}, {args.duration:g} s ...", flush=True)
            out["steady"][variant] = measure_steady(bench, variant)
        for variant in VARIANTS:
            print(f"(iii) key latency, {variant}, {args.presses} presses ...", flush=True)
            out["keys"][variant] = measure_keys(bench, variant)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report(args, out) else 1


if __name__ == "__main__":
    sys.exit(main())
