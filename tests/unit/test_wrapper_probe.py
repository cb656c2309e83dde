"""The wrapper probe (session.measure_allreduce with one worker) on a real one-rank gloo process group (a spawned
process, no Ray), as Ray Train sets one up for a one-worker run: DDP's own cost per step is timed without
changing the model, a model DDP cannot wrap gives no figure and no error, and with no process group nothing
is measured. The analysis side turns the event into the physics model's `wrapper_s`."""

import math
import traceback

import pandas as pd
import torch

from scaleprof.analysis.model_inputs import measured_run, wrapper_columns

from .gloo_ranks import run_ranks
from .sessions import recording_session


def _one_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    from scaleprof.records import ProbeEvent

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.BatchNorm1d(256), torch.nn.Linear(256, 2))
            state = {name: value.detach().clone() for name, value in model.state_dict().items()}
            data = DataLoader(TensorDataset(torch.randn(256, 32), torch.arange(256) % 2), batch_size=32)
            loss = lambda m, batch: torch.nn.functional.cross_entropy(m(batch[0]), batch[1])
            session, events, _ = recording_session()
            session.measure_allreduce(model, data, loss)
            probes = [e.fields() for e in events if isinstance(e, ProbeEvent)]
            unchanged = all(torch.equal(state[name], value) for name, value in model.state_dict().items())
            loss(model, next(iter(data))).backward()  # the bare model trains on as before
            grads = all(p.grad is not None for p in model.parameters())

            class Unused(torch.nn.Module):  # a parameter no loss reaches: DDP raises on its second step
                def __init__(self) -> None:
                    super().__init__()
                    self.used, self.unused = torch.nn.Linear(32, 2), torch.nn.Linear(32, 2)

                def forward(self, x):
                    return self.used(x)

            other, refused, _ = recording_session()
            other.measure_allreduce(Unused(), data, loss)
            queue.put((rank, {"probes": probes, "unchanged": unchanged, "grads": grads, "refused": refused}))
        finally:
            dist.destroy_process_group()
    except BaseException:
        queue.put((rank, traceback.format_exc()))


def test_a_one_worker_run_times_ddps_own_cost_and_leaves_the_model_as_it_was():
    (result,) = run_ranks(_one_rank, 1)
    (probe,) = result["probes"]
    assert probe["bare_s"] > 0 and probe["wrapped_s"] > 0 and "allreduce_s" not in probe
    assert probe["wrapper_low_s"] <= probe["wrapper_high_s"]
    assert result["unchanged"] and result["grads"]  # weights and BatchNorm's statistics as trained; no hook left
    assert result["refused"] == []  # DDP refused the model with an unused parameter: no figure, no error

    columns = wrapper_columns(pd.DataFrame([probe]))
    assert columns["step_wrapper_s"] == max(probe["wrapped_s"] - probe["bare_s"], 0.0)
    assert columns["step_wrapper_s_low"] <= columns["step_wrapper_s"] <= columns["step_wrapper_s_high"]


def test_without_a_process_group_nothing_is_measured():
    from torch.utils.data import DataLoader, TensorDataset

    session, events, _ = recording_session()
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.arange(64) % 2), batch_size=16)
    session.measure_allreduce(torch.nn.Linear(4, 2), data, lambda m, b: m(b[0]).sum())
    assert events == []


def test_the_wrapper_cost_reaches_the_model_only_from_a_one_worker_run():
    assert wrapper_columns(pd.DataFrame({"allreduce_s": [0.01]})) == {}  # a sync probe's event: none
    row = {
        "status": "ok",
        "parallelism": "ddp",
        "inputs_reason": "",
        "workers": 1,
        "per_worker_batch": 32,
        "gradient_bytes": 4e6,
        "nodes_realized": 1,
        "hosts_realized": 1,
        "rank_step_sd_s": 0.0,
        **{f"step_{name}_s": 0.002 for name in ("data", "forward", "backward_compute", "optimizer", "other")},
        "step_wrapper_s": 0.0007,
        "step_wrapper_s_low": 0.0005,
        "step_wrapper_s_high": 0.0009,
    }
    measured = measured_run(row)
    assert not isinstance(measured, str) and measured.wrapper_s is not None
    assert (measured.wrapper_s.value, measured.wrapper_s.low, measured.wrapper_s.high) == (0.0007, 0.0005, 0.0009)
    older = measured_run({k: v for k, v in row.items() if not k.startswith("step_wrapper")})
    assert not isinstance(older, str) and older.wrapper_s is None and math.isfinite(older.forward_s.value)
