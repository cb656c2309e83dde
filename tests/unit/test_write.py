"""Re-rendering a study never replaces its tables with ones made from less (report/write.py): a damaged,
deleted, repeated or foreign event segment either changes nothing the tables say, or leaves the tables
in place untouched and writes the re-render beside them, saying what was lost."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaleprof.analysis.summarize import summarize
from scaleprof.report.write import PARTIAL_DIR, write_study
from scaleprof.telemetry.store import RUNS_TABLE, StudyStore

from .study_data import make_study

TABLES = ["runs.parquet", "epochs.parquet", "placements.parquet", "workers.parquet", "scaling_fits.parquet"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    store = make_study(tmp_path_factory.mktemp("w") / "study")
    write_study(store, summarize(store))
    return store.root


def copy_of(rendered: Path, tmp_path: Path, name: str = "copy") -> StudyStore:
    shutil.copytree(rendered, tmp_path / name)
    return StudyStore(tmp_path / name)


def snapshot(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in [*TABLES, "report.html", "charts/throughput.png"]}


def segments(store: StudyStore) -> list[Path]:
    return sorted((store.root / "events" / "0").glob("*.parquet"))


def test_a_truncated_segment_keeps_the_tables_and_renders_beside_them(rendered, tmp_path):
    store = copy_of(rendered, tmp_path)
    before = snapshot(store.root)
    first = segments(store)[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    written = write_study(store, summarize(store))
    assert written.kept_previous and written.report == store.root / PARTIAL_DIR / "report.html"
    assert "001-mlp-cpu-1-r0: 0 events readable, 30 when its tables were made" in written.loss
    assert snapshot(store.root) == before  # not one byte of the tables in place changed
    partial = pd.read_parquet(store.root / PARTIAL_DIR / RUNS_TABLE).set_index("run_id")
    assert partial.loc["001-mlp-cpu-1-r0", "status"] == "unmeasured"


def test_accepting_the_loss_replaces_them(rendered, tmp_path):
    store = copy_of(rendered, tmp_path)
    segments(store)[0].unlink()
    written = write_study(store, summarize(store), accept_loss=True)
    assert written.loss and not written.kept_previous and written.report == store.root / "report.html"
    assert pd.read_parquet(store.root / RUNS_TABLE).set_index("run_id").loc["001-mlp-cpu-1-r0", "events"] == 0


def test_a_complete_store_renders_in_place(rendered, tmp_path):
    store = copy_of(rendered, tmp_path)
    written = write_study(store, summarize(store))
    assert written.loss == [] and not written.kept_previous and not (store.root / PARTIAL_DIR).exists()


damage = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10), st.floats(0, 0.99)),
    st.tuples(st.just("delete"), st.integers(0, 10)),
    st.tuples(st.just("duplicate"), st.integers(0, 10), st.integers(50, 99)),  # the same events under a new name
    st.tuples(
        st.just("foreign"),
        st.sampled_from(["00000090-00000090.parquet", "notes.txt", ".x.parquet.tmp"]),
        st.binary(max_size=64),
    ),  # fmt: skip
)
counter = iter(range(1_000_000))


def apply(store: StudyStore, change: tuple) -> None:
    found = segments(store)
    if change[0] == "foreign":
        (store.root / "events" / "0" / change[1]).write_bytes(change[2])
        return
    if not found:
        return
    path = found[change[1] % len(found)]
    if change[0] == "truncate":
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * change[2])])
    elif change[0] == "delete":
        path.unlink()
    elif not (copy := path.with_name(f"000000{change[2]}-000000{change[2]}.parquet")).exists():
        shutil.copy(path, copy)


# Tables only (report=False): the rule is the same for the report, shown above, and charts cost seconds each.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(damage, min_size=1, max_size=3))
def test_damaged_segments_never_silently_replace_a_table_made_from_more_events(rendered, tmp_path, changes):
    store = copy_of(rendered, tmp_path, f"copy-{next(counter)}")
    before = snapshot(store.root)
    had = pd.read_parquet(store.root / RUNS_TABLE).set_index("run_id")["events"]
    for change in changes:
        apply(store, change)
    tables = summarize(store)
    written = write_study(store, tables, report=False)
    now = tables.runs.set_index("run_id")["events"].reindex(had.index).fillna(0)
    if (now < had).any():
        assert written.kept_previous and written.loss and snapshot(store.root) == before
    else:  # repeated or foreign files: the same events, the same figures, written in place
        assert not written.kept_previous
        after = pd.read_parquet(store.root / RUNS_TABLE).set_index("run_id")
        assert after["events"].equals(had)
        assert after["throughput"].equals(pd.read_parquet(rendered / RUNS_TABLE).set_index("run_id")["throughput"])
