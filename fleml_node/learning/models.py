"""Small CNNs for CPU federated simulation.

* :class:`MnistCNN` (MNIST / Fashion-MNIST, ~207k parameters) is a slimmed version of the
  two-convolution CNN of McMahan et al. (2017), "Communication-Efficient Learning of Deep
  Networks from Decentralized Data" (FedAvg): 3x3 convolutions with 16 and 32 channels
  instead of 5x5 with 32 and 64, and a 128-unit hidden layer instead of 512, so that a
  600-sample client epoch takes a fraction of a second on one CPU core.
* :class:`Cifar10CNN` (~190k parameters) stacks three 3x3 convolution blocks with
  GroupNorm (Wu and He 2018) and max pooling, then a 128-unit hidden layer.

No model uses BatchNorm: its running statistics are buffers, not parameters, and averaging
or robust-weighting them like weights is ill-defined (and its integer batch counter cannot
travel as float32).  GroupNorm normalises per sample, so it needs no buffers, and plain ReLU
CNNs need nothing.  There is no dropout either: it would draw from torch's global RNG and
break per-client reproducibility.  Every model therefore has a state dict made exactly of
trainable float32 parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MnistCNN(nn.Module):
    """Two conv layers (3x3, 16 and 32 channels, each + ReLU + 2x2 max-pool), FC 128, FC out.

    Parameters
    ----------
    in_channels : int, default 1
        Image channels.
    num_classes : int, default 10
        Output logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError("in_channels must be >= 1 and num_classes >= 2")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for ``N x C x 28 x 28`` images."""
        return self.classifier(self.features(x))


class Cifar10CNN(nn.Module):
    """Three conv blocks (3x3 conv, GroupNorm, ReLU, 2x2 max-pool: 32, 64, 64), FC 128, FC out.

    Parameters
    ----------
    in_channels : int, default 3
        Image channels.
    num_classes : int, default 10
        Output logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError("in_channels must be >= 1 and num_classes >= 2")

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1),
                nn.GroupNorm(8, cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*block(in_channels, 32), *block(32, 64), *block(64, 64))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for ``N x C x 32 x 32`` images."""
        return self.classifier(self.features(x))


MODELS: dict[str, type[nn.Module]] = {"mnist_cnn": MnistCNN, "cifar10_cnn": Cifar10CNN}
DATASET_MODELS = {"mnist": "mnist_cnn", "fashion_mnist": "mnist_cnn", "cifar10": "cifar10_cnn"}


def build_model(name: str, seed: int, num_classes: int = 10) -> nn.Module:
    """Create a model with deterministic initial weights, without touching the global RNG.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (``"mnist_cnn"``, ``"cifar10_cnn"``) or of
        :data:`DATASET_MODELS` (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``).
    seed : int
        Initialisation seed; equal seeds give bitwise-equal weights.
    num_classes : int, default 10
        Output logits.

    Returns
    -------
    torch.nn.Module
        The model in training mode, on the CPU.
    """
    key = DATASET_MODELS.get(name, name)
    if key not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose one of {sorted(MODELS)} or a dataset name "
            f"{sorted(DATASET_MODELS)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[key](num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of scalars in the model's state dict."""
    return sum(t.numel() for t in model.state_dict().values())
