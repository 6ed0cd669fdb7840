"""Fault report: every fault scenario of tests/hosts across network namespaces, as a table.

    sudo ./fleml bench faults [--only NAME ...] [--out benchmarks/results]

(root: the lab creates network namespaces and veth links; about 20 minutes on 2 cores.
`--render` only rewrites faults.md from faults.json.)

One lab world (tests/hosts/world.py: the chain, the aggregator, 3 members and an observer,
each on its own network namespace; one js-ipfs daemon per node host, exchanging objects over
the swarm only) runs every scenario of tests/hosts/scenarios.py on a freshly deployed
consortium each, with real `fleml-node` processes (3 members, FedAvg, 120 MNIST samples each):

* member link cut mid-round 1 until it closed; aggregator link cut 35 s between close and
  finalize; member 0's and the aggregator's IPFS daemon stopped 30 s while round 1 is open;
* kill -9 and restart (2 s later) of the aggregator, a member, the chain node and the
  aggregator's IPFS daemon as a round reaches each step (open, submit, close, finalize).

For each: rounds lost (target 0), rounds finalized twice (target 0, counted from the chain's
RoundFinalized events), member updates lost, and the seconds from the end of the fault to the
affected node's next effect on chain (see scenarios.py). Writes benchmarks/results/faults.json
(config, seed, machine, every outcome) and faults.md (the table). A scenario that raises is
recorded with its error and the run goes on; the lab is always torn down.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleml_node.simulate import machine_info  # noqa: E402
from tests.hosts import scenarios  # noqa: E402
from tests.hosts.netns import unavailable_reason  # noqa: E402
from tests.hosts.world import World  # noqa: E402

ANVIL_SCENARIOS = ["member-link", "aggregator-link", "ipfs-member", "ipfs-aggregator",
                   "kill-aggregator", "kill-client", "kill-chain", "kill-ipfs"]
POA_SCENARIOS = ["sealer-stop"]  # on a 3-sealer Clique network (fleml_node/devnet/poa.py)
SCENARIOS = ANVIL_SCENARIOS + POA_SCENARIOS


def run_one(world: World, name: str, work: Path) -> list[scenarios.Outcome]:
    world.ensure_running()
    with world.lab.inside(world.observer):
        fed = world.federation(work / name)
        try:
            if name == "member-link":
                return [scenarios.member_link_cut(world, fed)]
            if name == "aggregator-link":
                return [scenarios.aggregator_link_cut(world, fed)]
            if name == "sealer-stop":
                return [scenarios.sealer_stop(world, fed)]
            if name.startswith("ipfs-"):
                return [scenarios.ipfs_outage(world, fed, name.removeprefix("ipfs-"))]
            return scenarios.kill_restart(world, fed, name.removeprefix("kill-"))
        finally:
            fed.stop_all()
            world.lab.restore_all()


def failed(name: str, chain: str, why: str) -> dict[str, Any]:
    return {"fault": name, "when": "-", "rounds": 0, "finalized": [], "rounds_lost": None,
            "finalized_twice": None, "updates_lost": None, "recovered_s": None, "seconds": 0.0,
            "notes": [str(why).splitlines()[0][:300]], "statuses": {}, "precondition": False,
            "scenario": name, "chain": chain}


def run_logged(world: World, name: str, work: Path) -> list[dict[str, Any]]:
    t0 = time.monotonic()
    print(f"== {name}", flush=True)
    try:
        outs = [o.as_dict() for o in run_one(world, name, work)]
    except Exception as err:  # recorded; the next scenario still runs
        traceback.print_exc()
        outs = [failed(name, world.chain.kind, f"error: {err}")]
    for o in outs:
        o["scenario"], o["chain"] = name, world.chain.kind
        print(json.dumps(o), flush=True)
    print(f"   {time.monotonic() - t0:.0f} s", flush=True)
    return outs


def table(outcomes: list[dict[str, Any]]) -> str:
    lines = ["| fault | chain | when | recovered in s | rounds lost | finalized twice "
             "| updates lost | notes |", "|---|---|---|---:|---:|---:|---:|---|"]
    for o in outcomes:
        rec = "-" if o["recovered_s"] is None else f"{o['recovered_s']:.1f}"
        counts = ["-" if o[k] is None else o[k]
                  for k in ("rounds_lost", "finalized_twice", "updates_lost")]
        notes = "; ".join(o["notes"] + ([] if o["precondition"] else
                                        ["the fault missed its step"]))
        lines.append(f"| {o['fault']} | {o['chain']} | {o['when']} | {rec} | "
                     f"{' | '.join(map(str, counts))} | {notes} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite faults.md from the faults.json in --out")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads((args.out / "faults.json").read_text()), args.out))
        return
    reason = unavailable_reason()
    if reason:
        sys.exit(f"faults: {reason}")
    names = args.only or SCENARIOS
    started = time.time()
    results: list[dict[str, Any]] = []
    chains: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fleml-faults-") as tmp:
        work = Path(tmp)
        for kind, group in (("anvil", ANVIL_SCENARIOS), ("poa", POA_SCENARIOS)):
            todo = [name for name in names if name in group]
            if not todo:
                continue
            try:
                world = World(work / f"lab-{kind}", members=3, chain=kind)
                world.start()
            except Exception as err:  # e.g. no PoA network here: say so in the table
                traceback.print_exc()
                results.extend(failed(name, kind, f"no {kind} lab: {err}") for name in todo)
                continue
            try:
                chains[kind] = getattr(getattr(world.chain, "net", None), "describe",
                                       lambda: {"client": "anvil 1.7.1 (--state, dumped "
                                                          "every 1 s)"})()
                for name in todo:
                    results.extend(run_logged(world, name, work))
            finally:
                world.close()
    data = {
        "benchmark": "faults",
        "config": {"members": 3, "defense": "fedavg", "dataset": "mnist",
                   "samples_per_client": 120, "seed": 3, "chains": chains,
                   "ipfs": "one js-ipfs 0.66 daemon per node host, swarm only (bitswap)",
                   "restart_delay_s": scenarios.RESTART_DELAY, "scenarios": names,
                   "lab": "network namespaces, one per host, veth to a bridge in its own "
                          "namespace; a cut takes the switch side of the link down"},
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "outcomes": results,
        "totals": {k: sum(o[k] or 0 for o in results)
                   for k in ("rounds_lost", "finalized_twice", "updates_lost")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(data, indent=2) + "\n")
    print(render(data, args.out))


READING = """\
Recovered in s: from the end of the fault (link restored, process restarted) to the affected
node's next effect on the chain: a cut or killed member's next update, the round finalized
after the aggregator's reconnect, a killed aggregator's / chain's / daemon's next change of
round, status or submissions, a restarted sealer serving the head. Rounds lost: rounds that
did not finalize; updates lost: members' updates missing from a round where the fault did not
exclude them by design (the member cut across round 1's deadline misses it, as the contract
says). The chain node ("kill -9 chain") is anvil with its state dumped every second: a kill
loses up to the last second of blocks, a rollback deeper than the nodes' 0 confirmations.
"""


def render(data: dict[str, Any], out: Path) -> str:
    """Write faults.md from the data (also ``--render``: the table again, no new run)."""
    md = (f"# Fault report\n\n`sudo ./fleml bench faults` ({data['timestamp']}, "
          f"{data['wall_seconds'] / 60:.0f} min; chains: "
          f"{', '.join(data['config']['chains']) or '-'}; 3 members, FedAvg)\n\n"
          f"{table(data['outcomes'])}\n\n{READING}")
    (out / "faults.md").write_text(md)
    return md


if __name__ == "__main__":
    main()
