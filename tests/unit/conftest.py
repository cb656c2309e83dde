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
