"""Seconds and gas per round on the chains a consortium runs: anvil against a Clique PoA network.

    python benchmarks/chain_rounds.py [--members 10] [--rounds 4] [--chains anvil,clique-2,...]

Each chain gets a fresh consortium and a real federation of processes: one `fleml-node
aggregator` and `--members` `fleml-node client` processes (60 MNIST samples each, the
integration tests' task), all on this machine, sharing one js-ipfs daemon. On a PoA network the
members connect to its nodes in turn, so their transactions travel between sealers, and
each lists the other nodes after its own (``--rpc A,B,C``: it moves on when its node fails).
Chains:

* ``anvil``: a block per transaction (the development chain);
* ``anvil-T``: anvil sealing a block every T seconds (``--block-time``), the block time alone;
* ``clique-T``: three @ethereumjs/client sealers, Clique period T s (fleml_node.devnet.poa).

Per round it records the seconds from one round's finalization to the next (round 1: from its
opening), the blocks it spanned, the gas of every transaction of the round (open, submit,
close, finalize) from the receipts and the members whose update is not in it. Results:
benchmarks/results/chain_rounds.json with config, seed, machine and the load average before
and after each chain. Run it on a quiet machine (the nodes compete for its CPUs), e.g. under
``flock /tmp/fleml-timing.lock``; ``--keep DIR`` keeps every node's log and the chain data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleml_node.chain.contract import RoundStatus, connect  # noqa: E402
from fleml_node.chain.events import round_events  # noqa: E402
from fleml_node.chain.profile import load_profile  # noqa: E402
from fleml_node.devnet.anvil import LocalAnvil, test_keys  # noqa: E402
from fleml_node.devnet.consortium import deploy_local_consortium  # noqa: E402
from fleml_node.devnet.ipfs import LocalIpfsDaemon  # noqa: E402
from fleml_node.retry import is_transient  # noqa: E402
from fleml_node.simulate import machine_info  # noqa: E402
from tests.integration.conftest import Federation, small_task  # noqa: E402

ROUND_TIMEOUT = 600.0


class SpreadFederation(Federation):
    """A federation whose nodes connect to the chain's nodes in turn (one URL: all the same)."""

    def __init__(self, *args, rpc_urls: list[str], **kwargs) -> None:  # noqa: ANN002,ANN003
        super().__init__(*args, **kwargs)
        self.rpc_urls = rpc_urls

    def rpc_for(self, key_index: int | None) -> str:
        """The node's chain nodes, its own first (nodes take turns being first); it moves to
        the next when its node fails (`FailoverHTTPProvider`)."""
        first = (key_index or 0) % len(self.rpc_urls)
        return ",".join(self.rpc_urls[first:] + self.rpc_urls[:first])


@contextlib.contextmanager
def chain(kind: str, work: Path, accounts: int) -> Iterator[tuple[list[str], Path, dict]]:
    """Start the chain named `kind`; yields its RPC URLs, its log and its description."""
    name, _, period = kind.partition("-")
    if name == "anvil":
        block_time = float(period) if period else None
        with LocalAnvil(accounts=accounts, log_file=work / "chain.log",
                        block_time=block_time) as node:
            yield [node.url], work / "chain.log", {"client": "anvil 1.7.1",
                                                   "block_time": block_time or 0}
    elif name == "clique":
        from fleml_node.devnet.poa import PoaNetwork

        with PoaNetwork(work / "poa", sealers=3, period=int(period or 2)) as net:
            yield list(net.rpc_urls), net.log_path(0), net.describe()
    else:
        raise SystemExit(f"unknown chain {kind!r}: anvil, anvil-T or clique-T")


def run(kind: str, members: int, rounds: int, ipfs_api: str, work: Path) -> dict:
    keys = test_keys(members + 2)
    load_before = os.getloadavg()
    with chain(kind, work, members + 2) as (urls, log, described):
        w3 = connect(urls[0])
        profile = replace(load_profile("clique"), block_time=described["block_time"]) \
            if kind.startswith("clique") else None
        record = deploy_local_consortium(w3, keys, members, work / "deployment.json",
                                         profile=profile)
        fed = SpreadFederation(work, urls[0], record.path, keys, ipfs_api, log, rpc_urls=urls)
        fed.task_args = small_task(members)
        try:
            clients = [fed.client(i) for i in range(members)]
            fed.wait_ready(*clients, timeout=600)
            aggregator = fed.aggregator("--rounds", str(rounds), "--round-seconds", "120")
            fed.wait_status(rounds, RoundStatus.FINALIZED, timeout=ROUND_TIMEOUT * rounds)
            with contextlib.suppress(subprocess.TimeoutExpired):
                aggregator.process.wait(timeout=60)  # it logs the last round, then exits
            per_round = [_retrying(lambda r=r: _round(fed, r, members))
                         for r in range(1, rounds + 1)]
        finally:
            fed.stop_all()
        phases = aggregator_phases(work / "logs" / "aggregator.log")
        for entry in per_round:
            entry["aggregator_wall_seconds"] = phases.get(entry["round"])
        load_after = os.getloadavg()
    previous = None
    for entry in per_round:
        entry["open_to_finalized"] = entry["finalized_at"] - entry["opened_at"]
        start = previous if previous is not None else entry["opened_at"]
        entry["seconds"] = entry["finalized_at"] - start
        previous = entry["finalized_at"]
    steady = [r["seconds"] for r in per_round[1:]] or [per_round[0]["seconds"]]
    return {"chain": kind, "described": described, "rpc_nodes": len(urls),
            "loadavg_before": load_before, "loadavg_after": load_after,
            "repooled_transactions": _repooled(work),
            "rounds": per_round, "median_seconds_per_round": statistics.median(steady),
            "median_gas_per_round": int(statistics.median(r["gas"] for r in per_round))}


def _retrying(read, attempts: int = 10):  # noqa: ANN001,ANN202
    """A chain read, retried on transient node errors as the nodes do (fleml_node.retry)."""
    for attempt in range(attempts):
        try:
            return read()
        except Exception as exc:  # noqa: BLE001
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def aggregator_phases(log: Path) -> dict[int, dict[str, float]]:
    """Per round, wall seconds from the aggregator's log: ``open_to_close`` (members see the
    round, train, submit; the close transaction) and ``close_to_finalized`` (fetching and
    aggregating the updates, the finalize transaction, and then the aggregator's summary of the
    round, a test-set evaluation, which it logs the round "finalized" after). The log's clock
    has whole seconds. The chain's own ``open_to_finalized`` (block timestamps) ends at the
    finalize transaction."""
    phases: dict[int, dict[str, float]] = {}
    seen: dict[tuple[int, str], float] = {}
    pattern = re.compile(r"^(\d\d):(\d\d):(\d\d) INFO fleml_node\.aggregator: round (\d+) "
                         r"(opened|closed|finalized)\b")
    for line in log.read_text(errors="replace").splitlines():
        found = pattern.match(line)
        if found:
            h, m, sec, round_id, step = found.groups()
            seen[(int(round_id), step)] = int(h) * 3600 + int(m) * 60 + int(sec)
    for (round_id, step), at in seen.items():
        if step != "opened":
            continue
        closed = seen.get((round_id, "closed"))
        final = seen.get((round_id, "finalized"))
        if closed is not None and final is not None:
            phases[round_id] = {"open_to_close": (closed - at) % 86400,
                                "close_to_finalized": (final - closed) % 86400}
    return phases


def _repooled(work: Path) -> int:
    """Transactions the Clique nodes put back into their pools after their block lost a fork
    (clique-fixes.js fix 10; the nodes' logs count them, one line per node and batch)."""
    found = 0
    for log in (work / "poa").glob("node*/node.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "back in the pool:" in line:
                found += len(line.split("back in the pool:", 1)[1].split())
    return found


def _round(fed: Federation, round_id: int, members: int) -> dict:
    events = round_events(fed.reader, round_id)
    w3 = fed.reader.w3
    hashes = {e.tx_hash for found in events.values() for e in found}
    gas = sum(w3.eth.get_transaction_receipt(h)["gasUsed"] for h in hashes)
    opened, finalized = events["RoundOpened"][0], events["RoundFinalized"][-1]
    submitted = {e.args["member"] for e in events.get("UpdateSubmitted", [])}
    return {
        "round": round_id,
        "opened_at": w3.eth.get_block(opened.block_number)["timestamp"],
        "finalized_at": w3.eth.get_block(finalized.block_number)["timestamp"],
        "blocks": finalized.block_number - opened.block_number,
        "open_to_finalized": None,
        "submissions": len(events.get("UpdateSubmitted", [])),
        # members (by index) whose update is not in the round
        "missed": [i for i in range(members) if fed.member(i) not in submitted],
        "transactions": len(hashes),
        "gas": gas,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--chains", default="anvil,anvil-2,clique-1,clique-2,clique-5")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chain_rounds.json")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="work in DIR (created, must not exist) and keep it: every node's "
                             "log, the chain nodes' logs and data, the nodes' state")
    args = parser.parse_args()
    results = []
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        folder = contextlib.nullcontext(str(args.keep))
    else:
        folder = tempfile.TemporaryDirectory(prefix="fleml-chains-")
    out = {
        "benchmark": "chain_rounds",
        "config": {"members": args.members, "rounds": args.rounds, "dataset": "mnist",
                   "samples_per_member": 60, "seed": 3, "defense": "fleml",
                   "round_seconds": 120, "chains": args.chains,
                   "execution": "one process per node, all on this machine"},
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    with folder as tmp, LocalIpfsDaemon(Path(tmp) / "ipfs") as ipfs:
        for kind in args.chains.split(","):
            work = Path(tmp) / kind
            work.mkdir()
            started = time.perf_counter()
            result = run(kind, args.members, args.rounds, ipfs.api_addr, work)
            result["wall_seconds"] = time.perf_counter() - started
            results.append(result)
            print(f"{kind}: {result['median_seconds_per_round']:.1f} s/round, "
                  f"{result['median_gas_per_round']:,} gas/round, missed "
                  f"{[r['missed'] for r in result['rounds']]}", flush=True)
            out["growth_with_block_time"] = _fit(results)
            # written after every chain: a later chain's failure keeps the earlier results
            args.out.write_text(json.dumps(out, indent=2) + "\n")


def _fit(results: list[dict]) -> dict | None:
    """Least-squares line through the Clique chains' median seconds per round against their
    block period: seconds = intercept + slope * period (None with fewer than two periods)."""
    points = [(r["described"]["block_time"], r["median_seconds_per_round"])
              for r in results if r["chain"].startswith("clique")]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x, _ in points))
    return {"model": "median_seconds_per_round = intercept + slope * clique_period_s",
            "slope_rounds_seconds_per_period_second": slope,
            "intercept_seconds": mean_y - slope * mean_x, "points": points}


if __name__ == "__main__":
    main()
