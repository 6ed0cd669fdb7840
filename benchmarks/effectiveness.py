"""The effectiveness suite of issue 14: every attack against all seven defenses, with targets.

    python benchmarks/effectiveness.py --quick [--workers N]      # the tables this repo quotes
    python benchmarks/effectiveness.py [--device cuda --workers N] [--ray ADDRESS]   # full
    python benchmarks/effectiveness.py --quick --table            # only re-render the tables

Cells (dataset x scenario x attack x seed, each running every defense on identical clients)
come from benchmarks/configs/effectiveness.toml and run through the shared cell runner
(:mod:`fleml_node.experiments`: resumable one-file-per-cell store, process pool or Ray).
Finished cells are kept in ``benchmarks/results/effectiveness[-quick].cells/``: a stopped
run picks up where it was. Writes ``benchmarks/results/effectiveness[-quick].json`` (config,
machine, per-cell summaries) and ``.md`` (the tables: accuracy mean +- spread over seeds, ASR,
FLEML flag precision/recall per cell, verdicts against issue 14's targets and the paper's
claims beside ours).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleml_node.experiments import Cell, CellsFailed, ResultStore, run_cells  # noqa: E402
from fleml_node.learning.runtime import device_info  # noqa: E402
from fleml_node.simulate import machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
CONFIG = ROOT / "benchmarks/configs/effectiveness.toml"
README = ROOT / "README.md"
CLASSES = ("none", "model", "data", "adaptive")
# issue 14's targets
MODEL_PRECISION, MODEL_RECALL, DATA_PRECISION, BENIGN_FLAG_RATE = 0.90, 0.80, 0.90, 0.01
BEST_MARGIN, FLTRUST_LEAD, CLEAN_MARGIN = 0.5, 1.0, 0.5  # accuracy points
# our attack rows that correspond to the paper's three attack families
PAPER_ROWS = {"sign_flip": "untargeted", "label_flip": "label_flipping", "backdoor": "backdoor"}


def _paper_claims() -> tuple[dict[str, dict[str, float]], float]:
    """The paper's FLEML - FedAvg deltas and detection precision, as benchmarks/sweep.py has
    them (one place for those numbers)."""
    spec = importlib.util.spec_from_file_location("_sweep", ROOT / "benchmarks/sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.PAPER_DELTAS, module.PAPER_PRECISION


# -- cells -------------------------------------------------------------------------------------
def load_spec(path: Path = CONFIG) -> dict[str, Any]:
    """Read and check the suite's TOML."""
    spec = tomllib.loads(Path(path).read_text())
    for key in ("defenses", "attacks"):
        if key not in spec:
            raise ValueError(f"{path}: missing [{key}]")
    for row, attack in spec["attacks"].items():
        if attack.get("class") not in CLASSES:
            raise ValueError(f"{path}: attack {row!r} needs class in {CLASSES}")
        if attack["class"] != "none" and "name" not in attack:
            raise ValueError(f"{path}: attack {row!r} needs a name")
    return spec


def dataset_available(name: str) -> bool:
    """Whether a dataset's files are here (CIFAR-10 only runs when they are)."""
    from fleml_node.task import load_task_dataset

    try:
        load_task_dataset(name)
    except Exception:  # noqa: BLE001 - any failure to load means: not available here
        return False
    return True


def suite_name(mode: str) -> str:
    return "effectiveness" if mode == "full" else f"effectiveness-{mode}"


def scenarios(section: dict[str, Any], rows: list[str]) -> list[tuple[dict[str, Any], list[str]]]:
    """``(scenario fields, attack rows)`` pairs of a section.

    Either explicit ``[[<mode>.scenarios]]`` tables (``num_clients``, ``alpha``,
    ``malicious_fraction`` and optionally ``attacks``, a subset of the rows), or the product
    of the section's ``num_clients``, ``alpha`` and ``malicious_fraction`` lists with every row.
    """
    if "scenarios" in section:
        out = []
        for sc in section["scenarios"]:
            fields = {k: sc[k] for k in ("num_clients", "alpha", "malicious_fraction")}
            subset = sc.get("attacks")
            out.append((fields, [r for r in rows if subset is None or r in subset]))
        return out
    return [({"num_clients": n, "alpha": a, "malicious_fraction": f}, rows)
            for n in section["num_clients"] for a in section["alpha"]
            for f in section["malicious_fraction"]]


def build_cells(spec: dict[str, Any], mode: str, *, datasets: list[str] | None = None,
                attacks: list[str] | None = None, seeds: list[int] | None = None,
                defenses: list[str] | None = None,
                base_overrides: dict[str, Any] | None = None) -> list[Cell]:
    """The cells of ``spec[mode]`` (``full`` or ``quick``), optionally restricted.

    Order: dataset, then seed, then scenario and attack: a run stopped part-way has every
    row of the first dataset for some seeds, not a few rows of everything.
    """
    section = spec[mode]
    names = datasets or [d for d in section["datasets"]
                         if d != "cifar10" or dataset_available("cifar10")]
    rows = attacks or list(spec["attacks"])
    unknown = sorted(set(rows) - set(spec["attacks"]))
    if unknown:
        raise ValueError(f"unknown attack rows {unknown}; the config has {list(spec['attacks'])}")
    defs = tuple(defenses or spec["defenses"])
    base = dict(section["base"])
    cells = []
    for dataset in names:
        for seed in seeds or section["seeds"]:
            for fields, scenario_rows in scenarios(section, rows):
                for row in scenario_rows:
                    attack = spec["attacks"][row]
                    cells.append(Cell(
                        suite_name(mode), dataset, row, attack.get("name", "none"),
                        dict(attack.get("params", {})), int(seed), defs,
                        {**base, **fields, **(base_overrides or {})}))
    unique = {c.key(): c for c in cells}  # clean cells do not depend on the fraction
    return list(unique.values())


# -- results -----------------------------------------------------------------------------------
def scenario_of(cell: dict[str, Any]) -> str:
    b = cell["base"]
    fraction = "-" if cell["attack"] == "none" else f"{round(100 * b['malicious_fraction'])}%"
    return (f"{cell['dataset']} n={b['num_clients']} a={b['alpha']:g} mal={fraction} "
            f"r={b['rounds']} s={b.get('max_client_samples') or 'full'}")


def compact(result: dict[str, Any], attack_class: str) -> dict[str, Any]:
    """What the tables need of a cell result (the store keeps everything)."""
    cell = result["cell"]
    out = {"key": result["key"], "dataset": cell["dataset"], "attack": cell["attack_key"],
           "class": attack_class, "seed": cell["seed"], "scenario": scenario_of(cell),
           "base": cell["base"], "malicious_clients": result["malicious_clients"],
           "seconds": result["seconds"], "device": result["machine"].get("device", "cpu"),
           "host": result["machine"].get("host"), "defenses": {}}
    for name, s in result["summary"].items():
        rows = [r for r in result["rounds"] if r["defense"] == name]
        out["defenses"][name] = {
            "final_accuracy": s["final_accuracy"],
            "final_backdoor_asr": s["final_backdoor_asr"],
            "detection": {k: s["detection"][k] for k in ("tp", "fp", "fn", "tn")},
            "accuracy_per_round": [r["accuracy"] for r in rows],
            "bytes_per_round": s.get("bytes_per_round"),
        }
    return out


def collect(spec: dict[str, Any], results: list[dict[str, Any]], mode: str,
            started: float, args: dict[str, Any]) -> dict[str, Any]:
    classes = {row: a["class"] for row, a in spec["attacks"].items()}
    cells = [compact(r, classes.get(r["cell"]["attack_key"], "model")) for r in results]
    return {"suite": suite_name(mode), "mode": mode, "config": spec, "args": args,
            "machine": {**machine_info(), **device_info(args.get("device", "cpu"))},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started, "cells": cells}


def _mean_spread(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def group(cells: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Cells by (scenario, attack row), the unit the tables report (over seeds)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        out[(c["scenario"], c["attack"])].append(c)
    return out


def detection(cells: list[dict[str, Any]], defense: str = "fleml") -> dict[str, int]:
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for c in cells:
        for k in total:
            total[k] += c["defenses"][defense]["detection"][k]
    return total


def accuracy_verdicts(data: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's accuracy targets on every (scenario, attack) group (means over seeds)."""
    defenses = data["config"]["defenses"]
    baselines = [d for d in defenses if d != "fleml"]
    clean_ref: dict[str, float] = {}
    for (scenario, _attack), cells in group(data["cells"]).items():
        if cells[0]["class"] == "none":
            clean_ref[scenario] = statistics.fmean(
                c["defenses"]["fedavg"]["final_accuracy"] for c in cells)
    rows = []
    for (scenario, attack), cells in sorted(group(data["cells"]).items()):
        acc = {d: 100 * statistics.fmean(c["defenses"][d]["final_accuracy"] for c in cells)
               for d in defenses}
        row = {"scenario": scenario, "attack": attack, "class": cells[0]["class"],
               "fleml": acc["fleml"], "seeds": len(cells)}
        if cells[0]["class"] == "none":
            row["fedavg"] = acc["fedavg"]
            row["clean_ok"] = acc["fleml"] >= acc["fedavg"] - CLEAN_MARGIN
        else:
            best = max(baselines, key=lambda d: acc[d])
            row.update(best=best, best_acc=acc[best], fltrust=acc.get("fltrust"),
                       best_ok=acc["fleml"] >= acc[best] - BEST_MARGIN,
                       fltrust_lead=(acc["fleml"] - acc["fltrust"]) if "fltrust" in acc else None)
        rows.append(row)
    attacked = [r for r in rows if r["class"] != "none"]
    lead = [r for r in attacked if r["fltrust_lead"] is not None
            and r["fltrust_lead"] >= FLTRUST_LEAD]
    return {"rows": rows,
            "best_ok": sum(r["best_ok"] for r in attacked), "attacked": len(attacked),
            "fltrust_lead": len(lead),
            "clean_ok": sum(r["clean_ok"] for r in rows if r["class"] == "none"),
            "clean": sum(1 for r in rows if r["class"] == "none")}


def detection_verdicts(data: dict[str, Any]) -> dict[str, Any]:
    """FLEML's flags pooled over the suite, per attack class and per attack."""
    by_class: dict[str, dict[str, int]] = {}
    for cls in CLASSES:
        cells = [c for c in data["cells"] if c["class"] == cls]
        if cells:
            by_class[cls] = detection(cells)
    by_attack = {}
    for attack in dict.fromkeys(c["attack"] for c in data["cells"]):
        by_attack[attack] = detection([c for c in data["cells"] if c["attack"] == attack])
    # benign flag rate without attack: per alpha over the datasets, then per alpha and dataset
    benign_by_alpha = {}
    clean = [c for c in data["cells"] if c["class"] == "none"]
    for alpha in sorted({c["base"]["alpha"] for c in clean}):
        at = [c for c in clean if c["base"]["alpha"] == alpha]
        benign_by_alpha[f"alpha {alpha:g}"] = detection(at)
        for dataset in sorted({c["dataset"] for c in at}):
            benign_by_alpha[f"alpha {alpha:g}, {dataset}"] = detection(
                [c for c in at if c["dataset"] == dataset])
    return {"by_class": by_class, "by_attack": by_attack, "benign_by_alpha": benign_by_alpha}


def _verdict(ok: bool | None) -> str:
    """``met`` / ``**missed**``; ``n/a`` when the figure is undefined (nothing flagged, or the
    defense compared against did not run)."""
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def tables(data: dict[str, Any]) -> str:
    """The Markdown the README quotes."""
    spec, cells = data["config"], data["cells"]
    defenses = spec["defenses"]
    paper_deltas, paper_precision = _paper_claims()
    devices = sorted({f"{c['device']}@{c['host']}" for c in cells})
    seeds = sorted({c["seed"] for c in cells})
    missing = data.get("missing_cells") or []
    quick_flag = " --quick" if data["mode"] == "quick" else ""
    lines = [
        f"# Effectiveness suite ({data['suite']})",
        "",
        *([f"**Partial: {len(cells)} of {data.get('planned_cells')} planned cells finished; "
           f"{len(missing)} did not run** (rows below cover only the finished ones).", ""]
          if missing else []),
        *([f"Failed cells: {', '.join(sorted(data['failed_cells']))}.", ""]
          if data.get("failed_cells") else []),
        f"{len(cells)} cells, seeds {seeds}, ran on {', '.join(devices)}; "
        f"regenerate: `python benchmarks/effectiveness.py{quick_flag}`"
        " (finished cells are reused; `--table` only re-renders). Accuracy: final-round test "
        "accuracy (%), mean +- sample standard deviation over seeds; ASR: backdoor attack "
        "success rate (%) of the final model; FLEML P/R: precision / recall of FLEML's flags "
        "over every client-round of the cell's seeds (a flagged client is a positive). "
        "Scenario: dataset, clients, Dirichlet alpha, malicious share, rounds, samples per "
        "client. MB / round: what FLEML's federation moved per round, mean over seeds (in "
        "memory mode: the global model to every member and every update back, dense fp32; "
        "the chain path adds the aggregator's fetches and publications).",
        "",
        "| scenario | attack | seeds | " + " | ".join(defenses) + " | FLEML P / R | MB / round |",
        "|---|---|---|" + "---|" * len(defenses) + "---|---|",
    ]
    for (scenario, attack), group_cells in sorted(group(cells).items()):
        row = []
        for d in defenses:
            mean, spread = _mean_spread([100 * c["defenses"][d]["final_accuracy"]
                                         for c in group_cells])
            asr = [c["defenses"][d]["final_backdoor_asr"] for c in group_cells]
            text = f"{mean:.1f} +- {spread:.1f}"
            if all(a is not None for a in asr):
                text += f" (ASR {100 * statistics.fmean(asr):.0f})"
            row.append(text)
        det = detection(group_cells)
        pr = f"{_pct(_ratio(det['tp'], det['tp'] + det['fp']), 0)} / " \
             f"{_pct(_ratio(det['tp'], det['tp'] + det['fn']), 0)}"
        if group_cells[0]["class"] == "none":
            pr = f"{det['fp']} of {det['fp'] + det['tn']} flagged"
        moved = [c["defenses"]["fleml"].get("bytes_per_round") for c in group_cells
                 if "fleml" in c["defenses"]]
        mb = (f"{statistics.fmean(moved) / 1e6:.2f}" if moved and None not in moved else "-")
        lines.append(f"| {scenario} | {attack} | {len(group_cells)} | " + " | ".join(row)
                     + f" | {pr} | {mb} |")

    dv = detection_verdicts(data)
    lines += ["", "## Detection targets (FLEML, pooled over every cell and seed)", "",
              "| attacks | tp | fp | fn | precision | recall | target | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for cls, det in dv["by_class"].items():
        p = _ratio(det["tp"], det["tp"] + det["fp"])
        r = _ratio(det["tp"], det["tp"] + det["fn"])
        if cls == "model":
            target = f"P >= {MODEL_PRECISION:.2f}, R >= {MODEL_RECALL:.2f}"
            ok = p is not None and r is not None and p >= MODEL_PRECISION and r >= MODEL_RECALL
        elif cls == "data":
            target = f"P >= {DATA_PRECISION:.2f}"
            ok = None if p is None else p >= DATA_PRECISION  # nothing flagged: undefined
        elif cls == "none":
            rate = _ratio(det["fp"], det["fp"] + det["tn"]) or 0.0
            target = f"<= {100 * BENIGN_FLAG_RATE:.0f}% benign client-rounds flagged"
            ok = rate <= BENIGN_FLAG_RATE
            p, r = None, None
        else:
            target, ok = "none (reported: accuracy/ASR cost)", None
        lines.append(f"| {cls} | {det['tp']} | {det['fp']} | {det['fn']} | {_pct(p, 0)} | "
                     f"{_pct(r, 0)} | {target} | {_verdict(ok)} |")
    for label, det in dv["benign_by_alpha"].items():
        rate = _ratio(det["fp"], det["fp"] + det["tn"]) or 0.0
        lines.append(f"| none, {label} | - | {det['fp']} | - | - | - | "
                     f"{100 * rate:.1f}% flagged | {_verdict(rate <= BENIGN_FLAG_RATE)} |")
    lines += ["", "Per attack: " + "; ".join(
        f"{a} {_pct(_ratio(d['tp'], d['tp'] + d['fp']), 0)}/"
        f"{_pct(_ratio(d['tp'], d['tp'] + d['fn']), 0)} (fp {d['fp']})"
        for a, d in dv["by_attack"].items()) + " (precision/recall %)."]

    av = accuracy_verdicts(data)
    fltrust_met = 2 * av["fltrust_lead"] >= av["attacked"] if "fltrust" in defenses else None
    lines += ["", "## Accuracy targets (means over seeds, points)", "",
              f"- FLEML >= best baseline - {BEST_MARGIN} on every attacked cell: "
              f"{av['best_ok']} of {av['attacked']} "
              f"({_verdict(av['best_ok'] == av['attacked'])})",
              f"- FLEML >= FLTrust + {FLTRUST_LEAD} on at least half of them: "
              f"{av['fltrust_lead']} of {av['attacked']} "
              f"({_verdict(fltrust_met)})",
              f"- without attack, FLEML within {CLEAN_MARGIN} of FedAvg: "
              f"{av['clean_ok']} of {av['clean']} ({_verdict(av['clean_ok'] == av['clean'])})",
              "", "| scenario | attack | FLEML | best baseline | FLEML - best | FLEML - FLTrust |"
              " verdict |", "|---|---|---|---|---|---|---|"]
    for r in av["rows"]:
        if r["class"] == "none":
            lines.append(f"| {r['scenario']} | none | {r['fleml']:.1f} | fedavg "
                         f"{r['fedavg']:.1f} | {r['fleml'] - r['fedavg']:+.1f} | - | "
                         f"{_verdict(r['clean_ok'])} |")
        else:
            lead = "-" if r["fltrust_lead"] is None else f"{r['fltrust_lead']:+.1f}"
            lines.append(f"| {r['scenario']} | {r['attack']} | {r['fleml']:.1f} | {r['best']} "
                         f"{r['best_acc']:.1f} | {r['fleml'] - r['best_acc']:+.1f} | {lead} | "
                         f"{_verdict(r['best_ok'])} |")

    adaptive = [c for c in cells if c["class"] == "adaptive"]
    if adaptive:
        lines += ["", "## Adaptive attack on FLEML: cost per defense (points of accuracy "
                  "against the clean cell of the same scenario and seed)", "",
                  "| scenario | seeds | " + " | ".join(defenses) + " |",
                  "|---|---|" + "---|" * len(defenses)]
        clean = {(c["scenario"].split(" mal=")[0], c["seed"]): c for c in cells
                 if c["class"] == "none"}
        for (scenario, _attack), g in sorted(group(adaptive).items()):
            pairs = [(c, clean.get((scenario.split(" mal=")[0], c["seed"]))) for c in g]
            pairs = [(c, ref) for c, ref in pairs if ref is not None]  # same seed only
            row = [str(len(pairs))]
            for d in defenses:
                if not pairs:
                    row.append("-")
                    continue
                cost = statistics.fmean(100 * (c["defenses"][d]["final_accuracy"]
                                               - ref["defenses"][d]["final_accuracy"])
                                        for c, ref in pairs)
                row.append(f"{cost:+.1f}")
            lines.append(f"| {scenario} | " + " | ".join(row) + " |")

    lines += ["", "## The paper's claims beside ours", "",
              "| claim (paper) | ours | verdict |", "|---|---|---|"]
    for dataset in sorted({c["dataset"] for c in cells}):
        for row, family in PAPER_ROWS.items():
            claim = paper_deltas.get(dataset, {}).get(family)
            g = [c for c in cells if c["dataset"] == dataset and c["attack"] == row]
            if claim is None or not g:
                continue
            delta = 100 * statistics.fmean(c["defenses"]["fleml"]["final_accuracy"]
                                           - c["defenses"]["fedavg"]["final_accuracy"] for c in g)
            lines.append(f"| {dataset} {family}: FLEML - FedAvg = +{claim:.2f} points | "
                         f"{delta:+.2f} ({row}, mean over {len(g)} cells) | "
                         f"{'met' if delta >= claim else '**not reproduced**'} |")
    attacked = [c for c in cells if c["class"] in ("model", "data")]
    det = detection(attacked)
    p = _ratio(det["tp"], det["tp"] + det["fp"])
    lines.append(f"| detection precision {100 * paper_precision:.0f}% | {_pct(p)}% over model "
                 f"and data poisoning cells | "
                 f"{'met' if p is not None and p >= paper_precision else '**not reproduced**'} |")
    return "\n".join(lines) + "\n"


# -- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--quick", action="store_true", help="the [quick] section")
    parser.add_argument("--table", action="store_true", help="only re-render the tables")
    parser.add_argument("--workers", type=int, default=1, help="parallel cell processes")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run cells as Ray tasks ('local', 'auto', 'ray://head:10001')")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="the cell store (default benchmarks/results/<suite>.cells)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output stem (default benchmarks/results/<suite>)")
    parser.add_argument("--datasets", nargs="*", help="restrict to these datasets")
    parser.add_argument("--attacks", nargs="*", help="restrict to these attack rows")
    parser.add_argument("--seeds", nargs="*", type=int, help="restrict to these seeds")
    parser.add_argument("--defenses", nargs="*", help="restrict to these defenses")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override base fields (JSON values), e.g. rounds=2")
    parser.add_argument("--partial", action="store_true",
                        help="run nothing: tables from the cells already in the store "
                             "(the missing ones are counted in the header)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    spec = load_spec(args.config)
    stem = args.out or RESULTS / suite_name(mode)
    if args.table:
        data = json.loads(stem.with_suffix(".json").read_text())
    else:
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = json.loads(value)
        cells = build_cells(spec, mode, datasets=args.datasets, attacks=args.attacks,
                            seeds=args.seeds, defenses=args.defenses, base_overrides=overrides)
        if args.defenses:
            spec = {**spec, "defenses": list(args.defenses)}
        store = ResultStore(args.results_dir or Path(f"{stem}.cells"))
        started = time.time()

        def progress(result: dict[str, Any], done: int, total: int) -> None:
            acc = ", ".join(f"{d} {_pct(s['final_accuracy'])}"
                            for d, s in result["summary"].items())
            print(f"[{done}/{total}] {result['key']}: {acc} ({result['seconds']:.0f}s)",
                  flush=True)

        print(f"{len(cells)} cells ({sum(store.has(c.key()) for c in cells)} already stored)",
              flush=True)
        failed: dict[str, str] = {}
        if not args.partial:
            try:
                run_cells(cells, store, workers=args.workers, ray_address=args.ray,
                          device=args.device, progress=progress)
            except CellsFailed as exc:  # the others are stored: report them, name these
                failed = {k: f"{type(e).__name__}: {e}" for k, e in exc.failures.items()}
                print(exc, file=sys.stderr, flush=True)
        results = [r for r in (store.get(c.key()) for c in cells) if r is not None]
        data = collect(spec, results, mode, started, {
            "workers": args.workers, "ray": args.ray, "device": args.device,
            "datasets": args.datasets, "attacks": args.attacks, "seeds": args.seeds,
            "set": overrides})
        data["planned_cells"] = len(cells)
        data["missing_cells"] = sorted(c.key() for c in cells if not store.has(c.key()))
        data["failed_cells"] = failed
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    text = tables(data)
    stem.with_suffix(".md").write_text(text)
    whole = not any((args.datasets, args.attacks, args.seeds, args.defenses, args.set,
                     args.out, args.results_dir))
    if whole and update_readme(README, data["suite"], text):
        print(f"updated the {data['suite']} tables in {README}", file=sys.stderr)
    print(text)
    return 1 if data.get("failed_cells") else 0


def update_readme(readme: Path, suite: str, text: str) -> bool:
    """Put ``text`` (the suite's tables) into ``readme`` between ``<!-- suite:start -->`` and
    ``<!-- suite:end -->``, its headings moved three levels down; False where the README has
    no such markers (the full suite's tables get theirs once a full run exists)."""
    start, end = f"<!-- {suite}:start -->", f"<!-- {suite}:end -->"
    if not readme.is_file():
        return False
    content = readme.read_text()
    if start not in content or end not in content:
        return False
    body = text.split("\n", 1)[1].strip("\n")  # without the file's own title
    body = "\n".join("###" + line if line.startswith("#") else line
                      for line in body.split("\n"))
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    return True


if __name__ == "__main__":
    sys.exit(main())
