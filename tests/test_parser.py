"""The frame decoder on real recorded Binance frames (tests/data/binance, sources in its README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES

from pairs_tui.feed.binance import FrameDecoder, MalformedFrame, ShutdownNotice
from pairs_tui.model import StreamKind

pytestmark = pytest.mark.unit


def capture_frames(name: str) -> list[bytes]:
    """cryptofeed captures: '<epoch>: <frame>' per line; line 1 of a full capture is the URL."""
    frames = []
    for line in (SAMPLES / name).read_text().splitlines():
        stamp, sep, frame = line.partition(": ")
        if sep and stamp.replace(".", "").isdigit():
            frames.append(frame.encode())
    return frames


def payload(frame: bytes) -> dict:
    doc = json.loads(frame)
    return doc.get("data", doc)


def streams_of(frames: list[bytes], event: str) -> dict[str, str]:
    """Every stream carrying `event` in these frames, mapped to its symbol."""
    subs = {}
    for frame in frames:
        data = payload(frame)
        if data.get("e") == event:
            subs[f"{data['s'].lower()}@{event}"] = data["s"]
    return subs


def check_trade(msg, data: dict, kind: StreamKind) -> None:
    assert msg.p == data["p"] and msg.q == data["q"]  # decimal text kept verbatim
    assert data["T"] == msg.T
    assert msg.m is data["m"]
    if kind is StreamKind.TRADE:
        assert msg.id == msg.first == msg.last == data["t"]
    else:
        assert (msg.f, msg.last_trade) == (data["f"], data["l"])
        agg = data.get("a")  # continuity is on the aggregate id when the frame has one
        assert (msg.first, msg.last) == ((agg, agg) if agg is not None else (data["f"], data["l"]))
        assert msg.id == data.get("a", data["f"])


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("cryptofeed_BINANCE_spot_combined_capture_2021-10-12.txt", StreamKind.AGG_TRADE, 2),
        ("cryptofeed_spot_aggTrade_lines.txt", StreamKind.AGG_TRADE, 2),
        ("cryptofeed_futures_aggTrade_lines.txt", StreamKind.AGG_TRADE, 91),
    ],
)
def test_captures_yield_every_trade_and_ignore_the_rest(name, kind, expected):
    frames = capture_frames(name)
    subs = streams_of(frames, kind.value)
    decoder = FrameDecoder(subs, kind)
    trades = ignored = 0
    for frame in frames:
        item = decoder.decode(frame)
        data = payload(frame)
        if data.get("e") == kind.value:
            symbol, msg = item
            assert symbol == data["s"]
            check_trade(msg, data, kind)
            trades += 1
        else:  # depth, bookTicker (no "e"), kline
            assert item is None
            ignored += 1
    assert trades == expected
    if name.startswith("cryptofeed_BINANCE"):
        assert ignored == len(frames) - 2 > 200


def test_futures_aggtrades_are_contiguous_per_symbol():
    """PROTOCOL.md §8: f = previous l + 1 per symbol, which our gap check relies on."""
    frames = capture_frames("cryptofeed_futures_aggTrade_lines.txt")
    decoder = FrameDecoder(streams_of(frames, "aggTrade"), StreamKind.AGG_TRADE)
    last: dict[str, int] = {}
    for frame in frames:
        symbol, msg = decoder.decode(frame)
        if symbol in last:
            assert msg.first == last[symbol] + 1
        last[symbol] = msg.last
    assert len(last) == 4


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nautilus_ws_spot_trade_combined_2021-12.json", StreamKind.TRADE),
        ("nautilus_ws_spot_agg_trade_combined_2023-02.json", StreamKind.AGG_TRADE),
    ],
)
def test_nautilus_frames(name, kind):
    frame = (SAMPLES / name).read_bytes()  # pretty-printed, old format with b/a order ids
    data = payload(frame)
    decoder = FrameDecoder({f"ethusdt@{kind.value}": "ETHUSDT"}, kind)
    symbol, msg = decoder.decode(frame)
    assert symbol == "ETHUSDT"
    check_trade(msg, data, kind)


def test_tardis_frames_spot_and_futures():
    lines = (SAMPLES / "tardis_node_binance_messages_2019_TRANSCRIBED.jsonl").read_bytes()
    frames = [line for line in lines.splitlines() if line.strip()]
    trades = FrameDecoder({"bnbbtc@trade": "BNBBTC", "btcusdt@trade": "BTCUSDT"}, StreamKind.TRADE)
    aggs = FrameDecoder({"btcusdt@aggTrade": "BTCUSDT"}, StreamKind.AGG_TRADE)
    seen = 0
    for frame in frames:
        data = payload(frame)
        if data.get("e") == "trade":
            _, msg = trades.decode(frame)
            check_trade(msg, data, StreamKind.TRADE)
            seen += 1
        elif data.get("e") == "aggTrade":  # 2019 futures frame without an aggregate id
            _, msg = aggs.decode(frame)
            check_trade(msg, data, StreamKind.AGG_TRADE)
            seen += 1
        else:  # bookTicker: no "e" at all
            assert trades.decode(frame) is None
    assert seen == 4


def test_raw_frames_without_the_combined_wrapper():
    decoder = FrameDecoder({"btcusdt@trade": "BTCUSDT"}, StreamKind.TRADE)
    raw = (
        b'{"e":"trade","E":1762578805373,"s":"BTCUSDT","t":5455447976,'
        b'"p":"102571.17000000","q":"0.00100000","T":1762578805372,"m":true,"M":true}'
    )
    symbol, msg = decoder.decode(raw)
    assert (symbol, msg.id, msg.p) == ("BTCUSDT", 5455447976, "102571.17000000")


@pytest.mark.parametrize(
    "frame",
    [
        b'{"result":null,"id":1}',
        b'{"result":["btcusdt@trade"],"id":3}',
        b'{"error":{"code":2,"msg":"Invalid request"},"id":1}',
        b'{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}',
        b'{"stream":"ethusdt@trade","data":{"e":"trade","s":"ETHUSDT","t":1,'
        b'"p":"1","q":"1","T":1,"m":true}}',  # a symbol we did not ask for
        b'{"stream":"btcusdt@blockTrade","data":{"e":"blockTrade","t":582}}',
    ],
)
def test_control_replies_errors_and_other_events_are_ignored(frame):
    assert FrameDecoder({"btcusdt@trade": "BTCUSDT"}, StreamKind.TRADE).decode(frame) is None


@pytest.mark.parametrize(
    "frame",
    [
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":17',
        b"not json",
        b"\xff\xfe",
        b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"x"}}',
        b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":1.5,'
        b'"q":"1","T":1,"m":true}}',  # a price as a JSON number would lose precision
        b"[]",
    ],
)
def test_malformed_frames_raise_malformed(frame):
    with pytest.raises(MalformedFrame):
        FrameDecoder({"btcusdt@trade": "BTCUSDT"}, StreamKind.TRADE).decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
        b'{"e":"serverShutdown","E":1770123456789}',
    ],
)
def test_server_shutdown_is_announced(frame):
    with pytest.raises(ShutdownNotice):
        FrameDecoder({"btcusdt@trade": "BTCUSDT"}, StreamKind.TRADE).decode(frame)


def test_nautilus_tape_round_trips_through_frames():
    """2,001 real trades, rebuilt as frames: every price, qty, time and id survives."""
    rows = (SAMPLES / "nautilus_btcusdt_spot_trades_2021-01-08_DERIVED.csv").read_text()
    decoder = FrameDecoder({"btcusdt@trade": "BTCUSDT"}, StreamKind.TRADE)
    count = 0
    for line in rows.splitlines()[1:]:
        tid, price, qty, ms, maker = line.split(",")
        frame = json.dumps(
            {
                "stream": "btcusdt@trade",
                "data": {
                    "e": "trade",
                    "E": int(ms),
                    "s": "BTCUSDT",
                    "t": int(tid),
                    "p": price,
                    "q": qty,
                    "T": int(ms),
                    "m": maker == "True",
                    "M": True,
                },
            }
        ).encode()
        _, msg = decoder.decode(frame)
        assert (msg.id, msg.p, msg.q, msg.T, msg.m) == (
            int(tid),
            price,
            qty,
            int(ms),
            maker == "True",
        )
        count += 1
    assert count == 2001


def test_decoder_accepts_text_as_well_as_bytes():
    frame = Path(SAMPLES / "nautilus_ws_spot_trade_combined_2021-12.json").read_text()
    assert FrameDecoder({"ethusdt@trade": "E"}, StreamKind.TRADE).decode(frame) is not None
