"""Krum and Multi-Krum aggregation.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017. With ``n`` clients of which at most ``f`` are
Byzantine (``n > 2f + 2``), each client's score is the sum of squared Euclidean distances to its
``n - f - 2`` nearest other updates. Krum outputs the update with the lowest score; Multi-Krum
averages the ``m`` updates with the lowest scores (default ``m = n - f``). Ties go to the lower
row index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import (
    AggregationResult,
    ClientReport,
    Defense,
    InvalidRoundError,
    RoundContext,
    register,
)

GRAM_CHUNK = 65536


def pairwise_sq_distances(updates: Tensor, chunk: int = GRAM_CHUNK) -> Tensor:
    """Squared Euclidean distances between all rows, float64, ``[n, n]``.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` with the Gram matrix summed in float64 over column blocks
    (float32 products per block), clamped at 0, exact zeros on the diagonal.

    Parameters
    ----------
    updates : Tensor
        float32, shape ``[n, d]``.
    chunk : int
        Columns per block.

    Returns
    -------
    Tensor
        float64, shape ``[n, n]``.
    """
    n, d = updates.shape
    gram = torch.zeros(n, n, dtype=torch.float64)
    for start in range(0, d, chunk):
        block = updates[:, start : start + chunk]
        gram += (block @ block.T).to(torch.float64)
    sq = gram.diagonal()
    dist = torch.clamp(sq[:, None] + sq[None, :] - 2.0 * gram, min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def krum_scores(updates: Tensor, f: int) -> Tensor:
    """Krum score of every row: sum of squared distances to its ``n - f - 2`` nearest others.

    Parameters
    ----------
    updates : Tensor
        float32, shape ``[n, d]``.
    f : int
        Assumed number of Byzantine clients; requires ``n > 2f + 2``.

    Returns
    -------
    Tensor
        float64, shape ``[n]``.

    Raises
    ------
    InvalidRoundError
        ``f < 0`` or ``n <= 2f + 2``.
    """
    n = updates.shape[0]
    if f < 0 or n <= 2 * f + 2:
        raise InvalidRoundError(f"Krum needs n > 2f + 2 (n={n}, f={f})")
    dist = pairwise_sq_distances(updates)
    dist.fill_diagonal_(float("inf"))
    nearest = torch.sort(dist, dim=1).values[:, : n - f - 2]
    return nearest.sum(dim=1)


def default_f(n: int) -> int:
    """Largest ``f`` Krum tolerates with ``n`` clients: ``(n - 3) // 2`` (at least 0)."""
    return max((n - 3) // 2, 0)


@register
class KrumDefense(Defense):
    """Krum (Blanchard et al. 2017): the single most central update.

    Parameters
    ----------
    f : int, optional
        Assumed Byzantine count; default the largest tolerated, ``(n - 3) // 2``.
    """

    name = "krum"

    def __init__(self, f: int | None = None) -> None:
        self.f = f

    def params(self) -> dict[str, Any]:
        """``{"f": f}``."""
        return {"f": self.f}

    def _selected(self, n: int, f: int) -> int:
        return 1

    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        n = len(client_ids)
        f = default_f(n) if self.f is None else self.f
        scores = krum_scores(updates, f)
        m = self._selected(n, f)
        order = sorted(range(n), key=lambda i: (float(scores[i]), i))
        chosen = set(order[:m])
        clients = [
            ClientReport(
                client_id=cid,
                coefficient=1.0 / m if i in chosen else 0.0,
                flagged=i not in chosen,
                reason="selected (lowest Krum score)" if i in chosen else "not selected",
                scores={"krum": float(scores[i])},
                features={"rank": float(order.index(i))},
            )
            for i, cid in enumerate(client_ids)
        ]
        return self._linear_result(updates, clients, ctx, {"f": f, "selected": m})


@register
class MultiKrumDefense(KrumDefense):
    """Multi-Krum (Blanchard et al. 2017): mean of the ``m`` lowest-score updates.

    Parameters
    ----------
    f : int, optional
        Assumed Byzantine count; default ``(n - 3) // 2``.
    m : int, optional
        Updates averaged; default ``n - f``.
    """

    name = "multikrum"

    def __init__(self, f: int | None = None, m: int | None = None) -> None:
        super().__init__(f)
        self.m = m

    def params(self) -> dict[str, Any]:
        """``{"f": f, "m": m}``."""
        return {"f": self.f, "m": self.m}

    def _selected(self, n: int, f: int) -> int:
        m = n - f if self.m is None else self.m
        if not 1 <= m <= n:
            raise InvalidRoundError(f"Multi-Krum needs 1 <= m <= n (n={n}, m={m})")
        return m
