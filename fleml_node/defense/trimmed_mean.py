"""Coordinate-wise trimmed-mean aggregation.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018: for every coordinate, drop the ``k = floor(beta * n)`` largest
and ``k`` smallest client values and average the rest.

The average is accumulated in float64 one sorted position at a time (an order fixed by the
values, not by the BLAS or the thread count), divided once and rounded once to float32, so
replay from ``beta`` is bitwise exact.
"""

from __future__ import annotations

import math
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
    row_norms,
)
from .median import DEFAULT_CHUNK


def trim_count(n: int, beta: float) -> int:
    """Values dropped at each end: ``floor(beta * n)``.

    Parameters
    ----------
    n : int
        Number of clients.
    beta : float
        Trimmed fraction per side, ``0 <= beta < 0.5``.

    Returns
    -------
    int

    Raises
    ------
    InvalidRoundError
        ``beta`` outside ``[0, 0.5)`` or nothing left after trimming.
    """
    if not 0.0 <= beta < 0.5:
        raise InvalidRoundError(f"beta must be in [0, 0.5), got {beta}")
    k = math.floor(beta * n)
    if n - 2 * k < 1:
        raise InvalidRoundError(f"trimming {k} per side leaves no value of {n}")
    return k


def trimmed_mean(updates: Tensor, beta: float, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Coordinate-wise beta-trimmed mean.

    Parameters
    ----------
    updates : Tensor
        float32, shape ``[n, d]``.
    beta : float
        Fraction trimmed at each end, ``0 <= beta < 0.5``.
    chunk : int
        Columns per block (extra memory ``O(n * chunk)``).

    Returns
    -------
    Tensor
        float32, shape ``[d]``.
    """
    n, d = updates.shape
    k = trim_count(n, beta)
    kept = n - 2 * k
    out = torch.empty(d, dtype=torch.float32)
    for start in range(0, d, chunk):
        block = torch.sort(updates[:, start : start + chunk].T.contiguous(), dim=1).values
        acc = block[:, k].to(torch.float64)
        for j in range(k + 1, n - k):
            acc.add_(block[:, j].to(torch.float64))
        out[start : start + chunk] = (acc / kept).to(torch.float32)
    return out


@register
class TrimmedMeanDefense(Defense):
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    Parameters
    ----------
    beta : float
        Fraction of clients trimmed at each end per coordinate (default 0.1).
    """

    name = "trimmedmean"

    def __init__(self, beta: float = 0.1) -> None:
        trim_count(1, beta)  # validates beta early
        self.beta = float(beta)

    def params(self) -> dict[str, Any]:
        """``{"beta": beta}``."""
        return {"beta": self.beta}

    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        norms = row_norms(updates).tolist()
        k = trim_count(len(client_ids), self.beta)
        clients = [
            ClientReport(
                client_id=cid, reason=f"trimmed mean, {k} trimmed per side", features={"norm": nrm}
            )
            for cid, nrm in zip(client_ids, norms, strict=True)
        ]
        return AggregationResult(
            method=self.name,
            params=self.params(),
            update=trimmed_mean(updates, self.beta),
            clients=clients,
            info={"trimmed_per_side": k},
            round_number=ctx.round_number,
        )

    @classmethod
    def _replay(cls, updates: Tensor, report: Any) -> Tensor:
        return trimmed_mean(updates, float(report["params"]["beta"]))
