"""The warm-up rule and the interval, against series whose answer is known."""

import math

import numpy as np
import pytest
from scipy import stats

from scaleprof.analysis.steady import batch_means_interval, mser_truncation, ratio_interval, scale_interval


def ar1(rng, n, phi, sigma=1.0, mean=10.0):
    """x_t = mean + phi (x_{t-1} - mean) + e_t, started in its stationary distribution."""
    x = np.empty(n)
    x[0] = mean + rng.normal(0, sigma / math.sqrt(1 - phi**2))
    for t in range(1, n):
        x[t] = mean + phi * (x[t - 1] - mean) + rng.normal(0, sigma)
    return x


def test_a_step_change_is_cut_where_it_ends():
    rng = np.random.default_rng(0)
    for length in (20, 40, 75):
        cuts = []
        for _ in range(20):
            x = np.concatenate([np.full(length, 2.0), np.full(300, 1.0)]) + rng.normal(0, 0.05, length + 300)
            cuts.append(mser_truncation(x))
        # never short of the transient; in whole batches of 5, typically at its end (noise can cost a few more)
        assert min(cuts) >= length and np.median(cuts) <= length + 5 and np.percentile(cuts, 80) <= length + 10
        assert max(cuts) <= (length + 300) // 2  # the cut is searched over the first half only


def test_white_noise_loses_little():
    rng = np.random.default_rng(1)
    cuts = np.array([mser_truncation(rng.normal(1.0, 0.1, 200)) for _ in range(200)])
    assert np.median(cuts) <= 5 and np.mean(cuts <= 20) >= 0.85 and cuts.max() <= 100  # never past half


def test_too_short_a_series_is_not_cut():
    assert mser_truncation(np.array([5.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])) == 0  # 3 batches of 5


def coverage(rng, phi, n, reps, interval):
    hits = 0
    for _ in range(reps):
        lo, hi = interval(ar1(rng, n, phi))
        hits += lo <= 10.0 <= hi
    return hits / reps


def naive(x):
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def batch_means(x):
    i = batch_means_interval(x)
    return i.low, i.high


def test_batch_means_cover_white_noise_at_95_percent():
    assert 0.92 <= coverage(np.random.default_rng(2), 0.0, 400, 400, batch_means) <= 0.98


def test_batch_means_cover_an_autocorrelated_series_where_a_naive_interval_does_not():
    rng = np.random.default_rng(3)
    assert 0.88 <= coverage(rng, 0.6, 900, 400, batch_means) <= 0.98
    assert coverage(rng, 0.6, 900, 400, naive) < 0.75  # the test has teeth: i.i.d. intervals are too narrow (~0.67)


def test_batch_means_width_matches_the_known_ar1_variance_of_the_mean():
    # Var(mean) of AR(1) ~ sigma^2 / (1 - phi)^2 / n for large n: the 95% half width is about 1.96 x that's root
    rng = np.random.default_rng(4)
    phi, n = 0.5, 2500
    expected = 1.96 * 1.0 / (1 - phi) / math.sqrt(n)
    widths = [(lambda i: (i.high - i.low) / 2)(batch_means_interval(ar1(rng, n, phi))) for _ in range(200)]
    assert float(np.median(widths)) == pytest.approx(expected, rel=0.2)


def test_too_few_values_give_no_interval():
    interval = batch_means_interval([2.0])
    assert interval.mean == 2.0 and math.isnan(interval.low) and interval.batches == 1
    assert batch_means_interval([]).batches == 0


def test_throughput_interval_is_the_inverted_time_per_sample_interval():
    from scaleprof.analysis.steady import Interval

    low, high = scale_interval(100.0, Interval(0.01, 0.008, 0.0125, 10))
    assert low == pytest.approx(80.0) and high == pytest.approx(125.0)


def test_ratio_interval_adds_log_half_widths_in_quadrature():
    low, high = ratio_interval(
        0.5, (100.0, 100 / math.e**0.03, 100 * math.e**0.03), (200.0, 200 / math.e**0.04, 200 * math.e**0.04)
    )
    assert low == pytest.approx(0.5 * math.exp(-0.05)) and high == pytest.approx(0.5 * math.exp(0.05))
    assert all(math.isnan(v) for v in ratio_interval(0.5, (100.0, math.nan, math.nan), (200.0, 190.0, 210.0)))
