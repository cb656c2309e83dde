"""The worker-side API: what a Ray Train training loop calls to be profiled by scaleprof.

scaleprof's own classification loop is written on it, like any user's loop::

    from scaleprof import session

    def train_func(config):                      # an ordinary Ray Train train_loop_per_worker
        model = session.prepare_model(build(), example_input=torch.zeros(2, 3, 32, 32))
        loader = session.prepare_data_loader(DataLoader(data, batch_size=config["batch_size"], shuffle=True))
        for epoch in session.epochs():           # the experiment's epochs; all ranks start each together
            for x, y in session.steps(loader):   # times the wait for each batch and each step
                loss = F.cross_entropy(model(x), y)
                ...
                session.report_loss(loss)        # optional: the epoch's training loss
        session.report_predictions(y_true, proba)  # optional: every quality metric and the confusion matrix

An epoch's time runs from its start (after a barrier) to the end of its last step: whatever the loop
does after `steps()` ends (validation, checkpoints) is outside it, as in the built-in loop. A step runs
from the end of the previous step to the moment the loop asks for the next batch; its data wait is the
time `next()` took on the loader. `mark("forward")`, `mark("backward")`, `mark("optimizer")` inside a
step split it further (host clock on CPU, CUDA events on a GPU). Outside a run that scaleprof started
every function raises `SessionError`, so a loop cannot silently go unmeasured.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scaleprof.config import ProfileSpec, TrainSpec
from scaleprof.records import (
    EpochEvent,
    EvalEvent,
    Event,
    LoaderInfo,
    ModelInfo,
    ProbeEvent,
    StepEvent,
    WorkerStart,
)
from scaleprof.versions import toolchain
from scaleprof.worker.arrivals import measure_clock_offset, watch_arrival
from scaleprof.worker.training import (
    Precision,
    check_device,
    compile_model,
    compile_seconds,
    host_memory_peak_mb,
    model_state_mb,
    set_gradient_sync,
    shard,
    unwrap,
)

PHASES = ("forward", "backward", "optimizer")


class SessionError(RuntimeError):
    """scaleprof.session used outside a run that scaleprof started, or used wrongly."""


class StepClock:
    """Marks inside a step: host clock on CPU; CUDA events on a GPU, so timing never adds a sync of its
    own: a step's events are read once the device has passed them (`ready`), a later step's or the end
    of the steps, never by stopping the host each step."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._device = device

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start

    def ready(self, mark: Any) -> bool:
        """The device has passed this mark (never blocks)."""
        return bool(mark.query()) if self.cuda else True

    def wait(self, mark: Any) -> None:
        if self.cuda:
            mark.synchronize()

    def wait_all(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self._device)


@dataclass
class _PendingStep:
    """A GPU step whose events the device has not passed yet (read once it has: no per-step host sync)."""

    event: StepEvent
    marks: dict[str, Any]
    previous: Any  # the mark the step's device time starts from: the last step's end, or the epoch's start
    end: Any
    hold: bool


# The host-sharing probe's batches per pass (of the sync probe's): its cost is (ranks per machine + 1) x 2 passes.
SHARING_BATCHES = 4
# The wrapper probe: rounds of SHARING_BATCHES batches bare then wrapped, 2 at least and 4 at most, fewer where
# the first ones took over WRAPPER_BUDGET_S (a model whose step takes a second pays 16 steps, not an epoch);
# its range is that of the rounds' figures.
WRAPPER_ROUNDS = (2, 4)
WRAPPER_BUDGET_S = 2.0
MAX_PENDING_STEPS = 256  # the host may run this far ahead of the device before a step's end is waited for


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (a tensor, tuple, list or dict)."""
    first = batch
    while isinstance(first, (tuple, list, dict)) and len(first):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    shape = getattr(first, "shape", None)
    if not shape:
        raise SessionError(
            f"cannot tell how many samples a {type(batch).__name__} batch holds; pass steps(loader, samples=...)"
        )
    return int(shape[0])


def measured_cpu_peak_flops(
    threads: int, size: int = 512, seconds: float = 0.3, dtype: torch.dtype = torch.float32
) -> float:
    """This worker's matmul FLOP/s on its own threads, in the run's math precision: the denominator of
    CPU MFU (a bf16 run is measured against bf16 matmuls, not FP32 ones)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - start)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _length(loader: Any) -> int | None:
    """Batches in the loader, or None (an IterableDataset's DataLoader has __len__ but raises)."""
    try:
        return len(loader)
    except TypeError:
        return None


def _passes(loader: Any, limit: int) -> Iterator[Any]:
    """`limit` batches of the loader: cut short, or over as many passes as it takes (a pass that yields
    nothing ends it: an empty loader must not loop forever)."""
    given = 0
    while given < limit:
        before = given
        for batch in loader:
            yield batch
            given += 1
            if given == limit:
                return
        if given == before:
            return


def math_mode(model: torch.nn.Module, precision: str, device: torch.device) -> str:
    """The math the model's FLOPs run in, for the MFU peak: bf16/fp16 under autocast; on a GPU, FP32 runs on
    TF32 tensor cores where PyTorch allows it: convolutions by default (cudnn.allow_tf32), matmuls when
    the float32 matmul precision is not "highest". A model with convolutions counts as TF32 when they
    are allowed to (its FLOPs are mostly theirs)."""
    if precision in ("bf16", "fp16"):
        return precision
    if device.type != "cuda":
        return "fp32"
    convs = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    conv_tf32 = convs and torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return "tf32" if conv_tf32 or matmul_tf32 else "fp32"


def steps_in_epoch(loader: Any, train: TrainSpec) -> int | None:
    """The micro-batches `steps(loader)` will yield in one epoch (None: the loader has no length)."""
    if train.steps_per_epoch:
        return train.steps_per_epoch * train.grad_accumulation
    return _length(loader)


def barrier() -> None:
    """All ranks wait for each other (a no-op with one worker)."""
    import torch.distributed as dist

    if _distributed():
        dist.barrier()


class WorkerSession:
    """One worker's measurement state for one run; `scaleprof.execution.worker` creates it around the
    loop. `emit` goes to the run's event sink (stamped with ids and a gap-free sequence number)."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        store_predictions: Callable[[dict[str, Any]], None],
        *,
        rank: int,
        world_size: int,
        device: torch.device,
        threads: int,
        epochs: int,
        held_name: str = "test",
        held_index: np.ndarray | None = None,
        flops_per_sample: float | None = None,
        datasets: Callable[[], tuple[Any, Any, Any]] | None = None,
        build_model: Callable[[], torch.nn.Module] | None = None,
        train: TrainSpec | None = None,
        clock: StepClock | None = None,
        profile: ProfileSpec | None = None,
        store_trace: Callable[[str, bytes], Any] | None = None,
    ):
        self.emit = emit
        self._profile, self._store_trace = profile, store_trace
        # decided once: the training step checks one attribute when no trace is asked for
        self._may_trace = bool(profile and profile.torch_profiler and (profile.ranks == "all" or rank == 0))
        # Arrival at the exchange (scaleprof/arrivals.py): only where there is one, and not yet on GPUs (there a step's
        # marks are device events and its start a host time: one timeline for both is not built yet).
        self._arrivals = world_size > 1 and (profile is None or profile.arrivals) and device.type != "cuda"
        self._wall_base = time.time() - time.perf_counter()  # perf_counter readings as wall-clock time
        self._profiler: Any = None
        self._step_range: Any = None
        self._traced = 0  # steps traced so far (at most profile.steps, once per run)
        self._store_predictions = store_predictions
        self.rank, self.world_size, self.device, self.threads = rank, world_size, device, threads
        self.total_epochs = epochs
        self.held_name, self.held_index = held_name, held_index
        self._flops_per_sample = flops_per_sample
        self._datasets, self._build_model = datasets, build_model
        self.clock = clock or StepClock(device)
        self._pending: deque[_PendingStep] = deque()
        self._previous_mark: Any = None
        self.train = train or TrainSpec()
        self.precision = Precision(self.train.precision, device)
        self._sharded = False
        self._synced: list[torch.nn.Module] = []  # the DDP / FSDP modules whose gradient sync accumulation turns off
        self._boundary = True  # this micro-batch ends an optimizer step
        self._group = 1  # micro-batches in this optimizer step's group
        self._optimizer: torch.optim.Optimizer | None = None  # the one optimizer_step last saw
        self.gradient_bytes: int | None = None  # set by prepare_model
        self._state_mb: float | None = None  # parameters + gradients + optimizer state on this rank
        self._epoch_compile_start = self._compile_at_last_step = compile_seconds()
        self._loaders: list[Any] = []
        self._model_reported = self._loader_reported = False
        self._held: list[Event] = []
        self._epoch: int | None = None
        self._reset_epoch()

    # ---- the run's inputs -------------------------------------------------------------------
    def datasets(self) -> tuple[Any, Any, Any]:
        if self._datasets is None:
            raise SessionError("the experiment has no data: build your data sets in your loop")
        return self._datasets()

    def build_model(self) -> torch.nn.Module:
        if self._build_model is None:
            raise SessionError("this run's model is built by your loop (the experiment names no model)")
        return self._build_model()

    # ---- preparation --------------------------------------------------------------------------
    def prepare_model(
        self,
        model: torch.nn.Module,
        example_input: Any = None,
        flops_per_sample: float | None = None,
        **ray_kwargs: Any,
    ) -> torch.nn.Module:
        import ray.train.torch

        check_device(self.train, self.device)  # a precision this device cannot train in: the run is skipped
        first = not self._model_reported
        self._model_reported = True
        info = self._model_info(model, example_input, flops_per_sample) if first else None
        if first:  # what DDP all-reduces each step (float32 gradients): the fabric sweep's sizes follow it
            self.gradient_bytes = 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
        if self.train.parallelism == "fsdp":
            prepared = ray.train.torch.prepare_model(model, parallel_strategy=None, **ray_kwargs)  # to the device
            if _distributed():
                prepared, self._sharded = shard(prepared), True
        else:
            prepared = ray.train.torch.prepare_model(model, **ray_kwargs)  # to the device; DDP when world > 1
        if self._arrivals:
            self.watch_exchanges(prepared)
        self._synced.append(prepared)
        prepared = compile_model(prepared, self.train)
        if first:
            # The CPU peak is measured by every rank at once, after all have finished setting up: a rank
            # measuring while another still builds its model or DDP shares the cores (seen: a peak 4x low).
            barrier()
            if self._arrivals and _distributed():
                self._emit_now(measure_clock_offset(clock=lambda: self._wall_base + time.perf_counter()))
            dtype = self.precision.dtype or torch.float32
            peak = measured_cpu_peak_flops(self.threads, dtype=dtype) if self.device.type == "cpu" else None
            if info is not None:
                info.cpu_peak_flops = peak
                info.math_dtype = str(dtype).removeprefix("torch.")
                info.math_mode = math_mode(model, self.train.precision, self.device)
                self._emit_now(info)
        return prepared

    def _model_info(
        self, model: torch.nn.Module, example_input: Any, flops_per_sample: float | None
    ) -> ModelInfo | None:
        """Rank 0's record of the model (every rank runs the same model on the same kind of device)."""
        if self.rank != 0:
            return None
        flops = flops_per_sample if flops_per_sample is not None else self._flops_per_sample
        if flops is None and example_input is not None:
            flops = self._count_flops(model, example_input)
        return ModelInfo(parameters=sum(p.numel() for p in model.parameters()), flops_per_sample=flops)

    @staticmethod
    def _count_flops(model: torch.nn.Module, example_input: Any) -> float | None:
        """FLOPs per training sample, counted on a copy (a training-mode forward and backward would move
        BatchNorm statistics and gradients of the model itself); None, with a warning, when it fails."""
        import copy
        import logging

        from scaleprof.worker.flops import train_flops_per_sample

        try:
            return train_flops_per_sample(copy.deepcopy(model), example_input)
        except Exception as exc:  # MFU becomes unavailable; training must not fail for it
            logging.getLogger(__name__).warning("scaleprof: counting FLOPs failed (%s); no MFU for this run", exc)
            return None

    def prepare_data_loader(self, loader: torch.utils.data.DataLoader, **ray_kwargs: Any) -> Any:
        import ray.train.torch

        prepared = ray.train.torch.prepare_data_loader(loader, **ray_kwargs)
        self._loaders.append(prepared)
        if not self._loader_reported:
            self._loader_reported = True
            self._emit_now(
                LoaderInfo(
                    batch_size=loader.batch_size,
                    num_workers=loader.num_workers,
                    pin_memory=bool(loader.pin_memory),
                    persistent_workers=bool(loader.persistent_workers),
                    prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
                    batches=len(prepared) if hasattr(prepared, "__len__") else None,
                )
            )
        return prepared

    # ---- epochs and steps ---------------------------------------------------------------------
    def _reset_epoch(self) -> None:
        self._samples = self._steps = 0
        self._loss_sum: Any = 0.0  # a float, or a device tensor on a GPU
        self._loss_samples = 0
        self._epoch_start_wall = self._t_epoch = time.perf_counter()
        self._last_step_end: float | None = None
        self._extra: dict[str, float] = {}
        self._step_loss: Any = None
        self._marks: list[tuple[str, Any]] = []

    def epochs(self) -> Iterator[int]:
        for epoch in range(self.total_epochs):
            for loader in self._loaders:  # DistributedSampler reshuffles only when told the epoch
                set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
                if set_epoch is not None:
                    set_epoch(epoch)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)  # peak per epoch, not since process start
            barrier()
            self._reset_epoch()
            self._epoch_compile_start = self._compile_at_last_step = compile_seconds()
            self._epoch = epoch
            self._epoch_start_wall = time.time()
            self._t_epoch = time.perf_counter()
            self._previous_mark = self.clock.mark() if self.clock.cuda else None
            try:
                yield epoch
            except GeneratorExit:  # the loop broke out, or raised: held until `finish` or `abort` says which
                self._end_epoch(hold=True)
                raise
            self._end_epoch()

    def _end_epoch(self, hold: bool = False) -> None:
        end = self._last_step_end if self._last_step_end is not None else time.perf_counter()
        event = EpochEvent(
            epoch=int(self._epoch or 0),
            epoch_time_s=end - self._t_epoch,
            epoch_start=self._epoch_start_wall,
            samples=self._samples,
            steps=self._steps,
            train_loss=float(self._loss_sum) / self._loss_samples if self._loss_samples else None,
        )
        if self.device.type == "cuda":
            event.gpu_mem_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        event.host_mem_peak_mb = host_memory_peak_mb()
        event.state_mem_mb = self._state_mb
        if self._compile_at_last_step > self._epoch_compile_start:
            event.compile_s = self._compile_at_last_step - self._epoch_compile_start
        for name, value in self._extra.items():
            setattr(event, name, value)
        self._hold(event) if hold else self._emit_now(event)
        self._epoch = None

    def steps(self, loader: Any, samples: int | Callable[[Any], int] | None = None) -> Iterator[Any]:
        if self._epoch is None:
            raise SessionError("steps() must be called inside `for epoch in session.epochs():`")
        t_prev = self._last_step_end if self._last_step_end is not None else self._t_epoch
        k = self.train.grad_accumulation
        limit = self.train.steps_per_epoch * k if self.train.steps_per_epoch else None
        iterator = _passes(loader, limit) if limit is not None else iter(loader)
        batches = limit if limit is not None else _length(loader) if k > 1 else None
        try:
            yield from self._micro_batches(iterator, samples, t_prev, batches, k)
        finally:
            if self._profiler is not None:  # the epoch ran out of steps before the trace had them all
                self._stop_trace()
            if self.clock.cuda and self._pending:  # the steps' end: the device catches up, their events are read
                self.clock.wait_all()
                self._drain(wait=True)
                self._last_step_end = time.perf_counter()
            if k > 1:
                self._end_accumulation()

    def _micro_batches(self, iterator: Any, samples: Any, t_prev: float, batches: int | None, k: int) -> Iterator[Any]:
        step = 0
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            t_data = time.perf_counter()
            self._marks = [("start", self.clock.mark())]
            self._step_loss = None
            self._boundary = (step + 1) % k == 0 or (batches is not None and step + 1 == batches)
            if k > 1:
                # the last group of an epoch may hold fewer micro-batches: each is 1 / (its group's size)
                start = step - step % k
                self._group = k if batches is None else min(k, batches - start)
                for module in self._synced:
                    set_gradient_sync(module, self._boundary)
            n = samples(batch) if callable(samples) else samples if samples is not None else batch_size_of(batch)
            if self._may_trace and self._profiler is None and self._traces_here(step):
                self._start_trace()
            if self._profiler is not None:  # a ProfilerStep#N range per traced step: Perfetto and HTA see iterations
                self._step_range = torch.profiler.record_function(f"ProfilerStep#{self._traced}")
                self._step_range.__enter__()
            try:
                yield batch
            except GeneratorExit:  # the loop broke out after this step, or raised in it: held, decided later
                self._end_step(step, n, t_prev, t_data, hold=True)
                raise
            t_prev = self._end_step(step, n, t_prev, t_data)
            step += 1

    def _end_step(self, step: int, samples: int, t_prev: float, t_data: float, hold: bool = False) -> float:
        traced = self._profiler is not None
        if traced:
            self._step_range.__exit__(None, None, None)
            self._traced += 1
            if self._traced >= self._profile.steps:  # type: ignore[union-attr]
                self._stop_trace()  # exported inside this traced step, so no step after it pays for that
        end_mark = self.clock.mark()
        t_end = time.perf_counter()
        event = StepEvent(
            epoch=int(self._epoch or 0),
            step=step,
            samples=samples,
            data_s=t_data - t_prev,
            compute_s=t_end - t_data,
            step_s=t_end - t_prev,
        )
        if traced:
            event.profiled = True
        if self._arrivals:
            event.start_t = self._wall_base + t_prev
        if self.clock.cuda:  # read later, once the device has passed the step's end
            self._pending.append(_PendingStep(event, dict(self._marks), self._previous_mark, end_mark, hold))
            self._previous_mark = end_mark
            self._drain(wait=hold)
        else:
            self._finish_step(event, dict(self._marks), hold)
        if self._step_loss is not None:
            self._add_loss(self._step_loss, samples)
        # What the epoch's steps compiled (train.compile, or the loop's own torch.compile), evaluation after
        # them not: Dynamo's counter read at each step's end (about a microsecond).
        self._compile_at_last_step = compile_seconds()
        self._samples += samples
        self._steps += 1
        self._last_step_end = t_end
        return t_end

    # ---- the opt-in torch.profiler trace ---------------------------------------------------------
    def _traces_here(self, step: int) -> bool:
        """This step starts the run's trace: `profile.steps` steps from the third of the first steady epoch
        (the second; with one epoch, 2 steps after `train.warmup_steps`), on rank 0 or every rank."""
        if self._traced:  # once per run (`_may_trace` said whether this rank traces at all)
            return False
        steady_epoch = 1 if self.total_epochs > 1 else 0
        first = 2 if self.total_epochs > 1 else self.train.warmup_steps + 2
        return self._epoch == steady_epoch and step >= first

    def _start_trace(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._profiler = profile(activities=activities)
        self._profiler.__enter__()

    def _stop_trace(self) -> None:
        """End the trace; ship it, gzipped, to the study (a trace that cannot be written is logged, never
        fatal to the run)."""
        import gzip
        import logging
        import tempfile

        profiler, self._profiler = self._profiler, None
        self._traced = max(self._traced, 1)  # once per run
        try:
            profiler.__exit__(None, None, None)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "trace.json")
                profiler.export_chrome_trace(path)
                with open(path, "rb") as f:
                    data = gzip.compress(f.read())
            if self._store_trace is not None:
                self._store_trace(f"rank{self.rank}.json.gz", data)
        except Exception as exc:
            logging.getLogger(__name__).warning("scaleprof: the profiler trace was not stored (%s)", exc)

    def _finish_step(self, event: StepEvent, marks: dict[str, Any], hold: bool) -> None:
        if all(p in marks for p in PHASES):
            previous = marks["start"]
            for phase in PHASES:
                setattr(event, f"{phase}_s", self.clock.seconds(previous, marks[phase]))
                previous = marks[phase]
        if "enter" in marks and event.start_t is not None:
            event.enter_t = event.start_t + event.data_s + self.clock.seconds(marks["start"], marks["enter"])
        if "arrive" in marks and event.start_t is not None:
            event.arrive_t = event.start_t + event.data_s + self.clock.seconds(marks["start"], marks["arrive"])
            if "backward" in marks:
                event.sync_wait_s = max(0.0, self.clock.seconds(marks["arrive"], marks["backward"]))
        self._hold(event) if hold else self._emit_now(event)

    def _drain(self, wait: bool = False) -> None:
        """Emit the GPU steps the device has passed, oldest first (all of them, waiting, with `wait`; the
        oldest, waiting, when the host is MAX_PENDING_STEPS ahead). A step's time on a GPU is the device's:
        from the previous step's end (or the epoch's start) to its own end, idle gaps included; its data
        wait stays the host's, and compute is the rest."""
        while self._pending:
            head = self._pending[0]
            if not self.clock.ready(head.end):
                if not wait and len(self._pending) <= MAX_PENDING_STEPS:
                    return
                self.clock.wait(head.end)
            self._pending.popleft()
            event = head.event
            if head.previous is not None:
                event.step_s = self.clock.seconds(head.previous, head.end)
                event.compute_s = max(0.0, event.step_s - event.data_s)
            self._finish_step(event, head.marks, head.hold)

    def _add_loss(self, loss: Any, samples: int) -> None:
        """The epoch's sample-weighted loss sum. On a GPU it stays a device tensor, read once per epoch:
        reading it every step would synchronise host and device every step."""
        if isinstance(loss, torch.Tensor) and loss.device.type != "cpu":
            self._loss_sum = loss.float() * samples + self._loss_sum
        else:
            self._loss_sum += float(loss) * samples
        self._loss_samples += samples

    def _end_accumulation(self) -> None:
        """After an epoch's steps: gradient sync back on (the all-reduce probe and evaluation need it), and
        gradients of an unfinished group (a loader without a length) dropped, never carried into the next
        epoch's first step or synced by one rank only."""
        for module in self._synced:
            set_gradient_sync(module, True)
        if not self._boundary and self._optimizer is not None:
            self._optimizer.zero_grad(set_to_none=True)
        self._boundary, self._group = True, 1

    # ---- the training step's settings (precision, accumulation) ------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.backward(loss / self._group if self._group > 1 else loss)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        self._optimizer = optimizer
        if not self._boundary:
            return False
        self.precision.step(optimizer)
        if self._state_mb is None:  # after the first step, before gradients are freed: all of it is held
            self._state_mb = model_state_mb(self._synced, optimizer)
        optimizer.zero_grad(set_to_none=True)
        return True

    def evaluates_here(self) -> bool:
        """Rank 0 evaluates a replicated model; a sharded one needs every rank in its forward passes."""
        return self.rank == 0 or self._sharded

    def watch_exchanges(self, prepared: torch.nn.Module) -> None:
        """Where this rank meets the others in a step (scaleprof/arrivals.py): FSDP all-gathers the root's
        parameters as forward starts; DDP broadcasts buffers (BatchNorm's) as forward starts when it has any,
        and exchanges gradients once its last one is ready. The forward hooks go first, before FSDP's own
        pre-forward hook (which waits for the all-gather)."""
        if self._sharded:
            prepared.register_forward_pre_hook(lambda *_: self._enter(), prepend=True)
        elif isinstance(prepared, torch.nn.parallel.DistributedDataParallel):
            watch_arrival(prepared.module, self._arrive_at_boundary)
            if prepared.will_sync_module_buffers():
                prepared.register_forward_pre_hook(lambda *_: self._enter(), prepend=True)

    def _arrive_at_boundary(self) -> None:
        """The DDP gradient hook: a micro-batch that accumulates without syncing has no exchange to arrive at."""
        if self._boundary:
            self.arrive()

    def _enter(self) -> None:
        """The step's forward starts with an exchange (DDP's buffer broadcast, FSDP's all-gather): the first
        forward of the step counts."""
        if self._arrivals and not any(name == "enter" for name, _ in self._marks):
            self._marks.append(("enter", self.clock.mark()))

    def arrive(self) -> None:
        """This rank's gradients are ready and it enters the exchange (a DDP model's gradient hook calls
        it; a loop with its own collective calls session.arrive() just before it). The step's last call
        counts."""
        if self._arrivals:
            self._marks.append(("arrive", self.clock.mark()))

    def mark(self, phase: str) -> None:
        if phase not in PHASES:
            raise SessionError(f"mark({phase!r}): the phases are {', '.join(PHASES)}")
        self._marks.append((phase, self.clock.mark()))

    def report_loss(self, loss: Any) -> None:
        self._step_loss = loss.detach() if isinstance(loss, torch.Tensor) else loss

    def report_epoch(self, **metrics: float) -> None:
        allowed = ("val_loss", "val_accuracy", "lr", "train_loss")
        unknown = sorted(set(metrics) - set(allowed))
        if unknown:
            raise SessionError(f"report_epoch: unknown metric(s) {unknown}; give {', '.join(allowed)}")
        self._extra.update({k: float(v) for k, v in metrics.items() if v is not None})

    # ---- results ------------------------------------------------------------------------------
    def report_predictions(
        self, y_true: Any, proba: Any, sample_index: Any = None, split: str | None = None
    ) -> dict[str, float] | None:
        """Rank 0's class probabilities on the held-out split: stored whole, and every quality metric is
        computed from them later (scikit-learn). Other ranks' calls are ignored (DDP ranks hold the
        same weights). Returns the held-out loss and accuracy on rank 0."""
        if self.rank != 0:
            return None
        y = np.asarray(_numpy(y_true), dtype=np.int64)
        p = np.asarray(_numpy(proba), dtype=np.float32)
        if p.ndim != 2 or len(p) != len(y):
            raise SessionError(
                f"report_predictions: proba must be [N, classes] for N={len(y)} labels, got {list(p.shape)}"
            )
        if sample_index is None:  # the study's held-out split when these are its predictions, else 0..N-1
            same = self.held_index is not None and len(self.held_index) == len(y)
            sample_index = self.held_index if same else np.arange(len(y))
        index = np.asarray(_numpy(sample_index), dtype=np.int64)
        held = loss_and_accuracy(p, y)
        split = split or self.held_name
        self._store_predictions({"split": split, "sample_index": index, "y_true": y, "proba": p})
        self._emit_now(EvalEvent(split=split, samples=len(y), test_loss=held["loss"], test_accuracy=held["accuracy"]))
        return held

    def report_heldout(
        self, loss: float, accuracy: float | None = None, samples: int = 0, split: str | None = None
    ) -> None:
        """Rank 0's held-out loss (and accuracy) when there are no class probabilities to store, as for a
        language model: its mean next-token loss and top-1 token accuracy."""
        if self.rank != 0:
            return
        self._emit_now(
            EvalEvent(
                split=split or self.held_name,
                samples=int(samples),
                test_loss=float(loss),
                test_accuracy=None if accuracy is None else float(accuracy),
            )
        )

    # A `for` over epochs() or steps() that ends early closes the generator with GeneratorExit, alike for
    # a `break` (the step and epoch ran: record them) and an exception (they were cut short: do not).
    # So those events are held until the loop's outcome is known: the next session call or `finish`
    # emits them, `abort` drops them.
    def _hold(self, event: Event) -> None:
        self._held.append(event)

    def _emit_now(self, event: Event) -> None:
        self._release_held()
        self.emit(event)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for event in held:
            self.emit(event)

    def finish(self) -> None:
        """The loop returned: what it ran is recorded, including a step or epoch it broke out of."""
        self._release_held()

    def abort(self) -> None:
        """The loop raised: a step or epoch it was in is not recorded as if it had finished."""
        self._held = []

    def measure_allreduce(
        self, model: torch.nn.Module, loader: Any, loss_fn: Callable[[Any, Any], Any], steps: int = 8
    ) -> None:
        """The gradient all-reduce cost per step, by the sync probe: the same batches' backward with and
        without DDP's gradient sync (`no_sync()`), interleaved, without an optimiser step, so the trained
        weights are untouched. Call it after training on every rank (the sync steps are collectives);
        `loss_fn(model, batch)` returns the loss of one batch. With one worker, the wrapper probe instead."""
        if self.world_size < 2:
            self._measure_wrapper(model, loader, loss_fn, steps)
            return
        if not hasattr(model, "no_sync"):
            return
        import torch.distributed as dist

        batches = _first_batches(loader, steps)
        # Every rank must run as many synced backwards (collectives) as the others: agree on the fewest batches.
        count = torch.tensor([len(batches)], device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        batches = batches[: int(count.item())]
        # Training-mode forwards move BatchNorm's running statistics: put them back after the probe, so the
        # held-out predictions that follow see the trained model, whatever the worker count.
        saved = {name: b.detach().clone() for name, b in model.named_buffers()}
        timings: dict[bool, list[float]] = {True: [], False: []}
        for sync in (False, True, False, True):  # interleaved, so drift hits both alike
            for batch in batches:
                model.zero_grad(set_to_none=True)
                context = contextlib.nullcontext() if sync else model.no_sync()  # type: ignore[operator]  # DDP
                with context:
                    loss = loss_fn(model, batch)
                    start = self.clock.mark()
                    loss.backward()
                    end = self.clock.mark()
                if self.clock.cuda:
                    torch.cuda.synchronize(self.device)
                timings[sync].append(self.clock.seconds(start, end))
        sharing = self._host_sharing(model, batches[:SHARING_BATCHES], loss_fn) if batches else {}
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
        if not batches:
            return
        with_sync, without = float(np.median(timings[True])), float(np.median(timings[False]))
        self._emit_now(
            ProbeEvent(
                backward_sync_s=with_sync,
                backward_nosync_s=without,
                allreduce_s=max(0.0, with_sync - without),
                **sharing,
            )
        )

    def _measure_wrapper(
        self, model: torch.nn.Module, loader: Any, loss_fn: Callable[[Any, Any], Any], steps: int
    ) -> None:
        """The wrapper probe, a one-worker run's part of the sync probe: what DDP's wrapper itself costs a step
        (its hooks, the gradients copied into buckets and back, a one-rank all-reduce), which every step pays
        with 2 or more workers and a one-worker run never does (Ray Train wraps only then). The same batches'
        forward + backward through the bare model and through DDP over the run's one-rank process group,
        interleaved over `WRAPPER_ROUNDS` rounds (see there), without an optimiser step; BatchNorm's statistics are put
        back. Nothing is measured without a process group (a loop outside Ray Train), for an FSDP model, or
        where DDP cannot wrap the model as it is (parameters without gradients: DDP raises on them)."""
        import torch.distributed as dist

        plain = unwrap(model)
        if not (dist.is_available() and dist.is_initialized()) or "FSDP" in type(plain).__name__:
            return
        batches = _first_batches(loader, min(steps, SHARING_BATCHES))
        if not batches:
            return
        saved = {name: b.detach().clone() for name, b in plain.named_buffers()}
        devices = None
        if self.clock.cuda:
            devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        rounds: list[tuple[list[float], list[float]]] = []
        try:
            wrapped = torch.nn.parallel.DistributedDataParallel(plain, device_ids=devices)
            started, fewest, most = time.perf_counter(), *WRAPPER_ROUNDS
            while len(rounds) < fewest or (len(rounds) < most and time.perf_counter() - started < WRAPPER_BUDGET_S):
                bare = self._timed_steps(plain, batches, loss_fn)
                rounds.append((bare, self._timed_steps(wrapped, batches, loss_fn)))
        except Exception:  # a probe never fails the run: DDP refused the model (a parameter with
            return  # no gradient, parameters on several devices) or the loss did not take the wrapper: no figure
        finally:
            plain.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, buffer in plain.named_buffers():
                    buffer.copy_(saved[name])
        each = [float(np.median(r[1]) - np.median(r[0])) for r in rounds]
        self._emit_now(
            ProbeEvent(
                bare_s=float(np.median([t for r in rounds for t in r[0]])),
                wrapped_s=float(np.median([t for r in rounds for t in r[1]])),
                wrapper_low_s=min(each),
                wrapper_high_s=max(each),
            )
        )

    def _timed_steps(self, model: Any, batches: list[Any], loss_fn: Callable[[Any, Any], Any]) -> list[float]:
        """Each batch's forward + backward through `model`, timed on the step clock."""
        seconds = []
        for batch in batches:
            model.zero_grad(set_to_none=True)
            start = self.clock.mark()
            loss_fn(model, batch).backward()
            end = self.clock.mark()
            if self.clock.cuda:
                torch.cuda.synchronize(self.device)
            seconds.append(self.clock.seconds(start, end))
        return seconds

    def _host_sharing(self, model: Any, batches: list[Any], loss_fn: Callable[[Any, Any], Any]) -> dict[str, Any]:
        """The host-sharing probe (part of the sync probe; every rank calls it): where ranks share a machine
        (by host name: several Ray nodes can run on one machine), each times the batches' forward + backward
        without gradient sync alone on its machine (the machine's ranks take turns; ranks on other machines
        at the same time) and with all its machine's ranks computing at once, twice, interleaved. The median
        per batch of each; {} on a rank alone on its machine (nothing shared to measure)."""
        import torch.distributed as dist

        hosts: list[Any] = [None] * self.world_size
        dist.all_gather_object(hosts, socket.gethostname())
        mates = [rank for rank, host in enumerate(hosts) if host == hosts[self.rank]]
        turns = max(hosts.count(host) for host in hosts)  # the same on every rank: they agree on the barriers
        if turns < 2:
            return {}

        # The plain model, not DDP's wrapper: one rank computes while the others wait at a barrier, and a DDP
        # forward may be a collective itself (it broadcasts buffers such as BatchNorm's: a rank alone would hang).
        plain = unwrap(model)
        timed = lambda: self._timed_steps(plain, batches, loss_fn)

        def barrier() -> None:
            if self.clock.cuda:
                index = self.device.index
                dist.barrier(device_ids=[torch.cuda.current_device() if index is None else index])
            else:
                dist.barrier()

        shared = len(mates) > 1  # a rank alone on its machine only keeps the others' barriers
        alone: list[float] = []
        together: list[float] = []
        for _ in range(2):
            for turn in range(turns):
                barrier()
                if shared and mates.index(self.rank) == turn:
                    alone += timed()
                barrier()
            if shared:
                together += timed()
        if not shared:
            return {}
        return {
            "compute_alone_s": float(np.median(alone)),
            "compute_together_s": float(np.median(together)),
            "host_ranks": len(mates),
        }


def _first_batches(loader: Any, steps: int) -> list[Any]:
    """The loader's first `steps` batches (fewer where it has fewer)."""
    batches = []
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        batches.append(batch)
    return batches


def loss_and_accuracy(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p_true = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    return {"loss": float(-np.log(p_true).mean()), "accuracy": float((proba.argmax(1) == y).mean())}


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def worker_start_event(
    device: torch.device, threads: int, world_size: int, gpu: Any, node_facts: bool = False
) -> WorkerStart:
    """This worker's start; `node_facts` (one worker per node): with a GPU, the node's driver, GPU topology
    and NCCL settings too (versions.gpu_node_facts)."""
    import json

    from scaleprof.versions import gpu_node_facts

    facts = gpu_node_facts() if node_facts and device.type == "cuda" else {}
    return WorkerStart(
        world_size=world_size,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        device=str(device),
        torch_threads=threads,
        gpu_uuid=gpu.uuid,
        gpu_name=gpu.name,
        gpu_unavailable=gpu.unavailable_reason,
        versions=", ".join(f"{k} {v}" for k, v in toolchain().items() if v is not None),
        node_cpus=os.cpu_count(),
        gpu_driver=facts.get("driver"),
        gpu_topology=facts.get("topology"),
        nccl_env=json.dumps(facts["nccl_env"]) if "nccl_env" in facts else None,
    )


# ---- the public functions: the current worker's session -----------------------------------------
_current: WorkerSession | None = None


def _session() -> WorkerSession:
    if _current is None:
        raise SessionError(
            "scaleprof.session works inside a training loop that scaleprof runs "
            "(train.loop in an experiment file, started by `scaleprof run`)"
        )
    return _current


def activate(session: WorkerSession | None) -> None:
    global _current
    _current = session


def prepare_model(
    model: torch.nn.Module, example_input: Any = None, flops_per_sample: float | None = None, **ray_kwargs: Any
) -> torch.nn.Module:
    """`ray.train.torch.prepare_model` (device, DDP), recording parameters and, given an example input
    batch (or the figure itself), the FLOPs per training sample that MFU needs."""
    return _session().prepare_model(model, example_input, flops_per_sample, **ray_kwargs)


def prepare_data_loader(loader: torch.utils.data.DataLoader, **ray_kwargs: Any) -> Any:
    """`ray.train.torch.prepare_data_loader` (DistributedSampler, device), recording the loader's settings;
    `epochs()` calls its sampler's `set_epoch` each epoch."""
    return _session().prepare_data_loader(loader, **ray_kwargs)


def epochs() -> Iterator[int]:
    """The experiment's epochs (0-based); every rank starts each one together."""
    return _session().epochs()


def steps(loader: Any, samples: int | Callable[[Any], int] | None = None) -> Iterator[Any]:
    """The loader's batches, each timed as one training step (`samples`: per batch, when the batch's
    first dimension is not it)."""
    return _session().steps(loader, samples)


def mark(phase: str) -> None:
    """Inside a step: the end of `forward`, `backward` or `optimizer` (all three give the step breakdown)."""
    _session().mark(phase)


def arrive() -> None:
    """Inside a step: this rank is about to enter its gradient exchange (call it just before your own
    collective; DDP models from prepare_model record it themselves). The report names the rank that
    kept the others waiting from these times."""
    _session().arrive()


def report_loss(loss: Any) -> None:
    """This step's training loss (a tensor or a number): the epoch's sample-weighted mean is stored."""
    _session().report_loss(loss)


def report_epoch(**metrics: float) -> None:
    """Metrics of the current epoch: val_loss, val_accuracy, lr (shown in the learning curves)."""
    _session().report_epoch(**metrics)


def report_predictions(y_true: Any, proba: Any, sample_index: Any = None, split: str | None = None) -> Any:
    """Held-out labels and class probabilities [N, classes]: every quality metric comes from them."""
    return _session().report_predictions(y_true, proba, sample_index, split)


def report_heldout(loss: float, accuracy: float | None = None, samples: int = 0, split: str | None = None) -> None:
    """The held-out mean loss (a language model: next-token cross-entropy in nats, so perplexity is its
    exp) and accuracy, when there are no class probabilities to store; `samples`: items evaluated."""
    _session().report_heldout(loss, accuracy, samples, split)


def autocast() -> Any:
    """A context for the forward pass and loss in the run's `train.precision` (nothing for fp32)."""
    return _session().autocast()


def backward(loss: torch.Tensor) -> None:
    """`loss.backward()` for the run's settings: divided over `train.grad_accumulation` micro-batches and
    scaled for fp16. Gradients are synced only on the micro-batch that ends an optimizer step."""
    _session().backward(loss)


def optimizer_step(optimizer: torch.optim.Optimizer) -> bool:
    """On the micro-batch that ends an accumulated step: step (unscaling fp16 gradients) and zero the
    gradients; returns whether it stepped (step a learning-rate scheduler only then)."""
    return _session().optimizer_step(optimizer)


def evaluates_here() -> bool:
    """Whether this rank runs evaluation: rank 0, or every rank when the model is sharded (FSDP needs all
    ranks in each forward pass; only rank 0 reports)."""
    return _session().evaluates_here()


def train_settings() -> TrainSpec:
    """The run's training settings (precision, parallelism, optimizer, accumulation, ...) at its sweep point."""
    return _session().train


def measure_allreduce(model: torch.nn.Module, loader: Any, loss_fn: Callable[[Any, Any], Any], steps: int = 8) -> None:
    """Optional, after training, on every rank: the gradient all-reduce's share of a step, measured by
    running `steps` batches' backward with and without DDP's sync (`loss_fn(model, batch)` -> loss).
    Without it, a multi-worker run's step breakdown shows backward with the all-reduce inside it."""
    _session().measure_allreduce(model, loader, loss_fn, steps)


def datasets() -> tuple[Any, Any, Any]:
    """The experiment's data for this run, when it names data: (train, val, held-out) torch Datasets,
    the study's seeded split (or this run's cross-validation fold)."""
    return _session().datasets()


def build_model() -> torch.nn.Module:
    """This run's model as the experiment names it (built-in or factory), seeded."""
    return _session().build_model()


def device() -> torch.device:
    return _session().device


def world_rank() -> int:
    return _session().rank


def world_size() -> int:
    return _session().world_size
