"""`pairs-tui` as a user runs it: subprocesses, real signals, a real terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import cli_env, pairs_tui_cmd, run_in_process, wait_until

from pairs_tui.feed.demo import DemoServer

pytestmark = pytest.mark.server


def run_cli(home, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        pairs_tui_cmd(*args), env=cli_env(home), capture_output=True, text=True, timeout=timeout
    )


def db_counts(path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(
            conn.execute(
                "SELECT symbol, count(*) FROM trades JOIN series ON series.id = trades.series"
                " GROUP BY symbol"
            )
        )


def bad_inputs(tmp_path):
    notdb = tmp_path / "notes.db"
    notdb.write_text("not a database\n" * 100)
    broken = tmp_path / "broken.toml"
    broken.write_text('[feed]\nstream = "trade"\nstale_after = \n')
    return [
        (["record", "btc-usdt"], "invalid symbol btc-usdt"),
        (["record", ""], "invalid symbol ''"),
        (["record", "a" * 40], "invalid symbol aaaa"),
        (["record", "btcusdt", "BTCUSDT"], "symbol btcusdt given twice"),
        (["record", "btcusdt", "--db", str(tmp_path / "missing" / "t.db")], "does not exist"),
        (["record", "btcusdt", "--db", str(notdb)], "is not a pairs-tui SQLite database"),
        (["record", "btcusdt", "--config", str(broken)], "at line 3"),
        (["record", "btcusdt", "--ws-url", "http://127.0.0.1:9"], "ws:// or wss://"),
        (["record", "btcusdt", "--ws-url", "ws://"], "ws:// or wss://"),
        (["record"], "Missing argument"),
        (["record", "btcusdt", "--duration", "-1"], "--duration"),
        (["nonsense"], "give two symbols"),  # read as `cockpit nonsense`
        (["btcusdt", "btc-usdt"], "invalid symbol btc-usdt"),
        (
            ["btcusdt", "ethusdt", "--lookback", "5", "--window", "20"],
            "'view.lookback' must be at least",
        ),
        (["btcusdt", "ethusdt", "--alert", "z >"], "bad --alert 'z >': expected a metric"),
        (["watch", "btcusdt", "ethusdt", "--alert", "z ! 2"], "unexpected character '!' at"),
        (["alerts", "--db", str(tmp_path / "none.db")], "no tick store at"),
        (["prune", "--older-than", "7x", "--db", str(notdb)], "invalid time span '7x'"),
        (["prune", "--older-than", "7d", "--db", str(tmp_path / "none.db")], "no tick store at"),
        (
            ["watch", "btcusdt", "ethusdt", "--no-feed", "--alert", "z > 2", "--db", "none.db"],
            "no tick store at none.db",
        ),
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path, isolated_home, capsys):
    """Every third row through the real program (its stderr, its exit status); the others
    through the same `main` in this process, sparing an interpreter start per row."""
    for i, (args, message) in enumerate(bad_inputs(tmp_path)):
        if i % 3 == 0:
            result = run_cli(isolated_home, *args)
            code, err = result.returncode, result.stderr
        else:
            code, _, err = run_in_process(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(lines) == 1 and "Traceback" not in err, (args, err)
        assert lines[0].startswith("pairs-tui: error: ") and message in lines[0], (args, lines)
    assert (tmp_path / "notes.db").read_text().startswith("not a database")


def test_record_demo_for_a_duration(tmp_path, isolated_home):
    db = tmp_path / "ticks.db"
    started = time.monotonic()
    result = run_cli(
        isolated_home,
        "record",
        "btcusdt",
        "ethusdt",
        "--demo",
        "--seed",
        "1",
        "--duration",
        "3",
        "--db",
        str(db),
    )
    assert result.returncode == 0, result.stderr
    assert 3 <= time.monotonic() - started < 20
    counts = db_counts(db)
    assert set(counts) == {"BTCUSDT", "ETHUSDT"} and min(counts.values()) > 20
    out = result.stdout
    assert (
        "connected to ws://127.0.0.1:" in out
        and "/stream?streams=btcusdt@trade/ethusdt@trade" in out
    )
    assert (
        f"BTCUSDT {counts['BTCUSDT']:,}" in out.splitlines()[-1]
    )  # the summary agrees with the DB
    assert "\x1b" not in out  # not a terminal: plain log lines


def test_default_db_lives_in_the_user_data_dir(isolated_home):
    """The demo's: demo.db, beside the live ticks.db."""
    result = run_cli(isolated_home, "record", "solusdt", "--demo", "--duration", "1")
    assert result.returncode == 0, result.stderr
    assert db_counts(isolated_home / "data" / "pairs-tui" / "demo.db")["SOLUSDT"] > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_signal_commits_everything_pending_and_exits_0(tmp_path, isolated_home, sig):
    """Trades received but not yet flushed (flush interval 5 s) survive Ctrl-C/SIGTERM."""
    config = tmp_path / "slow-flush.toml"
    config.write_text("[store]\nflush_interval = 5.0\n")
    db = tmp_path / "ticks.db"
    async with DemoServer(record_delivered=True, seed=3, rate=300) as server:
        proc = await asyncio.create_subprocess_exec(
            *pairs_tui_cmd(
                "record",
                "btcusdt",
                "ethusdt",
                "--ws-url",
                server.url,
                "--no-backfill",
                "--db",
                str(db),
                "--config",
                str(config),
            ),
            env=cli_env(isolated_home),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await wait_until(lambda: sum(map(len, server.delivered.values())) > 300)
        server.paused = True
        await asyncio.sleep(0.5)  # let the recorder take in what is in flight
        assert db_counts(db) == {}  # all of it is still pending in memory
        proc.send_signal(sig)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    with sqlite3.connect(db) as conn:
        for symbol, delivered in server.delivered.items():
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT trade_id FROM trades JOIN series ON series.id = trades.series"
                    " WHERE symbol = ? ORDER BY trade_id",
                    (symbol,),
                )
            ]
            assert ids == delivered
    assert b"stopped: trades stored" in out


def test_status_line_redraws_in_place_on_a_terminal(tmp_path, isolated_home):
    main, child = pty.openpty()
    proc = subprocess.Popen(
        pairs_tui_cmd(
            "record",
            "btcusdt",
            "ethusdt",
            "--demo",
            "--duration",
            "2.5",
            "--db",
            str(tmp_path / "t.db"),
        ),
        env=cli_env(isolated_home) | {"COLUMNS": "200"},
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=20) == 0
    screen = b"".join(chunks).decode()
    status = [part for part in screen.split("\r\x1b[2K") if part.startswith("BTCUSDT ")]
    assert len(status) >= 2  # redrawn in place, once a second
    assert "| connected | reconnects 0 | gaps 0 | malformed 0" in status[-1]
    assert "/s, last " in status[-1]


async def test_demo_server_alone_feeds_a_separate_recorder(tmp_path, isolated_home):
    server = await asyncio.create_subprocess_exec(
        *pairs_tui_cmd("demo-server", "--port", "0", "--seed", "2", "--rate", "100"),
        env=cli_env(isolated_home),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        first = (await asyncio.wait_for(server.stdout.readline(), 10)).decode()
        url = first.split(" on ")[1].split()[0]
        assert url.startswith("ws://127.0.0.1:")
        db = tmp_path / "t.db"
        result = await asyncio.to_thread(
            run_cli,
            isolated_home,
            "record",
            "btcusdt",
            "--ws-url",
            url,
            "--no-backfill",
            "--duration",
            "1.5",
            "--db",
            str(db),
        )
        assert result.returncode == 0, result.stderr
        assert db_counts(db)["BTCUSDT"] > 50
    finally:
        server.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.wait(), 10) == 0


def test_help_lists_the_commands(isolated_home):
    result = run_cli(isolated_home, "--help")
    assert result.returncode == 0 and "record" in result.stdout and "demo-server" in result.stdout


def test_no_symbols_opens_the_configured_pair(isolated_home, tmp_path):
    """A bare `pairs-tui` is the cockpit on config.toml's pair: a bad pair there is
    reported like one typed on the command line, before any screen is drawn."""
    config = tmp_path / "pair.toml"
    config.write_text('[pair]\na = "solusdt"\nb = "SOLUSDT"\n')
    result = run_cli(isolated_home, "--config", str(config))
    assert result.returncode == 2 and "symbol solusdt given twice" in result.stderr
    result = run_cli(isolated_home, "--timeframe", "7s")
    assert result.returncode == 2 and "7s" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(isolated_home, "btcusdt")
    assert result.returncode == 2 and "give two symbols" in result.stderr


def test_a_stop_while_still_connecting_is_honoured(tmp_path, isolated_home):
    result = run_cli(
        isolated_home,
        "record",
        "btcusdt",
        "--demo",
        "--duration",
        "0.001",
        "--db",
        str(tmp_path / "t.db"),
        timeout=20,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ws-url", "ws://127.0.0.1:99999"], "the port must be 0-65535"),
        (["--duration", "nan"], "not a finite number"),
        (["--db", "~nosuchuser_pairs/x.db"], "no such user"),
    ],
)
def test_more_bad_input(isolated_home, args, message):
    result = run_cli(isolated_home, "record", "btcusdt", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
