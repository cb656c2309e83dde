"""The contention flag from monitor samples: outside = the node's busy CPU - Ray's processes'."""

import math

import pandas as pd

from scaleprof.analysis.contention import contention


def samples(node_pct, ray_pct, node="n1", t=range(10), gpu_procs=None, ranks=(0,)):
    rows = []
    for rank in ranks:
        for second in t:
            row = {"rank": rank, "node_id": node, "time": 100.0 + second, "cpu_pct": 95.0}
            if rank == 0:  # one worker per node samples the node
                row.update(node_cpu_pct=node_pct, ray_cpu_pct=ray_pct)
            if gpu_procs is not None:
                row["gpu_processes"] = gpu_procs
            rows.append(row)
    return pd.DataFrame(rows)


def starts(ranks=(0,), node="n1", cpus=2, gpu=None):
    return pd.DataFrame([{"rank": r, "node_id": node, "node_cpus": cpus, "gpu_uuid": gpu} for r in ranks])


def test_a_quiet_node_is_not_contended():
    # Ray's processes (the workers, the aggregator, the daemons) use 190% of 2 cores; 10% is outside
    out = contention(samples(200.0, 190.0), starts(), (100.0, 110.0), 0.10)
    assert not out["contended"] and out["outside_cpu_pct"] == 10.0 and out["outside_cpu_share"] == 0.05


def test_a_busy_neighbour_flags_the_run_with_how_much():
    out = contention(samples(200.0, 130.0), starts(), (100.0, 110.0), 0.10)
    assert out["contended"] and out["outside_cpu_pct"] == 70.0 and out["outside_cpu_share"] == 0.35


def test_the_busiest_node_counts():
    two = pd.concat([samples(200.0, 195.0, node="a"), samples(800.0, 500.0, node="b", ranks=(0,))])
    out = contention(two, pd.concat([starts(node="a"), starts(node="b", cpus=8)]), None, 0.10)
    assert out["contended"] and out["outside_cpu_pct"] == 300.0 and out["outside_cpu_share"] == 0.375


def test_only_the_steady_window_counts():
    busy_before = samples(200.0, 20.0, t=range(0, 5))  # before the window: a neighbour, then gone
    quiet = samples(200.0, 200.0, t=range(10, 20))
    out = contention(pd.concat([busy_before, quiet]), starts(), (110.0, 120.0), 0.10)
    assert not out["contended"] and out["outside_cpu_pct"] == 0.0


def test_another_process_on_the_gpu_flags_the_run():
    gpu = "GPU-1"
    alone = contention(samples(100.0, 100.0, gpu_procs=1.0), starts(gpu=gpu), None, 0.10)
    shared = contention(samples(100.0, 100.0, gpu_procs=2.0), starts(gpu=gpu), None, 0.10)
    assert not alone["contended"] and alone["gpu_other_processes"] == 0.0
    assert shared["contended"] and shared["gpu_other_processes"] == 1.0
    # two ranks of the run sharing one GPU are its own two processes, not a neighbour
    pair = contention(samples(100.0, 100.0, gpu_procs=2.0, ranks=(0, 1)), starts((0, 1), gpu=gpu), None, 0.10)
    assert not pair["contended"]


def test_studies_without_node_samples_say_nothing():
    old = samples(200.0, 95.0).drop(columns=["node_cpu_pct", "ray_cpu_pct"])
    out = contention(old, starts(), None, 0.10)
    assert out["contended"] is False and math.isnan(out["outside_cpu_pct"])
