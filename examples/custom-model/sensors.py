"""A user's own data set: multichannel sensor signals, one class per waveform family.

An ordinary map-style torch Dataset of (input, label) pairs; scaleprof makes the seeded, stratified
train/val/test split. `targets` lets it read the labels without loading every item (optional).
"""

import math

import torch
from torch.utils.data import Dataset


class SensorSignals(Dataset):
    def __init__(self, samples: int = 4096, channels: int = 3, length: int = 128, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, 4, (samples,), generator=generator).tolist()
        t = torch.linspace(0, 1, length)
        frequency = 2 + 3 * torch.rand(samples, channels, 1, generator=generator)
        phase = 2 * math.pi * torch.rand(samples, channels, 1, generator=generator)
        wave = torch.sin(2 * math.pi * frequency * t + phase)
        shapes = {
            0: wave,
            1: torch.sign(wave),
            2: wave.abs() * 2 - 1,
            3: torch.sin(2 * math.pi * frequency * t**2 + phase),
        }
        labels = torch.tensor(self.targets)
        signal = torch.zeros(samples, channels, length)
        for label, shaped in shapes.items():
            signal[labels == label] = shaped[labels == label]
        self.signals = signal + 1.5 * torch.randn(samples, channels, length, generator=generator)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.signals[index], self.targets[index]


def load(samples: int = 4096, channels: int = 3, length: int = 128) -> Dataset:
    return SensorSignals(samples, channels, length)
