"""Where FLEML's accuracy goes without attack: its weighting, one part at a time.

    python benchmarks/weighting_ablation.py [--workers 2]

The quick effectiveness suite (benchmarks/configs/effectiveness.toml, ``[quick]``) found FLEML
behind FedAvg without attack. FLEML differs from FedAvg in three places: its flags (none or
almost none in clean cells), its clipping to ``clip_ratio`` times the median norm, and its
weights (the anomaly-score prior ``-prior_scale * score`` and the look-ahead-trained MLP on
top of FedAvg's sample shares). This script runs the quick suite's cells for FedAvg and for
FLEML variants that switch those parts off, on identical clients (the cell runner of
:mod:`fleml_node.experiments`; one store, finished cells reused), and reports per variant:

* the clean gap (variant - FedAvg, final-round accuracy, mean and standard error over the
  cells), on FLEML's tuning seeds (0, 1) and on the suite's reported seeds (2-4) apart, by
  Dirichlet alpha, and on the mean of the last two rounds (the final round of a 4-round run
  swings by several points from one round to the next, for FedAvg too);
* under attack (tuning seeds only: a default would be chosen on them), each variant's
  accuracy against default FLEML's, and its flags.

Writes ``benchmarks/results/weighting_ablation.{json,md}``; cells are kept in
``weighting_ablation.cells/`` (not committed; a rerun from nothing takes about 20 minutes on
2 workers here).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from effectiveness import build_cells, load_spec, scenario_of  # noqa: E402

from fleml_node.experiments import ResultStore, run_cells  # noqa: E402
from fleml_node.simulate import machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
# variant -> FLEML parameters changed from the defaults
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_prior": {"prior_scale": 0.0},
    "no_learning": {"meta_steps": 0},
    "fedavg_weights": {"prior_scale": 0.0, "meta_steps": 0},
    "no_clip": {"clip": False},
    "kl_10": {"kl_weight": 10.0},
    "no_entropy": {"entropy_signals": False},
}
ATTACKS = ["alie", "label_flip", "backdoor", "sign_flip", "min_max", "fleml_adaptive"]
TUNING_SEEDS, REPORTED_SEEDS = [0, 1], [2, 3, 4]
ATTACK_VARIANTS = ["default", "no_prior", "fedavg_weights", "no_entropy"]


def _cells(spec: dict[str, Any], seeds: list[int], attacks: list[str], datasets: list[str] | None,
           variant: str) -> list[Any]:
    if variant == "fedavg":
        return build_cells(spec, "quick", datasets=datasets, attacks=attacks, seeds=seeds,
                           defenses=["fedavg"])
    params = {"defense_params": {"fleml": VARIANTS[variant]}} if VARIANTS[variant] else {}
    return build_cells(spec, "quick", datasets=datasets, attacks=attacks, seeds=seeds,
                       defenses=["fleml"], base_overrides=params)


def _point(result: dict[str, Any], defense: str) -> dict[str, Any]:
    rows = [r for r in result["rounds"] if r["defense"] == defense]
    acc = [r["accuracy"] for r in rows]
    det = result["summary"][defense]["detection"]
    return {"final": acc[-1], "last2": statistics.fmean(acc[-2:]), "per_round": acc,
            "asr": result["summary"][defense]["final_backdoor_asr"],
            "tp": det["tp"], "fp": det["fp"], "fn": det["fn"]}


def _mean_se(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": mean, "se": se, "n": len(values)}


def _group(seed: int, alpha: str) -> list[str]:
    seeds = "tuning" if seed in TUNING_SEEDS else "reported"
    return [seeds, f"{seeds} a={alpha}"]


def summarise(points: dict[str, dict[tuple, dict[str, Any]]]) -> dict[str, Any]:
    """Per variant: clean gaps to FedAvg by seed group and alpha, attacked accuracy against
    default FLEML, and flags (tp / fp / fn over every client-round)."""
    fedavg = points["fedavg"]
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = points.get(variant, {})
        clean: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        attacked: dict[str, list[float]] = defaultdict(list)
        flags = {"clean": {"tp": 0, "fp": 0, "fn": 0}, "attacked": {"tp": 0, "fp": 0, "fn": 0}}
        for key, p in mine.items():
            _dataset, scenario, attack, seed = key
            for k in ("tp", "fp", "fn"):
                flags["clean" if attack == "none" else "attacked"][k] += p[k]
            if attack == "none":
                ref = fedavg.get(key)
                if ref is None:
                    continue
                alpha = scenario.split(" a=")[1].split()[0]
                for measure in ("final", "last2"):
                    for g in _group(seed, alpha):
                        clean[g][measure].append(100 * (p[measure] - ref[measure]))
            else:
                ref = points["default"].get(key)
                if ref is not None:
                    attacked[attack].append(100 * (p["final"] - ref["final"]))
        out[variant] = {
            "params": VARIANTS[variant],
            "clean_gap_vs_fedavg": {g: {m: _mean_se(v) for m, v in d.items()}
                                    for g, d in sorted(clean.items())},
            "attacked_vs_default": {a: _mean_se(v) for a, v in sorted(attacked.items())},
            "flags": flags,
        }
    return out


def render(data: dict[str, Any]) -> str:
    s = data["summary"]
    lines = [
        "# FLEML's weighting, one part at a time (weighting_ablation)",
        "",
        "Quick-suite cells (10 clients, 128 samples, 4 rounds); "
        "`python benchmarks/weighting_ablation.py`. Points of final-round test accuracy "
        "(last 2: mean of the last two rounds); mean +- standard error over cells (n). "
        f"Tuning seeds {data['tuning_seeds']}, reported seeds {data['reported_seeds']}.",
        "",
        "## Without attack: variant - FedAvg",
        "",
        "| variant | changed | tuning seeds | reported seeds | reported, a=0.5 | "
        "reported, a=0.1 | reported, last 2 | flags tp/fp/fn |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(d: dict[str, Any] | None) -> str:
        return "-" if not d else f"{d['mean']:+.2f} +- {d['se']:.2f} (n={d['n']})"

    for variant, v in s.items():
        g = v["clean_gap_vs_fedavg"]
        if not g:
            continue
        changed = ", ".join(f"{k}={x}" for k, x in v["params"].items()) or "-"
        f = v["flags"]["clean"]
        lines.append(
            f"| {variant} | {changed} | {cell(g.get('tuning', {}).get('final'))} | "
            f"{cell(g.get('reported', {}).get('final'))} | "
            f"{cell(g.get('reported a=0.5', {}).get('final'))} | "
            f"{cell(g.get('reported a=0.1', {}).get('final'))} | "
            f"{cell(g.get('reported', {}).get('last2'))} | {f['tp']}/{f['fp']}/{f['fn']} |")
    attacks = sorted({a for v in s.values() for a in v["attacked_vs_default"]})
    if attacks:
        lines += ["", "## Under attack (tuning seeds): variant - default FLEML, final round", "",
                  "| variant | " + " | ".join(attacks) + " | flags tp/fp/fn |",
                  "|---|" + "---|" * (len(attacks) + 1)]
        for variant, v in s.items():
            if not v["attacked_vs_default"]:
                continue
            row = [cell(v["attacked_vs_default"].get(a)) for a in attacks]
            f = v["flags"]["attacked"]
            lines.append(f"| {variant} | " + " | ".join(row)
                         + f" | {f['tp']}/{f['fp']}/{f['fn']} |")
    return "\n".join(lines) + "\n"


def _collect(store: ResultStore, cells: list[Any], defense: str,
             into: dict[tuple, dict[str, Any]]) -> None:
    for c in cells:
        result = store.get(c.key())
        key = (result["cell"]["dataset"], scenario_of(result["cell"]),
               result["cell"]["attack_key"], result["cell"]["seed"])
        into[key] = _point(result, defense)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean-seeds", nargs="*", type=int,
                        default=TUNING_SEEDS + REPORTED_SEEDS)
    parser.add_argument("--attack-seeds", nargs="*", type=int, default=TUNING_SEEDS)
    parser.add_argument("--attacks", nargs="*", default=ATTACKS,
                        help="attack rows run on --attack-seeds (none: skip that part)")
    parser.add_argument("--attack-variants", nargs="*", default=ATTACK_VARIANTS,
                        choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", type=Path, default=RESULTS / "weighting_ablation.cells")
    parser.add_argument("--out", type=Path, default=RESULTS / "weighting_ablation")
    args = parser.parse_args(argv)
    spec = load_spec()
    store = ResultStore(args.store)
    started = time.time()
    plan = [(v, ["none"], args.clean_seeds) for v in ["fedavg", *VARIANTS]]
    if args.attacks:
        plan += [(v, args.attacks, args.attack_seeds)
                 for v in ["fedavg", *args.attack_variants]]
    points: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
    for variant, attacks, seeds in plan:
        cells = _cells(spec, seeds, attacks, args.datasets, variant)
        print(f"{variant} x {attacks} x seeds {seeds}: {len(cells)} cells "
              f"({sum(store.has(c.key()) for c in cells)} stored)", flush=True)
        run_cells(cells, store, workers=args.workers)
        _collect(store, cells, "fedavg" if variant == "fedavg" else "fleml", points[variant])
    data = {"tuning_seeds": TUNING_SEEDS, "reported_seeds": REPORTED_SEEDS,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "variants": VARIANTS, "base": spec["quick"]["base"], "machine": machine_info(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "points": {v: [{"dataset": k[0], "scenario": k[1], "attack": k[2], "seed": k[3], **p}
                           for k, p in sorted(pts.items())] for v, pts in points.items()},
            "summary": summarise(points)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
