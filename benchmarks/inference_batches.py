"""The inference probe's batch scaling on this machine's CPU: the same probe a study's `evaluation.inference` runs
(execution/inference.py, here without its Ray actor), on the digits MLP at batch sizes 1, 8 and 64, `rounds`
times. A 1-sample forward of a small MLP is all overhead, so 8 samples at once should go several times faster
per sample; `ratio_8_over_1` is that factor per round. (It was a unit test's assertion, `> 2`, until it failed
once while other tests ran beside it: a timing claim belongs here, measured with the machine to itself.)

    .venv/bin/python benchmarks/inference_batches.py [--rounds 5]     # or: bench.py inference

Results: benchmarks/results/inference_batches.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

EXPERIMENT: dict[str, Any] = {
    "name": "inference-batches",
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "placements": [{"name": "cpu-1", "workers": 1}],
    "evaluation": {"inference": {"batch_sizes": [1, 8, 64], "warmup": 3, "iterations": 40, "devices": ["cpu"]}},
}


def bench_inference_batches(rounds: int) -> dict[str, Any]:
    """Samples/s by batch size from the inference probe, `rounds` times (see the module's docstring)."""
    from scaleprof.config import Experiment
    from scaleprof.execution.inference import InferenceProbe
    from scaleprof.execution.prepare import prepare

    experiment = Experiment.model_validate(EXPERIMENT)
    inputs = prepare(experiment, measure=False).for_inference()
    per_round = []
    for _ in range(rounds):
        rows = InferenceProbe(experiment.resolved(), "mlp", "cpu", inputs).run()
        per_round.append({row["batch_size"]: row["throughput"] for row in rows})
    ratios = [r[8] / r[1] for r in per_round]
    return {
        "what": bench_inference_batches.__doc__,
        "samples_per_s_by_batch": per_round,
        "ratio_8_over_1": ratios,
        "ratio_8_over_1_median": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench import _write

    _write("inference_batches", bench_inference_batches(args.rounds))


if __name__ == "__main__":
    main()
