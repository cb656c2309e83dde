"""The study store: one directory holding everything a study measured.

Append-only logs (`events.jsonl`, `run_records.jsonl`) are written as data arrives; tables and the
manifest are written to a temporary name and renamed, so a crash never leaves half a file.
Analysis and report read only this directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from scaleprof.errors import DestinationError, StoreError, StudyBusy
from scaleprof.records import FABRIC_COLUMNS, FinalRun
from scaleprof.telemetry.segments import EVENTS_DIR, read_segments
from scaleprof.versions import scaleprof_version

if TYPE_CHECKING:  # imported where read: the aggregator actors import this module and never read it
    from scaleprof.manifest import Manifest

__all__ = ["DestinationError", "StoreError", "StudyBusy"]  # defined in scaleprof.errors, raised here

EVENTS = "events.jsonl"  # the events of a study written before segments (still read)
LOCK = ".scaleprof.lock"
CATEGORIES = ["study_id", "run_id", "node_id", "kind"]  # string ids every event carries: read as categoricals
# What identifies one stored event: a resent or copied line carries the same key.
EVENT_KEY = ["run_id", "attempt", "rank", "seq"]
RUN_RECORDS = "run_records.jsonl"
MANIFEST = "manifest.json"
RUNS_TABLE = "runs.parquet"
EPOCHS_TABLE = "epochs.parquet"
PREDICTIONS_DIR = "predictions"
INFERENCE_RECORDS = "inference_records.jsonl"
FABRIC_TABLE = "fabric.parquet"  # the fabric probe's sweep (execution/fabric_probe.py)


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


@dataclass
class Damage:
    """What reading a study skipped or dropped, by file: said in the report, never silently absorbed.
    Each reader sets its own counts (reading twice does not count twice)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (file, what) -> how many

    def set(self, file: str, what: str, n: int) -> None:
        if n:
            self.counts[(file, what)] = n
        else:
            self.counts.pop((file, what), None)

    def of(self, file: str) -> list[str]:
        """What reading `file` (a name as `lines` gives it) skipped or dropped."""
        return [f"{f}: {n} {what}" for (f, what), n in sorted(self.counts.items()) if f == file]

    def lines(self) -> list[str]:
        return [f"{file}: {n} {what}" for (file, what), n in sorted(self.counts.items())]


def read_jsonl(path: Path, damage: Damage | None = None) -> list[dict[str, Any]]:
    """Every complete line that is a JSON object; a torn last line (a crash mid-write) is skipped, as
    is a damaged line (not UTF-8, not JSON, not an object): counted in `damage`, never fatal."""
    if not path.exists():
        return []
    rows, bad = [], 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    if damage is not None:
        damage.set(path.name, "damaged line(s) skipped (not UTF-8, not JSON or not an object)", bad)
    return rows


class StudyLock:
    """One process at a time writes a study directory: an exclusive `flock` on a file in it, which the
    kernel releases when the process exits, however it exits. The file names the holder."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK
        self._fd: int | None = None

    def acquire(self, purpose: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 300).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise StudyBusy(f"{self.path.parent}: in use by {holder}; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({purpose}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class StudyStore:
    """Paths and readers/writers of one study directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.damage = Damage()

    def lock(self, purpose: str) -> StudyLock:
        """Hold the study for this process (`with store.lock("run --resume"):`); StudyBusy if another holds it."""
        lock = StudyLock(self.root)
        lock.acquire(purpose)
        return lock

    @property
    def events_path(self) -> Path:
        return self.root / EVENTS

    @property
    def events_label(self) -> str:
        """How damage notes name the study's events: an older study's JSON-line log, or the segments."""
        return EVENTS if self.events_path.exists() else EVENTS_DIR

    @property
    def events_dir(self) -> Path:
        return self.root / EVENTS_DIR

    @property
    def run_records_path(self) -> Path:
        return self.root / RUN_RECORDS

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)  # new_study_dir made it, atomically, for this study
        self.events_dir.mkdir(exist_ok=True)
        self.run_records_path.touch()

    def repair(self) -> int:
        """Before appending to a study a killed process wrote: cut torn last lines of the driver's logs."""
        return repair_torn_tail(self.run_records_path) + repair_torn_tail(self.root / INFERENCE_RECORDS)

    def exists(self) -> bool:
        return (self.root / MANIFEST).exists() and (self.events_dir.is_dir() or self.events_path.exists())

    # -- writers ---------------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest as given (a dict: collect_manifest's, or a read one's `raw` changed)."""
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

    def write_fabric(self, frame: pd.DataFrame) -> None:
        """The fabric probe's sweep as `fabric.parquet` (its columns only, in their order)."""
        missing = [name for name in FABRIC_COLUMNS if name not in frame]
        if missing:
            raise ValueError(
                f"a fabric sweep needs column(s) {', '.join(missing)}; expected {', '.join(FABRIC_COLUMNS)}"
            )
        self.write_table(FABRIC_TABLE, frame[list(FABRIC_COLUMNS)])

    def write_trace(self, run_id: str, name: str, data: bytes) -> str:
        """Store one rank's profiler trace (gzipped Chrome trace JSON) under traces/<run_id>/; its path,
        relative to the study."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = self.root / "traces" / run_id / safe
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return str(path.relative_to(self.root))

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
        """A run's held-out predictions; None when there are none or the file is damaged (counted)."""
        path = self.root / PREDICTIONS_DIR / f"{run_id}.parquet"
        if not path.exists():
            return None
        try:
            frame = pd.read_parquet(path)
        except Exception:  # pyarrow raises its own types for a damaged file
            self.damage.set(f"{PREDICTIONS_DIR}/{path.name}", "unreadable file (quality metrics left out)", 1)
            return None
        if not {"y_true", "y_pred", "proba"} <= set(frame.columns) or frame.empty:
            self.damage.set(f"{PREDICTIONS_DIR}/{path.name}", "file without predictions (quality metrics left out)", 1)
            return None
        return frame

    # -- readers ---------------------------------------------------------------------------
    def fabric(self) -> pd.DataFrame | None:
        """The stored fabric sweep; None when there is none, or it is damaged (counted in `damage`)."""
        path = self.root / FABRIC_TABLE
        if not path.exists():
            return None
        try:
            frame = pd.read_parquet(path)
        except Exception:  # pyarrow raises its own types for a damaged file
            self.damage.set(FABRIC_TABLE, "unreadable file (the fabric sweep left out)", 1)
            return None
        if not set(FABRIC_COLUMNS) <= set(frame.columns):
            self.damage.set(FABRIC_TABLE, "file without the sweep's columns (the fabric sweep left out)", 1)
            return None
        return frame

    def manifest(self) -> Manifest:
        """The manifest; a StoreError when it is missing, not JSON or not a scaleprof manifest (a field of the
        wrong type or an experiment that does not validate: damaged, naming the first such field)."""
        from pydantic import ValidationError

        from scaleprof.manifest import Manifest

        path = self.root / MANIFEST
        try:
            stored = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise StoreError(path, "missing: not a scaleprof study directory, or a study that never started") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(path, f"damaged: not valid JSON ({exc})") from None
        except OSError as exc:
            raise StoreError(path, f"cannot be read ({exc.strerror or exc})") from None
        if not isinstance(stored, dict) or not isinstance(stored.get("experiment"), dict):
            raise StoreError(path, "damaged: it holds no experiment (not a scaleprof manifest)")
        try:
            return Manifest.model_validate(stored)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            packages = stored.get("packages")
            writer = packages.get("scaleprof") if isinstance(packages, dict) else None
            if first["type"] == "extra_forbidden":  # a setting this version lacks: maybe a newer scaleprof's study
                raise StoreError(
                    path,
                    f"{where}: a setting scaleprof {scaleprof_version()} does not know (the study was written "
                    f"by scaleprof {writer or 'of another version'}: read it with the version that wrote it)",
                ) from None
            said = f"damaged: {where}: {first['msg'].removeprefix('Value error, ')}"
            if where.startswith("experiment.") and writer and writer != scaleprof_version():
                # or a value another version's checks allowed: the user can tell, this version cannot
                said += f" (the study was written by scaleprof {writer}: if it allowed this, read it with that version)"
            raise StoreError(path, said) from None

    def events(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every readable event once, from every aggregator's segments (and the JSON lines of a study
        written before them), optionally only some `columns` (the ids always): an unreadable segment
        or damaged line is skipped, events without their ids dropped, and a repeated (run, attempt,
        rank, seq) kept once — each counted in `damage`."""
        wanted = None if columns is None else list(dict.fromkeys(EVENT_KEY + ["kind", *columns]))
        segments = read_segments(self.root, wanted)
        self.damage.set(
            EVENTS_DIR, f"unreadable segment(s) skipped: {', '.join(segments.unreadable)}", len(segments.unreadable)
        )
        # One chunk per column (a chunk per segment makes every later row selection slow), the dense
        # string ids as categories (a selection takes their codes), and no second copy held.
        table = segments.table.combine_chunks()
        del segments
        frames = [table.to_pandas(self_destruct=True, split_blocks=True, categories=CATEGORIES)]
        del table
        if self.events_path.exists():
            legacy = pd.DataFrame(read_jsonl(self.events_path, self.damage))
            frames.append(legacy if wanted is None else legacy.reindex(columns=wanted))
        frames = [f for f in frames if not f.empty]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else pd.DataFrame()
        if frame.empty:
            return frame
        keys = frame.reindex(columns=EVENT_KEY + ["kind"])
        ids_ok = keys.notna().all(axis=1)
        for column in ("attempt", "rank", "seq"):
            ids_ok &= pd.to_numeric(keys[column], errors="coerce").notna()
        label = self.events_label
        self.damage.set(label, "event(s) without run_id, attempt, rank, seq or kind dropped", int((~ids_ok).sum()))
        if not ids_ok.all():
            frame = frame[ids_ok]
        repeated = frame.duplicated(subset=EVENT_KEY, keep="first")
        self.damage.set(label, "repeated event(s) (same run, attempt, rank and seq) dropped", int(repeated.sum()))
        return frame[~repeated].reset_index(drop=True) if repeated.any() else frame.reset_index(drop=True)

    def event_records(self) -> list[dict[str, Any]]:
        """Every event once (as `events()`), each a dict of the fields it has, as the worker emitted it."""
        return event_records(self.events())

    def run_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.run_records_path, self.damage)

    def final_run_records(self) -> dict[str, FinalRun]:
        """The latest state of each run, in study order (a later line supersedes an earlier one's fields), typed
        (FinalRun.from_stored holds the defaults of older studies). A line without a run_id is skipped, and a
        run whose first line (what it is) is missing or damaged too."""
        latest: dict[str, dict[str, Any]] = {}
        orphans = 0
        for line in self.run_records():
            if not isinstance(line.get("run_id"), str):
                orphans += 1
                continue
            latest.setdefault(line["run_id"], {}).update(line)
        final, incomplete = {}, 0
        for run_id, merged in latest.items():
            try:
                if not isinstance(merged.get("workers"), int):
                    raise KeyError("workers")
                final[run_id] = FinalRun.from_stored(merged)
            except (KeyError, ValueError, TypeError):
                incomplete += 1
        self.damage.set(RUN_RECORDS, "record(s) without a run_id skipped", orphans)
        self.damage.set(RUN_RECORDS, "run(s) whose planned record is missing or damaged left out", incomplete)
        return final

    def append_inference(self, rows: list[dict[str, Any]]) -> None:
        append_jsonl(self.root / INFERENCE_RECORDS, rows)

    def inference_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / INFERENCE_RECORDS, self.damage)

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / name)


def event_records(events: pd.DataFrame) -> list[dict[str, Any]]:
    """An events frame as one dict per event with the fields it has, as the worker emitted it."""
    frame = events.convert_dtypes()  # an int field with gaps stays int (pandas would make it float)
    return [{k: v for k, v in row.items() if pd.notna(v)} for row in frame.to_dict("records")]


def check_destination(uri: str) -> None:
    """Before a study starts: the URI's filesystem exists and takes a write (a probe file, removed)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri.rstrip("/"))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for an unknown scheme or a bad URI
        raise DestinationError(f"--out {uri}: not a storage location pyarrow can write ({exc})") from None
    probe = f"{path.rstrip('/')}/.scaleprof-write-check-{os.getpid()}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"scaleprof")
        fs.delete_file(probe)
    except Exception as exc:
        raise DestinationError(f"--out {uri}: cannot write there ({exc})") from None


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
