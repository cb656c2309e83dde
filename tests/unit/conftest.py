"""The hand-made study (tests/unit/study_data.py), summarised and rendered once for the analysis and report tests."""

import pytest

from scaleprof.analysis.summarize import summarize, write_tables
from scaleprof.report.render import render_report

from .study_data import make_study


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    store = make_study(tmp_path_factory.mktemp("r") / "study", reason="needs <script>alert(1)</script> GPUs")
    tables = summarize(store)
    write_tables(store, tables)
    report = render_report(store.root, tables)
    return store, tables, report


@pytest.fixture(scope="session")
def slower_study(tmp_path_factory):
    """The hand-made study with cpu-2 at 80 samples/s: 2 workers 0.4x as fast as cpu-1's one (200 samples/s),
    as on a contended machine."""
    store = make_study(tmp_path_factory.mktemp("r") / "slower", two_worker_epoch_s=5.0)
    tables = summarize(store)
    return store, tables
