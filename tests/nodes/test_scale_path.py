"""The aggregator's real path at scale (issue 15): verification as updates arrive, retries
until the close, restarts, the update matrix, batched reads and the log filter."""

import threading
import time

import torch
from web3.middleware import Web3Middleware

from fleml_node import aggregator as aggregator_module
from fleml_node.aggregator import AggregatorNode, UpdateCollector
from fleml_node.chain.contract import Policy, RoundStatus, SubmissionMode, connect
from fleml_node.chain.events import ChainEvent, LogWatch
from fleml_node.defense import make_defense
from fleml_node.devnet.anvil import LocalAnvil
from fleml_node.devnet.anvil import test_keys as anvil_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.learning import ParamSpec, get_params
from fleml_node.round_engine import RoundEngine, Submission, encode_update, update_size_cap
from fleml_node.storage import IpfsStore, content_hash
from fleml_node.storage.ipfs import ADD_OPTIONS
from fleml_node.task import validation_data

from .conftest import NUM_MEMBERS, TASK, Federation
from .test_rounds_in_process import drive, make_clients


def aggregator_node(federation, store=None, defense="fedavg"):
    return AggregatorNode(federation.bind(1), store or federation.store(), make_defense(defense),
                          TASK, until_round=1, round_seconds=600,
                          validation=validation_data(TASK))


class CountedFetches:
    """Counts the aggregator's fetches of members' objects (the real fetch runs)."""

    def __init__(self, monkeypatch):
        self.cids, self._lock = [], threading.Lock()
        real = aggregator_module.fetch_member_object

        def fetch(store, cid, max_bytes=None):
            with self._lock:
                self.cids.append(cid)
            return real(store, cid, max_bytes)

        monkeypatch.setattr(aggregator_module, "fetch_member_object", fetch)


def submit_all(aggregator, clients):
    assert aggregator.step() == "opened"
    for client in clients:
        client.poll_once()
    aggregator.watch()
    aggregator.collector.settle()


def assert_verified_while_open_and_not_fetched_again(aggregator, clients, fetches):
    """Round 1 is still open and every member's update is already fetched, checked and decoded;
    the close then accepts them all without fetching anything again."""
    assert aggregator.consortium.get_round(1).status is RoundStatus.OPEN
    entries = aggregator.collector.entries
    assert sorted(entries) == sorted(c.address for c in clients)
    assert all(e.verdict == "" and e.row >= 0 for e in entries.values())
    assert len(fetches.cids) == NUM_MEMBERS
    drive(aggregator, clients, 1)
    summary = aggregator.summaries[0]
    assert len(summary.accepted) == NUM_MEMBERS and not summary.rejected
    assert len(fetches.cids) == NUM_MEMBERS  # the close used what was verified before


def test_updates_are_verified_as_they_arrive_and_not_fetched_again_at_the_close(
        federation, tmp_path, monkeypatch):
    fetches = CountedFetches(monkeypatch)
    aggregator = aggregator_node(federation)
    clients = make_clients(federation, tmp_path)
    submit_all(aggregator, clients)
    assert_verified_while_open_and_not_fetched_again(aggregator, clients, fetches)


def test_a_failed_early_fetch_is_retried_and_the_rule_applies_only_at_the_close(
        federation, tmp_path):
    """Member 1's object is not on IPFS when it submits and appears before the close: it is
    accepted. Member 2's never appears: only the close rejects it as unavailable."""
    store = IpfsStore(federation.ipfs_api, timeout=2, retries=0)
    aggregator = aggregator_node(federation, store=store)
    clients = make_clients(federation, tmp_path)
    withheld = {}

    def unpublished(client):
        def publish(round_id, blob):
            cid = str(store._client.add_bytes(blob, opts={**ADD_OPTIONS, "only-hash": "true"}))
            withheld[client.address] = blob
            return content_hash(blob), cid
        return publish

    for late in clients[1:3]:
        late.publish_update = unpublished(late)
        # bytes no earlier run put on this daemon (training is deterministic otherwise)
        late.x = late.x + 1e-3 * torch.rand(late.x.shape)
    submit_all(aggregator, clients)
    entries = aggregator.collector.entries
    for late in clients[1:3]:
        assert entries[late.address].verdict is None and entries[late.address].fetch_error
    assert aggregator.consortium.get_round(1).status is RoundStatus.OPEN
    store.put(withheld[clients[1].address])  # member 1's object shows up before the close
    drive(aggregator, clients, 1)
    summary = aggregator.summaries[0]
    assert clients[1].address in summary.accepted
    assert summary.rejected[clients[2].address].startswith("unavailable")
    assert len(summary.accepted) == NUM_MEMBERS - 1


def test_a_restarted_aggregator_verifies_every_update_again_from_the_chain(
        federation, tmp_path, monkeypatch):
    first = aggregator_node(federation)
    clients = make_clients(federation, tmp_path)
    submit_all(first, clients)
    first.collector.close()  # the first process dies with the round open
    fetches = CountedFetches(monkeypatch)
    second = aggregator_node(federation)
    assert second.collector is None  # nothing carried over
    drive(second, clients, 1)
    assert sorted(fetches.cids) == sorted(e.update_cid for e in first.collector.entries.values())
    assert len(second.summaries[0].accepted) == NUM_MEMBERS


def test_the_update_matrix_holds_exactly_what_stacking_gives(federation):
    """Updates arriving out of member order, with a tampered one among them, end up in the
    matrix in member-index order, bit for bit what RoundEngine.screen stacks, and the
    defense decides the same aggregate from either."""
    engine = RoundEngine(TASK, make_defense("fedavg"))
    spec = ParamSpec.from_named(get_params(TASK.initial_model()))
    store = federation.store()
    gen = torch.Generator().manual_seed(0)
    members = [f"0x{i:040x}" for i in range(1, 6)]
    submissions, events = [], []
    for index, member in enumerate(members):
        update = {n: torch.randn(s, generator=gen) * 0.01
                  for n, s in zip(spec.names, spec.shapes, strict=True)}
        blob = encode_update(update, 1, 50 + index, member)
        committed = bytes(32) if index == 2 else content_hash(blob)  # member 2 tampers
        cid = store.put(blob)
        submissions.append(Submission(member, index, committed, cid, blob))
        events.append(ChainEvent("UpdateSubmitted", {"roundId": 1, "member": member,
                                                     "updateHash": committed,
                                                     "updateCid": cid}, 10 + index, 0, ""))
    collector = UpdateCollector(1, engine, store, len(members), update_size_cap(spec))
    index_of = {m: i for i, m in enumerate(members)}.__getitem__
    try:
        collector.offer(list(reversed(events)), index_of)
        _, screened = collector.finish(events, index_of)
        expected = engine.screen(1, submissions)
        assert [(d.member, d.status, d.reason) for d in screened.decisions] == \
            [(d.member, d.status, d.reason) for d in expected.decisions]
        assert screened.claims == expected.claims
        assert torch.equal(screened.updates, expected.updates)
        base = get_params(TASK.initial_model())
        mine = engine.decide_screened(1, base, screened)
        theirs = engine.decide_screened(1, base, expected)
        assert torch.equal(mine.aggregate, theirs.aggregate)
    finally:
        collector.close()


def test_member_indices_in_one_batch_are_what_member_info_says(federation):
    consortium = federation.bind(None)
    members = [consortium.member_at(i) for i in reversed(range(NUM_MEMBERS))]
    stranger = "0x" + "ab" * 20
    batched = consortium.member_indices(members + [consortium.w3.to_checksum_address(stranger)])
    for member in members:
        assert batched[member] == consortium.member_info(member)[2]
    assert sorted(batched[m] for m in members) == list(range(NUM_MEMBERS))


class NoFilters(Web3Middleware):
    """A chain node without log filters (as some clients are)."""

    def wrap_make_request(self, make_request):
        def request(method, params):
            if method in ("eth_newFilter", "eth_getFilterChanges"):
                return {"jsonrpc": "2.0", "id": 0,
                        "error": {"code": -32601, "message": f"Method {method} not found"}}
            return make_request(method, params)
        return request


def test_the_log_watch_wakes_on_new_logs_and_falls_back_to_polling_without_filters(
        federation):
    operator = federation.bind(0)
    watch = LogWatch(operator, poll_interval=600)
    assert watch.wait() == "interval"  # the first poll is always due
    assert watch.changes() is True and watch.mode == "filter"  # installed: poll once
    assert watch.changes() is False
    operator.admit_member(operator.w3.to_checksum_address("0x" + "cd" * 20), "late member")
    assert watch.wait() == "logs"

    plain = federation.bind(0)
    plain.w3.middleware_onion.add(NoFilters, "no-filters")
    fallback = LogWatch(plain, poll_interval=0.2)
    assert fallback.wait() == "interval"
    assert fallback.changes() is None and fallback.mode == "polling"
    assert fallback.wait() == "interval"  # and then polls on the interval


def test_a_members_batched_round_view_is_what_its_single_reads_say(federation, tmp_path):
    aggregator = aggregator_node(federation)
    clients = make_clients(federation, tmp_path)
    assert aggregator.step() == "opened"
    clients[0].poll_once()  # member 0 submits in round 1, member 1 not yet
    for member in (clients[0].consortium, clients[1].consortium):
        address = member.account.address
        latest, info, now = member.member_round_view(address, 1)
        assert latest == member.latest_commitment(address)[0]
        assert info == member.get_round(1)
        assert member.now() - 5 <= now <= member.now()
    assert clients[0].consortium.member_round_view(clients[0].address, 1)[0] == 1
    assert clients[1].consortium.member_round_view(clients[1].address, 1)[0] == 0


def test_in_commit_reveal_mode_reveals_are_verified_as_they_arrive(
        tmp_path, ipfs_api, monkeypatch):
    """A commitment carries no update: the collector starts on each reveal (`revealUpdate`
    emits `UpdateSubmitted`), before the round is closed, and the close fetches nothing."""
    policy = Policy(mode=SubmissionMode.COMMIT_REVEAL, reveal_seconds=300, grace_seconds=30)
    with LocalAnvil(accounts=8, log_file=tmp_path / "anvil.log") as anvil:
        keys = anvil_keys(8)
        record = deploy_local_consortium(connect(anvil.url), keys, NUM_MEMBERS,
                                         tmp_path / "deployment.json", policy=policy)
        fed = Federation(anvil.url, record.path, keys, ipfs_api)
        fetches = CountedFetches(monkeypatch)
        aggregator = aggregator_node(fed)
        clients = make_clients(fed, tmp_path)
        assert aggregator.step() == "opened"
        for client in clients:
            client.poll_once()  # commits only
        aggregator.watch()
        aggregator.collector.settle()
        assert all(aggregator.consortium.latest_commit(c.address)[0] == 1 for c in clients)
        assert not aggregator.collector.entries and not fetches.cids
        # past the commit deadline: members reveal (and only now publish)
        w3 = connect(anvil.url)
        start = max(w3.eth.get_block("latest")["timestamp"], int(time.time()))
        w3.provider.make_request("evm_setNextBlockTimestamp", [start + 601])
        w3.provider.make_request("evm_mine", [])
        for client in clients:
            client.poll_once()
        aggregator.watch()
        aggregator.collector.settle()
        assert_verified_while_open_and_not_fetched_again(aggregator, clients, fetches)
