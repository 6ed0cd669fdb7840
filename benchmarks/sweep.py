"""Sweep datasets x attacks x defenses x seeds and write the comparison as data.

    python benchmarks/sweep.py [--config benchmarks/configs/sweep.toml] [--quick]
    python benchmarks/sweep.py --workers 2            # cells in 2 processes
    python benchmarks/sweep.py --ray                  # cells as tasks on a local Ray instance
    python benchmarks/sweep.py --ray ray://head:10001 # ... or on a Ray cluster
    python benchmarks/sweep.py --results-dir DIR      # keep finished cells in DIR; resume
    python benchmarks/sweep.py --table      # only re-render the table from the saved data

Writes benchmarks/results/sweep.json (config, machine, every round of every run and a
summary per cell) and benchmarks/results/sweep.md (the table the README quotes, with the
paper's claimed FLEML - FedAvg deltas beside ours).

Each (dataset, attack, seed) cell is a fleml_node.experiments.Cell run by run_cell on one
torch thread, so the numbers do not depend on how cells are spread (sequential, --workers,
--ray); only the timing fields do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleml_node.experiments import Cell, ResultStore, cell_machine, run_cells  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
# FLEML - FedAvg accuracy deltas in points claimed by the paper's abstract
# (doi 10.1016/j.ins.2026.123389), for untargeted / label flipping / backdoor.
PAPER_DELTAS = {
    "mnist": {"untargeted": 23.14, "label_flipping": 16.15, "backdoor": 18.53},
    "fashion_mnist": {"untargeted": 1.12, "label_flipping": 8.55, "backdoor": 5.19},
    "cifar10": {"untargeted": 10.25, "label_flipping": 8.06, "backdoor": 14.66},
}
PAPER_PRECISION = 0.92


def cells(spec: dict[str, Any], quick: bool) -> list[Cell]:
    """The sweep's cells, dataset-major as the table lists them."""
    base = dict(spec["base"])
    seeds = spec["seeds"][:1] if quick else spec["seeds"]
    if quick:
        base["rounds"] = 2
    return [Cell("sweep", dataset, attack_key, attack.get("name", "none"),
                 attack.get("params", {}), seed, tuple(spec["defenses"]), base)
            for dataset in spec["datasets"]
            for attack_key, attack in spec["attacks"].items()
            for seed in seeds]


def print_cell(result: dict[str, Any], done: int, total: int) -> None:
    cell = result["cell"]
    print(f"{cell['dataset']:>13} {cell['attack_key']:>14} seed {cell['seed']}: " + ", ".join(
        f"{d} {100 * s['final_accuracy']:.1f}%" for d, s in result["summary"].items())
        + f"  ({result['seconds']:.0f}s, {done}/{total})", flush=True)


def run(config_path: Path, quick: bool, results_dir: Path | None = None, workers: int = 1,
        ray_address: str | None = None, device: str = "cpu") -> dict:
    spec = tomllib.loads(config_path.read_text())
    todo = cells(spec, quick)
    started = time.time()
    store = ResultStore(results_dir or tempfile.mkdtemp(prefix="fleml-sweep-"))
    resumed = sum(store.has(c.key()) for c in todo)
    if resumed:
        print(f"{resumed} of {len(todo)} cells already in {store.directory}", flush=True)
    results = run_cells(todo, store, workers=workers, ray_address=ray_address, device=device,
                        progress=print_cell)
    return {"config": spec, "quick": quick, "machine": cell_machine(device),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "execution": {"workers": workers, "ray": ray_address, "device": device,
                          "results_dir": str(store.directory), "resumed_cells": resumed},
            "cells": [{"dataset": r["cell"]["dataset"], "attack": r["cell"]["attack_key"],
                       "seed": r["cell"]["seed"], "key": r["key"], "seconds": r["seconds"],
                       "summary": r["summary"], "rounds": r["rounds"],
                       "malicious_clients": r["malicious_clients"]} for r in results]}


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def table(data: dict) -> str:
    spec = data["config"]
    seeds = sorted({c["seed"] for c in data["cells"]})
    lines = [
        f"Final test accuracy (%) after {spec['base']['rounds'] if not data['quick'] else 2} "
        f"rounds, mean over seeds {seeds}; {spec['base']['num_clients']} clients, "
        f"{int(100 * spec['base']['malicious_fraction'])}% malicious, Dirichlet "
        f"alpha={spec['base']['alpha']}, {spec['base']['max_client_samples']} samples per "
        f"client. Backdoor rows also give the attack success rate (ASR).",
        "",
        "| dataset | attack | " + " | ".join(spec["defenses"]) +
        " | FLEML - FedAvg | paper's claim | FLEML precision / recall |",
        "|---|---|" + "---|" * len(spec["defenses"]) + "---|---|---|",
    ]
    for dataset in spec["datasets"]:
        for attack in spec["attacks"]:
            cells = [c for c in data["cells"] if c["dataset"] == dataset and c["attack"] == attack]
            if not cells:
                continue
            row = []
            for d in spec["defenses"]:
                acc = mean([c["summary"][d]["final_accuracy"] for c in cells])
                asr = mean([c["summary"][d]["final_backdoor_asr"] for c in cells])
                row.append(f"{100 * acc:.1f}" + (f" (ASR {100 * asr:.0f})" if asr is not None
                                                 else ""))
            delta = 100 * (mean([c["summary"]["fleml"]["final_accuracy"] for c in cells])
                           - mean([c["summary"]["fedavg"]["final_accuracy"] for c in cells]))
            claim = PAPER_DELTAS.get(dataset, {}).get(attack)
            det = [c["summary"]["fleml"]["detection"] for c in cells]
            tp, fp, fn = (sum(d[k] for d in det) for k in ("tp", "fp", "fn"))
            prec = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
            rec = f"{tp / (tp + fn):.2f}" if tp + fn else "-"
            lines.append(f"| {dataset} | {attack} | " + " | ".join(row) +
                         f" | {delta:+.2f} | {'' if claim is None else f'+{claim:.2f}'} | "
                         f"{prec} / {rec} |")
    lines += ["", f"The paper claims {PAPER_PRECISION:.0%} precision in detecting malicious "
              "updates. Detection counts every round: a flagged client is a positive."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks/configs/sweep.toml")
    parser.add_argument("--quick", action="store_true", help="one seed, two rounds")
    parser.add_argument("--table", action="store_true", help="only re-render the table")
    parser.add_argument("--workers", type=int, default=1,
                        help="run cells in N processes (with --ray: CPUs of the local Ray)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run cells as Ray tasks: on a local Ray instance, or on the "
                             "cluster at ADDRESS (auto, ray://head:10001)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per cell)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="keep each finished cell here and resume from it "
                             "(default: a fresh temporary folder)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON (default benchmarks/results/sweep.json, "
                             "or sweep-quick.json with --quick); the table goes beside it")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    out = args.out or RESULTS / ("sweep-quick.json" if args.quick else "sweep.json")
    if args.table:
        data = json.loads(out.read_text())
    else:
        data = run(args.config, args.quick, args.results_dir, args.workers, args.ray,
                   args.device)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
    text = table(data)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
