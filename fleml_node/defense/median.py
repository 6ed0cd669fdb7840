"""Coordinate-wise median aggregation.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018: every coordinate of the aggregate is the median of that
coordinate over the clients. With an even number of clients the median is the mean of the two
middle values (computed exactly: their float64 sum halved, rounded once to float32).

Replay recomputes the same function from the updates; it is deterministic because sorting
selects values, never reorders arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import AggregationResult, ClientReport, Defense, RoundContext, register, row_norms

DEFAULT_CHUNK = 16384


def coordinate_median(updates: Tensor, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Coordinate-wise median of the rows.

    Columns are processed in blocks of ``chunk`` (transposed to contiguous rows and sorted), so
    the extra memory is ``O(n * chunk)`` whatever ``d`` is.

    Parameters
    ----------
    updates : Tensor
        float32, shape ``[n, d]``, ``n >= 1``.
    chunk : int
        Columns per block.

    Returns
    -------
    Tensor
        float32, shape ``[d]``.
    """
    n, d = updates.shape
    out = torch.empty(d, dtype=torch.float32)
    lo, hi = (n - 1) // 2, n // 2
    for start in range(0, d, chunk):
        block = torch.sort(updates[:, start : start + chunk].T.contiguous(), dim=1).values
        if lo == hi:
            out[start : start + chunk] = block[:, lo]
        else:
            pair = block[:, lo].to(torch.float64) + block[:, hi].to(torch.float64)
            out[start : start + chunk] = (pair / 2).to(torch.float32)
    return out


@register
class MedianDefense(Defense):
    """Coordinate-wise median (Yin et al. 2018); ignores sample counts; nobody is flagged."""

    name = "median"

    def params(self) -> dict[str, Any]:
        """No parameters."""
        return {}

    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        norms = row_norms(updates).tolist()
        clients = [
            ClientReport(client_id=cid, reason="coordinate-wise median", features={"norm": nrm})
            for cid, nrm in zip(client_ids, norms, strict=True)
        ]
        return AggregationResult(
            method=self.name,
            params=self.params(),
            update=coordinate_median(updates),
            clients=clients,
            round_number=ctx.round_number,
        )

    @classmethod
    def _replay(cls, updates: Tensor, report: Any) -> Tensor:
        return coordinate_median(updates)
