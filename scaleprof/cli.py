"""Command line: `scaleprof run | plan | report | predict | compare`.

User errors (a bad experiment file, a missing study directory) print one message and exit 2,
without a traceback; nothing is written and Ray is not started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from scaleprof.config import ConfigError, Experiment, load_experiment, setting_differences
from scaleprof.errors import NO_SPACE, NOT_WRITABLE, DestinationError, RayLost, StoreError, write_failure
from scaleprof.records import NO_STEPS, RunStatus
from scaleprof.versions import scaleprof_version

# torch, Ray, pandas and the analysis are imported by the commands that need them: `--help` stays fast.

EXIT_USER_ERROR = 2
EXIT_RUNS_FAILED = 3  # the study finished and its report is written, but some runs failed


class UserError(Exception):
    """An error the user can fix; its message is all they need to see."""


class StudyStopped(Exception):
    """The study could not go on (the disk filled up, Ray was lost); what was stored is intact and resumable."""

    def __init__(self, message: str, ray_gone: bool = False):
        super().__init__(message)
        self.ray_gone = ray_gone  # Ray's GCS no longer answers: nothing of Ray's can be shut down


def _load(path: str, overrides: list[str] | None = None, measure: bool = True) -> tuple[Experiment, Any]:
    """The experiment, checked through and through before Ray starts: pricing rows, the data set (opened,
    split), every model (built and run on one batch; with `measure`, its FLOPs counted) and the user's code
    (imported)."""
    from scaleprof.execution.prepare import prepare
    from scaleprof.pricing import prices_for
    from scaleprof.workloads.imports import WorkloadError

    experiment = load_experiment(path, overrides)
    try:  # a missing pricing row fails now, not after the runs
        prices_for(experiment, Path(path).resolve().parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    try:
        inputs = prepare(experiment, measure)
    except WorkloadError as err:
        raise ConfigError(f"{path}: invalid experiment\n  {err.field}: {err.message}") from None
    return experiment, inputs


def _check_writable(out_dir: Path, need_bytes: int) -> None:
    """Before any run: the output location takes a write and has room for the study (2x its estimate)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".scaleprof-write-check-") as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(out_dir).free
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write study results there ({exc.strerror or exc})") from None
    if free < 2 * need_bytes:
        raise UserError(
            f"{out_dir}: only {free / 2**20:.1f} MiB free; this study writes about {need_bytes / 2**20:.1f} MiB "
            f"(events, predictions, report) and needs twice that free. Free some space or pass --out elsewhere."
        )


def pd_json(rows: Any) -> str:
    """`--json`: rows as a JSON list of objects (NaN as null), for scripts and notebooks."""
    import json

    import pandas as pd

    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)

    def clean(value: Any) -> Any:
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

    return json.dumps([{k: clean(v) for k, v in r.items()} for r in records], indent=2)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from scaleprof.plan import describe, expand, few_steady_steps
    from scaleprof.report.terminal import print_plan

    experiment, inputs = _load(args.file, args.overrides, measure=False)  # checked as `run` does; FLOPs not shown
    runs = expand(experiment)
    rows = describe(experiment, runs, inputs.data)
    warnings = few_steady_steps(experiment, runs, inputs.data)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        print(pd_json(rows))
        return 0
    print_plan(rows, f"{experiment.name}: {len(runs)} run(s)", console)
    console.print(
        f"{experiment.train.scaling} scaling; runs whose resources the cluster lacks are skipped at run time. "
        f"steady steps: per worker, after the warm-up (epoch 1, or train.warmup_steps with one epoch); "
        f"below evaluation.min_steady_steps={experiment.evaluation.min_steady_steps} a figure is low-confidence.",
        markup=False,
    )
    return 0


def _summarize(store: Any) -> Any:
    """The study's tables, or one message when its files cannot be made sense of (a damaged manifest
    is a StoreError naming it; anything else the analysis trips on is named with the study)."""
    from scaleprof.analysis.summarize import summarize
    from scaleprof.telemetry.store import StoreError

    try:
        return summarize(store)
    except StoreError:
        raise
    except Exception as exc:
        if os.environ.get("SCALEPROF_DEBUG"):
            raise
        raise UserError(
            f"{store.root}: cannot read the study: its files are damaged or were written by an incompatible "
            f"scaleprof ({type(exc).__name__}: {exc}); SCALEPROF_DEBUG=1 shows where"
        ) from None


def _render(study_dir: Path, console: Console, accept_loss: bool = False) -> tuple[Any, Any]:
    """Tables and report written (beside those in place when they would lose measurements: see
    report/write.py), the headline shown; (what was written, the study's tables)."""
    from scaleprof.report.findings_text import findings_sentences
    from scaleprof.report.tables import TERMINAL, headline_table
    from scaleprof.report.terminal import table
    from scaleprof.report.write import write_study
    from scaleprof.telemetry.store import StudyStore

    store = StudyStore(study_dir)
    tables = _summarize(store)
    try:
        written = write_study(store, tables, accept_loss)
    except OSError as exc:
        if write_failure(exc) != NOT_WRITABLE:
            raise
        raise UserError(f"{exc.filename or study_dir}: cannot write the report there ({exc.strerror})") from None
    for line in tables.damage:
        print(f"warning: {study_dir.name}: {line}", file=sys.stderr)
    headline = headline_table(tables.runs, TERMINAL)
    console.print(table(headline.to_dict("records"), f"study {study_dir.name}"))
    for _, run in tables.runs[tables.runs["status"] != "ok"].iterrows():
        console.print(f"{run['run_id']} {run['status']}: {run['reason']}", markup=False, highlight=False)
    for sentence in findings_sentences(tables):  # what makes figures less firm than they look, said here too
        if sentence.startswith(("Warning", "Low confidence", "Contended")):
            console.print(sentence, markup=False, highlight=False)
    if written.loss:
        _say_loss(study_dir, written)
    return written, tables


def _say_loss(study_dir: Path, written: Any) -> None:
    """What a re-render could not read, and where the kept and the new tables are."""
    lost = "\n".join(f"  {line}" for line in written.loss)
    if written.kept_previous:
        print(
            f"error: {study_dir}: the study's files now hold less than its tables and report were made from:\n"
            f"{lost}\nThose tables and report.html are kept as they were. This re-render, from what is left, "
            f"is in {written.report.parent}/. To replace them anyway: scaleprof report {study_dir} --accept-loss",
            file=sys.stderr,
        )
    else:
        print(f"warning: {study_dir}: tables replaced by ones made from less (--accept-loss):\n{lost}", file=sys.stderr)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    resume = bool(args.resume)
    if resume:  # first, before torch and Ray are imported: a file changed since the study is refused in a second
        study_dir = _resumable(args.resume, load_experiment(args.file, args.overrides))
    from scaleprof.execution.ray_session import check_ray_address
    from scaleprof.execution.runner import new_study_dir, run_study
    from scaleprof.plan import expand, few_steady_steps, study_bytes_estimate
    from scaleprof.pricing import prices_for
    from scaleprof.progress import TerminalProgress
    from scaleprof.telemetry.store import StudyStore, check_destination

    remote = "://" in args.out
    if remote:
        check_destination(args.out)  # before any run: the copy at the end must not be the first to find out
    check_ray_address()  # a dead RAY_ADDRESS fails now, in seconds, and before any directory is made
    experiment, inputs = _load(args.file, args.overrides)
    pricing = {k: v.model_dump() for k, v in prices_for(experiment, Path(args.file).resolve().parent).items()}
    planned = expand(experiment)
    need = study_bytes_estimate(experiment, planned, inputs.data)
    for line in few_steady_steps(experiment, planned, inputs.data):
        print(f"warning: {line}", file=sys.stderr)
    if resume:
        _check_writable(study_dir, need)
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="scaleprof-")) if remote else _local_out(args.out, console)
        _check_writable(out_dir, need)
        study_dir = new_study_dir(out_dir, experiment.name)
    store = StudyStore(study_dir)
    with _locked(store, "scaleprof run --resume" if resume else "scaleprof run"):
        try:
            result = run_study(
                experiment,
                study_dir.parent,
                observer=TerminalProgress(console),
                pricing=pricing,
                study_dir=study_dir,
                resume=resume,
                inputs=inputs,
                verbose=args.verbose,
            )
            written, tables = _render(result.study_dir, console)
        except OSError as exc:
            stopped = _write_failure(exc, args.file, store)
            if stopped is None:
                raise
            raise stopped from None
        except RayLost as exc:
            raise StudyStopped(
                f"{exc}. The study stopped; what it stored stays readable. Start Ray again if it was a cluster's, "
                f"then finish the study with: scaleprof run {args.file} --resume {store.root}",
                ray_gone=True,
            ) from None
        finally:
            if not resume and not store.exists():  # it never started: nothing to resume, nothing to keep
                shutil.rmtree(study_dir, ignore_errors=True)
    console.print(f"Report: {written.report}", markup=False, highlight=False)
    if written.kept_previous:
        return 1
    if args.mlflow:
        _export_mlflow(result.study_dir, args.mlflow, args.mlflow_experiment, console)
    if remote and not _published(result.study_dir, args.out, console):
        return 1
    failed = [r["run_id"] for r in result.records if r.get("status") == RunStatus.FAILED]
    if failed:
        print(f"error: {len(failed)} of {len(result.records)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    unmeasured = tables.runs.loc[tables.runs["status"] == RunStatus.UNMEASURED, "run_id"].tolist()
    if unmeasured:
        print(
            f"error: {len(unmeasured)} of {len(result.records)} run(s) measured nothing: {', '.join(unmeasured)}; "
            f"{NO_STEPS}",
            file=sys.stderr,
        )
    return EXIT_RUNS_FAILED if failed or unmeasured else 0


def _published(study_dir: Path, uri: str, console: Console) -> bool:
    """The finished study copied to `uri` (--out's remote destination); False, said, where the copy failed."""
    from scaleprof.telemetry.store import publish

    try:
        copied = publish(study_dir, uri)
    except Exception as exc:  # the study itself is complete: say where it is
        print(
            f"error: copying the study to {uri} failed ({exc}); the whole study is kept at {study_dir}", file=sys.stderr
        )
        return False
    console.print(f"Copied the study to {copied}", markup=False, highlight=False)
    return True


def _write_failure(exc: OSError, experiment_file: str, store: Any) -> StudyStopped | None:
    """What to tell the user when a write failed: a full disk can be freed and the study resumed; a
    read-only or forbidden location cannot (no resume hint there). None: not a write failure."""
    where = exc.filename or store.root
    kind = write_failure(exc)
    if kind == NO_SPACE:
        hint = (
            f"Free some space, then finish it with: scaleprof run {experiment_file} --resume {store.root}"
            if store.exists()
            else "Free some space and run it again (the study had not started: nothing was kept)."
        )
        return StudyStopped(f"{where}: {exc.strerror or exc}. The study stopped; what it stored stays readable. {hint}")
    if kind == NOT_WRITABLE:
        return StudyStopped(
            f"{where}: {exc.strerror or exc}: scaleprof (or Ray, for its session files) cannot write there. Make it "
            "writable or point it elsewhere (--out; TMPDIR or HOME for Ray)."
        )
    return None


@contextlib.contextmanager
def _locked(store: Any, purpose: str) -> Iterator[None]:
    """Hold the study directory for this command: a second writer is refused, naming the first."""
    from scaleprof.telemetry.store import StudyBusy

    try:
        lock = store.lock(purpose)
    except StudyBusy as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{store.root}: cannot write there ({exc.strerror or exc})") from None
    try:
        yield
    finally:
        lock.release()


def _resumable(path: str, experiment: Experiment) -> Path:
    """A study directory this experiment file can finish: same resolved experiment (by hash). A different
    one is refused naming the fields that differ (its name included: the study was made under it)."""
    store = _require_study(path)
    manifest = store.manifest()
    stored = manifest.experiment_sha256
    if stored != experiment.digest():
        differences = setting_differences(manifest.raw["experiment"], experiment.resolved(), ignore=())
        what = (
            "; the study's settings vs this file's:\n" + "\n".join(f"  {line}" for line in differences)
            if differences  # none: the same settings written by another scaleprof (a default added since)
            else f" (sha256 {str(stored)[:12]}, this file {experiment.digest()[:12]})"
        )
        raise UserError(
            f"{path}: was made from a different experiment{what}\nResume it with the file it was made from, "
            "or run this one as a new study (without --resume)."
        )
    return Path(path)


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
    store = _require_study(args.study_dir)
    with _locked(store, "scaleprof report"):  # not while a run writes it
        written, _ = _render(store.root, console, accept_loss=args.accept_loss)
    console.print(f"Report: {written.report}", markup=False, highlight=False)
    return 1 if written.kept_previous else 0


def _require_study(path: str | Path):
    """The StudyStore at `path`, or a UserError naming it."""
    from scaleprof.telemetry.store import StudyStore

    store = StudyStore(Path(path))
    if not store.exists():
        raise UserError(f"{path}: not a scaleprof study directory (no manifest.json and events/)")
    return store


def _study_tables(path: str):
    return _summarize(_require_study(path))


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    import pandas as pd

    from scaleprof.analysis.prediction import physics_predictions
    from scaleprof.analysis.scaling import predictions
    from scaleprof.report.terminal import PREDICT_LEGEND, law_lines, physics_row, prediction_row, table

    tables = _study_tables(args.study_dir)
    fabric = _predict_fabric(args, tables.fabric)
    placements = [(w, n) for w in args.workers for n in args.nodes if n <= w]
    if not placements:
        raise UserError(f"--nodes {' '.join(map(str, args.nodes))}: a placement needs at least one worker per node")
    scaling = tables.manifest.experiment.train.scaling
    physics = physics_predictions(tables.runs, placements, fabric, scaling)
    curve = predictions(tables.runs, args.workers) if not tables.fits.empty else pd.DataFrame()
    if (curve.empty or not curve["valid"].any()) and (physics.empty or physics["throughput"].isna().all()):
        if tables.fits.empty:
            said = "no model and device was measured at two or more worker counts"
        else:
            said = (
                "the scaling law fitted is outside its meaning ("
                + "; ".join(f"for {f.model} / {f.device}, {f.invalid_reason}" for f in tables.fits.itertuples())
                + ")"
            )
        why = "; ".join(dict.fromkeys(physics["reason"])) if not physics.empty else "no finished run"
        raise UserError(f"{args.study_dir}: no prediction: {said}; physics model: {why}")
    if args.json:
        both = [curve.assign(method="scaling law")] if not curve.empty else []
        print(pd_json(pd.concat([*both, physics.assign(method="physics")], ignore_index=True)))
        return 0
    name = Path(args.study_dir).name
    if not physics.empty:
        rows = [physics_row(r) for _, r in physics.iterrows()]
        console.print(table(rows, f"physics model: predictions from {name}"))
        for line in dict.fromkeys(physics["basis"].dropna()) if "basis" in physics else []:
            console.print(f"rests on: {line}", markup=False, highlight=False)
    if not curve.empty:
        rows = [prediction_row(r) for _, r in curve.iterrows()]
        console.print(table(rows, f"scaling law: predictions from {name}"))
        for line in law_lines(tables.fits):
            console.print(line, markup=False, highlight=False)
    console.print(PREDICT_LEGEND, markup=False, highlight=False)
    return 0


def _predict_fabric(args: argparse.Namespace, own: Any) -> Any:
    """The links `predict` uses: --fabric (a sweep file or a study holding one), else the study's own
    sweep (`own`: its fabric.parquet, or its runs' sweeps); --link figures replace a fitted link of their class."""
    import pandas as pd

    from scaleprof.analysis.prediction import fabric_of
    from scaleprof.records import FABRIC_COLUMNS
    from scaleprof.telemetry.store import FABRIC_TABLE

    sweep, where = own, Path(args.study_dir).name
    if args.fabric:
        path = Path(args.fabric)
        path = path / FABRIC_TABLE if path.is_dir() else path
        try:
            sweep, where = pd.read_parquet(path), str(path)
        except FileNotFoundError:
            raise UserError(f"--fabric {args.fabric}: no such file (a fabric.parquet or a study with one)") from None
        except Exception as exc:  # pyarrow raises its own types for a file that is not parquet
            raise UserError(f"--fabric {args.fabric}: cannot read it as a fabric sweep ({exc})") from None
        missing = [c for c in FABRIC_COLUMNS if c not in sweep]
        if missing:
            raise UserError(f"--fabric {args.fabric}: not a fabric sweep (no column(s) {', '.join(missing)})")
    stated: dict[str, str] = {}
    for text in args.link or []:
        link_class, _, spec = text.rpartition("=") if "=" in text else ("inter-node", "", text)
        if link_class not in ("intra-node", "inter-node"):
            raise UserError(f"--link {text}: the link class is intra-node or inter-node, not {link_class!r}")
        stated[link_class] = spec
    try:
        return fabric_of(sweep, where, stated)
    except ValueError as exc:
        raise UserError(f"--link: {exc}") from None


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from scaleprof.analysis.compare import compare_runs
    from scaleprof.report.terminal import compare_note, compare_rows, table

    a, b = _study_tables(args.a), _study_tables(args.b)
    experiments = (a.manifest.experiment.resolved(), b.manifest.experiment.resolved())
    changes = compare_runs(a.runs, b.runs, noise_floor=args.noise, experiments=experiments)
    if changes.empty:
        raise UserError("the two studies share no (model, placement) with a finished run")
    if args.json:
        print(pd_json(changes))
        return 0
    rows = compare_rows(changes)
    title = f"{Path(args.b).name} against {Path(args.a).name}"
    note = compare_note(args.noise, setting_differences(*experiments))
    console.print(table(rows, title))
    console.print(note, markup=False, highlight=False)
    if args.html:
        from scaleprof.report.compare_page import render_compare

        try:
            page = render_compare(Path(args.html), title, rows, note, Path(args.a), Path(args.b))
        except OSError as exc:
            raise UserError(f"{args.html}: cannot write the page there ({exc.strerror or exc})") from None
        console.print(f"Page: {page}", markup=False, highlight=False)
    return 0


def _export_mlflow(study_dir: Path, uri: str, experiment: str | None, console: Console) -> None:
    try:
        from scaleprof.export.mlflow import export_study
    except ImportError:
        raise UserError("--mlflow needs MLflow: pip install 'scaleprof[mlflow]'") from None
    tables = _summarize(_require_study(study_dir))
    try:
        out = export_study(study_dir, tables, uri, experiment)
    except Exception as exc:  # MLflow's own errors (a bad URI, a server that refuses)
        raise StudyStopped(
            f"--mlflow {uri}: export failed ({type(exc).__name__}: {exc}); the study is kept at "
            f"{study_dir}; export it later with: scaleprof export {study_dir} --mlflow {uri}"
        ) from None
    said = "was already in" if out["existed"] else f"logged {out['runs']} run(s) to"
    console.print(
        f"MLflow: study {said} experiment {out['experiment_id']} at {uri} (parent run {out['parent_run_id']})",
        markup=False,
        highlight=False,
    )


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    if not (args.mlflow or args.events):
        raise UserError("export: say where to: --mlflow TRACKING_URI and/or --events FILE")
    store = _require_study(args.study_dir)
    if args.events:
        _export_events(store, Path(args.events), console)
    if args.mlflow:
        _export_mlflow(store.root, args.mlflow, args.mlflow_experiment, console)
    return 0


EVENT_FORMATS = (".jsonl", ".csv", ".parquet")


def _export_events(store: Any, path: Path, console: Console) -> None:
    """Every stored event once, as JSON lines (one object per event, its own fields only), CSV or one
    Parquet file, chosen by the file's suffix; written to a temporary name and renamed."""
    from scaleprof.telemetry.store import atomic_write_bytes, event_records

    if path.suffix not in EVENT_FORMATS:
        raise UserError(f"--events {path}: name a file ending in {', '.join(EVENT_FORMATS)}")
    events = store.events()
    if path.suffix == ".jsonl":
        data = "".join(json.dumps(r, default=str) + "\n" for r in event_records(events)).encode()
    elif path.suffix == ".csv":
        data = events.convert_dtypes().to_csv(index=False).encode()  # an int field with gaps stays int
    else:
        import io

        buffer = io.BytesIO()
        events.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise UserError(f"--events {path}: cannot write there ({exc.strerror or exc})") from None
    console.print(f"Events: {len(events):,} written to {path}", markup=False, highlight=False)


def cmd_ls(args: argparse.Namespace, console: Console) -> int:
    from scaleprof.analysis.catalog import list_studies
    from scaleprof.report.index import render_index
    from scaleprof.report.terminal import ls_rows, table

    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory (studies are written under --out, by default reports/)")
    rows = list_studies(root)
    if args.json:
        print(pd_json(rows))
        return 0
    if not rows:
        console.print(f"No scaleprof studies in {root}", markup=False, highlight=False)
        return 0
    console.print(table(ls_rows(rows), f"{len(rows)} studies in {root}"))
    try:
        index = render_index(root, rows)
        console.print(f"Index: {index}", markup=False, highlight=False)
    except OSError as exc:
        print(f"warning: {root}: cannot write index.html ({exc.strerror or exc})", file=sys.stderr)
    return 0


FABRIC_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _size_label(size_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:g} {unit}"
    return f"{size_bytes} B"


def _fabric_out(args: argparse.Namespace) -> Path:
    """Where the sweep goes: a .parquet file in an existing directory, replaced only with --force."""
    path = Path(args.out)
    if path.suffix != ".parquet":
        raise UserError(f"--out {path}: name a file ending in .parquet")
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: there is no directory {path.parent}; make it first, or name another file")
    if path.is_dir():
        raise UserError(f"--out {path}: is a directory; name a file ending in .parquet")
    if path.exists() and not args.force:
        raise UserError(f"--out {path}: exists already; pass --force to replace it, or name another file")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"--out {path}: cannot write in {path.parent}")
    return path


def cmd_fabric(args: argparse.Namespace, console: Console) -> int:
    import io
    import time

    out = _fabric_out(args)  # before Ray: a refused --out costs nothing
    from scaleprof.execution.ray_session import check_ray_address

    check_ray_address()
    import ray

    from scaleprof.analysis.fabric import fit_fabric
    from scaleprof.execution.fabric_probe import DEFAULT_REPEATS, DEFAULT_SIZES_BYTES, ProbeRefused, probe_fabric
    from scaleprof.execution.ray_session import connect_ray
    from scaleprof.execution.scope import sigterm_handler_kept
    from scaleprof.report.terminal import FABRIC_LEGEND, fabric_json, fabric_row, table
    from scaleprof.telemetry.store import atomic_write_bytes

    def say(text: str) -> None:  # progress on stderr: stdout holds the table (or the JSON) alone
        print(f"fabric probe: {text}", file=sys.stderr, flush=True)

    backend = "nccl" if args.gpus_per_worker > 0 else "gloo"
    sizes = f"all_reduce {_size_label(DEFAULT_SIZES_BYTES[0])} … {_size_label(DEFAULT_SIZES_BYTES[-1])}"
    each = f"{args.cpus_per_worker:g} CPU" + (f", {args.gpus_per_worker:g} GPU" if args.gpus_per_worker else "")
    say(f"{args.workers} workers ({args.strategy}, {each} each), {backend}, {sizes}, {DEFAULT_REPEATS} repeats")
    started = time.monotonic()
    with sigterm_handler_kept():  # connect_ray puts a SIGTERM handler over Ray's: for the probe only
        started_ray = connect_ray()
        try:
            say("starting Ray Train's workers")
            frame = probe_fabric(
                args.workers,
                strategy=args.strategy,
                gpus_per_worker=args.gpus_per_worker,
                cpus_per_worker=args.cpus_per_worker,
            )
        except ProbeRefused as exc:
            raise UserError(f"fabric: {exc}") from None
        finally:
            if started_ray:
                ray.shutdown()
    nodes = len(set(frame.attrs["node_ids"]))
    say(
        f"{args.workers} workers, {frame['link_class'].iloc[0]} ({nodes} node(s)), {sizes}: {len(frame)} timed "
        f"calls, the sweep {frame.attrs['sweep_s']:.1f} s, {time.monotonic() - started:.0f} s in all"
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    fits = fit_fabric(frame)
    if args.json:
        print(json.dumps([fabric_json(fit, out) for fit in fits], indent=2))
        return 0
    console.print(table([fabric_row(fit) for fit in fits], f"fabric: {len(frame)} timed calls in {out}"))
    for fit in fits:
        if not fit.valid:
            console.print(f"{fit.backend} {fit.link_class}: not valid: {fit.invalid_reason}", markup=False)
    console.print(FABRIC_LEGEND, markup=False, highlight=False)
    return 0


def _probe_workers(text: str) -> int:
    value = _worker_count(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value}: a collective needs 2 or more workers to cross a link")
    return value


def _resource_count(text: str, what: str, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > 1024:
        raise argparse.ArgumentTypeError(f"{text}: {what}")
    return value


def _gpus_per_worker(text: str) -> float:
    value = _resource_count(text, "0 (CPU workers, gloo) or 1 or more GPUs (nccl)", zero=True)
    if 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: nccl cannot run two ranks on one GPU; give 0, or 1 or more")
    return value


def _cpus_per_worker(text: str) -> float:
    return _resource_count(text, "a number of CPUs above 0", zero=False)


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of workers") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{value}: a worker count is 1 or more")
    return value


def _noise_floor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"{text}: the noise floor is a fraction from 0 to 1, e.g. 0.05 for 5%")
    return value


def _mlflow_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--mlflow",
        metavar="TRACKING_URI",
        required=required,
        help="also log the study to MLflow: a tracking server (http://...) or a local database (sqlite:///mlflow.db)",
    )
    parser.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: scaleprof/<name>)")


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="scaleprof",
        description="Distributed scalability profiler on Ray.",
        formatter_class=raw,
        epilog="exit codes: 0 done; 1 the study stopped (disk full, unwritable location, a failed copy: what was "
        "stored stays; a re-render that would lose measurements, which keeps the tables in place); 2 bad input "
        "(a file, field or argument named); 3 the report is written but some runs failed or measured nothing; "
        "130 / 143 interrupted (Ctrl-C / SIGTERM), resumable with run --resume\n\n"
        "examples:\n  scaleprof run experiments/smoke.yaml\n  scaleprof ls reports",
    )
    parser.add_argument("--version", action="version", version=f"scaleprof {scaleprof_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub, raw)
    _add_plan(sub, raw)
    _add_report(sub, raw)
    _add_predict(sub, raw)
    _add_compare(sub, raw)
    _add_export(sub, raw)
    _add_ls(sub, raw)
    _add_fabric(sub, raw)
    return parser


def _add_run(sub: Any, raw: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run a scaling study and write its report",
        formatter_class=raw,
        epilog="examples:\n  scaleprof run experiments/smoke.yaml\n"
        "  scaleprof run experiments/resnet-gpu.yaml --out s3://bucket/studies\n"
        "  scaleprof run experiments/smoke.yaml --resume reports/smoke-20261129-120000\n"
        "  scaleprof run experiments/smoke.yaml train.epochs=10 placements.1.workers=4\n"
        "  RAY_ADDRESS=head:6379 scaleprof run study.yaml   (join a running cluster)",
    )
    run.add_argument("file", help="experiment YAML file")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override fields, e.g. train.epochs=5")
    run.add_argument("--out", default="reports", help="directory for study directories (default: reports)")
    run.add_argument("--verbose", action="store_true", help="show Ray's worker logs")
    run.add_argument("--resume", metavar="STUDY_DIR", help="finish an interrupted study: keep its ok/skipped runs")
    _mlflow_arguments(run, required=False)
    run.set_defaults(func=cmd_run)


def _add_plan(sub: Any, raw: Any) -> None:
    plan = sub.add_parser(
        "plan",
        help="validate an experiment and list its runs, without Ray",
        formatter_class=raw,
        epilog="example:\n  scaleprof plan experiments/smoke.yaml --json",
    )
    plan.add_argument("file")
    plan.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override fields, e.g. train.epochs=5")
    plan.add_argument("--json", action="store_true", help="the runs as JSON")
    plan.set_defaults(func=cmd_plan)


def _add_report(sub: Any, raw: Any) -> None:
    report = sub.add_parser(
        "report",
        help="re-render a study's report from its files (no Ray)",
        formatter_class=raw,
        epilog="example:\n  scaleprof report reports/smoke-20261129-120000",
    )
    report.add_argument("study_dir")
    report.add_argument(
        "--accept-loss",
        action="store_true",
        help="replace the tables in place even when the study's files now hold less than they were made from "
        "(a damaged event segment): without it they are kept and the re-render goes to STUDY_DIR/partial-render/",
    )
    report.set_defaults(func=cmd_report)


def _add_predict(sub: Any, raw: Any) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict throughput at placements not measured: physics model and scaling law",
        formatter_class=raw,
        epilog="examples:\n  scaleprof predict reports/smoke-20261129-120000 --workers 8 16 64\n"
        "  scaleprof predict reports/smoke-20261129-120000 --workers 16 --nodes 2 --link inter-node=100Gbit/s,5us",
    )
    predict.add_argument("study_dir")
    predict.add_argument("--workers", type=_worker_count, nargs="+", required=True, help="worker counts, e.g. 16 64")
    predict.add_argument(
        "--nodes",
        type=_worker_count,
        nargs="+",
        default=[1],
        help="node counts to spread each worker count over (default 1); more than 1 crosses the inter-node link",
    )
    predict.add_argument(
        "--fabric",
        metavar="FILE_OR_STUDY",
        help="the links' sweep: a fabric.parquet (scaleprof fabric --out) or a study holding one; default: the "
        "study's own, if it has one",
    )
    predict.add_argument(
        "--link",
        action="append",
        metavar="[CLASS=]BANDWIDTH,LATENCY",
        help="state a link instead of measuring it, e.g. inter-node=100Gbit/s,5us or intra-node=10GB/s,20us "
        "(class defaults to inter-node); repeat for both",
    )
    predict.add_argument("--json", action="store_true", help="the predictions as JSON")
    predict.set_defaults(func=cmd_predict)


def _add_compare(sub: Any, raw: Any) -> None:
    compare = sub.add_parser(
        "compare",
        help="two studies side by side, changes flagged beyond measured noise",
        formatter_class=raw,
        epilog="example:\n  scaleprof compare reports/before-20261129-120000 reports/after-20261130-090000",
    )
    compare.add_argument("a", help="the baseline study directory")
    compare.add_argument("b", help="the study compared with it")
    compare.add_argument(
        "--noise", type=_noise_floor, default=0.05, help="noise floor where a study has no repeats (0 to 1)"
    )
    compare.add_argument("--json", action="store_true", help="the comparison as JSON")
    compare.add_argument("--html", metavar="FILE", help="also write the comparison as a page (offline, sortable)")
    compare.set_defaults(func=cmd_compare)


def _add_export(sub: Any, raw: Any) -> None:
    export = sub.add_parser(
        "export",
        help="log a finished study to MLflow (a parent run, a child run per scaleprof run), or write "
        "its events to one file",
        formatter_class=raw,
        epilog="examples:\n  scaleprof export reports/smoke-20261129-120000 --mlflow sqlite:///mlflow.db\n"
        "  scaleprof export reports/smoke-20261129-120000 --events events.jsonl",
    )
    export.add_argument("study_dir")
    _mlflow_arguments(export, required=False)
    export.add_argument("--events", metavar="FILE", help="write every event to FILE: .jsonl, .csv or .parquet")
    export.set_defaults(func=cmd_export)


def _add_ls(sub: Any, raw: Any) -> None:
    ls = sub.add_parser(
        "ls",
        help="list the studies under a directory and write its index.html",
        formatter_class=raw,
        epilog="example:\n  scaleprof ls reports --json",
    )
    ls.add_argument("dir", nargs="?", default="reports", help="where the studies are (default: reports)")
    ls.add_argument("--json", action="store_true", help="the list as JSON")
    ls.set_defaults(func=cmd_ls)


def _add_fabric(sub: Any, raw: Any) -> None:
    fabric = sub.add_parser(
        "fabric",
        help="measure the links between workers: all-reduce latency and bus bandwidth, fitted",
        formatter_class=raw,
        epilog="examples:\n  scaleprof fabric\n"
        "  scaleprof fabric --strategy STRICT_SPREAD --out inter-node.parquet   (one worker per node)\n"
        "  RAY_ADDRESS=head:6379 scaleprof fabric --workers 8 --gpus-per-worker 1 --json",
    )
    fabric.add_argument("--workers", type=_probe_workers, default=2, help="ranks, 2 or more (default 2)")
    fabric.add_argument(
        "--strategy",
        choices=FABRIC_STRATEGIES,
        default="PACK",
        help="Ray placement strategy (default PACK); STRICT_SPREAD puts each worker on its own node",
    )
    fabric.add_argument(
        "--gpus-per-worker", type=_gpus_per_worker, default=0.0, help="0: CPU workers over gloo (default); 1: nccl"
    )
    fabric.add_argument("--cpus-per-worker", type=_cpus_per_worker, default=1.0, help="CPUs per worker (default 1)")
    fabric.add_argument(
        "--out",
        default="fabric.parquet",
        metavar="FILE.parquet",
        help="where the sweep goes (default: fabric.parquet here); an existing file is replaced only with --force",
    )
    fabric.add_argument("--force", action="store_true", help="replace --out if it exists")
    fabric.add_argument("--json", action="store_true", help="the fits as JSON")
    fabric.set_defaults(func=cmd_fabric)


# Where a study is planned, run or reported (not on the training workers): scaleprof[driver].
DRIVER_PACKAGES = {"sklearn": "scikit-learn", "scipy": "scipy", "altair": "altair", "vl_convert": "vl-convert-python"}


def missing_driver_packages() -> list[str]:
    import importlib.util

    return [package for module, package in DRIVER_PACKAGES.items() if importlib.util.find_spec(module) is None]


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """`scaleprof ARGV`: the exit code. `owns_process`: this is the `scaleprof` program itself, which may end
    its process at once (see `_exit_leaving_ray`)."""
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs (CI, `ray job submit`) are read later: do not squeeze tables to 80 columns
        console = Console(width=200)
    try:
        missing = missing_driver_packages()
        if missing:
            raise UserError(
                f"`scaleprof {args.command}` needs {', '.join(missing)}, which only the machine that runs studies "
                "needs (training workers do not): pip install 'scaleprof[driver]'"
            )
        return args.func(args, console)
    except (ConfigError, UserError, StoreError, DestinationError) as err:
        print(f"error: {err}", file=sys.stderr)  # plain print: a path must never be wrapped mid-word
        return EXIT_USER_ERROR
    except StudyStopped as err:
        print(f"error: {err}", file=sys.stderr)
        if err.ray_gone and owns_process:
            _exit_leaving_ray(1)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was stored so far stays in the study directory", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:  # Ray's SIGTERM handler exits with the signal number
            raise
        print("terminated: what was stored so far stays in the study directory", file=sys.stderr)
        return 128 + signal.SIGTERM


def _exit_leaving_ray(code: int) -> NoReturn:
    """End the process now. With its GCS gone, Ray's own exit hook (`ray.shutdown`) waits on it for seconds
    (8 s measured) and then can crash the interpreter. The processes of a local Ray this one started end with
    it (Ray has them killed when their parent dies, or runs a reaper beside them where it cannot)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def program() -> NoReturn:
    """The `scaleprof` command."""
    sys.exit(main(owns_process=True))


if __name__ == "__main__":
    program()
