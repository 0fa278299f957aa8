"""The cockpit in a real terminal: a pty, the real process, the screen read back with pyte.

Pilot tests drive the app inside the test's own event loop; these run `python -m pairs_tui`
as a user does, so they also cover the command line, the Textual driver on a real tty, the
exit code and what the process leaves in the store when it is told to stop.

The view is 1s bars with W=2, L=60, so the charts can be finished within seconds: the
z-score needs W + 1 = 3 joined bars, i.e. three closed seconds of the demo feed (with the
default W=20 a chart takes over 20 s, and even W=5 needs 6 s, past the 5 s asked of it).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import pairs_tui_cmd
from ptyterm import PtyTerminal

pytestmark = pytest.mark.pty

COLS, ROWS = 100, 30
VIEW_ARGS = ("--timeframe", "1s", "--window", "2", "--lookback", "60")
READY_WITHIN = 5.0  # seconds from spawn to a finished cockpit
EXIT_WITHIN = 5.0

HEADER = re.compile(
    r"^\s*BTCUSDT/ETHUSDT\s+1s\s+W=2\s+L=60\s+demo connected\s+\d+ trades/s\s+latency \d+ ms"
)
CHART_TITLES = ("prices", "spread", "z-score (W=2)", "rolling correlation of returns")
Z_ROW = re.compile(r"\bz-score\s+[+-]?\d+\.\d+\b")  # the stats row, not the chart title


def missing(lines: list[str]) -> list[str]:
    """What a finished cockpit shows that this screen does not (empty: all of it)."""
    screen = "\n".join(lines)
    lacks = [] if HEADER.search(lines[0]) else ["the header"]
    lacks += [f"chart {t!r}" for t in CHART_TITLES if t not in screen]
    lacks += [] if Z_ROW.search(screen) else ["a numeric z-score row"]
    lacks += ["no 'Collecting data'"] if "Collecting data" in screen else []
    return lacks


@pytest.fixture
def cockpit(tmp_path: Path) -> Iterator[tuple[PtyTerminal, Path]]:
    """The cockpit on the demo feed in a 100x30 pty, with a fresh store; killed if a test
    leaves it running. The env is the isolated one of the autouse fixture; with
    PAIRS_TUI_DEBUG set a failure prints a traceback, which the tests look for."""
    db = tmp_path / "ticks.db"
    env = {**os.environ, "PAIRS_TUI_DEBUG": "1"}
    argv = pairs_tui_cmd("btcusdt", "ethusdt", "--demo", "--db", str(db), *VIEW_ARGS)
    with PtyTerminal(argv, cols=COLS, rows=ROWS, env=env) as term:
        yield term, db
    assert "Traceback" not in term.transcript(), term.transcript()[-3000:]


def wait_ready(term: PtyTerminal) -> float:
    """Seconds from spawn until the cockpit is finished; fails past READY_WITHIN."""
    left = READY_WITHIN - (time.perf_counter() - term.started_at)
    try:
        term.wait_for(lambda lines: not missing(lines), timeout=max(left, 0.0))
    except TimeoutError:
        lacks = ", ".join(missing(term.text()))
        pytest.fail(f"after {READY_WITHIN} s the cockpit lacks {lacks}:\n{term.dump()}")
    return time.perf_counter() - term.started_at


def assert_store_flushed(db: Path) -> None:
    """A clean close: the WAL was checkpointed and removed, the file is sound, has trades."""
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the store was not closed cleanly"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (rows,) = conn.execute("SELECT count(*) FROM trades").fetchone()
    finally:
        conn.close()
    assert rows > 0


def test_cockpit_shows_header_charts_and_stats_within_5s(cockpit):
    term, _ = cockpit
    wait_ready(term)
    lines = term.text()
    assert not missing(lines), term.dump()
    assert not any("Traceback" in line for line in lines), term.dump()


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda t: t.signal(signal.SIGHUP), id="SIGHUP"),
        pytest.param(lambda t: t.signal(signal.SIGTERM), id="SIGTERM"),
        pytest.param(lambda t: t.send("q"), id="q"),
    ],
)
def test_stop_exits_0_with_the_store_flushed(cockpit, stop):
    term, db = cockpit
    wait_ready(term)  # trades are flowing into the store
    stop(term)
    assert term.wait_exit(EXIT_WITHIN) == 0, term.dump()
    assert_store_flushed(db)


def test_quit_says_what_was_recorded_and_where(cockpit):
    term, db = cockpit
    wait_ready(term)
    term.send("q")
    assert term.wait_exit(EXIT_WITHIN) == 0, term.dump()
    said = re.search(
        r"stopped: trades stored BTCUSDT [\d,]+, ETHUSDT [\d,]+ in (\S+);", term.transcript()
    )
    assert said and said[1] == str(db), term.transcript()[-2000:]


def test_terminal_hang_up_exits_0_with_the_store_flushed(cockpit):
    """The terminal itself goes away (sshd or the emulator closes the pty master): the
    kernel sends SIGHUP and every later write to the tty fails."""
    term, db = cockpit
    wait_ready(term)
    term.hang_up()
    assert term.wait_exit(EXIT_WITHIN) == 0
    assert_store_flushed(db)


def test_an_alert_from_the_command_line_fires_on_screen_and_rings(tmp_path):
    """`--alert` rules are set on the pair shown; a firing shows a toast and a log row,
    rings the terminal's bell and is stored."""
    db = tmp_path / "ticks.db"
    env = {**os.environ, "PAIRS_TUI_DEBUG": "1"}
    argv = pairs_tui_cmd(
        "btcusdt", "ethusdt", "--demo", "--db", str(db), *VIEW_ARGS, "--alert", "price_a>0"
    )
    with PtyTerminal(argv, cols=120, rows=40, env=env) as term:
        term.wait_for(lambda lines: "alert BTCUSDT/ETHUSDT 1s" in "\n".join(lines), timeout=15)
        screen = "\n".join(term.text())
        assert re.search(r"#1\s+price_a > 0\s+1s", screen)  # the rule in the panel
        assert re.search(r"\d\d:\d\d:\d\d\s+price_a > 0\s+[\d.]+", screen)  # its log row
        assert "\x07" in term.transcript()  # the bell
        term.send("q")
        assert term.wait_exit(EXIT_WITHIN) == 0, term.dump()
    assert "Traceback" not in term.transcript()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT rule FROM alert_rules").fetchall() == [("price_a > 0",)]
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone() == (1,)
