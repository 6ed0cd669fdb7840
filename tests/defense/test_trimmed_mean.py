"""Coordinate-wise trimmed mean (Yin et al. 2018) worked by hand."""

from __future__ import annotations

import pytest
import torch

from fleml_node.defense import InvalidRoundError, make_defense
from fleml_node.defense.trimmed_mean import trim_count, trimmed_mean

UPDATES = torch.tensor([[1.0, -50.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 3.0]])


def test_beta_trims_each_end() -> None:
    # beta 0.2, n 5 -> k = 1: column 0 keeps 2, 3, 4 (mean 3); column 1 keeps 0, 1, 2 (mean 1)
    result = make_defense("trimmedmean", beta=0.2).aggregate(UPDATES)
    assert result.update.tolist() == [3.0, 1.0]
    assert result.info["trimmed_per_side"] == 1


def test_beta_zero_is_the_mean_and_small_beta_trims_nothing() -> None:
    assert trimmed_mean(UPDATES, 0.0).tolist() == [22.0, pytest.approx(-8.8)]
    assert trim_count(5, 0.19) == 0
    assert torch.equal(trimmed_mean(UPDATES, 0.19), trimmed_mean(UPDATES, 0.0))


def test_chunking_is_exact() -> None:
    updates = torch.randn(7, 53, generator=torch.Generator().manual_seed(3))
    assert torch.equal(trimmed_mean(updates, 0.3, chunk=5), trimmed_mean(updates, 0.3))


def test_invalid_beta() -> None:
    with pytest.raises(InvalidRoundError):
        make_defense("trimmedmean", beta=0.5)
    with pytest.raises(InvalidRoundError):
        trim_count(4, -0.1)
