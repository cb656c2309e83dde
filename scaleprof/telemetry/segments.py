"""Columnar event segments: how a study's events are stored on disk.

Each aggregator writes its own directory, `events/<shard>/`. Every group commit becomes one Parquet
file (zstd, dictionary-encoded ids) written to a temporary name and renamed, so a segment is whole
or absent; its name is its number, `00000007-00000007.parquet`. Small segments are merged, once
`compact_every` of them have gathered (and when the study ends), into one file named for the range
it covers, `00000000-00000063.parquet`, after which the small ones are deleted: a crash between
the two leaves both, and the reader keeps only the covering file. A step event costs about 60
bytes here against about 470 as a JSON line (benchmarks/results/RESULTS.md).

Segments written at different times may hold different columns (a field added by a newer
scaleprof, a kind of event that only some runs emit): the reader unifies them, missing values
null, an int column meeting a float one read as float.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

EVENTS_DIR = "events"
SUFFIX = ".parquet"
TORN = ".torn"  # a segment that cannot be read is renamed aside with this suffix, never deleted
_NAME = re.compile(r"^(\d{8})-(\d{8})\.parquet$")
WRITE_OPTIONS: dict[str, Any] = {"compression": "zstd"}


@dataclass(frozen=True)
class Segment:
    first: int
    last: int
    path: Path

    @property
    def small(self) -> bool:
        return self.first == self.last


def segment_name(first: int, last: int) -> str:
    return f"{first:08d}-{last:08d}{SUFFIX}"


def list_segments(directory: Path) -> list[Segment]:
    """The segments that hold the directory's events: a small one covered by a merged file is left out
    (a crash after merging, before the small ones were deleted)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(Segment(int(match[1]), int(match[2]), path))
    kept: list[Segment] = []
    for seg in sorted(found, key=lambda s: (s.first, -s.last)):  # the widest first where two start together
        if kept and seg.last <= kept[-1].last:
            continue  # covered by the previous, wider segment
        kept.append(seg)
    return kept


def shard_dirs(root: Path) -> list[Path]:
    """Every aggregator's segment directory under a study."""
    events = root / EVENTS_DIR
    return sorted(p for p in events.iterdir() if p.is_dir()) if events.is_dir() else []


def write_segment(path: Path, table: pa.Table) -> int:
    """Write a table as one Parquet file, whole or not at all (temporary name, then rename). Returns
    the file's size in bytes."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, **WRITE_OPTIONS)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # ENOSPC from the writer names no file: say which
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def concat(tables: list[pa.Table]) -> pa.Table:
    """Tables with differing columns as one: missing columns null, int promoted to float where they meet."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


@dataclass
class ReadResult:
    table: pa.Table
    unreadable: list[str]  # segments skipped, relative to the study


def read_segments(root: Path, columns: list[str] | None = None, shards: list[Path] | None = None) -> ReadResult:
    """Every segment of the study's shards (or only `shards`) as one table, optionally only `columns`
    (a column missing from a segment reads as null). A segment that cannot be read is skipped and named."""
    tables, unreadable = [], []
    for directory in shards if shards is not None else shard_dirs(root):
        for seg in list_segments(directory):
            try:
                if columns is None:
                    table = pq.read_table(seg.path)
                else:
                    present = set(pq.read_schema(seg.path).names)
                    table = pq.read_table(seg.path, columns=[c for c in columns if c in present])
            except (OSError, pa.ArrowException):
                unreadable.append(str(seg.path.relative_to(root)))
                continue
            tables.append(table)
    return ReadResult(concat(tables), unreadable)


def disk_bytes(root: Path) -> int:
    """Bytes the study's event segments take on disk."""
    return sum(s.path.stat().st_size for d in shard_dirs(root) for s in list_segments(d))


class SegmentWriter:
    """Writes one aggregator's segments and merges them as they gather."""

    def __init__(self, directory: Path, compact_every: int = 64):
        self.directory = directory
        self.compact_every = compact_every
        self._next = 0
        self._small: list[Segment] = []

    def repair(self) -> list[str]:
        """Before writing to a directory a killed process may have written: leftover temporary files
        are removed, and a segment that cannot be read (cut short by something outside scaleprof, which
        only ever renames whole files into place) is renamed aside with `.torn`. Returns what was set aside."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        torn = []
        for seg in list_segments(self.directory):
            try:
                pq.read_metadata(seg.path)
            except (OSError, pa.ArrowException):
                os.replace(seg.path, seg.path.with_name(seg.path.name + TORN))
                torn.append(seg.path.name)
        segments = list_segments(self.directory)
        self._next = max((s.last for s in segments), default=-1) + 1
        self._small = [s for s in segments if s.small]
        return torn

    def write(self, table: pa.Table) -> Path:
        """One segment; merges the small ones once `compact_every` have gathered."""
        path = self.directory / segment_name(self._next, self._next)
        write_segment(path, table)
        self._small.append(Segment(self._next, self._next, path))
        self._next += 1
        if len(self._small) >= self.compact_every:
            self.compact()
        return path

    def compact(self) -> None:
        """Merge the small segments into one file covering their range, then delete them."""
        if len(self._small) < 2:
            return
        first, last = self._small[0].first, self._small[-1].last
        merged = concat([pq.read_table(s.path) for s in self._small])
        path = self.directory / segment_name(first, last)
        write_segment(path, merged)
        for seg in self._small:
            seg.path.unlink()
        self._small = []
