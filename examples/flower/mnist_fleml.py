"""MNIST over 10 simulated Flower clients, 3 of them label flippers, aggregated by FLEML.

Flower's own simulation engine (Ray backend) runs the ClientApps; the ServerApp runs
fleml_node.flower's FLEMLStrategy. Each round prints whom FLEML flagged (and why), against the
known flippers, and the global model's test accuracy.

    .fleml/flower-venv/bin/python examples/flower/mnist_fleml.py [--rounds 5] [--defense fleml]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
# Ray refuses to create objects on a disk over 95% full; let it run on a fuller one
os.environ.setdefault("RAY_local_fs_capacity_threshold", "0.99")

from fleml_node.defense import REGISTRY  # noqa: E402
from fleml_node.flower.simulation import run  # noqa: E402
from fleml_node.simulate import SimulationConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--defense", default="fleml", choices=sorted(REGISTRY))
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--malicious", type=float, default=0.3)
    parser.add_argument("--samples", type=int, default=600, help="samples per client")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs Ray may use")
    parser.add_argument("--quiet", action="store_true", help="hide Flower's own log")
    args = parser.parse_args()
    config = SimulationConfig(dataset="mnist", num_clients=args.clients,
                              malicious_fraction=args.malicious, attack="label_flip",
                              defenses=(args.defense,), rounds=args.rounds,
                              max_client_samples=args.samples, seed=args.seed, mode="memory")
    flippers = {f"partition-{i:04d}" for i in config.malicious_clients()}
    print(f"{args.clients} clients, label flippers: {sorted(flippers)}", flush=True)
    if args.quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)

    def show(report) -> None:
        flagged = set(report.flagged)
        reasons = {c["client_id"]: c["reason"] for c in report.defense["clients"]
                   if c["flagged"]} if report.defense else {}
        print(f"round {report.round}: {args.defense} flagged {sorted(flagged) or 'nobody'}; "
              f"caught {len(flagged & flippers)}/{len(flippers)} flippers, "
              f"{len(flagged - flippers)} honest flagged", flush=True)
        for cid in sorted(flagged):
            print(f"    {cid}: {reasons.get(cid, '')}", flush=True)
        for cid, reason in sorted(report.rejected.items()):
            print(f"    {cid} rejected: {reason}", flush=True)

    _, result = run(config, args.defense, on_round=show, num_cpus=args.cpus)
    accuracy = {r: m["accuracy"] for r, m in sorted(result.evaluate_metrics_serverapp.items())}
    print("test accuracy per round: " + ", ".join(f"{r}: {100 * a:.1f}%"
                                                  for r, a in accuracy.items()), flush=True)


if __name__ == "__main__":
    main()
