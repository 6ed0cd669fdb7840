"""Stateful property test of the round invariants against a Python model of the contract.

Random sequences of opens, submissions, closes, finalizations, removals, re-admissions and time
jumps, from authorized and unauthorized callers. After every step the chain must agree with the
model: one submission per member per round, nothing after close, only the aggregator opens,
closes and finalizes, finalized rounds never change, removed members cannot submit, each round
keeps the block that opened it.
"""

import brownie
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from .conftest import CID, now

NONE, OPEN, CLOSED, FINALIZED = 0, 1, 2, 3


def h(i: int) -> str:
    return "0x" + f"{i + 1:064x}"


caller = st.integers(0, 7)  # accounts[0] operator, [1] aggregator, [2..5] members
member = st.integers(2, 6)  # accounts[6] starts as an outsider
value = st.integers(0, 500)
seconds = st.integers(1, 900)


class RoundMachine(RuleBasedStateMachine):
    """Drives the contract and a model side by side. `env` is set by the test.

    Written on hypothesis directly: brownie 1.22.2's `state_machine` fixture is compiled with
    mypyc and rejects the machine class it builds itself.
    """

    env: tuple = ()

    def __init__(self):
        super().__init__()
        self.accounts, self.consortium, self.chain = self.env
        self.chain.revert()  # every example starts from the snapshot taken by the test
        self.current = 0
        # id -> dict(status, deadline, quorum, subs: {addr: hash}, result, opened block)
        self.rounds = {}
        self.active = {a.address for a in self.accounts[2:6]}

    def _call(self, ok, fn, *args, caller):
        if ok:
            return fn(*args, {"from": caller})
        with brownie.reverts():
            fn(*args, {"from": caller})
        return None

    @rule(caller=caller, value=value, seconds=seconds)
    def open(self, caller, value, seconds):
        account = self.accounts[caller]
        quorum = 1 + value % 4
        deadline = now(self.chain) + seconds
        prev = self.rounds.get(self.current)
        # usually train on the previous result, as required; sometimes try another model
        model = prev["result"][0] if prev and prev["result"] and value % 4 else h(value)
        ok = (caller == 1 and (prev is None or prev["status"] == FINALIZED)
              and (prev is None or model == prev["result"][0])
              and quorum <= len(self.active))
        tx = self._call(ok, self.consortium.openRound, model, CID, deadline, quorum,
                        caller=account)
        if ok:
            self.current += 1
            assert tx.return_value == self.current
            self.rounds[self.current] = {"status": OPEN, "deadline": deadline,
                                         "quorum": quorum, "subs": {}, "result": None,
                                         "opened": tx.block_number}

    @rule(member=member, value=value)
    def submit(self, member, value):
        account = self.accounts[member]
        rnd = self.rounds.get(self.current)
        ok = (account.address in self.active and rnd is not None and rnd["status"] == OPEN
              and now(self.chain) <= rnd["deadline"] and account.address not in rnd["subs"])
        # a submission may be mined a second after chain.time(): keep clear of the deadline
        if rnd is not None and abs(now(self.chain) - rnd["deadline"]) <= 2:
            return
        self._call(ok, self.consortium.submitUpdate, self.current, h(value), CID, caller=account)
        if ok:
            rnd["subs"][account.address] = h(value)

    @rule(caller=caller)
    def close(self, caller):
        rnd = self.rounds.get(self.current)
        if rnd is not None and abs(now(self.chain) - rnd["deadline"]) <= 2:
            return
        ok = (caller == 1 and rnd is not None and rnd["status"] == OPEN
              and (len(rnd["subs"]) >= rnd["quorum"] or now(self.chain) > rnd["deadline"]))
        self._call(ok, self.consortium.closeRound, self.current, caller=self.accounts[caller])
        if ok:
            rnd["status"] = CLOSED

    @rule(caller=caller, value=value)
    def finalize(self, caller, value):
        rnd = self.rounds.get(self.current)
        ok = caller == 1 and rnd is not None and rnd["status"] == CLOSED
        bitmap = [value % 16]
        self._call(ok, self.consortium.finalizeRound, self.current, h(value), CID, h(value + 1),
                   CID, bitmap, caller=self.accounts[caller])
        if ok:
            rnd["status"] = FINALIZED
            rnd["result"] = (h(value), h(value + 1), bitmap[0])

    @rule(caller=caller, value=value)
    def refinalize_old_round(self, caller, value):
        finalized = [r for r, v in self.rounds.items() if v["status"] == FINALIZED]
        if finalized:
            self._call(False, self.consortium.finalizeRound, finalized[0], h(value), CID,
                       h(value), CID, [], caller=self.accounts[caller])

    @rule(member=member)
    def remove(self, member):
        account = self.accounts[member]
        ok = account.address in self.active
        self._call(ok, self.consortium.removeMember, account, caller=self.accounts[0])
        if ok:
            self.active.discard(account.address)

    @rule(member=member)
    def readmit(self, member):
        account = self.accounts[member]
        ok = account.address not in self.active
        self._call(ok, self.consortium.admitMember, account, "back", caller=self.accounts[0])
        if ok:
            self.active.add(account.address)

    @rule(seconds=seconds)
    def sleep(self, seconds):
        self.chain.sleep(seconds)
        self.chain.mine()

    @invariant()
    def chain_matches_model(self):
        assert self.consortium.currentRound() == self.current
        assert self.consortium.activeMembers() == len(self.active)
        for rid, rnd in self.rounds.items():
            record = self.consortium.getRound(rid)
            assert record[6] == rnd["status"]
            assert record[5] == len(rnd["subs"])
            assert record[7] == rnd["opened"]
            for address, digest in rnd["subs"].items():
                last_round, last_hash = self.consortium.latestCommitment(address)
                if last_round == rid:
                    assert last_hash == digest
            if rnd["result"] is not None:
                result, report, bitmap = rnd["result"]
                assert record[1] == result and record[2] == report
                for index in range(4):
                    flagged = self.consortium.isFlagged(rid, self.accounts[2 + index])
                    assert flagged == bool(bitmap >> index & 1)


def test_round_invariants(accounts, consortium, chain):
    chain.snapshot()
    RoundMachine.env = (accounts, consortium, chain)
    run_state_machine_as_test(
        RoundMachine,
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None),
    )
