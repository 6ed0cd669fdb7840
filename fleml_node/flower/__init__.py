"""FLEML from Flower: the project's defenses as Flower (1.42, message-based API) strategies.

    from fleml_node.flower import FLEMLStrategy
    strategy = FLEMLStrategy(model=net, validation=(x_val, y_val))   # in a ServerApp's main
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), ...)

Needs Flower: ``pip install '.[flower]'`` (this checkout: tools/setup.sh installs it into
``.fleml/flower-venv``; see README, "Use FLEML from Flower"). See :mod:`.strategy` for what a
round does and :mod:`.client` for what a ClientApp replies.
"""

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fleml_node.flower needs Flower: pip install '.[flower]' "
                      "(or use .fleml/flower-venv/bin/python, see README)") from exc

from .client import client_id, global_params, train_content, train_reply
from .strategy import (
    STRATEGIES,
    DefenseStrategy,
    FedAvgStrategy,
    FLEMLStrategy,
    FLTrustStrategy,
    KrumStrategy,
    MedianStrategy,
    MultiKrumStrategy,
    RoundReport,
    TrimmedMeanStrategy,
    make_strategy,
)

__all__ = [
    "STRATEGIES", "DefenseStrategy", "FLEMLStrategy", "FLTrustStrategy", "FedAvgStrategy",
    "KrumStrategy", "MedianStrategy", "MultiKrumStrategy", "RoundReport",
    "TrimmedMeanStrategy", "client_id", "global_params", "make_strategy", "train_content",
    "train_reply",
]
