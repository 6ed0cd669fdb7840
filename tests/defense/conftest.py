"""Shared fixtures of the defense tests: a tiny linear classifier and its validation data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fleml_node.learning.params import flatten, get_params


def tiny_model() -> nn.Module:
    """4 inputs -> 3 classes, 15 parameters, deterministic weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(4, 3)


@pytest.fixture
def model() -> nn.Module:
    return tiny_model()


@pytest.fixture
def global_params(model: nn.Module) -> torch.Tensor:
    return flatten(get_params(model))


@pytest.fixture
def validation() -> tuple[torch.Tensor, torch.Tensor]:
    """60 points whose class is the argmax of their first three coordinates."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 4, generator=gen)
    return x, x[:, :3].argmax(dim=1)
