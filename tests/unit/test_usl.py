"""The scaling-law fit against published coefficients and against data with known coefficients."""

import math

import numpy as np
import pytest

from scaleprof.analysis import fit_usl
from scaleprof.analysis.usl import usl

# SPEC SDM91 on a Sun SPARCcenter 2000 (Gunther, Guerrilla Capacity Planning; the R package `usl`'s
# `specsdm91` data set). Published fit, `summary(usl(throughput ~ load, specsdm91))`:
#   alpha 0.0277285 (SE 0.0091217), beta 0.0001044 (SE 0.0000199), gamma 89.9952330 (SE 14.2134894).
SPECSDM91_LOAD: list[float] = [1, 18, 36, 72, 108, 144, 216]
SPECSDM91_THROUGHPUT = [64.9, 995.9, 1652.4, 1853.2, 1828.9, 1775.0, 1702.2]


def test_matches_the_published_specsdm91_fit():
    fit = fit_usl(SPECSDM91_LOAD, SPECSDM91_THROUGHPUT)
    assert fit.model == "usl" and fit.dof == 4
    assert fit.alpha == pytest.approx(0.0277285, rel=1e-4)
    assert fit.beta == pytest.approx(0.0001044, rel=1e-3)
    assert fit.gamma == pytest.approx(89.9952330, rel=1e-5)
    assert fit.alpha_se == pytest.approx(0.0091217, rel=1e-3)
    assert fit.beta_se == pytest.approx(0.0000199, rel=1e-2)
    assert fit.gamma_se == pytest.approx(14.2134894, rel=1e-4)
    assert fit.peak_workers == pytest.approx(math.sqrt((1 - fit.alpha) / fit.beta))
    assert 90 < fit.peak_workers < 100


def test_recovers_known_coefficients_and_predicts_unmeasured_counts():
    n = np.array([1, 2, 4, 8, 16, 32])
    x = usl(n, 0.05, 0.002, 1000.0)
    fit = fit_usl(n, x)
    assert (fit.alpha, fit.beta, fit.gamma) == pytest.approx((0.05, 0.002, 1000.0), rel=1e-6)
    assert fit.predict(64) == pytest.approx(usl(64, 0.05, 0.002, 1000.0), rel=1e-6)


def test_noisy_data_band_covers_the_truth_and_widens_with_extrapolation():
    rng = np.random.default_rng(0)
    n = np.repeat([1, 2, 4, 8, 16], 3)
    x = usl(n, 0.1, 0.001, 500.0) * rng.normal(1, 0.02, len(n))
    fit = fit_usl(n, x)
    low, high = fit.interval([8, 64])
    assert low[0] <= usl(8, 0.1, 0.001, 500.0) <= high[0]
    assert (high[1] - low[1]) > (high[0] - low[0])  # less known far from the data


def test_two_worker_counts_fit_amdahl_exactly_without_uncertainty():
    fit = fit_usl([1, 2], [100.0, 150.0])
    assert fit.model == "amdahl" and fit.beta == 0.0 and fit.dof == 0
    assert fit.predict(2) == pytest.approx(150.0)
    assert fit.alpha == pytest.approx(1 / 3)  # 2 / (1 + a) = 1.5
    assert math.isinf(fit.peak_workers)
    assert np.isnan(fit.interval(4)[0]).all()


def test_one_worker_count_is_refused():
    with pytest.raises(ValueError, match="two or more worker counts"):
        fit_usl([1, 1], [100.0, 101.0])


def test_a_serial_fraction_above_one_is_fitted_but_marked_outside_the_laws_meaning():
    """The contended smoke study's case: 2 workers at 0.4x one worker's speed. Amdahl through both points,
    2 / (1 + α) = 80 / 200, gives α = 4: a 'serial fraction' of 400%, which no share of the work can be."""
    fit = fit_usl([1, 2], [200.0, 80.0])
    assert fit.alpha == pytest.approx(4.0)  # kept as fitted (not clipped to 1), so the user sees why
    assert not fit.valid and "α = 4.00" in fit.invalid_reason
    flat = fit_usl([1, 2], [100.0, 100.0])  # α = 1: all serial, no gain from workers, still a meaning
    assert flat.alpha == pytest.approx(1.0) and flat.valid and flat.invalid_reason == ""
    assert fit_usl([1, 2], [100.0, 150.0]).valid


def test_a_usl_fit_with_contention_above_one_is_marked_too():
    n = np.array([1, 2, 4, 8])
    fit = fit_usl(n, usl(n, 1.5, 0.01, 100.0))
    assert fit.model == "usl" and fit.alpha == pytest.approx(1.5, rel=1e-4)
    assert not fit.valid and "α = 1.50" in fit.invalid_reason
