"""Data sets and their seeded train/val/test splits.

Every data set is opened as one map-style torch `Dataset` of `(input, label)` pairs (`open_source`):
the built-in arrays (scikit-learn's digits, synthetic images), an `ImageFolder`, a torchvision data
set read from a local root, or whatever the user's factory returns. The driver opens it once, reads
its labels, makes the stratified split (scikit-learn) and hashes it into the manifest, so two studies
can prove they used the same split; a factory's own `{"train", "val", "test"}` split is used as given.
Workers open the same source and take the driver's indices. The small real data set's arrays are
shipped to them (`shipped_arrays`); synthetic images are regenerated from the seed; on-disk and
factory data are opened where the worker runs (the path must be visible there). Training workers
never import scikit-learn (seconds per run on small nodes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Subset, TensorDataset

from scaleprof.config import DataSpec
from scaleprof.workloads.imports import WorkloadError, call_user, import_object, optional_package, seed_everything

SPLITS = ("train", "val", "test")
DEFAULT_IMAGE_SIZE = (224, 224)
LABEL_SCAN_LIMIT = 2_000_000  # items read one by one to find labels when a data set does not list them


@dataclass(frozen=True)
class Source:
    """An opened data set: the whole indexed set, and the sizes of the splits it came with, if any."""

    dataset: torch.utils.data.Dataset
    given_splits: dict[str, int] | None = None  # a factory's own train/val/test, concatenated in that order


@dataclass(frozen=True)
class Dataset:
    """The driver's view of a data set: labels, shape and the study's split (indices into the set).
    `x` holds the inputs of the in-memory data sets only."""

    y: np.ndarray  # int64, N
    num_classes: int
    input_shape: tuple[int, ...]
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    x: np.ndarray | None = None  # float32, N x C x H x W (digits, synthetic images)
    given_split: bool = False

    @property
    def samples(self) -> int:
        return len(self.y)

    @property
    def train_samples(self) -> int:
        return len(self.train_idx)

    @property
    def val_samples(self) -> int:
        return len(self.val_idx)

    def labels_hash(self) -> str:
        return index_hash(self.y)

    def split_hashes(self) -> dict[str, str]:
        return {name: index_hash(idx) for name, idx in self.splits().items()}

    def splits(self) -> dict[str, np.ndarray]:
        return {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}


def index_hash(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # ships with scikit-learn: 1797 real 8x8 hand-written digits
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, bunch.target.astype(np.int64)


def _synthetic_images(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Class prototypes plus noise: learnable, deterministic from the seed, any shape.
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0.0, 1.0, size=(spec.num_classes, *spec.shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=spec.size, dtype=np.int64)
    x = prototypes[y] + rng.normal(0.0, 1.5, size=(spec.size, *spec.shape)).astype(np.float32)
    return x, y


def _image_transform(spec: DataSpec, size: tuple[int, int] | None) -> Any:
    transforms = optional_package("torchvision.transforms", "vision", "data.name")
    steps: list[Any] = []
    if spec.grayscale:
        steps.append(transforms.Grayscale(num_output_channels=1))
    if size is not None:
        steps.append(transforms.Resize(tuple(size)))
    steps.append(transforms.ToTensor())
    if spec.normalize is not None:
        steps.append(transforms.Normalize(list(spec.normalize[0]), list(spec.normalize[1])))
    return transforms.Compose(steps)


def _image_folder(spec: DataSpec) -> torch.utils.data.Dataset:
    ImageFolder = optional_package("torchvision.datasets", "vision", "data.name").ImageFolder
    path = Path(str(spec.path))
    if not path.is_dir():
        raise WorkloadError("data.path", f"{path}: no such directory")
    try:
        return ImageFolder(str(path), transform=_image_transform(spec, spec.image_size or DEFAULT_IMAGE_SIZE))
    except (FileNotFoundError, OSError) as exc:  # e.g. a class directory without a single image
        raise WorkloadError("data.path", f"{path}: not an image folder ({exc})") from None


def _torchvision(spec: DataSpec) -> torch.utils.data.Dataset:
    torchvision = optional_package("torchvision", "vision", "data.name")
    name = str(spec.name).removeprefix("torchvision:")
    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type):
        raise WorkloadError("data.name", f"torchvision has no data set {name!r}")
    root = Path(str(spec.root))
    if not root.is_dir():
        raise WorkloadError("data.root", f"{root}: no such directory")
    try:
        return cls(root=str(root), download=False, transform=_image_transform(spec, spec.image_size), **spec.kwargs)
    except TypeError as exc:
        raise WorkloadError(
            "data.kwargs", f"torchvision.datasets.{name} does not accept these arguments ({exc})"
        ) from None
    except (RuntimeError, OSError, ValueError) as exc:  # "Dataset not found or corrupted", a missing file
        raise WorkloadError("data.root", f"{root}: torchvision.datasets.{name} cannot read it ({exc})") from None


def _from_factory(spec: DataSpec, seed: int) -> Source:
    factory = import_object(str(spec.factory), "data.factory")
    seed_everything(seed)
    made = call_user(factory, "data.factory", **spec.kwargs)
    if isinstance(made, dict):
        if sorted(made) != sorted(SPLITS):
            raise WorkloadError(
                "data.factory", f"returned a dict with keys {sorted(made)}; give exactly train, val, test"
            )
        parts = [_map_style(made[name], f"data.factory's {name!r}") for name in SPLITS]
        return Source(ConcatDataset(parts), {name: size(part) for name, part in zip(SPLITS, parts)})
    return Source(_map_style(made, "data.factory"))


def _map_style(made: Any, what: str) -> torch.utils.data.Dataset:
    if isinstance(made, torch.utils.data.IterableDataset):
        raise WorkloadError(
            "data.factory", f"{what} is an IterableDataset; scaleprof splits by index, so give a map-style Dataset"
        )
    if isinstance(made, (list, tuple)) and not (made and isinstance(made[0], (tuple, list))):
        raise WorkloadError("data.factory", f"{what} returned a {type(made).__name__}, not a Dataset of (input, label)")
    if not (hasattr(made, "__getitem__") and hasattr(made, "__len__")):
        raise WorkloadError(
            "data.factory", f"{what} returned a {type(made).__name__}, not a torch Dataset of (input, label)"
        )
    if size(made) == 0:
        raise WorkloadError("data.factory", f"{what} is empty")
    return made


def size(dataset: Any) -> int:
    """Items in a map-style data set (torch's Dataset type does not declare __len__)."""
    return len(dataset)


def open_source(spec: DataSpec, seed: int, shipped: tuple[np.ndarray, np.ndarray] | None = None) -> Source:
    """The data set as one indexed torch Dataset (driver and workers alike)."""
    if spec.factory:
        return _from_factory(spec, seed)
    if spec.name == "image-folder":
        return Source(_image_folder(spec))
    if spec.name and spec.name.startswith("torchvision:"):
        return Source(_torchvision(spec))
    if shipped is not None:
        x, y = (a.astype(np.int64) for a in shipped) if spec.is_tokens else shipped  # tokens travel as bytes
    elif spec.is_tokens:
        from scaleprof.workloads.tokens import token_arrays

        x, y = token_arrays(spec, seed)
    else:
        x, y = _digits() if spec.name == "digits" else _synthetic_images(spec, seed)
    return Source(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))


def listed_labels(dataset: torch.utils.data.Dataset) -> np.ndarray | None:
    """Every item's class label from the data set's own list (TensorDataset, ImageFolder's and torchvision's
    `targets`, `labels`), without reading an item; None when it keeps no such list."""
    if isinstance(dataset, TensorDataset):
        return _class_numbers(dataset.tensors[1])
    if isinstance(dataset, ConcatDataset):
        parts = [listed_labels(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]
    if isinstance(dataset, Subset):
        parent = listed_labels(dataset.dataset)
        return None if parent is None else parent[np.asarray(dataset.indices)]
    for attribute in ("targets", "labels"):
        listed = getattr(dataset, attribute, None)
        if listed is not None and len(listed) == size(dataset):
            return _class_numbers(listed)
    return None


def dataset_labels(dataset: torch.utils.data.Dataset) -> np.ndarray:
    """Every item's class label: from the data set's own list when it has one, else item by item."""
    listed = listed_labels(dataset)
    if listed is not None:
        return listed
    n = size(dataset)
    if n > LABEL_SCAN_LIMIT:
        raise WorkloadError("data.factory", f"{n} items and no `targets` list: give the data set a targets attribute")
    try:
        return _class_numbers([dataset[i][1] for i in range(n)])
    except WorkloadError:
        raise
    except Exception as exc:
        raise WorkloadError(
            "data.factory", f"reading the labels item by item failed: {type(exc).__name__}: {exc}"
        ) from None


def _class_numbers(labels: Any) -> np.ndarray:
    try:
        return np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    except (TypeError, ValueError):
        raise WorkloadError("data.factory", "labels must be class numbers 0..C-1 (integers)") from None


def _first_item(dataset: torch.utils.data.Dataset, field: str) -> tuple[torch.Tensor, int]:
    try:
        item = dataset[0]
    except Exception as exc:
        raise WorkloadError(field, f"reading item 0 failed: {type(exc).__name__}: {exc}") from None
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise WorkloadError(field, f"items must be (input, label) pairs, item 0 is a {type(item).__name__}")
    x, label = item
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except Exception:
            raise WorkloadError(field, f"item 0's input is a {type(x).__name__}, not a tensor or array") from None
    try:
        label = int(label)
    except (TypeError, ValueError):
        raise WorkloadError(field, f"item 0's label {label!r} is not a class number") from None
    return x, label


def load_dataset(spec: DataSpec, seed: int) -> Dataset:
    """The data set's labels, input shape and stratified train/val/test split, identical for a seed."""
    from sklearn.model_selection import train_test_split

    source = open_source(spec, seed)
    if spec.is_tokens:
        return _token_dataset(spec, source, seed)
    field = spec.field
    first, _ = _first_item(source.dataset, field)
    y = dataset_labels(source.dataset)
    if y.min() < 0:
        raise WorkloadError(field, f"labels must be class numbers 0..C-1, found {int(y.min())}")
    classes = getattr(source.dataset, "classes", None)
    num_classes = max(int(y.max()) + 1, len(classes) if isinstance(classes, list) else 0)
    if num_classes < 2:
        raise WorkloadError(field, "every item has the same label: a classifier needs two classes or more")
    x = source.dataset.tensors[0].numpy() if isinstance(source.dataset, TensorDataset) and spec.in_memory else None
    shape = tuple(first.shape)
    if source.given_splits is not None:
        bounds = np.cumsum([0, *source.given_splits.values()])
        train, val, test = (np.arange(a, b) for a, b in zip(bounds, bounds[1:]))
        return Dataset(y, num_classes, shape, train, val, test, x, given_split=True)
    all_idx = np.arange(len(y))
    holdout = spec.val_fraction + spec.test_fraction
    try:
        train_idx, rest = train_test_split(all_idx, test_size=holdout, random_state=seed, stratify=y)
        val_idx, test_idx = train_test_split(
            rest, test_size=spec.test_fraction / holdout, random_state=seed, stratify=y[rest]
        )
    except ValueError as exc:  # a class too small to stratify
        raise WorkloadError(field, f"cannot make a stratified train/val/test split of {len(y)} items ({exc})") from None
    return Dataset(y, num_classes, shape, np.sort(train_idx), np.sort(val_idx), np.sort(test_idx), x)


def _token_dataset(spec: DataSpec, source: Source, seed: int) -> Dataset:
    """Sequences split at random (seeded): next-token targets have no class to stratify by. `y` holds every
    target token, so the labels hash covers the data itself."""
    from sklearn.model_selection import train_test_split

    from scaleprof.workloads.tokens import vocab_size

    assert isinstance(source.dataset, TensorDataset)
    x, y = (t.numpy() for t in source.dataset.tensors)
    holdout = spec.val_fraction + spec.test_fraction
    train_idx, rest = train_test_split(np.arange(len(y)), test_size=holdout, random_state=seed)
    val_idx, test_idx = train_test_split(rest, test_size=spec.test_fraction / holdout, random_state=seed)
    return Dataset(y, vocab_size(spec), (spec.seq_len,), np.sort(train_idx), np.sort(val_idx), np.sort(test_idx), x)


def cv_split(data: Dataset, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold` of a stratified k-fold over train+val: (train indices, held-out indices).

    The fixed test split is never part of cross-validation.
    """
    from sklearn.model_selection import StratifiedKFold

    pool = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_pos, held_pos = list(splitter.split(pool, data.y[pool]))[fold]
    return pool[train_pos], pool[held_pos]


@dataclass(frozen=True)
class RunSplit:
    """What one run trains on, validates on each epoch, and is finally evaluated on: indices into the data set."""

    held_name: str  # "test", or "fold 2 of 5": what the final evaluation's figures are named after
    train: np.ndarray
    val: np.ndarray
    held: np.ndarray


@dataclass(frozen=True)
class DataFacts:
    """What a worker checks its own copy of the data set against, and builds a built-in model from."""

    samples: int
    input_shape: tuple[int, ...]
    num_classes: int
    labels_sha256: str

    @classmethod
    def of(cls, data: Dataset) -> DataFacts:
        return cls(data.samples, tuple(data.input_shape), data.num_classes, data.labels_hash())


def run_split(data: Dataset, seed: int, fold: int | None = None, folds: int = 0) -> RunSplit:
    """The fixed split, or fold `fold` of k-fold cross-validation (validated on its held-out fold)."""
    if fold is None:
        return RunSplit("test", data.train_idx, data.val_idx, data.test_idx)
    train_idx, held_idx = cv_split(data, folds, fold, seed)
    return RunSplit(f"fold {fold + 1} of {folds}", train_idx, held_idx, held_idx)


def shipped_arrays(data: Dataset, spec: DataSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The arrays the driver hands to workers: the digits (460 KB) and a text file's tokens (so the file need
    not be on every node); None for the rest (synthetic images and tokens are regenerated from the seed
    rather than sent as up to gigabytes; on-disk images are read in place)."""
    if data.x is None or spec.name not in ("digits", "text-file"):
        return None
    if spec.name == "text-file":  # byte tokens: 1 byte each on the wire, not 8
        return data.x.astype(np.uint8), data.y.astype(np.uint8)
    return data.x, data.y


def subset(dataset: torch.utils.data.Dataset, indices: np.ndarray) -> torch.utils.data.Dataset:
    """The items at `indices`: copied out of in-memory tensors (contiguous batches), else a Subset."""
    if isinstance(dataset, TensorDataset):
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return TensorDataset(*(t[index] for t in dataset.tensors))
    return Subset(dataset, np.asarray(indices).tolist())
