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


HISTORY_SCHEMA = {**BAR_SCHEMA, "until_id": pl.Int64}


def history_frame(
    rows: list[tuple[int, float, float, float, float, float, int, int | None]],
) -> pl.DataFrame:
    """History bars (HistoryBar fields in order) as a frame; bars without trades (the
    exchange sends a kline for every interval) are left out, as everywhere else."""
    frame = pl.DataFrame(rows, schema=HISTORY_SCHEMA, orient="row")
    return frame.filter(pl.col("trades") > 0)


def merge_history(bars: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """Trade-built bars with the exchange's history before them, column `rest` saying
    which bars hold history.

    A whole history bar counts only where no trades were stored for it (trades win); a
    seam bar (`until_id` set) holds the trades before the first stored one, so it opens
    the stored trades' bar: first open, last close, extremes of both, sums of both.
    """
    trades = bars.with_columns(rest=pl.lit(False))
    if history.is_empty():
        return trades
    whole = history.filter(pl.col("until_id").is_null()).drop("until_id")
    whole = whole.join(bars.select("ts_us"), on="ts_us", how="anti")
    seam = history.filter(pl.col("until_id").is_not_null()).drop("until_id")
    joined = seam.join(bars, on="ts_us", how="left", suffix="_t")
    seamed = joined.select(
        "ts_us",
        "open",
        pl.max_horizontal("high", "high_t").alias("high"),
        pl.min_horizontal("low", "low_t").alias("low"),
        pl.coalesce("close_t", "close").alias("close"),
        (pl.col("volume") + pl.col("volume_t").fill_null(0.0)).alias("volume"),
        (pl.col("trades") + pl.col("trades_t").fill_null(0)).alias("trades"),
    )
    rest = pl.concat([whole, seamed]).with_columns(rest=pl.lit(True))
    trades = trades.join(seam.select("ts_us"), on="ts_us", how="anti")
    return pl.concat([rest, trades]).sort("ts_us")
