"""Hostile input at the door of the live feed: a server of our own sends, among good
trades, trades no exchange should send (escape sequences and text for prices, NaN,
infinities, zero, negatives, 1e308, ids and times past int64, the year 10000, a jump of
the ids to 2**62, the wrong symbol). Through the real consumer and store: every good
trade is stored once, no bad one is, each is counted as malformed, and the id tracking
is not moved by them, also across a restart on the same file.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import wait_until
from hostile import (
    BAD_DECIMALS,
    CHECK_CASES,
    ESCAPES,
    GOOD,
    GOOD_PRICE,
    GOOD_QTY,
    NOW_US,
    TIME_MS,
    HostileServer,
    trade,
)

from pairs_tui.cli import main
from pairs_tui.feed.binance import BinanceFeed, FeedOptions
from pairs_tui.ingest import Ingest
from pairs_tui.model import (
    ECHO_CHARS,
    LINE_CHARS,
    StreamKind,
    check_trade,
    clip,
    printable,
)
from pairs_tui.store import TickStore

pytestmark = pytest.mark.unit

BTC, ETH = "BTCUSDT", "ETHUSDT"
BASE = 5_000_000_000  # Binance-sized ids: an empty store's first trade waits for the next


@pytest.mark.parametrize(("what", "fields", "reason"), CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_check_trade(what, fields, reason):
    args = {**GOOD, "now_us": NOW_US, **fields}
    assert check_trade(**args) == reason


def bad_trades(symbol: str, next_id: int) -> list[str]:
    """Frames no exchange sends, each with the id the next good trade will have: had one
    of them moved the id tracking, that good trade would be dropped as a duplicate."""
    other = ETH if symbol == BTC else BTC
    ahead_ms = time.time_ns() // 1_000_000 + 2 * 86_400_000
    frames = [trade(symbol, next_id, p=p) for p in BAD_DECIMALS if len(p) < 1000]
    frames += [trade(symbol, next_id, q=q) for q in ("NaN", "inf", "-0.1", "0", "1e308", ESCAPES)]
    frames += [trade(symbol, bad) for bad in (2**63, 10**30, -1)]  # ids past int64, negative
    frames += [
        trade(symbol, next_id, T=t)
        for t in (2**63, 10**30, 253_402_300_800_000, ahead_ms, 0, -1, 1_735_689_600)
    ]  # times: past int64, the year 10000 (ms), two days ahead, 1970, seconds
    frames += [trade(symbol, next_id, s=other), trade(symbol, next_id, s=ESCAPES)]
    frames += [trade(symbol, next_id, p=65000.01)]  # a number where text belongs
    return frames


def good(symbol: str, ids) -> tuple[list[str], list[int]]:
    ids = list(ids)
    return [trade(symbol, i) for i in ids], ids


async def record(db_path, url: str, frames: int, symbols=(BTC, ETH), **options) -> Ingest:
    """The real consumer and store until `frames` frames were read, then a clean stop."""
    async with await TickStore.open(db_path) as store:
        feed = BinanceFeed(symbols, FeedOptions(ws_url=url, **options), on_event=lambda e: None)
        ingest = Ingest(feed, store, flush_interval=0.05)
        task = asyncio.create_task(ingest.run())
        try:
            await wait_until(lambda: feed.counters.frames >= frames or task.done(), 10)
        finally:
            ingest.stop()
            await task  # an exception in the consumer or the write surfaces here
    return ingest


async def stored(db_path, symbol: str, kind=StreamKind.TRADE) -> list[tuple]:
    async with await TickStore.open(db_path) as store:
        return [(r[1], r[2], r[4], r[5]) for r in await store.trades(symbol, kind)]


async def gaps(db_path) -> list[tuple]:
    async with await TickStore.open(db_path) as store:
        assert await store.integrity_ok()
        return [(g.symbol, g.from_id, g.to_id) for g in await store.gaps()]


def expected_rows(ids: list[int]) -> list[tuple]:
    return [(i, (TIME_MS + i % 1000) * 1000, GOOD_PRICE, GOOD_QTY) for i in ids]


async def test_hostile_trades_are_counted_never_stored_and_do_not_move_the_ids(db_path):
    # session 1: good trades, every kind of bad one, an id jump to 2**62, good trades on
    frames: list[str] = []
    want = {BTC: [], ETH: []}
    for symbol in (BTC, ETH):
        f, ids = good(symbol, range(BASE, BASE + 3))
        frames += f
        want[symbol] += ids
    bad = bad_trades(BTC, BASE + 3) + bad_trades(ETH, BASE + 3)
    frames += bad
    for symbol in (BTC, ETH):
        f, ids = good(symbol, [BASE + 3])
        frames += f
        want[symbol] += ids
    jumps = [trade(BTC, 2**62), trade(ETH, BASE + 10**12)]  # valid but for the id
    frames += jumps
    after_jump = {BTC: range(BASE + 4, BASE + 7), ETH: range(BASE + 4, BASE + 9)}
    for symbol, ids in after_jump.items():
        f, ids = good(symbol, ids)
        frames += f
        want[symbol] += ids
    reconnect_gap = 3_000_000  # ids a reconnect of some minutes misses: a gap, not a stray
    f, ids = good(BTC, range(BASE + 7 + reconnect_gap, BASE + 10 + reconnect_gap))
    frames += f
    want[BTC] += ids

    # session 2, a new consumer on the same file: its first BTC trade jumps to 2**62;
    # ETH comes back after months away, 3e9 ids on, and goes on from there
    last_btc = want[BTC][-1]
    months = BASE + 9 + 3 * 10**9
    again = [trade(BTC, 2**62)]
    f, btc_ids = good(BTC, range(last_btc + 1, last_btc + 4))
    again += f
    f, eth_ids = good(ETH, range(months, months + 3))
    again += f
    again += bad_trades(ETH, months + 3)
    f, more = good(ETH, [months + 3])
    again += f

    async with asyncio.timeout(30), HostileServer([frames, again]) as server:
        ingest = await record(db_path, server.url, len(frames))
        feed = ingest.feed
        assert feed.counters.malformed == len(bad) + len(jumps)
        assert ingest.stats().malformed == len(bad) + len(jumps)
        assert feed.counters.duplicates == 0
        assert feed.counters.reconnects == 0  # never fatal
        assert dict(ingest.stored) == {BTC: len(want[BTC]), ETH: len(want[ETH])}
        for symbol in (BTC, ETH):
            assert await stored(db_path, symbol) == expected_rows(want[symbol]), symbol
        assert await gaps(db_path) == [(BTC, BASE + 7, BASE + 6 + reconnect_gap)]

        ingest = await record(db_path, server.url, len(again))
        assert ingest.feed.counters.malformed == 1 + len(bad_trades(ETH, 0))
        assert ingest.feed.counters.duplicates == 0
    assert await stored(db_path, BTC) == expected_rows(want[BTC] + btc_ids)
    assert await stored(db_path, ETH) == expected_rows(want[ETH] + eth_ids + more)
    assert await gaps(db_path) == [
        (BTC, BASE + 7, BASE + 6 + reconnect_gap),
        (ETH, BASE + 9, months - 1),  # the months away
    ]


async def test_a_store_whose_last_id_was_never_real_recovers(db_path):
    """An earlier version stored whatever id a frame said: the ids that follow are far
    below it, held, then taken as the next trade follows them."""
    async with await TickStore.open(db_path) as store:
        series = (await store.series_ids([BTC], StreamKind.TRADE))[BTC]
        await store.write([(series, 2**62, TIME_MS * 1000, None, GOOD_PRICE, GOOD_QTY, True)])
    frames, ids = good(BTC, range(BASE, BASE + 5))
    later, more = good(BTC, range(BASE + 5, BASE + 8))  # after a restart
    async with asyncio.timeout(20), HostileServer([frames, later]) as server:
        for sent in (frames, later):
            ingest = await record(db_path, server.url, len(sent), symbols=(BTC,))
            assert ingest.stored[BTC] == len(sent)
            assert ingest.feed.counters.duplicates == ingest.feed.counters.malformed == 0
    assert [r[0] for r in await stored(db_path, BTC)] == [*ids, *more, 2**62]
    assert await gaps(db_path) == []


async def test_aggtrade_first_and_last_ids_are_checked(db_path):
    """Old aggTrade frames without `a` carry the trade ids `f`..`l`: the last one below the
    first, past int64 or far beyond it is a malformed frame."""

    def agg(f: int, last: int) -> str:
        data = {"e": "aggTrade", "E": 1, "s": BTC, "p": "1.5", "q": "2", "f": f, "l": last}
        data |= {"T": TIME_MS, "m": True}
        return json.dumps({"stream": "btcusdt@aggTrade", "data": data})

    frames = [agg(100, 104), agg(106, 105), agg(105, 2**63), agg(105, 105 + 10**10)]
    frames += [agg(105, 105), agg(106, 107)]
    async with asyncio.timeout(20), HostileServer([frames]) as server:
        ingest = await record(
            db_path, server.url, len(frames), symbols=(BTC,), kind=StreamKind.AGG_TRADE
        )
    assert ingest.feed.counters.malformed == 3
    assert [r[0] for r in await stored(db_path, BTC, StreamKind.AGG_TRADE)] == [100, 105, 106]
    assert await gaps(db_path) == []


# -- outside text in messages is cut --------------------------------------------------------
def test_clip_keeps_start_and_end_and_says_how_much_was_cut():
    assert clip("a" * ECHO_CHARS) == "a" * ECHO_CHARS
    text = "start" + "x" * 200_000 + "end"
    cut = clip(text)
    assert cut.startswith("start") and cut.endswith("end")
    assert f"...[{len(text) - ECHO_CHARS:,} characters cut]..." in cut
    assert len(cut) < ECHO_CHARS + 40
    shown = printable("\x1b[2J" * 100_000)
    assert "\x1b" not in shown and len(shown) < LINE_CHARS + 40


def test_a_200kb_symbol_is_cut_in_the_error(capsys):
    symbol = "btc" + "u" * 200_000 + "\x1b[2J"
    with pytest.raises(SystemExit) as info:
        main(["record", symbol])
    err = capsys.readouterr().err
    assert info.value.code == 2
    [line] = err.splitlines()
    assert len(line) < 500, len(line)
    assert line.startswith("pairs-tui: error: invalid symbol btcuuu")
    assert "characters cut]..." in line and "\\x1b[2J" in line and "\x1b" not in line
    assert line.endswith("use 2-20 letters and digits, like btcusdt")
