"""Detection quality of an aggregator against a known set of malicious clients.

Precision, recall and F1 as used to evaluate FLEML's detector ("Entropy-guided meta-learning
defense against data poisoning attacks in blockchain-assisted federated learning",
Information Sciences, 2026, doi:10.1016/j.ins.2026.123389, reports 92% detection precision).
Two predicted sets are scored: the **flagged** clients (excluded by the aggregator) and the
**suppressed** clients, whose effective coefficient is below ``fraction / n`` (default a tenth
of an even share; flagged clients included), which also credits soft down-weighting.
Undefined ratios (nothing predicted, no malicious client) are ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .base import AggregationResult


@dataclass(frozen=True)
class DetectionMetrics:
    """Confusion counts of a predicted malicious set and the ratios derived from them."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        """``tp / (tp + fp)``; ``None`` when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """``tp / (tp + fn)``; ``None`` when there is no malicious client."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """Harmonic mean of precision and recall; ``None`` if either is undefined."""
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: DetectionMetrics) -> DetectionMetrics:
        return DetectionMetrics(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    def to_dict(self) -> dict[str, Any]:
        """Counts and ratios, JSON-ready."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def detection_metrics(
    predicted: Iterable[str], malicious: Iterable[str], clients: Iterable[str]
) -> DetectionMetrics:
    """Score a predicted malicious set.

    Parameters
    ----------
    predicted : iterable of str
        Ids judged malicious.
    malicious : iterable of str
        Ground-truth malicious ids (ids not in ``clients`` are ignored).
    clients : iterable of str
        All ids of the round.

    Returns
    -------
    DetectionMetrics

    Raises
    ------
    ValueError
        A predicted id is not a client of the round.
    """
    everyone = set(clients)
    pred, truth = set(predicted), set(malicious) & everyone
    if not pred <= everyone:
        raise ValueError(f"predicted ids not in the round: {sorted(pred - everyone)}")
    tp = len(pred & truth)
    fp = len(pred - truth)
    fn = len(truth - pred)
    return DetectionMetrics(tp, fp, fn, len(everyone) - tp - fp - fn)


def suppressed_ids(result: AggregationResult, fraction: float = 0.1) -> list[str]:
    """Clients flagged or with effective coefficient below ``fraction / n``.

    Parameters
    ----------
    result : AggregationResult
        A round's result (for non-linear methods only flagged clients count).
    fraction : float
        Share of an even weight below which a client counts as suppressed.

    Returns
    -------
    list of str
    """
    cutoff = fraction / len(result.clients)
    return [
        c.client_id
        for c in result.clients
        if c.flagged or (c.coefficient is not None and abs(c.coefficient) < cutoff)
    ]


@dataclass
class DetectionTracker:
    """Per-round and accumulated detection metrics of one aggregator.

    Parameters
    ----------
    fraction : float
        Threshold of :func:`suppressed_ids`.
    """

    fraction: float = 0.1
    rounds: list[dict[str, DetectionMetrics]] = field(default_factory=list)

    def update(self, result: AggregationResult, malicious: Iterable[str]) -> dict[str, Any]:
        """Score one round; returns its metrics as a dict (``flagged`` and ``suppressed``)."""
        ids = [c.client_id for c in result.clients]
        truth = set(malicious)
        entry = {
            "flagged": detection_metrics(result.flagged_ids, truth, ids),
            "suppressed": detection_metrics(suppressed_ids(result, self.fraction), truth, ids),
        }
        self.rounds.append(entry)
        return {k: v.to_dict() for k, v in entry.items()}

    def overall(self) -> dict[str, Any]:
        """Metrics from the confusion counts summed over all rounds so far."""
        total = {k: DetectionMetrics(0, 0, 0, 0) for k in ("flagged", "suppressed")}
        for entry in self.rounds:
            total = {k: total[k] + entry[k] for k in total}
        return {k: v.to_dict() for k, v in total.items()}
