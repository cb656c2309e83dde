"""What the README says a study's tables hold is what they hold."""

import re
from pathlib import Path

from scaleprof.analysis.summarize import RUN_COLUMNS

MATH_MODES = {"fp32", "tf32", "bf16", "fp16"}  # values of `math_mode`, named beside it
README = Path(__file__).parents[2] / "README.md"


def test_every_runs_parquet_column_the_readme_names_exists():
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `runs.parquet` |"))
    listed = re.findall(r"[a-z][a-z0-9_]*", row.partition("one row per run:")[2])
    # prose that names a column "in `runs.parquet`": the backquoted names in the same sentence
    sentences = re.findall(r"[^.]*`runs\.parquet`[^.]*\.", text.replace("\n", " "))
    named = [n for s in sentences for n in re.findall(r"`([a-z][a-z0-9_]*)`", s) if n not in MATH_MODES]
    assert listed and named
    assert sorted(set(listed + named) - {"study_id", *RUN_COLUMNS}) == []
