"""The learning core: tensors in, tensors out (no chain, no IPFS).

Modules
-------
datasets   offline MNIST / Fashion-MNIST / CIFAR-10 as standardised in-memory tensors
partition  IID and Dirichlet(alpha) label-skew client splits and their summaries
models     small CPU CNNs without BatchNorm, deterministic initialisation
params     flat, ordered, named float32 parameters (ParamSpec, flatten, unflatten, deltas)
train      local training returning the update ``new - global`` and its stats
evaluate   accuracy, per-class accuracy, loss, backdoor attack success rate
runtime    torch thread count and per-client deterministic generators

Typical client round::

    data = load_dataset("mnist")
    parts = dirichlet_partition(data.y_train, num_clients=10, alpha=0.5, seed=0)
    model = build_model("mnist", seed=0)
    global_params = get_params(model)
    idx = parts[client]
    update, stats = local_train(model, global_params, data.x_train[idx], data.y_train[idx],
                                TrainConfig(), make_generator(seed, round_, client))
"""

from fleml_node.learning.datasets import (
    ImageDataset,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
)
from fleml_node.learning.evaluate import EvalResult, attack_success_rate, evaluate, predict_logits
from fleml_node.learning.models import Cifar10CNN, MnistCNN, build_model, count_parameters
from fleml_node.learning.params import (
    NamedTensors,
    ParamSpec,
    apply_update,
    flatten,
    get_params,
    params_delta,
    set_params,
    unflatten,
)
from fleml_node.learning.partition import (
    class_histogram,
    dirichlet_partition,
    format_partition_summary,
    iid_partition,
    label_skew,
)
from fleml_node.learning.runtime import configure_threads, derive_seed, make_generator
from fleml_node.learning.train import TrainConfig, TrainStats, local_train

__all__ = [
    "Cifar10CNN",
    "EvalResult",
    "ImageDataset",
    "MnistCNN",
    "NamedTensors",
    "ParamSpec",
    "TrainConfig",
    "TrainStats",
    "apply_update",
    "attack_success_rate",
    "build_model",
    "class_histogram",
    "configure_threads",
    "count_parameters",
    "derive_seed",
    "dirichlet_partition",
    "evaluate",
    "flatten",
    "format_partition_summary",
    "get_params",
    "iid_partition",
    "label_skew",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "local_train",
    "make_generator",
    "params_delta",
    "predict_logits",
    "set_params",
    "unflatten",
]
