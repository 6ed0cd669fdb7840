"""Audit cost of an early and a late round of a long chain: round 1 vs round 50.

    python benchmarks/audit_bench.py [--rounds 50] [--gap-blocks 1000] [--repeats 5]

A fresh anvil chain and a local js-ipfs daemon run a real federation (3 members, FedAvg,
50-sample MNIST shares, all nodes stepped in this one process) for --rounds rounds. After each
round --gap-blocks empty blocks are mined: they stand in for the rest of a public chain's
traffic, so that the chain grows far beyond what the rounds themselves need (50 rounds x 1,000
blocks = 50,000 blocks, 25 eth_getLogs ranges of 2,000 blocks).

Then `fleml_node.audit.audit_round` checks round 1 and the last round --repeats times each
(alternating, after one warm-up audit), with every JSON-RPC request recorded: the wall time,
the eth_getLogs calls and the blocks they cover. For comparison, the same round's event scan
is also timed from the deployment block to the head, as every audit scanned before rounds
recorded the block that opened them ("deployment_to_head" beside "round_blocks").

Building the default chain takes about 11 minutes on 2 cores; the audits take seconds.
Target (issue 9): the median audit time of the last round is under twice round 1's.
Results: benchmarks/results/audit.json, with the config, seed and machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleml_node.audit import audit_round  # noqa: E402
from fleml_node.chain.contract import Consortium, recorded_requests  # noqa: E402
from fleml_node.chain.events import MAX_BLOCK_RANGE, round_events  # noqa: E402
from fleml_node.devnet.ipfs import LocalIpfsDaemon  # noqa: E402
from fleml_node.learning import configure_threads  # noqa: E402
from fleml_node.simulate import SimulationConfig, chain_federation, machine_info  # noqa: E402
from fleml_node.storage import IpfsStore  # noqa: E402

TARGET_RATIO = 2.0


def log_scan(requests: list[tuple[str, Any]]) -> dict[str, int]:
    """The eth_getLogs calls among `requests`, the blocks they cover and all requests."""
    ranges = [params[0] for method, params in requests if method == "eth_getLogs"]
    return {"get_logs_calls": len(ranges),
            "blocks_scanned": sum(int(q["toBlock"], 16) - int(q["fromBlock"], 16) + 1
                                  for q in ranges),
            "rpc_requests": len(requests)}


def audit_once(reader: Consortium, store: IpfsStore, round_id: int) -> dict[str, Any]:
    with recorded_requests(reader.w3) as requests:
        started = time.perf_counter()
        verdict = audit_round(reader, store, round_id)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "passed": verdict.ok, **log_scan(requests),
            "rpc_methods": dict(Counter(method for method, _ in requests))}


def scan_once(reader: Consortium, round_id: int, from_block: int | None = None,
              to_block: int | None = None) -> dict[str, Any]:
    with recorded_requests(reader.w3) as requests:
        started = time.perf_counter()
        events = round_events(reader, round_id, from_block, to_block)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "events": sum(len(found) for found in events.values()),
            **log_scan(requests)}


def build_chain(fed: Any, gap_blocks: int) -> float:
    """Run the federation to its last round, mining `gap_blocks` after each; the seconds."""
    started = time.perf_counter()
    while True:
        did = fed.step()
        if did == "finalized":
            s = fed.aggregator.summaries[-1]
            fed.w3.provider.make_request("anvil_mine", [hex(gap_blocks)])
            print(f"round {s.round_id} finalized; chain at block {fed.w3.eth.block_number}",
                  flush=True)
        if did == "done":
            return time.perf_counter() - started


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    return {"median_seconds": statistics.median(r["seconds"] for r in runs),
            "seconds": [r["seconds"] for r in runs],
            "passed": all(r["passed"] for r in runs),
            "get_logs_calls": first["get_logs_calls"],
            "blocks_scanned": first["blocks_scanned"],
            "rpc_requests": first["rpc_requests"],
            "rpc_methods": first["rpc_methods"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--samples", type=int, default=50, help="MNIST samples per member")
    parser.add_argument("--gap-blocks", type=int, default=1000,
                        help="empty blocks mined after each round")
    parser.add_argument("--repeats", type=int, default=5, help="audits per measured round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/audit.json")
    args = parser.parse_args()
    configure_threads()
    config = SimulationConfig(num_clients=args.clients, malicious_fraction=0.0, attack="none",
                              defenses=("fedavg",), rounds=args.rounds,
                              max_client_samples=args.samples, seed=args.seed)
    first, last = 1, args.rounds
    with tempfile.TemporaryDirectory(prefix="fleml-audit-") as tmp, \
            LocalIpfsDaemon(Path(tmp) / "ipfs") as ipfs, \
            chain_federation(config, "fedavg", Path(tmp) / "run", ipfs.api_addr) as fed:
        build_seconds = build_chain(fed, args.gap_blocks)
        reader = Consortium(fed.w3, fed.aggregator.consortium.deployment)
        store = IpfsStore(ipfs.api_addr, timeout=60)
        deployed_at = reader.deployment.block_number
        head = fed.w3.eth.block_number
        audit_once(reader, store, min(2, last))  # warm-up: imports, task data, connections
        runs: dict[int, list[dict[str, Any]]] = {first: [], last: []}
        for _ in range(args.repeats):
            for round_id in (first, last):
                runs[round_id].append(audit_once(reader, store, round_id))
        audits = {str(r): summarize(found) for r, found in runs.items()}
        scans = {str(r): {"round_blocks": scan_once(reader, r),
                          "deployment_to_head": scan_once(reader, r, deployed_at, head)}
                 for r in (first, last)}
        chain = {"client": fed.w3.client_version, "head_block": head,
                 "deployment_block": deployed_at,
                 "opened_blocks": {str(r): reader.get_round(r).opened_block
                                   for r in (first, last)}}
    ratio = audits[str(last)]["median_seconds"] / audits[str(first)]["median_seconds"]
    result = {
        "benchmark": "audit_round_1_vs_last",
        "config": {"rounds": args.rounds, "clients": args.clients, "defense": "fedavg",
                   "dataset": "mnist", "samples_per_client": args.samples, "epochs": 1,
                   "gap_blocks_per_round": args.gap_blocks, "repeats": args.repeats,
                   "max_block_range": MAX_BLOCK_RANGE, "seed": args.seed,
                   "execution": "all nodes stepped in one process; anvil + local js-ipfs"},
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chain": chain,
        "build_seconds": build_seconds,
        "audits": audits,
        "event_scans": scans,
        "ratio_last_to_first": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio < TARGET_RATIO,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in (first, last):
        a, old = audits[str(r)], scans[str(r)]["deployment_to_head"]
        print(f"round {r}: audit {a['median_seconds']:.3f}s "
              f"({'PASS' if a['passed'] else 'FAIL'}), {a['get_logs_calls']} eth_getLogs over "
              f"{a['blocks_scanned']} blocks; deployment to head would be "
              f"{old['get_logs_calls']} calls over {old['blocks_scanned']} blocks")
    print(f"round {last} / round {first}: {ratio:.2f} (target < {TARGET_RATIO:g})")


if __name__ == "__main__":
    main()
