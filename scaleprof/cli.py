"""Command line: `scaleprof run | plan | report`.

User errors (a bad experiment file, a missing study directory) print one message and exit 2,
without a traceback; nothing is written and Ray is not started.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scaleprof.config import ConfigError, Experiment, load_experiment
from scaleprof.plan import describe, expand
from scaleprof.pricing import prices_for
from scaleprof.workloads.models import check_model

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user can fix; its message is all they need to see."""


def _load(path: str) -> Experiment:
    experiment = load_experiment(path)
    prices_for(experiment, Path(path).resolve().parent)  # a missing pricing row fails now, not after the runs
    for i, model in enumerate(experiment.model_list):
        problem = check_model(model, experiment.data.input_shape, experiment.data.classes)
        if problem:
            field = "model" if experiment.model is not None else f"models.{i}"
            raise ConfigError(f"{path}: invalid experiment\n  {field}.{problem}")
    return experiment


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".scaleprof-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write study results there ({exc.strerror or exc})") from None


def _table(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right" if column != "run_id" else "left", no_wrap=column == "run_id")
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    return table


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    experiment = _load(args.file)
    runs = expand(experiment)
    console.print(_table(describe(experiment, runs), f"{experiment.name}: {len(runs)} run(s)"))
    console.print(
        f"{experiment.train.scaling} scaling; runs whose resources the cluster lacks are skipped at run time.",
        markup=False,
    )
    return 0


def _render(study_dir: Path, console: Console) -> Path:
    from scaleprof.analysis.summarize import summarize, write_tables
    from scaleprof.report.render import TERMINAL, headline_table, render_report
    from scaleprof.telemetry.store import StudyStore

    store = StudyStore(study_dir)
    tables = summarize(store)
    write_tables(store, tables)
    report = render_report(study_dir, tables)
    headline = headline_table(tables.runs, TERMINAL)
    console.print(_table(headline.to_dict("records"), f"study {study_dir.name}"))
    for _, run in tables.runs[tables.runs["status"] != "ok"].iterrows():
        console.print(f"{run['run_id']} {run['status']}: {run['reason']}", markup=False, highlight=False)
    return report


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from scaleprof.execution.runner import run_study
    from scaleprof.progress import TerminalProgress

    experiment = _load(args.file)
    pricing = {k: v.model_dump() for k, v in prices_for(experiment, Path(args.file).resolve().parent).items()}
    remote = "://" in args.out
    out_dir = Path(tempfile.mkdtemp(prefix="scaleprof-")) if remote else _local_out(args.out, console)
    _check_writable(out_dir)
    if args.verbose:
        os.environ["SCALEPROF_RAY_LOG_TO_DRIVER"] = "1"
    result = run_study(experiment, out_dir, observer=TerminalProgress(console), pricing=pricing)
    report = _render(result.study_dir, console)
    console.print(f"Report: {report}", markup=False, highlight=False)
    if remote:
        from scaleprof.telemetry.store import publish

        uri = publish(result.study_dir, args.out)
        console.print(f"Copied the study to {uri}", markup=False, highlight=False)
    return 0


def _local_out(out: str, console: Console) -> Path:
    """Under `ray job submit` the working directory is a temporary copy that Ray deletes later:
    a relative output directory goes to ~/scaleprof-reports on the head node instead."""
    path = Path(out)
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and not path.is_absolute():
        path = Path.home() / "scaleprof-reports"
        console.print(
            f"Running as a Ray job: writing to {path} on the head node (fetch it with `ray rsync-down`, "
            "or pass --out s3://... / gs://... / an absolute path)",
            markup=False,
            highlight=False,
        )
    return path


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from scaleprof.telemetry.store import StudyStore

    study_dir = Path(args.study_dir)
    if not StudyStore(study_dir).exists():
        raise UserError(f"{study_dir}: not a scaleprof study directory (no manifest.json and events.jsonl)")
    report = _render(study_dir, console)
    console.print(f"Report: {report}", markup=False, highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaleprof", description="Distributed scalability profiler on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scaling study and write its report")
    run.add_argument("file", help="experiment YAML file")
    run.add_argument("--out", default="reports", help="directory for study directories (default: reports)")
    run.add_argument("--verbose", action="store_true", help="show Ray's worker logs")
    run.set_defaults(func=cmd_run)
    plan = sub.add_parser("plan", help="validate an experiment and list its runs, without Ray")
    plan.add_argument("file")
    plan.set_defaults(func=cmd_plan)
    report = sub.add_parser("report", help="re-render a study's report from its files (no Ray)")
    report.add_argument("study_dir")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs (CI, `ray job submit`) are read later: do not squeeze tables to 80 columns
        console = Console(width=200)
    try:
        return args.func(args, console)
    except (ConfigError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)  # plain print: a path must never be wrapped mid-word
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: what was stored so far stays in the study directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
