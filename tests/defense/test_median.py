"""Coordinate-wise median (Yin et al. 2018) on vectors worked by hand."""

from __future__ import annotations

import torch

from fleml_node.defense import make_defense
from fleml_node.defense.median import coordinate_median


def test_median_of_three_vectors() -> None:
    updates = torch.tensor([[1.0, 5.0, -2.0], [3.0, 4.0, 0.0], [2.0, 100.0, -1.0]])
    result = make_defense("median").aggregate(updates)
    assert result.update.tolist() == [2.0, 5.0, -1.0]
    assert all(c.coefficient is None and not c.flagged for c in result.clients)


def test_even_count_takes_midpoint() -> None:
    updates = torch.tensor([[1.0, 0.0], [4.0, 1.0], [2.0, 3.0], [10.0, 2.0]])
    assert coordinate_median(updates).tolist() == [3.0, 1.5]


def test_chunks_do_not_change_the_result() -> None:
    updates = torch.randn(6, 101, generator=torch.Generator().manual_seed(0))
    assert torch.equal(coordinate_median(updates, chunk=7), coordinate_median(updates))
    assert torch.equal(coordinate_median(updates[:5], chunk=7), updates[:5].median(dim=0).values)
