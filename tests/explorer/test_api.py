"""The explorer's JSON and HTML against a real 2-round federation (see conftest.py).

Every number the explorer shows is compared with what the chain and the round report say,
read here independently through the bindings and IPFS.
"""

from __future__ import annotations

import re
from html import unescape

import pytest

from fleml_node.chain.contract import Consortium, connect
from fleml_node.chain.deployment import load_record
from fleml_node.chain.events import round_events
from fleml_node.storage import IpfsStore, content_hash, decode_report

from .conftest import EVIL_LABEL, MEMBERS, ROUNDS

pytestmark = pytest.mark.slow


def _report(fed, round_id):
    info = fed.reader.get_round(round_id)
    cid = fed.round_event(round_id, "RoundFinalized").args["reportCid"]
    return decode_report(IpfsStore(fed.ipfs_api).get(cid, expected_hash=info.report_hash))


def test_consortium_lists_roles_policy_and_members(client, explorer_federation):
    fed = explorer_federation.fed
    data = client.get("/api/consortium").get_json()
    assert data["address"] == fed.reader.address
    assert data["aggregator"] == fed.reader.aggregator()
    assert data["current_round"] == ROUNDS
    assert data["total"] == MEMBERS + 1
    by_address = {m["address"]: m for m in data["members"]}
    for i in range(MEMBERS):
        entry = by_address[fed.member(i)]
        assert entry["label"] == fed.reader.member_info(fed.member(i))[3]
        assert entry["active"] and entry["admitted"]["tx"].startswith("0x")
        assert entry["admitted"]["time"].endswith("Z")
        assert entry["address_url"] == f"https://scan.example/address/{fed.member(i)}"
    assert by_address[explorer_federation.evil]["label"] == EVIL_LABEL
    # paginated
    page = client.get("/api/consortium?per_page=2&page=2").get_json()
    assert page["pages"] == 3 and [m["index"] for m in page["members"]] == [2, 3]


def test_rounds_list_matches_the_chain_and_reports(client, explorer_federation):
    fed = explorer_federation.fed
    data = client.get("/api/rounds").get_json()
    assert [r["round"] for r in data["rounds"]] == [2, 1]
    for row in data["rounds"]:
        info = fed.reader.get_round(row["round"])
        report = _report(fed, row["round"])
        statuses = [m["status"] for m in report["members"]]
        assert row["status"] == "finalized" and row["accepted"] is True
        assert (row["submissions"], row["quorum"]) == (info.submissions, info.quorum)
        assert row["rejected"] == statuses.count("rejected") == 1
        assert row["flagged"] == statuses.count("flagged") == 1
        assert row["flagged_or_rejected"] == 2
        events = round_events(fed.reader, row["round"])
        txs = {e.tx_hash for found in events.values() for e in found}
        gas = sum(fed.reader.w3.eth.get_transaction_receipt(t)["gasUsed"] for t in txs)
        assert row["gas"] == gas
    assert client.get("/api/rounds?per_page=1&page=2").get_json()["rounds"][0]["round"] == 1


def test_round_shows_timeline_submissions_and_decisions(client, explorer_federation):
    fed = explorer_federation.fed
    data = client.get("/api/rounds/2").get_json()
    events = round_events(fed.reader, 2)
    assert [e["event"] for e in data["timeline"]] == ["RoundOpened", "RoundClosed",
                                                      "RoundFinalized"]
    for entry in data["timeline"]:
        event = events[entry["event"]][-1]
        assert (entry["block"], entry["tx"]) == (event.block_number, event.tx_hash)
        block = fed.reader.w3.eth.get_block(event.block_number)
        assert entry["time"] == _iso(block["timestamp"])
        assert entry["tx_url"] == f"https://scan.example/tx/{event.tx_hash}"
    report = _report(fed, 2)
    clients = {c["client_id"]: c for c in report["defense"]["clients"]}
    by_member = {m["address"]: m for m in report["members"]}
    submitted = {e.args["member"]: e for e in events["UpdateSubmitted"]}
    assert {s["member"] for s in data["submissions"]} == set(submitted) == {
        fed.member(i) for i in range(MEMBERS)}
    for sub in data["submissions"]:
        event = submitted[sub["member"]]
        assert sub["hash"] == "0x" + event.args["updateHash"].hex()
        assert sub["cid"] == event.args["updateCid"] and sub["tx"] == event.tx_hash
        assert sub["gas"] == fed.reader.w3.eth.get_transaction_receipt(event.tx_hash)["gasUsed"]
        assert sub["status"] == by_member[sub["member"]]["status"]
        assert sub["coefficient"] == clients.get(sub["member"], {}).get("coefficient")
    status = {s["member"]: s for s in data["submissions"]}
    assert status[explorer_federation.tamperer]["status"] == "rejected"
    assert status[explorer_federation.tamperer]["reason"].startswith("tampered")
    assert status[explorer_federation.noisy]["status"] == "flagged"
    assert status[explorer_federation.noisy]["coefficient"] == 0.0
    assert data["score_name"] == "krum"
    assert data["defense"]["method"] == "multikrum"
    assert data["cached"] is True  # finalized and confirmed (0 confirmations on anvil)


def test_round_page_escapes_and_charts(client, explorer_federation):
    html = client.get("/rounds/2").get_data(as_text=True)
    assert "<svg" in html and "score: krum" in html
    assert "<script" not in html.lower()
    consortium = client.get("/").get_data(as_text=True)
    assert "<script" not in consortium.lower()
    assert "&lt;script&gt;alert(" in consortium
    assert unescape(unescape(re.search(r"&lt;script&gt;[^<]*", consortium).group(0))
                    ).startswith("<script>alert(")
    response = client.get("/rounds/2")
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_member_history(client, explorer_federation):
    fed = explorer_federation.fed
    data = client.get(f"/api/members/{explorer_federation.noisy}").get_json()
    assert data["address"] == explorer_federation.noisy
    assert [h["round"] for h in data["history"]] == [2, 1]
    for h in data["history"]:
        assert h["submitted"] and h["status"] == "flagged" and h["coefficient"] == 0.0
        assert fed.reader.is_flagged(h["round"], explorer_federation.noisy)
    evil = client.get(f"/api/members/{explorer_federation.evil}").get_json()
    assert [h["submitted"] for h in evil["history"]] == [False, False]
    assert client.get("/api/members/0x" + "00" * 20).status_code == 404
    assert client.get("/members/0x" + "00" * 20).status_code == 404


def test_downloads_match_the_commitments(client, explorer_federation):
    info = explorer_federation.fed.reader.get_round(1)
    for what, digest in (("base", info.model_hash), ("result", info.result_hash),
                         ("report", info.report_hash)):
        response = client.get(f"/rounds/1/download/{what}")
        assert response.status_code == 200
        assert content_hash(response.data) == digest
        assert "attachment" in response.headers["Content-Disposition"]
    assert client.get("/rounds/1/download/secrets").status_code == 404
    assert client.get("/api/rounds/9").status_code == 404


def test_audit_action_runs_the_audit(client, explorer_federation):
    response = client.post("/api/rounds/2/audit")
    assert response.status_code == 200, response.get_data(as_text=True)
    verdict = response.get_json()
    assert verdict["verdict"] == "PASS" and verdict["round"] == 2
    assert all(c["result"] == "PASS" for c in verdict["checks"])
    assert client.post("/api/rounds/2/audit",
                       headers={"Origin": "http://evil.example"}).status_code == 403
    html = client.post("/rounds/2/audit").get_data(as_text=True)
    assert 'id="verdict" class="PASS"' in html


def test_restart_changes_nothing(explorer, explorer_federation):
    from fleml_node.explorer import Explorer

    fed = explorer_federation.fed
    fresh = Explorer(Consortium(connect(fed.url), load_record(fed.record_path)),
                     IpfsStore(fed.ipfs_api, timeout=20))
    for r in range(1, ROUNDS + 1):
        assert fresh.round(r) == explorer.round(r)
    assert fresh.rounds() == explorer.rounds()
    assert fresh.member(explorer_federation.noisy) == explorer.member(explorer_federation.noisy)


def _iso(ts):
    from fleml_node.explorer.data import iso

    return iso(ts)
