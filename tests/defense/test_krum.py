"""Krum and Multi-Krum (Blanchard et al. 2017) on points whose scores are worked by hand."""

from __future__ import annotations

import pytest
import torch

from fleml_node.defense import InvalidRoundError, make_defense
from fleml_node.defense.krum import default_f, krum_scores, pairwise_sq_distances

# 1-D points 0, 1, 2, 3, 100 with f = 1: each score sums the n - f - 2 = 2 nearest squared
# distances: 0 -> 1 + 4 = 5, 1 -> 1 + 1 = 2, 2 -> 1 + 1 = 2, 3 -> 1 + 4 = 5,
# 100 -> 97^2 + 98^2 = 19013.
POINTS = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])


def test_scores_by_hand() -> None:
    assert krum_scores(POINTS, f=1).tolist() == [5.0, 2.0, 2.0, 5.0, 19013.0]


def test_pairwise_distances() -> None:
    dist = pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), chunk=1)
    assert dist.tolist() == [[0.0, 25.0], [25.0, 0.0]]


def test_krum_picks_the_central_point() -> None:
    result = make_defense("krum", f=1).aggregate(POINTS)
    # tie between rows 1 and 2 goes to the lower index
    assert result.update.tolist() == [1.0]
    assert result.coefficients == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert result.flagged_ids == ["0", "2", "3", "4"]


def test_multikrum_averages_the_best_m() -> None:
    result = make_defense("multikrum", f=1).aggregate(POINTS)  # m = n - f = 4
    assert result.update.tolist() == [1.5]
    assert result.flagged_ids == ["4"]
    assert make_defense("multikrum", f=1, m=2).aggregate(POINTS).update.tolist() == [1.5]
    with pytest.raises(InvalidRoundError, match="1 <= m <= n"):
        make_defense("multikrum", f=1, m=6).aggregate(POINTS)


def test_krum_needs_enough_clients() -> None:
    assert default_f(5) == 1 and default_f(7) == 2 and default_f(2) == 0
    with pytest.raises(InvalidRoundError, match="n > 2f"):
        make_defense("krum", f=2).aggregate(POINTS)
