"""Data sets and their seeded train/val/test splits.

Every worker rebuilds the same arrays from the seed (no data crosses the object store), and the
split indices are hashed into the manifest so two studies can prove they used the same split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

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
