"""The study's Fashion-MNIST CNN: two conv blocks and three linear layers, 769,930 parameters."""

from __future__ import annotations

import torch
from torch import nn


class FashionCNN(nn.Module):
    """Conv(1->16, 3x3, pad 1) -> ReLU -> MaxPool 2 -> Conv(16->32, 3x3) -> ReLU -> MaxPool 2
    -> Linear(1152->600) -> ReLU -> Dropout(p) -> Linear(600->120) -> ReLU -> Linear(120->10)
    -> LogSoftmax. Input (B, 1, 28, 28), output log-probabilities (B, 10)."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=1, padding=1)   # 160 params
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, stride=1, padding=0)  # 4,640
        self.fc1 = nn.Linear(32 * 6 * 6, 600)                               # 691,800
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(600, 120)                                      # 72,120
        self.fc3 = nn.Linear(120, 10)                                       # 1,210

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2, 2)   # (B, 16, 14, 14)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2, 2)   # (B, 32, 6, 6): 12 -> 6
        x = x.flatten(1)                                        # (B, 1152)
        x = self.dropout(torch.relu(self.fc1(x)))               # (B, 600)
        x = torch.relu(self.fc2(x))                             # (B, 120)
        return torch.log_softmax(self.fc3(x), dim=1)            # (B, 10)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
