"""What re-running FLEML costs an auditor, and how exactly it reproduces.

    python benchmarks/verify_bench.py [--clients 10 50] [--samples 100] [--reruns 5]

For each member count, every member trains one round on its MNIST share (Dirichlet 0.5,
--samples samples, seed 0) and its update is encoded as a client node does. Then:

* aggregator: `RoundEngine.decide` with FLEML, from a fresh state, timed (the defense's own
  time, under the recorded execution settings: one torch thread, deterministic algorithms);
* audit re-execution: `verify_round` with the published validation set and state, which
  re-applies the rejection rules, replays the aggregate and re-runs FLEML, timed; its ratio to
  the aggregator's defense time is the issue's figure (target <= 1.5);
* audit fetching: the same updates put on a local js-ipfs daemon and fetched back with
  `gather_submissions` (eight at a time, hash-checked), timed separately;
* determinism: FLEML re-run --reruns times at one thread (max abs difference of the
  coefficients, and whether any flag differs), and once at two threads without the recorded
  settings, to show why they are recorded.

Results: benchmarks/results/verify.json with the config, seed and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleml_node.defense import make_defense  # noqa: E402
from fleml_node.devnet.ipfs import LocalIpfsDaemon  # noqa: E402
from fleml_node.learning import (  # noqa: E402
    TrainConfig,
    configure_threads,
    get_params,
    local_train,
    make_generator,
)
from fleml_node.round_engine import (  # noqa: E402
    DefenseInputs,
    RoundEngine,
    Submission,
    capped_counts,
    encode_state,
    encode_update,
    flagged_bitmap,
    verify_round,
)
from fleml_node.simulate import machine_info  # noqa: E402
from fleml_node.storage import IpfsStore, content_hash  # noqa: E402
from fleml_node.submissions import gather_submissions  # noqa: E402
from fleml_node.task import TaskConfig, client_data, validation_data  # noqa: E402

ROUND = 1


def train_round(task: TaskConfig) -> tuple[dict[str, torch.Tensor], list[Submission]]:
    base = get_params(task.initial_model())
    scratch, subs = task.initial_model(), []
    for i in range(task.num_clients):
        x, y = client_data(task, i)
        update, _ = local_train(scratch, base, x, y, task.train, make_generator(task.seed, 1, i))
        member = f"0x{i + 1:040x}"
        blob = encode_update(update, ROUND, int(y.numel()), member)
        subs.append(Submission(member, i, content_hash(blob), "", blob))
    return base, subs


def coefficients(engine: RoundEngine, base: dict[str, torch.Tensor], subs: list[Submission],
                 settings: bool) -> tuple[list[float], list[bool]]:
    """FLEML's coefficients and flags on these updates from a fresh state."""
    if settings:
        outcome = engine.decide(ROUND, base, subs)
        decided = [d for d in outcome.decisions if d.status != "rejected"]
        return [d.coefficient for d in decided], [d.status == "flagged" for d in decided]
    screened = engine.screen(ROUND, subs)
    result = engine.defense.aggregate(screened.updates, engine._context(
        ROUND, base, screened.accepted, capped_counts(screened.claims)))
    return [c.coefficient for c in result.clients], [c.flagged for c in result.clients]


def fetch_seconds(subs: list[Submission], api: str) -> float:
    store = IpfsStore(api, timeout=30)
    events = []
    for s in subs:
        cid = store.put(s.blob)
        events.append(SimpleNamespace(args={"member": s.member, "updateHash": s.update_hash,
                                            "updateCid": cid}))
    members = SimpleNamespace(member_info=lambda a: (True, True, int(a, 16) - 1, ""))
    started = time.perf_counter()
    fetched = gather_submissions(members, store, events)
    seconds = time.perf_counter() - started
    assert all(f.blob == s.blob for f, s in zip(fetched, subs, strict=True))
    return seconds


def measure(n: int, samples: int, reruns: int, api: str) -> dict[str, Any]:
    task = TaskConfig(dataset="mnist", seed=0, num_clients=n, alpha=0.5, validation_size=500,
                      max_client_samples=samples, train=TrainConfig())
    base, subs = train_round(task)
    validation = validation_data(task)

    def fresh() -> RoundEngine:
        return RoundEngine(task, make_defense("fleml"), validation)

    engine = fresh()
    state_before = engine.defense_state()
    started = time.perf_counter()
    outcome = engine.decide(ROUND, base, subs)
    defense_seconds = time.perf_counter() - started
    report = outcome.report(task, {"hash": "", "cid": ""}, {"hash": "", "cid": ""}, subs)
    report["defense_state"] = {"after": {"hash": "0x" + content_hash(
        encode_state(outcome.state_after)).hex()}}
    started = time.perf_counter()
    checked = verify_round(ROUND, subs, base, outcome.result_params, report,
                           flagged_bitmap(outcome.bitmap_indices, n),
                           DefenseInputs(validation, state_before))
    verify_seconds = time.perf_counter() - started
    assert all(ok for _, ok, _ in checked.checks), checked.checks

    reference, ref_flags = coefficients(fresh(), base, subs, settings=True)
    spread, flags_differ = 0.0, False
    for _ in range(reruns):
        again, flags = coefficients(fresh(), base, subs, settings=True)
        spread = max(spread, max(abs(a - b) for a, b in zip(again, reference, strict=True)))
        flags_differ |= flags != ref_flags
    torch.set_num_threads(2)
    two, two_flags = coefficients(fresh(), base, subs, settings=False)
    torch.set_num_threads(1)
    return {
        "clients": n,
        "aggregator_defense_seconds": defense_seconds,
        "audit_reexecution_seconds": verify_seconds,
        "reexecution_ratio": verify_seconds / defense_seconds,
        "audit_fetch_seconds": fetch_seconds(subs, api),
        "update_bytes": len(subs[0].blob),
        "determinism": {
            "reruns_one_thread": reruns,
            "max_abs_coefficient_difference_one_thread": spread,
            "flags_differ_one_thread": flags_differ,
            "max_abs_coefficient_difference_two_threads_unrecorded": max(
                abs(a - b) for a, b in zip(two, reference, strict=True)),
            "flags_differ_two_threads_unrecorded": two_flags != ref_flags,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--reruns", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/verify.json")
    args = parser.parse_args()
    configure_threads()
    with tempfile.TemporaryDirectory(prefix="fleml-verify-") as tmp, \
            LocalIpfsDaemon(Path(tmp) / "ipfs") as ipfs:
        rows = []
        for n in args.clients:
            row = measure(n, args.samples, args.reruns, ipfs.api_addr)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"benchmark": "fleml_audit_reexecution",
              "config": {"dataset": "mnist", "alpha": 0.5, "samples_per_client": args.samples,
                         "seed": 0, "defense": "fleml", "reruns": args.reruns},
              "machine": {**machine_info(), "load_average_after": os.getloadavg()},
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "target_reexecution_ratio": 1.5,
              "results": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
