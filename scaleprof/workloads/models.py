"""Models, built with random initialisation from the seed (never downloaded weights)."""

from __future__ import annotations

import math

import torch
from torch import nn

from scaleprof.config import ModelSpec


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


class _ToRGB(nn.Module):
    """torchvision classifiers expect 3 channels; repeat a grey channel rather than change the model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, seed: int, code_dirs: list[str] | None = None
) -> nn.Module:
    """The same weights for the same seed, on every worker and every placement."""
    from scaleprof.workloads.imports import seed_everything

    seed_everything(seed)
    if spec.factory:
        return _from_factory(spec, code_dirs)
    if spec.built_by_loop:
        raise ValueError(f"model {spec.label!r} is built by the training loop, not by scaleprof")
    if spec.name == "mlp":
        return mlp(input_shape, num_classes, **spec.kwargs)
    if spec.name == "small-cnn":
        return SmallCNN(input_shape[0], num_classes, **spec.kwargs)
    import torchvision

    name = str(spec.name).removeprefix("torchvision:")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **spec.kwargs)
    if input_shape[0] == 1:
        model = nn.Sequential(_ToRGB(), model)
    return model


def _from_factory(spec: ModelSpec, code_dirs: list[str] | None) -> nn.Module:
    from scaleprof.workloads.imports import WorkloadError, call_user, import_object

    model = call_user(import_object(str(spec.factory), "factory", code_dirs), "factory", **spec.kwargs)
    if not isinstance(model, nn.Module):
        raise WorkloadError("factory", f"{spec.factory} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, code_dirs: list[str] | None = None
) -> str | None:
    """Why this model cannot be built and run on this input, or None (checked before Ray starts).

    The message starts with the field at fault within the model spec (`name:`, `factory:` or `kwargs:`).
    """
    from scaleprof.workloads.imports import WorkloadError

    if spec.built_by_loop:
        return None  # the user's loop builds it; only running the loop can tell
    if spec.factory:
        try:
            model = build_model(spec, input_shape, num_classes, seed=0, code_dirs=code_dirs)
            with torch.no_grad():
                out = model.eval()(torch.zeros(2, *input_shape))
        except WorkloadError as exc:
            return str(exc)
        except Exception as exc:
            line = str(exc).splitlines()[0] if str(exc) else ""
            shape = ", ".join(map(str, input_shape))
            return f"factory: {spec.factory} cannot run on inputs of shape [2, {shape}] ({type(exc).__name__}: {line})"
        out_shape = tuple(getattr(out, "shape", ()))
        if out_shape != (2, num_classes):
            return (
                f"factory: {spec.factory}'s output on a batch of 2 has shape {list(out_shape)}; the data set has "
                f"{num_classes} classes, so class logits of shape [2, {num_classes}] are expected"
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
            model.eval()(torch.zeros(1, *input_shape))
    except TypeError as exc:
        return f"kwargs: {name} does not accept these arguments ({exc})"
    except (ValueError, RuntimeError) as exc:
        return f"name: {name} cannot run on inputs of shape {list(input_shape)} ({str(exc).splitlines()[0]})"
    return None


def train_flops_per_sample(model: nn.Module, example: tuple[int, ...] | torch.Tensor) -> float:
    """Forward plus backward FLOPs of one sample, counted by torch's FlopCounterMode on a batch of 2 of
    this input shape (or on an example batch): the count depends on the operators, not the device.
    Its first use costs over a second of imports, so the driver counts once per model, not every
    worker of every run."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(example, torch.Tensor):
        x = example[:2]
    else:  # a generator of its own: counting must not move the global one the seeded training draws from
        x = torch.randn(2, *example, generator=torch.Generator().manual_seed(0))
    parameter = next(model.parameters(), None)
    if parameter is not None:
        x = x.to(parameter.device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def model_info(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, seed: int, code_dirs: list[str] | None = None
) -> dict[str, float]:
    """FLOPs per training sample and parameter count of one model, as built for a study (empty for a
    model the user's loop builds: its FLOPs are known only if the loop hands an example input to
    `session.prepare_model`)."""
    if spec.built_by_loop:
        return {}
    model = build_model(spec, input_shape, num_classes, seed, code_dirs)
    info: dict[str, float] = {"parameters": sum(p.numel() for p in model.parameters())}
    try:
        info["flops_per_sample"] = train_flops_per_sample(model, input_shape)
    except Exception as exc:  # e.g. frozen parameters: no backward to count; MFU is then unavailable
        import logging

        logging.getLogger(__name__).warning("scaleprof: counting %s's FLOPs failed (%s); no MFU", spec.label, exc)
    return info
