"""Data sets and their seeded train/val/test splits.

The driver loads the data set once, computes every run's split indices (scikit-learn) and hashes them
into the manifest, so two studies can prove they used the same split. Workers get the indices and,
for the small real data set, the arrays (`shipped_arrays`); synthetic images are regenerated from the
seed in each worker. So training workers never import scikit-learn (seconds per run on small nodes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from typing import Any

import numpy as np

from scaleprof.config import DataSpec


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32, N x C x H x W
    y: np.ndarray  # int64, N
    num_classes: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def split_hashes(self) -> dict[str, str]:
        return {name: index_hash(idx) for name, idx in self.splits().items()}

    def splits(self) -> dict[str, np.ndarray]:
        return {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}


def index_hash(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]


def _digits() -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # ships with scikit-learn: 1797 real 8x8 hand-written digits
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, bunch.target.astype(np.int64), 10


def _synthetic_images(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    # Class prototypes plus noise: learnable, deterministic from the seed, any shape.
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0.0, 1.0, size=(spec.num_classes, *spec.shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=spec.size, dtype=np.int64)
    x = prototypes[y] + rng.normal(0.0, 1.5, size=(spec.size, *spec.shape)).astype(np.float32)
    return x, y, spec.num_classes


def load_dataset(spec: DataSpec, seed: int) -> Dataset:
    """The data set and its stratified train/val/test split, identical for a given seed."""
    from sklearn.model_selection import train_test_split

    if spec.name == "digits":
        x, y, num_classes = _digits()
    else:
        x, y, num_classes = _synthetic_images(spec, seed)
    all_idx = np.arange(len(y))
    holdout = spec.val_fraction + spec.test_fraction
    train_idx, rest = train_test_split(all_idx, test_size=holdout, random_state=seed, stratify=y)
    val_idx, test_idx = train_test_split(
        rest, test_size=spec.test_fraction / holdout, random_state=seed, stratify=y[rest]
    )
    return Dataset(x, y, num_classes, np.sort(train_idx), np.sort(val_idx), np.sort(test_idx))


def cv_split(data: Dataset, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold` of a stratified k-fold over train+val: (train indices, held-out indices).

    The fixed test split is never part of cross-validation.
    """
    from sklearn.model_selection import StratifiedKFold

    pool = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_pos, held_pos = list(splitter.split(pool, data.y[pool]))[fold]
    return pool[train_pos], pool[held_pos]


def run_split(data: Dataset, seed: int, fold: int | None = None, folds: int = 0) -> dict[str, Any]:
    """What one run trains on, validates on each epoch, and is finally evaluated on (indices into the
    data set): the fixed split, or fold `fold` of k-fold cross-validation (validated on its held-out fold)."""
    if fold is None:
        return {"held_name": "test", "train": data.train_idx, "val": data.val_idx, "held": data.test_idx}
    train_idx, held_idx = cv_split(data, folds, fold, seed)
    return {"held_name": f"fold {fold + 1} of {folds}", "train": train_idx, "val": held_idx, "held": held_idx}


def shipped_arrays(data: Dataset, spec: DataSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The arrays the driver hands to workers: the digits (460 KB); None for synthetic images, which
    each worker regenerates from the seed rather than receive up to gigabytes."""
    return (data.x, data.y) if spec.name == "digits" else None


def worker_arrays(spec: DataSpec, seed: int, shipped: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """In a worker: the shipped arrays, or the synthetic images regenerated from the seed (no scikit-learn)."""
    if shipped is not None:
        return shipped
    x, y, _ = _synthetic_images(spec, seed)
    return x, y
