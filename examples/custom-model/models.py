"""A user's own model: a small 1-D convolutional classifier for the sensor signals."""

from torch import nn


def build(channels: int = 3, width: int = 32, num_classes: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(channels, width, kernel_size=7, padding=3),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Conv1d(width, 2 * width, kernel_size=5, padding=2, stride=2),
        nn.BatchNorm1d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(8),
        nn.Flatten(),
        nn.Linear(2 * width * 8, num_classes),
    )
