"""What the command line shows of finished rounds, on one in-process federation.

Four members and the aggregator are stepped in this process on anvil and the session's IPFS
daemon (as in tests/nodes/test_rounds_in_process.py), for two rounds of Multi-Krum (f=0, m=2):
member 2 tampers with what it puts on IPFS (rejected), one of the three screened updates is
flagged. The deployment record names a public explorer. Checked here:

* `fleml-node report --round N` (table and ``--json``) against the report fetched
  independently from IPFS and the chain's flagged bitmap, and its errors;
* the aggregator's ``--results-dir`` files, written after each round and appended to;
* every transaction the nodes log carries the explorer's link;
* `fleml-node --help` imports neither Flask nor web3.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from fleml_node.aggregator import AggregatorNode, RoundResults
from fleml_node.chain.contract import connect
from fleml_node.defense import make_defense
from fleml_node.devnet import anvil as anvil_module
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.history import round_report
from fleml_node.learning import evaluate
from fleml_node.task import validation_data
from tests.nodes.conftest import NUM_MEMBERS, TASK, Federation
from tests.nodes.test_rounds_in_process import TamperingStore, make_clients

from .conftest import EXPLORER_SECTION

pytestmark = pytest.mark.slow

ROUNDS = 2
TAMPERER = 2
CSV_HEADER = ("defense,round,accuracy,backdoor_asr,flagged,precision,recall,bytes_moved,"
              "gas_used,seconds")


@dataclass
class Finished:
    fed: Federation
    aggregator: AggregatorNode
    results_dir: Path
    snapshots: list[dict] = field(default_factory=list)  # results.json after each round
    csv_snapshots: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # the "... sent: ..." log lines

    def cli(self, *args: str):
        return CliRunner().invoke(main_command(), [
            *args, "--rpc", self.fed.url, "--deployment", str(self.fed.record_path),
            "--ipfs-api", self.fed.ipfs_api, "--ipfs-timeout", "20"])


def main_command():
    from fleml_node.cli import main

    return main


class Lines(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ipfs_api):
    """Two finalized rounds and an open third one; the aggregator wrote its results."""
    tmp = tmp_path_factory.mktemp("report-cli")
    with anvil_module.LocalAnvil(accounts=8, log_file=tmp / "anvil.log") as anvil:
        keys = anvil_module.test_keys(8)
        record = deploy_local_consortium(connect(anvil.url), keys, NUM_MEMBERS,
                                         tmp / "deployment.json")
        data = json.loads(record.path.read_text())
        data["explorer"] = EXPLORER_SECTION
        record.path.write_text(json.dumps(data, indent=2))
        fed = Federation(anvil.url, record.path, keys, ipfs_api)
        x, y = validation_data(TASK)
        aggregator = AggregatorNode(
            fed.bind(1), fed.store(), make_defense("multikrum", f=0, m=2), TASK,
            until_round=ROUNDS, round_seconds=600, validation=(x, y),
            evaluate=lambda model: {"accuracy": evaluate(model, x, y).accuracy},
            results_dir=tmp / "results")
        clients = make_clients(fed, tmp, store_for={TAMPERER: TamperingStore(fed.store())})
        out = Finished(fed, aggregator, tmp / "results")
        handler = Lines(out.sent)
        logger = logging.getLogger("fleml_node.chain.contract")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            for _ in range(200):
                did = aggregator.step()
                if did == "finalized":
                    out.snapshots.append(json.loads((out.results_dir / "results.json")
                                                    .read_text()))
                    out.csv_snapshots.append((out.results_dir / "results.csv").read_text())
                for c in clients:
                    c.poll_once()
                if did == "done":
                    break
            else:
                raise AssertionError(f"round {ROUNDS} was not finalized")
            aggregator.until_round = ROUNDS + 1
            assert aggregator.step() == "opened"  # round 3 stays open
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        yield out


def _submissions(finished, round_id):
    reader = finished.fed.bind(None)
    report = round_report(reader, finished.fed.store(), round_id)
    return reader, {m["address"]: m for m in report["members"]}, report


# -- fleml-node report ----------------------------------------------------------------------
@pytest.mark.parametrize("round_id", [1, 2])
def test_report_json_matches_the_report_and_the_chain(finished, round_id):
    result = finished.cli("report", "--round", str(round_id), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    reader, members, report = _submissions(finished, round_id)
    info = reader.get_round(round_id)
    assert data["round"] == round_id and data["status"] == "finalized"
    assert (data["submissions_count"], data["quorum"]) == (info.submissions, info.quorum)
    assert data["downloads"]["report"]["hash"] == "0x" + info.report_hash.hex()
    assert data["downloads"]["result"]["hash"] == "0x" + info.result_hash.hex()
    events = [e["event"] for e in data["timeline"]]
    assert events[0] == "RoundOpened" and events[-1] == "RoundFinalized"
    for event in data["timeline"]:
        assert event["time"].endswith("Z") and event["tx"].startswith("0x")
        assert event["tx_url"] == f"https://scan.example/tx/{event['tx']}"
    coefficients = {c["client_id"]: c.get("coefficient")
                    for c in report["defense"]["clients"]}
    assert {s["member"] for s in data["submissions"]} == set(members)
    for sub in data["submissions"]:
        assert sub["status"] == members[sub["member"]]["status"]
        assert sub["flagged"] == reader.is_flagged(round_id, sub["member"])
        assert sub["flagged"] == (sub["status"] != "accepted")
        assert sub["coefficient"] == coefficients.get(sub["member"])
        assert sub["label"] == reader.member_info(sub["member"])[3]
    statuses = sorted(s["status"] for s in data["submissions"])
    assert statuses == ["accepted", "accepted", "flagged", "rejected"]
    tamperer = finished.fed.bind(2 + TAMPERER).account.address
    cheat = next(s for s in data["submissions"] if s["member"] == tamperer)
    assert cheat["status"] == "rejected" and "tampered" in cheat["reason"]


def test_report_table_shows_every_member_and_the_header(finished):
    result = finished.cli("report", "--round", "2")
    assert result.exit_code == 0, result.output
    reader, members, report = _submissions(finished, 2)
    info = reader.get_round(2)
    lines = result.output.splitlines()
    assert lines[0].startswith("round 2: finalized, accepted; 4 of quorum 4 submitted")
    assert "0x" + info.report_hash.hex() in result.output and "(hash checked)" in result.output
    assert any(line.split()[0] == "finalized" and line.split()[1].endswith("Z")
               and "https://scan.example/tx/0x" in line for line in lines)
    assert "defense    multikrum" in result.output
    header = next(i for i, line in enumerate(lines) if line.startswith("member "))
    assert lines[header].split() == ["member", "label", "status", "reason", "scores",
                                     "coefficient", "flagged"]
    rows = {line.split()[0]: line for line in lines[header + 1:] if line.startswith("0x")}
    assert set(rows) == set(members)
    clients = {c["client_id"]: c for c in report["defense"]["clients"]}
    for address, line in rows.items():
        status = members[address]["status"]
        assert f"  {status}  " in line
        assert line.rstrip().endswith("yes" if reader.is_flagged(2, address) else "no")
        assert reader.member_info(address)[3] in line  # the label
        coefficient = clients.get(address, {}).get("coefficient")
        if coefficient is not None:
            assert f"{coefficient:.4f}" in line
        for name in clients.get(address, {}).get("scores", {}):
            assert f"{name}=" in line
    assert "tampered" in rows[finished.fed.bind(2 + TAMPERER).account.address]


@pytest.mark.parametrize(("round_id", "message"), [
    (9, "round 9 does not exist (latest is 3)"),
    (3, "round 3 is open: only a finalized round has a report (not finalized yet)"),
])
def test_report_of_a_round_without_one_is_one_clear_line(finished, round_id, message):
    result = finished.cli("report", "--round", str(round_id))
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output


def test_report_escapes_terminal_control_characters():
    from fleml_node.cli import report_lines

    evil = "\x1b[2J\x1b[31mred\nnext"
    data = {"round": 1, "status": "finalized", "accepted": True, "submissions_count": 1,
            "quorum": 1, "min_submissions": 1, "mode": "plain", "deadline": None,
            "timeline": [], "downloads": {}, "defense": None, "accuracy": None,
            "attestations": {"passes": 0, "fails": 0, "required": 0},
            "submissions": [{"member": "0xabc", "label": evil, "status": "rejected",
                             "reason": evil, "scores": {}, "coefficient": None,
                             "flagged": True}]}
    text = "\n".join(report_lines(data))
    assert "\x1b" not in text and "\\x1b[31mred\\nnext" in text
    assert text.splitlines()[-1].split()[-1] == "yes"


# -- the aggregator's results folder --------------------------------------------------------
def test_results_are_written_after_each_round(finished):
    assert [len(s["rounds"]) for s in finished.snapshots] == [1, 2]
    assert [len(c.splitlines()) for c in finished.csv_snapshots] == [2, 3]
    reader = finished.fed.bind(None)
    final = json.loads((finished.results_dir / "results.json").read_text())
    assert final["consortium"] == reader.address and final["defense"] == "multikrum"
    assert final["task"]["num_clients"] == NUM_MEMBERS and final["machine"]["cpus"]
    assert final["rounds"][0] == finished.snapshots[0]["rounds"][0]  # appended, not redone
    for entry, summary in zip(final["rounds"], finished.aggregator.summaries, strict=True):
        r = entry["round"]
        _, members, report = _submissions(finished, r)
        assert entry["report_cid"] == summary.report_cid
        assert entry["flagged"] == sorted(m["index"] for m in members.values()
                                          if m["status"] != "accepted")
        assert entry["flagged"] == [i for i in range(NUM_MEMBERS)
                                    if reader.is_flagged(r, reader.member_at(i))]
        assert entry["accuracy"] == summary.metrics["accuracy"]
        assert entry["precision"] is None and entry["recall"] is None
        assert entry["aggregate_sha256"] == report["defense"]["aggregate_sha256"]
        assert [m["status"] for m in entry["members"]] == \
            [m["status"] for m in sorted(members.values(), key=lambda m: m["index"])]
        # the gas of the round's own transactions: open, 4 submissions, finalize
        events = [e for name, found in _round_events(reader, r).items() for e in found]
        assert entry["gas_used"] == sum(
            int(reader.w3.eth.get_transaction_receipt(tx)["gasUsed"])
            for tx in {e.tx_hash for e in events})
        assert entry["finalize_tx"] == summary.transactions["finalizeRound"]
    lines = (finished.results_dir / "results.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER
    for line, entry in zip(lines[1:], final["rounds"], strict=True):
        cells = line.split(",")
        assert cells[:3] == ["multikrum", str(entry["round"]), f"{entry['accuracy']:.4f}"]
        assert cells[4] == " ".join(map(str, entry["flagged"]))
        assert cells[5:7] == ["", ""] and int(cells[8]) == entry["gas_used"]
    assert not list(finished.results_dir.glob("*.tmp")) and \
        not list(finished.results_dir.glob(".*tmp"))


def _round_events(reader, round_id):
    from fleml_node.chain.events import round_events

    return round_events(reader, round_id)


def test_results_folder_is_appended_to_and_guarded(finished, tmp_path):
    reader = finished.fed.bind(None)
    again = RoundResults(finished.results_dir, reader, make_defense("multikrum"), TASK)
    assert [r["round"] for r in again.rounds] == [1, 2]
    again._write()  # a restarted aggregator keeps the rounds it found
    kept = json.loads((finished.results_dir / "results.json").read_text())
    assert [r["round"] for r in kept["rounds"]] == [1, 2]
    assert kept["started"] == finished.snapshots[0]["started"]
    other = SimpleNamespace(address="0x" + "11" * 20,
                            deployment=SimpleNamespace(chain_id=reader.deployment.chain_id))
    with pytest.raises(ValueError, match="holds results of consortium"):
        RoundResults(finished.results_dir, other, make_defense("multikrum"), TASK)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable results JSON"):
        RoundResults(tmp_path, reader, make_defense("multikrum"), TASK)


def test_aggregator_has_a_results_dir_option():
    result = CliRunner().invoke(main_command(), ["aggregator", "--help"])
    assert "--results-dir" in result.output


# -- explorer links in the logs, and a light --help -----------------------------------------
def test_every_sent_transaction_is_logged_with_its_explorer_link(finished):
    sent = [line for line in finished.sent if " sent: 0x" in line]
    names = {line.split()[0] for line in sent}
    assert {"openRound", "submitUpdate", "finalizeRound"} <= names
    for line in sent:
        tx = line.split(" sent: ")[1].split()[0]
        assert line.endswith(f" https://scan.example/tx/{tx}"), line


def test_help_imports_neither_flask_nor_web3():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from fleml_node.cli import main\n"
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
            "print(sorted(m for m in ('flask', 'werkzeug', 'web3', 'torch') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
