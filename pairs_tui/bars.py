"""OHLCV bars from trades, built incrementally.

A bar is labelled by its open time (UTC, µs): a trade at t belongs to the bar starting
at floor(t / tf) * tf. open/close are the first/last trade by (trade time, trade id);
volume is the sum of quantities; intervals without trades have no bar.

`resample` turns a chunk of trades into bars; `fold` merges those into the bars already
held, updating the forming bar in place. Folding chunk by chunk gives exactly the bars
of a one-shot resample, which is what lets a refresh read only the trades newer than
its watermark.
"""

from __future__ import annotations

import polars as pl

from pairs_tui.model import TIMEFRAMES

__all__ = ["TIMEFRAMES", "empty_bars", "fold", "resample", "trades_frame"]

TRADE_SCHEMA = {"ts_us": pl.Int64, "trade_id": pl.Int64, "price": pl.Utf8, "qty": pl.Utf8}
BAR_SCHEMA = {
    "ts_us": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "trades": pl.Int64,
}


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_SCHEMA)


def trades_frame(rows: list[tuple[int, int, str, str]]) -> pl.DataFrame:
    """(ts_us, trade_id, price text, qty text) rows as a frame with float prices."""
    frame = pl.DataFrame(rows, schema=TRADE_SCHEMA, orient="row")
    return frame.with_columns(pl.col("price").cast(pl.Float64), pl.col("qty").cast(pl.Float64))


def resample(trades: pl.DataFrame, tf_us: int) -> pl.DataFrame:
    """Bars of one chunk of trades (columns ts_us, trade_id, price, qty)."""
    if trades.is_empty():
        return empty_bars()
    return (
        trades.sort("ts_us", "trade_id")
        .group_by((pl.col("ts_us") // tf_us * tf_us).alias("ts_us"), maintain_order=True)
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("qty").sum().alias("volume"),
            pl.len().cast(pl.Int64).alias("trades"),
        )
    )


def fold(bars: pl.DataFrame, new: pl.DataFrame, keep: int | None = None) -> pl.DataFrame:
    """Append `new` bars (from later trades) to `bars`, merging a shared forming bar.

    Trades of one symbol arrive in id order and ids follow time, so `new` never starts
    before the last bar held; keep at most `keep` bars (the newest).
    """
    if new.is_empty():
        return bars
    if not bars.is_empty():
        last, first = bars.row(-1, named=True), new.row(0, named=True)
        if first["ts_us"] < last["ts_us"]:
            raise ValueError("trades older than the forming bar cannot be folded in")
        if first["ts_us"] == last["ts_us"]:
            merged = pl.DataFrame(
                [
                    {
                        "ts_us": last["ts_us"],
                        "open": last["open"],
                        "high": max(last["high"], first["high"]),
                        "low": min(last["low"], first["low"]),
                        "close": first["close"],
                        "volume": last["volume"] + first["volume"],
                        "trades": last["trades"] + first["trades"],
                    }
                ],
                schema=BAR_SCHEMA,
            )
            new = pl.concat([merged, new.slice(1)])
            bars = bars.slice(0, bars.height - 1)
        new = pl.concat([bars, new])
    return new.tail(keep) if keep is not None else new
