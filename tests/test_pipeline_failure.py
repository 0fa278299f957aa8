"""A pipeline that stops says so: a disk that fills up under `record`, `watch` and the
cockpit ends in words naming the cause and a non-zero exit, never in a quiet
`live stopped` and exit 0.

The full disk is real as far as the process can tell: the child runs with a file-size
limit (RLIMIT_FSIZE, SIGXFSZ ignored), so SQLite's writes past it fail with EFBIG as they
would on a full file system, while the terminal (not a file) is unaffected.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, pairs_tui_cmd
from ptyterm import PtyTerminal

pytestmark = pytest.mark.pty

FILE_LIMIT = 300_000  # bytes: reached within a second at the fast demo rate
FAILED = "recording stopped: cannot write"


def full_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def fast_demo(tmp_path: Path) -> list[str]:
    config = tmp_path / "fast.toml"
    config.write_text("[demo]\nrate = 2000.0\n")
    return ["--demo", "--db", str(tmp_path / "t.db"), "--config", str(config)]


def run_full(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=cli_env(home),
        preexec_fn=full_disk,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_record_on_a_full_disk_exits_1_naming_the_cause(tmp_path, isolated_home):
    argv = pairs_tui_cmd("record", "btcusdt", "ethusdt", *fast_demo(tmp_path), "--duration", "30")
    done = run_full(argv, isolated_home)
    assert done.returncode == 1
    assert done.stderr.startswith(f"pairs-tui: error: {FAILED} {tmp_path / 't.db'}: ")
    assert "Traceback" not in done.stderr + done.stdout


def test_watch_on_a_full_disk_exits_1_naming_the_cause(tmp_path, isolated_home):
    argv = pairs_tui_cmd("watch", "btcusdt", "ethusdt", "--alert", "abs(z) > 100")
    argv += [*fast_demo(tmp_path), "--timeframe", "1s", "--duration", "30"]
    done = run_full(argv, isolated_home)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pairs-tui: error: {FAILED} "), done.stderr
    assert "Traceback" not in done.stderr


def test_the_cockpit_shows_the_failure_and_q_exits_1(tmp_path, isolated_home):
    argv = pairs_tui_cmd("btcusdt", "ethusdt", *fast_demo(tmp_path), "--timeframe", "1s")
    argv += ["--window", "2", "--lookback", "60"]
    env = cli_env(isolated_home)
    with PtyTerminal(argv, cols=160, rows=40, env=env, preexec_fn=full_disk) as term:
        term.wait_for(lambda lines: "FAILED: disk I/O error" in lines[0], timeout=20)
        term.wait_for("recording stopped", timeout=5)  # the toast, kept until seen
        term.send("q")
        assert term.wait_exit(10) == 1
        transcript = term.transcript()
    assert f"pairs-tui: error: {FAILED} " in transcript
    assert "Traceback" not in transcript


def test_a_bug_that_stops_ingestion_is_a_crash_with_a_log(tmp_path, isolated_home):
    """Not the disk's fault: the one line says crashed and where the traceback is."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(
        "import pairs_tui.store as store\n"
        "async def boom(self, rows, gaps=()):\n"
        "    raise ZeroDivisionError('forced by the test plugin')\n"
        "store.SqliteStore.write = boom\n"
    )
    argv = [sys.executable, "-m", "pairs_tui", "record", "btcusdt", "ethusdt"]
    argv += [*fast_demo(tmp_path), "--duration", "30"]
    done = subprocess.run(
        argv,
        env=cli_env(isolated_home) | {"PYTHONPATH": str(plugin)},
        cwd=plugin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.startswith("pairs-tui: crashed: ZeroDivisionError: forced by the test plugin")
    log = Path(line.split("the traceback is in ")[1].split(";")[0])
    assert "in boom" in log.read_text()
