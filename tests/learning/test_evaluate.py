"""Evaluation numbers on hand-checked cases: accuracy, per-class accuracy, loss, ASR."""

import math

import pytest
import torch
from torch import nn

from fleml_node.attacks import BackdoorAttack, Trigger, stamp_trigger
from fleml_node.learning.evaluate import attack_success_rate, evaluate


class Logits(nn.Module):
    """Returns its input: the 'images' are the logits themselves."""

    def forward(self, x):
        return x


def test_evaluate_hand_checked():
    x = torch.tensor(
        [
            [2.0, 0.0, 0.0],  # true 0, predicted 0
            [0.0, 1.0, 0.0],  # true 1, predicted 1
            [0.0, 0.0, 1.0],  # true 0, predicted 2
            [0.0, 3.0, 0.0],  # true 2, predicted 1
        ]
    )
    y = torch.tensor([0, 1, 0, 2])
    result = evaluate(Logits(), x, y, num_classes=3, batch_size=3)
    assert result.accuracy == 0.5
    assert result.samples == 4
    assert result.per_class_accuracy == (0.5, 1.0, 0.0)
    assert result.class_counts == (2, 1, 1)
    e = math.e
    expected = (
        -(
            math.log(e**2 / (e**2 + 2))
            + math.log(e / (e + 2))
            + math.log(1 / (e + 2))
            + math.log(1 / (e**3 + 2))
        )
        / 4
    )
    assert result.loss == pytest.approx(expected, rel=1e-6)


def test_absent_class_is_nan_and_json_null():
    result = evaluate(Logits(), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]), num_classes=3)
    assert result.per_class_accuracy[0] == 1.0 and math.isnan(result.per_class_accuracy[1])
    assert result.to_dict()["per_class_accuracy"] == [1.0, None, None]


def test_evaluate_validates():
    with pytest.raises(ValueError, match="labels"):
        evaluate(Logits(), torch.zeros(1, 3), torch.tensor([3]), num_classes=3)
    with pytest.raises(ValueError, match="logits"):
        evaluate(Logits(), torch.zeros(2, 4), torch.tensor([0, 1]), num_classes=3)


class TriggerDetector(nn.Module):
    """Predicts class 1 when the bottom-right pixel is bright, else the image's mean class."""

    def forward(self, x):
        logits = torch.zeros(len(x), 3)
        logits[:, 0] = 0.5
        logits[:, 1] = (x[:, 0, -2, -2] > 0.5).float()
        logits[:, 2] = x[:, 0, 0, 0]
        return logits


def test_attack_success_rate_hand_checked():
    x = torch.zeros(5, 1, 6, 6)
    x[4, 0, 0, 0] = 0.8  # clean logits (0.5, 0, 0.8) -> 2; triggered (0.5, 1, 0.8) -> 1
    y = torch.tensor([0, 1, 2, 1, 2])
    # only images with y != 1 count (indices 0, 2, 4): the 1x1 trigger turns all to class 1
    stamp_all = BackdoorAttack(target_class=1, trigger=Trigger(size=1, margin=1)).stamp
    assert attack_success_rate(TriggerDetector(), x, y, 1, stamp_all) == 1.0
    # a trigger elsewhere misses the detector: clean predictions are 0, 0, 2 -> ASR 0
    elsewhere = Trigger(size=1, margin=1, corner="top_left")
    stamp_elsewhere = lambda im: stamp_trigger(im, elsewhere)  # noqa: E731
    assert attack_success_rate(TriggerDetector(), x, y, 1, stamp_elsewhere) == 0.0
    with pytest.raises(ValueError, match="other than"):
        attack_success_rate(TriggerDetector(), x[:1], torch.tensor([1]), 1, stamp_all)
