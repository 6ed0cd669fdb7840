"""FLTrust (Cao et al. 2021) with trust scores worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fleml_node.defense import InvalidRoundError, RoundContext, make_defense

G0 = torch.tensor([1.0, 0.0])
UPDATES = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])


def test_trust_scores_and_normalisation() -> None:
    # TS = ReLU(cos) = [1, 0, 0, 1/sqrt2]; rescaled to |g0| = 1: [1, 0] and [1/sqrt2, 1/sqrt2]
    # aggregate = (1 * [1, 0] + 1/sqrt2 * [1/sqrt2, 1/sqrt2]) / (1 + 1/sqrt2)
    result = make_defense("fltrust").aggregate(UPDATES, RoundContext(root_update=G0))
    total = 1 + 1 / math.sqrt(2)
    assert result.update.tolist() == pytest.approx([1.5 / total, 0.5 / total], rel=1e-6)
    trust = [c.scores["trust"] for c in result.clients]
    assert trust == pytest.approx([1.0, 0.0, 0.0, 1 / math.sqrt(2)])
    assert result.flagged_ids == ["1", "2"]
    assert result.coefficients[2] == 0.0  # the negative-cosine client gets nothing


def test_root_update_may_be_a_callable() -> None:
    direct = make_defense("fltrust").aggregate(UPDATES, RoundContext(root_update=G0))
    lazy = make_defense("fltrust").aggregate(UPDATES, RoundContext(root_update=lambda: G0))
    assert torch.equal(direct.update, lazy.update)


def test_all_distrusted_gives_zero() -> None:
    result = make_defense("fltrust").aggregate(-UPDATES[:1], RoundContext(root_update=G0))
    assert result.update.tolist() == [0.0, 0.0]


def test_missing_or_bad_root_update() -> None:
    with pytest.raises(InvalidRoundError, match="root_update"):
        make_defense("fltrust").aggregate(UPDATES)
    bad = RoundContext(root_update=lambda: torch.tensor([math.nan, 0.0]))
    with pytest.raises(InvalidRoundError, match="non-finite"):
        make_defense("fltrust").aggregate(UPDATES, bad)
