"""Client and aggregator nodes doing real rounds on anvil + IPFS, stepped in one process."""

from fleml_node import aggregator as aggregator_module
from fleml_node.aggregator import AggregatorNode
from fleml_node.audit import audit_round
from fleml_node.chain.contract import RoundStatus
from fleml_node.chain.events import EventFollower
from fleml_node.client import ClientNode
from fleml_node.defense import make_defense
from fleml_node.defense.base import weighted_sum
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


def make_aggregator_node(federation, tmp_path, until_round):
    return AggregatorNode(federation.bind(1), federation.store(), make_defense("fleml"),
                          TASK, until_round=until_round, round_seconds=600,
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
    aggregator = make_aggregator_node(federation, tmp_path, until_round=2)
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
    aggregator = make_aggregator_node(federation, tmp_path, until_round=1)
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
    assert "does not match the commitment" in member.detail


def test_audit_fails_when_the_aggregate_does_not_replay(federation, tmp_path):
    """An aggregator that publishes a model other than the replayed one is caught."""
    aggregator = make_aggregator_node(federation, tmp_path, until_round=1)
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


def reweighting(weights):
    """A dishonest defense: the real method's result, re-weighted and made self-consistent."""

    def patch(defense):
        honest = defense.aggregate

        def aggregate(updates, ctx=None):
            result = honest(updates, ctx)
            for client, w in zip(result.clients, weights, strict=False):
                client.coefficient = w
            result.update = weighted_sum(updates, [c.coefficient for c in result.clients])
            return result

        defense.aggregate = aggregate
        return defense

    return patch


def audit_of_one_round(federation, tmp_path, defense_name, tamper_defense=None,
                       tamper_report=None, monkeypatch=None):
    aggregator = AggregatorNode(federation.bind(1), federation.store(),
                                make_defense(defense_name), TASK,
                                until_round=1, round_seconds=600, validation=validation_data(TASK))
    if tamper_defense:
        tamper_defense(aggregator.defense)
    if tamper_report:
        real = aggregator_module.encode_report
        monkeypatch.setattr(aggregator_module, "encode_report",
                            lambda report: real(tamper_report(report)))
    drive(aggregator, make_clients(federation, tmp_path), 1)
    verdict = audit_round(federation.bind(None), federation.store(), 1)
    return verdict, "\n".join(verdict.lines())


def test_audit_reruns_a_stateless_method_and_catches_made_up_weights(federation, tmp_path):
    verdict, text = audit_of_one_round(federation, tmp_path, "fedavg",
                                       tamper_defense=reweighting([1.0, 0.0, 0.0, 0.0]))
    assert verdict.checks["aggregation replays to the finalized model"][0]  # self-consistent
    assert not verdict.checks["fedavg re-run from the updates gives the reported aggregate"][0]
    assert not verdict.ok, text


def test_audit_passes_an_honest_fedavg_round(federation, tmp_path):
    verdict, text = audit_of_one_round(federation, tmp_path, "fedavg")
    assert verdict.ok, text
    assert verdict.checks["fedavg re-run from the updates gives the reported aggregate"][0]
    assert verdict.checks["round 1 starts from the task's initial model"][0]


def test_audit_refuses_negative_fleml_weights(federation, tmp_path):
    verdict, text = audit_of_one_round(federation, tmp_path, "fleml",
                                       tamper_defense=reweighting([0.9, 0.6, -0.5, 0.0]))
    assert not verdict.checks["coefficients are admissible (>= 0, zero when flagged)"][0], text
    assert not verdict.ok


def test_audit_catches_a_report_that_blames_the_wrong_member(federation, tmp_path,
                                                             monkeypatch):
    def swap(report):
        first, second = report["members"][0], report["members"][1]
        first["index"], second["index"] = second["index"], first["index"]
        return report

    verdict, text = audit_of_one_round(federation, tmp_path, "fedavg", tamper_report=swap,
                                       monkeypatch=monkeypatch)
    assert not verdict.checks["report's member indices are the chain's"][0], text
    assert not verdict.ok


def test_audit_reports_a_malformed_report_instead_of_crashing(federation, tmp_path,
                                                              monkeypatch):
    def drop_members(report):
        del report["members"]
        return report

    verdict, text = audit_of_one_round(federation, tmp_path, "fedavg",
                                       tamper_report=drop_members, monkeypatch=monkeypatch)
    assert not verdict.checks["report is well-formed"][0], text
    assert not verdict.ok


def test_poison_pills_are_rejected_and_the_round_completes(federation, tmp_path, monkeypatch):
    """A finite but astronomically large update and absurd sample claims cannot stop a round."""
    from fleml_node import round_engine
    from fleml_node.attacks import make_attack

    real_encode = round_engine.encode_tensors
    monkeypatch.setattr(round_engine, "encode_tensors", lambda tensors, **kw: real_encode(
        tensors, **{**kw, "extra": {**kw.get("extra", {}), "num_samples": 10**40}}))
    aggregator = make_aggregator_node(federation, tmp_path, until_round=1)
    clients = make_clients(federation, tmp_path)
    clients[1].attack = make_attack("sign_flip", scale=1e30)
    drive(aggregator, clients, 1)
    summary = aggregator.summaries[0]
    assert "update norm" in summary.rejected[clients[1].address]
    assert len(summary.accepted) == NUM_MEMBERS - 1
    verdict = audit_round(federation.bind(None), federation.store(), 1)
    assert verdict.ok, "\n".join(verdict.lines())


def test_a_client_whose_training_yields_nan_skips_the_round_and_keeps_following(
    federation, tmp_path, caplog
):
    """Its own NaN is permanent: one log line, no retraining loop, and the next round as usual."""
    import logging

    from fleml_node.attacks import make_attack

    aggregator = AggregatorNode(federation.bind(1), federation.store(), make_defense("fedavg"),
                                TASK, until_round=2, round_seconds=600,
                                quorum=NUM_MEMBERS - 1)
    clients = make_clients(federation, tmp_path)
    clients[1].attack = make_attack("sign_flip", scale=float("inf"))
    with caplog.at_level(logging.INFO, logger="fleml_node.client"):
        for _ in range(200):
            did = aggregator.step()
            for c in clients:
                c.poll_once()
                if c.history and c.history[-1].status == "failed":
                    c.attack = None  # its training works again from the next round on
            if did == "done":
                break
    assert [s.status for s in clients[1].history] == ["failed", "submitted"]
    assert "NaN/Inf" in clients[1].history[0].reason
    skipped = [r for r in caplog.records if "round 1: skipped" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelno == logging.WARNING
    assert clients[1].address not in aggregator.summaries[0].accepted
    assert clients[1].address in aggregator.summaries[1].accepted
