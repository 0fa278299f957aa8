"""Pair statistics against statsmodels and pandas on the same bars (1e-9 relative)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.tsa.stattools import adfuller, coint

from pairs_tui.analytics import (
    MIN_TEST_BARS,
    cointegration,
    half_life,
    ols_fit,
    pair_series,
)
from pairs_tui.feed.demo import SyntheticMarket

pytestmark = pytest.mark.unit

REL = 1e-9


def demo_closes(seed: int, seconds: int = 700) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    market = SyntheticMarket(seed=seed, rate=20, start_ms=1_735_689_600_000)  # a fixed tape
    market.add("BTCUSDT")
    market.add("ETHUSDT")
    closes: dict[str, dict[int, float]] = {"BTCUSDT": {}, "ETHUSDT": {}}
    for t in market.advance_to(seconds):
        closes[t.symbol][(t.time_ms - market.start_ms) // 1000 * 1_000_000] = float(t.price)
    ts = np.array(sorted(set(closes["BTCUSDT"]) & set(closes["ETHUSDT"])), dtype=np.int64)
    a = np.array([closes["BTCUSDT"][t] for t in ts])
    b = np.array([closes["ETHUSDT"][t] for t in ts])
    return ts[-600:], a[-600:], b[-600:]


def close(x, y):
    return np.testing.assert_allclose(x, y, rtol=REL, atol=0)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("window", [2, 20, 60])
def test_series_match_statsmodels_and_pandas(seed, window):
    ts, a, b = demo_closes(seed)
    s = pair_series(ts, a, b, window)
    la, lb = np.log(a), np.log(b)
    ols = sm.OLS(la, sm.add_constant(lb)).fit()
    close(s.fit.beta, ols.params[1])
    close(s.fit.alpha, ols.params[0])
    close(s.fit.r2, ols.rsquared)
    # the spread is a difference of numbers near ln(price) ~ 10: compare on that scale
    np.testing.assert_allclose(s.spread, ols.resid, rtol=0, atol=REL * np.abs(la).max())
    spread = pd.Series(s.spread)  # the rolling maths, checked on the very same spread
    z = (spread - spread.rolling(window).mean()) / spread.rolling(window).std(ddof=1)
    ok = np.isfinite(z.to_numpy())
    assert (np.isfinite(s.zscore) == ok).all()
    close(s.zscore[ok], z.to_numpy()[ok])
    ra, rb = pd.Series(la).diff(), pd.Series(lb).diff()
    corr = ra.rolling(window).corr(rb).to_numpy()
    ok = np.isfinite(corr)
    assert (np.isfinite(s.corr) == ok).all() and ok.sum() == len(a) - window
    close(s.corr[ok], corr[ok])


@pytest.mark.parametrize("seed", [1, 3])
def test_cointegration_matches_statsmodels(seed):
    ts, a, b = demo_closes(seed)
    s = pair_series(ts, a, b, 20)
    la, lb = np.log(a), np.log(b)
    got = cointegration(la, lb, s.spread)
    stat, pvalue, lags, _, crit, _ = adfuller(s.spread, regression="c", autolag="AIC")
    close(got.adf_stat, stat)
    close(got.adf_pvalue, pvalue)
    assert got.adf_lags == lags
    assert got.adf_crit == pytest.approx(crit, rel=REL)
    eg_stat, eg_p, _ = coint(la, lb)
    close(got.eg_stat, eg_stat)
    close(got.eg_pvalue, eg_p)
    assert got.verdict == ("cointegrated at 5 %" if eg_p < 0.05 else "not cointegrated")
    assert got.verdict == "cointegrated at 5 %"  # the demo market is built cointegrated
    ds = np.diff(s.spread)
    hl_fit = sm.OLS(ds, sm.add_constant(s.spread[:-1])).fit()
    close(got.half_life, -math.log(2) / hl_fit.params[1])


def test_half_life_is_none_when_the_spread_does_not_revert():
    trend = np.linspace(0, 1, 200) ** 2  # drifts away: slope >= 0
    assert half_life(trend) is None
    assert half_life(np.cumsum(np.ones(50))) is None


def test_constant_series_give_no_fake_values():
    ts = np.arange(100, dtype=np.int64)
    flat = np.full(100, 50_000.0)
    s = pair_series(ts, flat * 1.0, flat * 0.05, 20)
    assert s.fit is None and np.isnan(s.spread).all() and np.isnan(s.zscore).all()
    assert cointegration(np.log(flat), np.log(flat), np.zeros(100)) is None
    assert ols_fit(np.ones(5), np.ones(5)) is None
    # a flat window inside a moving series has no z-score, not an infinite one
    a = np.r_[np.linspace(100, 110, 50), np.full(30, 110.0)]
    b = np.r_[np.linspace(50, 55, 50), np.full(30, 55.0)]
    z = pair_series(np.arange(80), a, b, 10).zscore
    assert not np.isinf(z).any() and np.isnan(z[-5:]).all()


def test_short_series_and_window_larger_than_the_data():
    ts, a, b = demo_closes(4)
    s = pair_series(ts[:20], a[:20], b[:20], 20)  # fewer than W + 1 bars
    assert s.fit is not None and np.isnan(s.zscore).all() and np.isnan(s.corr).all()
    s = pair_series(ts[:21], a[:21], b[:21], 20)  # exactly W + 1
    assert np.isfinite(s.zscore[-2:]).all() and np.isfinite(s.corr[-1])
    s = pair_series(ts[:10], a[:10], b[:10], 50)  # W > L
    assert np.isnan(s.zscore).all()
    assert (
        cointegration(
            np.log(a[: MIN_TEST_BARS - 1]),
            np.log(b[: MIN_TEST_BARS - 1]),
            s.spread[: MIN_TEST_BARS - 1],
        )
        is None
    )
    assert pair_series(ts[:2], a[:2], b[:2], 2).fit is None


def test_collinear_prices_give_no_test_result_rather_than_infinities():
    b = np.log(np.linspace(100, 120, 200) + np.sin(np.arange(200)))
    a = 2.0 * b + 1.0  # a is an exact function of b: the residual is all rounding
    s = pair_series(np.arange(200), np.exp(a), np.exp(b), 20)
    assert cointegration(a, b, s.spread) is None
