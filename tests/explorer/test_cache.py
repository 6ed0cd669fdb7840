"""What the explorer caches and what it reads again, on a real anvil chain.

Rounds are driven through the bindings with a report held by a stand-in IPFS store (the bytes
the chain's report hash commits to), so no daemon is needed. A finalized round is cached once
its finalization is confirmed; attestations sent later, even after the next round opened, and
a rejection still show; `round_events` finds those late attestations too, with one more log
query only when the round's record counts attestations its own blocks do not hold.
"""

from __future__ import annotations

from eth_account import Account

from fleml_node.chain.contract import Consortium, Policy, connect, recorded_requests
from fleml_node.chain.events import round_events
from fleml_node.devnet.anvil import test_keys as anvil_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.storage import HashMismatch, content_hash, encode_report

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
OTHER_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
H1, H2 = bytes([1]) * 32, bytes([2]) * 32


class Store:
    """Stands in for IPFS: returns the blobs it was given, checked against the hash asked."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.gets = 0

    def get(self, cid: str, expected_hash: bytes | None = None) -> bytes:
        self.gets += 1
        blob = self.blobs[cid]
        if expected_hash is not None and content_hash(blob) != expected_hash:
            raise HashMismatch(f"{cid} does not match")
        return blob


def _setup(anvil, tmp_path, policy):
    keys = anvil_keys(8)
    w3 = connect(anvil.url)
    record = deploy_local_consortium(w3, keys, 4, tmp_path / "d.json", policy=policy)

    def bind(i):
        return Consortium(w3, record, Account.from_key(keys[i]))

    return w3, record, bind


def _finalize(agg, members, store, model):
    """One round on `model`, its report held by `store`; returns the round id."""
    r = agg.current_round() + 1
    agg.open_round(model, CID, agg.now() + 600, len(members))
    for i, member in enumerate(members):
        member.submit_update(r, bytes([16 + i]) * 32, OTHER_CID)
    agg.close_round(r)
    report = encode_report({"round": r, "members": [
        {"address": m.account.address, "index": i, "status": "accepted"}
        for i, m in enumerate(members)], "defense": None})
    cid = f"bafkrei{r:052d}"[:59]
    store.blobs[cid] = report
    agg.finalize_round(r, H2, CID, content_hash(report), cid, [0])
    return r


def test_late_attestations_are_found_and_shown(anvil, tmp_path):
    from fleml_node.explorer import Explorer

    w3, record, bind = _setup(anvil, tmp_path, Policy())  # attestations off: any time
    agg, members = bind(1), [bind(i) for i in (2, 3, 4)]
    store = Store()
    reader = Consortium(w3, record)
    explorer = Explorer(reader, store)
    first = _finalize(agg, members, store, H1)
    shown = explorer.round(first)
    assert shown["cached"] and shown["attestations"]["events"] == []
    _finalize(agg, members, store, H2)  # round 2 opens and finalizes

    # no attestation yet: round_events costs the round's own query, nothing more
    with recorded_requests(w3) as requests:
        events = round_events(reader, first)
    assert sum(m == "eth_getLogs" for m, _ in requests) == 1
    assert "RoundAttested" not in events

    members[0].attest_round(first, True, H1, CID)  # after round 2 opened
    members[1].attest_round(first, False, H2, OTHER_CID)
    events = round_events(reader, first)
    assert [(e.args["member"], e.args["pass"]) for e in events["RoundAttested"]] == [
        (members[0].account.address, True), (members[1].account.address, False)]

    gets = store.gets
    shown = explorer.round(first)
    assert store.gets == gets  # the report was cached with the final part
    assert [(a["member"], a["pass"]) for a in shown["attestations"]["events"]] == [
        (members[0].account.address, True), (members[1].account.address, False)]
    assert (shown["attestations"]["passes"], shown["attestations"]["fails"]) == (1, 1)
    restarted = Explorer(Consortium(w3, record), store)
    assert restarted.round(first) == explorer.round(first)


def test_a_cached_round_shows_its_later_rejection(anvil, tmp_path):
    from fleml_node.explorer import Explorer

    policy = Policy(attestations_required=2, attestation_window_seconds=600)
    w3, record, bind = _setup(anvil, tmp_path, policy)
    operator, agg, members = bind(0), bind(1), [bind(i) for i in (2, 3, 4)]
    store = Store()
    explorer = Explorer(Consortium(w3, record), store)
    r = _finalize(agg, members, store, H1)
    first = explorer.round(r)
    assert first["cached"] and first["status"] == "finalized" and not first["accepted"]
    members[0].attest_round(r, False, H1, CID)
    members[1].attest_round(r, False, H1, CID)
    operator.reject_round(r)
    shown = explorer.round(r)
    assert shown["status"] == "rejected" and shown["accepted"] is False
    assert shown["timeline"][-1]["event"] == "RoundRejected"
    assert shown["attestations"]["fails"] == 2 and len(shown["attestations"]["events"]) == 2
    row = explorer.rounds()["rounds"][0]
    assert row["status"] == "rejected" and row["attestations"]["fails"] == 2


def test_status_json_and_iso_times(anvil, tmp_path):
    """`fleml-node status --json` (no IPFS) and the text's ISO 8601 deadline."""
    import json

    from click.testing import CliRunner

    from fleml_node.cli import main
    from fleml_node.explorer.data import iso

    w3, record, bind = _setup(anvil, tmp_path, Policy())
    agg, members = bind(1), [bind(i) for i in (2, 3)]
    r = _finalize(agg, members, Store(), H1)
    args = ["status", "--rpc", anvil.url, "--deployment", str(record.path)]
    done = CliRunner().invoke(main, [*args, "--json"],
                              env={"FLEML_IPFS_API": "/ip4/127.0.0.1/tcp/9"})
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    info = agg.get_round(r)
    assert data["round"]["deadline"] == iso(info.deadline)
    assert data["round"]["status"] == "finalized"
    assert [m["address"] for m in data["members"]][:2] == [m.account.address for m in members]
    text = CliRunner().invoke(main, args)
    assert f"deadline {iso(info.deadline)}" in text.output
