"""Pair statistics: pure functions on numpy arrays, and the summary they add up to.

Conventions (pinned, and printed in exports):
- the pair series is the two symbols' bars inner-joined on open time, last L of them;
- hedge ratio: OLS of ln(close_a) on ln(close_b) with intercept -> beta, alpha, R²;
- spread = ln(close_a) - beta * ln(close_b) - alpha;
- zscore = (spread - rolling mean over W) / rolling sample std (ddof = 1) over W,
  the window ending at and including the bar;
- corr = rolling Pearson correlation over W of the one-bar log returns of a and b;
- ADF on the spread: statsmodels adfuller(regression="c", autolag="AIC");
- Engle-Granger: statsmodels coint(ln a, ln b), same lag choice; the verdict uses it,
  because ADF's own critical values are too liberal on an estimated residual;
- half-life: OLS of Δspread on the lagged spread with intercept, -ln 2 / slope (none
  when the slope is >= 0: the spread does not revert).
Values that need more bars than there are are NaN (None in summaries), never guessed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

MIN_OLS_BARS = 3
MIN_TEST_BARS = 30  # ADF / Engle-Granger / half-life below this are not reported
CONVENTIONS = (
    "log prices; OLS of ln(a) on ln(b) with intercept; spread = ln a - beta ln b - alpha; "
    "z = (spread - rolling mean W) / rolling sample std W (ddof=1); "
    "corr = rolling Pearson over W of log returns; ADF regression='c', autolag='AIC'; "
    "Engle-Granger coint(ln a, ln b); half-life = -ln2 / slope of Δspread on spread[t-1]"
)


@dataclass(frozen=True, slots=True)
class Fit:
    beta: float
    alpha: float
    r2: float


SIGNIFICANCE = 0.05  # an Engle-Granger p-value below this: cointegrated
Z_ENTRY = 2.0  # |z| this far out on a cointegrated pair: the spread is worth a look


@dataclass(frozen=True, slots=True)
class Cointegration:
    adf_stat: float
    adf_pvalue: float
    adf_lags: int
    adf_crit: dict[str, float]
    eg_stat: float
    eg_pvalue: float
    half_life: float | None  # bars; None when the spread does not revert

    @property
    def verdict(self) -> str:
        if self.eg_pvalue < SIGNIFICANCE:
            return f"cointegrated at {SIGNIFICANCE * 100:g} %"
        return "not cointegrated"


def ols_fit(y: np.ndarray, x: np.ndarray) -> Fit | None:
    """OLS of y on x with intercept; None when x has no variance or too few points."""
    if len(y) < MIN_OLS_BARS or np.ptp(x) == 0:
        return None
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    sxx = float(dx @ dx)
    beta = float(dx @ dy) / sxx
    alpha = float(ym - beta * xm)
    resid = dy - beta * dx
    syy = float(dy @ dy)
    r2 = 1.0 - float(resid @ resid) / syy if syy > 0 else math.nan
    return Fit(beta, alpha, r2)


def spread_of(log_a: np.ndarray, log_b: np.ndarray, fit: Fit) -> np.ndarray:
    return log_a - fit.beta * log_b - fit.alpha


def rolling_mean_std(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling mean and sample std over windows ending at each point (NaN before)."""
    mean = np.full(len(x), np.nan)
    std = np.full(len(x), np.nan)
    if w < 2 or len(x) < w:
        return mean, std
    windows = np.lib.stride_tricks.sliding_window_view(x, w)
    mean[w - 1 :] = windows.mean(axis=1)
    std[w - 1 :] = windows.std(axis=1, ddof=1)
    return mean, std


def rolling_zscore(x: np.ndarray, w: int) -> np.ndarray:
    mean, std = rolling_mean_std(x, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        z: np.ndarray = (x - mean) / std
    z[~np.isfinite(z)] = np.nan  # a flat window has no z-score
    return z


def log_returns(log_price: np.ndarray) -> np.ndarray:
    out = np.full(len(log_price), np.nan)
    out[1:] = np.diff(log_price)
    return out


def rolling_corr(x: np.ndarray, y: np.ndarray, w: int) -> np.ndarray:
    """Pearson correlation over windows of w points ending at each point; NaN inside."""
    out = np.full(len(x), np.nan)
    if w < 2 or len(x) < w:
        return out
    wx = np.lib.stride_tricks.sliding_window_view(x, w)
    wy = np.lib.stride_tricks.sliding_window_view(y, w)
    dx = wx - wx.mean(axis=1, keepdims=True)
    dy = wy - wy.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (dx * dy).sum(axis=1) / np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    corr[~np.isfinite(corr)] = np.nan
    out[w - 1 :] = corr
    return out


def half_life(spread: np.ndarray) -> float | None:
    """Bars for a deviation to halve: OLS of Δs on s[t-1] with intercept."""
    fit = ols_fit(np.diff(spread), spread[:-1])
    if fit is None or not fit.beta < 0:
        return None
    return -math.log(2) / fit.beta


def cointegration(log_a: np.ndarray, log_b: np.ndarray, spread: np.ndarray) -> Cointegration | None:
    """ADF on the spread and Engle-Granger on the log prices (statsmodels)."""
    if len(spread) < MIN_TEST_BARS or np.ptp(spread) == 0 or np.ptp(log_b) == 0:
        return None
    from statsmodels.tsa.stattools import adfuller, coint  # slow import: only when needed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adf = adfuller(spread, regression="c", autolag="AIC")
        eg_stat, eg_pvalue, _ = coint(log_a, log_b, trend="c", autolag="aic")
    stat, pvalue, lags, _, crit, _ = adf
    if not all(math.isfinite(float(x)) for x in (stat, pvalue, eg_stat, eg_pvalue)):
        return None  # e.g. perfectly collinear prices: the tests say nothing
    return Cointegration(
        adf_stat=float(stat),
        adf_pvalue=float(pvalue),
        adf_lags=int(lags),
        adf_crit={k: float(v) for k, v in crit.items()},
        eg_stat=float(eg_stat),
        eg_pvalue=float(eg_pvalue),
        half_life=half_life(spread),
    )


@dataclass(frozen=True, slots=True)
class PairSeries:
    """The analytics of the last L joined bars, one value per bar (NaN where none)."""

    ts_us: np.ndarray
    close_a: np.ndarray
    close_b: np.ndarray
    spread: np.ndarray
    zscore: np.ndarray
    corr: np.ndarray
    fit: Fit | None

    def __len__(self) -> int:
        return len(self.ts_us)


def pair_series(
    ts_us: np.ndarray, close_a: np.ndarray, close_b: np.ndarray, window: int
) -> PairSeries:
    """Fit, spread, z-score and correlation over the given (already joined) bars."""
    log_a, log_b = np.log(close_a), np.log(close_b)
    fit = ols_fit(log_a, log_b)
    nan = np.full(len(ts_us), np.nan)
    spread, z, corr = nan, nan, nan
    if fit is not None:
        spread = spread_of(log_a, log_b, fit)
        if len(ts_us) >= window + 1:
            z = rolling_zscore(spread, window)
            corr = rolling_corr(log_returns(log_a), log_returns(log_b), window)
    return PairSeries(ts_us, close_a, close_b, spread, z, corr, fit)


def collecting_reason(n_bars: int, window: int) -> str | None:
    """What the UI shows while rolling values cannot exist yet."""
    need = window + 1
    return f"collecting: {n_bars} / {need} bars" if n_bars < need else None


@dataclass(frozen=True, slots=True)
class Summary:
    """Every number a researcher quotes about the pair; None where it cannot exist yet."""

    symbol_a: str
    symbol_b: str
    timeframe: str
    window: int
    lookback: int
    n_bars: int
    n_trades: int
    start_us: int | None
    end_us: int | None
    price_a: float | None
    price_b: float | None
    beta: float | None
    alpha: float | None
    r2: float | None
    spread: float | None
    spread_mean: float | None
    spread_std: float | None
    zscore: float | None
    corr: float | None
    adf_stat: float | None
    adf_pvalue: float | None
    adf_lags: int | None
    adf_crit: dict[str, float] | None
    eg_stat: float | None
    eg_pvalue: float | None
    half_life: float | None  # bars
    half_life_seconds: float | None
    verdict: str | None
    reason: str | None  # why values are missing ("collecting: 12 / 21 bars")
    history_bars: int = 0  # bars of the series that hold the exchange's REST history
    tests_start_us: int | None = None  # the closed bars the cointegration tests ran on
    tests_end_us: int | None = None
    tests_n: int = 0

    @property
    def signal(self) -> bool:
        """|z| at least Z_ENTRY on a cointegrated pair: what the scanner highlights."""
        return (
            self.zscore is not None
            and abs(self.zscore) >= Z_ENTRY
            and self.eg_pvalue is not None
            and self.eg_pvalue < SIGNIFICANCE
        )


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarize(
    series: PairSeries,
    tests: Cointegration | None,
    *,
    symbols: tuple[str, str],
    timeframe: str,
    tf_us: int,
    window: int,
    lookback: int,
    n_trades: int,
) -> Summary:
    n = len(series)
    fit = series.fit
    finite = series.spread[np.isfinite(series.spread)]
    hl = tests.half_life if tests else None
    reason = collecting_reason(n, window)
    if reason is None and tests is None and n < MIN_TEST_BARS:
        reason = f"collecting: {n} / {MIN_TEST_BARS} bars for ADF"
    return Summary(
        symbol_a=symbols[0],
        symbol_b=symbols[1],
        timeframe=timeframe,
        window=window,
        lookback=lookback,
        n_bars=n,
        n_trades=n_trades,
        start_us=int(series.ts_us[0]) if n else None,
        end_us=int(series.ts_us[-1]) if n else None,
        price_a=_num(series.close_a[-1]) if n else None,
        price_b=_num(series.close_b[-1]) if n else None,
        beta=_num(fit.beta) if fit else None,
        alpha=_num(fit.alpha) if fit else None,
        r2=_num(fit.r2) if fit else None,
        spread=_num(series.spread[-1]) if n else None,
        spread_mean=_num(finite.mean()) if len(finite) else None,
        spread_std=_num(finite.std(ddof=1)) if len(finite) > 1 else None,
        zscore=_num(series.zscore[-1]) if n else None,
        corr=_num(series.corr[-1]) if n else None,
        adf_stat=tests.adf_stat if tests else None,
        adf_pvalue=tests.adf_pvalue if tests else None,
        adf_lags=tests.adf_lags if tests else None,
        adf_crit=tests.adf_crit if tests else None,
        eg_stat=tests.eg_stat if tests else None,
        eg_pvalue=tests.eg_pvalue if tests else None,
        half_life=hl,
        half_life_seconds=hl * tf_us / 1e6 if hl is not None else None,
        verdict=tests.verdict if tests else None,
        reason=reason,
    )
