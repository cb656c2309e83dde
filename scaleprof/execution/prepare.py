"""What the driver works out once per study and hands to every run.

The data set is loaded once here; each run gets its split indices (scikit-learn, so workers never
import it), the small real data set's arrays, and its model's FLOPs per sample (torch's
FlopCounterMode, whose first use costs over a second: once per model here, not per worker per run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaleprof.config import Experiment
from scaleprof.plan import PlannedRun
from scaleprof.workloads.data import Dataset, load_dataset, run_split, shipped_arrays


@dataclass
class StudyInputs:
    experiment: Experiment
    data: Dataset
    model_info: dict[str, dict[str, float]]  # by model label: flops_per_sample, parameters

    def for_run(self, run: PlannedRun) -> dict[str, Any]:
        return {
            "split": run_split(self.data, self.experiment.seed, run.fold, run.folds),
            "shipped": shipped_arrays(self.data, self.experiment.data),
            "model_info": self.model_info[run.model.label],
        }


    def for_inference(self) -> dict[str, Any]:
        return {"test": self.data.test_idx, "shipped": shipped_arrays(self.data, self.experiment.data)}


def prepare(experiment: Experiment) -> StudyInputs:
    from scaleprof.workloads.models import model_info

    data = load_dataset(experiment.data, experiment.seed)
    info = {
        m.label: model_info(m, data.input_shape, data.num_classes, experiment.seed) for m in experiment.model_list
    }
    return StudyInputs(experiment, data, info)
