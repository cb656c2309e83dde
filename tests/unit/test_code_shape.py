"""The code stays in rooms with one job: no function of the package longer than 80 lines (#29)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "scaleprof"
MOST_LINES = 80


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None  # ast.parse sets it on every statement
                lines = node.end_lineno - node.lineno + 1
                if lines > MOST_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these: " + "; ".join(long)


# The worker side (scaleprof/worker/) runs inside every training process: it may use the shared definitions
# (config, records, errors, versions) but nothing from the driver's side, which imports it.
DRIVER_SIDE = ("execution", "plan", "workloads", "analysis", "report", "telemetry", "export", "cli", "capacity")


def _imported(path: Path) -> set[str]:
    """Every scaleprof module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("scaleprof.")}


def test_the_worker_side_imports_nothing_from_the_driver_side():
    reaching = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / "worker").glob("*.py"))
        for name in sorted(_imported(path))
        if name.split(".")[1] in DRIVER_SIDE
    ]
    assert not reaching, "; ".join(reaching)
    assert _imported(PACKAGE / "session.py") <= {"scaleprof.worker", "scaleprof.worker.session"}  # the public path
