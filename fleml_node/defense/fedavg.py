"""Federated averaging.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017: the aggregate is the sample-weighted mean of
the client updates, ``c_i = n_i / sum_j n_j`` (uniform when no counts are given). No defense.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import AggregationResult, ClientReport, Defense, RoundContext, register


@register
class FedAvgDefense(Defense):
    """Sample-weighted average (McMahan et al. 2017); nobody is flagged."""

    name = "fedavg"

    def params(self) -> dict[str, Any]:
        """No parameters."""
        return {}

    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        n = len(client_ids)
        counts = [1] * n if ctx.sample_counts is None else [int(c) for c in ctx.sample_counts]
        total = sum(counts)
        clients = [
            ClientReport(
                client_id=cid,
                coefficient=count / total,
                reason="weighted by sample count" if ctx.sample_counts is not None else "uniform",
                features={"samples": float(count)},
            )
            for cid, count in zip(client_ids, counts, strict=True)
        ]
        return self._linear_result(updates, clients, ctx)
