"""FLTrust aggregation.

Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
NDSS 2021. The server trains on a small clean root dataset to get its own update ``g_0``. Each
client's trust score is ``TS_i = ReLU(cos(g_i, g_0))``; each update is rescaled to the norm of
``g_0``; the aggregate is ``sum_i TS_i * (|g_0| / |g_i|) * g_i / sum_j TS_j``. When every trust
score is 0 the aggregate is the zero vector (all coefficients 0), as in the paper.
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
    row_norms,
)


def root_update(ctx: RoundContext, dim: int) -> Tensor:
    """The server update ``g_0`` from the context (calling it if it is a callable).

    Parameters
    ----------
    ctx : RoundContext
        Must carry ``root_update``.
    dim : int
        Expected length.

    Returns
    -------
    Tensor
        float32, shape ``[dim]``.

    Raises
    ------
    InvalidRoundError
        Missing, wrong shape or non-finite.
    """
    if ctx.root_update is None:
        raise InvalidRoundError("FLTrust needs ctx.root_update (the root dataset update g_0)")
    g0 = ctx.root_update() if callable(ctx.root_update) else ctx.root_update
    g0 = g0.detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    if g0.shape != (dim,):
        raise InvalidRoundError(f"root update has shape {tuple(g0.shape)}, expected ({dim},)")
    if not bool(torch.isfinite(g0).all()):
        raise InvalidRoundError("root update has non-finite values")
    return g0


@register
class FLTrustDefense(Defense):
    """FLTrust (Cao et al. 2021); clients with trust score 0 are flagged."""

    name = "fltrust"

    def params(self) -> dict[str, Any]:
        """No parameters."""
        return {}

    def _aggregate(
        self, updates: Tensor, client_ids: list[str], ctx: RoundContext
    ) -> AggregationResult:
        g0 = root_update(ctx, updates.shape[1])
        g0_norm = float(torch.linalg.vector_norm(g0, dtype=torch.float64))
        norms = row_norms(updates)
        dots = (updates @ g0).to(torch.float64)
        denom = norms * g0_norm
        cosines = torch.where(denom > 0, dots / torch.where(denom > 0, denom, 1.0), 0.0)
        trust = torch.relu(cosines)
        total = float(trust.sum())
        clients = []
        for i, cid in enumerate(client_ids):
            ts, norm = float(trust[i]), float(norms[i])
            coefficient = ts / total * (g0_norm / norm) if ts > 0.0 else 0.0
            clients.append(
                ClientReport(
                    client_id=cid,
                    coefficient=coefficient,
                    flagged=ts == 0.0,
                    reason="trust score 0 (cosine to root update <= 0)" if ts == 0.0 else "trusted",
                    scores={"trust": ts},
                    features={"cosine_root": float(cosines[i]), "norm": norm},
                )
            )
        return self._linear_result(updates, clients, ctx, {"root_norm": g0_norm})
