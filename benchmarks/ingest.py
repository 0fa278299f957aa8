"""Ingest throughput: how many trades/s `pairs-tui record` commits, against a bare receive.

Run by hand (not a test):  python benchmarks/ingest.py [--trades N] [--runs K] [--symbols S]
                                                   [--postgres]

A Binance-protocol server runs in a separate process (this file with `--serve`) so that it
does not compete for the client's event loop or GIL. It builds every WebSocket frame of the
tape (N combined-stream trade messages, symbols round-robin, consecutive ids per symbol)
before it accepts the first connection, then writes the whole tape to each connection in
large chunks, as fast as the socket takes them, and keeps the connection open afterwards.

Each run measures, one after the other on the same server:

* bare receive    - a plain `websockets` client that only calls `recv()`: the ceiling any
                    Python consumer on this machine could reach;
* record pipeline - the real `BinanceFeed` + `Ingest` + `TickStore` (fresh SQLite file per
                    run), timed until all N trades are committed (`Ingest.stored`);
* into PostgreSQL - with `--postgres`, the same pipeline into a fresh database of a
                    throwaway server on loopback (tests/pgcluster.py: initdb as an
                    unprivileged user; fsync and synchronous commit on: stricter than
                    SQLite's WAL at synchronous=NORMAL), beside SQLite's figure.

Both clocks start at the first frame received (the pipeline's start is seen by polling
`feed.counters.frames` every 1 ms; its end by polling `Ingest.stored` every 5 ms). The two
measures alternate within every run, so drift on a noisy machine hits both; the ratio
stored/bare is taken per run, which makes it far steadier than either absolute rate.
After each pipeline run the database is checked to hold exactly the N trades.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SYMBOLS = ("btcusdt", "ethusdt", "solusdt", "bnbusdt", "xrpusdt", "adausdt", "dogeusdt")
BASE_PRICE = (102571.17, 3421.58, 161.23, 987.4, 2.2841, 0.5623, 0.17112)
FIRST_ID = 5455447976
FIRST_MS = 1762578805372
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
FRAMES_PER_WRITE = 1000
TARGET_RATE = 60_000
TARGET_RATIO, AIM_RATIO = 0.35, 0.5


# -- the server (a separate process) ----------------------------------------------------------
def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, final server->client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def build_tape(trades: int, symbols: int) -> list[bytes]:
    """All frames, joined FRAMES_PER_WRITE at a time, ready to write."""
    frames = []
    for i in range(trades):
        k = i % symbols
        sym, n, t = SYMBOLS[k], i // symbols, FIRST_MS + i
        price = BASE_PRICE[k] * (1 + (n % 200 - 100) * 1e-5)
        text = (
            f'{{"stream":"{sym}@trade","data":{{"e":"trade","E":{t + 1},"s":"{sym.upper()}",'
            f'"t":{FIRST_ID + n},"p":"{price:.8f}","q":"0.00100000","T":{t},'
            f'"m":{"true" if n % 3 else "false"},"M":true}}}}'
        )
        frames.append(ws_frame(text.encode()))
    step = FRAMES_PER_WRITE
    return [b"".join(frames[i : i + step]) for i in range(0, len(frames), step)]


async def read_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Discard client frames, but answer pings and close so the client never waits on us."""
    while True:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n >= 126:
            n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8), "big")
        mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
        if b0 & 0x0F == 0x9:
            writer.write(ws_frame(data, 0xA))
        elif b0 & 0x0F == 0x8:
            writer.write(ws_frame(data[:2], 0x8))
            return


async def serve_one(reader, writer, tape: list[bytes]) -> None:
    reading = None
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", request).group(1)
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        reading = asyncio.create_task(read_client(reader, writer))
        for chunk in tape:
            writer.write(chunk)
            await writer.drain()
        await reading  # the tape is out: stay open until the client closes or goes away
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if reading is not None:
            reading.cancel()
        writer.close()


async def serve(portfile: str, trades: int, symbols: int) -> None:
    tape = build_tape(trades, symbols)
    server = await asyncio.start_server(lambda r, w: serve_one(r, w, tape), "127.0.0.1", 0)
    Path(portfile + ".tmp").write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(portfile + ".tmp", portfile)
    await server.serve_forever()


def exit_with_parent() -> None:
    sys.stdin.read()  # the parent closes our stdin (or dies): stop serving
    os._exit(0)


# -- the clients ----------------------------------------------------------------------------
async def bare_receive(url: str, trades: int) -> float:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=1 << 20, proxy=None) as ws:
        await ws.recv(decode=False)
        start = time.perf_counter()
        for _ in range(trades - 1):
            await ws.recv(decode=False)
        return trades / (time.perf_counter() - start)


async def record_pipeline(
    port: int, symbols: tuple[str, ...], trades: int, db: Path | str
) -> float:
    from pairs_tui.feed.binance import BinanceFeed, FeedOptions
    from pairs_tui.ingest import Ingest
    from pairs_tui.store import TickStore

    store = await TickStore.open(db)
    feed = BinanceFeed(symbols, FeedOptions(ws_url=f"ws://127.0.0.1:{port}"))
    ingest = Ingest(feed, store, flush_interval=0.25)
    task = asyncio.create_task(ingest.run())
    deadline = time.perf_counter() + 30 + trades / 5_000

    async def until(done, poll: float, what: str) -> None:
        while not done():
            if task.done() or time.perf_counter() > deadline:
                if task.done():
                    await task  # surfaces a crash of the pipeline
                raise SystemExit(f"pipeline: {what} timed out (last error {feed.last_error})")
            await asyncio.sleep(poll)

    try:
        await until(lambda: feed.counters.frames > 0, 0.001, "first frame")
        start = time.perf_counter()
        await until(lambda: sum(ingest.stored.values()) >= trades, 0.005, "commit of all")
        rate = trades / (time.perf_counter() - start)
    finally:
        ingest.stop()
        await task
    counts = await store.counts()
    await store.close()
    if isinstance(db, Path):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    expected = {s: len(range(i, trades, len(symbols))) for i, s in enumerate(symbols)}
    c = feed.counters
    if counts != expected or (c.gaps, c.duplicates, c.malformed, c.ignored) != (0, 0, 0, 0):
        raise SystemExit(f"pipeline stored {counts}, expected {expected}; counters {c}")
    return rate


# -- the driver -----------------------------------------------------------------------------
async def measure(
    port: int, args: argparse.Namespace, tmp: Path, cluster: object | None
) -> dict[str, list[float]]:
    names = SYMBOLS[: args.symbols]
    url = f"ws://127.0.0.1:{port}/stream?streams={'/'.join(f'{s}@trade' for s in names)}"
    rates: dict[str, list[float]] = {"bare": [], "sqlite": [], "postgresql": []}
    upper = tuple(s.upper() for s in names)
    for run in range(1, args.runs + 1):
        gc.collect()
        rates["bare"].append(await bare_receive(url, args.trades))
        gc.collect()
        db = tmp / f"bench{run}.db"
        rates["sqlite"].append(await record_pipeline(port, upper, args.trades, db))
        line = (
            f"run {run}: bare {rates['bare'][-1]:>9,.0f}/s  sqlite {rates['sqlite'][-1]:>9,.0f}/s"
        )
        if cluster is not None:
            gc.collect()
            target = cluster.new_database()  # type: ignore[attr-defined]
            rates["postgresql"].append(await record_pipeline(port, upper, args.trades, target))
            line += f"  postgresql {rates['postgresql'][-1]:>9,.0f}/s"
        print(line, flush=True)
    return rates


def report(args: argparse.Namespace, rates: dict[str, list[float]]) -> bool:
    import msgspec
    import websockets

    bare, stored, pg = rates["bare"], rates["sqlite"], rates["postgresql"]
    ratios = [s / b for s, b in zip(stored, bare, strict=True)]
    med = statistics.median
    print(
        f"\ningest benchmark: {args.trades:,} trades x {args.runs} runs, {args.symbols} symbols"
        f"\nPython {platform.python_version()}, websockets {websockets.__version__}, "
        f"msgspec {msgspec.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cores\n"
    )
    print(f"{'measure':<30}{'median':>12}{'min':>12}{'max':>12}")
    rows = [("bare receive (trades/s)", bare), ("stored, SQLite (trades/s)", stored)]
    if pg:
        rows.append(("stored, PostgreSQL (trades/s)", pg))
    for name, xs in rows:
        print(f"{name:<30}{med(xs):>12,.0f}{min(xs):>12,.0f}{max(xs):>12,.0f}")
    print(f"{'ratio SQLite/bare':<30}{med(ratios):>12.3f}{min(ratios):>12.3f}{max(ratios):>12.3f}")
    checks = [
        (f"SQLite >= {TARGET_RATE:,}/s", f"{med(stored):,.0f}", med(stored) >= TARGET_RATE),
        (
            f"ratio >= {TARGET_RATIO} (aim {AIM_RATIO})",
            f"{med(ratios):.3f}",
            med(ratios) >= TARGET_RATIO,
        ),
    ]
    if pg:
        vs = [p / s for p, s in zip(pg, stored, strict=True)]
        print(f"{'ratio PostgreSQL/SQLite':<30}{med(vs):>12.3f}{min(vs):>12.3f}{max(vs):>12.3f}")
        checks.append(
            (f"PostgreSQL >= {TARGET_RATE:,}/s", f"{med(pg):,.0f}", med(pg) >= TARGET_RATE)
        )
    print(f"\n{'target':<30}{'median':>12}  result")
    for name, value, ok in checks:
        print(f"{name:<30}{value:>12}  {'PASS' if ok else 'FAIL'}")
    return all(ok for *_, ok in checks)


def start_postgres():
    """A throwaway PostgreSQL server on loopback, as the tests start one."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgcluster import Cluster, binaries

    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("--postgres: no PostgreSQL binaries (initdb) on this machine")
    return Cluster(bin_dir, durable=os.environ.get("PG_FAST") is None).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=400_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=2, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--postgres", action="store_true", help="also into PostgreSQL")
    parser.add_argument("--serve", metavar="PORTFILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        threading.Thread(target=exit_with_parent, daemon=True).start()
        asyncio.run(serve(args.serve, args.trades, args.symbols))
        return 0
    with tempfile.TemporaryDirectory(prefix="pairs-bench-") as tmpdir:
        tmp = Path(tmpdir)
        portfile = tmp / "port"
        command = [sys.executable, __file__, "--serve", str(portfile)]
        command += ["--trades", str(args.trades), "--symbols", str(args.symbols)]
        server = subprocess.Popen(command, stdin=subprocess.PIPE)
        cluster = start_postgres() if args.postgres else None
        try:
            while not portfile.exists():
                if server.poll() is not None:
                    raise SystemExit(f"server exited with {server.returncode}")
                time.sleep(0.05)
            rates = asyncio.run(measure(int(portfile.read_text()), args, tmp, cluster))
        finally:
            if cluster is not None:
                cluster.stop()
            server.stdin.close()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 0 if report(args, rates) else 1


if __name__ == "__main__":
    sys.exit(main())
