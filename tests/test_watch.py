"""`pairs-tui watch` and `pairs-tui alerts` as a user runs them, on the demo feed."""

from __future__ import annotations

import asyncio
import csv
import json
import select
import signal
import subprocess
import time

import pytest
from conftest import cli_env, pairs_tui_cmd, store_tape
from test_ui import exit_code

pytestmark = pytest.mark.server

VIEW = ["--timeframe", "1s", "--window", "6", "--lookback", "30"]


def read_firings(proc: subprocess.Popen, count: int, timeout: float) -> list[dict]:
    """JSON lines from the running watch until `count` of them (or the time is up)."""
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(json.loads(line))
    return lines


def test_watch_prints_firings_that_export_reproduces(tmp_path, isolated_home, capsys):
    db = tmp_path / "ticks.db"
    argv = ["btcusdt", "ethusdt", *VIEW, "--db", str(db)]
    rules = ["--alert", "abs(z) > 1", "--alert", "z > 0.5 and corr > 0"]
    proc = subprocess.Popen(
        pairs_tui_cmd("watch", *argv, "--demo", "--seed", "5", *rules),
        env=cli_env(isolated_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        firings = read_firings(proc, 3, timeout=60)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "watching BTCUSDT/ETHUSDT" in err
    assert len(firings) == 3, err
    for fired in firings:
        assert fired["pair"] == "BTCUSDT/ETHUSDT" and fired["timeframe"] == "1s"
        assert fired["rule"] in ("abs(z) > 1", "z > 0.5 and corr > 0")
        assert fired["time"].endswith("Z") and fired["asof"] <= fired["time"]
        # the analytics as they stood at the firing, exported afterwards from the store
        out = tmp_path / "at.csv"
        assert exit_code(["export", *argv, "--what", "analytics", "--asof", fired["asof"],
                          "-o", str(out)]) == 0  # fmt: skip
        last = list(csv.DictReader(out.open()))[-1]
        assert last["ts"] == fired["bar"]
        z, corr = float(last["zscore"]), float(last["corr"])
        if fired["rule"] == "abs(z) > 1":
            assert fired["value"] == pytest.approx(z, rel=1e-12, abs=1e-12) and abs(z) > 1
        else:
            assert fired["value"] == pytest.approx({"z": z, "corr": corr}, rel=1e-12, abs=1e-12)
            assert z > 0.5 and corr > 0
    capsys.readouterr()

    # and the store kept them: `pairs-tui alerts`
    assert exit_code(["alerts", "--db", str(db), "--json"]) == 0
    stored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert stored[: len(firings)] == firings
    assert exit_code(["alerts", "--db", str(db), "--limit", "1"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    last = stored[-1]
    assert line.startswith(f"{last['time']}  BTCUSDT/ETHUSDT  1s  {last['rule']}  ")


def test_watch_stops_after_its_duration_and_refuses_a_bad_rule(tmp_path, isolated_home):
    db = tmp_path / "ticks.db"
    base = pairs_tui_cmd("watch", "btcusdt", "ethusdt", *VIEW, "--db", str(db))
    env = cli_env(isolated_home)
    started = time.monotonic()
    done = subprocess.run(
        [*base, "--demo", "--alert", "z > 100", "--duration", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "" and "stopped: 0 alert(s)" in done.stderr
    assert time.monotonic() - started < 20
    bad = subprocess.run(
        [*base, "--alert", "abs(zz) > 2"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == (
        "pairs-tui: error: bad --alert 'abs(zz) > 2': unknown metric 'zz' at column 5;"
        " did you mean 'z'?\n"
    )
    nothing = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert nothing.returncode == 2 and "give a rule with --alert" in nothing.stderr


def test_config_alerts_are_checked_and_used(tmp_path, isolated_home, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[[alerts]]\nrule = "corr >> 2"\n')
    assert exit_code(["watch", "btcusdt", "ethusdt", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: alerts #1: bad rule 'corr >> 2'" in err and "at column 7" in err
    config.write_text('[[alerts]]\nrule = "z > 2"\npair = ["btcusdt"]\n')
    assert exit_code(["watch", "btcusdt", "ethusdt", "--config", str(config)]) == 2
    assert "pair must be two symbols" in capsys.readouterr().err
    # a good one is used: on a stored tape, with no feed, it fires once
    db = tmp_path / "ticks.db"
    asyncio.run(store_tape(db, 60))
    config.write_text('[[alerts]]\nrule = "z > -1000"\ntimeframe = "1s"\n')
    args = ["--db", str(db), "--no-feed", "--duration", "1.5", "--config", str(config)]
    assert exit_code(["watch", "btcusdt", "ethusdt", *VIEW, *args]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["rule"] == "z > -1000"
