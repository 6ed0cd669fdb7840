"""Bytes per round and accuracy cost of update compression, beside a CKKS-encrypted update.

For every attack, seed and encoding (``none`` = dense float32, ``fp16``, ``int8``, ``topk``)
it runs the same federation in memory mode (the round engine and encodings the nodes use;
MNIST, 10 members, 30% attackers, FLEML on) and records per round the bytes every member
uploaded (its published, compressed update, exactly the bytes whose hash it commits), the
bytes moved (those plus the dense global model each member downloads), test accuracy and
FLEML's flags. Targets (issue 14): <= 0.5x dense update bytes at <= 0.5 point accuracy cost.

For the paper's AntidoteFL comparison (a CKKS homomorphic-encryption defense) it encrypts a
real round-1 update of the same model with TenSEAL (CKKS, parameters below, batched into as
many ciphertexts as the slots need), serializes the ciphertexts and the public context, and
reports the bytes per update and per round of the same federation (each member uploads its
encrypted update and downloads the encrypted aggregate, of the same size). TenSEAL is
optional (``pip install tenseal==0.3.18``); without it that part is skipped and says so.

    nice -n 15 python benchmarks/compression_bench.py            # about 15-20 min on 2 cores
    python benchmarks/compression_bench.py --rounds 2 --seeds 0 --out /tmp/c.json  # a smoke run

Finished cells are kept in ``<out>.cells.jsonl``: a run that is stopped resumes where it was
(delete that file to start over); ``--jobs N`` runs cells in N processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fleml_node.defense import make_defense  # noqa: E402
from fleml_node.learning import (  # noqa: E402
    configure_threads,
    flatten,
    get_params,
    local_train,
    make_generator,
)
from fleml_node.simulate import SimulationConfig, machine_info, run_memory, summarize  # noqa: E402
from fleml_node.task import client_data  # noqa: E402

CKKS = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40, 60],
        "global_scale_bits": 40}


def run_cell(attack: str, seed: int, encoding: str, args: argparse.Namespace) -> dict:
    config = SimulationConfig(
        dataset="mnist", num_clients=args.clients, malicious_fraction=0.3, attack=attack,
        defenses=("fleml",), rounds=args.rounds, seed=seed, mode="memory",
        max_client_samples=args.samples, test_samples=args.test_samples,
        compression=encoding, topk_fraction=args.topk_fraction)
    uploads: dict[int, list[int]] = {}

    def watch(round_id: int, client: int, blob: bytes) -> None:
        uploads.setdefault(round_id, []).append(len(blob))
        return None  # publish it unchanged

    started = time.perf_counter()
    records = run_memory(config, "fleml", lambda r: None, corrupt=watch)
    seconds = time.perf_counter() - started
    summary = summarize(records, config)["fleml"]
    return {
        **cell_key(attack, seed, encoding, args),
        "malicious_clients": config.malicious_clients(),
        "update_bytes_per_member": statistics.mean(b for r in uploads.values() for b in r),
        "upload_bytes_per_round": statistics.mean(sum(r) for r in uploads.values()),
        "bytes_moved_per_round": summary["bytes_per_round"],
        "accuracy_per_round": [r.accuracy for r in records],
        "final_accuracy": records[-1].accuracy,
        "detection": summary["detection"],
        "seconds": seconds,
    }


def cell_key(attack: str, seed: int, encoding: str, args: argparse.Namespace) -> dict:
    """What a cell's numbers depend on; finished cells with the same key are reused."""
    return {"attack": attack, "seed": seed, "encoding": encoding,
            "topk_fraction": args.topk_fraction if encoding == "topk" else None,
            "rounds": args.rounds, "clients": args.clients, "samples": args.samples,
            "test_samples": args.test_samples}


def _run(job: tuple) -> dict:
    configure_threads(1)
    return run_cell(*job)


def honest_update(args: argparse.Namespace) -> torch.Tensor:
    """Member 0's real round-1 update in the benchmark's federation (seed 0, no attack)."""
    config = SimulationConfig(dataset="mnist", num_clients=args.clients, seed=0,
                              max_client_samples=args.samples, mode="memory")
    task = config.task()
    x, y = client_data(task, 0)
    update, _ = local_train(task.initial_model(), get_params(task.initial_model()), x, y,
                            task.train, make_generator(task.seed, 1, 0))
    return flatten(update)


def ckks_costs(vector: torch.Tensor, members: int) -> dict:
    """Encrypt one real update with CKKS and measure the serialized bytes."""
    try:
        import tenseal as ts
    except ImportError:
        return {"skipped": "tenseal is not installed (pip install tenseal==0.3.18)"}
    vector = vector.double()
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=CKKS["poly_modulus_degree"],
                         coeff_mod_bit_sizes=CKKS["coeff_mod_bit_sizes"])
    context.global_scale = 2 ** CKKS["global_scale_bits"]
    slots = CKKS["poly_modulus_degree"] // 2
    started = time.perf_counter()
    chunks = [vector[i:i + slots].tolist() for i in range(0, vector.numel(), slots)]
    ciphertexts = [ts.ckks_vector(context, chunk) for chunk in chunks]
    encrypt_s = time.perf_counter() - started
    sizes = [len(c.serialize()) for c in ciphertexts]
    # sanity: the ciphertexts decrypt to the update (CKKS is approximate)
    decrypted = torch.tensor([v for c in ciphertexts for v in c.decrypt()], dtype=torch.float64)
    error = float((decrypted - vector).abs().max())
    # what the aggregator computes: the sum of the members' ciphertexts (same size)
    summed = ciphertexts[0] + ciphertexts[0]
    public = context.copy()
    public.make_context_public()
    per_update = sum(sizes)
    return {
        "library": f"tenseal {ts.__version__}",
        "scheme": "CKKS", **CKKS,
        "security": "128-bit (SEAL's default for these moduli: 200 <= 218 bits at n=8192)",
        "slots_per_ciphertext": slots,
        "values_per_update": int(vector.numel()),
        "ciphertexts_per_update": len(ciphertexts),
        "ciphertext_bytes": {"min": min(sizes), "max": max(sizes)},
        "aggregate_ciphertext_bytes": len(summed.serialize()),
        "bytes_per_update": per_update,
        "upload_bytes_per_round": members * per_update,
        "bytes_moved_per_round": 2 * members * per_update,  # encrypted update up, aggregate down
        "public_context_bytes": len(public.serialize()),
        "max_abs_decryption_error": error,
        "encrypt_seconds_per_update": encrypt_s,
        "serialization": "TenSEAL CKKSVector.serialize() (SEAL's compressed form)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=["label_flip", "sign_flip"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--encodings", nargs="+", default=["none", "fp16", "int8", "topk"])
    parser.add_argument("--topk-fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--samples", type=int, default=600, help="max samples per member")
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/compression.json")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    parser.add_argument("--render", action="store_true",
                        help="only write <out>.md (the README's table) from an existing <out>")
    args = parser.parse_args()
    if args.render:
        write_table(json.loads(args.out.read_text()), args.out.with_suffix(".md"))
        return
    configure_threads(1)
    started = time.time()
    # finished cells are kept (one JSON line each) so an interrupted run resumes
    partial = args.out.with_suffix(".cells.jsonl")
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            cell = json.loads(line)
            done[json.dumps({k: cell[k] for k in cell_key("", 0, "", args)}, sort_keys=True)] = cell
    jobs, cells = [], {}
    for attack in args.attacks:
        for seed in args.seeds:
            for encoding in args.encodings:
                key = json.dumps(cell_key(attack, seed, encoding, args), sort_keys=True)
                if key in done:
                    cells[key] = done[key]
                else:
                    jobs.append((attack, seed, encoding, args))
    print(f"{len(cells)} cells kept from {partial}, {len(jobs)} to run", flush=True)
    with multiprocessing.get_context("fork").Pool(max(1, args.jobs)) as pool:
        for cell in pool.imap_unordered(_run, jobs):
            with partial.open("a") as f:
                f.write(json.dumps(cell) + "\n")
            cells[json.dumps({k: cell[k] for k in cell_key("", 0, "", args)},
                             sort_keys=True)] = cell
            print(f"{cell['attack']:>10} seed {cell['seed']} {cell['encoding']:>5}: "
                  f"{cell['update_bytes_per_member'] / 1e3:8.1f} kB/update  "
                  f"acc {100 * cell['final_accuracy']:5.2f}%  "
                  f"P {cell['detection']['precision']} R {cell['detection']['recall']}  "
                  f"{cell['seconds']:.0f}s", flush=True)
    cells = [cells[json.dumps(cell_key(a, s_, e, args), sort_keys=True)]
             for a in args.attacks for s_ in args.seeds for e in args.encodings]
    summary = summarize_cells(cells, args)
    ckks = ckks_costs(honest_update(args), args.clients)
    if "bytes_per_update" in ckks:
        dense = summary["none"]["update_bytes_per_member"]
        ckks["update_bytes_vs_dense"] = ckks["bytes_per_update"] / dense
        for s in summary.values():
            s["update_bytes_vs_ckks"] = s["update_bytes_per_member"] / ckks["bytes_per_update"]
            s["bytes_moved_vs_ckks"] = s["bytes_moved_per_round"] / ckks["bytes_moved_per_round"]
    result = {
        "benchmark": "compression",
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "dataset": "mnist", "defense": "fleml", "malicious_fraction": 0.3,
                   "mode": "memory", "partition": "dirichlet", "alpha": 0.5,
                   "simulation_defaults": {k: v for k, v in asdict(SimulationConfig()).items()
                                           if k in ("epochs", "batch_size", "lr",
                                                    "validation_size")}},
        "targets": {"update_bytes_vs_dense_at_most": 0.5, "accuracy_cost_points_at_most": 0.5},
        "summary": summary,
        "ckks": ckks,
        "cells": cells,
        "fleml_params": make_defense("fleml").params(),  # which FLEML these numbers are of
        "machine": {**machine_info(), "loadavg": os.getloadavg()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": time.time() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_table(result, args.out.with_suffix(".md"))
    print(json.dumps({"summary": summary, "ckks": ckks}, indent=2))
    print(f"wrote {args.out}")


def write_table(result: dict, path: Path) -> None:
    """The README's table: bytes and accuracy per encoding, and the CKKS update beside them."""
    cfg, summary, ckks = result["config"], result["summary"], result["ckks"]
    attacks = cfg["attacks"]
    mb = lambda b: f"{b / 1e6:.3f} MB"  # noqa: E731
    head = ("| update encoding | bytes per update | vs dense | uploads per round | moved per round"
            + "".join(f" | final acc. {a} (%)" for a in attacks)
            + " | acc. cost, mean / worst (points) | FLEML precision / recall |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    names = {"none": "dense fp32 (none)", "fp16": "fp16", "int8": "int8 stochastic",
             "topk": f"top-k {cfg['topk_fraction']:g} + error feedback"}
    for encoding, s in summary.items():
        accs = "".join(" | " + " / ".join(f"{100 * a:.2f}" for a in
                                          s["by_attack"][a]["final_accuracy_per_seed"])
                       for a in attacks)
        prec = [p for a in attacks for p in s["by_attack"][a]["precision_per_seed"]]
        rec = [r for a in attacks for r in s["by_attack"][a]["recall_per_seed"]]
        fmt = lambda v: "-" if not v or None in v else f"{statistics.mean(v):.2f}"  # noqa: E731
        cost = "-" if encoding == "none" else \
            f"{s['accuracy_cost_points_mean']:+.2f} / {s['accuracy_cost_points_worst']:+.2f}"
        lines.append(f"| {names.get(encoding, encoding)} | {mb(s['update_bytes_per_member'])} | "
                     f"{s['update_bytes_vs_dense']:.3f}x | {mb(s['upload_bytes_per_round'])} | "
                     f"{mb(s['bytes_moved_per_round'])}{accs} | {cost} | "
                     f"{fmt(prec)} / {fmt(rec)} |")
    if "bytes_per_update" in ckks:
        lines.append(f"| CKKS ciphertexts (TenSEAL, n={ckks['poly_modulus_degree']}) | "
                     f"{mb(ckks['bytes_per_update'])} | {ckks['update_bytes_vs_dense']:.1f}x | "
                     f"{mb(ckks['upload_bytes_per_round'])} | "
                     f"{mb(ckks['bytes_moved_per_round'])}" + " | not run" * len(attacks)
                     + " | - | - |")
    seeds = ", ".join(map(str, cfg["seeds"]))
    lines.append("")
    lines.append(f"Accuracy per seed ({seeds}) after {cfg['rounds']} rounds; cost = dense minus "
                 f"compressed on the same attack and seed, mean and worst over "
                 f"{len(attacks) * len(cfg['seeds'])} runs.")
    path.write_text("\n".join(lines) + "\n")


def summarize_cells(cells: list[dict], args: argparse.Namespace) -> dict:
    """Per encoding: bytes, and accuracy cost against dense on the same attack and seed."""
    dense = {(c["attack"], c["seed"]): c for c in cells if c["encoding"] == "none"}
    out = {}
    for encoding in args.encodings:
        rows = [c for c in cells if c["encoding"] == encoding]
        costs = [100 * (dense[(c["attack"], c["seed"])]["final_accuracy"] - c["final_accuracy"])
                 for c in rows if (c["attack"], c["seed"]) in dense]
        by_attack = {}
        for attack in args.attacks:
            mine = [c for c in rows if c["attack"] == attack]
            by_attack[attack] = {
                "final_accuracy_mean": statistics.mean(c["final_accuracy"] for c in mine),
                "final_accuracy_per_seed": [c["final_accuracy"] for c in mine],
                "accuracy_cost_points_per_seed": [
                    100 * (dense[(attack, c["seed"])]["final_accuracy"] - c["final_accuracy"])
                    for c in mine if (attack, c["seed"]) in dense],
                "precision_per_seed": [c["detection"]["precision"] for c in mine],
                "recall_per_seed": [c["detection"]["recall"] for c in mine],
            }
        update = statistics.mean(c["update_bytes_per_member"] for c in rows)
        dense_update = statistics.mean(c["update_bytes_per_member"] for c in dense.values()) \
            if dense else None
        cost = statistics.mean(costs) if costs else None
        ratio = update / dense_update if dense_update else None
        out[encoding] = {
            "update_bytes_per_member": update,
            "upload_bytes_per_round": statistics.mean(c["upload_bytes_per_round"] for c in rows),
            "bytes_moved_per_round": statistics.mean(c["bytes_moved_per_round"] for c in rows),
            "update_bytes_vs_dense": ratio,
            "accuracy_cost_points_mean": cost,
            "accuracy_cost_points_worst": max(costs) if costs else None,
            "meets_target": None if ratio is None or cost is None else
            bool(ratio <= 0.5 and cost <= 0.5),
            "by_attack": by_attack,
        }
    return out


if __name__ == "__main__":
    main()
