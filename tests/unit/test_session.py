"""The worker-side session API on its own (no Ray): what a loop's calls turn into, event by event."""

import time
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from scaleprof import session
from scaleprof.records import EpochEvent, EvalEvent, Event, StepEvent
from scaleprof.worker.session import SessionError, StepClock, batch_size_of

from .sessions import recording_session


def make_session(epochs=2, **kwargs):
    return recording_session(epochs=epochs, **kwargs)


def loader(n=50, batch=16):
    return DataLoader(TensorDataset(torch.randn(n, 3), torch.arange(n) % 2), batch_size=batch)


def test_steps_and_epochs_count_what_the_loop_ran():
    s, events, _ = make_session(epochs=3)
    ran = []
    for epoch in s.epochs():
        for x, _ in s.steps(loader(50, 16)):
            ran.append((epoch, len(x)))
            s.report_loss(torch.tensor(2.0))
        s.report_epoch(val_accuracy=0.5)
    steps = [e for e in events if isinstance(e, StepEvent)]
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [(e.epoch, e.samples) for e in steps] == ran  # 16, 16, 16, 2 per epoch
    assert [e.step for e in steps[:4]] == [0, 1, 2, 3]
    assert [(e.epoch, e.steps, e.samples) for e in epochs] == [(0, 4, 50), (1, 4, 50), (2, 4, 50)]
    assert all(e.train_loss == 2.0 and e.val_accuracy == 0.5 for e in epochs)
    assert all(e.forward_s is None for e in steps)  # no marks, no breakdown: nothing is made up


def test_epoch_time_ends_at_the_last_step_so_validation_is_outside_it():
    s, events, _ = make_session(epochs=1)
    for _ in s.epochs():
        for _ in s.steps(loader(32, 16)):
            time.sleep(0.02)
        time.sleep(0.3)  # "validation" after the last step
    epoch = next(e for e in events if isinstance(e, EpochEvent))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert 0.04 <= epoch.epoch_time_s < 0.25
    assert epoch.epoch_time_s == pytest.approx(sum(e.step_s for e in steps), rel=0.05, abs=0.005)
    assert all(e.step_s >= e.data_s + e.compute_s - 1e-9 for e in steps)


def test_data_wait_is_the_time_next_took():
    class SlowLoader:
        def __iter__(self):
            for _ in range(3):
                time.sleep(0.05)  # a slow input pipeline
                yield torch.zeros(4, 2)

    s, events, _ = make_session(epochs=1)
    for _ in s.epochs():
        for _ in s.steps(SlowLoader()):
            pass
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.samples for e in steps] == [4, 4, 4]
    assert all(e.data_s >= 0.045 and e.compute_s < 0.02 for e in steps)


def test_marks_split_the_step_into_phases():
    s, events, _ = make_session(epochs=1)
    for _ in s.epochs():
        for _ in s.steps(loader(16, 16)):
            time.sleep(0.01)
            s.mark("forward")
            time.sleep(0.02)
            s.mark("backward")
            s.mark("optimizer")
    step = next(e for e in events if isinstance(e, StepEvent))
    assert step.forward_s is not None and step.backward_s is not None and step.optimizer_s is not None
    assert 0.009 < step.forward_s < step.backward_s and step.optimizer_s < 0.005
    with pytest.raises(SessionError, match="the phases are"):
        s.mark("loss")


def test_breaking_out_early_still_records_the_step_and_epoch_that_ran():
    s, events, _ = make_session(epochs=5)
    for epoch in s.epochs():
        for i, _ in enumerate(s.steps(loader(64, 16))):
            if i == 1:
                break
        if epoch == 1:
            break
    s.finish()  # the loop returned: what it broke out of had run
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert [(e.epoch, e.steps, e.samples) for e in epochs] == [(0, 2, 32), (1, 2, 32)]
    assert [e.step for e in events if isinstance(e, StepEvent)] == [0, 1, 0, 1]


def test_a_step_and_epoch_cut_short_by_an_exception_are_not_recorded():
    s, events, _ = make_session(epochs=3)

    def loop():
        for epoch in s.epochs():
            for i, _ in enumerate(s.steps(loader(64, 16))):
                if epoch == 1 and i == 2:
                    raise ValueError("the loop failed")

    with pytest.raises(ValueError):
        loop()
    s.abort()
    epochs = [e.epoch for e in events if isinstance(e, EpochEvent)]
    steps = [(e.epoch, e.step) for e in events if isinstance(e, StepEvent)]
    assert epochs == [0] and steps == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]


def test_predictions_are_stored_with_the_held_out_indices_on_rank_0_only():
    s, events, stored = make_session(held_name="test", held_index=np.array([7, 9, 11]))
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    held = s.report_predictions(torch.tensor([0, 1, 1]), torch.from_numpy(proba))
    assert held["accuracy"] == pytest.approx(2 / 3)
    assert stored[0]["sample_index"].tolist() == [7, 9, 11] and stored[0]["split"] == "test"
    assert isinstance(events[-1], EvalEvent) and events[-1].samples == 3
    other, events1, stored1 = make_session()
    other.rank = 1
    assert other.report_predictions([0], [[1.0, 0.0]]) is None and not stored1 and not events1
    with pytest.raises(SessionError, match="proba must be"):
        s.report_predictions([0, 1], [[1.0, 0.0]])


def test_batch_sizes_from_tensors_tuples_and_dicts():
    assert batch_size_of(torch.zeros(5, 2)) == 5
    assert batch_size_of((torch.zeros(3, 2), torch.zeros(3))) == 3
    assert batch_size_of({"input_ids": torch.zeros(7, 16), "labels": torch.zeros(7)}) == 7
    with pytest.raises(SessionError, match="samples="):
        batch_size_of("text")


def test_outside_a_run_every_call_says_so():
    with pytest.raises(SessionError, match="inside a training loop that scaleprof runs"):
        session.epochs()
    s, _, _ = make_session()
    with pytest.raises(SessionError, match="inside `for epoch in session.epochs"):
        next(iter(s.steps(loader())))
    with pytest.raises(SessionError, match="has no data"):
        s.datasets()


def test_gradient_accumulation_steps_every_k_micro_batches_and_at_the_end_of_the_epoch():
    from scaleprof.config import TrainSpec

    torch.manual_seed(0)
    s, events, _ = make_session(epochs=1, train=TrainSpec(grad_accumulation=2, lr=1.0, momentum=0))
    model = torch.nn.Linear(3, 1, bias=False)
    plain = torch.nn.Linear(3, 1, bias=False)
    plain.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batches = list(loader(50, 10))  # 5 micro-batches: steps after the 2nd, the 4th and the 5th (the last)
    stepped = []
    for _ in s.epochs():
        for x, y in s.steps(batches):
            with s.autocast():
                loss = (model(x).squeeze(1) - y).pow(2).mean()
            s.backward(loss)
            stepped.append(s.optimizer_step(optimizer))
    assert stepped == [False, True, False, True, True]
    # by hand: each optimizer step follows the mean of its micro-batches' gradients (loss / k each)
    for group, k in (([0, 1], 2), ([2, 3], 2), ([4], 1)):  # the last, short group: its own mean
        plain.zero_grad()
        for i in group:
            x, y = batches[i]
            ((plain(x).squeeze(1) - y).pow(2).mean() / k).backward()
        assert plain.weight.grad is not None
        with torch.no_grad():
            plain.weight -= plain.weight.grad
    torch.testing.assert_close(model.weight, plain.weight)
    assert sum(isinstance(e, StepEvent) for e in events) == 5  # a step event per micro-batch


def test_bf16_autocast_on_cpu_and_model_state_counted_tensor_by_tensor():
    from scaleprof.config import OptimizerSpec, TrainSpec
    from scaleprof.worker.training import make_optimizer, model_state_mb

    s, _, _ = make_session(epochs=1, train=TrainSpec(precision="bf16"))
    model = torch.nn.Linear(64, 32)
    with s.autocast():
        assert model(torch.randn(2, 64)).dtype == torch.bfloat16
    optimizer = make_optimizer(model.parameters(), TrainSpec(optimizer=OptimizerSpec(name="adamw")))
    assert isinstance(optimizer, torch.optim.AdamW)
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    parameters = 64 * 32 + 32
    # fp32 weights, gradients, AdamW's two moments: 4 copies of every parameter, 4 bytes each
    assert model_state_mb([model], optimizer) == pytest.approx(4 * 4 * parameters / 2**20)


def test_accumulation_over_a_loader_without_a_length_drops_an_unfinished_group_and_restores_sync():
    from scaleprof.config import TrainSpec

    class Replica(torch.nn.Linear):  # stands in for DDP: the flag its no_sync() context sets
        require_backward_grad_sync = True

    s, _, _ = make_session(epochs=1, train=TrainSpec(grad_accumulation=4))
    model = Replica(3, 1)
    s._synced.append(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    synced, stepped = [], []
    stream: DataLoader[tuple[torch.Tensor, float]] = torch.utils.data.DataLoader(
        [(torch.randn(3), 0.0) for _ in range(6)],  # type: ignore[arg-type]  # any list is a map-style data set
        batch_size=1,
    )  # a generator would do too: no boundary is known before the end
    for _ in s.epochs():
        for x, _ in s.steps(iter(list(stream))):
            synced.append(model.require_backward_grad_sync)
            s.backward(model(x).sum())
            stepped.append(s.optimizer_step(optimizer))
    assert synced == [False, False, False, True, False, False]  # no length: only every 4th is known to end a step
    assert stepped == [False, False, False, True, False, False]
    assert model.require_backward_grad_sync and model.weight.grad is None  # sync back on; the 2 left over dropped


def test_the_last_short_group_of_an_epoch_is_averaged_over_its_own_micro_batches():
    from scaleprof.config import TrainSpec

    s, _, _ = make_session(epochs=1, train=TrainSpec(grad_accumulation=4))
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    grads = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: look at the gradients only
    batches = [(torch.ones(1, 1), torch.zeros(1))] * 6  # 6 = a group of 4, then a group of 2
    for _ in s.epochs():
        for x, _ in s.steps(batches):
            s.backward(model(x).sum())  # d/dw = 1 per micro-batch
            if s._boundary:
                assert model.weight.grad is not None
                grads.append(float(model.weight.grad))
            s.optimizer_step(optimizer)
    assert grads == [pytest.approx(1.0), pytest.approx(1.0)]  # means over 4 and over 2, not 2/4


def test_fsdp_shards_the_outermost_module_lists_only():
    from torch import nn

    from scaleprof.worker.training import _blocks

    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))  # nested: stays in its block

    model = nn.Sequential(nn.Embedding(5, 2), nn.ModuleList(Expert() for _ in range(2)), nn.Linear(2, 5))
    assert [type(b).__name__ for b in _blocks(model)] == ["Expert", "Expert"]


def test_steps_per_epoch_cuts_a_long_loader_and_passes_over_a_short_one_again():
    from scaleprof.config import TrainSpec

    for per_epoch, accumulation in ((3, 1), (10, 1), (5, 2)):
        s, events, _ = make_session(
            epochs=2, train=TrainSpec(steps_per_epoch=per_epoch, grad_accumulation=accumulation)
        )
        seen = []
        for _ in s.epochs():
            for x, _ in s.steps(loader(50, 16)):  # 4 batches a pass: 16, 16, 16, 2
                seen.append(len(x))
        epochs = [e for e in events if isinstance(e, EpochEvent)]
        micro = per_epoch * accumulation
        assert [e.steps for e in epochs] == [micro, micro]  # every placement measures the same number of steps
        assert seen[:micro] == ([16, 16, 16, 2] * 5)[:micro]  # passes in order, the short last batch included
        assert (
            session.steps_in_epoch(loader(50, 16), TrainSpec(steps_per_epoch=per_epoch, grad_accumulation=accumulation))
            == micro
        )


def test_steps_per_epoch_on_an_empty_loader_ends_instead_of_spinning():
    from scaleprof.config import TrainSpec

    s, events, _ = make_session(epochs=1, train=TrainSpec(steps_per_epoch=5))
    for _ in s.epochs():
        for _ in s.steps([]):
            pass
    assert [e.steps for e in events if isinstance(e, EpochEvent)] == [0]


class FakeDeviceClock(StepClock):
    """A stand-in for CUDA events where there is no GPU (kept thin: the real StepClock is the same four
    methods over torch.cuda.Event): marks carry a device time and complete when the test says so."""

    cuda = True

    def __init__(self):
        self.now, self.marks, self.waits = 0.0, [], 0

    def mark(self):
        m = {"t": self.now, "done": False}
        self.marks.append(m)
        return m

    def seconds(self, start, end):
        assert start["done"] and end["done"], "read before the device passed it"
        return end["t"] - start["t"]

    def ready(self, mark):
        return mark["done"]

    def wait(self, mark):
        self.waits += 1
        for m in self.marks[: self.marks.index(mark) + 1]:  # one stream: everything before it is done too
            m["done"] = True

    def wait_all(self):
        self.waits += 1
        for m in self.marks:
            m["done"] = True

    def device_passes(self, keep_behind):
        for m in self.marks[: max(0, len(self.marks) - keep_behind)]:
            m["done"] = True


def test_gpu_steps_are_read_lazily_without_a_host_sync_per_step():
    clock = FakeDeviceClock()
    s, events, _ = recording_session(clock=clock)
    emitted_during = []
    for _ in s.epochs():
        for i, _ in enumerate(s.steps(loader(64, 16))):  # 4 steps
            clock.now += 0.010 * (i + 1)  # the device spends 10, 20, 30, 40 ms on them
            emitted_during.append(sum(isinstance(e, StepEvent) for e in events))
            clock.device_passes(keep_behind=4)  # the device trails the host by a few marks
        assert clock.waits == 1  # one wait when the steps ended, none per step
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert emitted_during[0] == 0 and emitted_during[-1] < 4  # read later than they ran
    assert [round(e.step_s, 3) for e in steps] == [0.010, 0.020, 0.030, 0.040]  # the device's times
    assert all(e.compute_s >= 0 for e in steps)
    epoch = next(e for e in events if isinstance(e, EpochEvent))
    assert epoch.steps == 4 and epoch.samples == 64


def last_step(events):
    steps = [e for e in events if isinstance(e, StepEvent)]
    return (steps[-1].epoch, steps[-1].step) if steps else None


def test_an_opt_in_profiler_trace_covers_steady_steps_that_throughput_then_leaves_out():
    import gzip
    import json

    import pandas as pd

    from scaleprof.analysis.throughput import steady_state_throughput
    from scaleprof.config import ProfileSpec

    traces: list[tuple[str, bytes, Any]] = []
    events: list[Event] = []
    s, events, _ = make_session(
        profile=ProfileSpec(torch_profiler=True, steps=3),
        store_trace=lambda name, data: traces.append((name, data, last_step(events))),
    )
    model = torch.nn.Linear(3, 2)
    for _ in s.epochs():
        for x, _ in s.steps(loader(160, 16)):  # 10 steps an epoch
            model(x).sum().backward()
    [(name, data, before)] = traces
    assert name == "rank0.json.gz" and "traceEvents" in json.loads(gzip.decompress(data))
    assert before == (1, 3)  # exported inside the last traced step (1, 4): no untraced step pays for it
    assert "ProfilerStep#" in gzip.decompress(data).decode()  # iterations marked for Perfetto and HTA
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [(e.epoch, e.step) for e in steps if e.profiled] == [(1, 2), (1, 3), (1, 4)]  # epoch 2, from its 3rd
    frame = pd.DataFrame([{"rank": 0, **vars(e)} for e in steps])
    tp = steady_state_throughput(frame, warmup_steps=5)
    assert tp.window is not None
    assert tp.window.steps == 7  # epoch 2's 10 steps less the 3 traced
