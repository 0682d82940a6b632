"""A small image classifier standing in for "your own model": any nn.Module whose forward torch.export can trace
into the layers and functions morphserve knows (docs/API.md, "Bring your own model").

    morphserve import examples/my_model.py:TinyCNN --input image:FP32:-1,1,28,28 -o tinycnn.zip
"""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Two conv blocks and a linear head over 28x28 grey images; seeded, so every import has the same weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(image)))
        x = torch.relu(self.conv2(x))
        return self.head(torch.flatten(self.pool(x), 1))
