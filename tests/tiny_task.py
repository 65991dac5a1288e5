"""A tiny regression task shared by the Trainer tests and the torchrun worker."""
import torch
from torch import nn
from torch.utils.data import TensorDataset


class TinyTask(nn.Module):
    def __init__(self, dropout: float = 0.1, nan_at_step: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.nan_at_step = nan_at_step
        self.calls = 0

    def training_step(self, batch):
        x, y = batch
        self.calls += 1
        loss = ((self.net(x).squeeze(-1) - y) ** 2).mean()
        if self.nan_at_step is not None and self.calls > self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"abs_y": y.abs().mean()}


def tiny_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


def make_task(seed: int = 0, **kw) -> TinyTask:
    torch.manual_seed(seed)
    return TinyTask(**kw)
