"""Does the physics model predict a placement it has not seen? On the tests' two-node cluster (two 1-CPU raylets
on this machine), for two models of opposite communication-to-compute ratio, a study measures 1 worker and 2
workers (one per node, STRICT_SPREAD); its prediction ledger (analysis/prediction.py) predicts the 2-worker run
from the 1-worker run and the fabric its 2-worker run swept alone. Beside it: linear scaling (2 x the 1-worker
throughput, what one assumes without a model); the scaling law needs two smaller worker counts and has none here.

    .venv/bin/python benchmarks/prediction.py [--rounds 2]     # or: bench.py prediction

Results: benchmarks/results/prediction.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

# Many parameters and little compute (an MLP of 1.1 M parameters on 8x8 inputs: 4.4 MB all-reduced per ~2 ms
# step) and the opposite (the small CNN on digits: 0.6 MB per ~10 ms step).
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
    "communication-bound": (
        {"name": "mlp", "kwargs": {"hidden_sizes": [1024, 1024]}},
        {"name": "synthetic-images", "shape": [1, 8, 8], "size": 16_000},
        6,
    ),
    "compute-bound": ({"name": "small-cnn"}, {"name": "digits"}, 12),
}
NODE: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 100 * 2**20}


def experiment(name: str, model: dict, data: dict, epochs: int) -> Any:
    from scaleprof.config import Experiment

    return Experiment.model_validate(
        {
            "name": f"predict-{name}",
            "model": model,
            "data": data,
            "train": {"epochs": epochs, "batch_size": 64},
            "placements": [{"name": "w1", "workers": 1}, {"name": "w2", "workers": 2, "strategy": "STRICT_SPREAD"}],
        }
    )


def one_round(name: str, out: Path) -> dict[str, Any]:
    from scaleprof.analysis.summarize import summarize
    from scaleprof.execution.runner import run_study
    from scaleprof.telemetry.store import StudyStore

    model, data, epochs = MODELS[name]
    result = run_study(experiment(name, model, data, epochs), out)
    tables = summarize(StudyStore(result.study_dir))
    runs = tables.runs.set_index("placement")
    ledger = tables.ledger.set_index("method")
    physics = ledger.loc["physics"]
    one, two = float(runs.loc["w1", "throughput"]), float(runs.loc["w2", "throughput"])
    linear = 2 * one
    return {
        "model": name,
        "study": str(result.study_dir),
        "w1": one,
        "w2_measured": two,
        "w2_measured_interval": [float(runs.loc["w2", "throughput_low"]), float(runs.loc["w2", "throughput_high"])],
        "w2_nodes": int(runs.loc["w2", "nodes_realized"]),
        "physics_predicted": float(physics["predicted"]),
        "physics_interval": [float(physics["low"]), float(physics["high"])],
        "physics_error_pct": float(physics["error_pct"]),
        "physics_inside_interval": bool(physics["covered"]),
        "physics_reason": str(physics["reason"]),
        "physics_caveat": str(physics["caveat"]),
        "linear_predicted": linear,
        "linear_error_pct": 100 * (linear - two) / two,
        "efficiency_measured": two / linear,
        "efficiency_predicted": float(physics["predicted"]) / linear,
        "gradient_bytes": float(runs.loc["w1", "gradient_bytes"]),
        "w2_exposed_allreduce_s": float(runs.loc["w2", "step_allreduce_s"]),
        "step_s_w1": float(runs.loc["w1", "step_time_p50_s"]),
        "fabric_rows": 0 if tables.fabric is None else len(tables.fabric),
        # The host-sharing probe (the two Ray nodes are one machine): w2's compute together over alone.
        "w2_host_sharing": float(runs.loc["w2", "host_sharing"]),
        "w2_host_sharing_range": [float(runs.loc["w2", f"host_sharing_{side}"]) for side in ("low", "high")],
        "w2_hosts": int(runs.loc["w2", "hosts_realized"]),
        # Where the miss came from, per step (the ledger's parts): compute, and the all-reduce with the wait.
        **{
            f"{part}_{side}_s": float(physics[f"{part}_{side}_s"])
            for part in ("compute", "sync")
            for side in ("predicted", "measured")
        },
    }


def bench_prediction(rounds: int) -> dict[str, Any]:
    """The 2-worker throughput predicted from the 1-worker run + the fabric and host-sharing probes alone (which
    the 2-worker run made after training), against the measured one, for a communication-bound and a
    compute-bound model, on a two-node local cluster (one machine); rounds alternate them."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")  # type: ignore[arg-type]
    cluster.wait_for_nodes()
    out = Path(tempfile.mkdtemp(prefix="bench-prediction-"))
    rows = []
    try:
        for i in range(rounds):
            for name in MODELS if i % 2 == 0 else reversed(list(MODELS)):
                rows.append(one_round(name, out) | {"round": i})
                print(rows[-1], flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    summary = {}
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        summary[name] = {
            "median_abs_physics_error_pct": statistics.median(abs(r["physics_error_pct"]) for r in mine),
            "median_abs_linear_error_pct": statistics.median(abs(r["linear_error_pct"]) for r in mine),
            "inside_interval": sum(r["physics_inside_interval"] for r in mine),
            "rounds": len(mine),
            "median_efficiency_measured": statistics.median(r["efficiency_measured"] for r in mine),
            "median_efficiency_predicted": statistics.median(r["efficiency_predicted"] for r in mine),
        }
    measured_order = sorted(MODELS, key=lambda n: summary[n]["median_efficiency_measured"])
    predicted_order = sorted(MODELS, key=lambda n: summary[n]["median_efficiency_predicted"])
    return {
        "what": bench_prediction.__doc__,
        "target": "within 15% and inside the interval for both models; efficiencies ranked as measured",
        "rows": rows,
        "summary": summary,
        "efficiency_ranked_as_measured": measured_order == predicted_order,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench import _write

    _write("prediction", bench_prediction(args.rounds))


if __name__ == "__main__":
    main()
