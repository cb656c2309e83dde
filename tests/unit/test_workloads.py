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
    assert a.x is not None
    assert a.x.shape == (1797, 1, 8, 8) and a.x.dtype == np.float32 and a.x.max() <= 1.0
    together = np.concatenate([a.train_idx, a.val_idx, a.test_idx])
    assert len(together) == len(set(together)) == 1797
    assert a.split_hashes() == b.split_hashes() != c.split_hashes()
    assert abs(len(a.test_idx) / 1797 - 0.15) < 0.01


def test_synthetic_images_any_shape_deterministic():
    spec = DataSpec(name="synthetic-images", shape=(3, 16, 12), num_classes=4, size=200)
    a, b = load_dataset(spec, 7), load_dataset(spec, 7)
    assert a.x is not None
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


def _fault(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> str:
    """check_model's reason for a model that is at fault (None would mean it is not)."""
    reason = check_model(spec, input_shape, num_classes)
    assert reason is not None
    return reason


def test_check_model_names_the_field_at_fault():
    assert check_model(ModelSpec(name="torchvision:resnet18"), (1, 8, 8), 10) is None
    assert "no classification model 'nosuchnet'" in _fault(ModelSpec(name="torchvision:nosuchnet"), (3, 8, 8), 10)
    assert _fault(ModelSpec(name="mlp", kwargs={"depth": 3}), (1, 8, 8), 10).startswith("kwargs:")


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
    from torch.utils.data import TensorDataset

    from scaleprof.workloads.data import open_source, run_split, shipped_arrays

    modules = "scaleprof.execution.worker, scaleprof.workloads.classification, scaleprof.session"
    probe = f"import sys, {modules}; print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"

    digits = DataSpec(name="digits")
    data = load_dataset(digits, 0)
    opened = open_source(digits, 0, shipped_arrays(data, digits)).dataset
    assert isinstance(opened, TensorDataset)
    x, y = opened.tensors
    assert np.shares_memory(x.numpy(), data.x) and np.shares_memory(y.numpy(), data.y)
    synthetic = DataSpec(name="synthetic-images", size=200, shape=(1, 4, 4), num_classes=2)
    driver = load_dataset(synthetic, 3)
    assert shipped_arrays(driver, synthetic) is None
    regenerated = open_source(synthetic, 3, None).dataset
    assert isinstance(regenerated, TensorDataset) and driver.x is not None
    x, y = regenerated.tensors
    assert np.array_equal(x.numpy(), driver.x) and np.array_equal(y.numpy(), driver.y)
    fixed, fold = run_split(data, 0), run_split(data, 0, fold=1, folds=3)
    assert fixed.held_name == "test" and np.array_equal(fixed.held, data.test_idx)
    assert fold.held_name == "fold 2 of 3" and np.array_equal(fold.val, fold.held)
    assert not set(fold.held) & set(data.test_idx)


# ---- the user's own data and models ----------------------------------------------------------------


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=12, size=(10, 14)):
    """Real PNG files in torchvision's ImageFolder layout: one directory per class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 60 * c, 20, size=(*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_mnist_root(root, images=60, seed=0):
    """MNIST's own idx files (big-endian magic 2051 images, 2049 labels), as torchvision reads them."""
    import struct

    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        labels = (np.arange(images) % 3).astype(np.uint8)
        pixels = (labels[:, None, None] * 80 + rng.integers(0, 40, size=(images, 28, 28))).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, images, 28, 28) + pixels.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, images) + labels.tobytes())
    return root


def test_image_folder_is_read_resized_and_split_by_class(tmp_path):
    root = write_image_folder(tmp_path / "images")
    spec = DataSpec(name="image-folder", path=str(root), image_size=(8, 8), normalize=((0.5,) * 3, (0.25,) * 3))
    data = load_dataset(spec, seed=0)
    assert data.input_shape == (3, 8, 8) and data.num_classes == 3 and data.samples == 36 and data.x is None
    assert sorted(np.bincount(data.y[data.test_idx])) == [2, 2, 2]  # stratified: every class in the test split
    from scaleprof.workloads.data import open_source

    x, label = open_source(spec, 0).dataset[0]
    assert x.shape == (3, 8, 8) and label == 0 and float(x.min()) < 0  # normalised around 0.5 / 0.25


def test_torchvision_data_set_read_from_a_local_root_never_downloaded(tmp_path):
    spec = DataSpec(name="torchvision:MNIST", root=str(write_mnist_root(tmp_path / "mnist")), kwargs={"train": True})
    data = load_dataset(spec, seed=0)
    assert data.input_shape == (1, 28, 28) and data.samples == 60
    assert data.num_classes == 10  # MNIST's own class list, even though this root holds only three
    assert set(np.unique(data.y)) == {0, 1, 2}


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"name": "image-folder", "path": "/no/such/dir"}, "data.path", "no such directory"),
        ({"name": "torchvision:MNIST", "root": "/no/such/root"}, "data.root", "no such directory"),
        ({"name": "torchvision:NoSuchSet", "root": "/tmp"}, "data.name", "no data set 'NoSuchSet'"),
    ],
)
def test_missing_data_is_a_clear_error_naming_the_field(spec, field, words):
    from scaleprof.workloads.imports import WorkloadError

    with pytest.raises(WorkloadError) as err:
        load_dataset(DataSpec.model_validate(spec), seed=0)
    assert err.value.field == field and words in err.value.message


def test_torchvision_root_without_the_files_says_so(tmp_path):
    from scaleprof.workloads.imports import WorkloadError

    with pytest.raises(WorkloadError) as err:
        load_dataset(DataSpec(name="torchvision:CIFAR10", root=str(tmp_path)), seed=0)
    assert err.value.field == "data.root" and "cannot read it" in err.value.message


USER_CODE = '''
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset, TensorDataset


class Blobs(Dataset):
    """No targets attribute: scaleprof reads the labels item by item."""
    def __init__(self, n=90):
        g = torch.Generator().manual_seed(1)
        self.y = [i % 3 for i in range(n)]
        self.x = torch.randn(n, 6, generator=g) + torch.tensor(self.y)[:, None]
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return self.x[i], self.y[i]


def blobs(n=90):
    return Blobs(n)


def given_splits():
    x, y = torch.randn(50, 4), torch.arange(50) % 2
    return {"train": TensorDataset(x[:30], y[:30]), "val": TensorDataset(x[30:40], y[30:40]),
            "test": TensorDataset(x[40:], y[40:])}


def unseeded(n=60):
    import numpy as np
    x = np.random.randn(n, 3).astype("float32")
    y = np.random.randint(0, 3, size=n)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def not_a_dataset():
    return [1, 2, 3]


def a_stream():
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(3), 0
    return Stream()


def triples():
    return [(torch.zeros(2), 0, "extra")] * 10


def net(width=8, classes=3):
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, classes))


def wrong_output():
    return nn.Linear(6, 5)


def not_a_module():
    return "a string"


def raises():
    raise RuntimeError("out of coffee")

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_code(tmp_path):
    from scaleprof.workloads.imports import user_code as scope

    (tmp_path / "user_things.py").write_text(USER_CODE)
    with scope([str(tmp_path)]):
        yield [str(tmp_path)]


def test_user_code_is_importable_only_inside_its_scope_and_each_scope_gets_its_own(tmp_path):
    """A notebook running two studies whose code directories hold a module of the same name gets each
    study's own module, and the process's sys.path is as it was after each."""
    import sys

    from scaleprof.workloads.imports import WorkloadError, import_object
    from scaleprof.workloads.imports import user_code as scope

    first, second = tmp_path / "first", tmp_path / "second"
    for where, value in ((first, 1), (second, 2)):
        where.mkdir()
        (where / "same_name.py").write_text(f"def which():\n    return {value}\n")
    path = list(sys.path)
    with scope([str(first)]):
        assert import_object("same_name:which", "model.factory")() == 1
        with scope([str(first)]):  # nested over the same directory: nothing added, nothing taken away
            pass
        assert import_object("same_name:which", "model.factory")() == 1
    assert sys.path == path and "same_name" not in sys.modules
    with scope([str(second)]):
        assert import_object("same_name:which", "model.factory")() == 2
        with pytest.raises(WorkloadError, match=f"looked in {second}"):
            import_object("missing_module:f", "model.factory")
    assert sys.path == path and "same_name" not in sys.modules
    with pytest.raises(WorkloadError, match="no module named 'same_name'"):
        import_object("same_name:which", "model.factory")


def test_factory_data_set_is_split_by_scaleprof_or_used_as_given(user_code):
    data = load_dataset(DataSpec(factory="user_things:blobs", kwargs={"n": 90}), seed=0)
    assert data.samples == 90 and data.input_shape == (6,) and data.num_classes == 3 and not data.given_split
    assert len(data.test_idx) == 14 and sorted(np.bincount(data.y[data.test_idx]).tolist()) == [4, 5, 5]
    given = load_dataset(DataSpec(factory="user_things:given_splits"), seed=0)
    assert given.given_split and [len(given.train_idx), len(given.val_idx), len(given.test_idx)] == [30, 10, 10]
    assert given.test_idx.tolist() == list(range(40, 50))  # the factory's own test set, in the concatenated index


@pytest.mark.parametrize(
    "factory, words",
    [
        ("user_things:not_a_dataset", "returned a list, not a Dataset of (input, label)"),
        ("user_things:a_stream", "IterableDataset"),
        ("user_things:triples", "items must be (input, label) pairs"),
        ("user_things:raises", "it raised RuntimeError: out of coffee"),
        ("user_things:nope", "has no 'nope'"),
        ("user_things:NOT_CALLABLE", "is a int, not a function"),
        ("not_there:load", "no module named 'not_there'"),
    ],
)
def test_bad_data_factories_name_the_field(user_code, factory, words):
    from scaleprof.workloads.imports import WorkloadError

    with pytest.raises(WorkloadError) as err:
        load_dataset(DataSpec(factory=factory), seed=0)
    assert err.value.field == "data.factory" and words in err.value.message


def test_model_factory_is_seeded_and_checked_against_the_data(user_code):
    spec = ModelSpec(factory="user_things:net", kwargs={"width": 16})
    a, b = (build_model(spec, (6,), 3, seed=5) for _ in range(2))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert spec.label == "user_things-net"
    assert check_model(spec, (6,), 3) is None
    wrong = _fault(ModelSpec(factory="user_things:wrong_output"), (6,), 3)
    assert wrong.startswith("factory:") and "shape [2, 5]" in wrong and "[2, 3]" in wrong
    assert "not a torch.nn.Module" in _fault(ModelSpec(factory="user_things:not_a_module"), (6,), 3)
    assert "cannot run on inputs" in _fault(spec, (7,), 3)
    assert "calling it with kwargs ['depth']" in _fault(
        ModelSpec(factory="user_things:net", kwargs={"depth": 2}), (6,), 3
    )


def test_code_modules_ship_python_files_and_packages_not_data(tmp_path):
    from scaleprof.workloads.imports import code_modules

    (tmp_path / "a.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert code_modules([str(tmp_path)]) == [str(tmp_path / "a.py"), str(tmp_path / "pkg")]


def test_a_factory_drawing_from_global_generators_gets_the_same_data_every_time(user_code):
    """The factory runs on the driver and in every worker: each call is seeded with the experiment's
    seed first, so np.random in it draws the same data set everywhere (and another seed, another one)."""
    spec = DataSpec(factory="user_things:unseeded")
    a, b, c = (load_dataset(spec, seed=s) for s in (4, 4, 5))
    assert a.labels_hash() == b.labels_hash() != c.labels_hash()


def test_a_library_below_a_code_directory_is_not_forgotten(tmp_path):
    """A project's own .venv sits below its code directory: its packages stay imported after the study."""
    import sys

    from scaleprof.workloads.imports import import_object
    from scaleprof.workloads.imports import user_code as scope

    site = tmp_path / ".venv" / "site"
    (site / "a_library_pkg").mkdir(parents=True)
    (site / "a_library_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "mine.py").write_text("import a_library_pkg\ndef f():\n    return a_library_pkg.VALUE\n")
    sys.path.insert(0, str(site))
    try:
        with scope([str(tmp_path)]):
            assert import_object("mine:f", "model.factory")() == 1
        assert "a_library_pkg" in sys.modules and "mine" not in sys.modules
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("a_library_pkg", None)
