"""Split a training set over federated clients: IID and Dirichlet label skew.

* :func:`iid_partition` shuffles the sample indices and deals them out in near-equal parts.
* :func:`dirichlet_partition` is the label-skew non-IID split of Hsu, Qi and Brown (2019),
  "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification" (arXiv:1909.06335), in the per-class form popularised by Yurochkin et
  al. (2019): for every class ``k`` the proportions ``p_k ~ Dir(alpha * 1_N)`` over the ``N``
  clients cut that class's shuffled samples.  Small ``alpha`` gives each client few classes;
  large ``alpha`` approaches IID.  A draw that leaves a client with fewer than ``min_samples``
  samples is redrawn (from the same seeded stream, so still deterministic).

Both return one sorted int64 index tensor per client; every sample is used at most once (in
fact exactly once) and the result depends only on the inputs and the seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def _check_clients(num_samples: int, num_clients: int, min_samples: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise ValueError(f"min_samples must be a positive integer, got {min_samples!r}")
    if num_samples < num_clients * min_samples:
        raise ValueError(
            f"cannot give {num_clients} clients at least {min_samples} sample(s) each from "
            f"{num_samples} samples"
        )


def _as_labels(labels: Tensor) -> np.ndarray:
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        raise ValueError("labels must be a 1-D tensor")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    out = labels.cpu().numpy().astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError("labels must be non-negative")
    return out


def iid_partition(num_samples: int, num_clients: int, seed: int) -> list[Tensor]:
    """Shuffle ``range(num_samples)`` and split it into ``num_clients`` near-equal parts.

    Parameters
    ----------
    num_samples : int
        Size of the dataset.
    num_clients : int
        Number of clients; must not exceed ``num_samples``.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    list of Tensor
        Sorted int64 indices per client; sizes differ by at most one.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
    _check_clients(num_samples, num_clients, 1)
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [torch.from_numpy(np.sort(part)) for part in np.array_split(perm, num_clients)]


def dirichlet_partition(
    labels: Tensor,
    num_clients: int,
    alpha: float,
    seed: int,
    min_samples: int = 1,
    max_attempts: int = 100,
) -> list[Tensor]:
    """Split samples over clients with Dirichlet(alpha) label skew (Hsu et al. 2019).

    Parameters
    ----------
    labels : Tensor
        1-D integer labels of the whole training set.
    num_clients : int
        Number of clients.
    alpha : float
        Concentration, > 0.  Smaller means more skew (e.g. 0.1 strong, 100 near IID).
    seed : int
        Seed of all draws.
    min_samples : int, default 1
        Every client must receive at least this many samples.
    max_attempts : int, default 100
        Redraws allowed before giving up.

    Returns
    -------
    list of Tensor
        Sorted int64 indices per client, disjoint and covering all samples.

    Raises
    ------
    ValueError
        On invalid arguments, or when no draw in ``max_attempts`` satisfies ``min_samples``.
    """
    y = _as_labels(labels)
    _check_clients(len(y), num_clients, min_samples)
    if not alpha > 0 or not np.isfinite(alpha):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for attempt in range(1, max_attempts + 1):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for k in classes:
            idx = rng.permutation(np.flatnonzero(y == k))
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(np.int64)
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].append(part)
        sizes = [sum(len(p) for p in parts) for parts in shards]
        if min(sizes) >= min_samples:
            logger.debug("dirichlet partition found on attempt %d, sizes %s", attempt, sizes)
            return [torch.from_numpy(np.sort(np.concatenate(parts))) for parts in shards]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split of {len(y)} samples gave all {num_clients} clients "
        f"at least {min_samples} sample(s) in {max_attempts} attempts; raise alpha, lower "
        "num_clients or min_samples"
    )


def class_histogram(
    labels: Tensor, partition: Sequence[Tensor], num_classes: int | None = None
) -> Tensor:
    """Count the labels of each client.

    Parameters
    ----------
    labels : Tensor
        1-D integer labels of the whole training set.
    partition : sequence of Tensor
        Index tensor per client.
    num_classes : int, optional
        Defaults to ``max(label) + 1``.

    Returns
    -------
    Tensor
        int64 ``[num_clients, num_classes]`` counts.
    """
    y = _as_labels(labels)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and y.max() >= num_classes:
        raise ValueError(f"labels reach {int(y.max())}, beyond num_classes={num_classes}")
    hist = torch.zeros((len(partition), num_classes), dtype=torch.int64)
    for client, idx in enumerate(partition):
        ids = idx.cpu().numpy().astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(y)):
            raise ValueError(f"partition indices must lie in [0, {len(y)})")
        hist[client] = torch.from_numpy(np.bincount(y[ids], minlength=num_classes))
    return hist


def label_skew(histogram: Tensor) -> float:
    """Mean total-variation distance between each client's label distribution and the pool's.

    Parameters
    ----------
    histogram : Tensor
        ``[num_clients, num_classes]`` counts from :func:`class_histogram`; every row non-empty.

    Returns
    -------
    float
        0 for identical distributions, up to 1 for disjoint ones.
    """
    if histogram.dim() != 2 or histogram.shape[0] == 0:
        raise ValueError("histogram must be a non-empty [clients, classes] tensor")
    h = histogram.to(torch.float64)
    rows = h.sum(dim=1, keepdim=True)
    if bool((rows == 0).any()):
        raise ValueError("every client must hold at least one sample")
    pool = h.sum(dim=0) / h.sum()
    return float((0.5 * (h / rows - pool).abs().sum(dim=1)).mean())


def format_partition_summary(
    labels: Tensor, partition: Sequence[Tensor], num_classes: int | None = None
) -> str:
    """Render the per-client class histogram as a text table.

    Parameters
    ----------
    labels, partition, num_classes
        As in :func:`class_histogram`.

    Returns
    -------
    str
        One row per client (size and count per class), a total row and the label skew.
    """
    hist = class_histogram(labels, partition, num_classes)
    n_classes = hist.shape[1]
    width = max(5, len(str(int(hist.sum()))) + 1)
    header = f"{'client':>6} {'n':>{width}} " + " ".join(f"{c:>{width}}" for c in range(n_classes))
    lines = [header]
    for i, row in enumerate(hist.tolist()):
        counts = " ".join(f"{c:>{width}}" for c in row)
        lines.append(f"{i:>6} {sum(row):>{width}} {counts}")
    totals = hist.sum(dim=0).tolist()
    lines.append(f"{'all':>6} {sum(totals):>{width}} " + " ".join(f"{c:>{width}}" for c in totals))
    if hist.shape[0] and bool((hist.sum(dim=1) > 0).all()):
        lines.append(f"label skew (mean TV distance to pool): {label_skew(hist):.3f}")
    return "\n".join(lines)
