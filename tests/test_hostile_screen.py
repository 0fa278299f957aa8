"""The cockpit in a real terminal against a hostile server: escape sequences and markup
in every field of its frames and in its close reason. The good trades around them are
charted; nothing the server wrote takes the terminal over (no title set, no screen
cleared, no markup applied); what is shown of its text is shown escaped."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import cli_env
from ptyterm import PtyTerminal
from websockets.asyncio.server import ServerConnection, serve

pytestmark = pytest.mark.pty

TIME_AXIS = re.compile(r"\d\d:\d\d:\d\d")  # a drawn chart's, not a placeholder's
EVIL = "\x1b[2J\x1b]0;PWNED\x07[bold]LOUD[/bold]"


def frame(symbol: str, trade_id: int, price: str, **over: object) -> str:
    data: dict[str, object] = {
        "e": "trade",
        "E": 0,
        "s": symbol,
        "t": trade_id,
        "p": price,
        "q": "0.01000000",
        "T": time.time_ns() // 1_000_000,
        "m": True,
    }
    data.update(over)
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


CONNECTIONS: list[ServerConnection] = []


async def hostile(ws: ServerConnection) -> None:
    """Good trades with hostile frames among them, for a few seconds; then a close whose
    reason is hostile too. A reconnect is closed at once with that reason, so the header
    keeps showing it (and no trade comes twice)."""
    CONNECTIONS.append(ws)
    if len(CONNECTIONS) > 1:
        await ws.close(1001, EVIL[:100])
        return
    ids = {"BTCUSDT": 2_000_000_000, "ETHUSDT": 3_000_000_000}
    base = {"BTCUSDT": 65_000.0, "ETHUSDT": 3_000.0}
    for step in range(50):
        for symbol in ids:
            ids[symbol] += 1
            price = base[symbol] * (1 + 0.001 * ((step * 7 + len(symbol)) % 11 - 5))
            await ws.send(frame(symbol, ids[symbol], f"{price:.2f}"))
            await ws.send(frame(symbol, ids[symbol] + 1, EVIL))  # the price
            await ws.send(frame(symbol, ids[symbol] + 1, "1.0", q=EVIL))
            await ws.send(frame(symbol, ids[symbol] + 1, "1.0", s=EVIL))
            await ws.send(frame(symbol, ids[symbol] + 1, "1.0", e=EVIL))
            await ws.send(json.dumps({"stream": EVIL, "data": {"e": EVIL}}))
            await ws.send(EVIL)
        await asyncio.sleep(0.05)
    await ws.close(1001, EVIL[:100])


@pytest.fixture
def server() -> Iterator[str]:
    """The hostile server on loopback, in a thread of its own (the test drives a pty)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    url: list[str] = []

    async def main() -> None:
        async with serve(hostile, "127.0.0.1", 0, compression=None) as srv:
            url.append(f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}")
            started.set()
            await stop.wait()

    CONNECTIONS.clear()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield url[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def test_a_hostile_server_never_takes_the_terminal_over(server, tmp_path, isolated_home):
    argv = [
        sys.executable,
        "-m",
        "pairs_tui",
        "btcusdt",
        "ethusdt",
        "--ws-url",
        server,
        "--no-backfill",
    ]
    argv += ["--db", str(tmp_path / "t.db"), "--timeframe", "1s", "--window", "2"]
    argv += ["--lookback", "30"]
    with PtyTerminal(argv, cols=160, rows=40, env=cli_env(isolated_home), cwd=tmp_path) as t:
        t.wait_for(lambda lines: any(TIME_AXIS.search(x) for x in lines), timeout=20)  # charted
        t.wait_for(lambda lines: re.search(r"malformed [1-9]", lines[0]), timeout=10)  # said
        t.wait_for(lambda lines: "PWNED" in lines[0], timeout=30)  # the close reason, shown
        header = t.text()[0]
        title = t.title
        t.send("q")
        assert t.wait_exit(10) == 0
        transcript = t.transcript()
    assert "\\x1b]0;PWNED\\x07[bold]LOUD[/bold]" in header  # escaped, markup as text
    assert "PWNED" not in title
    i = transcript.find("\x1b]0;PWNED")
    assert i < 0, repr(transcript[max(0, i - 300) : i + 100])
    assert "stopped: trades stored BTCUSDT" in transcript
    stored = transcript.split("stopped: trades stored ")[1].split(" in ")[0]
    assert "malformed 0" not in transcript.split("stopped: ")[1]
    assert stored.startswith("BTCUSDT ") and ", ETHUSDT " in stored
