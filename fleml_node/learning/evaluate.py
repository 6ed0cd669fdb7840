"""Model evaluation: accuracy, per-class accuracy, loss and backdoor attack success rate.

The attack success rate (ASR) follows Bagdasaryan et al. (2020), "How To Backdoor Federated
Learning": the share of triggered test images, among those whose true class is not the
target, that the model classifies as the target.  The trigger is applied by a callable (for
example :meth:`fleml_node.attacks.backdoor.BackdoorAttack.stamp`), so this module does not
depend on any particular attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fleml_node.learning.runtime import resolve_device

DEFAULT_BATCH = 256


@dataclass(frozen=True)
class EvalResult:
    """Evaluation of a classifier on labelled samples.

    Attributes
    ----------
    accuracy : float
        Share of correct predictions.
    loss : float
        Mean cross-entropy.
    samples : int
        Samples evaluated.
    per_class_accuracy : tuple of float
        Accuracy per true class; ``nan`` for a class with no sample.
    class_counts : tuple of int
        Samples per true class.
    """

    accuracy: float
    loss: float
    samples: int
    per_class_accuracy: tuple[float, ...]
    class_counts: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict (``nan`` per-class accuracies become ``None``)."""
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "samples": self.samples,
            "per_class_accuracy": [None if math.isnan(a) else a for a in self.per_class_accuracy],
            "class_counts": list(self.class_counts),
        }


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def predict_logits(
    model: nn.Module,
    x: Tensor,
    batch_size: int = DEFAULT_BATCH,
    device: str | torch.device | None = None,
) -> Tensor:
    """Return the model's logits for ``x`` (eval mode, no autograd), batch by batch.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier; left in eval mode.
    x : Tensor
        Inputs, first dimension the samples.
    batch_size : int, default 256
        Samples per forward pass.
    device : str or torch.device, optional
        Where to run the forward passes (default the CPU); the model is moved there and left
        there, the logits come back on the CPU.
    """
    _check_batch(batch_size)
    dev = resolve_device(device)
    if dev.type != "cpu":
        model.to(dev)
    model.eval()
    with torch.inference_mode():
        chunks = [model(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int = 10,
    batch_size: int = DEFAULT_BATCH,
    device: str | torch.device | None = None,
) -> EvalResult:
    """Evaluate a classifier.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier producing ``num_classes`` logits.
    x : Tensor
        Inputs (``N x ...``), N >= 1.
    y : Tensor
        int64 labels ``N`` in ``0 .. num_classes - 1``.
    num_classes : int, default 10
        Number of classes.
    batch_size : int, default 256
        Samples per forward pass.
    device : str or torch.device, optional
        As in :func:`predict_logits`.

    Returns
    -------
    EvalResult
    """
    if y.dim() != 1 or y.dtype != torch.int64 or len(y) != len(x):
        raise ValueError("y must be a 1-D int64 tensor with one label per input")
    if len(y) == 0:
        raise ValueError("cannot evaluate on zero samples")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    logits = predict_logits(model, x, batch_size, device)
    if logits.shape != (len(y), num_classes):
        raise ValueError(
            f"model gave logits {tuple(logits.shape)}, expected ({len(y)}, {num_classes})"
        )
    loss = float(F.cross_entropy(logits.to(torch.float64), y))
    correct = logits.argmax(dim=1) == y
    counts = torch.bincount(y, minlength=num_classes)
    hits = torch.bincount(y[correct], minlength=num_classes)
    per_class = tuple(
        float(h) / float(c) if c else math.nan
        for h, c in zip(hits.tolist(), counts.tolist(), strict=True)
    )
    return EvalResult(
        accuracy=float(correct.to(torch.float64).mean()),
        loss=loss,
        samples=len(y),
        per_class_accuracy=per_class,
        class_counts=tuple(counts.tolist()),
    )


def attack_success_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target_class: int,
    stamp: Callable[[Tensor], Tensor],
    batch_size: int = DEFAULT_BATCH,
    device: str | torch.device | None = None,
) -> float:
    """Share of triggered non-target test images classified as ``target_class``.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier.
    x : Tensor
        Clean test images ``N x C x H x W``.
    y : Tensor
        Their true int64 labels.
    target_class : int
        The backdoor's target label.
    stamp : callable
        Returns triggered copies of images, e.g. ``BackdoorAttack.stamp``.
    batch_size : int, default 256
        Samples per forward pass.
    device : str or torch.device, optional
        As in :func:`predict_logits`.

    Returns
    -------
    float
        ASR in [0, 1] over the images whose true label differs from ``target_class``.
    """
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError("y must be a 1-D tensor with one label per image")
    keep = y != target_class
    if not bool(keep.any()):
        raise ValueError(f"no test image has a true class other than {target_class}")
    preds = predict_logits(model, stamp(x[keep]), batch_size, device).argmax(dim=1)
    return float((preds == target_class).to(torch.float64).mean())
