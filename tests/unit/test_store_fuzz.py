"""The store reader against damaged copies of a study: arbitrary truncations, byte changes, garbage and
repeated lines in its files. Reading either gives tables (saying what it left out) or a StoreError naming
the file — never another exception (which the command line could only show as a generic message) and
never a figure computed over repeated events."""

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaleprof.analysis.summarize import summarize
from scaleprof.report.render import render_summary_md
from scaleprof.telemetry.store import StoreError, StudyStore
from tests.unit.study_data import make_study

FILES = ["events.jsonl", "run_records.jsonl", "manifest.json", "inference_records.jsonl"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("fuzz") / "study", jsonl=True).root  # line-based files to damage


@pytest.fixture(scope="module")
def original(template: Path):
    return summarize(StudyStore(template)).runs.set_index("run_id")


def fresh(template: Path, tmp_path: Path, n: int) -> StudyStore:
    target = tmp_path / f"copy-{n}"
    shutil.copytree(template, target)
    return StudyStore(target)


damage = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 1)),
    st.tuples(st.just("bytes"), st.sampled_from(FILES), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("append"), st.sampled_from(FILES), st.binary(max_size=64)),
    st.tuples(st.just("repeat"), st.sampled_from(FILES), st.floats(0, 1), st.floats(0, 1)),
)
counter = iter(range(1_000_000))


def apply(store: StudyStore, change: tuple) -> None:
    kind, name = change[0], change[1]
    path = store.root / name
    data = path.read_bytes() if path.exists() else b""
    if kind == "truncate":
        data = data[: int(len(data) * change[2])]
    elif kind == "bytes":
        at = int(len(data) * change[2])
        data = data[:at] + change[3] + data[at + len(change[3]) :]
    elif kind == "append":
        data += change[2]
    else:  # repeat a run of whole lines in place
        lines = data.splitlines(keepends=True)
        a, b = sorted((int(len(lines) * change[2]), int(len(lines) * change[3])))
        data = b"".join(lines[:b] + lines[a:b] + lines[b:])
    path.write_bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(damage, min_size=1, max_size=3))
def test_a_damaged_study_reads_as_tables_or_one_store_error(template, tmp_path, changes):
    store = fresh(template, tmp_path, next(counter))
    for change in changes:
        apply(store, change)
    try:
        tables = summarize(store)
    except StoreError as err:
        assert err.path.name == "manifest.json"  # the one file without which nothing can be said
        return
    render_summary_md(tables)  # the report's text renders too


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=4))
def test_repeated_event_lines_never_change_a_figure(template, original, tmp_path, spans):
    store = fresh(template, tmp_path, next(counter))
    for a, b in spans:
        apply(store, ("repeat", "events.jsonl", a, b))
    tables = summarize(store)
    runs = tables.runs.set_index("run_id")
    for column in ("throughput", "epoch_time_s", "samples_total", "step_time_p50_s", "mfu", "cpu_util_pct"):
        assert runs[column].equals(original[column]), column
    if store.events_path.stat().st_size > (template / "events.jsonl").stat().st_size:
        assert any("repeated event(s)" in line for line in tables.damage)
