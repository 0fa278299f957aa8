"""Pairs backtest: pure maths on the joined bars of a pair, no store and no UI.

Conventions (pinned, like the analytics ones):
- hedge at bar t, from index L-1 on (NaN before): `rolling` = OLS of ln a on ln b with
  intercept over the L bars ending at t; `static` = one OLS over all bars (look-ahead);
  `kalman` = state [beta, alpha], random walk Vw = delta/(1-delta) I, observation noise Ve,
  x0 = 0, P0 = 0, run from bar 0, the estimate at t after updating with bar t;
- z_t = (s_t - mean s) / std(s, ddof=1) over the W bars ending at t, with
  s_k = ln a_k - beta_t ln b_k - alpha_t (the hedge of bar t on the window ending at t);
- signals at a bar's close, fills at the next bar's open, both legs, one action per bar;
  a position still open at the end closes at the last close (reason "end");
- long spread = +1 quote unit of A and -beta quote units of B, beta of the signal bar;
  fees = F bps of the notional traded, on entry and on exit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pairs_tui.analytics import Z_ENTRY, ols_fit

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HEDGES = ("rolling", "static", "kalman")
YEAR_US = 365 * 86_400 * 1_000_000
# A windowed sum of squares below this share of the raw sums it came from is rounding:
# the window is flat, and a ratio of two rounding errors is no hedge and no z-score.
_FLAT = 1e-10


@dataclass(frozen=True, slots=True)
class PairBars:
    """The two symbols' bars inner-joined on open time: a row only where both traded."""

    ts_us: IntArray
    open_a: FloatArray
    close_a: FloatArray
    open_b: FloatArray
    close_b: FloatArray

    def __post_init__(self) -> None:
        prices = (self.open_a, self.close_a, self.open_b, self.close_b)
        if any(len(p) != len(self.ts_us) for p in prices):
            raise ValueError("bars: ts_us, open_a, close_a, open_b and close_b differ in length")
        if not all(np.all(np.isfinite(p) & (p > 0)) for p in prices):
            raise ValueError("bars: prices must be positive and finite")

    def __len__(self) -> int:
        return len(self.ts_us)


@dataclass(frozen=True, slots=True)
class BacktestParams:
    """Checked on construction: a backtest never runs on parameters that mean nothing."""

    window: int  # W: bars in the z-score window
    lookback: int  # L: bars in the rolling hedge, and the first bar any hedge is reported
    entry: float = Z_ENTRY  # E
    exit: float = 0.5  # X
    stop: float = 0.0  # S; 0: no stop
    fee_bps: float = 0.0  # F
    hedge: str = "rolling"
    delta: float = 1e-4  # kalman
    ve: float = 1e-3  # kalman

    def __post_init__(self) -> None:
        problem = _params_problem(self)
        if problem is not None:
            raise ValueError(problem)


def _params_problem(p: BacktestParams) -> str | None:
    numbers = (p.entry, p.exit, p.stop, p.fee_bps, p.delta, p.ve)
    if not all(math.isfinite(x) for x in numbers):
        return "entry, exit, stop, fee_bps, delta and ve must be finite numbers"
    if p.window < 2:
        return f"window must be at least 2 bars, not {p.window}"
    if p.lookback < 2:
        return f"lookback must be at least 2 bars, not {p.lookback}"
    if p.hedge not in HEDGES:
        return f"hedge must be one of {', '.join(HEDGES)}, not {p.hedge!r}"
    if p.entry <= 0:
        return f"entry must be above 0 (a z-score distance), not {p.entry:g}"
    if p.entry <= p.exit:
        return f"entry must be above exit: entry {p.entry:g}, exit {p.exit:g}"
    if p.stop != 0 and p.stop <= p.entry:
        return f"stop must be 0 (no stop) or above entry: entry {p.entry:g}, stop {p.stop:g}"
    if p.fee_bps < 0:
        return f"fee_bps must not be negative, not {p.fee_bps:g}"
    if not 0 < p.delta < 1:
        return f"delta must be between 0 and 1, not {p.delta:g}"
    if p.ve <= 0:
        return f"ve must be above 0, not {p.ve:g}"
    return None


def too_few_bars(n_bars: int, params: BacktestParams) -> str | None:
    """Why a backtest cannot run on n_bars: L bars for the first hedge, one more to fill."""
    need = params.lookback + 1
    if n_bars >= need:
        return None
    return (
        f"too few bars: {n_bars} joined bars, the backtest needs at least {need} "
        f"(lookback {params.lookback} for the first hedge, and 1 more to fill an order)"
    )


@dataclass(frozen=True, slots=True)
class Trade:
    side: int  # +1 long the spread, -1 short
    signal_ts: int  # the bar whose close signalled the entry
    entry_ts: int  # the bar whose open filled it
    exit_ts: int  # the bar whose open filled the exit; the last bar for "end"
    beta: float  # the hedge of the signal bar: B is -beta quote units per unit of A
    entry_a: float
    entry_b: float
    exit_a: float
    exit_b: float
    reason: str  # "exit", "stop" or "end"
    gross: float  # per quote unit of A
    fees: float
    net: float


@dataclass(frozen=True, slots=True)
class EquityCurve:
    """One value per bar, at its close."""

    position: IntArray  # -1, 0, +1
    equity: FloatArray
    z: FloatArray
    beta: FloatArray


@dataclass(frozen=True, slots=True)
class Summary:
    trades: int
    win_rate: float | None  # None without trades
    total_pnl: float
    max_drawdown: float
    sharpe: float | None  # annualised over 365-day years; None when it cannot exist
    exposure: float
    look_ahead: bool  # the static hedge saw the whole series


@dataclass(frozen=True, slots=True)
class BacktestResult:
    trades: tuple[Trade, ...]
    curve: EquityCurve
    summary: Summary


def _nan(n: int) -> FloatArray:
    return np.full(n, np.nan)


def _window_sums(v: FloatArray, w: int) -> FloatArray:
    """Sums over the w values ending at each index (NaN before): O(n) whatever w."""
    out = _nan(len(v))
    if len(v) >= w:
        cs = np.concatenate(([0.0], np.cumsum(v)))
        out[w - 1 :] = cs[w:] - cs[:-w]
    return out


def rolling_hedge(
    log_a: FloatArray, log_b: FloatArray, lookback: int
) -> tuple[FloatArray, FloatArray]:
    """Beta and alpha of the OLS over the L bars ending at each bar, from windowed sums.

    Centred on the whole series first, so the sums stay small and Σxx - (Σx)²/L loses
    few digits to cancellation; flat windows of ln b get NaN, not a ratio of rounding.
    """
    n = len(log_a)
    if n < lookback:
        return _nan(n), _nan(n)
    x0, y0 = float(log_b.mean()), float(log_a.mean())
    x, y = log_b - x0, log_a - y0
    sx, sy = _window_sums(x, lookback), _window_sums(y, lookback)
    sxx, sxy = _window_sums(x * x, lookback), _window_sums(x * y, lookback)
    cxx = sxx - sx * sx / lookback
    cxy = sxy - sx * sy / lookback
    with np.errstate(divide="ignore", invalid="ignore"):
        beta: FloatArray = cxy / cxx
    beta[~(cxx > _FLAT * sxx)] = np.nan
    alpha: FloatArray = y0 + sy / lookback - beta * (x0 + sx / lookback)
    return beta, alpha


def static_hedge(
    log_a: FloatArray, log_b: FloatArray, lookback: int
) -> tuple[FloatArray, FloatArray]:
    """One OLS over every bar, reported from L-1 on like the others: it sees the future."""
    n = len(log_a)
    beta, alpha = _nan(n), _nan(n)
    fit = ols_fit(log_a, log_b)
    if fit is not None and n >= lookback:
        beta[lookback - 1 :] = fit.beta
        alpha[lookback - 1 :] = fit.alpha
    return beta, alpha


def kalman_hedge(
    log_a: FloatArray, log_b: FloatArray, lookback: int, delta: float = 1e-4, ve: float = 1e-3
) -> tuple[FloatArray, FloatArray]:
    """The filtered [beta, alpha] after each bar; scalar maths, as 2x2 numpy is slower.

    P stays symmetric (K F R = R Fᵀ F R / Q), so three numbers hold it.
    """
    n = len(log_a)
    vw = delta / (1 - delta)
    b = a = p00 = p01 = p11 = 0.0
    beta, alpha = np.empty(n), np.empty(n)
    ys: list[float] = log_a.tolist()
    fs: list[float] = log_b.tolist()
    for t, (y, f) in enumerate(zip(ys, fs, strict=True)):
        r00, r01, r11 = p00 + vw, p01, p11 + vw
        rf0, rf1 = r00 * f + r01, r01 * f + r11  # R Fᵀ
        q = f * rf0 + rf1 + ve
        k0, k1 = rf0 / q, rf1 / q
        e = y - (b * f + a)
        b, a = b + k0 * e, a + k1 * e
        p00, p01, p11 = r00 - k0 * rf0, r01 - k0 * rf1, r11 - k1 * rf1
        beta[t], alpha[t] = b, a
    beta[: lookback - 1] = np.nan
    alpha[: lookback - 1] = np.nan
    return beta, alpha


def hedge_ratios(
    log_a: FloatArray, log_b: FloatArray, params: BacktestParams
) -> tuple[FloatArray, FloatArray]:
    if params.hedge == "rolling":
        return rolling_hedge(log_a, log_b, params.lookback)
    if params.hedge == "static":
        return static_hedge(log_a, log_b, params.lookback)
    return kalman_hedge(log_a, log_b, params.lookback, params.delta, params.ve)


def zscores(log_a: FloatArray, log_b: FloatArray, beta: FloatArray, window: int) -> FloatArray:
    """z of each bar's spread under its own beta over the W bars ending at it.

    alpha_t shifts every s_k of bar t's window alike, so it cancels: with u = ln a - beta_t ln b,
    the window's mean and variance of u expand into windowed sums of ln a, ln b and their
    products, one cumsum each instead of a refit per bar.
    """
    w = window
    a, b = log_a - float(log_a.mean()), log_b - float(log_b.mean())  # see rolling_hedge
    sa, sb = _window_sums(a, w), _window_sums(b, w)
    saa, sbb, sab = _window_sums(a * a, w), _window_sums(b * b, w), _window_sums(a * b, w)
    caa, cbb, cab = saa - sa * sa / w, sbb - sb * sb / w, sab - sa * sb / w
    css = caa - 2 * beta * cab + beta * beta * cbb  # (W - 1) * var(u)
    dev = (a - sa / w) - beta * (b - sb / w)  # u_t - mean(u)
    with np.errstate(divide="ignore", invalid="ignore"):
        z: FloatArray = dev / np.sqrt(css / (w - 1))
    z[~(css > _FLAT * (saa + beta * beta * sbb))] = np.nan  # a flat spread has no z
    return z


@dataclass(frozen=True, slots=True)
class HedgeNow:
    """The chosen hedge at the newest bar, as a backtest computes it there: what the
    cockpit shows beside its own fit, so what is watched is what was tested."""

    hedge: str
    beta: float | None  # None: fewer than L bars
    alpha: float | None
    zscore: float | None


def hedge_now(close_a: FloatArray, close_b: FloatArray, params: BacktestParams) -> HedgeNow:
    """Hedge and z at the last of these joined bars under `params` (its hedge, W, L)."""
    if len(close_a) < params.lookback:
        return HedgeNow(params.hedge, None, None, None)
    log_a, log_b = np.log(close_a), np.log(close_b)
    beta, alpha = hedge_ratios(log_a, log_b, params)
    z = zscores(log_a, log_b, beta, params.window)

    def last(v: FloatArray) -> float | None:
        return float(v[-1]) if len(v) and math.isfinite(v[-1]) else None

    return HedgeNow(params.hedge, last(beta), last(alpha), last(z))


@dataclass(frozen=True, slots=True)
class _Held:
    side: int
    signal_t: int
    entry_t: int
    beta: float
    entry_a: float
    entry_b: float

    def mark(self, price_a: float, price_b: float) -> float:
        return self.side * ((price_a / self.entry_a - 1) - self.beta * (price_b / self.entry_b - 1))


def _close(
    held: _Held, bars: PairBars, exit_t: int, prices: tuple[float, float], reason: str, fee: float
) -> Trade:
    exit_a, exit_b = prices
    hb = abs(held.beta)
    gross = held.mark(exit_a, exit_b)
    fees = fee * ((1 + hb) + (exit_a / held.entry_a + hb * exit_b / held.entry_b))
    return Trade(
        side=held.side,
        signal_ts=int(bars.ts_us[held.signal_t]),
        entry_ts=int(bars.ts_us[held.entry_t]),
        exit_ts=int(bars.ts_us[exit_t]),
        beta=held.beta,
        entry_a=held.entry_a,
        entry_b=held.entry_b,
        exit_a=exit_a,
        exit_b=exit_b,
        reason=reason,
        gross=gross,
        fees=fees,
        net=gross - fees,
    )


def simulate(
    bars: PairBars, z: FloatArray, beta: FloatArray, params: BacktestParams
) -> tuple[tuple[Trade, ...], EquityCurve]:
    """Trade the given z and beta: separate from the hedge so it can be checked by hand.

    Per bar: fill the order of the previous close at this open, mark at this close, then
    signal. An order therefore never waits, and one signalled on the last bar never fills.
    """
    n = len(bars)
    fee = params.fee_bps / 1e4
    entry, exit_, stop = params.entry, params.exit, params.stop
    position = np.zeros(n, dtype=np.int64)
    equity = np.zeros(n)
    trades: list[Trade] = []
    realised = 0.0
    held: _Held | None = None
    order = 0  # to fill at the next open: +1 / -1 open that side, 0 nothing
    closing = ""  # or: close the held position, for this reason
    locked = False  # after a stop, until a bar with |z| < entry
    for t in range(n):
        open_ab = (float(bars.open_a[t]), float(bars.open_b[t]))
        if closing and held is not None:
            trades.append(_close(held, bars, t, open_ab, closing, fee))
            realised += trades[-1].net
            held, closing = None, ""
        elif order:
            held = _Held(order, t - 1, t, float(beta[t - 1]), *open_ab)
            order = 0
        if held is not None:
            entry_fee = fee * (1 + abs(held.beta))
            mark = held.mark(float(bars.close_a[t]), float(bars.close_b[t]))
            equity[t] = realised + mark - entry_fee
            position[t] = held.side
        else:
            equity[t] = realised
        zt = float(z[t])
        if math.isnan(zt):
            continue
        if held is not None:
            sz = held.side * zt  # > 0: the spread on the position's side of its mean
            if sz >= -exit_:
                closing = "exit"
            elif stop > 0 and sz <= -stop:
                closing, locked = "stop", True
        elif locked:
            locked = abs(zt) >= entry
        elif abs(zt) >= entry and math.isfinite(beta[t]):
            order = -1 if zt > 0 else 1
    if held is not None:
        last = (float(bars.close_a[-1]), float(bars.close_b[-1]))
        trades.append(_close(held, bars, n - 1, last, "end", fee))
        equity[-1] = realised + trades[-1].net
        position[-1] = 0
    return tuple(trades), EquityCurve(position, equity, z, beta)


def summarize(
    trades: tuple[Trade, ...], curve: EquityCurve, *, tf_us: int, look_ahead: bool
) -> Summary:
    """Sharpe and exposure count from the first bar with a z: before it nothing can trade."""
    equity = curve.equity
    n = len(equity)
    defined = np.flatnonzero(np.isfinite(curve.z))
    first = int(defined[0]) if len(defined) else n
    from_zero = np.concatenate(([0.0], equity))
    max_drawdown = float(np.max(np.maximum.accumulate(from_zero) - from_zero))
    changes = np.diff(equity[first:])
    sharpe = None
    if len(changes) >= 2:
        sd = float(changes.std(ddof=1))
        if sd > 0:
            sharpe = float(changes.mean()) / sd * math.sqrt(YEAR_US / tf_us)
    wins = sum(1 for t in trades if t.net > 0)
    return Summary(
        trades=len(trades),
        win_rate=wins / len(trades) if trades else None,
        total_pnl=float(equity[-1]) if n else 0.0,
        max_drawdown=max_drawdown,
        sharpe=sharpe,
        exposure=float(np.mean(curve.position[first:] != 0)) if first < n else 0.0,
        look_ahead=look_ahead,
    )


def backtest(bars: PairBars, params: BacktestParams, tf_us: int) -> BacktestResult:
    """Hedge, z-scores, trades and summary of one pair over its joined bars."""
    if tf_us <= 0:
        raise ValueError(f"tf_us must be a positive bar length in microseconds, not {tf_us}")
    problem = too_few_bars(len(bars), params)
    if problem is not None:
        raise ValueError(problem)
    log_a, log_b = np.log(bars.close_a), np.log(bars.close_b)
    beta, _ = hedge_ratios(log_a, log_b, params)
    z = zscores(log_a, log_b, beta, params.window)
    trades, curve = simulate(bars, z, beta, params)
    summary = summarize(trades, curve, tf_us=tf_us, look_ahead=params.hedge == "static")
    return BacktestResult(trades, curve, summary)


def sweep(
    bars: PairBars,
    grid: list[BacktestParams],
    tf_us: int,
    progress: Callable[[int, int], object] = lambda done, total: None,
) -> list[tuple[BacktestParams, Summary]]:
    """Every combination's summary, best sharpe first (none last). The hedge and z are
    computed once per hedge setting: combinations that differ only in entry, exit and
    stop cost one `simulate` each."""
    log_a, log_b = np.log(bars.close_a), np.log(bars.close_b)
    signals: dict[tuple[object, ...], tuple[FloatArray, FloatArray]] = {}
    out = []
    for done, params in enumerate(grid, 1):
        key = (params.window, params.lookback, params.hedge, params.delta, params.ve)
        if key not in signals:
            beta, _ = hedge_ratios(log_a, log_b, params)
            signals[key] = (zscores(log_a, log_b, beta, params.window), beta)
        z, beta = signals[key]
        trades, curve = simulate(bars, z, beta, params)
        look_ahead = params.hedge == "static"
        out.append((params, summarize(trades, curve, tf_us=tf_us, look_ahead=look_ahead)))
        progress(done, len(grid))
    return sorted(out, key=lambda r: (r[1].sharpe is None, -(r[1].sharpe or 0.0)))
