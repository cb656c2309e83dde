"""The experiment file: typed, validated, with defaults and field docs in one tree.

`load_experiment(path)` is the only way in. Every error it raises is a `ConfigError` whose
message names the file and the field at fault, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

MAX_FILE_BYTES = 1_000_000  # an experiment file is a few hundred bytes; refuse anything absurd
MAX_YAML_NODES = 100_000  # after alias expansion: anchors that multiply (a "billion laughs") are refused
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
IMPORT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
BUILTIN_MODELS = ("mlp", "small-cnn", "transformer")
LM_MODELS = ("transformer",)  # built-in models of the language-modeling task (plus hf:<model type>)
MAX_SYNTHETIC_VALUES = 2**29  # float32 values: 2 GiB per worker


class ConfigError(Exception):
    """A user error in an experiment file: the message names the file and the field."""


def _numbers_only(annotation: Any) -> bool:
    """Whether a field (or a list's items) holds int or float values and never a bool."""
    leaves: set[Any] = set()

    def walk(node: Any) -> None:
        args = typing.get_args(node)
        if typing.get_origin(node) is typing.Annotated:
            walk(args[0])
        elif typing.get_origin(node) in (list, tuple) or (args and typing.get_origin(node) is not dict):
            for arg in args:
                walk(arg)
        else:
            leaves.add(node)

    walk(annotation)
    return bool(leaves & {int, float}) and bool not in leaves


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt key must never be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`workers: true` (or YAML's `yes`) is refused where a number is meant, not read as 1."""
        items = value if isinstance(value, (list, tuple)) else [value]
        boolean = any(isinstance(v, bool) for v in items)
        if boolean and info.field_name and _numbers_only(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, got a boolean (YAML reads true/false/yes/no/on/off as one)")
        return value


def _check_import_path(value: str | None) -> str | None:
    if value is not None and not re.match(IMPORT_PATTERN, value):
        raise ValueError(f"{value!r} is not 'module:function' (e.g. my_models:build)")
    return value


class ModelSpec(_Strict):
    name: str | None = Field(
        default=None,
        description="mlp, small-cnn, torchvision:<classification model name>; language models: transformer "
        "(built in) or hf:<transformers model type> (built from `config`, random init, never downloaded)",
    )
    factory: str | None = Field(
        default=None, description="'module:function' returning a torch.nn.Module of class logits [B, num_classes]"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the model constructor or factory")
    config: dict[str, Any] = Field(
        default_factory=dict, description="hf:<type> only: the transformers config (e.g. n_layer, n_embd)"
    )
    label_: str | None = Field(
        default=None, alias="label", pattern=NAME_PATTERN, description="names the model in run ids and the report"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is None or name in BUILTIN_MODELS:
            return name
        for prefix in ("torchvision:", "hf:"):
            if name.startswith(prefix) and len(name) > len(prefix):
                return name
        raise ValueError(
            f"unknown model {name!r}; use one of {', '.join(BUILTIN_MODELS)}, torchvision:<name> or hf:<model type>"
        )

    _factory = field_validator("factory")(_check_import_path)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.name is not None and self.factory is not None:
            raise ValueError("give name (a built-in model) or factory (your own), not both")
        if self.config and not self.is_hf:
            raise ValueError("config: only hf:<model type> models take a transformers config (others take kwargs)")
        if self.is_hf and self.kwargs:
            raise ValueError("kwargs: an hf:<model type> model is described by `config`, not kwargs")
        return self

    @property
    def is_hf(self) -> bool:
        return bool(self.name and self.name.startswith("hf:"))

    @property
    def is_language_model(self) -> bool:
        return self.is_hf or self.name in LM_MODELS

    @property
    def built_by_loop(self) -> bool:
        """Neither name nor factory: the user's training loop builds the model itself."""
        return self.name is None and self.factory is None

    @property
    def label(self) -> str:
        if self.label_:
            return self.label_
        if self.factory:
            module, function = self.factory.split(":")
            return _name_safe(f"{module.rsplit('.', 1)[-1]}-{function}")
        return _name_safe(self.name.split(":", 1)[-1]) if self.name else "model"


def _name_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)[:64]


class LoaderSpec(_Strict):
    """The training DataLoader's settings (torch.utils.data.DataLoader's own names)."""

    num_workers: int = Field(
        default=0, ge=0, le=256, description="loader worker processes (0: in the training process)"
    )
    pin_memory: bool | None = Field(default=None, description="page-locked host memory; default: on for GPU runs")
    persistent_workers: bool = Field(default=False, description="keep loader workers alive between epochs")
    prefetch_factor: int | None = Field(default=None, ge=1, le=1024, description="batches loaded ahead per worker")

    @model_validator(mode="after")
    def _needs_workers(self) -> LoaderSpec:
        if self.num_workers == 0 and (self.persistent_workers or self.prefetch_factor is not None):
            raise ValueError("persistent_workers and prefetch_factor need num_workers >= 1")
        return self


DATA_NAMES = ("digits", "synthetic-images", "image-folder", "synthetic-tokens", "text-file")
TOKEN_DATA = ("synthetic-tokens", "text-file")  # data of the language-modeling task


class DataSpec(_Strict):
    name: str | None = Field(
        default=None,
        description="digits, synthetic-images, image-folder or torchvision:<data set class>; language modeling: "
        "synthetic-tokens (a seeded Markov chain) or text-file (bytes as tokens, no download)",
    )
    factory: str | None = Field(
        default=None,
        description="'module:function' returning a map-style Dataset of (input, label), or a dict of train/val/test",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the factory or the torchvision class")
    path: str | None = Field(
        default=None, description="image-folder: the root with one directory per class; text-file: the text file"
    )
    root: str | None = Field(default=None, description="torchvision data sets: the local root (never downloaded)")
    image_size: tuple[int, int] | None = Field(
        default=None, description="image-folder: resize to [H, W] (default 224 x 224); torchvision: resize if given"
    )
    grayscale: bool = Field(default=False, description="image-folder: read images as one channel")
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = Field(
        default=None, description="[[means], [stds]] per channel after ToTensor (image-folder, torchvision)"
    )
    shape: tuple[int, int, int] = Field(default=(3, 32, 32), description="C, H, W of synthetic images")
    num_classes: int = Field(default=10, ge=2, le=10_000, description="classes of synthetic images")
    size: int = Field(default=2048, ge=32, le=10_000_000, description="number of synthetic images or sequences")
    seq_len: int = Field(default=64, ge=2, le=65_536, description="tokens per training sequence (language modeling)")
    vocab_size: int = Field(default=256, ge=2, le=1_000_000, description="synthetic-tokens: distinct tokens")
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    loader: LoaderSpec = Field(default_factory=LoaderSpec)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is None or name in DATA_NAMES:
            return name
        if name.startswith("torchvision:") and len(name) > len("torchvision:"):
            return name
        raise ValueError(
            f"unknown data set {name!r}; use one of {', '.join(DATA_NAMES)}, torchvision:<name> or factory"
        )

    _factory = field_validator("factory")(_check_import_path)

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(d < 1 or d > 4096 for d in shape):
            raise ValueError("every dimension must be between 1 and 4096")
        return shape

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and any(d < 1 or d > 8192 for d in size):
            raise ValueError("every dimension must be between 1 and 8192")
        return size

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        if (self.name is None) == (self.factory is None):
            raise ValueError("data.name: give name (a built-in or on-disk data set) or factory (your own), one of them")
        if self.name == "image-folder" and not self.path:
            raise ValueError("data.path: image-folder needs the path of its root directory")
        if self.name == "text-file" and not self.path:
            raise ValueError("data.path: text-file needs the path of the text file")
        if self.path is not None and self.name not in ("image-folder", "text-file"):
            raise ValueError("data.path: only image-folder and text-file read a path (torchvision data sets use root)")
        is_torchvision = bool(self.name and self.name.startswith("torchvision:"))
        if is_torchvision and not self.root:
            raise ValueError("data.root: a torchvision data set is read from a local root (it is never downloaded)")
        if self.root is not None and not is_torchvision:
            raise ValueError("data.root: only torchvision:<name> data sets read a root")
        if self.kwargs and not (self.factory or is_torchvision):
            raise ValueError("data.kwargs: only a factory or a torchvision data set takes kwargs")
        if "download" in self.kwargs:
            raise ValueError("data.kwargs.download: scaleprof never downloads; put the files under data.root")
        if self.normalize is not None and len(self.normalize[0]) != len(self.normalize[1]):
            raise ValueError("data.normalize: give as many standard deviations as means")
        if self.name == "synthetic-tokens" and self.size * self.seq_len > MAX_SYNTHETIC_VALUES:
            raise ValueError(f"data.size: {self.size} sequences of {self.seq_len} tokens are too many for one worker")
        if self.name == "synthetic-images" and self.size * math.prod(self.shape) > MAX_SYNTHETIC_VALUES:
            raise ValueError(
                f"data.size: {self.size} images of shape {list(self.shape)} would take "
                f"{self.size * math.prod(self.shape) * 4 / 2**30:.1f} GiB per worker; the limit is "
                f"{MAX_SYNTHETIC_VALUES * 4 / 2**30:.0f} GiB"
            )
        return self

    @property
    def label(self) -> str:
        return self.name or str(self.factory)

    @property
    def field(self) -> str:
        """The experiment field that names this data set's source, for messages."""
        return (
            "data.factory" if self.factory else "data.path" if self.path else "data.root" if self.root else "data.name"
        )

    @property
    def in_memory(self) -> bool:
        """Data sets held as arrays (digits, synthetic images), as opposed to read by a torch Dataset."""
        return self.name in ("digits", "synthetic-images", "synthetic-tokens", "text-file")

    @property
    def is_tokens(self) -> bool:
        return self.name in TOKEN_DATA


class CompileSpec(_Strict):
    """torch.compile's settings (its own names)."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None
    backend: str = Field(default="inductor", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="inductor, aot_eager, ...")
    fullgraph: bool = False


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adamw"] = Field(default="sgd", description="sgd (with train.momentum) or adamw")
    weight_decay: float = Field(default=0.0, ge=0, le=10)
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="adamw's betas")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TrainSpec(_Strict):
    epochs: int = Field(default=2, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="per worker (weak) or global (strong)")
    scaling: Literal["weak", "strong"] = Field(
        default="weak",
        description="weak: batch_size is per worker, so the global batch grows with workers; "
        "strong: batch_size is the global batch, split evenly over the workers",
    )
    lr: float = Field(default=0.05, gt=0, le=10, description="learning rate")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="sgd | adamw, or {name, ...}")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="bf16/fp16: autocast (fp16 with a GradScaler); a device that cannot train in it skips the run",
    )
    compile: CompileSpec | None = Field(
        default=None,
        description="torch.compile the model: true, or {mode, backend, fullgraph}; compile time is recorded "
        "apart from steady-state throughput",
    )
    grad_accumulation: int = Field(
        default=1,
        strict=True,  # `true` is not 1; it names run ids and divides the batch
        ge=1,
        le=1024,
        description="micro-batches per optimizer step (gradients synced on the last)",
    )
    parallelism: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="ddp: replicated model; fsdp: parameters, gradients and optimizer state sharded "
        "over the workers (PyTorch FSDP2 fully_shard)",
    )
    momentum: float = Field(default=0.9, ge=0, lt=1)
    steps_per_epoch: int | None = Field(
        default=None,
        strict=True,  # `true` is not 1
        ge=1,
        le=10_000_000,
        description="optimizer steps each worker trains per epoch, whatever the data's size: the loader is cut "
        "short or passed over again to reach it, so every placement measures the same number of steps "
        "(a step-based run; default: one pass over the worker's shard)",
    )
    warmup_steps: int = Field(
        default=5,
        ge=0,
        description="steps excluded from steady state when a run has a single epoch (with two or more, epoch 1 "
        "is); step times still settling after that are cut too (the MSER-5 rule)",
    )
    lr_scaling: Literal["none", "linear"] = Field(
        default="none",
        description="linear: lr x (global batch / train.batch_size), "
        "the linear scaling rule for growing global batches",
    )
    lr_warmup_epochs: float = Field(
        default=0, ge=0, le=1000, description="ramp the learning rate linearly from train.lr over this many epochs"
    )
    deterministic: bool = Field(
        default=False,
        description="torch.use_deterministic_algorithms and CUBLAS_WORKSPACE_CONFIG: reproducible GPU runs, slower",
    )
    max_failures: int = Field(
        default=0,
        ge=0,
        le=100,
        description="restart a run's workers this many times after a worker or node dies (Ray Train FailureConfig); "
        "each restart trains from scratch and is recorded as a new attempt",
    )
    loop: str | None = Field(
        default=None,
        description="'module:function': your own Ray Train train_loop_per_worker, instrumented with scaleprof.session",
    )
    loop_config: dict[str, Any] = Field(
        default_factory=dict, description="handed to your loop as config['loop_config']"
    )

    _loop = field_validator("loop")(_check_import_path)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_switch(cls, value: Any) -> Any:
        """`compile: true` is torch.compile's defaults; `false` is off."""
        if value is True:
            return {}
        return None if value is False else value

    @property
    def compile_label(self) -> str:
        spec = self.compile
        if spec is None:
            return "off"
        return spec.backend if spec.mode is None else f"{spec.backend}:{spec.mode}"


class MonitorSpec(_Strict):
    enabled: bool = True
    interval_s: float = Field(default=1.0, ge=0.05, le=60)
    contention_share: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="flag a run 'contended' when processes outside Ray used this share of a node's CPUs on "
        "average in its steady state (or another process ran on its GPU)",
    )
    aggregators: int = Field(
        default=1,
        ge=1,
        le=64,
        description="aggregator actors that store the study's events, each writing its own segments on the "
        "driver's node; a worker sends to one chosen by its node. One stores over 50,000 events/s (README "
        "Performance): more only for thousands of workers",
    )
    node_relays: bool = Field(
        default=False,
        description="a relay actor on each node forwards its workers' event batches to the aggregator as one "
        "call every 0.25 s (an aggregator's cost is mostly per call): for clusters of many nodes",
    )


class PlacementSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    workers: int = Field(ge=1, le=4096)
    # A training worker is a process with torch threads: below a tenth of a CPU no cluster would start it sensibly.
    cpus_per_worker: float = Field(default=1, ge=0.1, le=1024)
    gpus_per_worker: float = Field(default=0, ge=0, le=16)
    repeats: int | None = Field(default=None, ge=1, le=100, description="overrides the study's repeats")
    nodes: int | None = Field(
        default=None, ge=1, le=4096, description="distinct nodes the workers should land on (checked, warned if not)"
    )
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="Ray placement strategy of the workers' bundles"
    )
    node_type: str | None = Field(default=None, description="row of the pricing table; default: cost.node_type")

    @model_validator(mode="after")
    def _nodes_agree_with_strategy(self) -> PlacementSpec:
        if self.strategy == "STRICT_SPREAD" and self.nodes is not None and self.nodes != self.workers:
            raise ValueError(f"nodes: STRICT_SPREAD puts each of the {self.workers} workers on its own node")
        if self.strategy == "STRICT_PACK" and self.nodes not in (None, 1):
            raise ValueError("nodes: STRICT_PACK puts every worker on one node")
        if self.nodes is not None and self.nodes > self.workers:
            raise ValueError(f"nodes: {self.workers} worker(s) cannot span {self.nodes} nodes")
        return self

    @property
    def expected_nodes(self) -> int | None:
        """How many distinct nodes the workers must land on, when the placement says."""
        if self.strategy == "STRICT_SPREAD":
            return self.workers
        if self.strategy == "STRICT_PACK":
            return 1
        return self.nodes

    @property
    def device(self) -> str:
        return "gpu" if self.gpus_per_worker > 0 else "cpu"

    @property
    def total_cpus(self) -> float:
        return self.workers * self.cpus_per_worker

    @property
    def total_gpus(self) -> float:
        return self.workers * self.gpus_per_worker


class InferenceSpec(_Strict):
    batch_sizes: list[int] = Field(default=[1, 8, 64, 256], min_length=1, max_length=32)
    warmup: int = Field(default=5, ge=0, le=10_000, description="untimed iterations per batch size")
    iterations: int = Field(default=30, ge=3, le=1_000_000, description="timed iterations per batch size")
    devices: list[Literal["cpu", "gpu"]] = Field(default=["cpu", "gpu"], min_length=1)
    cpus: float = Field(default=1, gt=0, le=1024, description="CPUs of the inference actor (and its torch threads)")
    channels_last: bool = Field(default=False, description="run convolutions in channels-last memory format")
    amp: bool = Field(default=False, description="bfloat16 autocast on GPU (ignored on CPU)")
    compile: bool = Field(default=False, description="torch.compile the model first (when it compiles here)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(b < 1 or b > 65_536 for b in sizes):
            raise ValueError("every batch size must be between 1 and 65536")
        return sorted(set(sizes))


class EvaluationSpec(_Strict):
    cv_folds: int = Field(
        default=0, ge=0, le=50, description="k-fold cross-validation on train+val, on the reference placement (0: off)"
    )
    cv_placement: str | None = Field(default=None, description="the reference placement; default: the first")
    noisy_cv: float = Field(
        default=0.05, gt=0, le=10, description="flag repeats whose coefficient of variation is above this"
    )
    quality_tolerance: float = Field(
        default=0.02, ge=0, le=1,
        description="flag a multi-worker placement whose test accuracy (or perplexity) differs from one worker's by "
        "more than this share, and more than its repeats' spread",
    )  # fmt: skip
    min_steady_steps: int = Field(
        default=30,
        strict=True,
        ge=1,
        le=1_000_000,
        description="steady steps per worker below which a run's figures are marked low-confidence and plan "
        "warns (fewer than 30 give fewer than 5 batch means for the 95% interval)",
    )
    inference: InferenceSpec | None = Field(default=None, description="benchmark inference on each device kind")

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, k: int) -> int:
        if k == 1:
            raise ValueError("cross-validation needs at least 2 folds (0 turns it off)")
        return k


class CostSpec(_Strict):
    pricing: str = Field(
        default="clusters/pricing.csv", description="CSV of node types: price per hour, vCPUs, GPUs, source, date"
    )
    node_type: str | None = Field(default=None, description="the pricing row for placements that name none")
    billing: Literal["node", "share"] = Field(
        default="node",
        description="node: every node a run touched is billed whole; share: the run's share of a node "
        "(its CPUs or GPUs over the node's, whichever is larger)",
    )
    target_accuracy: float | None = Field(
        default=None, gt=0, le=1, description="also report the cost to first reach this validation accuracy"
    )


class GoalSpec(_Strict):
    max_cost_per_sample_usd: float | None = Field(default=None, gt=0, description="a budget per training sample")
    min_throughput: float | None = Field(default=None, gt=0, description="a deadline, as samples per second")
    samples: float | None = Field(default=None, gt=0, description="with deadline_hours: samples to train by then")
    deadline_hours: float | None = Field(default=None, gt=0, description="with samples: the hours to train them in")

    @model_validator(mode="after")
    def _something(self) -> GoalSpec:
        if (self.samples is None) != (self.deadline_hours is None):
            raise ValueError("goal: a deadline needs both samples and deadline_hours")
        if self.max_cost_per_sample_usd is None and self.min_throughput is None and self.samples is None:
            raise ValueError(
                "goal: give max_cost_per_sample_usd, min_throughput, samples with deadline_hours, or several"
            )
        return self


class ProfileSpec(_Strict):
    torch_profiler: bool = Field(
        default=False,
        description="record a torch.profiler trace of a few steady-state steps of each run (Chrome trace JSON, "
        "gzipped, under traces/ in the study; open it in Perfetto or HTA); those steps are left out of throughput",
    )
    steps: int = Field(default=5, ge=1, le=100, description="steps traced per run")
    ranks: Literal["first", "all"] = Field(default="first", description="trace rank 0 only, or every rank")
    fabric_probe: bool = Field(
        default=True,
        description="after training, a run with 2 or more workers times its collective (all-reduce; FSDP's "
        "reduce-scatter and all-gather) from 4 KiB to beyond the gradient's size over its own process group, "
        "well under a second on small models: the links `scaleprof predict` and the prediction ledger use",
    )
    arrivals: bool = Field(
        default=True,
        description="with 2 or more workers, record when each rank's gradients were ready for the exchange (DDP: a "
        "gradient hook; FSDP: entering session.backward; a user loop with its own collective calls "
        "session.arrive()) on clocks aligned "
        "at start-up: the report names the rank that kept the others waiting, the phase that made it late and "
        "any stalls",
    )


class RaySpec(_Strict):
    placement_timeout_s: float = Field(
        default=20, gt=0, le=3600, description="how long to wait for a placement's resources before skipping it"
    )


SWEEP_TRAIN_KEYS = ("batch_size", "precision", "parallelism", "compile", "grad_accumulation", "optimizer", "lr")
SWEEP_KEY_PATTERN = rf"^(train\.({'|'.join(SWEEP_TRAIN_KEYS)})|model\.(kwargs|config)\.[A-Za-z_][A-Za-z0-9_]{{0,63}})$"
MAX_RUNS = 10_000


def point_label(point: dict[str, Any]) -> str:
    """A sweep point as a short, name-safe label: b32-bf16-fsdp, width256, compiled, k4."""
    parts = []
    for key, value in point.items():
        leaf = key.rsplit(".", 1)[-1]
        if key == "train.batch_size":
            parts.append(f"b{value}")
        elif key == "train.grad_accumulation":
            parts.append(f"k{value}")
        elif key == "train.lr":
            parts.append(f"lr{value}")
        elif key == "train.compile":
            if value in (False, None):
                parts.append("eager")
            else:  # the backend and mode, when not torch.compile's defaults
                spec = {} if value is True else dict(value)
                parts.append("-".join(["compiled", *(str(v) for v in spec.values() if v not in (None, False))]))
        elif key == "train.optimizer":
            spec = {"name": value} if isinstance(value, str) else dict(value)
            parts.append("-".join(str(v) for v in spec.values()))
        elif key.startswith("model."):
            parts.append(f"{leaf}{value}")
        else:
            parts.append(str(value))
    label = _name_safe("-".join(parts))
    if len(label) > 40:  # run ids stay readable; the digest keeps long labels apart
        digest = hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:8]
        label = f"{label[:31]}-{digest}"
    return label


class Experiment(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="names the study directory")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    task: Literal["classification", "language-modeling"] = Field(
        default="classification",
        description="classification (accuracy, F1, ROC AUC, ...) or language-modeling (next-token loss, "
        "perplexity, tokens/s)",
    )
    model: ModelSpec | None = Field(default=None, description="one model; or give several under models")
    models: list[ModelSpec] | None = Field(default=None, min_length=1, max_length=64)
    data: DataSpec | None = Field(default=None, description="required unless train.loop brings its own data")
    train: TrainSpec = Field(default_factory=TrainSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    repeats: int = Field(default=1, ge=1, le=100)
    placements: list[PlacementSpec] = Field(min_length=1, max_length=256)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    cost: CostSpec = Field(default_factory=CostSpec)
    goal: GoalSpec | None = Field(default=None, description="name the cheapest placement that meets it")
    ray: RaySpec = Field(default_factory=RaySpec)
    profile: ProfileSpec = Field(default_factory=ProfileSpec)
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="axes beyond placements, e.g. train.batch_size: [16, 64], train.precision: [fp32, bf16], "
        "train.parallelism, train.compile, train.grad_accumulation, train.optimizer, train.lr, model.kwargs.<name>, "
        "model.config.<name>; the study runs their cross product on every placement",
    )
    code_dirs: list[str] | None = Field(
        default=None,
        max_length=32,
        description="directories of your modules (factories, loop), shipped to every Ray worker; "
        "default: the experiment file's directory when the file names any of your code",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        loop = self.train.loop is not None
        if self.model is not None and self.models is not None:
            raise ValueError("model: give either model or models (a list), not both")
        if self.model is None and self.models is None and not loop:
            raise ValueError("model: give model or models (a list); only train.loop may build its own")
        if self.data is None and not loop:
            raise ValueError("data: required (only train.loop may bring its own data)")
        if self.evaluation.cv_folds and self.data is None:
            raise ValueError("evaluation.cv_folds: cross-validation splits data, so the experiment needs data")
        labels: set[str] = set()
        for i, m in enumerate(self.model_list):
            where = "model" if self.models is None else f"models.{i}"
            if m.built_by_loop and not loop:
                raise ValueError(f"{where}.name: give name (a built-in model) or factory (your own)")
            if m.name and self.data is None:
                raise ValueError(
                    f"{where}.name: a built-in model is shaped by the experiment's data (input, classes); "
                    "with no data, name a factory or let train.loop build the model"
                )
            if self.evaluation.inference is not None and (m.built_by_loop or self.data is None):
                raise ValueError(
                    f"evaluation.inference: {where} is built inside train.loop (or there is no data): "
                    "the inference benchmark needs a model name or factory and data"
                )
            if m.label in labels:
                raise ValueError(f"models.{i}.label: two models named {m.label!r}; give them distinct labels")
            labels.add(m.label)
        names = [p.name for p in self.placements]
        cv = self.evaluation.cv_placement
        if cv is not None and cv not in names:
            raise ValueError(f"evaluation.cv_placement: no placement named {cv!r} (have: {', '.join(names)})")
        self._check_task()
        self._check_sweep()
        seen: set[str] = set()
        for i, p in enumerate(self.placements):
            if p.node_type is None and self.cost.node_type is None and any(q.node_type for q in self.placements):
                raise ValueError(f"placements.{i}.node_type: name a node type here or set cost.node_type")
            if p.name in seen:
                raise ValueError(f"placements.{i}.name: duplicate placement name {p.name!r}")
            seen.add(p.name)
            parts = p.workers * self.train.grad_accumulation
            if self.train.scaling == "strong" and self.train.batch_size % parts:
                raise ValueError(
                    f"placements.{i}.workers: strong scaling splits train.batch_size={self.train.batch_size} "
                    f"evenly over {p.workers} worker(s) x {self.train.grad_accumulation} micro-batch(es), "
                    f"but {parts} does not divide it"
                )
        return self

    def _check_task(self) -> None:
        lm = self.task == "language-modeling"
        if self.data is not None and self.data.is_tokens != lm:
            wanted = "synthetic-tokens or text-file" if lm else "a classification data set"
            raise ValueError(f"data.name: the {self.task} task needs {wanted}, not {self.data.label}")
        for i, m in enumerate(self.model_list):
            where = "model" if self.models is None else f"models.{i}"
            if m.name and m.is_language_model != lm:
                kind = "language model" if m.is_language_model else "classifier"
                raise ValueError(f"{where}.name: {m.name} is a {kind}; set task to match (task: {self.task})")
        if lm and self.evaluation.cv_folds:
            raise ValueError("evaluation.cv_folds: cross-validation is for classification (stratified folds)")
        if lm and self.evaluation.inference is not None:
            raise ValueError("evaluation.inference: the inference benchmark is for classifiers")

    def _check_sweep(self) -> None:
        runs = len(self.placements) * len(self.model_list) * self.repeats
        for key, values in self.sweep.items():
            if not re.match(SWEEP_KEY_PATTERN, key):
                raise ValueError(
                    f"sweep.{key}: not a sweep axis; use train.<{'|'.join(SWEEP_TRAIN_KEYS)}>, "
                    "model.kwargs.<name> or model.config.<name>"
                )
            if not 1 <= len(values) <= 64:
                raise ValueError(f"sweep.{key}: give 1 to 64 values")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"sweep.{key}: a value is given twice")
            runs *= len(values)
        if runs > MAX_RUNS:
            raise ValueError(f"sweep: the study would have {runs} runs; the limit is {MAX_RUNS}")
        if any(k.startswith("model.") for k in self.sweep) and all(m.built_by_loop for m in self.model_list):
            raise ValueError(
                "sweep: model.* axes need a model named in the file (name or factory), not one built by train.loop"
            )
        for key, values in self.sweep.items():  # each value on its own first: the message names it
            for value in values:
                self._at_checked({key: value}, f"sweep.{key}: {value!r}")
        labels: dict[str, dict[str, Any]] = {}
        for point in self.points():
            self._at_checked(point, f"sweep: the point {point}")
            label = point_label(point)
            if label in labels:
                raise ValueError(
                    f"sweep: the points {labels[label]} and {point} would share the label {label!r}; "
                    "give values that differ in what the label shows"
                )
            labels[label] = point

    def _at_checked(self, point: dict[str, Any], where: str) -> Experiment:
        try:
            return self.at(point)
        except ValidationError as err:
            first = err.errors()[0]
            msg = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where} is not valid ({_field_path(tuple(first['loc']))}: {msg})") from None

    def points(self) -> list[dict[str, Any]]:
        """Every sweep point (one empty point without a sweep), in the order the file lists the values."""
        import itertools

        keys = list(self.sweep)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.sweep[k] for k in keys))]

    def at(self, point: dict[str, Any]) -> Experiment:
        """The experiment one sweep point runs: its values in place, no sweep left."""
        if not point:
            return self
        raw = self.model_dump(mode="json", by_alias=True, exclude={"sweep"})
        for key, value in point.items():
            section, *rest = key.split(".")
            if section == "train":
                raw["train"][rest[0]] = value
                continue
            for model in raw["models"] if raw.get("models") is not None else [raw["model"]]:
                if model is not None:
                    model[rest[0]] = {**model[rest[0]], rest[1]: value}
        return Experiment.model_validate(raw)

    @property
    def model_list(self) -> list[ModelSpec]:
        if self.models is not None:
            return self.models
        if self.model is not None:
            return [self.model]
        # train.loop builds its own model: one placeholder named after the loop function.
        return [ModelSpec.model_validate({"label": _name_safe(str(self.train.loop).split(":")[1])})]

    @property
    def uses_own_code(self) -> bool:
        """The file names the user's code (a factory or a loop), which every worker must import."""
        return bool(
            self.train.loop or (self.data is not None and self.data.factory) or any(m.factory for m in self.model_list)
        )

    @property
    def cv_reference(self) -> PlacementSpec:
        name = self.evaluation.cv_placement or self.placements[0].name
        return next(p for p in self.placements if p.name == name)

    def node_type(self, placement: PlacementSpec) -> str | None:
        return placement.node_type or self.cost.node_type

    def per_worker_batch(self, placement: PlacementSpec) -> int:
        """The micro-batch each worker trains on per step."""
        if self.train.scaling == "strong":
            return self.train.batch_size // (placement.workers * self.train.grad_accumulation)
        return self.train.batch_size

    def resolved(self) -> dict[str, Any]:
        """The experiment with every default filled in, as plain JSON-able data."""
        return self.model_dump(mode="json", by_alias=True)

    def digest(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


NOT_MEASURED = ("name",)  # settings that change no figure: the study's name. Everything else may (even
# monitor.* or ray.* move CPU time on a small machine), so a difference there is said, not judged.
_ABSENT = object()


def setting_differences(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = NOT_MEASURED) -> list[str]:
    """Where two resolved experiments (`Experiment.resolved()`, as manifests store them) differ: one line
    per field, as its dotted path with both values, in the file's order: `train.epochs: 4 vs 40`.
    Lists of equal length are compared item by item (`placements.0.workers: 1 vs 3`); `ignore` holds
    dotted paths left out. The one home of "are these the same experiment?" for compare and resume."""
    lines: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if path in ignore:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for key in [*x, *(k for k in y if k not in x)]:
                walk(x.get(key, _ABSENT), y.get(key, _ABSENT), f"{path}.{key}" if path else str(key))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (xi, yi) in enumerate(zip(x, y)):
                walk(xi, yi, f"{path}.{i}")
        elif x != y or isinstance(x, bool) != isinstance(y, bool):  # `true` is not 1 in a setting
            if isinstance(x, list) and isinstance(y, list):
                lines.append(f"{path}: {_items(len(x))} vs {_items(len(y))}")
            else:
                lines.append(f"{path or '(top level)'}: {_shown(x)} vs {_shown(y)}")

    walk(a, b, "")
    return lines


def _items(n: int) -> str:
    return f"{n} item{'s' if n != 1 else ''}"


def _shown(value: Any, limit: int = 60) -> str:
    """A setting's value as a file would spell it, cut short: fp32, 40, null, {"mode": null, ...}."""
    if value is _ABSENT:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_validation(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid experiment"]
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        loc = _field_path(tuple(e["loc"]))
        # Our cross-field checks put the field path at the start of the message.
        if re.match(r"^[a-z_]+(\.[a-z_0-9]+)*: ", msg):
            loc, msg = msg.split(": ", 1)
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_experiment(raw: Any, path: Path) -> Experiment:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an experiment file must be a YAML mapping, got {type(raw).__name__}")
    try:
        return Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation(path, err)) from None


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """`key=value` from the command line onto the file's tree before it is validated, so an override is
    checked exactly as the file is: `train.epochs=5`, `placements.0.workers=4`, `train.precision=bf16`.
    The value is YAML (`5` is a number, `[1, 2]` a list, `true` a bool)."""
    if not overrides or not isinstance(raw, dict):
        return raw
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{item!r}: an override is key=value with a dotted key, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"{item!r}: the value is not valid YAML") from None
        *parents, leaf = key.split(".")
        node: Any = raw
        for i, part in enumerate(parents):
            where = ".".join(parents[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{item!r}: {where}: no such list item (there are {len(node)})")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"{item!r}: {where} is a value, not a section")
        if isinstance(node, list):
            if not leaf.isdigit() or int(leaf) >= len(node):
                raise ConfigError(f"{item!r}: {key}: no such list item (there are {len(node)})")
            node[int(leaf)] = value
        elif isinstance(node, dict):
            node[leaf] = value
        else:
            raise ConfigError(f"{item!r}: {'.'.join(parents)} is a value, not a section")
    return raw


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read and validate an experiment YAML file (safe loader, size-limited), with command-line
    `key=value` overrides applied before validation."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # at most the limit, whatever stat says (/dev/zero, a pipe)
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: file is larger than {MAX_FILE_BYTES} bytes; not an experiment file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not an experiment file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read (permission denied)") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8)") from None
    try:
        raw = _safe_yaml(text, path)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not an experiment file (YAML nested too deeply)") from None
    return _with_paths_resolved(parse_experiment(apply_overrides(raw, overrides or []), path), path.resolve().parent)


def _with_paths_resolved(experiment: Experiment, base: Path) -> Experiment:
    """Relative data paths and code directories are relative to the experiment file, so the study runs
    the same from any working directory; they are made absolute here, once."""

    def absolute(value: str) -> str:
        return str((base / Path(value).expanduser()).resolve())

    update: dict[str, Any] = {}
    if experiment.data is not None and (experiment.data.path or experiment.data.root):
        data = experiment.data
        update["data"] = data.model_copy(
            update={k: absolute(v) for k, v in (("path", data.path), ("root", data.root)) if v is not None}
        )
    if experiment.code_dirs is not None:
        update["code_dirs"] = [absolute(d) for d in experiment.code_dirs]
    elif experiment.uses_own_code:
        update["code_dirs"] = [str(base)]
    return experiment.model_copy(update=update) if update else experiment


def _safe_yaml(text: str, path: Path) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_NODES or refer to themselves.

    safe_load already refuses tags that construct Python objects. Aliases are shared, not copied, when
    loaded, but validation, hashing and JSON would walk every expanded copy: 9 levels of 9 aliases is
    387 million nodes from a 300-byte file. So the composed graph is measured before construction.
    """
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size is None:
            raise ConfigError(f"{path}: not an experiment file (a YAML alias refers to itself)")
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: not an experiment file "
                f"(more than {MAX_YAML_NODES:,} YAML values, counting each alias expanded)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # libyaml's parser: 5x faster
    """The safe loader, refusing a key given twice in one mapping (PyYAML would keep the last silently,
    so a second `train:` block would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            except TypeError:
                pass  # an unhashable key: the safe loader's own check below refuses it
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int | None:
    """Number of nodes once every alias is expanded (each shared node counted once per use); None for a
    cycle. Iterative with memo, so neither depth nor a bomb's expansion costs more than one visit each."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            visiting.discard(key)
            sizes[key] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
            continue
        if key in sizes:
            continue
        if key in visiting:
            return None
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
