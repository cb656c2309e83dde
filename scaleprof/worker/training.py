"""The training knobs of an experiment, applied on the worker: precision, optimizer, compile, FSDP.

One home for each: `scaleprof.session` applies them to whatever loop runs (the built-in ones and a
user's), so a run's settings mean the same everywhere.

- Precision: `torch.autocast` in bf16 or fp16 around the forward pass and the loss; fp16 adds a
  `torch.amp.GradScaler`. A device that cannot train in the precision refuses the run (skipped, with
  the reason) rather than silently running fp32.
- Parallelism: DDP through Ray Train's `prepare_model`; FSDP through PyTorch's FSDP2 `fully_shard`,
  applied to every module held in an `nn.ModuleList` (a transformer's blocks: our `blocks`, GPT-2's `h`,
  Llama's `layers`) and then to the whole model, so parameters, gradients and optimizer state are
  sharded over the ranks and one block is gathered at a time.
- Compile: `torch.compile` with the experiment's mode and backend; the seconds Dynamo spends compiling
  are read from its own counters (`compile_seconds`), so they are reported apart from steady state.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from typing import Any

import torch
from torch import nn

from scaleprof.config import DataSpec, TrainSpec
from scaleprof.errors import UnsupportedSettings
from scaleprof.worker.precision import precision_problem

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_device(train: TrainSpec, device: torch.device) -> None:
    """Raise UnsupportedSettings when this device cannot train in the run's precision."""
    bf16 = True
    gpu = ""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        gpu = torch.cuda.get_device_name(device)
    problem = precision_problem(train.precision, "gpu" if device.type == "cuda" else "cpu", bf16, gpu)
    if problem:
        raise UnsupportedSettings(problem)


class Precision:
    """Autocast and, for fp16, loss scaling."""

    def __init__(self, precision: str, device: torch.device):
        self.dtype = DTYPES.get(precision)
        self.device_type = "cuda" if device.type == "cuda" else "cpu"
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def make_optimizer(parameters: Any, train: TrainSpec, lr: float | None = None) -> torch.optim.Optimizer:
    """The experiment's optimizer: SGD with momentum, or AdamW."""
    spec, lr = train.optimizer, train.lr if lr is None else lr
    if spec.name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=train.momentum, weight_decay=spec.weight_decay)


def shard(model: nn.Module) -> nn.Module:
    """FSDP2: shard every module held in an outermost ModuleList (a transformer's blocks; a list nested in
    a block, such as a mixture of experts, stays in its block's shard), then the root (the rest)."""
    from torch.distributed.fsdp import fully_shard

    for block in _blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def _blocks(module: nn.Module) -> list[nn.Module]:
    """The members of the outermost ModuleLists under `module`, in order."""
    if isinstance(module, nn.ModuleList):
        return list(module)
    return [block for child in module.children() for block in _blocks(child)]


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Whether the next backward all-reduces (DDP) or reduce-scatters (FSDP) gradients: off on the
    micro-batches before the last of an accumulated step."""
    fsdp_sync = getattr(model, "set_requires_gradient_sync", None)
    if callable(fsdp_sync):  # FSDP2
        fsdp_sync(sync)
    elif hasattr(model, "require_backward_grad_sync"):  # DDP: what its no_sync() context sets
        setattr(model, "require_backward_grad_sync", sync)  # noqa: B010


def compile_model(model: nn.Module, train: TrainSpec) -> nn.Module:
    spec = train.compile
    if spec is None:
        return model
    return torch.compile(model, mode=spec.mode, backend=spec.backend, fullgraph=spec.fullgraph)  # type: ignore[return-value]


def compile_seconds() -> float:
    """Wall seconds this process has spent in torch.compile so far (Dynamo's own counter; 0 when nothing
    was compiled or the counter is not available in this torch)."""
    if "torch._dynamo" not in sys.modules:
        return 0.0
    try:
        from torch._dynamo.utils import calculate_time_spent

        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:
        return 0.0


def model_state_mb(modules: list[nn.Module], optimizer: torch.optim.Optimizer) -> float:
    """MiB this rank holds as parameters, gradients and optimizer state (its local shards under FSDP),
    summed tensor by tensor: what sharding divides, measured exactly whatever the allocator keeps."""
    seen: dict[int, torch.Tensor] = {}

    def add(tensor: Any) -> None:
        if isinstance(tensor, torch.Tensor):
            local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor's own shard
            seen.setdefault(id(local), local)

    for module in modules:
        for parameter in module.parameters():
            add(parameter)
            add(parameter.grad)
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                add(value)
    return sum(t.numel() * t.element_size() for t in seen.values()) / 2**20


def host_memory_peak_mb() -> float:
    """This process's peak resident memory so far (the OS's high-water mark; workers are fresh per run)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile's and DDP's wrappers (an FSDP2 model is its own)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile keeps the model as ._orig_mod
    inner = getattr(model, "module", model)  # DDP keeps the model as .module
    return inner if isinstance(inner, torch.nn.Module) else model


def lr_factor(train: TrainSpec, global_batch: int) -> float:
    """The linear scaling rule: lr grows with the global batch relative to train.batch_size."""
    if train.lr_scaling == "linear":
        return global_batch / train.batch_size
    return 1.0


def lr_schedule(target_factor: float, warmup_steps: int):
    """Multiplier of train.lr at each step: a linear ramp from 1 to target_factor, then flat."""

    def multiplier(step: int) -> float:
        if warmup_steps <= 0 or step >= warmup_steps:
            return target_factor
        return 1.0 + (target_factor - 1.0) * step / warmup_steps

    return multiplier


def loader_kwargs(data: DataSpec, device: torch.device) -> dict[str, Any]:
    """The DataLoader settings of `data.loader` (pin_memory on by default for GPU runs)."""
    spec = data.loader
    kwargs: dict[str, Any] = {
        "num_workers": spec.num_workers,
        "pin_memory": device.type == "cuda" if spec.pin_memory is None else spec.pin_memory,
    }
    if spec.num_workers:
        kwargs["persistent_workers"] = spec.persistent_workers
        if spec.prefetch_factor is not None:
            kwargs["prefetch_factor"] = spec.prefetch_factor
    return kwargs
