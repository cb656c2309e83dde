"""The study store: one directory holding everything a study measured.

Append-only logs (`events.jsonl`, `run_records.jsonl`) are written as data arrives; tables and the
manifest are written to a temporary name and renamed, so a crash never leaves half a file.
Analysis and report read only this directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

EVENTS = "events.jsonl"
# A full, over-quota or read-only disk: writing again will not help, so a study stops on these.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
RUN_RECORDS = "run_records.jsonl"
MANIFEST = "manifest.json"
RUNS_TABLE = "runs.parquet"
EPOCHS_TABLE = "epochs.parquet"
PREDICTIONS_DIR = "predictions"
INFERENCE_RECORDS = "inference_records.jsonl"


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError from a write (ENOSPC has no file name) says which file it was writing."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes files private; study files are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _clean(value: Any) -> Any:
    # JSON has no NaN; store None so every reader agrees.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Append rows as JSON lines in one write; returns the number of rows written."""
    lines = [json.dumps({k: _clean(v) for k, v in row.items()}, default=_json_default) for row in rows]
    if not lines:
        return 0
    with naming(path), open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
    return len(lines)


def repair_torn_tail(path: Path) -> int:
    """Cut a torn last line (a writer killed mid-append) so the next append starts on a fresh line.

    Only the incomplete line goes: every complete line stays. Call it before appending to a log a
    killed process may have written. Returns the number of bytes cut.
    """
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, chunk = size, 1 << 16
        while keep > 0:  # scan backwards for the last newline
            start = max(0, keep - chunk)
            f.seek(start)
            block = f.read(keep - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        f.truncate(keep)
        return size - keep


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a torn last line (a crash mid-write) is skipped, not fatal."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class StudyStore:
    """Paths and readers/writers of one study directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def events_path(self) -> Path:
        return self.root / EVENTS

    @property
    def run_records_path(self) -> Path:
        return self.root / RUN_RECORDS

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=False)
        self.events_path.touch()
        self.run_records_path.touch()

    def repair(self) -> int:
        """Before appending to a study a killed process wrote: cut torn last lines of the driver's logs."""
        return repair_torn_tail(self.run_records_path) + repair_torn_tail(self.root / INFERENCE_RECORDS)

    def exists(self) -> bool:
        return (self.root / MANIFEST).exists() and self.events_path.exists()

    # -- writers ---------------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=2, default=_json_default) + "\n")

    def append_run_record(self, record: dict[str, Any]) -> None:
        append_jsonl(self.run_records_path, [record])

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with naming(path):
                frame.to_parquet(tmp, index=False)
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves neither half a table nor a stray temp file

    def write_predictions(self, run_id: str, predictions: dict[str, Any]) -> int:
        """Held-out predictions of one run: sample_index, y_true, y_pred and class probabilities."""
        import numpy as np

        proba = np.asarray(predictions["proba"], dtype=np.float32)
        frame = pd.DataFrame(
            {
                "split": predictions["split"],
                "sample_index": np.asarray(predictions["sample_index"], dtype=np.int64),
                "y_true": np.asarray(predictions["y_true"], dtype=np.int64),
                "y_pred": proba.argmax(axis=1),
                "proba": list(proba),
            }
        )
        self.write_table(f"{PREDICTIONS_DIR}/{run_id}.parquet", frame)
        return len(frame)

    def predictions(self, run_id: str) -> pd.DataFrame | None:
        path = self.root / PREDICTIONS_DIR / f"{run_id}.parquet"
        return pd.read_parquet(path) if path.exists() else None

    # -- readers ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))

    def events(self) -> pd.DataFrame:
        return pd.DataFrame(read_jsonl(self.events_path))

    def run_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.run_records_path)

    def final_run_records(self) -> dict[str, dict[str, Any]]:
        """The latest state of each run, in study order (a later record supersedes an earlier one)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.run_records():
            latest.setdefault(record["run_id"], {}).update(record)
        return latest

    def append_inference(self, rows: list[dict[str, Any]]) -> None:
        append_jsonl(self.root / INFERENCE_RECORDS, rows)

    def inference_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / INFERENCE_RECORDS)

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / name)


def publish(study_dir: Path, uri: str) -> str:
    """Copy a finished study directory to a storage URI (s3://, gs://, file://...) with pyarrow.

    Returns the destination URI. Credentials come from the environment, as pyarrow reads them.
    """
    import pyarrow.fs as pafs

    destination = uri.rstrip("/") + "/" + study_dir.name
    fs, path = pafs.FileSystem.from_uri(destination)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(study_dir), path, destination_filesystem=fs)
    return destination
