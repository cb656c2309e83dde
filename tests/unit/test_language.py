"""The language-modeling task's pieces on their own: token data, the built-in transformer, the figures."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scaleprof.analysis.language import perplexity, six_n_flops, tokens_per_s
from scaleprof.config import DataSpec, ModelSpec
from scaleprof.workloads.data import load_dataset
from scaleprof.workloads.imports import WorkloadError, user_code
from scaleprof.workloads.models import build_model, check_model, model_info
from scaleprof.workloads.tokens import chain_entropy, token_arrays

LM = "language-modeling"


def test_synthetic_tokens_are_seeded_and_the_targets_are_the_next_tokens():
    spec = DataSpec(name="synthetic-tokens", vocab_size=50, seq_len=12, size=64)
    x, y = token_arrays(spec, seed=3)
    x2, y2 = token_arrays(spec, seed=3)
    assert x.shape == y.shape == (64, 12) and x.dtype == np.int64
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # the target at t is the input at t + 1
    assert not np.array_equal(x, token_arrays(spec, seed=4)[0])
    assert 0 < chain_entropy(50, 3, 12) < math.log(4) + 1e-9  # at most 4 likely successors per token


def test_the_chains_entropy_is_the_mean_loss_of_the_true_next_token_probabilities():
    from scaleprof.workloads.tokens import _chain

    spec = DataSpec(name="synthetic-tokens", vocab_size=20, seq_len=8, size=20_000)
    x, y = token_arrays(spec, seed=1)
    successors, cumulative = _chain(20, 1)
    probs = np.diff(cumulative, axis=1, prepend=0.0)
    true = np.zeros((20, 20))
    np.add.at(true, (np.repeat(np.arange(20), successors.shape[1]), successors.ravel()), probs.ravel())
    empirical = -np.log(true[x, y]).mean()  # the loss of a model that knows the chain exactly
    assert chain_entropy(20, 1, 8) == pytest.approx(empirical, abs=0.02)


def test_text_file_is_bytes_cut_into_sequences(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_bytes(bytes(range(256)) * 3)
    spec = DataSpec(name="text-file", path=str(text), seq_len=15)
    x, y = token_arrays(spec, seed=0)
    assert x.shape == (48, 15)  # 768 bytes in windows of 16
    assert list(x[0, :3]) == [0, 1, 2] and list(y[0, :3]) == [1, 2, 3]
    data = load_dataset(spec, seed=0)
    assert data.num_classes == 256 and data.input_shape == (15,)
    assert len(data.train_idx) + len(data.val_idx) + len(data.test_idx) == 48
    assert not set(data.train_idx) & set(data.test_idx)
    short = tmp_path / "short.txt"
    short.write_bytes(b"too short")
    with pytest.raises(WorkloadError, match="at least 10 are needed"):
        token_arrays(DataSpec(name="text-file", path=str(short), seq_len=15), seed=0)
    with pytest.raises(WorkloadError, match="no such file"):
        token_arrays(DataSpec(name="text-file", path=str(tmp_path / "nope.txt")), seed=0)


def test_the_built_in_transformer_is_causal_and_shaped_by_the_data():
    model = build_model(ModelSpec(name="transformer", kwargs={"layers": 1, "width": 32, "heads": 4}), (10,), 40, 0)
    ids = torch.randint(0, 40, (2, 10))
    logits = model(ids)
    assert logits.shape == (2, 10, 40)
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 40  # a later token cannot change what came before it
    torch.testing.assert_close(model(changed)[:, :7], logits[:, :7])
    assert not torch.allclose(model(changed)[:, 7:], logits[:, 7:])
    # initialised as GPT-2 is: the first loss on random targets is near log(vocab), not far above it
    targets = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(1))
    assert F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item() == pytest.approx(math.log(40), abs=0.3)
    width_fault = check_model(ModelSpec(name="transformer", kwargs={"width": 30}), (10,), 40, task=LM)
    assert width_fault is not None
    assert width_fault.startswith("kwargs:")


def test_hugging_face_models_are_built_from_a_config_with_random_weights():
    spec = ModelSpec(name="hf:gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 4})
    assert check_model(spec, (16,), 64, task=LM) is None
    model = build_model(spec, (16,), 64, seed=0)
    assert model(torch.randint(0, 64, (2, 16))).shape == (2, 16, 64)
    torch.testing.assert_close(
        next(model.parameters()), next(build_model(spec, (16,), 64, seed=0).parameters())
    )  # seeded: the same weights everywhere
    assert model_info(spec, (16,), 64, seed=0, task=LM)["flops_per_sample"] > 0
    unknown = check_model(ModelSpec(name="hf:nosuchmodel"), (16,), 64, task=LM)
    assert unknown is not None
    assert unknown.startswith("name:") and "no model type 'nosuchmodel'" in unknown
    bad = check_model(ModelSpec(name="hf:gpt2", config={"n_embd": 30, "n_head": 4}), (16,), 64, task=LM)
    assert bad is not None
    assert bad.startswith("config:")


def test_perplexity_and_tokens_against_a_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    targets = torch.tensor([[0, 2]])
    p = torch.softmax(logits, dim=-1)[0]
    by_hand = -(math.log(p[0, 0]) + math.log(p[1, 2])) / 2
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    assert loss == pytest.approx(by_hand)
    assert perplexity(loss) == pytest.approx(1 / math.sqrt(p[0, 0] * p[1, 2]))  # the geometric mean's inverse
    assert math.isnan(perplexity(float("nan")))
    assert tokens_per_s(100.0, 64) == 6400.0 and math.isnan(tokens_per_s(100.0, None))
    assert six_n_flops(1e6, 128) == 6 * 1e6 * 128


def test_a_users_language_model_factory_is_checked_for_next_token_logits(tmp_path):
    (tmp_path / "my_lm.py").write_text(
        "from torch import nn\n"
        "def bigram(vocab=32):\n"
        "    return nn.Embedding(vocab, vocab)  # ids [B, T] -> logits [B, T, vocab]\n"
        "def pooled(vocab=32):\n"
        "    return nn.Sequential(nn.Embedding(vocab, 8), nn.Flatten(), nn.LazyLinear(vocab))  # [B, vocab]\n"
    )
    with user_code([str(tmp_path)]):
        assert check_model(ModelSpec(factory="my_lm:bigram"), (12,), 32, task=LM) is None
        wrong = check_model(ModelSpec(factory="my_lm:pooled"), (12,), 32, task=LM)
    assert wrong is not None
    assert wrong.startswith("factory:") and "next-token logits of shape [2, 12, 32]" in wrong
