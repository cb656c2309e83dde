"""Models, built with random initialisation from the seed (never downloaded weights)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scaleprof.config import ModelSpec
from scaleprof.worker.flops import train_flops_per_sample
from scaleprof.workloads.imports import optional_package


class SmallCNN(nn.Module):
    """Two conv layers and a small head; adaptive pooling makes it work from 8x8 to 224x224."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden_sizes: tuple[int, ...] = (256, 128)) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden_sizes:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """A pre-norm decoder block: causal self-attention (PyTorch's scaled_dot_product_attention) and an MLP."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            part.view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for part in self.qkv(self.ln1(x)).split(c, dim=2)
        )
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """A small decoder-only language model (GPT-2's shape): token and learned position embeddings, `layers`
    blocks, a final LayerNorm and an output head tied to the token embedding. Input token ids [B, T];
    output next-token logits [B, T, vocab]."""

    def __init__(
        self,
        vocab: int,
        context: int,
        layers: int = 2,
        width: int = 128,
        heads: int = 4,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ):
        super().__init__()
        self.context = context
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        if tie_embeddings:
            self.head.weight = self.tokens.weight
        self.apply(self._init)
        for name, parameter in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases (PyTorch's defaults give a tied head
        logits of a large spread, and a first loss far above log(vocab))."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than the context of {self.context}")
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class CausalLM(nn.Module):
    """A Hugging Face causal LM seen as scaleprof sees every language model: token ids in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def hf_causal_lm(model_type: str, config: dict[str, Any], vocab: int, context: int) -> nn.Module:
    """A transformers causal LM built from a config with random weights (never downloaded): the data
    set's vocabulary, and a context at least the sequence length."""
    optional_package("transformers", "hf", "model.name")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"transformers has no model type {model_type!r} (e.g. gpt2, llama, qwen2, mistral)")
    if "vocab_size" in config and int(config["vocab_size"]) != vocab:
        raise ValueError(f"config.vocab_size is {config['vocab_size']} but the data has {vocab} tokens")
    # Special-token ids matter only for generation; the defaults index a larger vocabulary than the data's.
    special = dict.fromkeys(("bos_token_id", "eos_token_id", "pad_token_id"))
    cfg = AutoConfig.for_model(model_type, **{**special, **config, "vocab_size": vocab})
    for attribute in ("n_positions", "max_position_embeddings"):
        if attribute not in config and getattr(cfg, attribute, context) < context:
            setattr(cfg, attribute, context)
    return CausalLM(AutoModelForCausalLM.from_config(cfg))


class _ToRGB(nn.Module):
    """torchvision classifiers expect 3 channels; repeat a grey channel rather than change the model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """The same weights for the same seed, on every worker and every placement."""
    from scaleprof.workloads.imports import seed_everything

    seed_everything(seed)
    if spec.factory:
        return _from_factory(spec)
    if spec.built_by_loop:
        raise ValueError(f"model {spec.label!r} is built by the training loop, not by scaleprof")
    if spec.name == "mlp":
        return mlp(input_shape, num_classes, **spec.kwargs)
    if spec.name == "small-cnn":
        return SmallCNN(input_shape[0], num_classes, **spec.kwargs)
    if spec.name == "transformer":  # input_shape is (sequence length,), num_classes the vocabulary
        return Transformer(num_classes, **{"context": input_shape[0], **spec.kwargs})
    if spec.is_hf:
        return hf_causal_lm(str(spec.name).removeprefix("hf:"), spec.config, num_classes, input_shape[0])
    torchvision = optional_package("torchvision", "vision", "model.name")
    name = str(spec.name).removeprefix("torchvision:")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **spec.kwargs)
    if input_shape[0] == 1:
        model = nn.Sequential(_ToRGB(), model)
    return model


def _from_factory(spec: ModelSpec) -> nn.Module:
    from scaleprof.workloads.imports import WorkloadError, call_user, import_object

    model = call_user(import_object(str(spec.factory), "factory"), "factory", **spec.kwargs)
    if not isinstance(model, nn.Module):
        raise WorkloadError("factory", f"{spec.factory} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


LANGUAGE_MODELING = "language-modeling"


def example_batch(task: str, input_shape: tuple[int, ...], num_classes: int, n: int = 2) -> torch.Tensor:
    """A batch of `n` inputs of the data's kind: token ids for language modeling, else floats. A generator
    of its own, so the global one the seeded training draws from is not moved."""
    generator = torch.Generator().manual_seed(0)
    if task == LANGUAGE_MODELING:
        return torch.randint(0, max(num_classes, 1), (n, *input_shape), generator=generator)
    return torch.randn(n, *input_shape, generator=generator)


def expected_output(task: str, n: int, input_shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
    """Logits per sample ([n, classes]) or, for language modeling, per position ([n, T, vocab])."""
    return (n, input_shape[0], num_classes) if task == LANGUAGE_MODELING else (n, num_classes)


def check_model(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    task: str = "classification",
) -> str | None:
    """Why this model cannot be built and run on this input, or None (checked before Ray starts).

    The message starts with the field at fault within the model spec (`name:`, `factory:`, `kwargs:` or
    `config:`).
    """
    from scaleprof.workloads.imports import WorkloadError

    if spec.built_by_loop:
        return None  # the user's loop builds it; only running the loop can tell
    batch = example_batch(task, input_shape, num_classes)
    want = expected_output(task, 2, input_shape, num_classes)
    if spec.factory:
        try:
            model = build_model(spec, input_shape, num_classes, seed=0)
            with torch.no_grad():
                out = model.eval()(batch)
        except WorkloadError as exc:
            return str(exc)
        except Exception as exc:
            line = str(exc).splitlines()[0] if str(exc) else ""
            shape = list(batch.shape)
            return f"factory: {spec.factory} cannot run on inputs of shape {shape} ({type(exc).__name__}: {line})"
        out_shape = tuple(getattr(out, "shape", ()))
        if out_shape != want:
            what = "next-token logits" if task == LANGUAGE_MODELING else "class logits"
            return (
                f"factory: {spec.factory}'s output on a batch of 2 has shape {list(out_shape)}; "
                f"{what} of shape {list(want)} are expected (the input batch had shape {list(batch.shape)})"
            )
        return None
    name = str(spec.name)
    if name.startswith("torchvision:"):
        import torchvision

        name = name.removeprefix("torchvision:")
        if name not in set(torchvision.models.list_models(module=torchvision.models)):
            return f"name: torchvision has no classification model {name!r}"
    try:
        model = build_model(spec, input_shape, num_classes, seed=0)
        with torch.no_grad():
            model.eval()(batch[:1])
    except TypeError as exc:
        return f"kwargs: {name} does not accept these arguments ({exc})"
    except (ValueError, RuntimeError, KeyError) as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if spec.is_hf:  # a missing package or unknown model type is the name's fault, the rest the config's
            at = "name" if "transformers" in line or isinstance(exc, KeyError) else "config"
            return f"{at}: {name}: {line}"
        if spec.name == "transformer" and isinstance(exc, ValueError):
            return f"kwargs: {name}: {line}"
        return f"name: {name} cannot run on inputs of shape {list(input_shape)} ({line})"
    return None


def model_info(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    task: str = "classification",
) -> dict[str, float]:
    """FLOPs per training sample and parameter count of one model, as built for a study (empty for a
    model the user's loop builds: its FLOPs are known only if the loop hands an example input to
    `session.prepare_model`)."""
    if spec.built_by_loop:
        return {}
    model = build_model(spec, input_shape, num_classes, seed)
    info: dict[str, float] = {"parameters": sum(p.numel() for p in model.parameters())}
    try:
        info["flops_per_sample"] = train_flops_per_sample(model, example_batch(task, input_shape, num_classes))
    except Exception as exc:  # e.g. frozen parameters: no backward to count; MFU is then unavailable
        import logging

        logging.getLogger(__name__).warning("scaleprof: counting %s's FLOPs failed (%s); no MFU", spec.label, exc)
    return info
