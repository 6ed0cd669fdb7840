"""Client and aggregator nodes doing real rounds on anvil + IPFS, stepped in one process."""

import torch

from fleml_node.aggregator import AggregatorNode
from fleml_node.audit import audit_round
from fleml_node.chain.contract import RoundStatus
from fleml_node.chain.events import EventFollower
from fleml_node.client import ClientNode
from fleml_node.defense import make_aggregator
from fleml_node.storage import encode_tensors
from fleml_node.task import client_data, validation_data

from .conftest import NUM_MEMBERS, TASK


def make_clients(federation, tmp_path, attack=None, store_for=None):
    clients = []
    for i in range(NUM_MEMBERS):
        consortium = federation.bind(2 + i)
        x, y = client_data(TASK, i)
        store = (store_for or {}).get(i) or federation.store()
        follower = EventFollower(consortium, tmp_path / f"client{i}.json")
        clients.append(ClientNode(consortium, store, follower, TASK, x, y, i, attack=attack))
    return clients


def make_aggregator_node(federation, tmp_path, rounds):
    return AggregatorNode(federation.bind(1), federation.store(), make_aggregator("fleml"),
                          TASK, tmp_path / "agg", rounds=rounds, round_seconds=600,
                          validation=validation_data(TASK))


def drive(aggregator, clients, until_round):
    for _ in range(200):
        did = aggregator.step()
        for c in clients:
            c.poll_once()
        if did == "done":
            return
    raise AssertionError(f"round {until_round} was not finalized")


def test_two_rounds_are_finalized_and_pass_the_audit(federation, tmp_path):
    aggregator = make_aggregator_node(federation, tmp_path, rounds=2)
    clients = make_clients(federation, tmp_path)
    drive(aggregator, clients, 2)
    reader = federation.bind(None)
    assert reader.current_round() == 2
    for r in (1, 2):
        assert reader.get_round(r).status is RoundStatus.FINALIZED
        verdict = audit_round(reader, federation.store(), r)
        assert verdict.ok, "\n".join(verdict.lines())
        assert len(verdict.members) == NUM_MEMBERS
    assert [s.status for s in clients[0].history] == ["submitted", "submitted"]
    assert all(len(s.accepted) == NUM_MEMBERS for s in aggregator.summaries)


class TamperingStore:
    """A member whose IPFS object differs from the bytes it committed."""

    def __init__(self, store):
        self.store = store

    def put(self, data):
        return self.store.put(data[:-4] + b"\x00\x00\x80\x3f")  # last float changed to 1.0

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_tampered_update_is_rejected_flagged_on_chain_and_explained_by_audit(
    federation, tmp_path
):
    aggregator = make_aggregator_node(federation, tmp_path, rounds=1)
    clients = make_clients(federation, tmp_path,
                           store_for={2: TamperingStore(federation.store())})
    drive(aggregator, clients, 1)
    reader = federation.bind(None)
    cheat = clients[2].address
    assert reader.is_flagged(1, cheat)
    assert cheat in aggregator.summaries[0].rejected
    assert "tampered" in aggregator.summaries[0].rejected[cheat]
    verdict = audit_round(reader, federation.store(), 1)
    assert verdict.ok, "\n".join(verdict.lines())
    member = next(m for m in verdict.members if m.address == cheat)
    assert member.status_in_report == "rejected"
    assert "do not match the commitment" in member.detail


def test_audit_fails_when_the_aggregate_does_not_replay(federation, tmp_path):
    """An aggregator that publishes a model other than the replayed one is caught."""
    aggregator = make_aggregator_node(federation, tmp_path, rounds=1)
    real_publish = aggregator._publish_model

    def skewed(params, round_id):
        if round_id == 1:
            params = {k: v + 1e-3 for k, v in params.items()}
        return real_publish(params, round_id)

    aggregator._publish_model = skewed
    drive(aggregator, make_clients(federation, tmp_path), 1)
    verdict = audit_round(federation.bind(None), federation.store(), 1)
    assert not verdict.ok
    ok, detail = verdict.checks["aggregation replays to the finalized model"]
    assert not ok and "max abs difference" in detail


def test_encoded_updates_are_deterministic():
    update = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    assert encode_tensors(update, kind="update", round=1) == \
        encode_tensors(update, kind="update", round=1)
