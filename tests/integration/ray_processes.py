"""Ray clusters that a test starts with `ray start` and stops itself: never `ray stop`, which stops
every Ray on the machine (the session's shared test cluster among them)."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_command(port: int, temp: str, *flags: str) -> list[str]:
    """`ray start --head --block` from this venv, 1 CPU, its own temp dir and every port its own: the
    session's test cluster runs beside it and holds Ray's defaults."""
    return [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus=1",
        f"--port={port}",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        "--object-store-memory=100000000",
        *flags,
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 120, host: str = "127.0.0.1"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{what} did not come up")


def stop_tree(proc: subprocess.Popen, grace_s: float = 3) -> None:
    """Stop this head and everything it started (the autoscaler's nodes too: they are its children):
    SIGTERM, then SIGKILL for whatever is left after `grace_s` (some of Ray's processes wait out 15 s)."""
    try:
        family: list[subprocess.Popen | psutil.Process] = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs([psutil.Process(p.pid) for p in family if psutil.pid_exists(p.pid)], timeout=grace_s)
    for p in alive:
        p.kill()
