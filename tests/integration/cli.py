"""The command line as a user runs it: a fresh `python -m scaleprof.cli` process."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], ray_address: str | None = None, cwd: Path = REPO, timeout: float = 300):
    """`scaleprof ARGS`: with `ray_address` it joins that cluster (RAY_ADDRESS, as under `ray job
    submit`); without, it starts a local Ray of its own."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return subprocess.run(
        [sys.executable, "-m", "scaleprof.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
