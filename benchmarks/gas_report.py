"""Gas used by every FlemlConsortium operation, and finalize gas at 5, 20 and 100 members.

Run: ./fleml bench-gas   (or, with the venv on PATH: python benchmarks/gas_report.py)

Deploys to a fresh anvil chain launched by brownie's `development` network and writes
benchmarks/results/gas.json with the compiler settings, the chain and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from pathlib import Path

from brownie import accounts, chain, network, project

ROOT = Path(__file__).resolve().parents[1]
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # a 59-char CIDv1, base32
SUBMIT_GAS_TARGET = 55_000


def digest(i: int) -> str:
    """A full-entropy 32-byte hash (calldata gas depends on the number of zero bytes)."""
    return "0x" + hashlib.sha256(i.to_bytes(8, "big")).hexdigest()


def run_round(consortium, agg, members, flagged_fraction: float) -> dict[str, list[int]]:
    gas: dict[str, list[int]] = {"openRound": [], "submitUpdate": [], "closeRound": []}
    previous = consortium.currentRound()
    # after the first round, a round must train on the previous round's result
    model = consortium.getRound(previous)[1] if previous else digest(0)
    tx = consortium.openRound(model, CID, chain.time() + 3600, len(members), {"from": agg})
    gas["openRound"].append(tx.gas_used)
    round_id = tx.return_value
    for i, member in enumerate(members):
        tx = consortium.submitUpdate(round_id, digest(i), CID, {"from": member})
        gas["submitUpdate"].append(tx.gas_used)
    gas["closeRound"].append(consortium.closeRound(round_id, {"from": agg}).gas_used)
    flagged = range(0, len(members), max(1, round(1 / flagged_fraction)))
    bitmap = [0] * ((len(members) + 255) // 256)
    for index in flagged:
        bitmap[index // 256] |= 1 << (index % 256)
    tx = consortium.finalizeRound(
        round_id, digest(1), CID, digest(2), CID, bitmap, {"from": agg}
    )
    gas["finalizeRound"] = [tx.gas_used]
    return gas


def measure(sizes: list[int]) -> dict:
    fleml = project.load(ROOT, name="FlemlGas")
    fleml.load_config()
    network.connect("development")
    try:
        while len(accounts) < max(sizes) + 2:
            accounts.add()
        operator, agg = accounts[0], accounts[1]
        for account in accounts[2:]:
            if account.balance() == 0:
                operator.transfer(account, "1 ether")
        results: dict = {"per_operation": {}, "finalize_by_members": {}}
        tx = fleml.FlemlConsortium.deploy({"from": operator})
        results["per_operation"]["deploy"] = tx.tx.gas_used
        consortium = tx
        results["per_operation"]["setAggregator"] = consortium.setAggregator(
            agg, {"from": operator}).gas_used
        admit = []
        for i, member in enumerate(accounts[2: 2 + max(sizes)]):
            admit.append(consortium.admitMember(member, f"member-{i:03d}",
                                                {"from": operator}).gas_used)
        results["per_operation"]["admitMember"] = statistics.median(admit)
        for size in sizes:
            members = list(accounts[2: 2 + size])
            # quorum is checked against active members: remove the others for this size
            for extra in accounts[2 + size: 2 + max(sizes)]:
                if consortium.isMember(extra):
                    consortium.removeMember(extra, {"from": operator})
            for member in members:
                if not consortium.isMember(member):
                    consortium.admitMember(member, "again", {"from": operator})
            first = run_round(consortium, agg, members, flagged_fraction=0.2)
            if size == sizes[0]:
                # a member's first-ever submission writes fresh slots (cold); from its second
                # round on the slots are reused (warm), which is the steady state
                warm = run_round(consortium, agg, members, flagged_fraction=0.2)
                ops = results["per_operation"]
                ops["openRound"] = warm["openRound"][0]
                ops["submitUpdate_first_ever_max"] = max(first["submitUpdate"])
                ops["submitUpdate_warm_median"] = statistics.median(warm["submitUpdate"])
                ops["submitUpdate_warm_max"] = max(warm["submitUpdate"])
                ops["closeRound"] = warm["closeRound"][0]
                ops["finalizeRound"] = warm["finalizeRound"][0]
            results["finalize_by_members"][str(size)] = first["finalizeRound"][0]
        results["per_operation"]["removeMember"] = consortium.removeMember(
            accounts[2], {"from": operator}).gas_used
        results["per_operation"]["transferOperator"] = consortium.transferOperator(
            agg, {"from": operator}).gas_used
        results["per_operation"]["acceptOperator"] = consortium.acceptOperator(
            {"from": agg}).gas_used
        results["chain"] = {"client": network.web3.client_version, "chain_id": chain.id}
        return results
    finally:
        network.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20,100", help="member counts for finalize gas")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gas.json"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = measure(sizes)
    warm = results["per_operation"]["submitUpdate_warm_max"]
    results.update(
        {
            "benchmark": "gas_report",
            "config": {"member_counts": sizes, "flagged_fraction": 0.2, "cid_length": len(CID),
                       "solc": "0.8.28 (solc-js)", "optimizer_runs": 10000,
                       "evm_version": "cancun"},
            "targets": {"submitUpdate_warm_max": SUBMIT_GAS_TARGET,
                        "submitUpdate_met": warm <= SUBMIT_GAS_TARGET},
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results["per_operation"], indent=2))
    print("finalize gas by members:", results["finalize_by_members"])
    print(f"submitUpdate warm max {warm} (target <= {SUBMIT_GAS_TARGET})")


if __name__ == "__main__":
    main()
