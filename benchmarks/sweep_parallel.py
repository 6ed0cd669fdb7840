"""Wall time of the 8-cell quick sweep run sequentially, in 2 worker processes and as Ray tasks
on 2 CPUs, with a check that every mode gives the same numbers.

    flock /tmp/fleml-timing.lock .fleml/flower-venv/bin/python benchmarks/sweep_parallel.py \
        [--defenses fedavg,fleml] [--max-client-samples 200]

(the Flower venv has Ray; without Ray the Ray mode is recorded as skipped). Writes
benchmarks/results/sweep_parallel.json after every mode: config, cells, per-mode wall time and
per-cell seconds, the ratios to the sequential run, and the machine with its load average before
and after each mode (other work on the machine slows every mode, so read the ratios with it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sweep import cells as sweep_cells  # noqa: E402

from fleml_node.experiments import ResultStore, cell_machine, comparable, run_cells  # noqa: E402

OUT = ROOT / "benchmarks/results/sweep_parallel.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks/configs/sweep.toml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="sequential,pool,ray")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--defenses", default=None,
                        help="comma-separated subset of the config's defenses (a lighter run)")
    parser.add_argument("--max-client-samples", type=int, default=None,
                        help="override the config's samples per client (a lighter run)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_local_fs_capacity_threshold", "0.99")
    spec = tomllib.loads(args.config.read_text())
    overrides = {}
    if args.defenses:
        spec["defenses"] = overrides["defenses"] = args.defenses.split(",")
    if args.max_client_samples:
        spec["base"]["max_client_samples"] = args.max_client_samples
        overrides["max_client_samples"] = args.max_client_samples
    cells = sweep_cells(spec, quick=True)
    data = {"benchmark": "sweep_parallel", "config": spec, "quick": True,
            "overrides": overrides, "cells": [c.key() for c in cells],
            "workers": args.workers,
            "machine": cell_machine("cpu"), "modes": {}}
    reference = None
    for mode in args.modes.split(","):
        if mode == "ray" and importlib.util.find_spec("ray") is None:
            data["modes"][mode] = {"skipped": "Ray is not installed in this venv"}
            continue
        options = {"sequential": {}, "pool": {"workers": args.workers},
                   "ray": {"ray_address": "local", "workers": args.workers}}[mode]
        load_before = list(os.getloadavg())
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"fleml-sweep-{mode}-") as folder:
            results = run_cells(cells, ResultStore(folder), **options,
                                progress=lambda r, d, n, mode=mode: print(
                                    f"{mode}: {d}/{n} {r['key']} {r['seconds']:.0f}s",
                                    flush=True))
        wall = time.perf_counter() - started
        same = None
        if reference is None:
            reference = [comparable(r) for r in results]
        else:
            same = [comparable(r) for r in results] == reference
        data["modes"][mode] = {
            "options": options, "wall_seconds": wall,
            "cell_seconds": {r["key"]: r["seconds"] for r in results},
            "loadavg_before": load_before, "loadavg_after": list(os.getloadavg()),
            "results_identical_to_sequential": same}
        seq = data["modes"].get("sequential", {}).get("wall_seconds")
        if seq:
            data["speedup_vs_sequential"] = {
                m: seq / v["wall_seconds"] for m, v in data["modes"].items()
                if "wall_seconds" in v}
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{mode}: {wall:.0f}s wall" + ("" if same is None else f", identical: {same}"),
              flush=True)


if __name__ == "__main__":
    main()
