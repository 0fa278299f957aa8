"""Shared fixtures: isolated user dirs, a fresh DB path, and the real demo server."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "binance" / "samples"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the developer's own config and data dirs out of every test."""
    home = tmp_path / "home"
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    return home


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ticks.db"


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `predicate` on the loop (never sleeps the thread) until true or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_DATA_HOME"] = str(home / "data")
    env.pop("PAIRS_TUI_DEBUG", None)
    return env


def pairs_tui_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pairs_tui", *args]
