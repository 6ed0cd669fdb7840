"""Detection precision / recall / F1 against a known malicious set."""

from __future__ import annotations

import pytest
import torch

from fleml_node.defense import AggregationResult, ClientReport, DetectionTracker, detection_metrics
from fleml_node.defense.metrics import DetectionMetrics, suppressed_ids

IDS = ["a", "b", "c", "d", "e"]


def test_counts_and_ratios_by_hand() -> None:
    m = detection_metrics(["a", "b", "c"], ["a", "b", "d"], IDS)
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 1, 1)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)


def test_undefined_ratios_are_none() -> None:
    nothing = detection_metrics([], ["a"], IDS)
    assert nothing.precision is None and nothing.recall == 0.0 and nothing.f1 is None
    clean = detection_metrics(["a"], [], IDS)
    assert clean.precision == 0.0 and clean.recall is None
    assert DetectionMetrics(0, 0, 1, 0).f1 is None
    assert DetectionMetrics(0, 1, 1, 0).f1 == 0.0
    total = DetectionMetrics(0, 1, 1, 0) + DetectionMetrics(1, 0, 0, 2)
    assert total == DetectionMetrics(1, 1, 1, 2)


def test_unknown_predicted_id_raises() -> None:
    with pytest.raises(ValueError, match="not in the round"):
        detection_metrics(["z"], [], IDS)


def _result(coefficients: list[float], flagged: list[bool]) -> AggregationResult:
    clients = [
        ClientReport(client_id=cid, coefficient=c, flagged=f)
        for cid, c, f in zip(IDS, coefficients, flagged, strict=True)
    ]
    return AggregationResult("x", {}, torch.zeros(1), clients)


def test_suppressed_counts_low_weights() -> None:
    # cutoff 0.1 / 5 = 0.02
    result = _result([0.0, 0.01, 0.3, 0.3, 0.39], [True, False, False, False, False])
    assert suppressed_ids(result) == ["a", "b"]
    assert suppressed_ids(result, fraction=1.0) == ["a", "b"]
    assert suppressed_ids(result, fraction=1.6) == ["a", "b", "c", "d"]


def test_tracker_accumulates_rounds() -> None:
    tracker = DetectionTracker()
    first = tracker.update(_result([0.0, 0.25, 0.25, 0.25, 0.25], [True] + [False] * 4), ["a"])
    assert first["flagged"]["precision"] == 1.0
    second = _result([0.25, 0.0, 0.25, 0.25, 0.25], [False, True, False, False, False])
    tracker.update(second, ["a"])
    overall = tracker.overall()["flagged"]
    assert (overall["tp"], overall["fp"], overall["fn"], overall["tn"]) == (1, 1, 1, 7)
    assert overall["precision"] == 0.5 and overall["recall"] == 0.5
