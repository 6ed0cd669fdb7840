"""Benchmark of the learning core on this CPU.

Usage::

    .venv/bin/python benchmarks/learning_bench.py [--quick] [--threads N] [--seed S] [--out PATH]

Parts
-----
(a) seconds per client-epoch of each model (600 samples, batch 32; 1 and 2 torch threads,
    interleaved): the MNIST CNN on real MNIST samples; the CIFAR-10 CNN on random tensors
    of CIFAR shape, because the CIFAR-10 files are not installed here (timing does not
    depend on the pixel values).  The machine is shared, so the 1-minute load average is
    recorded around every part.
(b) the project's ``local_train`` (its data pipeline included) against a bare PyTorch loop
    over the same in-memory tensors, interleaved in one run, with the ratio of medians
    (target <= 1.2x); a ``torch.utils.data.DataLoader`` loop is shown for reference.
(c) clean FedAvg (McMahan et al. 2017; sample-weighted mean of the updates, implemented
    inline since the aggregators live in another package) with 10 clients on MNIST and
    Fashion-MNIST, Dirichlet(alpha=0.5) label skew, 30 rounds, test accuracy after every
    round; the 10-round figure is the round-10 checkpoint of the same run (constant
    learning rate and per-round seeds, so it equals a separate 10-round run).  Targets
    after 30 rounds: >= 97 % MNIST, >= 85 % Fashion-MNIST.

Results go to ``benchmarks/results/learning.json`` (``learning_quick.json`` with ``--quick``)
with the full configuration, seed, machine information and timestamps.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fleml_node.learning import (  # noqa: E402
    ParamSpec,
    TrainConfig,
    apply_update,
    build_model,
    class_histogram,
    configure_threads,
    count_parameters,
    dirichlet_partition,
    evaluate,
    flatten,
    format_partition_summary,
    get_params,
    label_skew,
    load_dataset,
    local_train,
    make_generator,
    set_params,
    unflatten,
)

CLIENT_SAMPLES = 600
EPOCH_CONFIG = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9, loss_eval_samples=0)
FEDAVG_CONFIG = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.0, loss_eval_samples=0)
FEDAVG_CLIENTS = 10
FEDAVG_ALPHA = 0.5
TARGETS = {"mnist": 0.97, "fashion_mnist": 0.85}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine_info() -> dict[str, object]:
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def with_load(part, *args) -> dict[str, object]:
    """Run a benchmark part and record the 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    result = part(*args)
    result["load_avg_1m"] = {"before": before, "after": os.getloadavg()[0]}
    return result


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# --- (a) ---------------------------------------------------------------------------------------


def train_once(model, params, x, y, seed: int) -> None:
    local_train(model, params, x, y, EPOCH_CONFIG, make_generator(seed))


def client_epoch(mnist, repeats: int, seed: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    cases = [
        (
            "mnist_cnn",
            mnist.x_train[:CLIENT_SAMPLES],
            mnist.y_train[:CLIENT_SAMPLES],
            "real MNIST training samples",
        ),
        (
            "cifar10_cnn",
            torch.randn(CLIENT_SAMPLES, 3, 32, 32, generator=g),
            torch.randint(0, 10, (CLIENT_SAMPLES,), generator=g),
            "random tensors of CIFAR-10 shape (CIFAR-10 is not installed here)",
        ),
    ]
    threads = torch.get_num_threads()
    thread_counts = sorted({threads, 1, 2})
    results = []
    for name, x, y, data in cases:
        model = build_model(name, seed)
        params = get_params(model)
        run = functools.partial(train_once, model, params, x, y, seed)
        times: dict[int, list[float]] = {n: [] for n in thread_counts}
        for n_threads in thread_counts:  # warm-up
            torch.set_num_threads(n_threads)
            run()
        for _ in range(repeats):  # interleaved, so load changes hit every thread count alike
            for n_threads in thread_counts:
                torch.set_num_threads(n_threads)
                times[n_threads].extend(timed(run, 1))
        torch.set_num_threads(threads)
        row = {"model": name, "parameters": count_parameters(model), "data": data, "by_threads": {}}
        for n_threads, t in times.items():
            row["by_threads"][str(n_threads)] = {
                "median_s": statistics.median(t),
                "min_s": min(t),
                "all_s": t,
            }
            print(
                f"  {name:12s} threads={n_threads}: {statistics.median(t):.3f} s/client-epoch"
                f" (min {min(t):.3f}) on {data}"
            )
        results.append(row)
    return {
        "samples": CLIENT_SAMPLES,
        "config": EPOCH_CONFIG.__dict__,
        "results": results,
        "note": "the machine is shared: other processes' load (see load_avg_1m) inflates the "
        "medians, and 2 threads suffer most (OpenMP barrier waits); min_s is the least "
        "disturbed run",
    }


# --- (b) ---------------------------------------------------------------------------------------


def bare_loop(model, params, x, y, config, generator, eval_passes: bool):
    """The minimal PyTorch loop the project's local_train is compared with."""
    model.load_state_dict(params)
    if eval_passes:
        loss_pass(model, x, y)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    n = len(y)
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    if eval_passes:
        loss_pass(model, x, y)
    return {k: v.detach().clone() - params[k] for k, v in model.state_dict().items()}


def loss_pass(model, x, y) -> float:
    model.eval()
    with torch.inference_mode():
        return sum(
            float(F.cross_entropy(model(x[i : i + 256]), y[i : i + 256], reduction="sum"))
            for i in range(0, len(y), 256)
        ) / len(y)


def dataloader_loop(model, params, x, y, config, seed):
    model.load_state_dict(params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    for _ in range(config.epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()


def pipeline_vs_bare(mnist, repeats: int, seed: int) -> dict[str, object]:
    x, y = mnist.x_train[:CLIENT_SAMPLES], mnist.y_train[:CLIENT_SAMPLES]
    model = build_model("mnist", seed)
    params = get_params(model)
    train_only = EPOCH_CONFIG
    with_losses = TrainConfig(**{**EPOCH_CONFIG.__dict__, "loss_eval_samples": None})
    runs = {
        "project_train_only": lambda: local_train(
            model, params, x, y, train_only, make_generator(seed)
        ),
        "bare_train_only": lambda: bare_loop(
            model, params, x, y, train_only, make_generator(seed), eval_passes=False
        ),
        "project_with_loss_stats": lambda: local_train(
            model, params, x, y, with_losses, make_generator(seed)
        ),
        "bare_with_two_loss_passes": lambda: bare_loop(
            model, params, x, y, with_losses, make_generator(seed), eval_passes=True
        ),
        "torch_dataloader_train_only": lambda: dataloader_loop(
            model, params, x, y, train_only, seed
        ),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all alike
        for name, fn in runs.items():
            times[name].extend(timed(fn, 1))
    med = {name: statistics.median(t) for name, t in times.items()}
    project_update, _ = local_train(model, params, x, y, train_only, make_generator(seed))
    bare_update = bare_loop(model, params, x, y, train_only, make_generator(seed), False)
    identical = all(torch.equal(project_update[k], bare_update[k]) for k in project_update)
    result = {
        "samples": CLIENT_SAMPLES,
        "config": EPOCH_CONFIG.__dict__,
        "repeats": repeats,
        "median_s": med,
        "all_s": times,
        "ratio_train_only": med["project_train_only"] / med["bare_train_only"],
        "ratio_with_loss_stats": med["project_with_loss_stats"] / med["bare_with_two_loss_passes"],
        "ratio_dataloader_vs_bare": med["torch_dataloader_train_only"] / med["bare_train_only"],
        "loss_stats_cost_vs_train_only": med["project_with_loss_stats"] / med["project_train_only"],
        "updates_bitwise_identical": identical,
        "target_ratio": 1.2,
    }
    for name, value in med.items():
        print(f"  {name:30s} {value * 1000:7.1f} ms (median of {repeats})")
    print(
        f"  ratio project/bare: train only {result['ratio_train_only']:.3f}, with loss stats "
        f"{result['ratio_with_loss_stats']:.3f} (target <= 1.2); DataLoader/bare "
        f"{result['ratio_dataloader_vs_bare']:.3f}; updates bitwise identical: {identical}"
    )
    return result


# --- (c) ---------------------------------------------------------------------------------------


def fedavg(data, rounds: int, checkpoints: list[int], seed: int, max_train: int | None):
    x_train, y_train = data.x_train, data.y_train
    if max_train is not None:
        x_train, y_train = x_train[:max_train], y_train[:max_train]
    parts = dirichlet_partition(y_train, FEDAVG_CLIENTS, FEDAVG_ALPHA, seed=seed)
    print(format_partition_summary(y_train, parts, data.num_classes))
    model = build_model(data.name, seed)
    global_params = get_params(model)
    spec = ParamSpec.from_named(global_params)
    history = []
    started = time.perf_counter()
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        total = torch.zeros(spec.numel, dtype=torch.float64)
        weight = 0
        train_seconds = 0.0
        for client, idx in enumerate(parts):
            update, stats = local_train(
                model,
                global_params,
                x_train[idx],
                y_train[idx],
                FEDAVG_CONFIG,
                make_generator(seed, rnd, client),
            )
            total += stats.samples * flatten(update).to(torch.float64)
            weight += stats.samples
            train_seconds += stats.seconds
        mean_update = unflatten((total / weight).to(torch.float32), spec)
        global_params = apply_update(global_params, mean_update)
        set_params(model, global_params)
        result = evaluate(model, data.x_test, data.y_test, data.num_classes)
        history.append(
            {
                "round": rnd,
                "accuracy": result.accuracy,
                "loss": result.loss,
                "train_seconds": train_seconds,
                "round_seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"  {data.name} round {rnd:2d}: accuracy {result.accuracy:.4f} loss "
            f"{result.loss:.4f} ({time.perf_counter() - t0:.1f} s)"
        )
    final = evaluate(model, data.x_test, data.y_test, data.num_classes)
    target = TARGETS[data.name]
    return {
        "dataset": data.name,
        "train_samples": len(y_train),
        "clients": FEDAVG_CLIENTS,
        "partition": f"dirichlet(alpha={FEDAVG_ALPHA})",
        "client_sizes": [len(p) for p in parts],
        "label_skew": label_skew(class_histogram(y_train, parts, data.num_classes)),
        "rounds": rounds,
        "checkpoints": {
            str(c): {"accuracy": history[c - 1]["accuracy"], "loss": history[c - 1]["loss"]}
            for c in checkpoints
            if c <= rounds
        },
        "final_per_class_accuracy": list(final.per_class_accuracy),
        "history": history,
        "target_accuracy": target,
        "target_round": rounds,
        "target_met": history[-1]["accuracy"] >= target,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few repeats, 3 FedAvg rounds on 6000 samples (smoke run)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: $FLEML_TORCH_THREADS or 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    repeats = 3 if args.quick else 15
    rounds, checkpoints = (3, [3]) if args.quick else (30, [10, 30])
    max_train = 6000 if args.quick else None
    out = args.out or REPO / "benchmarks" / "results" / (
        "learning_quick.json" if args.quick else "learning.json"
    )

    started = now()
    report: dict[str, object] = {
        "benchmark": "learning",
        "quick": args.quick,
        "seed": args.seed,
        "started_at": started,
        "machine": machine_info(),
    }
    print(f"learning benchmark, torch threads {threads}, seed {args.seed}, quick={args.quick}")
    mnist = load_dataset("mnist")
    fashion = load_dataset("fashion_mnist")

    print("(a) seconds per client-epoch")
    report["client_epoch"] = with_load(client_epoch, mnist, repeats, args.seed)
    print("(b) project local training vs bare PyTorch loop")
    report["pipeline_vs_bare"] = with_load(pipeline_vs_bare, mnist, repeats, args.seed)
    print(f"(c) FedAvg, {FEDAVG_CLIENTS} clients, Dirichlet alpha={FEDAVG_ALPHA}, {rounds} rounds")
    report["fedavg"] = {
        "aggregation": "sample-weighted mean of client updates, server lr 1 (FedAvg)",
        "local_config": FEDAVG_CONFIG.__dict__,
        "model": "mnist_cnn",
        "runs": [
            with_load(fedavg, d, rounds, checkpoints, args.seed, max_train)
            for d in (mnist, fashion)
        ],
    }
    report["finished_at"] = now()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for run in report["fedavg"]["runs"]:
        marks = ", ".join(f"round {c}: {v['accuracy']:.4f}" for c, v in run["checkpoints"].items())
        print(
            f"  {run['dataset']}: {marks}; target {run['target_accuracy']} met: {run['target_met']}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
