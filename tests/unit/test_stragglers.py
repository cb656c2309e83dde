"""Naming the slow rank (analysis/stragglers.py) on synthetic per-rank timelines with known answers:
each rank's clock is off by a known offset, which the analysis must take out before it compares."""

import numpy as np
import pandas as pd
import pytest

from scaleprof.analysis.stragglers import aligned, rank_table, rank_tables, stragglers

OFFSETS = {0: 0.0, 1: 5.0, 2: -3.0}  # each rank's wall clock against rank 0's


def timeline(
    world: int = 3,
    steps: int = 40,
    extra: dict[str, float] | None = None,
    slow_rank: int = 2,
    pause: tuple[int, float] | None = None,
    jitter: float = 0.0,
    marked: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Steps of 0.1 s: data 10 ms, forward 20 ms, backward compute 30 ms, then the exchange until the last
    rank arrives. `extra` adds to one rank's data or forward each step; `pause` = (step, seconds) holds
    rank 1 in its forward for that long once. Times are on each rank's own (offset) clock."""
    rng = np.random.default_rng(0)
    rows, start = [], 1000.0
    for k in range(steps):
        arrive = {}
        parts = {}
        for rank in range(world):
            data, forward, backward = 0.010, 0.020, 0.030
            if rank == slow_rank and extra:
                data += extra.get("data", 0.0)
                forward += extra.get("forward", 0.0)
            if pause and rank == 1 and k == pause[0]:
                forward += pause[1]
            data, forward = data + rng.uniform(0, jitter), forward + rng.uniform(0, jitter)
            parts[rank] = (data, forward, backward)
            arrive[rank] = start + data + forward + backward
        end = max(arrive.values()) + 0.005  # everyone leaves the exchange together, then the optimizer
        for rank in range(world):
            data, forward, backward = parts[rank]
            row = {
                "rank": rank,
                "epoch": 0,
                "step": k,
                "data_s": data,
                "step_s": end - start,
                "start_t": start + OFFSETS[rank],
                "arrive_t": arrive[rank] + OFFSETS[rank],
                "sync_wait_s": end - arrive[rank],
            }
            if marked:
                row["forward_s"] = forward
            rows.append(row)
        start = end
    clocks = pd.DataFrame(
        {
            "rank": list(range(world)),
            "offset_s": [OFFSETS[r] for r in range(world)],
            "error_s": [0.0, 1e-4, 2e-4][:world],
        }
    )
    return pd.DataFrame(rows), clocks


def _only_straggler(steps, clocks, world=3):
    table = rank_table(aligned(steps, clocks), clocks)
    found = stragglers(table, world, "r", "cpu-3", pd.DataFrame())
    return table, found


def test_a_data_delay_on_one_rank_names_it_and_data_loading():
    steps, clocks = timeline(extra={"data": 0.02})
    table, found = _only_straggler(steps, clocks)
    (late,) = found
    assert late.rank == 2 and late.cause == "loading data"
    assert late.last_share == 1.0 and late.late_s == pytest.approx(0.02, abs=1e-9)
    assert late.cause_s == pytest.approx(0.02, abs=1e-9)
    # the two others each waited 20 ms of a 80 ms step (60 ms + its 20 ms): 25% of their step time
    assert late.others_lost_share == pytest.approx(0.02 / 0.085, rel=1e-6)
    assert late.clock_error_s == pytest.approx(2e-4)
    assert table.set_index("rank").loc[2, "waited_s"] == pytest.approx(0.0)


def test_extra_forward_compute_is_named_forward_and_unmarked_steps_say_forward_and_backward():
    steps, clocks = timeline(extra={"forward": 0.015})
    (late,) = _only_straggler(steps, clocks)[1]
    assert late.rank == 2 and late.cause == "forward" and late.cause_s == pytest.approx(0.015, abs=1e-9)
    steps, clocks = timeline(extra={"forward": 0.015}, marked=False)
    (late,) = _only_straggler(steps, clocks)[1]
    assert late.cause == "forward and backward"


def test_without_the_clock_offsets_the_wrong_rank_would_be_named():
    steps, clocks = timeline(extra={"data": 0.02})
    (late,) = _only_straggler(steps, clocks)[1]
    assert late.rank == 2
    blind = _only_straggler(steps, clocks.assign(offset_s=0.0))[1]
    assert [s.rank for s in blind] == [1]  # rank 1's clock runs 5 s ahead: it would look 5 s late


def test_a_lateness_the_clocks_cannot_resolve_names_nobody():
    """20 ms late every step, but the ranks' clocks agree only to within 15 ms: not attributable."""
    steps, clocks = timeline(extra={"data": 0.02})
    assert _only_straggler(steps, clocks.assign(error_s=0.015))[1] == []
    assert [s.rank for s in _only_straggler(steps, clocks.assign(error_s=0.009))[1]] == [2]


def test_a_balanced_run_has_no_straggler():
    steps, clocks = timeline(extra=None, jitter=0.002)
    table, found = _only_straggler(steps, clocks)
    assert found == []
    assert table["last_share"].sum() == pytest.approx(1.0)  # someone is always last, none by much
    assert (table["others_lost_share"] < 0.05).all()


def test_a_pause_is_a_stall_with_its_rank_step_and_length():
    steps, clocks = timeline(steps=60, pause=(30, 3.0))
    tables = rank_tables({"r": ("cpu-3", steps, clocks)}, pd.DataFrame(), warmup=5)
    (stall,) = tables.stalls
    assert (stall.rank, stall.step) == (1, 30) and stall.lasted_s == pytest.approx(3.0, abs=1e-6)
    assert stall.at_s == pytest.approx(30 * 0.065, abs=1e-6)  # 30 ordinary steps after the run's first
    assert tables.stragglers == []  # one stall is not a straggler: last once in 55 steps
    assert set(tables.lateness["rank"]) == {0, 1, 2} and tables.lateness["late_ms"].max() > 1000
    worst = tables.lateness.loc[tables.lateness["late_ms"].idxmax()]
    assert worst["step_index"] == 30  # counted from the run's first step, warm-up included (as the step-time chart)


def test_one_worker_has_no_rank_figures_but_a_slow_step_is_still_a_stall():
    steps, _ = timeline(world=1, steps=30, pause=None)
    steps.loc[20, "step_s"] = 2.0
    tables = rank_tables({"r": ("cpu-1", steps.drop(columns=["arrive_t"]), pd.DataFrame())}, pd.DataFrame())
    assert tables.ranks.empty and tables.stragglers == []
    assert [(s.rank, s.step, s.lasted_s) for s in tables.stalls] == [(0, 20, 2.0)]


def test_where_the_forward_starts_with_an_exchange_ranks_meet_there_first():
    """DDP broadcasting BatchNorm buffers (or FSDP all-gathering) as forward starts: a rank slow in data is late
    there, and after it the ranks leave together, so its gradients are not late. The forward entry is the arrival."""
    steps, clocks = timeline(extra={"data": 0.02})
    steps["enter_t"] = steps["start_t"] + steps["data_s"]  # on each rank's own clock, as arrive_t
    (late,) = _only_straggler(steps, clocks)[1]
    assert late.rank == 2 and late.cause == "loading data" and late.exchange == "the exchange at forward entry"
    assert late.late_s == pytest.approx(0.02, abs=1e-9)
    plain = _only_straggler(steps.drop(columns="enter_t"), clocks)[1]
    assert plain[0].exchange == "the gradient exchange"


def test_without_the_clocks_compared_nobody_is_named():
    """A loop that skipped session.prepare_model recorded no ClockSync: its ranks' clocks may differ by more than
    any lateness, so the run's ranks are tabled but no straggler is named."""
    steps, clocks = timeline(extra={"data": 0.02})
    table = rank_table(aligned(steps, clocks), None)
    assert not table.empty and stragglers(table, 3, "r", "cpu-3", pd.DataFrame()) == []


def test_arriving_last_often_by_luck_among_many_ranks_names_nobody():
    """16 ranks, 20 steps: a rank last in 3 of them is twice its share, which chance gives 1 time in 6 or so."""
    from scaleprof.analysis.stragglers import _by_chance

    class Row:
        steps, last_share = 20, 3 / 20

    assert _by_chance(Row, 16)
    Row.last_share = 12 / 20
    assert not _by_chance(Row, 16)
