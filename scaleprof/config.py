"""The experiment file: typed, validated, with defaults and field docs in one tree.

`load_experiment(path)` is the only way in. Every error it raises is a `ConfigError` whose
message names the file and the field at fault, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_FILE_BYTES = 1_000_000  # an experiment file is a few hundred bytes; refuse anything absurd
MAX_YAML_NODES = 100_000  # after alias expansion: anchors that multiply (a "billion laughs") are refused
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
BUILTIN_MODELS = ("mlp", "small-cnn")
MAX_SYNTHETIC_VALUES = 2**29  # float32 values: 2 GiB per worker


class ConfigError(Exception):
    """A user error in an experiment file: the message names the file and the field."""


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt key must never be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name: str = Field(description="mlp, small-cnn, or torchvision:<classification model name>")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the model constructor")
    label_: str | None = Field(
        default=None, alias="label", pattern=NAME_PATTERN, description="names the model in run ids and the report"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name in BUILTIN_MODELS:
            return name
        if name.startswith("torchvision:") and len(name) > len("torchvision:"):
            return name
        raise ValueError(f"unknown model {name!r}; use one of {', '.join(BUILTIN_MODELS)} or torchvision:<name>")

    @property
    def label(self) -> str:
        return self.label_ or self.name.removeprefix("torchvision:")


class DataSpec(_Strict):
    name: Literal["digits", "synthetic-images"] = Field(description="digits (sklearn, real) or synthetic-images")
    shape: tuple[int, int, int] = Field(default=(3, 32, 32), description="C, H, W of synthetic images")
    num_classes: int = Field(default=10, ge=2, le=10_000, description="classes of synthetic images")
    size: int = Field(default=2048, ge=32, le=10_000_000, description="number of synthetic images")
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(d < 1 or d > 4096 for d in shape):
            raise ValueError("every dimension must be between 1 and 4096")
        return shape

    @model_validator(mode="after")
    def _fits_in_memory(self) -> DataSpec:
        if self.name == "synthetic-images" and self.size * math.prod(self.shape) > MAX_SYNTHETIC_VALUES:
            raise ValueError(
                f"data.size: {self.size} images of shape {list(self.shape)} would take "
                f"{self.size * math.prod(self.shape) * 4 / 2**30:.1f} GiB per worker; the limit is "
                f"{MAX_SYNTHETIC_VALUES * 4 / 2**30:.0f} GiB"
            )
        return self

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8) if self.name == "digits" else self.shape

    @property
    def classes(self) -> int:
        return 10 if self.name == "digits" else self.num_classes

    @property
    def samples(self) -> int:
        return 1797 if self.name == "digits" else self.size


class TrainSpec(_Strict):
    epochs: int = Field(default=2, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="per worker (weak) or global (strong)")
    scaling: Literal["weak", "strong"] = Field(
        default="weak",
        description="weak: batch_size is per worker, so the global batch grows with workers; "
        "strong: batch_size is the global batch, split evenly over the workers",
    )
    lr: float = Field(default=0.05, gt=0, le=10, description="SGD learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    warmup_steps: int = Field(
        default=5, ge=0, description="steps excluded from steady state when a run has a single epoch"
    )
    lr_scaling: Literal["none", "linear"] = Field(
        default="none",
        description="linear: lr x (global batch / train.batch_size), the linear scaling rule for growing global batches",
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


class MonitorSpec(_Strict):
    enabled: bool = True
    interval_s: float = Field(default=1.0, ge=0.05, le=60)


class PlacementSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    workers: int = Field(ge=1, le=4096)
    cpus_per_worker: float = Field(default=1, gt=0, le=1024)
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

    @model_validator(mode="after")
    def _something(self) -> GoalSpec:
        if self.max_cost_per_sample_usd is None and self.min_throughput is None:
            raise ValueError("goal: give max_cost_per_sample_usd, min_throughput or both")
        return self


class RaySpec(_Strict):
    placement_timeout_s: float = Field(
        default=20, gt=0, le=3600, description="how long to wait for a placement's resources before skipping it"
    )


class Experiment(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="names the study directory")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    model: ModelSpec | None = Field(default=None, description="one model; or give several under models")
    models: list[ModelSpec] | None = Field(default=None, min_length=1, max_length=64)
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    repeats: int = Field(default=1, ge=1, le=100)
    placements: list[PlacementSpec] = Field(min_length=1, max_length=256)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    cost: CostSpec = Field(default_factory=CostSpec)
    goal: GoalSpec | None = Field(default=None, description="name the cheapest placement that meets it")
    ray: RaySpec = Field(default_factory=RaySpec)

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if (self.model is None) == (self.models is None):
            raise ValueError("model: give either model or models (a list), not both and not neither")
        labels: set[str] = set()
        for i, m in enumerate(self.model_list):
            if m.label in labels:
                raise ValueError(f"models.{i}.label: two models named {m.label!r}; give them distinct labels")
            labels.add(m.label)
        names = [p.name for p in self.placements]
        cv = self.evaluation.cv_placement
        if cv is not None and cv not in names:
            raise ValueError(f"evaluation.cv_placement: no placement named {cv!r} (have: {', '.join(names)})")
        seen: set[str] = set()
        for i, p in enumerate(self.placements):
            if p.node_type is None and self.cost.node_type is None and any(q.node_type for q in self.placements):
                raise ValueError(f"placements.{i}.node_type: name a node type here or set cost.node_type")
            if p.name in seen:
                raise ValueError(f"placements.{i}.name: duplicate placement name {p.name!r}")
            seen.add(p.name)
            if self.train.scaling == "strong" and self.train.batch_size % p.workers:
                raise ValueError(
                    f"placements.{i}.workers: strong scaling splits train.batch_size={self.train.batch_size} "
                    f"evenly over workers, but {p.workers} does not divide it"
                )
        return self

    @property
    def model_list(self) -> list[ModelSpec]:
        return self.models if self.models is not None else [self.model]  # type: ignore[list-item]

    @property
    def cv_reference(self) -> PlacementSpec:
        name = self.evaluation.cv_placement or self.placements[0].name
        return next(p for p in self.placements if p.name == name)

    def node_type(self, placement: PlacementSpec) -> str | None:
        return placement.node_type or self.cost.node_type

    def per_worker_batch(self, placement: PlacementSpec) -> int:
        if self.train.scaling == "strong":
            return self.train.batch_size // placement.workers
        return self.train.batch_size

    def resolved(self) -> dict[str, Any]:
        """The experiment with every default filled in, as plain JSON-able data."""
        return self.model_dump(mode="json", by_alias=True)

    def digest(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_validation(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid experiment"]
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        loc = _field_path(tuple(e["loc"]))
        # Our cross-field checks put the field path at the start of the message.
        if re.match(r"^[a-z_]+(\.\d+)?(\.[a-z_]+)?: ", msg):
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


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file (safe loader, size-limited)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: file is larger than {MAX_FILE_BYTES} bytes; not an experiment file")
        data = path.read_bytes()
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
    return parse_experiment(raw, path)


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
                f"{path}: not an experiment file (more than {MAX_YAML_NODES:,} YAML values, counting each alias expanded)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser: 5x faster
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
