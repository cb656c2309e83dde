"""What each machine needs installed: training workers only the core packages, the driver the
`driver` extra; a missing optional package is a message naming the extra, never a traceback."""

import subprocess
import sys

import pytest

from scaleprof.workloads.imports import WorkloadError, optional_package

# A worker's imports with every driver-only and optional package made unimportable.
WORKER_SIDE = """
import sys
BLOCKED = ("sklearn", "scipy", "altair", "vl_convert", "torchvision", "transformers")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import torch
import scaleprof.execution.worker, scaleprof.worker.session, scaleprof.execution.inference
import scaleprof.workloads.classification, scaleprof.workloads.language_model
from scaleprof.config import ModelSpec
from scaleprof.workloads.models import build_model
model = build_model(ModelSpec(name="mlp"), (64,), 10, 0)
print(sorted(m for m in BLOCKED if m in sys.modules), sum(p.numel() for p in model.parameters()) > 0)
"""


def test_the_training_worker_side_imports_without_the_driver_packages():
    proc = subprocess.run([sys.executable, "-c", WORKER_SIDE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[] True"


def test_a_missing_optional_package_names_the_extra_that_installs_it():
    message = r"model.name: needs the no_such_pkg package: pip install 'scaleprof\[vision\]'"
    with pytest.raises(WorkloadError, match=message):
        optional_package("no_such_pkg.models", "vision", "model.name")


def test_the_cli_says_which_extra_the_driver_needs(monkeypatch, capsys):
    from scaleprof import cli

    monkeypatch.setitem(cli.DRIVER_PACKAGES, "no_such_module_here", "no-such-package")
    assert cli.main(["plan", "experiments/smoke.yaml"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "`scaleprof plan` needs no-such-package" in err and "pip install 'scaleprof[driver]'" in err


def test_the_command_line_starts_without_torch_ray_or_pandas():
    """`scaleprof --help` must be instant: the heavy packages load only in the commands that need them."""
    heavy = "('torch', 'ray', 'pandas', 'sklearn')"
    probe = f"import sys, scaleprof.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
