"""What a hostile user or a flaky machine does to a study, and what scaleprof answers: a clear message
(exit 2, no traceback) or a correct result that says what it left out — never a silently wrong figure.
The command line runs in this process (`cli.main`); nothing here starts Ray."""

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from scaleprof import cli
from scaleprof.analysis.summarize import summarize
from scaleprof.execution.runner import new_study_dir
from scaleprof.telemetry.store import StudyStore
from tests.unit.study_data import make_study

REPO = Path(__file__).resolve().parents[2]
TINY = """name: tiny
model: {name: mlp}
data: {name: digits}
train: {epochs: 1}
placements: [{name: cpu-1, workers: 1}]
"""


@pytest.fixture
def handmade(tmp_path):
    store = make_study(tmp_path / "study", jsonl=True)  # a study as an older scaleprof wrote it: lines to damage
    return store


def scaleprof(*args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


def throughputs(store: StudyStore) -> dict[str, float]:
    runs = summarize(StudyStore(store.root)).runs
    return dict(zip(runs["placement"], runs["throughput"]))


# -- 1. one writer per study ------------------------------------------------------------------------
def hold_lock(study: Path) -> subprocess.Popen:
    """Another process holding the study, as a running `scaleprof run` does."""
    code = textwrap.dedent(f"""
        import time
        from scaleprof.telemetry.store import StudyStore
        lock = StudyStore({str(study)!r}).lock("scaleprof run --resume")
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_first_and_the_lock_dies_with_its_holder(handmade, tmp_path, capsys):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    holder = hold_lock(handmade.root)
    try:
        code, text = scaleprof("report", handmade.root, capsys=capsys)
        assert code == 2 and f"in use by pid {holder.pid} (scaleprof run --resume" in text, text
        assert not (handmade.root / "report.html").exists()
    finally:
        holder.kill()
        holder.wait()
    code, text = scaleprof("report", handmade.root, capsys=capsys)  # a killed holder leaves no stale lock
    assert code == 0, text


def test_a_resume_while_another_process_holds_the_study_is_refused_before_ray_starts(tmp_path, capsys):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    from scaleprof.config import load_experiment

    study = tmp_path / "study"
    store = make_study(study)
    manifest = store.manifest().raw
    manifest["experiment_sha256"] = load_experiment(experiment).digest()  # as if made from this file
    store.write_manifest(manifest)
    holder = hold_lock(study)
    try:
        code, text = scaleprof("run", experiment, "--resume", study, capsys=capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and f"in use by pid {holder.pid}" in text, text


# -- 2, 3, 4. nothing is made before the cluster and the destination answer ------------------------
def test_a_dead_ray_address_fails_in_seconds_and_makes_no_study_directory(tmp_path, capsys, monkeypatch):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    started = time.monotonic()
    code, text = scaleprof("run", experiment, "--out", tmp_path / "out", capsys=capsys)
    assert code == 2 and "RAY_ADDRESS=127.0.0.1:1: no Ray cluster answers there" in text, text
    assert time.monotonic() - started < 60  # Ray itself retries for minutes
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("uri", ["bogus://bucket/x", "file:///proc/1/scaleprof-out"])
def test_an_unwritable_remote_out_fails_before_any_run(tmp_path, capsys, uri):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    code, text = scaleprof("run", experiment, "--out", uri, capsys=capsys)
    assert code == 2 and f"--out {uri}:" in text and "Traceback" not in text, text


def test_studies_started_in_the_same_second_get_their_own_directories(tmp_path):
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_study_dir(tmp_path, "same"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)


# -- 5. plan checks what run would trip on ------------------------------------------------------------
def test_plan_refuses_cross_validation_folds_the_data_cannot_make(tmp_path, capsys):
    experiment = tmp_path / "cv.yaml"
    experiment.write_text(
        "name: cv\nmodel: {name: mlp}\ndata: {name: synthetic-images, size: 300, num_classes: 10}\n"
        "evaluation: {cv_folds: 50}\nplacements: [{name: cpu-1, workers: 1}]\n"
    )
    code, text = scaleprof("plan", experiment, capsys=capsys)
    assert code == 2 and "evaluation.cv_folds: cannot make 50 stratified folds" in text, text


# -- 6. a read-only location is not a full disk ---------------------------------------------------------
def test_a_read_only_location_is_not_a_full_disk_and_gets_no_resume_hint(handmade, tmp_path):
    read_only = cli._write_failure(OSError(errno.EROFS, os.strerror(errno.EROFS), "/home/u/.ray"), "e.yaml", handmade)
    assert read_only is not None and "--resume" not in str(read_only) and "cannot write there" in str(read_only)
    full = cli._write_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "e.yaml", handmade)
    assert full is not None and f"--resume {handmade.root}" in str(full)
    never_started = StudyStore(tmp_path / "empty")
    nothing = cli._write_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "e.yaml", never_started)
    assert nothing is not None and "--resume" not in str(nothing) and "nothing was kept" in str(nothing)


# -- 7. damaged stores ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "manifest.json: damaged: not valid JSON"), (b"{}", "damaged: it holds no experiment"),
     (b"\xff\xfe", "manifest.json: damaged: not valid JSON"), (b"[1, 2]", "it holds no experiment"),
     (b'{"experiment": {"name": "x", "placements": []}}', "manifest.json: damaged: experiment.placements: List")],
)  # fmt: skip
def test_a_damaged_manifest_is_one_message_for_every_command(handmade, tmp_path, capsys, content, message):
    (handmade.root / "manifest.json").write_bytes(content)
    for args in (
        ["report", handmade.root],
        ["predict", handmade.root, "--workers", "4"],
        ["compare", handmade.root, handmade.root],
    ):
        code, text = scaleprof(*args, capsys=capsys)
        assert code == 2 and message in text and "Traceback" not in text, (args, text)
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    code, text = scaleprof("run", experiment, "--resume", handmade.root, capsys=capsys)
    assert code == 2 and message in text


def test_damaged_lines_are_skipped_counted_and_said_first(handmade, capsys):
    before = throughputs(handmade)
    with open(handmade.events_path, "ab") as f:
        f.write(b'\xff\xfe not utf-8\n[1, 2, 3]\n{"kind": "step"}\n')
    with open(handmade.run_records_path, "ab") as f:
        f.write(b'{"status": "ok"}\n')
    code, text = scaleprof("report", handmade.root, capsys=capsys)
    assert code == 0, text
    assert throughputs(handmade) == pytest.approx(before, nan_ok=True)
    summary = (handmade.root / "summary.md").read_text()
    assert "DAMAGED STUDY" in summary
    assert "events.jsonl: 2 damaged line(s) skipped" in summary
    assert "events.jsonl: 1 event(s) without run_id, attempt, rank, seq or kind dropped" in summary
    assert "run_records.jsonl: 1 record(s) without a run_id skipped" in summary
    assert "warning:" in text  # and on the terminal


def test_an_empty_event_log_and_a_corrupt_predictions_file_still_give_a_report(handmade, capsys):
    for path in (handmade.root / "predictions").glob("*.parquet"):
        path.write_bytes(b"PAR1 this is not a parquet file")
    code, text = scaleprof("report", handmade.root, capsys=capsys)
    assert code == 0, text
    assert "unreadable file (quality metrics left out)" in (handmade.root / "summary.md").read_text()
    kept = (handmade.root / "runs.parquet").read_bytes()
    handmade.events_path.write_bytes(b"")
    code, text = scaleprof("report", handmade.root, capsys=capsys)
    assert code == 1 and "Traceback" not in text, text  # its tables were made from more: kept, and said
    assert "001-mlp-cpu-1-r0: 0 events readable, 30 when its tables were made" in text
    assert (handmade.root / "runs.parquet").read_bytes() == kept
    beside = (handmade.root / "partial-render" / "summary.md").read_text()
    assert "2 run(s) recorded ok have no events at all" in beside
    code, text = scaleprof("report", handmade.root, "--accept-loss", capsys=capsys)
    assert code == 0 and "tables replaced by ones made from less" in text, text
    assert "2 run(s) recorded ok have no events at all" in (handmade.root / "summary.md").read_text()


# -- 8. duplicated events never double a figure ----------------------------------------------------------
def test_every_event_line_twice_gives_the_same_figures_and_says_so(handmade, capsys):
    before = throughputs(handmade)
    lines = handmade.events_path.read_bytes().splitlines(keepends=True)
    handmade.events_path.write_bytes(b"".join(line + line for line in lines))
    assert throughputs(handmade) == pytest.approx(before, nan_ok=True)
    code, text = scaleprof("report", handmade.root, capsys=capsys)
    assert code == 0, text
    assert (
        f"events.jsonl: {len(lines)} repeated event(s) (same run, attempt, rank and seq) dropped"
        in (handmade.root / "summary.md").read_text()
    )


# -- 9. arguments -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [["predict", "S", "--workers", "0"], ["predict", "S", "--workers", "-1"], ["predict", "S", "--workers", "2.5"],
     ["compare", "A", "B", "--noise", "-1"], ["compare", "A", "B", "--noise", "nan"],
     ["compare", "A", "B", "--noise", "inf"]],
)  # fmt: skip
def test_out_of_range_arguments_are_refused(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert "argument" in capsys.readouterr().err


# -- 10. small ones ---------------------------------------------------------------------------------------
def test_summary_md_never_carries_raw_html(tmp_path, capsys):
    store = make_study(tmp_path / "study", reason="needs <script>alert(1)</script> GPUs")
    code, _ = scaleprof("report", store.root, capsys=capsys)
    summary = (store.root / "summary.md").read_text()
    assert code == 0 and "<script>" not in summary and "&lt;script&gt;" in summary


def test_an_endless_experiment_file_is_refused_by_size(capsys):
    code, text = scaleprof("plan", "/dev/zero", capsys=capsys)
    assert code == 2 and "larger than 1000000 bytes" in text


def test_placements_no_cluster_could_start_are_refused(tmp_path, capsys):
    experiment = tmp_path / "many.yaml"
    experiment.write_text(TINY.replace("workers: 1}", "workers: 4096, cpus_per_worker: 0.0001}"))
    code, text = scaleprof("plan", experiment, capsys=capsys)
    assert code == 2 and "cpus_per_worker" in text


def test_a_study_that_never_started_leaves_no_directory(tmp_path, capsys, monkeypatch):
    """A failure between making the directory and writing the manifest (here: Ray's start) removes it."""
    from scaleprof.execution import runner

    def no_ray(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), "/home/u/.ray/session_latest")

    monkeypatch.setattr(runner, "connect_ray", no_ray)
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(TINY)
    code, text = scaleprof("run", experiment, "--out", tmp_path / "out", capsys=capsys)
    assert code == 1 and "cannot write there" in text and "--resume" not in text, text
    assert list((tmp_path / "out").iterdir()) == []
    shutil.rmtree(tmp_path / "out")


# -- 8. a resume with a changed file, and a compile backend torch lacks, are refused up front -------------
def test_a_resume_with_a_changed_file_names_the_fields_before_importing_torch_or_ray(tmp_path):
    import yaml

    from scaleprof.config import Experiment, load_experiment
    from tests.unit.study_data import EXPERIMENT

    store = make_study(tmp_path / "study")
    manifest = store.manifest().raw
    manifest["experiment_sha256"] = Experiment.model_validate(EXPERIMENT).digest()
    store.write_manifest(manifest)
    same, changed = tmp_path / "same.yaml", tmp_path / "changed.yaml"
    same.write_text(yaml.safe_dump(EXPERIMENT))
    changed.write_text(yaml.safe_dump({**EXPERIMENT, "train": {"epochs": 4, "lr": 0.1}}))
    assert cli._resumable(str(store.root), load_experiment(same)) == store.root  # the file it was made from
    script = (
        "import sys; from scaleprof import cli; code = cli.main(sys.argv[1:]); "
        "print('imported:', sorted(m for m in ('torch', 'ray', 'scaleprof.execution.prepare') if m in sys.modules)); "
        "sys.exit(code)"
    )
    args = [sys.executable, "-c", script, "run", str(changed), "--resume", str(store.root)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert "train.epochs: 3 vs 4" in done.stderr and "train.lr: 0.05 vs 0.1" in done.stderr, done.stderr
    assert "warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "imported: []" in done.stdout, done.stdout


def test_a_compile_backend_the_installed_torch_lacks_is_refused_by_plan(tmp_path, capsys):
    experiment = tmp_path / "compiled.yaml"
    experiment.write_text(TINY.replace("{epochs: 1}", "{epochs: 1, compile: {backend: nonsense}}"))
    code, text = scaleprof("plan", experiment, capsys=capsys)
    assert code == 2 and "train.compile.backend: 'nonsense' is not a torch.compile backend" in text, text
    assert "inductor" in text and "aot_eager" in text and "Traceback" not in text
    swept = TINY + "sweep: {train.compile: [{backend: eager}, {backend: nonsense}]}\n"
    experiment.write_text(swept)
    code, text = scaleprof("plan", experiment, capsys=capsys)
    assert code == 2 and "sweep.train.compile: 'nonsense' is not a torch.compile backend" in text, text
    experiment.write_text(swept.replace("nonsense", "aot_eager"))
    code, text = scaleprof("plan", experiment, capsys=capsys)
    assert code == 0, text
