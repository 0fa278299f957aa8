"""Shared fixtures: isolated user dirs, a fresh DB path, and the real demo server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgcluster import Cluster, binaries

from pairs_tui.feed.demo import DemoTrade, SyntheticMarket
from pairs_tui.model import StreamKind
from pairs_tui.store import TickStore

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "data" / "binance"  # real Binance frames and trades, see README


USER_DIRS = (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the developer's own config and data dirs out of every test."""
    home = tmp_path / "home"
    for var, sub in USER_DIRS:
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    loopback_only(home)
    return home


def loopback_only(home: Path) -> None:
    """Never Binance from a test: a test that forgets --ws-url / --rest-url meets a
    closed port on loopback, not the internet. History at start is off unless a test
    turns it on: the demo's 51 h of 5m klines cost a second of CPU."""
    config = home / "config" / "pairs-tui" / "config.toml"
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(LOOPBACK_ONLY)


LOOPBACK_ONLY = (
    '[feed]\nws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\nbackfill = false\n'
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ticks.db"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """This worker's throwaway PostgreSQL server (see pgcluster.py): a skip with the reason
    where there is none, a failure under CI=true."""
    bin_dir = binaries()
    why = None if bin_dir is not None else "no PostgreSQL binaries (initdb) on this machine"
    cluster = None
    if bin_dir is not None:
        try:
            cluster = Cluster(bin_dir).start()
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"cannot start a PostgreSQL server: {exc}"
    if cluster is None:
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI runs the PostgreSQL tests")
        pytest.skip(str(why))
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A fresh, empty PostgreSQL database for this test (its URL has the password)."""
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store test keeps its store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "ticks.db"
    url: str = request.getfixturevalue("pg_url")
    return url


PAIR = ("BTCUSDT", "ETHUSDT")
TAPE_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def market(seed: int = 1, symbols: tuple[str, ...] = PAIR) -> SyntheticMarket:
    """The demo market from a fixed start: the same seed gives the same tape, ids too."""
    m = SyntheticMarket(seed=seed, rate=20, start_ms=TAPE_START_MS)
    for symbol in symbols:
        m.add(symbol)
    return m


async def write_trades(store: TickStore, trades: list[DemoTrade]) -> None:
    ids = await store.series_ids(sorted({t.symbol for t in trades}), StreamKind.TRADE)
    await store.write(
        [
            (ids[t.symbol], t.trade_id, t.time_ms * 1000, None, t.price, t.qty, t.buyer_maker)
            for t in trades
        ]
    )


async def store_tape(
    db_path: Path, seconds: float, seed: int = 1, symbols: tuple[str, ...] = PAIR
) -> None:
    """A tick store holding `seconds` of the fixed demo tape of the symbols."""
    async with await TickStore.open(db_path) as store:
        await write_trades(store, market(seed, symbols).advance_to(seconds))


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `predicate` on the loop (never sleeps the thread) until true or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`pairs-tui ARGS` in this process: exit code, stdout, stderr."""
    from pairs_tui.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def cli_env(home: Path) -> dict[str, str]:
    loopback_only(home)
    env = dict(os.environ)
    env.update({var: str(home / sub) for var, sub in USER_DIRS})
    env.pop("PAIRS_TUI_DEBUG", None)
    return env


def pairs_tui_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pairs_tui", *args]


TIERS = ("unit", "server", "pty")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, import every test module once here, in the controller, before
    the workers start: pytest caches each module with its asserts rewritten (and Python
    the package's bytecode), and every worker then reads those instead of redoing them.
    PYTHONDONTWRITEBYTECODE, set on these machines, would keep any process from writing
    that cache: each of six workers rewrote every module itself, 3 s of CPU apiece."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    import importlib

    before, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        for path in sorted(Path(__file__).parent.glob("test_*.py")):
            try:
                importlib.import_module(path.stem)
            except Exception:  # the workers collect it again and report it
                continue
    finally:
        sys.dont_write_bytecode = before


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is in one tier, so `-m unit` and friends mean what they say. The slow
    tiers run first: the quick unit tests then fill the workers' gaps, not the tail."""
    rank = {}
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) != 1:
            raise pytest.UsageError(f"{item.nodeid}: one tier marker of {TIERS}, not {tiers}")
        rank[item.nodeid] = -TIERS.index(tiers[0])
    items.sort(key=lambda item: rank[item.nodeid])
