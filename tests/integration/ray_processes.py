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
    return free_ports(1)[0]


def free_ports(count: int, taken: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct free ports, none in `taken` (bound all at once, so none is handed out twice)."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in taken:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def head_command(port: int, temp: str, *flags: str) -> list[str]:
    """`ray start --head --block` from this venv, 1 CPU, its own temp dir and every port its own: the
    session's test cluster runs beside it and holds Ray's defaults."""
    named = {int(x) for flag in flags for x in flag.split("=")[-1:] if x.isdigit()}
    agent, agent_grpc, runtime_env, metrics = free_ports(4, taken={port, *named})
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
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
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
