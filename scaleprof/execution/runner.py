"""Runs a study on Ray: one Ray per study, one TorchTrainer per run, the study's aggregators for all.

The runner owns each run's life cycle and records every transition in the study store:
planned -> placed -> running -> ok | failed | skipped (with a reason). A placement the cluster
cannot hold is skipped after a bounded wait, never left to hang and never run on other hardware.
On an autoscaling cluster a placement that fits once nodes are added is requested (its placement
group is Ray's demand to the autoscaler) and waited for; one no node type could hold is skipped at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scaleprof.capacity import Outlook, Verdict, verdict
from scaleprof.config import Experiment
from scaleprof.errors import RayLost, write_error
from scaleprof.execution.assignment import ASSIGNMENT, WorkerAssignment
from scaleprof.execution.cluster import cluster_view, node_types_of, pending_nodes
from scaleprof.execution.failures import decide, lost_nodes
from scaleprof.execution.lifecycle import RunLifecycle
from scaleprof.execution.manifest import collect_manifest
from scaleprof.execution.prepare import StudyInputs, prepare
from scaleprof.execution.ray_session import GcsWatch, connect_ray, job_runtime_env
from scaleprof.execution.scope import study_scope
from scaleprof.plan import PlannedRun, bundle, expand, unsupported
from scaleprof.records import FINISHED, NO_STEPS, RunRecord, RunStatus
from scaleprof.telemetry.handle import Aggregators, start_aggregators
from scaleprof.telemetry.live_metrics import LiveMetrics
from scaleprof.telemetry.monitor import name_os_thread
from scaleprof.telemetry.store import StudyStore

log = logging.getLogger(__name__)


class Observer(Protocol):
    """Whoever shows progress: the CLI's terminal display, or nothing in tests."""

    def study_started(self, study_dir: Path, runs: int, ray_address: str) -> None: ...
    def run_started(self, run: PlannedRun, total: int, epochs: int) -> None: ...
    def run_waiting(self, run: PlannedRun, text: str) -> None: ...
    def run_progress(self, run: PlannedRun, progress: dict[str, Any]) -> None: ...
    def run_finished(self, run: PlannedRun, record: dict[str, Any]) -> None: ...
    def inference_started(self, devices: Sequence[str]) -> None: ...


class QuietObserver:
    def study_started(self, study_dir: Path, runs: int, ray_address: str) -> None:
        pass

    def run_started(self, run: PlannedRun, total: int, epochs: int) -> None:
        pass

    def run_waiting(self, run: PlannedRun, text: str) -> None:
        pass

    def run_progress(self, run: PlannedRun, progress: dict[str, Any]) -> None:
        pass

    def run_finished(self, run: PlannedRun, record: dict[str, Any]) -> None:
        pass

    def inference_started(self, devices: Sequence[str]) -> None:
        pass


@dataclass
class StudyResult:
    study_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    aggregator_stats: dict[str, Any] = field(default_factory=dict)


def new_study_dir(out_dir: Path, name: str) -> Path:
    """A new, empty study directory, made here: `mkdir` is atomic, so two studies of the same name
    started in the same second each get their own (the second takes the next suffix)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = out_dir / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def waiting_text(found: Verdict, pending: dict[str, int], waited_s: float, timeout_s: float) -> str:
    """The progress line while a placement waits for the autoscaler."""
    if pending:
        what = ", ".join(f"{n} node(s) of type {kind}" for kind, n in sorted(pending.items()))
        head = f"waiting for the autoscaler: {what} launching"
    elif found.nodes_to_add:
        what = ", ".join(f"{n} node(s) of type {kind}" for kind, n in found.nodes_to_add)
        head = f"waiting for the autoscaler: needs {what}"
    else:
        head = "waiting for the autoscaler" + (f": {found.reason}" if found.reason else "")
    return f"{head}; {waited_s:.0f} s of at most {timeout_s:g} s"


def _wait_for_resources(
    run: PlannedRun, timeout_s: float, found: Verdict, observer: Observer
) -> tuple[str | None, float]:
    """Reserve the placement's bundles once, waiting up to `timeout_s`: (None, seconds waited) when they
    can be had, else (why not, seconds waited). The placement group is the request: the autoscaler
    launches nodes for a pending one; removing it withdraws the request. It is polled each second so
    Ctrl-C (or `ray job stop`) ends the wait at once."""
    from ray.util.placement_group import placement_group, remove_placement_group

    p = run.placement
    need = bundle(p)
    started = time.monotonic()
    pg = placement_group([dict(need) for _ in range(p.workers)], strategy=p.strategy)
    try:
        while True:
            if pg.wait(timeout_seconds=1):  # whole seconds (Ray's call takes an int); 0 would not wait at all
                return None, time.monotonic() - started
            waited = time.monotonic() - started
            if waited >= timeout_s:
                break
            if found.outlook == Outlook.SCALE:
                observer.run_waiting(run, waiting_text(found, pending_nodes(), waited, timeout_s))
    finally:
        remove_placement_group(pg)  # a leftover group would hold resources (or keep asking for nodes)
    if found.outlook == Outlook.SCALE:
        reason = (
            f"{p.strategy} placement of {p.workers} worker(s) x {need} was requested from the autoscaler "
            f"but did not become available within {timeout_s:g}s (raise ray.placement_timeout_s: new nodes "
            "can take minutes)"
        )
    else:
        reason = (
            f"{p.strategy} placement of {p.workers} worker(s) x {need} did not become available within "
            f"{timeout_s:g}s (the cluster could hold it, but the resources were not free)"
        )
    return reason, time.monotonic() - started


class _ProgressPoller:
    def __init__(
        self,
        aggregator: Aggregators,
        run: PlannedRun,
        observer: Observer,
        metrics: LiveMetrics,
        interval_s: float = 1.0,
    ):
        self._aggregator, self._run, self._observer, self._metrics = aggregator, run, observer, metrics
        self._interval = interval_s
        self._stop = threading.Event()
        self._abandoned = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="scaleprof-progress")

    def __enter__(self) -> _ProgressPoller:
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._stop.set()
        if exc_type is not None and issubclass(exc_type, RayLost):
            # A poll in flight may wait out its timeout on a Ray that no longer answers: left, not waited for
            # (Ray is not shut down after a loss, so nothing tears it down under the thread); it shows nothing.
            self._abandoned = True
            self._thread.join(timeout=0.5)
            return
        self._thread.join()  # otherwise waited for: Ray may be shut down next, under a thread still calling it
        if exc_type is None:
            self._poll()  # a run shorter than one interval still shows where it ended

    def _poll(self) -> None:
        try:
            progress = self._aggregator.progress(self._run.run_id, timeout_s=5)
        except Exception:
            return  # the display is best-effort; the store is the record
        if self._abandoned:
            return
        self._observer.run_progress(self._run, progress)
        if progress.get("ranks"):
            try:
                self._metrics.update(self._run.run_id, self._run.placement.name, self._run.series, progress)
            except Exception:
                pass  # metrics are best-effort too (a cluster without a metrics agent)

    def _loop(self) -> None:
        name_os_thread("scaleprof-progress")
        while not self._stop.wait(self._interval):
            self._poll()


def worker_runtime_env(experiment: Experiment) -> dict[str, Any]:
    # cuBLAS reads this when CUDA starts, so it must be in the worker's environment from the outset. Nothing
    # otherwise: a runtime env of its own (even empty env_vars) can keep Ray from using a worker it has ready.
    return {"env_vars": {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}} if experiment.train.deterministic else {}


def _fit(
    run: PlannedRun,
    experiment: Experiment,
    assignment: WorkerAssignment,
    storage: Path,
    watch: GcsWatch | None = None,
) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from scaleprof.execution.worker import train_loop_per_worker

    p = run.placement
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={ASSIGNMENT: assignment},
        scaling_config=ScalingConfig(
            num_workers=p.workers,
            use_gpu=p.gpus_per_worker > 0,
            resources_per_worker=bundle(p),
            placement_strategy=p.strategy,
        ),
        run_config=RunConfig(
            name=run.run_id,
            storage_path=str(storage),
            worker_runtime_env=worker_runtime_env(experiment),  # type: ignore[call-arg]  # Train V2's RunConfig
            # Worker-group restarts as the experiment asks; a finite controller limit (the default, -1,
            # retries a failing controller forever).
            failure_config=FailureConfig(  # type: ignore[call-arg]  # Train V2's FailureConfig
                max_failures=experiment.train.max_failures, controller_failure_limit=0
            ),
        ),
    )
    # fit() runs on a helper thread: in the main thread Ray Train installs its own SIGINT handler
    # (never restored), which aborts only the current run, so Ctrl-C would not stop the study.
    # Here Ctrl-C raises KeyboardInterrupt in the main thread; the driver's exit ends the run.
    errors: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # handed to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=fit, name="scaleprof-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        if watch is not None:
            watch.check()  # Ray is gone: fit() would only hang until Ray's client ends the process
    if errors:
        raise errors[0]


def _attempts(aggregator: Aggregators, run: PlannedRun) -> int | None:
    """How many times the run's workers started (1 + restarts); None if the aggregator cannot say."""
    import ray

    try:
        return ray.get(aggregator.first.attempts.remote(run.run_id), timeout=30)
    except Exception:
        return None


def _ray_lost(exc: BaseException, watch: GcsWatch | None) -> RayLost | None:
    """The loss of Ray itself when that is what made the run fail (its GCS gone), else None."""
    if isinstance(exc, RayLost):
        return exc
    if watch is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return None
    try:
        watch.settle()
    except RayLost as lost:
        return lost
    return None


def _recorded_steps(aggregator: Aggregators, run: PlannedRun) -> bool:
    """Whether any step of the run reached the aggregators (True when they cannot say: the analysis
    checks again from the store)."""
    try:
        return aggregator.progress(run.run_id, timeout_s=30).get("step_s") is not None
    except Exception:
        return True


def _landed_on(aggregator: Aggregators, run_id: str) -> dict[str, int]:
    """Node types the run's workers ran on, with the number of nodes of each (where Ray knows the type)."""
    try:
        used = aggregator.nodes(run_id, timeout_s=30)
        return dict(Counter(node_types_of(used).values()))
    except Exception:
        return {}


def run_one(
    run: PlannedRun,
    experiment: Experiment,
    study_id: str,
    store: StudyStore,
    aggregator: Aggregators,
    inputs: StudyInputs,
    observer: Observer | None = None,
    watch: GcsWatch | None = None,
) -> dict[str, Any]:
    life = RunLifecycle(store, planned_record(run, experiment))
    life.to(RunStatus.PLANNED)

    reason, wait_s = unsupported(run), 0.0
    if reason is None:
        view = cluster_view()
        found = verdict(run.placement, view.node_resources(), view.autoscaling, view.node_types)
        if found.outlook == Outlook.NEVER:
            reason = found.reason
        else:
            reason, wait_s = _wait_for_resources(
                run, experiment.ray.placement_timeout_s, found, observer or QuietObserver()
            )
    if reason is not None:
        return life.to(RunStatus.SKIPPED, reason=reason, wait_s=wait_s)
    life.to(RunStatus.PLACED, wait_s=wait_s)

    started = time.time()
    life.to(RunStatus.RUNNING, started_at=started)
    storage = store.root / "_ray_train"
    status, outcome = RunStatus.OK, {"reason": ""}
    try:
        _fit(run, experiment, inputs.assignment(run, study_id, aggregator), storage, watch)
    except BaseException as exc:  # one policy decides what it means (execution/failures.py)
        lost = _ray_lost(exc, watch)
        if lost is not None:  # nothing more can run, nor be asked of Ray: record it and stop the study
            life.to(RunStatus.FAILED, reason=str(lost), started_at=started, ended_at=time.time())
            raise lost from exc
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        decision = decide(exc, "" if interrupted else lost_nodes(aggregator, run.run_id))
        status, outcome = RunStatus.SKIPPED if decision.skip else RunStatus.FAILED, {"reason": decision.reason}
        if not interrupted and not decision.skip:
            outcome["detail"] = traceback.format_exc()[-4000:]
        if decision.stop_study:
            life.to(status, **outcome, started_at=started, ended_at=time.time())
            if decision.write_failure:  # the workers could not write to the study: the next run could not either
                raise write_error(decision.write_failure, store.root) from exc
            raise
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    ended = time.time()
    if status == RunStatus.OK and not _recorded_steps(aggregator, run):
        status, outcome = RunStatus.UNMEASURED, {"reason": NO_STEPS}
    return life.to(
        status,
        **outcome,
        started_at=started,
        ended_at=ended,
        wall_s=ended - started,
        attempts=_attempts(aggregator, run),
        wait_s=wait_s,
        ray_node_types=_landed_on(aggregator, run.run_id),
    )


def planned_record(run: PlannedRun, experiment: Experiment) -> RunRecord:
    """The run record a planned run starts with: what it is, where it is to run, with which settings."""
    train = run.experiment.train
    return RunRecord(
        run_id=run.run_id,
        index=run.index,
        model=run.series,
        model_name=run.model.name or run.model.factory or f"built by {experiment.train.loop}",
        kind=run.kind,
        fold=run.fold,
        placement=run.placement.name,
        device=run.placement.device,
        workers=run.placement.workers,
        cpus_per_worker=run.placement.cpus_per_worker,
        gpus_per_worker=run.placement.gpus_per_worker,
        per_worker_batch=run.per_worker_batch,
        global_batch=run.global_batch,
        repeat=run.repeat,
        strategy=run.placement.strategy,
        nodes_requested=run.placement.expected_nodes,
        node_type=experiment.node_type(run.placement),
        model_label=run.model.label,
        batch_series=run.batch_series,
        settings=run.point,
        task=experiment.task,
        train_precision=train.precision,
        parallelism=train.parallelism,
        compile=train.compile_label,
        grad_accumulation=train.grad_accumulation,
        optimizer=train.optimizer.name,
        tokens_per_sample=experiment.data.seq_len
        if experiment.data is not None and experiment.data.is_tokens
        else None,
    )


def run_study(
    experiment: Experiment,
    out_dir: Path,
    observer: Observer | None = None,
    study_dir: Path | None = None,
    pricing: dict[str, Any] | None = None,
    resume: bool = False,
    inputs: StudyInputs | None = None,
    verbose: bool = False,
) -> StudyResult:
    """Run every planned run of the experiment; write events, run records and the manifest.

    `pricing` holds the pricing-table rows the placements name (see scaleprof.pricing); they are
    copied into the manifest so costs can be recomputed from the study alone. With `resume`, the
    study directory exists already: runs whose last record is ok or skipped are kept, the rest run.
    `inputs` is what `prepare(experiment)` found, when the caller has already checked it; `verbose`
    shows the Ray workers' logs.
    """
    with study_scope(experiment):
        return _run_study(experiment, out_dir, observer, pricing, study_dir, resume, inputs, verbose)


def _run_study(
    experiment: Experiment,
    out_dir: Path,
    observer: Observer | None,
    pricing: dict[str, Any] | None,
    study_dir: Path | None,
    resume: bool,
    inputs: StudyInputs | None,
    verbose: bool,
) -> StudyResult:
    import ray

    observer = observer or QuietObserver()
    # Absolute: Ray Train's storage_path must be a URI or an absolute path.
    study_dir = (study_dir or new_study_dir(out_dir, experiment.name)).resolve()
    study_id = study_dir.name
    runs = expand(experiment)
    inputs = inputs or prepare(experiment)
    code = job_runtime_env(experiment)
    started_ray = connect_ray(code, log_to_driver=verbose)  # before the study directory exists: a refusal leaves none
    if code and not started_ray:
        log.warning(
            "scaleprof: Ray was already initialised by this program, so scaleprof cannot ship your modules "
            "(%s) to the workers; start Ray with ray.init(runtime_env=%r) or let scaleprof start it",
            ", ".join(experiment.code_dirs or []),
            code,
        )
    result = StudyResult(study_dir)
    stack, ray_lost = contextlib.ExitStack(), False
    try:
        store = StudyStore(study_dir)
        done: dict[str, dict[str, Any]] = {}
        if resume:
            store.repair()  # a driver killed mid-append leaves half a line: cut it before appending more
            done = {k: f.raw for k, f in store.final_run_records().items() if f.outcome.status in FINISHED}
        else:
            store.create()
        observer.study_started(study_dir, len(runs), ray.get_runtime_context().gcs_address)
        if resume:
            manifest = store.manifest().raw  # as stored: what this run adds is written back with it
            manifest.setdefault("resumed_at", []).append(time.time())
        else:
            manifest = collect_manifest(experiment, study_id, pricing, inputs.data, inputs.model_info)
        store.write_manifest(manifest)
        aggregator = start_aggregators(str(study_dir), experiment.monitor.aggregators)
        metrics = LiveMetrics(study_id)
        watch = stack.enter_context(GcsWatch(ray.get_runtime_context().gcs_address))
        for run in runs:
            if run.run_id in done:
                result.records.append(done[run.run_id])
                observer.run_finished(run, {**done[run.run_id], "reason": "kept from the interrupted study"})
                continue
            observer.run_started(run, len(runs), experiment.train.epochs)
            if experiment.monitor.node_relays:  # a relay on every node alive now (an autoscaled one may be new)
                aggregator = aggregator.with_relays(str(study_dir), [n.node_id for n in cluster_view().nodes])
            with _ProgressPoller(aggregator, run, observer, metrics):
                record = run_one(run, experiment, study_id, store, aggregator, inputs, observer, watch)
            result.records.append(record)
            observer.run_finished(run, record)
        if experiment.evaluation.inference is not None:
            from scaleprof.execution.inference import run_inference

            observer.inference_started(experiment.evaluation.inference.devices)
            store.append_inference(
                run_inference(experiment, experiment.ray.placement_timeout_s, inputs.for_inference())
            )
        result.aggregator_stats = aggregator.close()  # what waits written, small segments merged
        manifest.update(finished_at=time.time(), telemetry=result.aggregator_stats)
        store.write_manifest(manifest)
        aggregator.kill()
    except RayLost:
        ray_lost = True
        raise
    finally:
        stack.close()
        if started_ray and not ray_lost:  # a Ray without its GCS cannot be shut down, only left
            ray.shutdown()
    return result
