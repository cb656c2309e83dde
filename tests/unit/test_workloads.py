import numpy as np
import pytest
import torch

from scaleprof.config import DataSpec, ModelSpec
from scaleprof.workloads.data import load_dataset
from scaleprof.workloads.models import build_model, check_model


def test_digits_split_is_disjoint_complete_and_seeded():
    a = load_dataset(DataSpec(name="digits"), seed=0)
    b = load_dataset(DataSpec(name="digits"), seed=0)
    c = load_dataset(DataSpec(name="digits"), seed=1)
    assert a.x.shape == (1797, 1, 8, 8) and a.x.dtype == np.float32 and a.x.max() <= 1.0
    together = np.concatenate([a.train_idx, a.val_idx, a.test_idx])
    assert len(together) == len(set(together)) == 1797
    assert a.split_hashes() == b.split_hashes() != c.split_hashes()
    assert abs(len(a.test_idx) / 1797 - 0.15) < 0.01


def test_synthetic_images_any_shape_deterministic():
    spec = DataSpec(name="synthetic-images", shape=(3, 16, 12), num_classes=4, size=200)
    a, b = load_dataset(spec, 7), load_dataset(spec, 7)
    assert a.x.shape == (200, 3, 16, 12) and a.num_classes == 4
    np.testing.assert_array_equal(a.x, b.x)
    assert set(np.unique(a.y)) == {0, 1, 2, 3}


@pytest.mark.parametrize("name, shape", [("mlp", (1, 8, 8)), ("small-cnn", (1, 8, 8)), ("small-cnn", (3, 32, 32))])
def test_models_same_seed_same_weights_and_right_output(name, shape):
    a = build_model(ModelSpec(name=name), shape, 10, seed=3)
    b = build_model(ModelSpec(name=name), shape, 10, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert a(torch.zeros(2, *shape)).shape == (2, 10)


def test_torchvision_model_on_grey_images():
    model = build_model(ModelSpec(name="torchvision:resnet18"), (1, 8, 8), 10, seed=0)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_check_model_names_the_field_at_fault():
    assert check_model(ModelSpec(name="torchvision:resnet18"), (1, 8, 8), 10) is None
    assert "no classification model 'nosuchnet'" in check_model(ModelSpec(name="torchvision:nosuchnet"), (3, 8, 8), 10)
    assert check_model(ModelSpec(name="mlp", kwargs={"depth": 3}), (1, 8, 8), 10).startswith("kwargs:")


def test_cv_folds_partition_train_and_val_and_never_touch_test():
    from scaleprof.workloads.data import cv_split

    data = load_dataset(DataSpec(name="digits"), seed=0)
    pool = set(data.train_idx) | set(data.val_idx)
    held = []
    for fold in range(3):
        train, out = cv_split(data, 3, fold, seed=0)
        assert set(train) | set(out) == pool and not set(train) & set(out)
        held += list(out)
    assert sorted(held) == sorted(pool)
    assert not set(held) & set(data.test_idx)


def test_training_workers_never_import_sklearn_and_get_the_drivers_data():
    """Workers get split indices and the digits from the driver (scikit-learn costs seconds per run to import);
    synthetic images they regenerate from the seed, identical to the driver's."""
    import subprocess
    import sys

    import numpy as np

    from scaleprof.workloads.data import open_source, run_split, shipped_arrays

    modules = "scaleprof.execution.worker, scaleprof.workloads.classification, scaleprof.session"
    probe = f"import sys, {modules}; print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"

    digits = DataSpec(name="digits")
    data = load_dataset(digits, 0)
    x, y = open_source(digits, 0, shipped_arrays(data, digits)).dataset.tensors
    assert np.shares_memory(x.numpy(), data.x) and np.shares_memory(y.numpy(), data.y)
    synthetic = DataSpec(name="synthetic-images", size=200, shape=(1, 4, 4), num_classes=2)
    driver = load_dataset(synthetic, 3)
    assert shipped_arrays(driver, synthetic) is None
    x, y = open_source(synthetic, 3, None).dataset.tensors
    assert np.array_equal(x.numpy(), driver.x) and np.array_equal(y.numpy(), driver.y)
    fixed, fold = run_split(data, 0), run_split(data, 0, fold=1, folds=3)
    assert fixed["held_name"] == "test" and np.array_equal(fixed["held"], data.test_idx)
    assert fold["held_name"] == "fold 2 of 3" and np.array_equal(fold["val"], fold["held"])
    assert not set(fold["held"]) & set(data.test_idx)
