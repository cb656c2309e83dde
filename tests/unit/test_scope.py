"""A study's process-wide settings last as long as the study (execution/scope.py): a program that runs two
studies gets each one's settings and finds its process as it was after each."""

import os
import signal
import sys

import pytest

from scaleprof.config import Experiment
from scaleprof.execution.scope import environ, sigterm_handler_kept, study_scope

VAR = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def _experiment(timeout_s: float, code_dir: str) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "s",
            "model": {"name": "mlp"},
            "data": {"name": "digits"},
            "code_dirs": [code_dir],
            "placements": [{"name": "cpu-1", "workers": 1}],
            "ray": {"placement_timeout_s": timeout_s},
        }
    )


def test_each_study_gets_its_own_settings_and_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    path, handler = list(sys.path), signal.getsignal(signal.SIGTERM)
    for timeout_s in (30, 90):
        with study_scope(_experiment(timeout_s, str(tmp_path))):
            assert float(os.environ[VAR]) == timeout_s
            assert sys.path[0] == str(tmp_path)
            signal.signal(signal.SIGTERM, lambda *_: None)  # as connect_ray does when it starts Ray
        assert VAR not in os.environ and sys.path == path and signal.getsignal(signal.SIGTERM) is handler


def test_a_variable_the_user_set_is_theirs_again_after_the_block(monkeypatch):
    monkeypatch.setenv(VAR, "7")
    with environ({VAR: "30"}):
        assert os.environ[VAR] == "30"
    assert os.environ[VAR] == "7"


def test_the_handler_comes_back_even_when_the_block_fails():
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), sigterm_handler_kept():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RuntimeError("a run failed")
    assert signal.getsignal(signal.SIGTERM) is handler
