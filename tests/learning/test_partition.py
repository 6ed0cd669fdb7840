"""IID and Dirichlet partitions: disjoint, covering, non-empty, deterministic, skew vs alpha."""

import pytest
import torch

from fleml_node.learning.partition import (
    class_histogram,
    dirichlet_partition,
    format_partition_summary,
    iid_partition,
    label_skew,
)

LABELS = torch.arange(2000) % 10  # balanced, 200 per class


def assert_disjoint_cover(parts, n):
    allidx = torch.cat(parts)
    assert len(allidx) == n
    assert torch.equal(allidx.sort().values, torch.arange(n))
    assert all(len(p) > 0 and p.dtype == torch.int64 for p in parts)
    assert all(torch.equal(p, p.sort().values) for p in parts)


def test_iid_partition_properties():
    parts = iid_partition(1003, 10, seed=1)
    assert_disjoint_cover(parts, 1003)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = iid_partition(1003, 10, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = iid_partition(1003, 10, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_partition_rejects_too_many_clients():
    with pytest.raises(ValueError, match="at least 1 sample"):
        iid_partition(5, 6, seed=0)
    with pytest.raises(ValueError, match="num_clients"):
        iid_partition(5, 0, seed=0)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 10.0])
def test_dirichlet_partition_properties(alpha):
    parts = dirichlet_partition(LABELS, 20, alpha, seed=7)
    assert len(parts) == 20
    assert_disjoint_cover(parts, len(LABELS))
    again = dirichlet_partition(LABELS, 20, alpha, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_skew_increases_as_alpha_decreases():
    skews = [
        label_skew(class_histogram(LABELS, dirichlet_partition(LABELS, 10, a, seed=3)))
        for a in (100.0, 1.0, 0.1)
    ]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.1 and skews[2] > 0.5


def test_dirichlet_min_samples_and_impossible_cases():
    parts = dirichlet_partition(LABELS, 10, 0.1, seed=0, min_samples=50)
    assert min(len(p) for p in parts) >= 50
    with pytest.raises(ValueError, match="attempts"):
        dirichlet_partition(torch.arange(20) % 10, 10, 0.01, seed=0, min_samples=2, max_attempts=3)
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet_partition(torch.arange(5), 6, 1.0, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(LABELS, 5, 0.0, seed=0)
    with pytest.raises(ValueError, match="integer"):
        dirichlet_partition(LABELS.float(), 5, 1.0, seed=0)


def test_class_histogram_and_skew_values():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    parts = [torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])]
    hist = class_histogram(labels, parts)
    assert hist.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert label_skew(hist) == 0.0
    disjoint = class_histogram(labels, [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])])
    # client 0 = {0: 1.0} vs pool (1/3 each): TV 2/3; client 1 = {1: .5, 2: .5}: TV 1/3
    assert label_skew(disjoint) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="indices"):
        class_histogram(labels, [torch.tensor([6])])


def test_summary_text():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    parts = [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])]
    text = format_partition_summary(labels, parts)
    lines = text.splitlines()
    assert lines[0].split() == ["client", "n", "0", "1", "2"]
    assert lines[1].split() == ["0", "2", "2", "0", "0"]
    assert lines[2].split() == ["1", "4", "0", "2", "2"]
    assert lines[3].split() == ["all", "6", "2", "2", "2"]
    assert lines[4].endswith("0.500")
