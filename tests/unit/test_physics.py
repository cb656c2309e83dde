"""The step-time model of data-parallel training on workloads whose answer is known by hand."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from scaleprof.analysis.fabric import stated_link
from scaleprof.analysis.physics import (
    STEP_TERMS,
    Figure,
    HostSharing,
    MeasuredRun,
    expected_max_standard_normal,
    infer_overlap,
    predict,
    predict_many,
)

FAST = stated_link("25GB/s,2us", link_class="intra-node")  # beta 4e-11 s/byte, alpha 2e-6 s
SLOW = stated_link("100Gbit/s,5us")  # beta 8e-11 s/byte, alpha 5e-6 s
LINKS = {"intra-node": FAST, "inter-node": SLOW}
exact = Figure.exact


def run(
    data=0.01,
    forward=0.03,
    backward=0.06,
    optimizer=0.01,
    gradient_bytes=0.0,
    workers=1,
    nodes=1,
    exposed=None,
    cv=0.0,
    batch=32,
    link="intra-node",
):
    """A measured run with exact figures unless Figures are passed."""
    figure = lambda x: x if isinstance(x, Figure) else exact(x)
    return MeasuredRun(
        batch_per_worker=batch,
        workers=workers,
        nodes=nodes,
        link_class=link,
        data_s=figure(data),
        forward_s=figure(forward),
        backward_compute_s=figure(backward),
        optimizer_s=figure(optimizer),
        gradient_bytes=gradient_bytes,
        exposed_comm_s=None if exposed is None else figure(exposed),
        step_cv=figure(cv),
    )


def ring_all_reduce_s(alpha, beta, size, n):
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * size * beta


def test_expected_maximum_of_standard_normals_matches_closed_forms():
    assert expected_max_standard_normal(1) == 0
    assert expected_max_standard_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-9)
    assert expected_max_standard_normal(3) == pytest.approx(3 / (2 * math.sqrt(math.pi)), rel=1e-9)
    for n in (10, 100, 1000):  # Blom's approximation, good to about 1% here
        blom = stats.norm.ppf((n - 0.375) / (n + 0.25))
        assert expected_max_standard_normal(n) == pytest.approx(blom, rel=0.015)


def test_pure_compute_scales_linearly_under_weak_scaling():
    measured = run(gradient_bytes=0.0)
    one, *more = predict_many(measured, LINKS, [(1, 1), (2, 1), (8, 1), (64, 8)])
    assert one.throughput == pytest.approx(32 / 0.11)
    for p in more:
        assert p.throughput / (p.workers * one.throughput) == pytest.approx(1.0, rel=1e-12)
        assert p.terms["comm_s"] == 0 and p.terms["straggler_s"] == 0


def test_only_the_slowest_of_n_keeps_pure_compute_from_linear_scaling():
    measured = run(gradient_bytes=0.0, cv=0.1)
    one, two = predict_many(measured, LINKS, [(1, 1), (2, 1)])
    assert one.terms["straggler_s"] == 0
    # 2 ranks: E[max] = mean + sigma / sqrt(pi), sigma = 0.1 x 0.11 s
    assert two.terms["straggler_s"] == pytest.approx(0.1 * 0.11 / math.sqrt(math.pi))
    assert two.throughput / (2 * one.throughput) == pytest.approx(1 / (1 + 0.1 / math.sqrt(math.pi)))


def test_pure_communication_takes_the_ring_formulas_time():
    measured = run(data=0, forward=0, backward=0, optimizer=0, gradient_bytes=1e8)
    p = predict(measured, LINKS, workers=4, nodes=1)
    # 6 steps x 2 us + 1.5 x 1e8 bytes x 4e-11 s/byte = 1.2e-5 + 6e-3 s
    assert p.step_s == pytest.approx(6.012e-3, rel=1e-12)
    assert p.terms["comm_s"] == p.terms["exposed_comm_s"] == p.step_s
    assert p.throughput == pytest.approx(4 * 32 / 6.012e-3, rel=1e-12)
    assert (p.overlap, p.link_class, p.crosses_node_boundary) == (0.0, "intra-node", False)
    assert "default 0" in p.overlap_source and "pessimistic" in p.overlap_source


def test_small_messages_cost_the_latency_of_each_ring_step():
    measured = run(data=0, forward=0, backward=0, optimizer=0, gradient_bytes=4.0)
    for n in (2, 8, 32):
        p = predict(measured, LINKS, workers=n, nodes=1)
        assert p.step_s == pytest.approx(2e-6 * 2 * (n - 1), rel=1e-3)


def test_overlap_inferred_from_a_probe_that_saw_half_the_modelled_all_reduce():
    size = 2e8
    comm = ring_all_reduce_s(2e-6, 4e-11, size, 2)  # 8.002 ms
    measured = run(backward=comm, gradient_bytes=size, workers=2, exposed=comm / 2)
    p = predict(measured, LINKS, workers=2, nodes=1)
    assert p.overlap == pytest.approx(0.5) and "inferred from the 2-worker run" in p.overlap_source
    assert p.terms["exposed_comm_s"] == pytest.approx(comm / 2)


def test_the_inferred_overlap_reproduces_the_measured_run():
    """With more backward than all-reduce, and a spread of ranks whose wait the probe also saw."""
    size = 2e8
    comm = ring_all_reduce_s(2e-6, 4e-11, size, 2)
    measured = run(backward=4 * comm, gradient_bytes=size, workers=2, exposed=comm / 2, cv=0.02)
    p = predict(measured, LINKS, workers=2, nodes=1)
    compute = 0.01 + 0.03 + 4 * comm + 0.01
    assert p.step_s == pytest.approx(compute + comm / 2, rel=1e-12)  # the measured step
    wait = 0.02 * compute / math.sqrt(math.pi)
    assert p.overlap == pytest.approx((comm - (comm / 2 - wait)) / (4 * comm))


def test_an_overlap_the_fabric_contradicts_is_clamped_and_said():
    comm = ring_all_reduce_s(2e-6, 4e-11, 2e8, 2)
    more = predict(run(gradient_bytes=2e8, workers=2, exposed=2 * comm), LINKS, 2, 1)
    assert more.overlap == 0 and "clamped to 0" in more.overlap_source
    less = predict(run(backward=comm / 10, gradient_bytes=2e8, workers=2, exposed=0.0), LINKS, 2, 1)
    assert less.overlap == 1 and "clamped to 1" in less.overlap_source
    assert infer_overlap(np.array([0.0]), np.array([1.0]), np.array([0.0]))[0] == 0  # no backward to hide under


def test_crossing_a_node_boundary_switches_to_the_inter_node_link_and_slows_the_step():
    measured = run(gradient_bytes=1e8)
    inside, across = predict_many(measured, LINKS, [(8, 1), (8, 2)])
    assert (inside.link_class, inside.crosses_node_boundary) == ("intra-node", False)
    assert (across.link_class, across.crosses_node_boundary) == ("inter-node", True)
    assert across.terms["comm_s"] == pytest.approx(ring_all_reduce_s(5e-6, 8e-11, 1e8, 8))
    assert across.throughput < inside.throughput
    with pytest.raises(ValueError, match="inter-node link, which has no fit"):
        predict(measured, {"intra-node": FAST}, 8, 2)


def test_strong_scaling_divides_the_batch_work_but_not_the_optimizer_or_the_all_reduce():
    measured = run(data=0.01, forward=0.04, backward=0.08, optimizer=0.02, batch=64, gradient_bytes=1e8)
    p = predict(measured, LINKS, workers=4, nodes=1, scaling="strong")
    comm = ring_all_reduce_s(2e-6, 4e-11, 1e8, 4)
    assert p.per_worker_batch == 16
    assert p.step_s == pytest.approx(0.13 / 4 + 0.02 + comm)
    assert p.throughput == pytest.approx(64 / (0.13 / 4 + 0.02 + comm))
    assert "scaled to batch 16" in p.basis
    with pytest.raises(ValueError, match="global batch of 64 cannot be split over 128"):
        predict(measured, LINKS, workers=128, nodes=16, scaling="strong")


def test_the_interval_holds_the_point_and_widens_with_an_inputs_interval():
    def predicted(forward):
        measured = run(forward=forward, gradient_bytes=1e8, cv=Figure(0.02, 0.01, 0.03))
        return predict(measured, LINKS, workers=8, nodes=2)

    exact_inputs = predict(run(gradient_bytes=1e8), LINKS, 8, 2)
    assert exact_inputs.low == exact_inputs.throughput == exact_inputs.high
    narrow, wide = predicted(Figure(0.03, 0.029, 0.031)), predicted(Figure(0.03, 0.02, 0.045))
    for p in (narrow, wide):
        assert p.low < p.throughput < p.high
    assert narrow.throughput == wide.throughput
    assert wide.low < narrow.low and wide.high > narrow.high


def test_the_terms_add_up_to_the_step_and_the_basis_names_the_inputs():
    measured = run(gradient_bytes=1e8, workers=2, exposed=0.001)
    p = predict(measured, {"intra-node": FAST, "inter-node": SLOW}, 16, 4)
    assert sum(p.terms[name] for name in STEP_TERMS) == pytest.approx(p.step_s)
    assert "inter-node link (stated" in p.basis and "Monte Carlo" in p.basis and "2-worker run" in p.basis


def test_a_two_piece_normal_draw_puts_95_percent_inside_an_asymmetric_interval():
    draws = Figure(1.0, 0.8, 1.5).draw(np.random.default_rng(0), 200_000)
    assert np.mean((draws >= 0.8) & (draws <= 1.5)) == pytest.approx(0.95, abs=0.003)
    assert np.mean(draws < 0.8) == pytest.approx(0.025, abs=0.002)
    assert np.median(draws) == pytest.approx(1.0, abs=0.005)


def test_impossible_inputs_are_refused():
    with pytest.raises(ValueError, match="2 or more workers"):
        run(exposed=0.01, workers=1)
    with pytest.raises(ValueError, match="1 ≤ nodes ≤ workers"):
        predict(run(), LINKS, workers=2, nodes=3)
    with pytest.raises(ValueError, match="does not contain"):
        Figure(1.0, 1.1, 1.2)
    with pytest.raises(ValueError, match="finite value"):
        Figure(math.nan, 0.0, 1.0)
    unfitted = dataclasses.replace(FAST, alpha_s=math.nan, valid=False, invalid_reason="one message size")
    with pytest.raises(ValueError, match="intra-node link has no fitted figures: one message size"):
        predict(run(gradient_bytes=1e8), {"intra-node": unfitted}, 2, 1)
    assert predict(run(gradient_bytes=1e8), {"intra-node": FAST, "inter-node": unfitted}, 2, 1).throughput > 0
    probed_over_unfitted = run(gradient_bytes=1e8, workers=2, exposed=0.001)
    p = predict(probed_over_unfitted, {"intra-node": unfitted, "inter-node": SLOW}, 4, 2)
    assert p.overlap == 0 and "has no fabric" in p.overlap_source


def test_host_sharing_slows_compute_by_the_probed_ratio_linear_in_the_other_ranks():
    """Pure compute of 0.11 s a step, measured alone on its machine; the probe saw 1.25x with 2 ranks at once."""
    measured, sharing = run(gradient_bytes=0.0), HostSharing(exact(1.25), ranks=2)
    same = lambda workers, nodes, **kw: predict(measured, LINKS, workers, nodes, sharing=sharing, **kw)
    two, four, spread = same(2, 1), same(4, 1), same(4, 2)
    assert two.compute_factor == pytest.approx(1.25) and two.step_s == pytest.approx(0.11 * 1.25)
    assert two.throughput == pytest.approx(2 * 32 / (0.11 * 1.25))
    assert four.compute_factor == pytest.approx(1.75) and "extrapolated beyond it" in four.basis
    assert spread.compute_factor == pytest.approx(1.25)  # 2 per machine again
    assert same(4, 1, ranks_per_host=1).compute_factor == 1.0  # four machines behind one Ray node: none shared
    assert sum(two.terms[name] for name in STEP_TERMS) == pytest.approx(two.step_s)
    assert "host sharing probed at 1.25x with 2 ranks" in two.basis
    # A base measured with 2 ranks on its machine, predicted with 1: its compute shrinks by the same ratio.
    shared = dataclasses.replace(run(gradient_bytes=0.0, workers=2, exposed=0.0), ranks_per_host=2)
    assert predict(shared, LINKS, 2, 2, sharing=sharing).compute_factor == pytest.approx(1 / 1.25)
    # Without a probe nothing changes, and the basis says compute was taken as measured.
    plain = predict(measured, LINKS, 2, 1)
    assert plain.compute_factor == 1.0 and "host sharing not probed" in plain.basis
    wide = predict(measured, LINKS, 2, 1, sharing=HostSharing(Figure(1.25, 1.1, 1.4), ranks=2))
    assert wide.low < two.throughput < wide.high and wide.throughput == pytest.approx(two.throughput)
    noise = HostSharing(exact(0.97), ranks=2)  # together faster than alone: the probe's noise, not a speed-up
    assert predict(measured, LINKS, 4, 1, sharing=noise).compute_factor == 1.0
    with pytest.raises(ValueError, match="2 or more ranks"):
        HostSharing(exact(1.2), ranks=1)


def test_the_chance_a_figure_reaches_a_threshold_follows_its_two_piece_interval():
    figure = Figure(100.0, 80.0, 130.0)
    assert figure.share_above(100.0) == pytest.approx(0.5)
    assert figure.share_above(80.0) == pytest.approx(0.975)  # its interval's lower end
    assert figure.share_above(130.0) == pytest.approx(0.025)  # and its upper end, on the wider side
    assert exact(100.0).share_above(99.0) == 1.0 and exact(100.0).share_above(101.0) == 0.0


def test_ddps_own_cost_from_a_one_worker_run_is_added_from_two_workers_on():
    """A one-worker run never ran under DDP: its wrapper probe's cost (1 ms per step) is added to every step
    at 2 or more workers, not at 1, whatever the batch (it works on the parameters); with it, the interval
    widens by its own."""
    measured = dataclasses.replace(run(gradient_bytes=4e6), wrapper_s=exact(0.001))
    one, two, strong = (
        predict(measured, LINKS, 1, 1),
        predict(measured, LINKS, 2, 1),
        predict(measured, LINKS, 2, 1, "strong"),
    )
    comm = ring_all_reduce_s(FAST.alpha_s, FAST.beta_s_per_byte, 4e6, 2)
    assert one.terms["wrapper_s"] == 0 and one.step_s == pytest.approx(0.11)
    assert two.terms["wrapper_s"] == 0.001 and two.step_s == pytest.approx(0.11 + 0.001 + comm, rel=1e-12)
    assert strong.terms["wrapper_s"] == 0.001 and "DDP's own cost 1 ms per step" in two.basis
    assert "DDP's own cost not measured" in predict(run(gradient_bytes=4e6), LINKS, 2, 1).basis
    wide = dataclasses.replace(measured, wrapper_s=Figure(0.001, 0.0005, 0.003))
    assert predict(wide, LINKS, 2, 1).low < two.low == two.throughput
    with pytest.raises(ValueError, match="one-worker run"):
        dataclasses.replace(run(workers=2, exposed=0.0), wrapper_s=exact(0.001))
