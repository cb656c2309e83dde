"""The fabric fit against timings generated from known latency and bandwidth, and nccl-tests' bus bandwidth
on hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest

from scaleprof.analysis.fabric import (
    COLLECTIVES,
    SWEEP_COLUMNS,
    bus_bandwidth,
    collective_time,
    fit_fabric,
    fit_link,
    stated_link,
)

ALPHA = 5e-6  # seconds per ring step
BETA = 1e-10  # seconds per byte: 10 GB/s
SIZES = [4**k for k in range(6, 15)]  # 4 KiB ... 256 MiB
WORLDS = (2, 4)


def hand_time(collective, size, world, alpha=ALPHA, beta=BETA):
    """The ring's time written out per collective, independently of the module's (steps, factor) table."""
    if collective == "all_reduce":
        return 2 * (world - 1) * alpha + 2 * (world - 1) / world * size * beta
    return (world - 1) * alpha + (world - 1) / world * size * beta


def sweep(seed, noise=0.03, repeats=5, alpha=ALPHA, beta=BETA, sizes=SIZES, backend="gloo", link="intra-node"):
    """Timed repeats with multiplicative (log-normal) noise of `noise` around the ring's time."""
    rng = np.random.default_rng(seed)
    rows = [
        (c, backend, link, w, s, r, hand_time(c, s, w, alpha, beta) * math.exp(noise * rng.standard_normal()))
        for c in COLLECTIVES
        for w in WORLDS
        for s in sizes
        for r in range(repeats)
    ]
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def test_recovers_latency_and_bandwidth_within_5_percent_and_the_intervals_hold_the_truth():
    fit = fit_link(sweep(seed=0))
    assert fit.valid and fit.invalid_reason == ""
    assert fit.alpha_s == pytest.approx(ALPHA, rel=0.05)
    assert fit.beta_s_per_byte == pytest.approx(BETA, rel=0.05)
    assert fit.bandwidth_bytes_per_s == pytest.approx(1 / fit.beta_s_per_byte)
    assert fit.alpha_low <= ALPHA <= fit.alpha_high and fit.beta_low <= BETA <= fit.beta_high
    assert fit.points == len(COLLECTIVES) * len(WORLDS) * len(SIZES) * 5 and fit.worlds == WORLDS
    assert 0.03 < fit.max_relative_error < 0.2  # the noise's tail, not a misfit


def test_the_95_percent_intervals_cover_the_truth_about_95_times_in_100():
    fits = [fit_link(sweep(seed)) for seed in range(40)]
    alpha_covered = sum(f.alpha_low <= ALPHA <= f.alpha_high for f in fits)
    beta_covered = sum(f.beta_low <= BETA <= f.beta_high for f in fits)
    assert alpha_covered >= 34 and beta_covered >= 34  # binomial(40, 0.95): under 34 has p < 0.01


def test_fit_fabric_fits_each_backend_and_link_class():
    both = pd.concat([sweep(1), sweep(2, alpha=20e-6, beta=8e-10, link="inter-node")])
    inter, intra = fit_fabric(both)  # sorted by (backend, link class)
    assert (inter.link_class, intra.link_class) == ("inter-node", "intra-node")
    assert intra.alpha_s == pytest.approx(ALPHA, rel=0.05) and intra.beta_s_per_byte == pytest.approx(BETA, rel=0.05)
    assert inter.alpha_s == pytest.approx(20e-6, rel=0.05) and inter.beta_s_per_byte == pytest.approx(8e-10, rel=0.05)


def test_a_link_that_cannot_be_fitted_comes_back_invalid_with_its_reason():
    one_size = sweep(0, sizes=[4**10])[lambda f: f["collective"] == "all_gather"][lambda f: f["world"] == 2]
    (fit,) = fit_fabric(one_size)
    assert not fit.valid and "two or more message sizes" in fit.invalid_reason and math.isnan(fit.alpha_s)
    with pytest.raises(ValueError, match="time_s"):
        fit_fabric(sweep(0).drop(columns="time_s"))


def test_a_latency_the_data_put_below_zero_is_fixed_at_zero_and_marked_invalid():
    fit = fit_link(sweep(0, noise=0.0, alpha=-1e-6, sizes=[4**k for k in range(10, 15)]))
    assert fit.alpha_s == 0 and (fit.alpha_low, fit.alpha_high) == (0, 0)
    assert not fit.valid and "latency α fitted negative" in fit.invalid_reason
    assert fit.beta_s_per_byte > 0


def test_a_latency_too_small_to_resolve_is_kept_non_negative_and_valid():
    fit = fit_link(sweep(3, alpha=1e-10))
    assert fit.valid and fit.alpha_s >= 0 and fit.alpha_low == 0 and fit.alpha_high > 0


def test_times_that_fall_with_size_have_no_bandwidth():
    rows = sweep(0, noise=0.0, beta=-1e-13, alpha=1e-3, sizes=[4**k for k in range(6, 10)])
    fit = fit_link(rows)
    assert not fit.valid and "time per byte β" in fit.invalid_reason and fit.beta_s_per_byte == 0
    assert fit.bandwidth_bytes_per_s == math.inf


def test_bus_bandwidth_matches_nccl_tests_on_hand_computed_cases():
    # all-reduce, 8 ranks, 1 GB in 0.1 s: algbw 10 GB/s, busbw 10 x 2 x 7 / 8 = 17.5 GB/s
    assert bus_bandwidth("all_reduce", 1e9, 8, 0.1) == pytest.approx(17.5e9)
    # all-gather, 4 ranks, 400 MB output in 0.05 s: algbw 8 GB/s, busbw 8 x 3 / 4 = 6 GB/s
    assert bus_bandwidth("all_gather", 4e8, 4, 0.05) == pytest.approx(6e9)
    assert bus_bandwidth("reduce_scatter", 4e8, 4, 0.05) == pytest.approx(6e9)


def test_bus_bandwidth_of_a_bandwidth_bound_call_is_the_links_bandwidth_at_every_world():
    for collective in COLLECTIVES:
        for world in (2, 3, 8, 64):
            time_s = hand_time(collective, 1e9, world, alpha=0.0)
            assert bus_bandwidth(collective, 1e9, world, time_s) == pytest.approx(1 / BETA)


def test_stated_links_parse_into_latency_and_time_per_byte():
    link = stated_link("100Gbit/s,5us")
    assert link.beta_s_per_byte == pytest.approx(8e-11) and link.alpha_s == pytest.approx(5e-6)
    assert (link.alpha_low, link.alpha_high, link.beta_low, link.beta_high) == (
        link.alpha_s,
        link.alpha_s,
        link.beta_s_per_byte,
        link.beta_s_per_byte,
    )
    assert link.valid and link.backend == "stated" and link.link_class == "inter-node"
    assert stated_link("25GB/s,2us").beta_s_per_byte == pytest.approx(1 / 25e9)
    assert stated_link(" 2 us , 25 GB/s ").alpha_s == pytest.approx(2e-6)
    assert stated_link("800MB/s,0.1ms").beta_s_per_byte == pytest.approx(1 / 800e6)
    assert stated_link("1e9bit/s,1s").bandwidth_bytes_per_s == pytest.approx(1.25e8)


@pytest.mark.parametrize(
    "spec, named",
    [("fast,5us", "'fast'"), ("100Gbit/s,5 parsecs", "'5 parsecs'"), ("100Gbit/s", "one bandwidth and one latency"),
     ("5us,2us", "one bandwidth and one latency"), ("0GB/s,1us", "not positive")],
)  # fmt: skip
def test_nonsense_links_are_refused_naming_the_text(spec, named):
    with pytest.raises(ValueError, match=named) as error:
        stated_link(spec)
    assert repr(spec) in str(error.value)


def test_small_messages_cost_the_latency_of_each_ring_step():
    link = stated_link("100Gbit/s,5us")
    for world in (2, 4, 16):
        mid, low, high = collective_time(link, "all_reduce", 8, world)
        assert mid == pytest.approx(5e-6 * 2 * (world - 1), rel=1e-4) and low == mid == high
    assert collective_time(link, "all_reduce", 1e9, 1) == (0.0, 0.0, 0.0)


def test_collective_time_interval_holds_the_prediction():
    fit = fit_link(sweep(0))
    mid, low, high = collective_time(fit, "reduce_scatter", 1e6, 4)
    assert low < mid < high
    assert mid == pytest.approx(hand_time("reduce_scatter", 1e6, 4), rel=0.05)
