"""Meta-learned weighting function of FLEML.

FLEML ("Entropy-guided meta-learning defense against data poisoning attacks in
blockchain-assisted federated learning", Information Sciences, 2026,
doi:10.1016/j.ins.2026.123389) sets the aggregation coefficients with a meta-learned weighting
function of each client's anomaly features. Here that function is

``logit_i = prior_i + v . x_i + w2 . tanh(W1 x_i + b1)``,
``prior_i = -prior_scale * score_i (+ log_sample_share_i with sample_prior)``

where ``x_i`` are the client's features (:data:`FEATURES`: robust z-scores of the round's
signals, its anomaly score and its history) and ``theta = (v, W1, b1, w2)`` is a two-layer MLP
with a linear skip connection (``F + hidden * (F + 2)`` parameters, 58 by default). ``v`` and
``w2`` start at zero, so before any training the weights follow the prior
``exp(prior_i)``; the network learns a correction, the skip term quickly (it
needs no hidden unit to move first), the hidden units the non-linear part. Coefficients are
the softmax of the logits over the clients that are not flagged; flagged clients get exactly 0.

``theta`` is trained online by :class:`~fleml_node.defense.fleml.FLEMLDefense` with a
one-step look-ahead on a clean validation set, using the small Adam optimiser implemented here
so that its whole state is a few float64 vectors. The state (``theta``, Adam moments, step,
per-client history) round-trips exactly through JSON (:meth:`MetaWeighter.state_dict`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = (
    "z_cos",
    "z_norm",
    "z_vne",
    "z_ce",
    "z_mi",
    "z_val",
    "score",
    "ema_score",
    "log_ema_share",
    "log_sample_share",
)
"""Input features, in order. ``z_*`` are oriented robust z-scores (positive = anomalous, except
``z_norm`` which is the signed z of the log norm ratio); ``score`` is the round's anomaly score;
``ema_score`` / ``log_ema_share`` are the client's history (EMA of its anomaly score including
this round; log of its past coefficient times the number of clients, 0 = an even share);
``log_sample_share`` is the log of its reported sample count over the round's median, clipped
to [-2, 2] (0 without counts, and always 0 unless FLEML's ``sample_prior`` is on: a claimed
count is not something an auditor can check)."""

FEATURE_CLIP = 10.0
_MIN_SHARE = 1e-2


class MetaWeighter:
    """The weighting MLP, its Adam state and the per-client history.

    Parameters
    ----------
    hidden : int
        Hidden units of the MLP.
    lr : float
        Adam learning rate.
    prior_scale : float
        Weight of the anomaly-score prior in the logits.
    ema : float
        Smoothing factor of the per-client history, in ``(0, 1]``.
    seed : int
        Seed of the initial ``W1`` (``N(0, 1/F)``).
    sample_prior : bool
        Add the ``log_sample_share`` feature to the prior logits (FedAvg-like weighting).
    """

    def __init__(
        self,
        hidden: int = 4,
        lr: float = 0.05,
        prior_scale: float = 1.0,
        ema: float = 0.3,
        seed: int = 0,
        sample_prior: bool = True,
    ) -> None:
        if hidden < 1:
            raise ValueError("hidden must be >= 1")
        if not 0.0 < ema <= 1.0:
            raise ValueError("ema must be in (0, 1]")
        self.hidden = hidden
        self.lr = lr
        self.prior_scale = prior_scale
        self.ema = ema
        self.sample_prior = sample_prior
        n_features = len(FEATURES)
        gen = torch.Generator().manual_seed(seed)
        w1 = torch.randn(hidden, n_features, generator=gen, dtype=torch.float64)
        w1 /= math.sqrt(n_features)
        self.theta = torch.cat(
            [
                torch.zeros(n_features, dtype=torch.float64),
                w1.reshape(-1),
                torch.zeros(2 * hidden, dtype=torch.float64),
            ]
        )
        self.adam_m = torch.zeros_like(self.theta)
        self.adam_v = torch.zeros_like(self.theta)
        self.adam_step = 0
        self.history: dict[str, dict[str, float]] = {}

    @property
    def n_params(self) -> int:
        """Number of MLP parameters."""
        return self.theta.numel()

    def logits(self, features: Tensor, theta: Tensor | None = None) -> Tensor:
        """Logits of each client.

        Parameters
        ----------
        features : Tensor
            float64, shape ``[n, F]`` in :data:`FEATURES` order.
        theta : Tensor, optional
            Parameters to use (default the current ones); pass a tensor requiring grad to
            differentiate.

        Returns
        -------
        Tensor
            float64, shape ``[n]``.
        """
        theta = self.theta if theta is None else theta
        f, h = features.shape[1], self.hidden
        v = theta[:f]
        w1 = theta[f : f + h * f].reshape(h, f)
        b1 = theta[f + h * f : f + h * f + h]
        w2 = theta[f + h * f + h :]
        score = features[:, FEATURES.index("score")]
        prior = -self.prior_scale * score
        if self.sample_prior:
            prior = prior + features[:, FEATURES.index("log_sample_share")]
        return prior + features @ v + torch.tanh(features @ w1.T + b1) @ w2

    def coefficients(self, features: Tensor, active: Tensor, theta: Tensor | None = None) -> Tensor:
        """Softmax of the logits over the active (non-flagged) clients; 0 elsewhere.

        Parameters
        ----------
        features : Tensor
            float64, shape ``[n, F]``.
        active : Tensor
            bool, shape ``[n]``, at least one True.
        theta : Tensor, optional
            As in :meth:`logits`.

        Returns
        -------
        Tensor
            float64, shape ``[n]``, summing to 1.
        """
        logits = self.logits(features, theta)
        masked = torch.where(active, logits, torch.full_like(logits, -math.inf))
        return torch.softmax(masked, dim=0)

    def adam_update(self, grad: Tensor) -> None:
        """One Adam step (beta1 0.9, beta2 0.999, eps 1e-8) on ``theta``."""
        self.adam_step += 1
        self.adam_m.mul_(0.9).add_(grad, alpha=0.1)
        self.adam_v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        m_hat = self.adam_m / (1 - 0.9**self.adam_step)
        v_hat = self.adam_v / (1 - 0.999**self.adam_step)
        self.theta -= self.lr * m_hat / (v_hat.sqrt() + 1e-8)

    def smoothed_scores(self, client_ids: Sequence[str], scores: Tensor) -> Tensor:
        """EMA of each client's anomaly score including this round's.

        ``(1 - ema) * past + ema * score``; a client seen for the first time gets its score.

        Parameters
        ----------
        client_ids : sequence of str
            The round's clients.
        scores : Tensor
            This round's anomaly scores, shape ``[n]``.

        Returns
        -------
        Tensor
            float64, shape ``[n]``.
        """
        out = scores.to(torch.float64).clone()
        for i, cid in enumerate(client_ids):
            past = self.history.get(cid)
            if past is not None:
                out[i] = (1 - self.ema) * past["ema_score"] + self.ema * out[i]
        return out

    def log_past_shares(self, client_ids: Sequence[str]) -> Tensor:
        """Log of each client's EMA share (coefficient times n, clipped below at 0.01).

        Unseen clients get 0 (an even share).

        Parameters
        ----------
        client_ids : sequence of str
            The round's clients.

        Returns
        -------
        Tensor
            float64, shape ``[n]``.
        """
        return torch.tensor(
            [
                math.log(max(self.history[cid]["ema_share"], _MIN_SHARE))
                if cid in self.history
                else 0.0
                for cid in client_ids
            ],
            dtype=torch.float64,
        )

    def update_history(
        self, client_ids: Sequence[str], smoothed: Sequence[float], shares: Sequence[float]
    ) -> None:
        """Store the smoothed scores and fold this round's shares into the history.

        Parameters
        ----------
        client_ids : sequence of str
            The round's clients.
        smoothed : sequence of float
            Output of :meth:`smoothed_scores` for this round.
        shares : sequence of float
            Coefficient times the number of clients (1 = an even share, 0 = flagged).
        """
        for cid, score, share in zip(client_ids, smoothed, shares, strict=True):
            past = self.history.get(cid)
            if past is None:
                self.history[cid] = {"ema_score": score, "ema_share": share, "rounds": 1}
            else:
                past["ema_score"] = score
                past["ema_share"] = (1 - self.ema) * past["ema_share"] + self.ema * share
                past["rounds"] += 1

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state; floats stored with ``float.hex`` so it round-trips exactly."""
        return {
            "theta": _hex_list(self.theta),
            "adam_m": _hex_list(self.adam_m),
            "adam_v": _hex_list(self.adam_v),
            "adam_step": self.adam_step,
            "history": {
                cid: {
                    "ema_score": float(h["ema_score"]).hex(),
                    "ema_share": float(h["ema_share"]).hex(),
                    "rounds": int(h["rounds"]),
                }
                for cid, h in sorted(self.history.items())
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (hyper-parameters are the constructor's).

        Raises
        ------
        ValueError
            The saved ``theta`` has another size than this weighter's.
        """
        self.theta = _from_hex_list(state["theta"], self.n_params)
        self.adam_m = _from_hex_list(state["adam_m"], self.n_params)
        self.adam_v = _from_hex_list(state["adam_v"], self.n_params)
        self.adam_step = int(state["adam_step"])
        self.history = {
            cid: {
                "ema_score": float.fromhex(h["ema_score"]),
                "ema_share": float.fromhex(h["ema_share"]),
                "rounds": int(h["rounds"]),
            }
            for cid, h in state["history"].items()
        }


def _hex_list(tensor: Tensor) -> list[str]:
    return [float(v).hex() for v in tensor.tolist()]


def _from_hex_list(values: Sequence[str], expected: int) -> Tensor:
    if len(values) != expected:
        raise ValueError(f"expected {expected} values, got {len(values)}")
    return torch.tensor([float.fromhex(v) for v in values], dtype=torch.float64)
