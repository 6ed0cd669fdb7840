"""FedAvg (McMahan et al. 2017): sample-weighted mean, worked by hand."""

from __future__ import annotations

import pytest
import torch

from fleml_node.defense import RoundContext, make_defense

UPDATES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])


def test_weighted_by_sample_counts() -> None:
    # (1*[1,0] + 1*[0,1] + 2*[3,3]) / 4 = [7/4, 7/4]
    result = make_defense("fedavg").aggregate(UPDATES, RoundContext(sample_counts=[1, 1, 2]))
    assert result.update.tolist() == [1.75, 1.75]
    assert result.coefficients == [0.25, 0.25, 0.5]
    assert result.flagged_ids == []


def test_uniform_without_counts() -> None:
    result = make_defense("fedavg").aggregate(UPDATES)
    assert result.update.tolist() == pytest.approx([4 / 3, 4 / 3])
    assert all(c.reason == "uniform" for c in result.clients)


def test_zero_count_client_gets_no_weight() -> None:
    result = make_defense("fedavg").aggregate(UPDATES, RoundContext(sample_counts=[0, 1, 1]))
    assert result.update.tolist() == [1.5, 2.0]
