"""Batched ADF / Engle-Granger against statsmodels, series by series (1e-6, same lags)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.stattools import adfuller, coint

import pairs_tui.batched as batched
from pairs_tui.analytics import cointegration, ols_fit, spread_of
from pairs_tui.batched import (
    adf_many,
    coint_many,
    cointegration_many,
    default_maxlag,
    mackinnonp_many,
)

pytestmark = pytest.mark.unit

RTOL, ATOL = 1e-6, 1e-10  # atol: p-values far out in a tail are ~0 on both sides
LENGTHS = (30, 31, 100, 600, 1000)


def sm_adf(x: np.ndarray, regression: str) -> tuple[float, float, int, int, dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stat, pvalue, lags, nobs, crit, _ = adfuller(x, regression=regression, autolag="AIC")
    return stat, pvalue, lags, nobs, crit


def sm_coint(y: np.ndarray, x: np.ndarray) -> tuple[float, float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stat, pvalue, crit = coint(y, x, trend="c", autolag="aic")
    return stat, pvalue, crit


def ar(rng: np.random.Generator, n: int, t: int, phi: list[float]) -> np.ndarray:
    e = rng.standard_normal((n, t))
    x = np.zeros((n, t))
    for i in range(t):
        x[:, i] = e[:, i] + sum(c * x[:, i - k - 1] for k, c in enumerate(phi) if i > k)
    return x


def series(t: int) -> np.ndarray:
    """Random walks (with a level), AR(1) and AR(3) series, and an I(1) with AR(2) steps."""
    rng = np.random.default_rng(t)
    return np.vstack(
        [
            4.6 + np.cumsum(rng.standard_normal((3, t)) * 0.01, axis=1),
            ar(rng, 3, t, [0.6]),
            ar(rng, 3, t, [0.5, -0.3, 0.2]),
            np.cumsum(ar(rng, 3, t, [0.4, 0.3]), axis=1),
        ]
    )


def market(n_symbols: int, t: int, seed: int) -> np.ndarray:
    """Log prices: a common random walk, loadings, OU spreads and some idiosyncratic drift."""
    rng = np.random.default_rng(seed)
    common = np.cumsum(rng.standard_normal(t)) * 1e-3
    loading = rng.uniform(0.5, 1.5, (n_symbols, 1))
    theta = rng.uniform(0.02, 0.3, (n_symbols, 1))
    ou = np.zeros((n_symbols, t))
    shocks = rng.standard_normal((n_symbols, t)) * 5e-4
    for i in range(1, t):
        ou[:, i] = (1 - theta[:, 0]) * ou[:, i - 1] + shocks[:, i]
    wander = np.cumsum(rng.standard_normal((n_symbols, t)) * 3e-4, axis=1)
    wander *= rng.random((n_symbols, 1)) < 0.5  # half the symbols are cointegrated
    level = np.log(rng.uniform(0.05, 1e5, (n_symbols, 1)))
    return level + loading * common + ou + wander


def close(ours: float, ref: float) -> bool:
    return math.isclose(ours, ref, rel_tol=RTOL, abs_tol=ATOL)


@pytest.mark.parametrize("t", LENGTHS)
@pytest.mark.parametrize("regression", ["c", "n"])
def test_adf_many_equals_adfuller(t: int, regression: str) -> None:
    x = series(t)
    result = adf_many(x, regression)
    assert result.maxlag == default_maxlag(t, regression)
    for i, row in enumerate(x):
        stat, pvalue, lags, nobs, crit = sm_adf(row, regression)
        assert int(result.lags[i]) == lags, i
        assert int(result.nobs[i]) == nobs
        assert close(result.stat[i], stat), (i, result.stat[i], stat)
        assert close(result.pvalue[i], pvalue), (i, result.pvalue[i], pvalue)
        assert result.critical_values(i) == crit  # the same table, the same nobs


@pytest.mark.parametrize("t", LENGTHS)
def test_coint_many_equals_coint(t: int) -> None:
    rng = np.random.default_rng(100 + t)
    x = 3.0 + np.cumsum(rng.standard_normal((6, t)) * 0.01, axis=1)
    noise = np.vstack([ar(rng, 3, t, [0.7]), np.cumsum(rng.standard_normal((3, t)), 1)])
    y = 1.0 + rng.uniform(0.5, 2.0, (6, 1)) * x + noise * 0.003  # cointegrated, then not
    result = coint_many(y, x)
    for i in range(len(y)):
        stat, pvalue, crit = sm_coint(y[i], x[i])
        assert close(result.stat[i], stat), (i, result.stat[i], stat)
        assert close(result.pvalue[i], pvalue), (i, result.pvalue[i], pvalue)
        assert np.array_equal(result.crit, crit)
        fit = ols_fit(y[i], x[i])
        assert fit is not None
        assert math.isclose(result.beta[i], fit.beta, rel_tol=1e-12)
        assert math.isclose(result.alpha[i], fit.alpha, rel_tol=1e-12)


def test_market_pairs_equal_analytics_cointegration() -> None:
    logs = market(7, 600, seed=11)
    pairs = list(itertools.combinations(range(len(logs)), 2))
    results = cointegration_many([logs[i] for i, _ in pairs], [logs[j] for _, j in pairs])
    verdicts = set()
    for (i, j), ours in zip(pairs, results, strict=True):
        fit = ols_fit(logs[i], logs[j])
        assert fit is not None
        ref = cointegration(logs[i], logs[j], spread_of(logs[i], logs[j], fit))
        assert ref is not None and ours is not None
        assert ours.adf_lags == ref.adf_lags
        assert ours.adf_crit == ref.adf_crit
        for name in ("adf_stat", "adf_pvalue", "eg_stat", "eg_pvalue"):
            assert close(getattr(ours, name), getattr(ref, name)), (i, j, name)
        verdicts.add(ours.verdict)
        assert ours.verdict == ref.verdict
    assert verdicts == {"cointegrated at 5 %", "not cointegrated"}  # both kinds were met


def test_pairs_of_many_lengths_are_grouped_and_answered_in_order() -> None:
    logs = market(4, 700, seed=5)
    cut = [700, 30, 29, 245, 700, 31]  # 29: below the minimum, no test
    pairs = [(0, 1), (1, 2), (2, 3), (0, 3), (3, 1), (2, 0)]
    a = [logs[i][-n:] for (i, _), n in zip(pairs, cut, strict=True)]
    b = [logs[j][-n:] for (_, j), n in zip(pairs, cut, strict=True)]
    results = cointegration_many(a, b)
    assert results[2] is None
    for k, ours in enumerate(results):
        if k == 2:
            continue
        fit = ols_fit(a[k], b[k])
        assert fit is not None and ours is not None
        ref = cointegration(a[k], b[k], spread_of(a[k], b[k], fit))
        assert ref is not None
        assert (ours.adf_lags, ours.adf_crit) == (ref.adf_lags, ref.adf_crit)
        assert close(ours.adf_stat, ref.adf_stat) and close(ours.eg_stat, ref.eg_stat)
        assert close(ours.adf_pvalue, ref.adf_pvalue) and close(ours.eg_pvalue, ref.eg_pvalue)
    with pytest.raises(ValueError, match="lengths"):
        cointegration_many([a[0]], [b[0][1:]])


def test_degenerate_series_are_nan_and_spare_the_others() -> None:
    t = 200
    good = series(t)[:3]
    x = np.vstack([good[0], np.full(t, 4.2), good[1], good[2]])
    x[2, 50] = np.nan
    x[3, 7] = np.inf
    for regression in ("c", "n"):
        result = adf_many(x, regression)  # statsmodels raises on the constant series
        assert np.isnan(result.stat[1:]).all() and np.isnan(result.pvalue[1:]).all()
        assert (result.lags[1:] == -1).all() and (result.nobs[1:] == -1).all()
        assert np.isnan(result.crit[1:]).all()
        stat, pvalue, lags, *_ = sm_adf(good[0], regression)
        assert (close(result.stat[0], stat), close(result.pvalue[0], pvalue)) == (True, True)
        assert result.lags[0] == lags
    too_short = adf_many(good[:, :3], "c")
    assert np.isnan(too_short.stat).all() and too_short.maxlag == -1
    assert len(adf_many(np.empty((0, t)))) == 0


def test_collinear_and_flat_pairs_are_nan_in_coint_and_none_in_the_scan() -> None:
    t = 300
    rng = np.random.default_rng(2)
    b = 2.0 + np.cumsum(rng.standard_normal(t) * 0.01)
    a_ok = 0.5 + 1.3 * b + ar(rng, 1, t, [0.5])[0] * 0.002
    y = np.vstack([a_ok, 3.0 * b - 1.0, a_ok, np.full(t, 1.5), a_ok])
    x = np.vstack([b, b, np.full(t, 2.0), b, np.where(np.arange(t) == 9, np.nan, b)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert coint(y[1], x[1])[0] == -np.inf  # statsmodels' word for collinear
    result = coint_many(y, x)
    assert np.isnan(result.stat[1:]).all() and np.isnan(result.pvalue[1:]).all()
    assert (result.lags[1:] == -1).all()
    stat, pvalue, _ = sm_coint(y[0], x[0])
    assert close(result.stat[0], stat) and close(result.pvalue[0], pvalue)
    scan = cointegration_many(list(y), list(x))
    assert scan[0] is not None and scan[1:] == [None] * 4
    for k in range(1, 4):  # analytics.cointegration says None for the same pairs
        fit = ols_fit(y[k], x[k])
        assert fit is None or cointegration(y[k], x[k], spread_of(y[k], x[k], fit)) is None


def test_near_collinear_regressors_take_the_qr_path_and_still_match(monkeypatch) -> None:
    """Explosive series: the lagged level explains the lagged steps almost exactly, the Gram
    matrix would lose half the digits, and the batch redoes those series by QR."""
    rng = np.random.default_rng(3)
    x = ar(rng, 3, 200, [1.1])
    spy: list[int] = []
    real = batched._lower_qr

    def counting(z: np.ndarray, demean: bool) -> tuple[np.ndarray, np.ndarray]:
        spy.append(len(z))
        return real(z, demean)

    monkeypatch.setattr(batched, "_lower_qr", counting)
    for regression in ("c", "n"):
        spy.clear()
        result = adf_many(x, regression)
        assert sum(spy) >= len(x)
        for i, row in enumerate(x):
            stat, pvalue, lags, *_ = sm_adf(row, regression)
            assert result.lags[i] == lags and close(result.stat[i], stat)
            assert close(result.pvalue[i], pvalue)


def test_chunking_does_not_change_the_numbers(monkeypatch) -> None:
    x = series(100)
    whole = adf_many(x, "c")
    monkeypatch.setattr(batched, "CHUNK_DOUBLES", 1)  # one series a chunk
    parts = adf_many(x, "c")
    assert np.array_equal(whole.lags, parts.lags)
    np.testing.assert_allclose(parts.stat, whole.stat, rtol=1e-12)


def test_mackinnonp_many_is_mackinnonp_bit_for_bit() -> None:
    grid = np.concatenate([np.linspace(-30, 5, 3501), [-np.inf, np.inf, np.nan]])
    for regression, n in (("c", 1), ("n", 1), ("c", 2)):
        ours = mackinnonp_many(grid, regression, n)
        with np.errstate(invalid="ignore"):  # statsmodels' polyval at ±inf
            ref = np.array([mackinnonp(s, regression=regression, N=n) for s in grid])
        assert np.array_equal(ours, ref, equal_nan=True), regression
