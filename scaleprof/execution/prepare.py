"""What the driver works out once per study and hands to every run.

The data set is opened once here; each run gets its split indices (scikit-learn, so workers never
import it), the data set's size, shape and classes, the small real data set's arrays, and its model's
FLOPs per sample (torch's FlopCounterMode, whose first use costs over a second: once per model here,
not per worker per run). The user's code is imported here first, so every error in it is found
before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaleprof.config import Experiment, ModelSpec
from scaleprof.execution.assignment import InferenceInputs, WorkerAssignment
from scaleprof.plan import PlannedRun
from scaleprof.workloads.data import DataFacts, Dataset, cv_split, load_dataset, run_split, shipped_arrays
from scaleprof.workloads.imports import WorkloadError, import_object, user_code

if TYPE_CHECKING:
    from scaleprof.telemetry.handle import Aggregators


@dataclass
class StudyInputs:
    experiment: Experiment
    data: Dataset | None  # None when the user's loop brings its own data
    model_info: dict[str, dict[str, float]]  # by model_key: flops_per_sample, parameters

    def assignment(self, run: PlannedRun, study_id: str, aggregator: Aggregators) -> WorkerAssignment:
        """What each of the run's workers receives."""
        data, spec = self.data, self.experiment.data
        return WorkerAssignment(
            experiment=run.experiment.resolved(),  # at the run's sweep point
            study_id=study_id,
            run_id=run.run_id,
            model_label=run.model.label,
            per_worker_batch=run.per_worker_batch,
            cpus_per_worker=run.placement.cpus_per_worker,
            aggregator=aggregator,
            split=run_split(data, self.experiment.seed, run.fold, run.folds) if data is not None else None,
            shipped=shipped_arrays(data, spec) if data is not None and spec is not None else None,
            data_info=DataFacts.of(data) if data is not None else None,
            flops_per_sample=self.model_info.get(model_key(run.model), {}).get("flops_per_sample"),
        )

    def for_inference(self) -> InferenceInputs:
        assert self.data is not None and self.experiment.data is not None  # the config requires data for inference
        return InferenceInputs(
            self.data.test_idx, shipped_arrays(self.data, self.experiment.data), DataFacts.of(self.data)
        )


def prepare(experiment: Experiment, measure: bool = True) -> StudyInputs:
    """Import the user's code, open the data, check and measure every model; a WorkloadError names the
    experiment field at fault (`data.path`, `models.1.factory`, `train.loop`, ...). Without `measure` the
    models are checked but their FLOPs not counted (`plan` shows none; counting a large one takes seconds).
    The user's code directories are on sys.path only while this runs (workloads/imports.user_code)."""
    with user_code(experiment.code_dirs):
        return _prepare(experiment, measure)


def _prepare(experiment: Experiment, measure: bool) -> StudyInputs:
    from scaleprof.workloads.models import build_model, check_model, model_info

    if experiment.train.loop is not None:
        check_loop(experiment.train.loop)
    if experiment.data is None:  # the loop brings its data: a model factory can only be built, not run
        for i, model in enumerate(experiment.model_list):
            if model.factory:
                where = "model" if experiment.models is None else f"models.{i}"
                try:
                    build_model(model, (), 0, experiment.seed)
                except WorkloadError as err:
                    raise WorkloadError(f"{where}.{err.field}", err.message) from None
        check_compile_backends(experiment)
        return StudyInputs(experiment, None, {})
    data = load_dataset(experiment.data, experiment.seed)
    if experiment.task == "classification":  # language models are not cross-validated by class
        check_folds(data, experiment.evaluation.cv_folds, experiment.seed)
    info: dict[str, dict[str, float]] = {}
    for point in experiment.points():  # a swept model.kwargs or model.config is another model
        for i, model in enumerate(experiment.at(point).model_list):
            if model_key(model) in info:
                continue
            where = "model" if experiment.models is None else f"models.{i}"
            if point and any(k.startswith("model.") for k in point):
                where += f" (at the sweep point {point})"
            problem = check_model(model, data.input_shape, data.num_classes, task=experiment.task)
            if problem:
                field, _, message = problem.partition(": ")
                raise WorkloadError(f"{where}.{field}", message)
            info[model_key(model)] = (
                model_info(model, data.input_shape, data.num_classes, experiment.seed, task=experiment.task)
                if measure
                else {}
            )
    check_compile_backends(experiment)
    return StudyInputs(experiment, data, info)


def check_compile_backends(experiment: Experiment) -> None:
    """Every torch.compile backend the study names is one the installed torch has (its own, or one the user's
    code registered: that code is imported by now), so a misspelt backend fails `plan`, not every run."""
    wanted: dict[str, str] = {}  # backend: the field that names it
    for point in experiment.points():
        spec = experiment.at(point).train.compile
        if spec is not None:
            field = "sweep.train.compile" if "train.compile" in point else "train.compile.backend"
            wanted.setdefault(spec.backend, field)
    if not wanted:
        return  # torch._dynamo costs a second to import: only when something is compiled
    import torch
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())  # debug and experimental ones too: they are valid
    for backend, field in wanted.items():
        if backend not in known:
            shown = [name for name in known if not name.endswith("_TESTING_ONLY")]
            raise WorkloadError(
                field,
                f"{backend!r} is not a torch.compile backend of the installed torch {torch.__version__}; "
                f"use one of {', '.join(shown)}",
            )


def check_folds(data: Dataset, folds: int | None, seed: int) -> None:
    """Every cross-validation fold can be made (stratified: each class needs a member per fold), now,
    as `plan` checks, not when the first fold's run starts."""
    if not folds:
        return
    for fold in range(folds):
        try:
            cv_split(data, folds, fold, seed)
        except ValueError as exc:
            pool = len(data.train_idx) + len(data.val_idx)
            raise WorkloadError(
                "evaluation.cv_folds", f"cannot make {folds} stratified folds of the {pool} train+val items ({exc})"
            ) from None


def model_key(model: ModelSpec) -> str:
    """One model as built: its spec (a swept kwarg makes another model)."""
    return model.model_dump_json(by_alias=True)


def check_loop(path: str) -> None:
    """The loop imports and takes Ray Train's `config` argument (or none)."""
    import inspect

    loop = import_object(path, "train.loop")
    try:
        signature = inspect.signature(loop)
    except (TypeError, ValueError):
        return  # a builtin or C function: Ray will call it; nothing more to check here
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) > 1:
        raise WorkloadError(
            "train.loop", f"{path} takes {len(required)} arguments; a Ray Train loop takes one (config)"
        )
