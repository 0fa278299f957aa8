"""Backtest maths: hedges and z-scores against per-bar loops, trades against a hand-worked tape."""

from __future__ import annotations

import math
import statistics
from dataclasses import astuple

import numpy as np
import pytest
import statsmodels.api as sm

from pairs_tui.analytics import pair_series
from pairs_tui.backtest import (
    BacktestParams,
    PairBars,
    Trade,
    backtest,
    hedge_now,
    kalman_hedge,
    rolling_hedge,
    simulate,
    static_hedge,
    summarize,
    too_few_bars,
    zscores,
)

pytestmark = pytest.mark.unit

REL = 1e-9
HOUR_US = 3_600_000_000
T0 = 1_735_689_600_000_000  # 2025-01-01 00:00 UTC


def cointegrated_logs(n: int, seed: int, beta: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """ln b a random walk near ln 3000; ln a = beta ln b + 2 + an AR(1) spread."""
    rng = np.random.default_rng(seed)
    log_b = math.log(3000) + np.cumsum(rng.normal(0, 0.01, n))
    spread = np.zeros(n)
    for t in range(1, n):
        spread[t] = 0.9 * spread[t - 1] + rng.normal(0, 0.002)
    return beta * log_b + 2.0 + spread, log_b


def bars_of(log_a: np.ndarray, log_b: np.ndarray) -> PairBars:
    n = len(log_a)
    a, b = np.exp(log_a), np.exp(log_b)
    ts = T0 + HOUR_US * np.arange(n, dtype=np.int64)
    return PairBars(ts, np.r_[a[0], a[:-1]], a, np.r_[b[0], b[:-1]], b)


# -- hedges and z-scores ----------------------------------------------------------------------


def test_rolling_hedge_is_a_per_bar_ols():
    log_a, log_b = cointegrated_logs(400, seed=1)
    lookback = 30
    beta, alpha = rolling_hedge(log_a, log_b, lookback)
    assert np.isnan(beta[: lookback - 1]).all() and np.isnan(alpha[: lookback - 1]).all()
    for t in range(lookback - 1, len(log_a)):
        rows = slice(t - lookback + 1, t + 1)
        x = np.column_stack([log_b[rows], np.ones(lookback)])
        (b, a), *_ = np.linalg.lstsq(x, log_a[rows], rcond=None)
        assert beta[t] == pytest.approx(b, rel=REL)
        assert alpha[t] == pytest.approx(a, rel=REL)


def test_rolling_hedge_on_a_flat_window_is_nan():
    log_b = np.r_[np.full(5, 1.0), np.linspace(1.0, 1.1, 5)]
    beta, alpha = rolling_hedge(2 * log_b, log_b, 3)
    assert np.isnan(beta[:5]).all() and np.isnan(alpha[:5]).all()
    assert beta[6:] == pytest.approx([2.0] * 4, rel=REL)


def test_static_hedge_is_one_ols_over_every_bar():
    log_a, log_b = cointegrated_logs(300, seed=2)
    beta, alpha = static_hedge(log_a, log_b, 20)
    fit = sm.OLS(log_a, sm.add_constant(log_b)).fit()
    assert np.isnan(beta[:19]).all() and np.isnan(alpha[:19]).all()
    np.testing.assert_allclose(beta[19:], fit.params[1], rtol=REL)
    np.testing.assert_allclose(alpha[19:], fit.params[0], rtol=REL)


def kalman_by_the_formulas(log_a, log_b, delta, ve):
    x, p = np.zeros(2), np.zeros((2, 2))
    vw = delta / (1 - delta) * np.eye(2)
    out = []
    for y, lb in zip(log_a, log_b, strict=True):
        f = np.array([[lb, 1.0]])
        r = p + vw
        e = y - (f @ x)[0]
        q = (f @ r @ f.T)[0, 0] + ve
        k = (r @ f.T)[:, 0] / q
        x = x + k * e
        p = r - np.outer(k, f @ r)
        out.append(x)
    return np.array(out)


def test_kalman_hedge_follows_the_formulas():
    log_a, log_b = cointegrated_logs(300, seed=3)
    beta, alpha = kalman_hedge(log_a, log_b, 10, delta=1e-4, ve=1e-3)
    expected = kalman_by_the_formulas(log_a, log_b, 1e-4, 1e-3)
    assert np.isnan(beta[:9]).all() and np.isnan(alpha[:9]).all()
    np.testing.assert_allclose(beta[9:], expected[9:, 0], rtol=REL)
    np.testing.assert_allclose(alpha[9:], expected[9:, 1], rtol=REL)


def test_kalman_hedge_finds_a_constant_beta():
    rng = np.random.default_rng(4)
    log_b = np.cumsum(rng.normal(0, 0.05, 3000))  # wanders enough to tell beta from alpha
    log_a = 1.5 * log_b + 0.3 + rng.normal(0, 0.01, 3000)
    beta, alpha = kalman_hedge(log_a, log_b, 10)
    assert beta[-1] == pytest.approx(1.5, abs=0.05)
    assert alpha[-1] == pytest.approx(0.3, abs=0.1)


def test_zscores_are_the_definition_bar_by_bar():
    log_a, log_b = cointegrated_logs(300, seed=5)
    window = 20
    for beta, alpha in (rolling_hedge(log_a, log_b, 40), kalman_hedge(log_a, log_b, 5)):
        z = zscores(log_a, log_b, beta, window)
        expected = np.full(len(z), np.nan)
        for t in range(window - 1, len(z)):
            if math.isnan(beta[t]):
                continue
            rows = slice(t - window + 1, t + 1)
            s = log_a[rows] - beta[t] * log_b[rows] - alpha[t]
            expected[t] = (s[-1] - s.mean()) / s.std(ddof=1)
        np.testing.assert_allclose(z, expected, rtol=REL, atol=REL)  # NaN where expected is
        assert np.isfinite(z[max(window, 40) - 1 :]).all()


def test_a_flat_spread_has_no_zscore():
    log_b = np.linspace(1.0, 1.2, 10)
    z = zscores(0.5 * log_b + 1, log_b, np.full(10, 0.5), 4)
    assert np.isnan(z).all()


# -- trading, by hand -------------------------------------------------------------------------

# E = 2, X = 0.5, S = 3, no fees. z and beta given, so every number below is hand-checked.
#  t  open_a close_a open_b close_b    z   beta  position at close, what happens
#  0   100    100     50     50      nan  nan    0
#  1   100    100     50     50      0.5  0.7    0
#  2   100    100     50     50      2.5  0.5    0  z >= 2: signal short, beta_e = 0.5
#  3   100     99     50     50.5    1.0  0.9   -1  filled at open 100 / 50; hold (1 > 0.5)
#  4    99     97     51     52      0.2  0.9   -1  z <= 0.5: signal exit
#  5    98     97     51     50     -2.2  2.0    0  exit filled at 98 / 51; flat, so z <= -2:
#                                                   signal long, beta_e = 2
#  6   100     95     40     40.4   -3.5  1.3   +1  filled at 100 / 40; z <= -3: signal stop
#  7    96     96     40.8   41     -2.5  1.3    0  stop filled at 96 / 40.8; locked: no entry
#  8    96     96     41     41      nan  1.3    0  nan: still locked
#  9    96     96     41     41     -1.0  1.3    0  |z| < 2: unlocked
# 10    96    100     41    100      2.0  1.0    0  z >= 2: signal short, beta_e = 1
# 11   100    101    100    100      2.8  1.1   -1  filled at 100 / 100; below the stop
# 12   101     99    100    100      1.5  1.1   -1
# 13    99     98    100    101      1.0  1.1   -1
# 14    98     97    101    100      nan  1.1   -1
# 15    97     96    100    100      0.0  1.1    0  exit signal on the last bar never fills:
#                                                   closed at the last close, reason "end"
TAPE = np.array(
    [
        [100, 100, 50, 50],
        [100, 100, 50, 50],
        [100, 100, 50, 50],
        [100, 99, 50, 50.5],
        [99, 97, 51, 52],
        [98, 97, 51, 50],
        [100, 95, 40, 40.4],
        [96, 96, 40.8, 41],
        [96, 96, 41, 41],
        [96, 96, 41, 41],
        [96, 100, 41, 100],
        [100, 101, 100, 100],
        [101, 99, 100, 100],
        [99, 98, 100, 101],
        [98, 97, 101, 100],
        [97, 96, 100, 100],
    ],
    dtype=float,
)
NAN = math.nan
Z = np.array([NAN, 0.5, 2.5, 1.0, 0.2, -2.2, -3.5, -2.5, NAN, -1.0, 2.0, 2.8, 1.5, 1.0, NAN, 0.0])
BETA = np.array([NAN, 0.7, 0.5, 0.9, 0.9, 2.0] + [1.3] * 4 + [1.0] + [1.1] * 5)
HAND = BacktestParams(window=2, lookback=2, entry=2.0, exit=0.5, stop=3.0)


def tape(rows: np.ndarray) -> PairBars:
    ts = T0 + HOUR_US * np.arange(len(rows), dtype=np.int64)
    return PairBars(ts, rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy(), rows[:, 3].copy())


def ts(t: int) -> int:
    return T0 + t * HOUR_US


def trade(side, signal, entry, exit_, beta, prices, reason, gross, fees=0.0) -> Trade:
    return Trade(side, ts(signal), ts(entry), ts(exit_), beta, *prices, reason, gross, fees, gross)


# short: -((98/100 - 1) - 0.5 (51/50 - 1)) = -(-0.02 - 0.01) = 0.03
# long: (96/100 - 1) - 2 (40.8/40 - 1) = -0.04 - 0.04 = -0.08
# short, end: -((96/100 - 1) - 1 (100/100 - 1)) = 0.04
HAND_TRADES = [
    trade(-1, 2, 3, 5, 0.5, (100, 50, 98, 51), "exit", 0.03),
    trade(1, 5, 6, 7, 2.0, (100, 40, 96, 40.8), "stop", -0.08),
    trade(-1, 10, 11, 15, 1.0, (100, 100, 96, 100), "end", 0.04),
]
HAND_POSITION = [0, 0, 0, -1, -1, 0, 1, 0, 0, 0, 0, -1, -1, -1, -1, 0]
# t3: -((99/100 - 1) - 0.5 (50.5/50 - 1)) = 0.015;  t4: -(-0.03 - 0.5 * 0.04) = 0.05
# t5: realised 0.03;  t6: 0.03 + (95/100 - 1) - 2 (40.4/40 - 1) = 0.03 - 0.07 = -0.04
# t7..t10: 0.03 - 0.08 = -0.05;  t11: -0.05 - (0.01 - 0) = -0.06;  t12: -0.05 + 0.01 = -0.04
# t13: -0.05 - (-0.02 - 0.01) = -0.02;  t14: -0.05 + 0.03 = -0.02;  t15: -0.05 + 0.04 = -0.01
HAND_EQUITY = [0, 0, 0, 0.015, 0.05, 0.03, -0.04, -0.05, -0.05, -0.05, -0.05]
HAND_EQUITY += [-0.06, -0.04, -0.02, -0.02, -0.01]


def assert_trades(got, expected):
    """Every field: the prices and beta exactly (copied, not computed), P&L to 1e-12."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert astuple(g)[:10] == astuple(e)[:10]
        assert (g.gross, g.fees, g.net) == pytest.approx((e.gross, e.fees, e.net), abs=1e-12)


def test_the_hand_worked_tape():
    trades, curve = simulate(tape(TAPE), Z, BETA, HAND)
    assert_trades(trades, HAND_TRADES)
    assert curve.position.tolist() == HAND_POSITION
    assert curve.equity == pytest.approx(HAND_EQUITY, abs=1e-12)
    assert curve.z is Z and curve.beta is BETA


def test_an_entry_signalled_on_the_last_bar_never_fills():
    trades, curve = simulate(tape(TAPE[:11]), Z[:11], BETA[:11], HAND)  # t10: signal short
    assert [t.reason for t in trades] == ["exit", "stop"]
    assert curve.position.tolist() == HAND_POSITION[:11]
    assert curve.equity[-1] == pytest.approx(-0.05, abs=1e-12)


def test_no_stop_when_stop_is_zero():
    no_stop = BacktestParams(window=2, lookback=2, entry=2.0, exit=0.5)
    trades, _ = simulate(tape(TAPE), Z, BETA, no_stop)
    # the long of t6 holds through -3.5, -2.5 and -1.0 (an exit needs z >= -0.5) until t10's
    # 2.0, filled at t11; flat there, t11's 2.8 signals a short, held on to the end
    got = [(t.side, t.reason, t.entry_ts, t.exit_ts) for t in trades]
    assert got == [
        (-1, "exit", ts(3), ts(5)),
        (1, "exit", ts(6), ts(11)),
        (-1, "end", ts(12), ts(15)),
    ]


# -- fees -------------------------------------------------------------------------------------

# short signalled at t1 (beta 0.5), filled at 100 / 50, exit signalled at t2, filled at 90 / 55:
# gross = -((90/100 - 1) - 0.5 (55/50 - 1)) = -(-0.1 - 0.05) = 0.15
FEE_TAPE = np.array([[100, 100, 50, 50], [100, 100, 50, 50], [100, 95, 50, 52], [90, 90, 55, 55]])
FEE_Z = np.array([NAN, 2.5, 0.0, 0.0])


def test_no_fee_nets_the_gross():
    params = BacktestParams(window=2, lookback=2, entry=2.0, exit=0.5)
    (t,), _ = simulate(tape(FEE_TAPE), FEE_Z, np.full(4, 0.5), params)
    assert (t.gross, t.fees, t.net) == pytest.approx((0.15, 0.0, 0.15), abs=1e-12)
    assert t.net == t.gross


def test_fees_on_entry_and_exit_notional():
    params = BacktestParams(window=2, lookback=2, entry=2.0, exit=0.5, fee_bps=10)
    (t,), curve = simulate(tape(FEE_TAPE), FEE_Z, np.full(4, 0.5), params)
    # 10 bps of (1 + 0.5) on entry and of (90/100 + 0.5 * 55/50) = 1.45 on exit
    assert t.fees == pytest.approx(0.001 * (1.5 + 1.45), abs=1e-15)
    assert t.net == pytest.approx(0.15 - 0.00295, abs=1e-15)
    # t2: -((95/100 - 1) - 0.5 (52/50 - 1)) = 0.07, less the entry fee 0.0015
    assert curve.equity == pytest.approx([0, 0, 0.0685, 0.14705], abs=1e-15)


def test_fees_of_a_position_closed_at_the_end():
    params = BacktestParams(window=2, lookback=2, entry=2.0, exit=0.5, fee_bps=10)
    (t,), curve = simulate(tape(FEE_TAPE), np.array([NAN, 2.5, 1.0, 1.0]), np.full(4, 0.5), params)
    # closed at the last close 90 / 55: the same prices as above, so the same numbers
    assert (t.reason, t.exit_ts, t.exit_a, t.exit_b) == ("end", ts(3), 90.0, 55.0)
    assert (t.fees, t.net) == pytest.approx((0.00295, 0.14705), abs=1e-15)
    assert curve.position.tolist() == [0, 0, -1, 0]
    assert curve.equity[-1] == pytest.approx(0.14705, abs=1e-15)


# -- summary ----------------------------------------------------------------------------------


def test_summary_of_the_hand_worked_tape():
    trades, curve = simulate(tape(TAPE), Z, BETA, HAND)
    s = summarize(trades, curve, tf_us=HOUR_US, look_ahead=False)
    assert s.trades == 3
    assert s.win_rate == pytest.approx(2 / 3)  # nets 0.03, -0.08, 0.04
    assert s.total_pnl == pytest.approx(-0.01, abs=1e-12)
    assert s.max_drawdown == pytest.approx(0.05 + 0.06, abs=1e-12)  # peak t4, trough t11
    assert s.exposure == pytest.approx(7 / 15)  # bars 1..15 (z from t1), held at 3 4 6 11-14
    # equity changes from t1 on: 14 of them, mean -0.01 / 14, std 0.024562..., 8760 h a year
    changes = [0, 0.015, 0.035, -0.02, -0.07, -0.01, 0, 0, 0, -0.01, 0.02, 0.02, 0, 0.01]
    expected = statistics.mean(changes) / statistics.stdev(changes) * math.sqrt(8760)
    assert s.sharpe == pytest.approx(expected, rel=1e-9)
    assert s.sharpe == pytest.approx(-2.7218, abs=1e-4)
    assert s.look_ahead is False


def test_summary_without_trades():
    _, curve = simulate(tape(TAPE[:3]), Z[:3], BETA[:3], HAND)  # t2's signal never fills
    s = summarize((), curve, tf_us=HOUR_US, look_ahead=True)
    assert (s.trades, s.win_rate, s.total_pnl, s.max_drawdown) == (0, None, 0.0, 0.0)
    assert (s.sharpe, s.exposure, s.look_ahead) == (None, 0.0, True)


# -- the whole backtest -----------------------------------------------------------------------


@pytest.mark.parametrize("hedge", ["rolling", "static", "kalman"])
def test_backtest_end_to_end(hedge):
    log_a, log_b = cointegrated_logs(400, seed=6)
    bars = bars_of(log_a, log_b)
    params = BacktestParams(window=20, lookback=60, entry=1.5, exit=0.0, fee_bps=2, hedge=hedge)
    result = backtest(bars, params, HOUR_US)
    beta = result.curve.beta
    assert np.isnan(beta[:59]).all() and np.isfinite(beta[59:]).all()
    np.testing.assert_array_equal(result.curve.z, zscores(log_a, log_b, beta, 20))
    assert result.trades, "a mean-reverting spread trades"
    assert result.trades[0].signal_ts >= bars.ts_us[59]
    nets = sum(t.net for t in result.trades)
    assert result.summary.total_pnl == pytest.approx(nets, abs=1e-12)
    assert result.curve.position[-1] == 0
    assert result.summary.look_ahead is (hedge == "static")


def test_too_few_bars_says_how_many_are_needed():
    params = BacktestParams(window=5, lookback=20, entry=2.0, exit=0.5)
    log_a, log_b = cointegrated_logs(20, seed=7)
    assert too_few_bars(21, params) is None
    with pytest.raises(ValueError, match="20 joined bars, the backtest needs at least 21"):
        backtest(bars_of(log_a, log_b), params, HOUR_US)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"entry": 0.5}, "entry must be above exit"),
        ({"entry": 1.0, "exit": 1.0}, "entry must be above exit"),
        ({"fee_bps": -1}, "fee_bps must not be negative"),
        ({"hedge": "ewma"}, "hedge must be one of rolling, static, kalman, not 'ewma'"),
        ({"window": 1}, "window must be at least 2"),
        ({"lookback": 1}, "lookback must be at least 2"),
        ({"stop": 1.5}, "stop must be 0 .no stop. or above entry"),
        ({"entry": 0.0, "exit": -1.0}, "entry must be above 0"),
        ({"exit": math.nan}, "must be finite"),
        ({"delta": 1.0}, "delta must be between 0 and 1"),
        ({"ve": 0.0}, "ve must be above 0"),
    ],
)
def test_bad_parameters_are_refused(change, message):
    args = {"window": 5, "lookback": 20, "entry": 2.0, "exit": 0.5, **change}
    with pytest.raises(ValueError, match=message):
        BacktestParams(**args)


def test_bad_bars_are_refused():
    ts = np.arange(3, dtype=np.int64)
    ok = np.ones(3)
    with pytest.raises(ValueError, match="differ in length"):
        PairBars(ts, ok, ok, ok, np.ones(2))
    with pytest.raises(ValueError, match="positive"):
        PairBars(ts, ok, ok, ok, np.array([1.0, 0.0, 1.0]))


# -- the hedge the cockpit shows ------------------------------------------------------------------
def test_the_rolling_hedge_now_is_the_cockpits_fit_over_the_last_l_bars():
    """What the stats panel shows for `rolling` is what the cockpit already shows."""
    log_a, log_b = cointegrated_logs(300, seed=11)
    a, b = np.exp(log_a), np.exp(log_b)
    cockpit = pair_series(np.arange(300), a, b, 20)  # the view: one OLS over its L bars
    now = hedge_now(a, b, BacktestParams(20, 300))
    assert cockpit.fit is not None and now.hedge == "rolling"
    assert now.beta == pytest.approx(cockpit.fit.beta, rel=REL)
    assert now.alpha == pytest.approx(cockpit.fit.alpha, rel=REL)
    assert now.zscore == pytest.approx(cockpit.zscore[-1], rel=1e-7)


@pytest.mark.parametrize("hedge", ["static", "kalman"])
def test_hedge_now_is_the_backtests_last_bar(hedge):
    log_a, log_b = cointegrated_logs(400, seed=12)
    bars = bars_of(log_a, log_b)
    params = BacktestParams(20, 100, hedge=hedge)
    curve = backtest(bars, params, HOUR_US).curve
    now = hedge_now(bars.close_a, bars.close_b, params)
    assert now.hedge == hedge
    assert now.beta == pytest.approx(curve.beta[-1], rel=REL)
    assert now.zscore == pytest.approx(curve.z[-1], rel=REL)


def test_hedge_now_waits_for_l_bars():
    log_a, log_b = cointegrated_logs(99, seed=13)
    now = hedge_now(np.exp(log_a), np.exp(log_b), BacktestParams(20, 100, hedge="kalman"))
    assert (now.beta, now.alpha, now.zscore) == (None, None, None)
    assert hedge_now(np.array([]), np.array([]), BacktestParams(20, 100)).beta is None
