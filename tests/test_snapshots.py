"""Layout regressions: the cockpit at 80x24 and 160x48 on a replayed tape.

The data is the demo market from a fixed start and seed, viewed without a feed, so
every number, label and chart is the same on every run. Update the pictures after a
deliberate change with `pytest tests/test_snapshots.py --snapshot-update` and look at
them (snapshot_report.html) before committing.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import store_tape, wait_until

from pairs_tui.engine import PairView
from pairs_tui.session import SessionPlan
from pairs_tui.ui.app import CHARTS, PairsApp, make_app
from pairs_tui.ui.widgets import ChartView

pytestmark = pytest.mark.server


def replayed(db_path) -> PairsApp:
    asyncio.run(store_tape(db_path, 900))
    plan = SessionPlan(PairView("BTCUSDT", "ETHUSDT", "1s", 20, 300), db_path, feed=None)
    return make_app(plan, refresh_every=0.25)


async def settled(pilot) -> None:
    app = pilot.app

    def charts_drawn() -> bool:
        charts = [app.screen.query_one(f"#{n}", ChartView) for n in CHARTS]
        shown = [str(c.render()) for c in charts if c.display]
        return app.snapshot is not None and not any("Collecting" in t for t in shown)

    await wait_until(charts_drawn, 15)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_cockpit_layout(snap_compare, db_path, size):
    assert snap_compare(replayed(db_path), terminal_size=size, run_before=settled)


def test_cursor_readout(snap_compare, db_path):
    async def inspect(pilot) -> None:
        await settled(pilot)
        await pilot.press("left", "left", "left")
        await pilot.pause(0.5)

    assert snap_compare(replayed(db_path), terminal_size=(120, 40), run_before=inspect)
