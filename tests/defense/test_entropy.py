"""Von Neumann entropy, conditional entropy and mutual information against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from fleml_node.defense.entropy import (
    conditional_entropy_and_mi,
    cosine_gram,
    leave_one_out_entropy,
    plugin_entropy,
    reference_information,
    shared_edges,
    von_neumann_entropy,
)


def test_identical_updates_have_zero_entropy() -> None:
    updates = torch.tensor([[1.0, 2.0, 3.0]]) * torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    gram = cosine_gram(updates)
    assert torch.allclose(gram, torch.ones(4, 4, dtype=torch.float64))
    assert float(von_neumann_entropy(gram)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_orthogonal_equal_norm_updates_give_log_k(k: int) -> None:
    updates = 2.0 * torch.eye(k, 6)
    assert float(von_neumann_entropy(cosine_gram(updates))) == pytest.approx(math.log(k))


def test_one_outlier_among_identical() -> None:
    # n - 1 identical + 1 orthogonal: rho = diag-block with eigenvalues (n-1)/n and 1/n.
    n = 5
    updates = torch.zeros(n, 3)
    updates[:-1, 0] = 1.0
    updates[-1, 1] = 7.0
    expected = -((n - 1) / n) * math.log((n - 1) / n) - (1 / n) * math.log(1 / n)
    gram = cosine_gram(updates)
    assert float(von_neumann_entropy(gram)) == pytest.approx(expected)
    # Removing the outlier leaves a rank-1 set (S = 0): its change is +S(all), the largest.
    # Removing a member leaves n - 2 identical + the outlier: S rises, the change is negative.
    loo = leave_one_out_entropy(gram)
    member = -((n - 2) / (n - 1)) * math.log((n - 2) / (n - 1)) - math.log(1 / (n - 1)) / (n - 1)
    assert float(loo[-1]) == pytest.approx(expected)
    assert loo[:-1].tolist() == pytest.approx([expected - member] * (n - 1))
    assert all(v < 0 for v in loo[:-1].tolist())


def test_zero_vectors_and_tiny_sets() -> None:
    assert float(von_neumann_entropy(torch.zeros(3, 3))) == 0.0
    assert leave_one_out_entropy(cosine_gram(torch.ones(1, 4))).tolist() == [0.0]
    gram = cosine_gram(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert gram.tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_plugin_entropy() -> None:
    assert float(plugin_entropy(torch.tensor([5, 5, 5, 5]))) == pytest.approx(math.log(4))
    assert float(plugin_entropy(torch.tensor([0, 9, 0]))) == 0.0
    assert float(plugin_entropy(torch.tensor([1, 3]))) == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    )


def test_conditional_entropy_and_mi_by_hand() -> None:
    x = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 0, 0]])
    r = torch.tensor([0, 1, 0, 1])
    cond, mi, h = conditional_entropy_and_mi(x, r, bins=2)
    # row 0 independent of r: H(U|R) = log 2, I = 0
    # row 1 equal to r: H(U|R) = 0, I = H(U) = log 2
    # row 2 is a function of... not of r: (1,0),(1,1),(0,0),(0,1) -> independent again
    assert cond.tolist() == pytest.approx([math.log(2), 0.0, math.log(2)])
    assert mi.tolist() == pytest.approx([0.0, math.log(2), 0.0], abs=1e-12)
    assert h.tolist() == pytest.approx([math.log(2)] * 3)


def test_mi_of_a_variable_with_itself_is_its_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(4000, generator=gen, dtype=torch.float64)
    cond, mi = reference_information(values[None, :], values, bins=8)
    # equal-frequency bins on the pooled values: H = log 8 up to the quantile rounding
    assert float(mi[0]) == pytest.approx(math.log(8), abs=1e-2)
    assert float(cond[0]) == pytest.approx(0.0, abs=1e-12)


def test_mi_of_independent_variables_is_near_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(2, 20000, generator=gen, dtype=torch.float64)
    cond, mi = reference_information(u[:1], u[1], bins=8)
    # plug-in bias is about (B - 1)^2 / (2 m) = 49 / 40000 nats
    assert 0.0 <= float(mi[0]) < 5e-3
    assert float(cond[0]) == pytest.approx(math.log(8), abs=2e-2)


def test_conditional_entropy_bounds() -> None:
    gen = torch.Generator().manual_seed(2)
    reference = torch.randn(3000, generator=gen, dtype=torch.float64)
    noise = torch.randn(5, 3000, generator=gen, dtype=torch.float64)
    mixes = torch.tensor([0.0, 0.3, 1.0, 3.0, 100.0], dtype=torch.float64)[:, None]
    vectors = reference[None, :] + mixes * noise
    cond, mi = reference_information(vectors, reference, bins=10)
    pooled = torch.cat([vectors, reference[None]])
    std = pooled / pooled.pow(2).mean(dim=1, keepdim=True).sqrt()
    codes = torch.bucketize(std, shared_edges(std, 10))
    _, _, h = conditional_entropy_and_mi(codes[:-1], codes[-1], 10)
    assert torch.all(cond >= 0) and torch.all(cond <= h + 1e-12)
    assert torch.all(mi >= 0) and torch.all(mi <= h + 1e-12)
    # more noise -> less information about the reference, more left unexplained
    assert mi.tolist() == sorted(mi.tolist(), reverse=True)
    assert cond.tolist() == sorted(cond.tolist())


def test_shared_edges_merge_ties() -> None:
    values = torch.tensor([0.0] * 90 + [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    edges = shared_edges(values, 10)
    assert edges.tolist() == [0.0, 1.0]
    assert shared_edges(torch.arange(100.0), 4).tolist() == [25.0, 50.0, 75.0]


def test_closest_peer_cosine_finds_copies_and_ignores_self() -> None:
    from fleml_node.defense.entropy import closest_peer_cosine

    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(5, 300, generator=gen)
    rows[4] = 2.0 * rows[1]  # same direction, other length: a copy for the cosine
    peer = closest_peer_cosine(cosine_gram(rows))
    assert peer[1] == pytest.approx(1.0) and peer[4] == pytest.approx(1.0)
    assert float(peer[[0, 2, 3]].max()) < 0.3  # independent random directions
    assert closest_peer_cosine(cosine_gram(rows[:1])).tolist() == [-1.0]
