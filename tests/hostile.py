"""A hostile Binance-protocol server of the tests' own: loopback only, scripted frames.

Each connection is sent the next script (a list of frames) as fast as the socket takes
it, then held open until the client goes; a connection beyond the scripts gets nothing.
`trade()` builds a combined-stream trade frame, by default a well-formed one; any field
can be replaced by something a well-behaved exchange would never send.
"""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from pairs_tui.model import (
    BAD_PRICE,
    BAD_QTY,
    BAD_TIME,
    BAD_TRADE_ID,
    EARLIEST_TRADE_US,
    LATEST_TRADE_US,
    MAX_AHEAD_US,
    TIME_AHEAD,
)

GOOD_PRICE = "65000.01000000"
GOOD_QTY = "0.00100000"
TIME_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def trade(symbol: str, trade_id: Any, *, stream: str | None = None, **fields: Any) -> str:
    """`{"stream": "btcusdt@trade", "data": {...}}`; `fields` override the data (`t`, `p`,
    `q`, `T`, `s`, ...), and a field given as `None` is left out."""
    data: dict[str, Any] = {
        "e": "trade",
        "E": TIME_MS,
        "s": symbol.upper(),
        "t": trade_id,
        "p": GOOD_PRICE,
        "q": GOOD_QTY,
        "T": TIME_MS + trade_id % 1000 if isinstance(trade_id, int) else TIME_MS,
        "m": True,
        "M": True,
    }
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps({"stream": stream or f"{symbol.lower()}@trade", "data": data})


class HostileServer:
    """`async with HostileServer([frames_of_connection_1, ...]) as server: server.url`."""

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts = list(scripts)
        self.connections = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        script = self.scripts.pop(0) if self.scripts else []
        for frame in script:
            await ws.send(frame)
        await ws.wait_closed()

    async def __aenter__(self) -> HostileServer:
        self._server = await serve(self._handler, "127.0.0.1", 0, compression=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


# -- the door rule, as a table: (what, fields over GOOD, the reason or None) -------------------
NOW_US = 1_767_225_600_000_000  # 2026-01-01: the local clock of the table
GOOD: dict[str, Any] = {
    "price": GOOD_PRICE,
    "qty": GOOD_QTY,
    "trade_id": 5_000_000_000,
    "time_us": TIME_MS * 1000,
}
ESCAPES = "\u001b[2J\u001b]0;PWNED\u0007"
# text that is not a plain positive decimal below 1e15 of at most 40 characters
BAD_DECIMALS = [
    ESCAPES,
    "abc",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "-65000.01",
    "0",
    "0.00000000",
    "000",
    "1e308",
    "1E5",
    "1e-8",
    " 65000.01",
    "65000.01 ",
    "65000.01\n",
    "+65000.01",
    "0x10",
    "\u0661\u0662\u0663",  # Arabic-Indic digits: digits to Python, not to us
    "65,000.01",
    "65000.01.5",
    ".5",
    "5.",
    "",
    "1" * 16,  # 1.1e15
    "1000000000000000",  # 1e15
    "1." + "1" * 25,  # 41 characters
    "9" * 200_000,
]
GOOD_DECIMALS = [
    "65000.01000000",
    "0.00000001",
    "65000",
    "0.5",
    "000.5",
    "999999999999999.999999999999999999999999",  # 15 + 1 + 24: the longest, below 1e15
]


def _cases() -> list[tuple[str, dict[str, Any], str | None]]:
    cases: list[tuple[str, dict[str, Any], str | None]] = [("a Binance trade", {}, None)]
    cases += [(f"price {p[:20]!r}", {"price": p}, None) for p in GOOD_DECIMALS]
    cases += [(f"qty {p[:20]!r}", {"qty": p}, None) for p in GOOD_DECIMALS]
    cases += [(f"price {p[:20]!r}", {"price": p}, BAD_PRICE) for p in BAD_DECIMALS]
    cases += [(f"qty {p[:20]!r}", {"qty": p}, BAD_QTY) for p in BAD_DECIMALS]
    cases += [
        ("trade id 0", {"trade_id": 0}, None),
        ("trade id 2^63-1", {"trade_id": 2**63 - 1}, None),
        ("trade id -1", {"trade_id": -1}, BAD_TRADE_ID),
        ("trade id 2^63", {"trade_id": 2**63}, BAD_TRADE_ID),
        ("trade id 10^30", {"trade_id": 10**30}, BAD_TRADE_ID),
        ("the earliest time", {"time_us": EARLIEST_TRADE_US}, None),
        ("before 2009", {"time_us": EARLIEST_TRADE_US - 1}, BAD_TIME),
        ("time 0", {"time_us": 0}, BAD_TIME),
        ("time -1", {"time_us": -1}, BAD_TIME),
        ("a day ahead of the clock", {"time_us": NOW_US + MAX_AHEAD_US}, None),
        ("more than a day ahead", {"time_us": NOW_US + MAX_AHEAD_US + 1}, TIME_AHEAD),
        ("2100", {"time_us": LATEST_TRADE_US + 1, "now_us": None}, BAD_TIME),
        ("year 10000", {"time_us": 253_402_300_800_000_000}, BAD_TIME),
        ("time 2^63", {"time_us": 2**63}, BAD_TIME),
        ("time 10^30", {"time_us": 10**30}, BAD_TIME),
        ("in 2099 without a clock", {"time_us": LATEST_TRADE_US - 1, "now_us": None}, None),
        ("every field bad: the id is said first", {"trade_id": -1, "price": "x"}, BAD_TRADE_ID),
    ]
    return cases


CHECK_CASES = _cases()
