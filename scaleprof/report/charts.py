"""One function per chart. Each takes the study tables and returns an Altair chart (or None when
the study has nothing to show for it, e.g. no GPU run)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from scaleprof.analysis.cost import usd_per_million
from scaleprof.analysis.memory import worker_memory_peaks
from scaleprof.analysis.phases import WAIT_PHASE, WALL_PHASES
from scaleprof.records import RunKind, RunStatus

WIDTH, HEIGHT = 420, 260
TIMELINE_POINTS = 20_000  # all workers' utilisation samples in the report, together
# Sizes are bounded here (timelines are downsampled), so Altair's blanket 5,000-row guard is not needed.
alt.data_transformers.disable_max_rows()


def _ok(runs: pd.DataFrame) -> pd.DataFrame:
    """Fixed-split runs that finished (cross-validation folds repeat the reference placement)."""
    return runs[
        (runs["status"] == RunStatus.OK) & runs["throughput"].notna() & (runs["kind"] == RunKind.FIXED_SPLIT)
    ].copy()


def _workers_axis(frame: pd.DataFrame) -> alt.X:
    # Ticks at the measured worker counts only: there is no such thing as 1.5 workers.
    values = sorted(int(w) for w in frame["workers"].unique())
    return alt.X("workers:Q", title="workers", axis=alt.Axis(values=values, format="d"))


def _series(frame: pd.DataFrame) -> pd.Series:
    return frame["model"].astype(str) + " / " + frame["device"].astype(str)


def throughput_vs_workers(runs: pd.DataFrame, ledger: pd.DataFrame | None = None) -> alt.Chart | None:
    """Measured steady-state throughput per worker count, with the ideal linear line from 1 worker and, from
    the prediction ledger, what each method predicted for each multi-worker run from the smaller runs alone
    (drawn just right of the measured point, with its interval)."""
    ok = _ok(runs)
    if ok.empty:
        return None
    ok["series"] = _series(ok)
    measured = ok[["series", "workers", "placement", "throughput"]].assign(kind="measured")
    ideal = ok.dropna(subset=["baseline_throughput"]).groupby(["series", "workers"], as_index=False).first()
    ideal = ideal.assign(throughput=ideal["baseline_throughput"] * ideal["workers"], kind="ideal (linear)")
    data = pd.concat([measured, ideal[["series", "workers", "placement", "throughput", "kind"]]])
    base = alt.Chart(data).encode(
        x=_workers_axis(data),
        y=alt.Y("throughput:Q", title="throughput (samples/s, steady state; bars: 95% interval)"),
        color=alt.Color("series:N", title="model / device"),
        tooltip=["series", "placement", "workers", alt.Tooltip("throughput:Q", format=",.0f"), "kind"],
    )
    # The legend draws each kind as its line (solid, dashed): a line with points would show two equal dots
    kinds = alt.Scale(domain=["measured", "ideal (linear)"], range=[[1, 0], [6, 4]])
    legend = alt.Legend(symbolType="stroke", symbolStrokeWidth=2, symbolStrokeColor="gray", symbolSize=300)
    lines = base.mark_line().encode(strokeDash=alt.StrokeDash("kind:N", title="", scale=kinds, legend=legend))
    points = base.mark_point(filled=True).transform_filter(alt.datum.kind == "measured")
    chart = lines + points + _error_bars(ok, "throughput_low", "throughput_high", 1.0)
    predicted = _ledger_points(ledger)
    if predicted is not None:
        chart = chart + predicted
    return chart.properties(title="Throughput vs workers", width=WIDTH, height=HEIGHT)


# Where each method's prediction of a run sits, right of its measured point (workers + offset).
LEDGER_OFFSETS = {"physics": 0.08, "scaling law": 0.16}


def _ledger_points(ledger: pd.DataFrame | None) -> alt.Chart | None:
    """The ledger's predictions as hollow marks with their intervals (none when nothing was predicted)."""
    if ledger is None or ledger.empty:
        return None
    made = ledger[ledger["predicted"].notna()].copy()
    if made.empty:
        return None
    made["series"] = _series(made)
    made["at"] = made["workers"] + made["method"].map(LEDGER_OFFSETS).fillna(0.0)
    made["predicted by"] = made["method"] + " (from smaller runs)"
    tooltip = [
        "series",
        "placement",
        "predicted by",
        alt.Tooltip("predicted:Q", format=",.0f"),
        alt.Tooltip("low:Q", format=",.0f"),
        alt.Tooltip("high:Q", format=",.0f"),
        alt.Tooltip("error_pct:Q", format="+.1f", title="error (%)"),
    ]
    base = alt.Chart(made[["series", "placement", "at", "predicted by", "predicted", "low", "high", "error_pct"]])
    shape = alt.Shape("predicted by:N", title="", scale=alt.Scale(range=["diamond", "triangle-up"]))
    marks = base.mark_point(filled=False, size=70).encode(
        x=alt.X("at:Q"), y=alt.Y("predicted:Q"), color=alt.Color("series:N"), shape=shape, tooltip=tooltip
    )
    bars = (
        base.transform_filter("isValid(datum.low) && isValid(datum.high)")
        .mark_rule(strokeDash=[3, 2])
        .encode(x=alt.X("at:Q"), y=alt.Y("low:Q"), y2="high:Q", color=alt.Color("series:N"), tooltip=tooltip)
    )
    return marks + bars


def _error_bars(ok: pd.DataFrame, low: str, high: str, scale: float) -> alt.Chart:
    """Each run's 95% interval as a vertical bar (nothing where a run has none)."""
    bars = ok.dropna(subset=[low, high]) if low in ok and high in ok else ok.iloc[0:0]
    bars = bars.assign(
        low=bars.get(low, pd.Series(dtype=float)) * scale, high=bars.get(high, pd.Series(dtype=float)) * scale
    )
    return (
        alt.Chart(bars[["series", "workers", "placement", "low", "high"]])
        .mark_rule()
        .encode(
            x=alt.X("workers:Q"),
            y=alt.Y("low:Q"),
            y2="high:Q",
            color=alt.Color("series:N", title="model / device"),
            tooltip=[
                "series",
                "placement",
                alt.Tooltip("low:Q", format=",.3~f"),
                alt.Tooltip("high:Q", format=",.3~f"),
            ],
        )
    )


def efficiency_vs_workers(runs: pd.DataFrame) -> alt.Chart | None:
    """Scaling efficiency E(N) = X(N) / (N * X(1)), with the 100% line."""
    ok = _ok(runs).dropna(subset=["scaling_efficiency"])
    if ok.empty:
        return None
    ok["series"] = _series(ok)
    ok["efficiency_pct"] = 100 * ok["scaling_efficiency"]
    points = (
        alt.Chart(ok)
        .mark_line(point=True)
        .encode(
            x=_workers_axis(ok),
            y=alt.Y("efficiency_pct:Q", title="scaling efficiency (%)", scale=alt.Scale(domainMin=0)),
            color=alt.Color("series:N", title="model / device"),
            tooltip=["series", "placement", "workers", alt.Tooltip("efficiency_pct:Q", format=".1f")],
        )
    )
    bars = _error_bars(ok, "scaling_efficiency_low", "scaling_efficiency_high", 100.0)
    ideal = alt.Chart(pd.DataFrame({"y": [100]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q")
    return (points + bars + ideal).properties(
        title="Scaling efficiency vs workers (bars: 95% interval)", width=WIDTH, height=HEIGHT
    )


def step_times(steps: pd.DataFrame, runs: pd.DataFrame) -> alt.Chart | None:
    """Each run's step time over its steps (the slowest rank's, averaged over at most 200 stretches), the
    warm-up drawn apart from the steady window the figures come from, whose start is marked."""
    if steps.empty:
        return None
    fixed = set(runs.loc[runs["kind"] == RunKind.FIXED_SPLIT, "run_id"])
    data = steps[steps["run_id"].isin(fixed)].assign(
        phase=lambda f: f["steady"].map({True: "steady state", False: "warm-up"})
    )
    if data.empty:
        return None
    color = alt.Color("run_id:N", title="run", legend=alt.Legend(symbolLimit=30))
    base = alt.Chart(data).encode(
        x=alt.X("step:Q", title="step (per worker)"),
        y=alt.Y("step_ms:Q", title="step time (ms, slowest rank)", scale=alt.Scale(type="log")),
        color=color,
        tooltip=["run_id", "placement", "step", alt.Tooltip("step_ms:Q", format=".2f"), "phase"],
    )
    line = base.mark_line(opacity=0.7).encode(strokeDash=alt.StrokeDash("phase:N", title="", sort=["steady state"]))
    starts = data[data["steady"]].groupby("run_id", as_index=False).agg(step=("step", "min"))
    rules = (
        alt.Chart(starts)
        .mark_rule(strokeDash=[2, 2], opacity=0.6)
        .encode(
            x="step:Q",
            color=color,
            tooltip=["run_id", alt.Tooltip("step:Q", title="steady from step")],
        )
    )
    return (line + rules).properties(
        title="Step time per run (dashed: warm-up; rule: where the steady window starts)", width=WIDTH, height=HEIGHT
    )


def rank_lateness(lateness: pd.DataFrame, ranks: pd.DataFrame, most: int = 6) -> alt.Chart | None:
    """Rank x step: how late each rank arrived at the gradient exchange against the others' median
    (analysis/stragglers.py), for the multi-worker runs whose other ranks lost the most time waiting."""
    if lateness is None or lateness.empty or ranks is None or ranks.empty:
        return None
    worst = ranks.groupby("run_id")["others_lost_share"].max().sort_values(ascending=False).index[:most]
    data = lateness[lateness["run_id"].isin(worst)].assign(rank=lambda f: "rank " + f["rank"].astype(int).astype(str))
    top = float(data["late_ms"].abs().quantile(0.99))
    top = top if np.isfinite(top) and top > 0 else 1.0
    return (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X("step_index:O", title="step (means of consecutive steps)", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("rank:N", title=None),
            color=alt.Color(
                "late_ms:Q",
                title="late (ms)",
                scale=alt.Scale(scheme="redblue", reverse=True, domain=[-top, top], clamp=True),
            ),
            tooltip=["run_id", "rank", "step_index", alt.Tooltip("late_ms:Q", format=".2f")],
        )
        .properties(width=WIDTH, height=alt.Step(14))
        .facet(row=alt.Row("run_id:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")))
        .properties(title="Arrival at the exchange: how late each rank was (red: the others waited for it)")
    )


def epoch_time_by_placement(epochs: pd.DataFrame) -> alt.Chart | None:
    """Each epoch's time per run; the warm-up epoch is marked apart from steady state."""
    if epochs.empty:
        return None
    epochs = epochs[epochs["kind"] == RunKind.FIXED_SPLIT]
    data = epochs.assign(phase=epochs["steady"].map({True: "steady state", False: "warm-up"}))  # epochs: 1-based
    # A line per run over the epochs (a fixed size at 5 or 500 epochs, 2 or 200 runs); warm-up epochs are hollow.
    base = alt.Chart(data).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("epoch_time_s:Q", title="epoch time (s)", scale=alt.Scale(zero=False)),
        color=alt.Color("run_id:N", title="run", legend=alt.Legend(symbolLimit=30)),
        tooltip=["run_id", "placement", "epoch", alt.Tooltip("epoch_time_s:Q", format=".3f"), "phase"],
    )
    points = base.mark_point(size=30).encode(
        fill=alt.condition(alt.datum.phase == "steady state", alt.Color("run_id:N", legend=None), alt.value("white"))
    )
    return (base.mark_line(opacity=0.6) + points).properties(
        title="Epoch time per run (hollow: warm-up, outside steady state)", width=WIDTH, height=HEIGHT
    )


def memory_per_worker(timeline: pd.DataFrame) -> alt.Chart | None:
    """Peak resident memory of each worker process (and GPU memory used, where there was a GPU):
    analysis/memory.worker_memory_peaks."""
    data = worker_memory_peaks(timeline)
    if data.empty:
        return None
    data["worker"] = "rank " + data["rank"].astype(str)
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("mb:Q", title="peak memory (MiB)", axis=alt.Axis(format="~s")),
            y=alt.Y("run_id:N", title=None),
            yOffset=alt.YOffset("worker:N"),
            color=alt.Color("worker:N", title="worker"),
            column=alt.Column("memory:N", title=None),
            tooltip=["run_id", "worker", "memory", alt.Tooltip("mb:Q", format=",.0f")],
        )
        .properties(title="Peak memory per worker", width=WIDTH // 2 + 60)
    )


def downsample(timeline: pd.DataFrame, max_points: int = 200, total: int = TIMELINE_POINTS) -> pd.DataFrame:
    """At most `max_points` time bins per run and rank (means), and about `total` points in all, so
    long runs and many runs keep the report small."""
    if timeline.empty:
        return timeline
    series = timeline.groupby(["run_id", "rank"]).ngroups
    max_points = max(10, min(max_points, total // max(series, 1)))
    numeric = [
        c
        for c in ("cpu_pct", "cpu_util_pct", "rss_mb", "gpu_util_pct", "gpu_mem_used_mb", "gpu_power_w")
        if c in timeline
    ]
    frames = []
    for (run_id, rank), group in timeline.groupby(["run_id", "rank"], sort=False):
        if len(group) <= max_points:
            frames.append(group)
            continue
        bins = pd.cut(group["t_s"], max_points, labels=False)
        binned = group.groupby(bins)[["t_s", *numeric]].mean().assign(run_id=run_id, rank=rank)
        frames.append(binned.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


MAX_FACETS = 8  # above this many runs a panel per run is too tall to read: summarise per run instead


def utilisation_by_run(long: pd.DataFrame) -> alt.Chart:
    """Many runs: each run's mean utilisation over its workers and samples, with its peak as a tick."""
    per_run = long.groupby(["run_id", "metric"], as_index=False)["pct"].agg(mean="mean", peak="max")
    bars = (
        alt.Chart(per_run)
        .mark_bar()
        .encode(
            x=alt.X("mean:Q", title="utilisation (%): mean over workers and samples; tick: peak"),
            y=alt.Y("run_id:N", title=None),
            yOffset=alt.YOffset("metric:N"),
            color=alt.Color("metric:N", title=""),
            tooltip=["run_id", "metric", alt.Tooltip("mean:Q", format=".0f"), alt.Tooltip("peak:Q", format=".0f")],
        )
    )
    ticks = alt.Chart(per_run).mark_tick(color="black").encode(x="peak:Q", y="run_id:N", yOffset="metric:N")
    return (bars + ticks).properties(title="Utilisation per run", width=WIDTH, height=alt.Step(12))


# The utilisation chart's series, named as the runs table's columns mean them.
UTILISATION = {"cpu_util_pct": "CPU (% of the worker's CPUs)", "gpu_util_pct": "GPU (%)"}


def utilisation_over_time(timeline: pd.DataFrame) -> alt.Chart | None:
    """CPU utilisation (percent of the CPUs each worker was given, as in the runs table) and GPU utilisation
    of every worker over each run."""
    if timeline.empty or "cpu_util_pct" not in timeline:
        return None
    timeline = downsample(timeline)
    value_vars = [c for c in UTILISATION if c in timeline]
    long = timeline.melt(
        id_vars=["run_id", "rank", "t_s"], value_vars=value_vars, var_name="metric", value_name="pct"
    ).dropna(subset=["pct"])
    long["metric"] = long["metric"].map(UTILISATION)
    long["worker"] = "rank " + long["rank"].astype(str)
    if long["run_id"].nunique() > MAX_FACETS:  # many runs: one bar per run, not a panel per run
        return utilisation_by_run(long)
    return (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("t_s:Q", title="seconds since the run's first sample"),
            y=alt.Y("pct:Q", title="utilisation (%)"),
            color=alt.Color("worker:N", title="worker"),
            strokeDash=alt.StrokeDash("metric:N", title=""),
            tooltip=[
                "run_id",
                "worker",
                "metric",
                alt.Tooltip("t_s:Q", format=".1f"),
                alt.Tooltip("pct:Q", format=".0f"),
            ],
        )
        .properties(width=WIDTH, height=120)
        .facet(row=alt.Row("run_id:N", title=None))
        .properties(title="Utilisation over time per worker")
    )


def scaling_law(runs: pd.DataFrame, curves: pd.DataFrame) -> alt.Chart | None:
    """Measured throughput and the fitted scaling law, extrapolated with its 95% band."""
    ok = _ok(runs)
    if curves.empty or ok.empty:
        return None
    ok["series"] = _series(ok)
    curves = curves.assign(series=_series(curves))
    x = alt.X("workers:Q", title="workers", scale=alt.Scale(type="log", base=2), axis=alt.Axis(format="d"))
    banded = curves.dropna(subset=["low", "high"])
    band = (
        alt.Chart(banded)
        .mark_area(opacity=0.2)
        .encode(x=x, y="low:Q", y2="high:Q", color=alt.Color("series:N", title="model / device"))
    )
    line = (
        alt.Chart(curves)
        .mark_line(strokeDash=[5, 3])
        .encode(
            x=x,
            y=alt.Y("throughput:Q", title="throughput (samples/s)"),
            color=alt.Color("series:N", title="model / device"),
            tooltip=["series", "workers", alt.Tooltip("throughput:Q", format=",.0f"), "law"],
        )
    )
    points = (
        alt.Chart(ok)
        .mark_point(filled=True, size=70)
        .encode(
            x=x,
            y="throughput:Q",
            color="series:N",
            tooltip=["run_id", "workers", alt.Tooltip("throughput:Q", format=",.0f")],
        )
    )
    # An exact fit (as many points as parameters) has no band: an empty layer would only make Vega warn.
    layers = (band + line + points) if not banded.empty else (line + points)
    title = "Scaling law: measured (points), fitted and extrapolated (dashed" + (
        ", 95% band)" if not banded.empty else ")"
    )
    return layers.properties(title=title, width=WIDTH, height=HEIGHT)


PHASES = {
    "step_data_s": "data loading",
    "step_forward_s": "forward",
    "step_backward_compute_s": "backward compute",
    "step_allreduce_s": "gradient all-reduce",
    "step_backward_unsplit_s": "backward incl. all-reduce (not probed)",
    "step_optimizer_s": "optimizer",
    "step_other_s": "other",
}


def step_breakdown(runs: pd.DataFrame) -> alt.Chart | None:
    """Where a training step's time goes, per run: communication grows with the workers."""
    ok = _ok(runs)
    columns = [c for c in PHASES if c in ok]
    if ok.empty or not columns or ok[columns].isna().all().all():
        return None
    long = ok.melt(id_vars=["run_id", "placement", "workers"], value_vars=columns, var_name="phase", value_name="s")
    long["ms"] = 1000 * long["s"]
    long["phase"] = long["phase"].map(PHASES)
    return (
        alt.Chart(long.dropna(subset=["ms"]))
        .mark_bar()
        .encode(
            x=alt.X("ms:Q", title="mean time per step (ms, steady state)"),
            y=alt.Y("run_id:N", title=None),
            # below the bars, labels whole: beside them the legend and long run ids outgrow the report's column
            color=alt.Color(
                "phase:N",
                title="phase",
                sort=list(PHASES.values()),
                legend=alt.Legend(orient="bottom", direction="vertical", columns=2, labelLimit=0),
            ),
            order=alt.Order("phase_order:Q"),
            tooltip=["run_id", "phase", alt.Tooltip("ms:Q", format=".2f")],
        )
        .transform_calculate(phase_order=f"indexof({list(PHASES.values())}, datum.phase)")
        .properties(title="Step time breakdown", width=WIDTH)
    )


def wall_time_phases(runs: pd.DataFrame) -> alt.Chart | None:
    """Where each run's wall time went: the fixed cost of starting workers beside the training, after
    the wait for its resources (shown only when some run waited)."""
    phases = dict(WALL_PHASES)
    done = runs[runs["status"] == RunStatus.OK].dropna(subset=list(phases))
    if done.empty:
        return None
    if "wait_s" in done and done["wait_s"].fillna(0).max() >= 0.5:
        phases = {**WAIT_PHASE, **phases}
        done = done.assign(wait_s=done["wait_s"].fillna(0))
    columns = list(phases)
    axis = "seconds of the run's wall time"
    if "wait_s" in phases:
        axis = "seconds: the wait for resources, then the run's wall time"
    long = done.melt(id_vars=["run_id"], value_vars=columns, var_name="phase", value_name="s")
    long["phase"] = long["phase"].map(phases)
    order = list(phases.values())
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("s:Q", title=axis),
            y=alt.Y("run_id:N", title=None),
            color=alt.Color("phase:N", title="phase", sort=order),
            order=alt.Order("phase_order:Q"),
            tooltip=["run_id", "phase", alt.Tooltip("s:Q", format=".2f")],
        )
        .transform_calculate(phase_order=f"indexof({order}, datum.phase)")
        .properties(title="Where each run's wall time went", width=WIDTH)
    )


def cost_vs_throughput(runs: pd.DataFrame, marks: dict[str, str] | None = None) -> alt.Chart | None:
    """Steady-state cost per million samples against throughput; `marks` labels runs by run id (the
    findings' cheapest and fastest: analysis decides which they are)."""
    ok = _ok(runs).dropna(subset=["cost_per_sample_usd"]) if "cost_per_sample_usd" in runs else pd.DataFrame()
    if ok.empty:
        return None
    ok["usd_per_1m_samples"] = usd_per_million(ok["cost_per_sample_usd"])
    ok["mark"] = [(marks or {}).get(run, "") for run in ok["run_id"]]
    ok["label"] = ok["placement"] + (" (" + ok["mark"] + ")").where(ok["mark"] != "", "")
    base = alt.Chart(ok).encode(
        x=alt.X("throughput:Q", title="throughput (samples/s, steady state)"),
        y=alt.Y("usd_per_1m_samples:Q", title="cost per 1M samples (USD, steady state)"),
        color=alt.Color("model:N", title="model"),
        tooltip=[
            "run_id",
            "placement",
            "node_type",
            alt.Tooltip("throughput:Q", format=",.0f"),
            alt.Tooltip("usd_per_1m_samples:Q", format=".4f"),
            "mark",
        ],
    )
    points = base.mark_point(filled=True, size=80)
    labels = base.mark_text(align="left", dx=7, dy=-6).encode(text="label:N")
    return (points + labels).properties(title="Cost vs throughput", width=WIDTH, height=HEIGHT)


def throughput_vs_batch(runs: pd.DataFrame) -> alt.Chart | None:
    """Throughput and memory per rank against the per-worker batch, one line per placement, one column
    per model and setting: the knee is where a larger batch stops paying."""
    ok = _ok(runs)
    if ok.empty or ok["per_worker_batch"].nunique() < 2:
        return None
    ok["memory (MiB per rank)"] = ok["mem_peak_mb"]
    long = ok.melt(
        id_vars=["run_id", "batch_series", "placement", "per_worker_batch"],
        value_vars=["throughput", "memory (MiB per rank)"],
        var_name="metric",
        value_name="value",
    ).dropna(subset=["value"])
    long["metric"] = long["metric"].replace({"throughput": "throughput (samples/s)"})
    batches = sorted(int(b) for b in ok["per_worker_batch"].unique())
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "per_worker_batch:Q",
                title="batch per worker",
                scale=alt.Scale(type="log", base=2),
                axis=alt.Axis(values=batches, format="d"),
            ),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("placement:N", title="placement"),
            tooltip=["run_id", "placement", "per_worker_batch", "metric", alt.Tooltip("value:Q", format=",.1f")],
        )
        .properties(width=WIDTH // 2, height=160)
        .facet(row=alt.Row("metric:N", title=None), column=alt.Column("batch_series:N", title=None))
        .resolve_scale(y="independent")
        .properties(title="Throughput and memory vs batch size")
    )


def memory_vs_throughput(runs: pd.DataFrame) -> alt.Chart | None:
    """Each run's model state per rank (parameters, gradients, optimizer state: what FSDP shards) against
    its throughput: the memory sharding saves beside what it costs in speed. Without the state (a loop
    that steps its optimizer itself), the peak memory per rank."""
    ok = _ok(runs)
    column = "state_mem_mb" if "state_mem_mb" in ok and ok["state_mem_mb"].notna().any() else "mem_peak_mb"
    title = "model state per rank (MiB)" if column == "state_mem_mb" else "peak memory per rank (MiB)"
    ok = ok.dropna(subset=[column]) if column in ok else ok.iloc[0:0]
    if ok.empty or ok["model"].nunique() < 2:
        return None
    return (
        alt.Chart(ok)
        .mark_point(filled=True, size=80)
        .encode(
            x=alt.X(f"{column}:Q", title=title, scale=alt.Scale(zero=False)),
            y=alt.Y("throughput:Q", title="throughput (samples/s, steady state)"),
            color=alt.Color("model:N", title="model and settings"),
            shape=alt.Shape("placement:N", title="placement"),
            tooltip=[
                "run_id",
                "placement",
                alt.Tooltip(f"{column}:Q", format=",.1f"),
                alt.Tooltip("throughput:Q", format=",.0f"),
            ],
        )
        .properties(title="Memory per rank vs throughput", width=WIDTH, height=HEIGHT)
    )


def learning_curves(epochs: pd.DataFrame) -> alt.Chart | None:
    """Train loss and validation accuracy (perplexity for a language model) per epoch, one line per run,
    one panel per model."""
    if epochs.empty:
        return None
    fixed = epochs[epochs["kind"] == RunKind.FIXED_SPLIT] if "kind" in epochs else epochs
    language = "val_perplexity" in fixed and fixed["val_perplexity"].notna().any()
    long = fixed.melt(
        id_vars=["run_id", "model", "placement", "epoch"],
        value_vars=["train_loss", "val_perplexity" if language else "val_accuracy"],
        var_name="metric",
        value_name="value",
    ).dropna(subset=["value"])
    if long.empty:
        return None
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("placement:N", title="placement"),
            detail="run_id:N",
            tooltip=["run_id", "placement", "epoch", "metric", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(width=WIDTH // 2 + 40, height=180)
        .facet(row=alt.Row("metric:N", title=None), column=alt.Column("model:N", title="model"))
        .resolve_scale(y="independent")
        .properties(title="Learning curves: did scaling change what was learned?")
    )


def confusion_matrix(quality: pd.DataFrame, run_id: str) -> alt.Chart | None:
    """The confusion matrix (counts) of one run's held-out predictions."""
    rows = quality[quality["run_id"] == run_id] if not quality.empty else quality
    if rows.empty:
        return None
    cells = [
        {"true": int(r["class"]), "predicted": j, "count": int(c)}
        for _, r in rows.iterrows()
        for j, c in enumerate(r["confusion_row"])
    ]
    data = pd.DataFrame(cells)
    base = alt.Chart(data).encode(
        x=alt.X("predicted:O", title="predicted class"), y=alt.Y("true:O", title="true class")
    )
    heat = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["true", "predicted", "count"],
    )
    text = base.mark_text(fontSize=10).encode(
        text="count:Q",
        color=alt.condition(alt.datum.count > data["count"].max() / 2, alt.value("white"), alt.value("black")),
    )
    return (heat + text).properties(title=f"Confusion matrix of the best run ({run_id})", width=260, height=260)


def _inference_ok(inference: pd.DataFrame) -> pd.DataFrame:
    if inference is None or inference.empty or "latency_p50_s" not in inference:
        return pd.DataFrame()
    ok = inference[inference["status"] == RunStatus.OK].copy()
    ok["series"] = _series(ok)
    return ok


def inference_latency(inference: pd.DataFrame) -> alt.Chart | None:
    """Latency percentiles against batch size, per model and device kind."""
    ok = _inference_ok(inference)
    if ok.empty:
        return None
    long = ok.melt(
        id_vars=["series", "batch_size"],
        value_vars=["latency_p50_s", "latency_p95_s", "latency_p99_s"],
        var_name="percentile",
        value_name="s",
    )
    long["ms"] = 1000 * long["s"]
    long["percentile"] = long["percentile"].str.extract(r"(p\d+)")[0]
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("batch_size:Q", title="batch size", scale=alt.Scale(type="log", base=2)),
            y=alt.Y("ms:Q", title="latency per batch (ms)", scale=alt.Scale(type="log")),
            color=alt.Color("series:N", title="model / device"),
            strokeDash=alt.StrokeDash("percentile:N", title="percentile"),
            tooltip=["series", "batch_size", "percentile", alt.Tooltip("ms:Q", format=".3f")],
        )
        .properties(title="Inference latency vs batch size", width=WIDTH, height=HEIGHT)
    )


def inference_throughput(inference: pd.DataFrame) -> alt.Chart | None:
    ok = _inference_ok(inference)
    if ok.empty:
        return None
    return (
        alt.Chart(ok)
        .mark_line(point=True)
        .encode(
            x=alt.X("batch_size:Q", title="batch size", scale=alt.Scale(type="log", base=2)),
            y=alt.Y("throughput:Q", title="inference throughput (samples/s)"),
            color=alt.Color("series:N", title="model / device"),
            tooltip=["series", "batch_size", alt.Tooltip("throughput:Q", format=",.0f")],
        )
        .properties(title="Inference throughput vs batch size", width=WIDTH, height=HEIGHT)
    )


def latency_throughput_tradeoff(inference: pd.DataFrame) -> alt.Chart | None:
    """Each batch size as a point: what throughput costs in p99 latency."""
    ok = _inference_ok(inference)
    if ok.empty:
        return None
    ok["p99_ms"] = 1000 * ok["latency_p99_s"]
    base = alt.Chart(ok).encode(
        x=alt.X("p99_ms:Q", title="p99 latency per batch (ms)", scale=alt.Scale(type="log")),
        y=alt.Y("throughput:Q", title="throughput (samples/s)"),
        color=alt.Color("series:N", title="model / device"),
        tooltip=[
            "series",
            "batch_size",
            alt.Tooltip("p99_ms:Q", format=".3f"),
            alt.Tooltip("throughput:Q", format=",.0f"),
        ],
    )
    labels = base.mark_text(align="left", dx=6, dy=-6).encode(text="batch_size:Q")
    return (base.mark_line(point=True) + labels).properties(
        title="Latency / throughput trade-off (labels: batch size)", width=WIDTH, height=HEIGHT
    )


def all_charts(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    timeline: pd.DataFrame,
    quality: pd.DataFrame | None = None,
    best_run: str | None = None,
    law_curves: pd.DataFrame | None = None,
    inference: pd.DataFrame | None = None,
    steps: pd.DataFrame | None = None,
    ledger: pd.DataFrame | None = None,
    cost_marks: dict[str, str] | None = None,
    lateness: pd.DataFrame | None = None,
    ranks: pd.DataFrame | None = None,
) -> dict[str, alt.TopLevelMixin]:
    """The report's charts by file stem, in reading order; charts with no data are left out."""
    charts = {
        "throughput": throughput_vs_workers(runs, ledger),
        "scaling_efficiency": efficiency_vs_workers(runs),
        "scaling_law": scaling_law(runs, law_curves) if law_curves is not None else None,
        "step_breakdown": step_breakdown(runs),
        "step_times": step_times(steps, runs) if steps is not None else None,
        "rank_lateness": rank_lateness(lateness, ranks) if lateness is not None and ranks is not None else None,
        "wall_time": wall_time_phases(runs),
        "batch_size": throughput_vs_batch(runs),
        "memory_vs_throughput": memory_vs_throughput(runs),
        "epoch_time": epoch_time_by_placement(epochs),
        "memory": memory_per_worker(timeline),
        "utilisation": utilisation_over_time(timeline),
        "cost": cost_vs_throughput(runs, cost_marks),
        "learning_curves": learning_curves(epochs),
        "confusion_matrix": confusion_matrix(quality, best_run) if quality is not None and best_run else None,
        "inference_latency": inference_latency(inference) if inference is not None else None,
        "inference_throughput": inference_throughput(inference) if inference is not None else None,
        "inference_tradeoff": latency_throughput_tradeoff(inference) if inference is not None else None,
    }
    return {name: chart for name, chart in charts.items() if chart is not None}
