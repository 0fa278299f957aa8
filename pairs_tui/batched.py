"""Cointegration tests for many series at once, equal to statsmodels' one-at-a-time tests.

Pure functions, arrays in and arrays out, vectorised with numpy across series (float64):

- `adf_many(x, regression)` = `adfuller(x[i], regression=regression, autolag="AIC")`;
- `coint_many(y, x)` = `coint(y[i], x[i], trend="c", autolag="aic")`;
- `cointegration_many(log_a_list, log_b_list)` = the five numbers (and ADF critical values)
  of `analytics.cointegration`, for pairs of any lengths (grouped by length internally).

The procedure is statsmodels' own (0.14/0.15 `adfuller`):
maxlag = min(ceil(12 (T/100)^(1/4)), T//2 - ntrend - 1); every lag 0..maxlag is fitted by
OLS on the common sample of T - 1 - maxlag rows, the lag with the smallest
AIC = -2 llf + 2 k (llf the profile Gaussian log-likelihood, k the number of regressors;
ties to the smaller lag) is chosen, and the regression is fitted again with that lag on all
T - 1 - lag rows available to it; the statistic is the t-value of the lagged level.
P-values are MacKinnon's (1994) surfaces exactly as `mackinnonp` evaluates them.

How it is batched, per chunk of series (memory bounded by CHUNK_DOUBLES):
- the regressors are shifts of one series, so every Gram matrix needed (any lag, any first
  row) is gathered from O(p T) lagged-product sums per series (`_Sums`), demeaned when the
  regression has a constant (by Frisch-Waugh: the same SSR and t-value);
- one LAPACK Cholesky per series and regression (numpy's, stacked): with L L' the Gram
  matrix of [regressors..., Δx], the SSR of Δx on the first j regressors is the sum of
  the squares of the last row of L from j on, so one factor gives every lag's AIC, and
  with the level as the last regressor the same row gives its t-value;
- the re-fit is done per group of series that chose the same lag;
- a series whose regressors are nearly collinear (1 - R² of one on the others below
  REFINE_TOL, e.g. an explosive series) is redone by Householder QR of its explicit design
  matrices, whose error is that of statsmodels' pinv, not its square.

Degenerate input never raises for the batch: a series that is constant, holds NaN or inf,
is too short, or whose regressions are singular (1 - R² below SINGULAR_TOL, or an exact
fit) gets NaN (lag -1) and the others are unaffected. Where statsmodels answers such
input otherwise (it raises for a constant series; `coint` returns -inf with p-value 0 for
a collinear pair, and a finite value when x is constant) this module answers NaN, as
`analytics.cointegration` answers None. Not matched either: series so short that the
largest lag searched fits exactly (regression "n", even T <= 20), where statsmodels picks
that lag and reports a meaningless 0; here NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from pairs_tui.analytics import MIN_TEST_BARS, Cointegration, half_life

CHUNK_DOUBLES = 1 << 20  # working set of a chunk of series, in float64 (8 MiB)
SQRTEPS = math.sqrt(np.finfo(np.float64).eps)  # statsmodels' collinearity threshold unit
# 1 - R² of a regressor on the earlier ones: below REFINE_TOL the Gram matrix path (error
# ~ eps / ratio) is redone by QR (error ~ eps / sqrt(ratio)); below SINGULAR_TOL, NaN
REFINE_TOL = 1e-8
SINGULAR_TOL = 1e-16
CRIT_LEVELS = ("1%", "5%", "10%")

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
# a regression's factors: (variables in order, first row, series) -> (L, regressor norms²)
Fit = Callable[[Sequence[int], int, np.ndarray], tuple[FloatArray, FloatArray]]


@dataclass(frozen=True, slots=True)
class AdfResult:
    """`adfuller` per series; NaN (lags and nobs -1) where a series has no test."""

    stat: FloatArray  # (n,)
    pvalue: FloatArray  # (n,)
    lags: IntArray  # (n,) the lag chosen by AIC
    nobs: IntArray  # (n,) rows of the final regression
    icbest: FloatArray  # (n,) the smallest AIC of the search
    crit: FloatArray  # (n, 3) critical values at 1 %, 5 %, 10 % (they depend on nobs)
    maxlag: int  # the largest lag searched (-1 when the series are too short)

    def __len__(self) -> int:
        return len(self.stat)

    def critical_values(self, i: int) -> dict[str, float]:
        """Series i's critical values as statsmodels gives them: {"1%": .., "5%": .., ..}."""
        return {k: float(v) for k, v in zip(CRIT_LEVELS, self.crit[i], strict=True)}


@dataclass(frozen=True, slots=True)
class CointResult:
    """`coint(y, x, trend="c")` per pair, with the first-stage OLS y = alpha + beta x."""

    stat: FloatArray  # (n,) the ADF t-value on the residuals (regression "n")
    pvalue: FloatArray  # (n,) mackinnonp(stat, "c", N=2)
    lags: IntArray  # (n,) the lag the residual ADF chose
    crit: FloatArray  # (3,) mackinnoncrit(N=2, "c", nobs=T - 1): the same for every pair
    beta: FloatArray  # (n,)
    alpha: FloatArray  # (n,)

    def __len__(self) -> int:
        return len(self.stat)


# -- MacKinnon's tables, vectorised --------------------------------------------------------
@cache
def _tables() -> Any:
    from statsmodels.tsa import adfvalues  # slow import (pandas, scipy): only when needed

    return adfvalues


def mackinnonp_many(stat: np.ndarray, regression: str = "c", n_series: int = 1) -> FloatArray:
    """`mackinnonp(stat[i], regression, N=n_series)` for every element, bit for bit."""
    from scipy.special import ndtr  # what scipy.stats.norm.cdf evaluates

    t = _tables()
    stat = np.asarray(stat, dtype=np.float64)
    k = n_series - 1
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 at stat = ±inf
        small = _polyval(t._tau_smallps[regression][k][::-1], stat)
        large = _polyval(t._tau_largeps[regression][k][::-1], stat)
        p = np.where(stat <= t._tau_stars[regression][k], ndtr(small), ndtr(large))
        p = np.where(stat > t._tau_maxs[regression][k], 1.0, p)
        p = np.where(stat < t._tau_mins[regression][k], 0.0, p)
    return np.asarray(p, dtype=np.float64)


def _polyval(coef: np.ndarray, x: np.ndarray) -> FloatArray:
    """Horner's rule in numpy.polyval's order of operations (same rounding)."""
    y = np.zeros_like(x)
    for c in coef:
        y = y * x + c
    return y


def _crit(n_series: int, regression: str, nobs: np.ndarray) -> FloatArray:
    """mackinnoncrit per element of nobs (NaN where nobs < 1): one call per distinct nobs."""
    out = np.full((len(nobs), 3), np.nan)
    for m in np.unique(nobs[nobs > 0]):
        out[nobs == m] = _tables().mackinnoncrit(N=n_series, regression=regression, nobs=m)
    return out


# -- the ADF regressions, batched ------------------------------------------------------------
def default_maxlag(n_obs: int, regression: str = "c") -> int:
    """adfuller's maxlag for a series of n_obs points (negative: too short for the test)."""
    ntrend = 0 if regression == "n" else len(regression)
    return min(n_obs // 2 - ntrend - 1, math.ceil(12.0 * math.pow(n_obs / 100.0, 0.25)))


def _nested(lower: np.ndarray, diag: np.ndarray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Nested least squares from the lower triangular factor L of [regressors 1..k, y]
    (L L' their Gram matrix, L' the R of their QR), stacked over series.

    Returns ssr (n, k+1), ssr[:, j] the residual sum of squares of y on the first j
    regressors; proj (n, k), proj[:, j] = (Q'y)_j, so that the t-value of the last
    regressor of a regression on regressors 1..j+1 is proj[:, j] / s; and ratio (n, k), the
    share of regressor j's squared norm that the earlier ones leave (1 - R²_j; NaN when
    the factorisation failed), which says how far the numbers can be trusted.
    """
    k = lower.shape[1] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.diagonal(lower, axis1=1, axis2=2)[:, :k] ** 2 / diag
    proj = lower[:, k, :k]
    terms = lower[:, k, :] ** 2
    ssr = np.cumsum(terms[:, ::-1], axis=1)[:, ::-1]  # ssr[:, j] = terms j..k
    return ssr, np.asarray(proj, dtype=np.float64), np.asarray(ratio, dtype=np.float64)


def _lower_gram(gram: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Cholesky factors of a stack of Gram matrices, and their regressors' squared norms."""
    diag = np.diagonal(gram, axis1=1, axis2=2)[:, :-1].copy()
    try:
        return np.linalg.cholesky(gram), diag
    except np.linalg.LinAlgError:  # a singular series in the stack: the slow, tolerant way
        return _cholesky_tolerant(gram), diag


def _cholesky_tolerant(gram: np.ndarray) -> FloatArray:
    """Lower Cholesky factors of a stack, vectorised; NaN from a non-positive pivot on."""
    a = gram.copy()
    size = a.shape[1]
    lower = np.zeros_like(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(size):
            r = np.sqrt(np.where(a[:, j, j] > 0, a[:, j, j], np.nan))
            col = a[:, j:, j] / r[:, None]
            lower[:, j:, j] = col
            a[:, j + 1 :, j + 1 :] -= col[:, 1:, None] * col[:, None, 1:]
    return lower


def _lower_qr(z: np.ndarray, demean: bool) -> tuple[FloatArray, FloatArray]:
    """L = R' of the QR of a stack of designs (n, rows, k+1) [regressors..., y] (Householder:
    the precision of statsmodels' pinv, unlike a Gram matrix), and the squared norms."""
    if demean:
        z = z - z.mean(axis=1, keepdims=True)
    n, m, size = z.shape
    diag = np.einsum("ijk,ijk->ik", z[:, :, :-1], z[:, :, :-1])
    if m < size:  # no more rows than columns: an exact fit, no test
        return np.full((n, size, size), np.nan), diag
    r = np.asarray(np.linalg.qr(z, mode="r"))
    sign = np.where(np.diagonal(r, axis1=1, axis2=2) < 0, -1.0, 1.0)
    return np.asarray((r * sign[:, :, None]).transpose(0, 2, 1), dtype=np.float64), diag


def _aic(ssr: np.ndarray, nobs: int, k: np.ndarray) -> FloatArray:
    """statsmodels' OLS aic: -2 llf + 2 (df_model + k_constant), llf the profile one."""
    nobs2 = nobs / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        llf = -nobs2 * np.log(2 * np.pi) - nobs2 * np.log(ssr / nobs) - nobs2
    return np.asarray(-2.0 * llf + 2.0 * k, dtype=np.float64)


class _Sums:
    """Every sum the ADF Gram matrices need, for lags 0..p of one chunk of n series.

    The regressors are shifts of one series, so each Gram entry is a sum over a window of
    one of a few lagged products, the rows r (zero past the end of the series):
    P_h[s] = Δx[s+h] Δx[s] (h = 0..p), Q_j[s] = x[s+j] Δx[s] (j = 0..p), Δx, x and x²,
    s = 0..T-2. A window sum is the row's total less a head and a tail of at most p terms:
    as precise as summing the window, at O(p T) a series instead of the O(p² T) of
    multiplying out the design matrix. Arrays are (.., rows, n): series innermost.
    """

    def __init__(self, x: np.ndarray, d: np.ndarray, p: int) -> None:
        n, t1 = d.shape
        self.p, self.t1 = p, t1
        self.rows = 2 * p + 5
        total = np.empty((self.rows, n))
        for h in range(p + 1):
            total[h] = np.einsum("ij,ij->i", d[:, h:], d[:, : t1 - h])
            total[p + 1 + h] = np.einsum("ij,ij->i", x[:, h:t1], d[:, : t1 - h])
        total[2 * p + 2] = d.sum(axis=1)
        total[2 * p + 3] = x[:, :t1].sum(axis=1)
        total[2 * p + 4] = np.einsum("ij,ij->i", x[:, :t1], x[:, :t1])
        self.total = total
        xt, dt = np.ascontiguousarray(x[:, :t1].T), np.ascontiguousarray(d.T)
        self.head = np.zeros((p + 1, self.rows, n))  # head[k]: the sum of the first k terms
        np.cumsum(self._terms(xt, dt, np.arange(p)), axis=0, out=self.head[1:])
        self.tail = np.zeros((p + 1, self.rows, n))  # tail[k]: the sum of the last k terms
        np.cumsum(self._terms(xt, dt, t1 - 1 - np.arange(p)), axis=0, out=self.tail[1:])

    def _terms(self, xt: np.ndarray, dt: np.ndarray, s: np.ndarray) -> FloatArray:
        """The rows' terms at positions s: (len(s), rows, n), from x and Δx as (T-1, n)."""
        idx = s[:, None] + np.arange(self.p + 1)[None, :]  # s + h
        past = (idx > self.t1 - 1)[:, :, None]
        idx = np.minimum(idx, self.t1 - 1)
        ds, xs = dt[s][:, None, :], xt[s][:, None, :]
        prod = np.where(past, 0.0, dt[idx] * ds)
        cross = np.where(past, 0.0, xt[idx] * ds)
        return np.concatenate([prod, cross, ds, xs, xs * xs], axis=1)

    def _codes(self, a: int, b: int) -> tuple[int, int]:
        """(row, lag) of the Gram entry of variables a, b: 0..p the lags of Δx, p+1 x."""
        p = self.p
        if a > b:
            a, b = b, a
        if b <= p:  # Δx[t-a] Δx[t-b] = P_(b-a)[t-b]
            return b - a, b
        if a <= p:  # x[t] Δx[t-a] = Q_a[t-a]
            return p + 1 + a, a
        return 2 * p + 4, 0  # x[t]²

    def gram(self, order: Sequence[int], start: int, demean: bool, sel: np.ndarray) -> FloatArray:
        """The Gram matrices (len(sel), k, k) of the variables in `order` over rows
        t = start..T-2 of the series sel; demeaned: of the variables less their means."""
        codes = np.array([[self._codes(a, b) for b in order] for a in order])
        g = self._window(codes[..., 0], codes[..., 1], start, sel)
        if demean:
            p = self.p
            row = np.array([2 * p + 2 if a <= p else 2 * p + 3 for a in order])
            lag = np.array([a if a <= p else 0 for a in order])
            s = self._window(row, lag, start, sel)
            g -= s[:, :, None] * s[:, None, :] / (self.t1 - start)
        return g

    def _window(self, row: np.ndarray, lag: np.ndarray, start: int, sel: np.ndarray) -> FloatArray:
        """Row's terms summed over s = start - lag .. T - 2 - lag, series innermost last."""
        r, lg, i = row[..., None], lag[..., None], sel
        out = self.total[r, i] - self.head[start - lg, r, i] - self.tail[lg, r, i]
        return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def _design(
    x: np.ndarray, d: np.ndarray, order: Sequence[int], start: int, level: int
) -> FloatArray:
    """The design (n, T - 1 - start, k) of the variables in `order` (code `level` for x,
    j for Δx lagged j) over rows t = start..T-2, as adfuller's lagmat(trim="both")."""
    t1 = d.shape[1]
    z = np.empty((x.shape[0], t1 - start, len(order)))
    for col, code in enumerate(order):
        z[:, :, col] = x[:, start:t1] if code == level else d[:, start - code : t1 - code]
    return z


def adf_many(x: np.ndarray, regression: str = "c") -> AdfResult:
    """`adfuller(x[i], regression=regression, autolag="AIC")` for every row of x (n, T)."""
    if regression not in ("c", "n"):
        raise ValueError(f"regression must be 'c' or 'n', not {regression!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_series, T), not {x.ndim}-D")
    n, t = x.shape
    stat, icbest = np.full(n, np.nan), np.full(n, np.nan)
    lags, nobs = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    maxlag = default_maxlag(t, regression)
    if maxlag < 0 or n == 0:
        return AdfResult(stat, np.full(n, np.nan), lags, nobs, icbest, np.full((n, 3), np.nan), -1)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(x).all(axis=1) & (np.ptp(x, axis=1) > 0)  # constant: sm raises
    idx = np.flatnonzero(good)
    per_series = 4 * t + 6 * (2 * maxlag + 5) * (maxlag + 1)  # x, Δx, sums, Gram
    step = max(1, CHUNK_DOUBLES // per_series)
    for lo in range(0, len(idx), step):
        rows = idx[lo : lo + step]
        s, lag, ic = _adf_chunk(x[rows], regression, maxlag)
        stat[rows], lags[rows], icbest[rows] = s, lag, ic
    ok = lags >= 0
    nobs[ok] = t - 1 - lags[ok]
    pvalue = mackinnonp_many(stat, regression, 1)
    return AdfResult(stat, pvalue, lags, nobs, icbest, _crit(1, regression, nobs), maxlag)


def _adf_chunk(
    x: np.ndarray, regression: str, maxlag: int
) -> tuple[FloatArray, IntArray, FloatArray]:
    """adfuller on the rows of x (finite, not constant): stat, lag (-1: none), icbest."""
    p = maxlag
    ntrend = 0 if regression == "n" else 1
    demean = ntrend == 1
    if demean:  # the test is invariant to a shift of x: keep the level column well scaled
        x = x - x.mean(axis=1, keepdims=True)
    d = np.diff(x, axis=1)
    sums = _Sums(x, d, p)

    def by_gram(order: Sequence[int], start: int, sel: np.ndarray) -> tuple[FloatArray, FloatArray]:
        return _lower_gram(sums.gram(order, start, demean, sel))

    stat, best, icbest, ratio = _adf_procedure(by_gram, x.shape[0], x.shape[1], p, ntrend)
    redo = np.flatnonzero(~(ratio >= REFINE_TOL))  # NaN: the Cholesky failed
    if len(redo):  # near-collinear regressors: the Gram matrix squares the error, QR does not
        xr, dr = x[redo], d[redo]

        def by_qr(
            order: Sequence[int], start: int, sel: np.ndarray
        ) -> tuple[FloatArray, FloatArray]:
            return _lower_qr(_design(xr[sel], dr[sel], [*order], start, p + 1), demean)

        s2, b2, ic2, r2 = _adf_procedure(by_qr, len(redo), x.shape[1], p, ntrend)
        singular = ~(r2 >= SINGULAR_TOL)
        stat[redo] = np.where(singular, np.nan, s2)
        best[redo] = np.where(singular, -1, b2)
        icbest[redo] = np.where(singular, np.nan, ic2)
    best = np.where(np.isfinite(stat), best, -1)
    return stat, best, np.where(best >= 0, icbest, np.nan)


def _adf_procedure(
    fit: Fit, n: int, t: int, p: int, ntrend: int
) -> tuple[FloatArray, IntArray, FloatArray, FloatArray]:
    """adfuller's autolag="AIC" steps, with `fit` giving the factors of any regression.

    Variables: j = 1..p the lags of Δx, p + 1 the level, 0 Δx (the regressand, last).
    Returns stat, lag (-1: none), icbest, and the smallest regressor ratio met (the
    conditioning: NaN when a factorisation failed).
    """
    everyone = np.arange(n)
    # the search: [level, lags 1..p] on the common sample of T - 1 - p rows
    ssr, _, ratio = _nested(*fit([p + 1, *range(1, p + 1), 0], p, everyone))
    aic = _aic(ssr[:, 1:], t - 1 - p, np.arange(1, p + 2) + ntrend)
    usable = np.asarray(np.isfinite(aic).all(axis=1))
    best = np.where(usable, np.argmin(np.where(usable[:, None], aic, 0.0), axis=1), -1)
    icbest = np.where(usable, aic[everyone, np.maximum(best, 0)], np.nan)
    worst = ratio.min(axis=1)
    # the re-fit with the chosen lag q on all its T - 1 - q rows: [lags 1..q, level]
    stat = np.full(n, np.nan)
    for q in np.unique(best[usable]).tolist():
        sel = np.flatnonzero(best == q)
        ssr, proj, ratio = _nested(*fit([*range(1, q + 1), p + 1, 0], q, sel))
        df = t - 1 - q - (q + 1 + ntrend)
        with np.errstate(invalid="ignore", divide="ignore"):
            stat[sel] = proj[:, -1] / np.sqrt(ssr[:, -1] / df)
        worst[sel] = np.minimum(worst[sel], ratio.min(axis=1))
    return stat, best.astype(np.int64), icbest, worst


# -- Engle-Granger ------------------------------------------------------------------------
def ols_many(y: np.ndarray, x: np.ndarray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per row, OLS of y on [1, x]: (beta, alpha, r2), as analytics.ols_fit (NaN if ptp x=0)."""
    xm, ym = x.mean(axis=1), y.mean(axis=1)
    dx, dy = x - xm[:, None], y - ym[:, None]
    sxx = np.einsum("ij,ij->i", dx, dx)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.einsum("ij,ij->i", dx, dy) / np.where(np.ptp(x, axis=1) > 0, sxx, np.nan)
        resid = dy - beta[:, None] * dx
        r2 = 1.0 - np.einsum("ij,ij->i", resid, resid) / np.einsum("ij,ij->i", dy, dy)
    return beta, ym - beta * xm, r2


def coint_many(y: np.ndarray, x: np.ndarray) -> CointResult:
    """`coint(y[i], x[i], trend="c", autolag="aic")` for every row of y and x (n, T)."""
    return _coint(y, x)[0]


def _coint(y: np.ndarray, x: np.ndarray) -> tuple[CointResult, FloatArray]:
    """coint_many, and the residuals y - beta x - alpha (analytics.spread_of)."""
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    if y.shape != x.shape or y.ndim != 2:
        raise ValueError(f"y and x must be 2-D of one shape, not {y.shape} and {x.shape}")
    t = y.shape[1]
    with np.errstate(invalid="ignore"):
        beta, alpha, r2 = ols_many(y, x)
        # statsmodels: no test when R² >= 1 - 100 sqrt(eps) (it says -inf, p 0); NaN here
        testable = r2 < 1 - 100 * SQRTEPS
    resid = y - beta[:, None] * x - alpha[:, None]
    adf = adf_many(np.where(testable[:, None], resid, np.nan), regression="n")
    crit = np.full(3, np.nan)
    if t >= 2:
        crit = np.asarray(_tables().mackinnoncrit(N=2, regression="c", nobs=t - 1), np.float64)
    pvalue = mackinnonp_many(adf.stat, "c", 2)
    return CointResult(adf.stat, pvalue, adf.lags, crit, beta, alpha), resid


def cointegration_many(
    log_a_list: Sequence[np.ndarray], log_b_list: Sequence[np.ndarray]
) -> list[Cointegration | None]:
    """`analytics.cointegration` for many pairs of log-price series, of any lengths.

    Pair i is log_a_list[i] against log_b_list[i] (equal lengths within a pair). Its ADF
    is on the OLS spread (regression "c"), its Engle-Granger is coint(log a, log b). None
    where analytics says None: fewer than MIN_TEST_BARS bars, a flat spread or flat b, a
    non-finite statistic (collinear, NaN input).
    """
    if len(log_a_list) != len(log_b_list):
        raise ValueError("log_a_list and log_b_list must hold the same number of series")
    out: list[Cointegration | None] = [None] * len(log_a_list)
    groups: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(zip(log_a_list, log_b_list, strict=True)):
        if len(a) != len(b):
            raise ValueError(f"pair {i}: series of lengths {len(a)} and {len(b)}")
        if len(a) >= MIN_TEST_BARS:
            groups.setdefault(len(a), []).append(i)
    for t, members in groups.items():
        step = max(1, CHUNK_DOUBLES // (4 * t))
        for lo in range(0, len(members), step):
            part = members[lo : lo + step]
            a = np.array([log_a_list[i] for i in part], dtype=np.float64).reshape(len(part), t)
            b = np.array([log_b_list[i] for i in part], dtype=np.float64).reshape(len(part), t)
            for i, result in zip(part, _cointegration_block(a, b), strict=True):
                out[i] = result
    return out


def _cointegration_block(a: np.ndarray, b: np.ndarray) -> list[Cointegration | None]:
    eg, spread = _coint(a, b)
    adf = adf_many(spread, regression="c")
    with np.errstate(invalid="ignore"):
        flat = np.asarray(~(np.ptp(spread, axis=1) > 0) | ~(np.ptp(b, axis=1) > 0))
    finite = np.asarray(np.isfinite([adf.stat, adf.pvalue, eg.stat, eg.pvalue]).all(axis=0))
    return [
        None
        if flat[i] or not finite[i]
        else Cointegration(
            adf_stat=float(adf.stat[i]),
            adf_pvalue=float(adf.pvalue[i]),
            adf_lags=int(adf.lags[i]),
            adf_crit=adf.critical_values(i),
            eg_stat=float(eg.stat[i]),
            eg_pvalue=float(eg.pvalue[i]),
            half_life=half_life(spread[i]),
        )
        for i in range(len(a))
    ]
