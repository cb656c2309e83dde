"""The fabric probe's sweep on a real two-rank gloo process group (spawned processes, no Ray), the link class,
and the `fabric` command's refusals (before Ray)."""

import json
import math
import traceback

import pandas as pd
import pytest

from scaleprof import cli
from scaleprof.analysis.fabric import COLLECTIVES, SWEEP_COLUMNS, fit_fabric
from scaleprof.execution.fabric_probe import PROBE_COLLECTIVES, link_class_of, sweep
from scaleprof.records import FABRIC_COLUMNS

from .gloo_ranks import run_ranks

SIZES = [4 * 2**10, 64 * 2**10, 2**20]  # 4 KiB, 64 KiB, 1 MiB


def _sweep_rank(rank: int, world: int, port: int, queue) -> None:
    """One gloo rank in a fresh process: the sweep's rows, or the error's traceback."""
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            queue.put((rank, sweep("gloo", "intra-node", SIZES, repeats=2, warmup=1, collectives=PROBE_COLLECTIVES)))
        finally:
            dist.destroy_process_group()
    except BaseException:
        queue.put((rank, traceback.format_exc()))


def gloo_sweep(world: int = 2) -> list:
    """Each rank's sweep, by rank."""
    return run_ranks(_sweep_rank, world)


def test_a_gloo_sweep_times_every_collective_and_size_the_same_on_both_ranks_and_fits():
    first, second = gloo_sweep()
    assert first == second  # the slowest rank's times, agreed by an all-reduce
    frame = pd.DataFrame(first)
    assert list(frame.columns) == SWEEP_COLUMNS
    assert len(frame) == len(PROBE_COLLECTIVES) * len(SIZES) * 2
    assert set(frame["world"]) == {2} and set(frame["backend"]) == {"gloo"} and set(frame["repeat"]) == {0, 1}
    for collective in PROBE_COLLECTIVES:
        assert sorted(set(frame.loc[frame["collective"] == collective, "bytes"])) == SIZES  # divisible by 2 x 4 B
    assert (frame["time_s"] > 0).all() and (frame["time_s"] < 10).all()
    (fit,) = fit_fabric(frame)
    assert (fit.backend, fit.link_class, fit.points, fit.worlds) == ("gloo", "intra-node", len(frame), (2,))
    if fit.valid:  # loopback timings on a busy machine are noisy: the structure, not a figure
        assert 0 < fit.bandwidth_bytes_per_s < math.inf and fit.alpha_s >= 0
    else:
        assert fit.invalid_reason


def test_link_class_and_names_agree_with_the_analysis():
    assert link_class_of(["n1", "n1"]) == "intra-node"
    assert link_class_of(["n1", "n2", "n1"]) == "inter-node"
    with pytest.raises(ValueError, match="node id"):
        link_class_of([])
    assert list(FABRIC_COLUMNS) == SWEEP_COLUMNS and set(PROBE_COLLECTIVES) == set(COLLECTIVES)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--workers", "1"], "--workers"),
        (["--gpus-per-worker", "0.5"], "--gpus-per-worker"),
        (["--cpus-per-worker", "0"], "--cpus-per-worker"),
        (["--strategy", "ANYWHERE"], "--strategy"),
    ],
)
def test_fabric_refuses_bad_arguments_naming_the_option(arguments, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fabric", *arguments])
    assert exit_.value.code == 2 and named in capsys.readouterr().err


def test_fabric_refuses_an_out_it_cannot_or_should_not_write_before_starting_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("scaleprof.execution.ray_session.connect_ray", lambda *a, **k: pytest.fail("Ray started"))
    existing = tmp_path / "fabric.parquet"
    existing.write_bytes(b"kept")
    for out, said in [
        (tmp_path / "missing" / "fabric.parquet", "no directory"),
        (existing, "--force"),
        (tmp_path / "fabric.csv", ".parquet"),
    ]:
        assert cli.main(["fabric", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out}") and said in err and "Traceback" not in err, err
    assert existing.read_bytes() == b"kept"


def test_fabric_writes_the_sweep_and_prints_latency_in_us_and_bus_bandwidth_in_gb_s(tmp_path, capsys, monkeypatch):
    """A sweep made from α = 10 µs per ring step and 2 GB/s: an all-reduce over 2 ranks takes 2α + S / 2 GB/s."""
    rows = [("all_reduce", "gloo", "inter-node", 2, size, r, 2 * 10e-6 + size / 2e9) for size in SIZES for r in (0, 1)]
    sweep = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    sweep.attrs.update(node_ids=["a", "b"], sweep_s=0.5)
    monkeypatch.setattr("scaleprof.execution.ray_session.connect_ray", lambda *a, **k: False)
    monkeypatch.setattr("scaleprof.execution.fabric_probe.probe_fabric", lambda *a, **k: sweep)
    out = tmp_path / "fabric.parquet"
    assert cli.main(["fabric", "--strategy", "STRICT_SPREAD", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    (fit,) = json.loads(printed.out)
    assert fit["alpha_us"] == pytest.approx(10) and fit["bus_bandwidth_gb_s"] == pytest.approx(2)
    assert (fit["link_class"], fit["points"], fit["worlds"], fit["valid"]) == ("inter-node", 6, [2], True)
    assert "inter-node (2 node(s))" in printed.err  # progress on stderr: stdout is the JSON alone
    pd.testing.assert_frame_equal(pd.read_parquet(out), sweep)
    assert cli.main(["fabric", "--out", str(out), "--force"]) == 0
    table = capsys.readouterr().out
    assert "10.0 (10.0 – 10.0)" in table and "2.000 (2.000 – 2.000)" in table
