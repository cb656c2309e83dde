"""A real full disk: a small tmpfs mounted in a user + mount namespace (`unshare`, no root needed),
used as `--out`. Too small, the study is refused before Ray starts; filled up mid-run, the study stops
with a clear message, what it stored stays readable, and `--resume` finishes it once space is free."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from scaleprof.telemetry.store import StudyStore, read_jsonl

REPO = Path(__file__).resolve().parents[2]

EXPERIMENT = """
name: diskfull
model: {name: mlp}
data: {name: digits}
train: {epochs: 60, batch_size: 16}  # 4 s of training: a stored step shows a second after the first
monitor: {interval_s: 0.2}
placements:
  - {name: a, workers: 1}
  - {name: b, workers: 1, cpus_per_worker: 1024}  # no node holds it: skipped at once, once the run before it ended
"""


# $OUT/steps_stored.py: exits 0 when one of the segment files named holds a step event.
STEPS_STORED = """
import sys
import pyarrow.parquet as pq
sys.exit(0 if any("step" in pq.read_table(f, columns=["kind"])["kind"].to_pylist() for f in sys.argv[1:]) else 1)
"""


def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe]).returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_work(), reason="needs unprivileged user + mount namespaces (unshare) to mount a small tmpfs"
)


def in_namespace(script: str, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a bash script in a fresh user + mount namespace, with $MNT a tmpfs that vanishes afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        SCALEPROF=f"{sys.executable} -m scaleprof.cli", MNT=str(tmp_path / "mnt"), OUT=str(tmp_path), PY=sys.executable
    )
    (tmp_path / "steps_stored.py").write_text(STEPS_STORED)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-euo", "pipefail", "-c", textwrap.dedent(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_too_small_output_location_is_refused_before_ray_starts(tmp_path):
    proc = in_namespace(
        """
        mount -t tmpfs -o size=2m tmpfs "$MNT"
        set +e
        $SCALEPROF run "$OUT/exp.yaml" --out "$MNT/reports" > "$OUT/run.log" 2>&1
        echo $? > "$OUT/run.rc"
        ls -A "$MNT/reports" > "$OUT/contents"
        """,
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "run.log").read_text()
    assert (tmp_path / "run.rc").read_text().strip() == "2", log
    assert "MiB free; this study writes about" in log and "Traceback" not in log
    assert f"{tmp_path}/mnt/reports" in log
    assert (tmp_path / "contents").read_text() == ""  # no study directory was created
    assert "Ray" not in log  # nothing started


@pytest.mark.slow
def test_disk_filling_up_mid_run_stops_cleanly_and_resume_finishes(tmp_path):
    proc = in_namespace(
        """
        mount -t tmpfs -o size=24m tmpfs "$MNT"
        set +e
        $SCALEPROF run "$OUT/exp.yaml" --out "$MNT/reports" > "$OUT/run1.log" 2>&1 &
        pid=$!
        for i in $(seq 600); do  # until the first run is training: a step event stored
            $PY "$OUT/steps_stored.py" "$MNT"/reports/*/events/0/*.parquet 2> /dev/null && break
            sleep 0.2
        done
        dd if=/dev/zero of="$MNT/filler" bs=64k 2> /dev/null  # fill the disk to the last block
        wait $pid
        echo $? > "$OUT/run1.rc"
        study=$(ls -d "$MNT"/reports/*/)
        cp -r "$study" "$OUT/stopped"  # the state the failure left, for the checks below
        rm "$MNT/filler"
        $SCALEPROF run "$OUT/exp.yaml" --resume "$study" > "$OUT/run2.log" 2>&1
        echo $? > "$OUT/run2.rc"
        cp -r "$study" "$OUT/resumed"
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    log1 = (tmp_path / "run1.log").read_text()
    assert (tmp_path / "run1.rc").read_text().strip() == "1", log1[-3000:]
    assert "No space left on device" in log1 and "--resume" in log1 and "Traceback" not in log1, log1[-3000:]

    stopped = tmp_path / "stopped"
    json.loads((stopped / "manifest.json").read_text())  # whole, never half-written
    assert not list(stopped.glob(".*.tmp")) and not list(stopped.glob("predictions/.*.tmp"))
    assert not list(stopped.glob("events/*/.*.tmp"))  # a segment is whole or absent
    stored = StudyStore(stopped)
    assert stored.events()["kind"].eq("step").any() and not stored.damage.lines()  # readable, nothing damaged
    records = read_jsonl(stopped / "run_records.jsonl")  # a torn last line (the disk filled mid-append) is skipped
    assert records and all(r["run_id"].startswith("001") for r in records)  # the study stopped at the full disk

    log2 = (tmp_path / "run2.log").read_text()
    assert (tmp_path / "run2.rc").read_text().strip() == "0", log2[-3000:]
    runs = pd.read_parquet(tmp_path / "resumed" / "runs.parquet")
    assert list(runs["placement"]) == ["a", "b"] and list(runs["status"]) == ["ok", "skipped"], runs[
        ["run_id", "status", "reason"]
    ]
    assert runs["seq_gaps"].iloc[0] == 0
    assert (tmp_path / "resumed" / "report.html").stat().st_size > 0


def test_a_read_only_home_is_named_not_taken_for_a_full_disk(tmp_path):
    """Ray writes under HOME when it starts: read-only, the run stops at once, says so, offers no resume
    of a study that never started, and leaves no half-made study directory."""
    proc = in_namespace(
        """
        mkdir "$OUT/home"
        mount -t tmpfs -o ro,size=1m tmpfs "$OUT/home"
        set +e
        HOME="$OUT/home" $SCALEPROF run "$OUT/exp.yaml" --out "$OUT/reports" > "$OUT/run.log" 2>&1
        echo $? > "$OUT/run.rc"
        """,
        tmp_path,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "run.log").read_text()
    assert (tmp_path / "run.rc").read_text().strip() == "1", log
    assert "Read-only file system: scaleprof (or Ray, for its session files) cannot write there" in log, log
    assert "--resume" not in log and "No space" not in log and "Traceback" not in log
    assert list((tmp_path / "reports").iterdir()) == []


def test_report_on_a_read_only_study_is_one_message(tmp_path):
    from tests.unit.study_data import make_study

    study = make_study(tmp_path / "study").root
    proc = in_namespace(
        f"""
        mount --bind "{study}" "{study}" && mount -o remount,bind,ro "{study}"
        set +e
        $SCALEPROF report "{study}" > "$OUT/report.log" 2>&1
        echo $? > "$OUT/report.rc"
        """,
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "report.log").read_text()
    assert (tmp_path / "report.rc").read_text().strip() == "2", log
    assert f"{study}: cannot write there (Read-only file system)" in log and "Traceback" not in log, log
