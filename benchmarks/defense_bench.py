"""Benchmark of the robust aggregators (FLEML and baselines): cost, then an end-to-end check.

FLEML: "Entropy-guided meta-learning defense against data poisoning attacks in
blockchain-assisted federated learning", Information Sciences, 2026,
doi:10.1016/j.ins.2026.123389.

Part 1, cost. For every method and 10, 50 and 100 clients, with updates of the MNIST CNN's
size (:func:`fleml_node.learning.build_model`), one child process per case:

* wall time of ``aggregate()``: median of ``repeats`` calls after one warm-up call;
* peak memory: the kernel's resident-set high-water mark (``VmHWM``) is reset through
  ``/proc/self/clear_refs`` right before one more call and read after it; the reported extra
  bytes are ``VmHWM - VmRSS`` before the call, i.e. every page the call touched beyond what the
  process already held (torch's allocator and glibc included, unlike ``tracemalloc``). The
  child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that blocks of 64 KiB or more freed by
  earlier calls are returned to the kernel rather than reused unseen. Where the reset is
  unavailable the child reports ``ru_maxrss`` deltas instead (a lower bound).

Updates are Gaussian (content does not change the cost); FLEML's validation set and FLTrust's
root dataset are the same 500 random images (FLTrust trains its root update, one epoch, inside
the timed call). The reference cost is one client's local epoch on 600 images (batch 32, SGD),
timed in the same child process, one epoch before each aggregation call, so that both see the
same machine load (the machine is shared). Targets: FLEML at 50 clients no slower than that
epoch; FLEML's peak (updates + extra) below twice the bytes of the updates.

Part 2, end to end, in memory: MNIST (a 12,000-image pool of the training set), 20 clients
with a Dirichlet(0.5) label split, 30% label flippers (``y -> 9 - y``), 10 rounds, the same
seed and client updates stream for every method; 500 other training images are the server's
clean set (FLEML validation, FLTrust root data). Reports test accuracy per round (10,000 test
images) and detection precision / recall (flagged and suppressed clients). The full run adds a
no-attack control for FedAvg and FLEML (false flags, accuracy cost).

Usage::

    .venv/bin/python benchmarks/defense_bench.py [--quick] [--threads N] [--out PATH]
    .venv/bin/python benchmarks/defense_bench.py --cost-only   # part 1 alone: defense_cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from peak_memory import reset_peak, rss_bytes  # noqa: E402  (benchmarks/peak_memory.py)

from fleml_node.attacks import make_attack  # noqa: E402
from fleml_node.defense import RoundContext, make_defense  # noqa: E402
from fleml_node.defense.metrics import DetectionTracker  # noqa: E402
from fleml_node.learning import (  # noqa: E402
    ParamSpec,
    TrainConfig,
    build_model,
    dirichlet_partition,
    evaluate,
    flatten,
    get_params,
    load_mnist,
    local_train,
    make_generator,
    set_params,
    unflatten,
)

logger = logging.getLogger("defense_bench")

METHODS = ("fedavg", "krum", "multikrum", "median", "trimmedmean", "fltrust", "fleml")
CLIENT_COUNTS = (10, 50, 100)
SEED = 2026
VAL_SIZE = 500
EPOCH_SAMPLES = 600
POOL = 12_000
E2E_CLIENTS = 20
E2E_ROUNDS = 10
MALICIOUS_FRACTION = 0.3
ALPHA = 0.5
TRAIN = TrainConfig(epochs=1, batch_size=32, lr=0.05, loss_eval_samples=0)
# A fixed glibc mmap threshold (which also disables its dynamic growth) makes every block of
# 64 KiB or more an mmap that is unmapped on free, so pages freed by the warm-up call are not
# silently reused by the measured call: VmHWM then sees every large temporary.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


# ----------------------------------------------------------------------------- cost
def _synthetic_clean_set(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(VAL_SIZE, 1, 28, 28, generator=gen)
    return x, torch.randint(0, 10, (VAL_SIZE,), generator=gen)


def cost_case(method: str, n: int, repeats: int,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time and peak memory of one aggregation case (run in a child process)."""
    gen = torch.Generator().manual_seed(SEED)
    model = build_model("mnist", seed=SEED)
    global_named = get_params(model)
    global_flat = flatten(global_named)
    d = global_flat.numel()
    updates = torch.empty(n, d).normal_(0.0, 0.01, generator=gen)
    x_val, y_val = _synthetic_clean_set(gen)
    scratch = build_model("mnist", seed=SEED)

    def root_update() -> torch.Tensor:
        update, _ = local_train(scratch, global_named, x_val, y_val, TRAIN, make_generator(SEED))
        return flatten(update)

    ctx = RoundContext(
        client_ids=[f"client-{i}" for i in range(n)],
        sample_counts=[600] * n,
        global_params=global_flat,
        model=build_model("mnist", seed=SEED),
        x_val=x_val,
        y_val=y_val,
        root_update=root_update,
        seed=SEED,
    )
    aggregator = make_defense(method, **(params or {}))
    aggregator.aggregate(updates, ctx)  # warm-up: lazy initialisation, allocator pools
    epoch = _LocalEpoch(gen)
    times, epochs = [], []
    for r in range(repeats):  # interleaved, so both see the same machine load
        epochs.append(epoch.seconds(r))
        ctx_r = dataclasses.replace(ctx, round_number=r + 1)
        start = time.perf_counter()
        aggregator.aggregate(updates, ctx_r)
        times.append(time.perf_counter() - start)
    del epoch
    before = rss_bytes("VmRSS")
    if reset_peak() and before is not None:
        aggregator.aggregate(updates, ctx)
        peak = rss_bytes("VmHWM")
        extra = max(0, (peak or before) - before)
        how = "VmHWM after clear_refs reset minus VmRSS before the call"
    else:
        before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        aggregator.aggregate(updates, ctx)
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before_max
        how = "ru_maxrss delta (lower bound: earlier peaks hide smaller ones)"
    update_bytes = updates.numel() * updates.element_size()
    return {
        "method": method,
        "clients": n,
        "dim": d,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "epoch_seconds_median": statistics.median(epochs),
        "epoch_seconds_all": epochs,
        "over_epoch": statistics.median(times) / statistics.median(epochs),
        "update_bytes": update_bytes,
        "extra_peak_bytes": extra,
        "peak_over_updates": (update_bytes + extra) / update_bytes,
        "memory_method": how,
    }


class _LocalEpoch:
    """One client's local epoch on 600 MNIST-sized images (batch 32, SGD)."""

    def __init__(self, gen: torch.Generator) -> None:
        self.model = build_model("mnist", seed=SEED)
        self.global_named = get_params(self.model)
        self.x = torch.randn(EPOCH_SAMPLES, 1, 28, 28, generator=gen)
        self.y = torch.randint(0, 10, (EPOCH_SAMPLES,), generator=gen)
        self.seconds(-1)  # warm-up

    def seconds(self, r: int) -> float:
        start = time.perf_counter()
        local_train(
            self.model, self.global_named, self.x, self.y, TRAIN, make_generator(SEED, r + 1)
        )
        return time.perf_counter() - start


def run_cost(repeats: int, threads: int, methods: tuple[str, ...] = METHODS,
             fleml_params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    results = []
    for n in CLIENT_COUNTS:
        for method in methods:
            cmd = [
                sys.executable, __file__, "--cost-case", method, str(n),
                "--repeats", str(repeats), "--threads", str(threads),
            ]
            if method == "fleml" and fleml_params:
                cmd += ["--fleml-param", *(f"{k}={json.dumps(v)}"
                                           for k, v in fleml_params.items())]
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, cwd=REPO, env=CHILD_ENV
            )
            case = json.loads(out.stdout.strip().splitlines()[-1])
            logger.info(
                "%-11s n=%3d  %.4f s (%.2f local epochs)  peak/updates %.2f",
                method, n, case["seconds_median"], case["over_epoch"], case["peak_over_updates"],
            )
            results.append(case)
    return results


# ------------------------------------------------------------------------- end to end
def run_e2e(methods: tuple[str, ...], attack_on: bool) -> dict[str, Any]:
    data = load_mnist()
    perm = torch.randperm(len(data.y_train), generator=make_generator(SEED, 1))
    val_idx, pool = perm[:VAL_SIZE], perm[VAL_SIZE : VAL_SIZE + POOL]
    parts = [pool[p] for p in dirichlet_partition(data.y_train[pool], E2E_CLIENTS, ALPHA, SEED)]
    n_mal = round(MALICIOUS_FRACTION * E2E_CLIENTS) if attack_on else 0
    malicious = set(torch.randperm(E2E_CLIENTS, generator=make_generator(SEED, 2))[:n_mal].tolist())
    ids = [f"client-{c:02d}" for c in range(E2E_CLIENTS)]
    malicious_ids = {ids[c] for c in malicious}
    attack = make_attack("label_flip")
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    out: dict[str, Any] = {
        "malicious": sorted(malicious_ids),
        "client_samples": [len(p) for p in parts],
        "methods": {},
    }
    for method in methods:
        model = build_model("mnist", seed=SEED)
        spec = ParamSpec.from_model(model)
        global_named = get_params(model)
        aggregator = make_defense(method)
        tracker = DetectionTracker()
        accuracies, agg_seconds = [], 0.0
        for r in range(E2E_ROUNDS):
            rows, counts = [], []
            for c in range(E2E_CLIENTS):
                update, stats = local_train(
                    model, global_named, data.x_train[parts[c]], data.y_train[parts[c]], TRAIN,
                    make_generator(SEED, 3, r, c), attack if c in malicious else None,
                )
                rows.append(flatten(update))
                counts.append(stats.samples)
            global_flat = flatten(global_named)

            def root_update(named: dict = global_named, r: int = r) -> torch.Tensor:
                update, _ = local_train(
                    build_model("mnist", seed=SEED), named, x_val, y_val, TRAIN,
                    make_generator(SEED, 4, r),
                )
                return flatten(update)

            ctx = RoundContext(
                client_ids=ids, sample_counts=counts, round_number=r, global_params=global_flat,
                model=build_model("mnist", seed=SEED), x_val=x_val, y_val=y_val,
                root_update=root_update, seed=SEED,
            )
            start = time.perf_counter()
            result = aggregator.aggregate(torch.stack(rows), ctx)
            agg_seconds += time.perf_counter() - start
            tracker.update(result, malicious_ids)
            global_named = unflatten(global_flat + result.update, spec)
            set_params(model, global_named)
            accuracies.append(evaluate(model, data.x_test, data.y_test).accuracy)
            logger.info("%s round %d accuracy %.4f flagged %s", method, r, accuracies[-1],
                        result.flagged_ids)
        out["methods"][method] = {
            "final_accuracy": accuracies[-1],
            "accuracy_per_round": accuracies,
            "detection": tracker.overall(),
            "aggregation_seconds_total": agg_seconds,
        }
    return out


# ---------------------------------------------------------------------------- driver
def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; e2e FedAvg+FLEML")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cost-case", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--cost-only", action="store_true",
                        help="part 1 only (time and peak memory), written to defense_cost.json")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="cost part: these methods only (with --cost-only)")
    parser.add_argument("--fleml-param", nargs="*", default=[], metavar="KEY=VALUE",
                        help="FLEML parameters other than the defaults (JSON values), e.g. "
                             "val_micro_batch=16")
    args = parser.parse_args()
    fleml_params = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.fleml_param)}
    if set(args.methods) != set(METHODS) and not args.cost_only:
        parser.error("--methods needs --cost-only (the end-to-end part runs its own methods)")
    if "fleml" not in args.methods:
        parser.error("--methods must include fleml (the targets are FLEML's)")
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    if args.cost_case:
        method = args.cost_case[0]
        print(json.dumps(cost_case(method, int(args.cost_case[1]), repeats,
                                   fleml_params if method == "fleml" else None)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = dt.datetime.now(dt.UTC)
    machine_at_start = machine_info()
    cost = run_cost(repeats, args.threads, tuple(args.methods), fleml_params)
    by = {(c["method"], c["clients"]): c for c in cost}
    overhead = {
        str(n): by[("fleml", n)]["seconds_median"] / by[("fedavg", n)]["seconds_median"]
        for n in CLIENT_COUNTS if ("fedavg", n) in by and ("fleml", n) in by
    }
    fleml50 = by[("fleml", 50)]
    targets = {
        "fleml_50_seconds": fleml50["seconds_median"],
        "local_epoch_seconds": fleml50["epoch_seconds_median"],
        "fleml_50_over_epoch": fleml50["over_epoch"],
        "fleml_50_within_one_epoch": fleml50["over_epoch"] <= 1.0,
        "fleml_peak_over_updates": {str(n): by[("fleml", n)]["peak_over_updates"]
                                    for n in CLIENT_COUNTS},
        "fleml_peak_below_2x": all(by[("fleml", n)]["peak_over_updates"] < 2.0
                                   for n in CLIENT_COUNTS),
    }
    e2e: dict[str, Any] = {}
    if not args.cost_only:
        e2e_methods = ("fedavg", "fleml") if args.quick else METHODS
        e2e["label_flip"] = run_e2e(e2e_methods, attack_on=True)
        if not args.quick:
            e2e["no_attack"] = run_e2e(("fedavg", "fleml"), attack_on=False)
        flip = e2e["label_flip"]["methods"]
        targets["fleml_beats_fedavg"] = (
            flip["fleml"]["final_accuracy"] > flip["fedavg"]["final_accuracy"]
        )
    result = {
        "benchmark": "defense",
        "quick": args.quick,
        "seed": SEED,
        "started_utc": started.isoformat(),
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(),
        "machine": machine_at_start,
        "machine_at_end": machine_info(),
        "config": {
            "methods": list(args.methods),
            "client_counts": CLIENT_COUNTS,
            "repeats": repeats,
            "validation_and_root_samples": VAL_SIZE,
            "local_training": TRAIN.__dict__,
            "e2e": {
                "dataset": "mnist",
                "pool": POOL,
                "clients": E2E_CLIENTS,
                "rounds": E2E_ROUNDS,
                "dirichlet_alpha": ALPHA,
                "malicious_fraction": MALICIOUS_FRACTION,
                "attack": make_attack("label_flip").describe(),
            },
            "aggregator_params": {m: make_defense(m, **(fleml_params if m == "fleml" else {}))
                                  .params() for m in args.methods},
        },
        "cost": cost,
        "fleml_over_fedavg_time": overhead,
        "targets": targets,
        "e2e": e2e,
    }
    out = args.out or REPO / "benchmarks" / "results" / (
        "defense_cost.json" if args.cost_only
        else "defense_quick.json" if args.quick else "defense.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s; targets %s", out, targets)


if __name__ == "__main__":
    main()
