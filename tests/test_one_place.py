"""Each rule of the view in one place: a timeframe added to `model.TIMEFRAMES` (by a
test-only plugin, as a one-line change would) is accepted by the command line, the config
file, the engine, the palette, the keys and the help, and bars of it are exported."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from conftest import cli_env, store_tape

pytestmark = pytest.mark.server

PLUGIN = "import pairs_tui.model as model\nmodel.TIMEFRAMES['15m'] = 900_000_000\n"

CHECKS = """
from pairs_tui.engine import PairView
from pairs_tui.ui.app import PairsApp
from pairs_tui.ui.commands import FIXED, interpret
PairView("BTCUSDT", "ETHUSDT", "15m", 20, 600)
[hit] = interpret("timeframe 15m", ())
assert hit.action == "timeframe('15m')", hit
assert any(s.title == "view: timeframe 15m" for s in FIXED)
keys = {b.key: b.action for b in PairsApp.BINDINGS}
assert keys["4"] == "timeframe('15m')", keys
assert any("15m" in what for _, what in PairsApp.KEYS_HELP)
print("ok")
"""


def test_a_timeframe_added_in_one_place_is_accepted_everywhere(tmp_path, isolated_home):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(PLUGIN)
    env = cli_env(isolated_home) | {"PYTHONPATH": str(plugin)}
    db = tmp_path / "t.db"
    asyncio.run(store_tape(db, 3600))  # an hour: four 15-minute bars

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv], env=env, cwd=plugin, capture_output=True, text=True, timeout=60
        )

    inside = run("-c", CHECKS)
    assert inside.returncode == 0 and inside.stdout.strip() == "ok", inside.stderr
    config = tmp_path / "c.toml"
    config.write_text('[view]\ntimeframe = "15m"\nwindow = 2\nlookback = 4\n')
    export = ("-m", "pairs_tui", "export", "btcusdt", "ethusdt", "--what", "bars", "-o", "-")
    for how in (("--timeframe", "15m"), ("--config", str(config))):
        done = run(*export, "--db", str(db), *how)
        assert done.returncode == 0, done.stderr
        times = [line.split(",")[0] for line in done.stdout.splitlines()[1:]]
        assert sorted(set(times)) == [
            "2025-01-01T00:00:00Z",
            "2025-01-01T00:15:00Z",
            "2025-01-01T00:30:00Z",
            "2025-01-01T00:45:00Z",
        ], done.stdout[:500]
    without = subprocess.run(
        [sys.executable, *export, "--db", str(db), "--timeframe", "15m"],
        env=cli_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without.returncode == 2  # the plugin, not the test, made 15m a timeframe
