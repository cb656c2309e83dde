"""The sync probe's host-sharing part on a real three-rank gloo process group (spawned processes, no Ray):
ranks 0 and 1 say they share machine "a", rank 2 is alone on "b". The two that share time their compute
alone and together; the lone rank keeps the barriers and reports no ratio."""

import traceback

from .gloo_ranks import run_ranks
from .sessions import recording_session

HOSTS = ["a", "a", "b"]


def _probe_rank(rank: int, world: int, port: int, queue) -> None:
    """One gloo rank in a fresh process: the ProbeEvent's fields, or the error's traceback."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, TensorDataset

    from scaleprof import session as session_module
    from scaleprof.records import ProbeEvent

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            session_module.socket.gethostname = lambda: HOSTS[rank]  # this process only
            torch.manual_seed(0)
            # BatchNorm: DDP broadcasts its buffers at every forward, a collective the ranks timing alone must not
            # enter (it hung before the probe timed the plain model)
            layers = (torch.nn.Linear(32, 64), torch.nn.BatchNorm1d(64), torch.nn.Linear(64, 2))
            model = DistributedDataParallel(torch.nn.Sequential(*layers))
            before = [p.detach().clone() for p in model.parameters()]
            s, events, _ = recording_session(rank, world)
            data = DataLoader(TensorDataset(torch.randn(256, 32), torch.arange(256) % 2), batch_size=32)
            loss = lambda m, batch: torch.nn.functional.cross_entropy(m(batch[0]), batch[1])
            s.measure_allreduce(model, data, loss)
            (probe,) = [e for e in events if isinstance(e, ProbeEvent)]
            unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
            queue.put((rank, {**probe.fields(), "weights_unchanged": unchanged}))
        finally:
            dist.destroy_process_group()
    except BaseException:
        queue.put((rank, traceback.format_exc()))


def test_ranks_that_share_a_machine_time_their_compute_alone_and_together_and_a_lone_rank_reports_none():
    results = run_ranks(_probe_rank, len(HOSTS))
    for rank in (0, 1):
        shared = results[rank]
        assert shared["host_ranks"] == 2 and shared["compute_alone_s"] > 0 and shared["compute_together_s"] > 0
    lone = results[2]
    assert lone.get("host_ranks") is None and lone.get("compute_alone_s") is None and lone["allreduce_s"] >= 0
    assert all(result["weights_unchanged"] for result in results)  # the probe trains nothing
