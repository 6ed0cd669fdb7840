"""Stateful property test of the round invariants against a Python model of the contract.

Random sequences of opens, plain submissions, commits and reveals, closes, finalizations,
attestations, rejections, abandonments, policy changes (attestations required or not),
aggregator and operator hand-overs, removals, re-admissions and time jumps, from authorized and
unauthorized callers. Every transaction is mined at a time the
test sets (one second after the latest block), so the model knows the exact `block.timestamp`
and no rule has to keep clear of a deadline. A transaction the model expects to fail must
revert with the custom error, arguments included, of the first check that fails in the
contract's code order, derived from the model's state; a revert for any other reason fails.
After every step the chain must agree with the model, and:

* a finalized round has at least the minimum submissions of the policy in force when it opened;
* every flagged member submitted (revealed) in that round;
* no round stays open or closed past its longest duration, reveal window and grace period
  without anyone being able to abandon it;
* one commitment per (round, member), and one submission per (round, member);
* only the aggregator opens, closes and finalizes; finalized rounds never change; each round
  keeps the block that opened it;
* one attestation per (round, member), by active members only; the next round opens only on
  an accepted, abandoned or rejected round and always builds on the last accepted result; a
  rejected round never becomes the base, and `lastAcceptedRound`, `isAccepted` and
  `baseModelHash` agree with the model at every step.

(No on-chain duplicate-hash check exists: the gas target leaves no room for it.)

Two drivers run the machine. Hypothesis (`test_round_invariants`) with few examples mostly
tries short runs, so CI also walks it deterministically (`test_round_invariants_random_walk`,
CI_SEEDS): the same rules and invariants, `STEPS` rules per seed drawn by `random.Random(seed)`,
mostly the rule that moves the latest round on by the book, otherwise any rule with arbitrary
arguments. Together the CI walks must finalize, abandon, reveal, attest and reject, so that
coverage cannot vanish unnoticed; `-m soak` walks SOAK_SEEDS for longer. Run with `-s` to see
each walk's counts.
"""

import random
from collections import Counter

import brownie
import pytest
from brownie import web3
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from .conftest import CID, error, make_policy, next_block_at

NONE, OPEN, CLOSED, FINALIZED, ABANDONED, REJECTED = range(6)
PLAIN, COMMIT_REVEAL = 0, 1
DAY = 24 * 3600
MAX_POLICY_SECONDS = 30 * DAY  # ConsortiumPolicy.MAX_POLICY_SECONDS
POLICIES = [
    make_policy(min_round=1, max_round=900, min_submissions=1, grace=60),
    make_policy(min_round=30, max_round=600, min_submissions=0, min_bps=5000, grace=30),
    make_policy(min_round=1, max_round=900, min_submissions=2, mode=COMMIT_REVEAL, reveal=120,
                grace=60),
    make_policy(min_round=1, max_round=300, min_submissions=0, min_bps=2500,
                mode=COMMIT_REVEAL, reveal=60, grace=0),
    make_policy(min_round=1, max_round=900, min_submissions=1, grace=60, attestations=2,
                window=300),
    make_policy(min_round=1, max_round=600, min_submissions=0, min_bps=5000, grace=30,
                attestations=1, window=120),
]
AUDIT = "0x" + "ab" * 32


def h(i: int) -> str:
    return "0x" + f"{i + 1:064x}"


def salt(i: int) -> str:
    return "0x" + f"{i + 7:064x}"


# accounts [0] operator, [1] aggregator, [2..5] members, [6] outsider, [7] second aggregator,
# [8] second operator; 9 and 10 stand for whoever holds the aggregator and the operator role
caller = st.integers(0, 10)
member = st.integers(2, 6)
value = st.integers(0, 500)
seconds = st.integers(1, 1000)


class RoundMachine(RuleBasedStateMachine):
    """Drives the contract and a model side by side. `env` is set by the test.

    Written on hypothesis directly: brownie 1.22.2's `state_machine` fixture is compiled with
    mypyc and rejects the machine class it builds itself.
    """

    env: tuple = ()
    in_hypothesis = True  # the random walk drives the machine outside any Hypothesis test

    def __init__(self):
        super().__init__()
        self.tally = Counter()  # what happened: successes and checked reverts, by kind
        self.accounts, self.consortium, self.chain = self.env
        self.chain.revert()  # every example starts from the snapshot taken by the test
        self.current = 0
        self.finalized = 0
        self.accepted_before = 0  # the last accepted round before the current one
        self.genesis = None
        self.rounds = {}
        self.active = {a.address for a in self.accounts[2:6]}
        self.index = {a.address: i for i, a in enumerate(self.accounts[2:6])}
        self.operator, self.aggregator = 0, 1
        self.policy = POLICIES[0]
        self.pending = None  # (policy, from round, from time)

    # -- helpers ---------------------------------------------------------------------------
    def _note(self, what: str):
        """Count an outcome, and report it to Hypothesis's statistics when it drives."""
        self.tally[what] += 1
        if self.in_hypothesis:
            event(what)

    def _next_time(self) -> int:
        """Fix the next block's time one second after the latest block, and return it."""
        moment = self.chain[-1].timestamp + 1
        next_block_at(moment)
        return moment

    def _view(self, name, *args):
        """The consortium's view `name(*args)`, read as brownie reads it (an eth_call at the
        latest block, decoded by brownie) but straight through the provider: web3's middleware
        makes a read through brownie six times slower, and the invariants make many."""
        fn = getattr(self.consortium, name)
        reply = web3.provider.make_request(
            "eth_call", [{"to": self.consortium.address, "data": fn.encode_input(*args)},
                         "latest"])
        assert "error" not in reply and reply["result"] not in ("0x", None), reply
        return fn.decode_output(reply["result"])

    def _who(self, caller: int) -> int:
        """An account index: 9 and 10 mean the current aggregator and operator."""
        return {9: self.aggregator, 10: self.operator}.get(caller, caller)

    def _call(self, expected, fn, *args, caller):
        """Send the transaction; `expected` is None if it must succeed, else the custom error
        (`conftest.error`: name and arguments) it must revert with."""
        if expected is None:
            return fn(*args, {"from": caller})
        with brownie.reverts(expected):
            fn(*args, {"from": caller})
        self._note("reverted " + expected.split(":")[0])
        return None

    def _status_error(self, round_id, required):
        """`_requireStatus`: the error for round `round_id` not being in status `required`."""
        rnd = self.rounds.get(round_id)
        if rnd is None:
            return error("UnknownRound", round_id)
        if rnd["status"] != required:
            return error("WrongRoundStatus", round_id, rnd["status"], required)
        return None

    def _member_error(self, account):
        """`_activeMember`: the error for `account` not being an active member."""
        return None if account.address in self.active else error("NotMember", account)

    def _aggregator_error(self, caller):
        """`onlyAggregator`."""
        if caller != self.aggregator:
            return error("NotAggregator", self.accounts[caller])
        return None

    def _operator_error(self, caller):
        """`onlyOperator`."""
        if caller != self.operator:
            return error("NotOperator", self.accounts[caller])
        return None

    def _due(self, next_round, moment):
        return (self.pending is not None and next_round >= self.pending[1]
                and moment >= self.pending[2])

    def _apply_due(self, next_round, moment):
        if self._due(next_round, moment):
            self.policy, self.pending = self.pending[0], None

    @staticmethod
    def _accepted(rnd, moment):
        if rnd["status"] != FINALIZED:
            return False
        k, passes, fails = rnd["k"], *_count(rnd)
        return k == 0 or passes >= k or (moment > rnd["att_deadline"] and fails < k)

    def _last_accepted(self, moment):
        rnd = self._latest()
        if rnd is not None and self._accepted(rnd, moment):
            return self.current
        return self.accepted_before

    def _base(self, moment=None):
        accepted = self._last_accepted(self.chain[-1].timestamp + 1 if moment is None
                                       else moment)
        if accepted:
            return self.rounds[accepted]["result"][0]
        return self.genesis

    def _latest(self):
        return self.rounds.get(self.current)

    @staticmethod
    def _minimum(policy, active):
        if policy[2]:
            return policy[2]
        return -(-active * policy[3] // 10_000)

    # -- rules -----------------------------------------------------------------------------
    @initialize(choice=st.integers(0, len(POLICIES) - 1))
    def initial_policy(self, choice):
        self._next_time()
        self.consortium.setInitialPolicy(POLICIES[choice], {"from": self.accounts[0]})
        self.policy = POLICIES[choice]

    @rule(caller=caller, value=value, seconds=seconds)
    def open(self, caller, value, seconds):
        base = self._base()
        # usually train on the model required, as required; sometimes try another one
        model = base if base is not None and value % 5 else h(value)
        self._open(self._who(caller), model, 1 + value % 5, seconds)

    def _open(self, caller, model, quorum, seconds):
        moment = self._next_time()
        prev = self._latest()
        base = self._base(moment)
        next_id = self.current + 1
        policy = self.pending[0] if self._due(next_id, moment) else self.policy
        minimum = self._minimum(policy, len(self.active))
        active = len(self.active)
        # the checks in the order openRound makes them
        expected = self._aggregator_error(caller)
        if expected is None and prev is not None:
            if prev["status"] == FINALIZED:
                if not self._accepted(prev, moment):
                    expected = error("PreviousRoundNotAccepted", self.current, *_count(prev),
                                     prev["k"], prev["att_deadline"])
            elif prev["status"] not in (ABANDONED, REJECTED):
                expected = error("PreviousRoundNotFinalized", self.current)
        if expected is None and base is not None and model != base:
            expected = error("ModelNotPreviousResult", model, base)
        if expected is None and not policy[0] <= seconds <= policy[1]:
            expected = error("DeadlineOutOfRange", moment + seconds, moment + policy[0],
                             moment + policy[1])
        if expected is None and not (quorum != 0 and minimum <= quorum <= active):
            expected = error("InvalidQuorum", quorum, minimum, active)
        ok = expected is None
        tx = self._call(expected, self.consortium.openRound, model, CID, moment + seconds,
                        quorum, caller=self.accounts[caller])
        if ok:
            self._apply_due(next_id, moment)
            self.accepted_before = self._last_accepted(moment)
            self.current = next_id
            self.genesis = self.genesis or model
            assert tx.return_value == next_id
            mode, reveal, grace = policy[4], policy[5], policy[6]
            self.rounds[next_id] = {
                "status": OPEN, "deadline": moment + seconds, "quorum": quorum, "subs": {},
                "commits": {}, "result": None, "opened": tx.block_number, "opened_at": moment,
                "min": minimum, "mode": mode, "grace": grace, "max_round": policy[1],
                "reveal": moment + seconds + reveal if mode == COMMIT_REVEAL else 0,
                "k": policy[7], "window": policy[8], "att": {}, "att_deadline": 0,
                "base": self.accepted_before}
            self._note(f"opened, mode {mode}")

    @rule(member=member, value=value)
    def submit(self, member, value):
        account = self.accounts[member]
        moment = self._next_time()
        rnd = self._latest()
        expected = (self._member_error(account)
                    or self._status_error(self.current, OPEN)
                    or self._submission_error(rnd, PLAIN, moment, account))
        self._call(expected, self.consortium.submitUpdate, self.current, h(value), CID,
                   caller=account)
        if expected is None:
            rnd["subs"][account.address] = h(value)
            self._note("submitted")

    def _submission_error(self, rnd, mode, moment, account):
        """After membership and status: the mode and deadline checks of submitUpdate (PLAIN)
        and commitUpdate (COMMIT_REVEAL), then the once-per-round check."""
        if rnd["mode"] != mode:
            return error("WrongSubmissionMode", self.current, rnd["mode"])
        if moment > rnd["deadline"]:
            return error("DeadlinePassed", self.current, rnd["deadline"])
        if mode == PLAIN and account.address in rnd["subs"]:
            return error("AlreadySubmitted", self.current, account)
        if mode == COMMIT_REVEAL and account.address in rnd["commits"]:
            return error("AlreadyCommitted", self.current, account)
        return None

    @rule(member=member, value=value)
    def commit(self, member, value):
        account = self.accounts[member]
        moment = self._next_time()
        rnd = self._latest()
        expected = (self._member_error(account)
                    or self._status_error(self.current, OPEN)
                    or self._submission_error(rnd, COMMIT_REVEAL, moment, account))
        commitment = self.consortium.commitmentOf(account, self.current, h(value), salt(value))
        self._call(expected, self.consortium.commitUpdate, self.current, commitment,
                   caller=account)
        if expected is None:
            rnd["commits"][account.address] = (h(value), salt(value))
            self._note("committed")

    @rule(member=member, honest=st.booleans())
    def reveal(self, member, honest):
        account = self.accounts[member]
        moment = self._next_time()
        rnd = self._latest()
        committed = rnd["commits"].get(account.address) if rnd else None
        digest, secret = committed or (h(0), salt(0))
        if not honest:
            secret = salt(999)
        expected = self._member_error(account) or self._status_error(self.current, OPEN)
        if expected is None:
            if rnd["mode"] != COMMIT_REVEAL:
                expected = error("WrongSubmissionMode", self.current, rnd["mode"])
            elif moment <= rnd["deadline"]:
                expected = error("RevealNotOpen", self.current, rnd["deadline"])
            elif moment > rnd["reveal"]:
                expected = error("RevealWindowClosed", self.current, rnd["reveal"])
            elif committed is None:
                expected = error("NoCommitment", self.current, account)
            elif not honest:
                expected = error("CommitmentMismatch", self.current, account)
            elif account.address in rnd["subs"]:
                expected = error("AlreadySubmitted", self.current, account)
        self._call(expected, self.consortium.revealUpdate, self.current, digest, CID, secret,
                   caller=account)
        if expected is None:
            rnd["subs"][account.address] = digest
            self._note("revealed")

    @rule(caller=caller)
    def close(self, caller):
        caller = self._who(caller)
        moment = self._next_time()
        rnd = self._latest()
        expected = self._aggregator_error(caller) or self._status_error(self.current, OPEN)
        if expected is None:
            subs, quorum, commits = len(rnd["subs"]), rnd["quorum"], len(rnd["commits"])
            if rnd["mode"] == PLAIN:
                if subs < quorum and moment <= rnd["deadline"]:
                    expected = error("QuorumNotReached", self.current, subs, quorum)
            elif moment <= rnd["reveal"]:
                if moment <= rnd["deadline"]:
                    expected = error("CommitPhaseOpen", self.current, rnd["deadline"])
                elif subs < quorum:
                    expected = error("QuorumNotReached", self.current, subs, quorum)
                elif subs < commits:
                    expected = error("RevealsPending", self.current, commits, subs)
        self._call(expected, self.consortium.closeRound, self.current,
                   caller=self.accounts[caller])
        if expected is None:
            rnd["status"] = CLOSED
            self._note("closed")

    @rule(caller=caller, value=value)
    def finalize(self, caller, value):
        self._finalize(self._who(caller), value, value % 32)

    def _finalize(self, caller, value, bitmap):
        moment = self._next_time()
        rnd = self._latest()
        slots = len(self.index)  # memberSlots(): every account ever admitted
        flagged = sorted(i for i in range(5) if bitmap >> i & 1)
        expected = self._aggregator_error(caller) or self._status_error(self.current, CLOSED)
        if expected is None:
            submitters = {self.index[a] for a in rnd["subs"]}
            if len(rnd["subs"]) < rnd["min"]:
                expected = error("BelowMinimumSubmissions", self.current, len(rnd["subs"]),
                                 rnd["min"])
            elif bitmap >> slots:
                expected = error("UnknownMemberFlagged", bitmap, slots)
            else:  # the lowest flagged index that did not submit
                strangers = [i for i in flagged if i not in submitters]
                if strangers:
                    expected = error("FlaggedNonSubmitter", self.current, strangers[0])
        self._call(expected, self.consortium.finalizeRound, self.current, h(value), CID,
                   h(value + 1), CID, [bitmap], caller=self.accounts[caller])
        if expected is None:
            rnd["status"] = FINALIZED
            rnd["result"] = (h(value), h(value + 1), bitmap)
            if rnd["k"]:
                rnd["att_deadline"] = moment + rnd["window"]
            self.finalized = self.current
            self._note(f"finalized, mode {rnd['mode']}")

    @rule(value=value, finish=st.booleans())
    def play_round(self, value, finish):
        """A whole round by the book, so that examples reach later rounds and policy changes:
        open, every active member submits (commits and reveals), close, then finalize flagging
        one submitter, or abandon after the grace period."""
        rnd = self._latest()
        if rnd is not None and rnd["status"] in (OPEN, CLOSED):
            self.abandon(10)  # the operator clears the way
        elif rnd is not None and rnd["status"] == FINALIZED:
            if _count(rnd)[1] >= rnd["k"] > 0:
                self.reject(10)  # failed by its attesters: the operator rejects it
            elif not self._accepted(rnd, self.chain[-1].timestamp + 1):
                next_block_at(rnd["att_deadline"] + 1)  # silence accepts it
                self.chain.mine()
        moment = self.chain[-1].timestamp + 1
        policy = self.pending[0] if self._due(self.current + 1, moment) else self.policy
        minimum = self._minimum(policy, len(self.active))
        if not self.active or minimum > len(self.active):
            return
        self._open(self.aggregator, self._base() or h(value), max(1, minimum), policy[1])
        rnd = self._latest()
        members = [i for i in range(2, 7) if self.accounts[i].address in self.active]
        for i in members:
            if rnd["mode"] == PLAIN:
                self.submit(i, value + i)
            else:
                self.commit(i, value + i)
        if rnd["mode"] == COMMIT_REVEAL:
            next_block_at(rnd["deadline"])
            self.chain.mine()
            for i in members:
                self.reveal(i, True)
        self.close(9)
        if finish:
            flagged = self.index[self.accounts[members[value % len(members)]].address]
            self._finalize(self.aggregator, value, 1 << flagged)
        else:
            end = rnd["reveal"] or rnd["deadline"]
            next_block_at(max(self.chain[-1].timestamp, end) + rnd["grace"] + 1)
            self.chain.mine()
            self.abandon(6)

    @rule(caller=caller, value=value)
    def refinalize_old_round(self, caller, value):
        caller = self._who(caller)
        finalized = [r for r, v in self.rounds.items() if v["status"] == FINALIZED]
        if finalized:
            expected = (self._aggregator_error(caller)
                        or error("WrongRoundStatus", finalized[0], FINALIZED, CLOSED))
            self._call(expected, self.consortium.finalizeRound, finalized[0], h(value), CID,
                       h(value), CID, [], caller=self.accounts[caller])

    @rule(member=member, passed=st.booleans(), back=st.integers(0, 3))
    def attest(self, member, passed, back):
        """A member attests the latest round, or (`back`) an earlier one."""
        account = self.accounts[member]
        moment = self._next_time()
        round_id = max(1, self.current - back)
        rnd = self.rounds.get(round_id)
        expected = self._member_error(account) or self._status_error(round_id, FINALIZED)
        if expected is None:
            if rnd["k"] and moment > rnd["att_deadline"]:
                expected = error("AttestationWindowClosed", round_id, rnd["att_deadline"])
            elif account.address in rnd["att"]:
                expected = error("AlreadyAttested", round_id, account)
        self._call(expected, self.consortium.attestRound, round_id, passed, AUDIT, CID,
                   caller=account)
        if expected is None:
            rnd["att"][account.address] = passed
            self._note("attested " + ("pass" if passed else "fail"))

    @rule(caller=caller)
    def reject(self, caller):
        caller = self._who(caller)
        moment = self._next_time()
        rnd = self._latest()
        expected = self._status_error(self.current, FINALIZED)
        if expected is None:  # (always the latest round: LaterRoundOpened cannot happen here)
            passes, fails = _count(rnd)
            if rnd["k"] == 0 or fails < rnd["k"]:
                expected = error("TooFewFailingAttestations", self.current, fails, rnd["k"])
            elif caller != self.operator and (moment <= rnd["att_deadline"]
                                              or passes >= rnd["k"]):
                expected = error("RejectionReservedToOperator", self.current,
                                 rnd["att_deadline"])
        self._call(expected, self.consortium.rejectRound, self.current,
                   caller=self.accounts[caller])
        if expected is None:
            rnd["status"] = REJECTED
            self._note("rejected " + ("by the operator" if caller == self.operator
                                      else "by anyone"))

    @rule(caller=caller)
    def abandon(self, caller):
        caller = self._who(caller)
        moment = self._next_time()
        rnd = self._latest()
        if rnd is None:
            expected = error("UnknownRound", self.current)
        elif rnd["status"] not in (OPEN, CLOSED):
            expected = error("RoundNotAbandonable", self.current, rnd["status"])
        else:
            expected = None
        if expected is None and caller != self.operator:
            end = rnd["reveal"] if rnd["mode"] == COMMIT_REVEAL else rnd["deadline"]
            if rnd["status"] == CLOSED:
                reachable = len(rnd["subs"])
            elif moment <= rnd["deadline"]:
                reachable = None
            elif rnd["mode"] == COMMIT_REVEAL and moment <= rnd["reveal"]:
                reachable = len(rnd["commits"])
            else:
                reachable = len(rnd["subs"])
            doomed = reachable is not None and reachable < rnd["min"]
            if not doomed and moment <= end + rnd["grace"]:
                expected = error("GracePeriodNotOver", self.current, end + rnd["grace"])
        self._call(expected, self.consortium.abandonRound, self.current,
                   caller=self.accounts[caller])
        if expected is None:
            rnd["status"] = ABANDONED
            self._note("abandoned " + ("by the operator" if caller == self.operator
                                       else "by anyone"))

    @rule(caller=caller, choice=st.integers(0, len(POLICIES) - 1))
    def schedule_policy(self, caller, choice):
        caller = self._who(caller)
        moment = self._next_time()
        chosen = POLICIES[choice]
        expected = self._operator_error(caller)
        # every policy in POLICIES is valid but for attestations beyond the active members
        if expected is None and chosen[7] > len(self.active):
            expected = error("InvalidAttestationPolicy", chosen[7], chosen[8], len(self.active),
                             MAX_POLICY_SECONDS)
        self._call(expected, self.consortium.schedulePolicy, chosen,
                   caller=self.accounts[caller])
        if expected is None:
            self._apply_due(self.current + 1, moment)
            self.pending = (POLICIES[choice], self.current + 3, moment + DAY)

    @rule(caller=caller)
    def swap_aggregator(self, caller):
        caller = self._who(caller)
        self._next_time()
        target = 7 if self.aggregator == 1 else 1
        expected = self._operator_error(caller)
        self._call(expected, self.consortium.setAggregator, self.accounts[target],
                   caller=self.accounts[caller])
        if expected is None:
            self.aggregator = target

    @rule(member=member)
    def member_cannot_aggregate(self, member):
        account = self.accounts[member]
        self._next_time()
        expected = error("AggregatorIsMember", account) if account.address in self.active \
            else None
        self._call(expected, self.consortium.setAggregator, account,
                   caller=self.accounts[self.operator])
        if expected is None:  # hand the role straight back
            self._next_time()
            self.consortium.setAggregator(self.accounts[self.aggregator],
                                          {"from": self.accounts[self.operator]})

    @rule()
    def hand_over_operator(self):
        self._next_time()
        successor = 8 if self.operator == 0 else 0
        self.consortium.transferOperator(self.accounts[successor],
                                         {"from": self.accounts[self.operator]})
        self._next_time()
        self.consortium.acceptOperator({"from": self.accounts[successor]})
        self.operator = successor

    @rule(member=member)
    def remove(self, member):
        self._next_time()
        account = self.accounts[member]
        expected = self._member_error(account)
        self._call(expected, self.consortium.removeMember, account,
                   caller=self.accounts[self.operator])
        if expected is None:
            self.active.discard(account.address)

    @rule(member=member)
    def readmit(self, member):
        self._next_time()
        account = self.accounts[member]
        if account == self.accounts[self.aggregator]:
            expected = error("MemberIsAggregator", account)
        elif account.address in self.active:
            expected = error("AlreadyMember", account)
        else:
            expected = None
        self._call(expected, self.consortium.admitMember, account, "back",
                   caller=self.accounts[self.operator])
        if expected is None:
            self.active.add(account.address)
            self.index.setdefault(account.address, len(self.index))

    @rule(seconds=seconds)
    def sleep(self, seconds):
        next_block_at(self.chain[-1].timestamp + seconds)
        self.chain.mine()

    @rule()
    def sleep_a_day(self):
        next_block_at(self.chain[-1].timestamp + DAY)
        self.chain.mine()

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def chain_matches_model(self):
        assert self._view("currentRound") == self.current
        assert self._view("lastFinalizedRound") == self.finalized
        moment = self.chain[-1].timestamp  # what view calls see
        accepted = self._last_accepted(moment)
        assert self._view("lastAcceptedRound") == accepted
        base = self.rounds[accepted]["result"][0] if accepted else self.genesis
        assert self._view("baseModelHash") == (base or "0x" + "00" * 32)
        assert self._view("activeMembers") == len(self.active)
        assert self._view("aggregator") == self.accounts[self.aggregator]
        assert self._view("operator") == self.accounts[self.operator]
        for rid, rnd in self.rounds.items():
            self._check_round(rid, rnd, moment)

    def _check_round(self, rid, rnd, moment):
        """Round `rid` on chain agrees with its model `rnd` at time `moment`."""
        record = self._view("getRound", rid)
        assert record["status"] == rnd["status"]
        assert record["submissions"] == len(rnd["subs"])
        assert record["commits"] == len(rnd["commits"])  # one per (round, member)
        assert record["openedBlock"] == rnd["opened"]
        assert record["minSubmissions"] == rnd["min"]  # the policy's, at opening
        assert record["mode"] == rnd["mode"]
        assert record["attestationsRequired"] == rnd["k"]
        assert self._view("isAccepted", rid) == self._accepted(rnd, moment)
        assert tuple(int(n) for n in self._view("attestations", rid)) == _count(rnd)
        for address in self.index:
            assert self._view("hasAttested", rid, address) == (address in rnd["att"])
        # every round built on an accepted result, never on a rejected one
        if rnd["base"]:
            assert self.rounds[rnd["base"]]["status"] == FINALIZED
            assert record["modelHash"] == self.rounds[rnd["base"]]["result"][0]
        else:
            assert record["modelHash"] == self.genesis
        for address, digest in rnd["subs"].items():
            last_round, last_hash = self._view("latestCommitment", address)
            if last_round == rid:
                assert last_hash == digest
        if rnd["status"] == FINALIZED:
            assert len(rnd["subs"]) >= rnd["min"]
            result, report, bitmap = rnd["result"]
            assert record["resultHash"] == result and record["reportHash"] == report
            for address, index in self.index.items():
                flagged = self._view("isFlagged", rid, address)
                assert flagged == bool(bitmap >> index & 1)
                assert not flagged or address in rnd["subs"]  # flagged => submitted

    @invariant()
    def no_round_outlives_its_limits(self):
        rnd = self._latest()
        if rnd is None or rnd["status"] not in (OPEN, CLOSED):
            return
        reveal_seconds = rnd["reveal"] - rnd["deadline"] if rnd["reveal"] else 0
        limit = rnd["opened_at"] + rnd["max_round"] + reveal_seconds + rnd["grace"]
        assert self._view("abandonableAfter", self.current) <= limit


def _count(rnd):
    """A round's (passes, fails) in the model."""
    passes = sum(rnd["att"].values())
    return passes, len(rnd["att"]) - passes


def test_round_invariants(accounts, consortium, chain):
    chain.snapshot()
    RoundMachine.env = (accounts, consortium, chain)
    run_state_machine_as_test(
        RoundMachine,
        # A 40-step run over 19 rules draws more than Hypothesis's default
        # buffer now and then; the overrun examples are discarded, not
        # failed, so the size health check only makes the test flaky.
        settings=settings(
            max_examples=10,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow],
        ),
    )


# -- the deterministic random walk ----------------------------------------------------------
# With a handful of examples Hypothesis 6.27 spends its budget on short runs (a logged CI run:
# about ten rules in all, no successful transaction), so the invariants above were barely
# exercised. The walk drives the same machine, rules and invariants with a seeded
# random.Random: mostly the step that moves the latest round on by the book (open, submit or
# commit and reveal, close, finalize or abandon, attest, reject), otherwise any rule with
# arguments drawn from the ranges of the strategies above, which mixes in the error paths.

CI_SEEDS = (2, 3, 4)  # commit-reveal (minimum 2), commit-reveal (25 %), 2 attestations
SOAK_SEEDS = tuple(range(100, 130))  # about 17 s each
STEPS = 40
SOAK_STEPS = 80
PROGRESS = 0.6  # the chance that a step moves the latest round on by the book


def _caller(rng):
    return rng.randint(0, 10)


def _member(rng):
    return rng.randint(2, 6)


def _value(rng):
    return rng.randint(0, 500)


# every rule of RoundMachine, with its arguments drawn from the ranges its strategies draw from
RANDOM_RULES = {
    "open": lambda r: {"caller": _caller(r), "value": _value(r), "seconds": r.randint(1, 1000)},
    "submit": lambda r: {"member": _member(r), "value": _value(r)},
    "commit": lambda r: {"member": _member(r), "value": _value(r)},
    "reveal": lambda r: {"member": _member(r), "honest": r.random() < 0.5},
    "close": lambda r: {"caller": _caller(r)},
    "finalize": lambda r: {"caller": _caller(r), "value": _value(r)},
    "play_round": lambda r: {"value": _value(r), "finish": r.random() < 0.5},
    "refinalize_old_round": lambda r: {"caller": _caller(r), "value": _value(r)},
    "attest": lambda r: {"member": _member(r), "passed": r.random() < 0.5,
                         "back": r.randint(0, 3)},
    "reject": lambda r: {"caller": _caller(r)},
    "abandon": lambda r: {"caller": _caller(r)},
    "schedule_policy": lambda r: {"caller": _caller(r), "choice": r.randrange(len(POLICIES))},
    "swap_aggregator": lambda r: {"caller": _caller(r)},
    "member_cannot_aggregate": lambda r: {"member": _member(r)},
    "hand_over_operator": lambda r: {},
    "remove": lambda r: {"member": _member(r)},
    "readmit": lambda r: {"member": _member(r)},
    "sleep": lambda r: {"seconds": r.randint(1, 1000)},
    "sleep_a_day": lambda r: {},
}
AGGREGATOR, OPERATOR, ANYONE = 9, 10, 6  # callers, as the rules take them


def _progress(m, rng):
    """The rule (name, arguments) that moves machine `m`'s latest round on by the book."""
    rnd = m._latest()
    now = m.chain[-1].timestamp  # the latest block; the next transaction comes 1 s later
    members = [i for i in range(2, 7) if m.accounts[i].address in m.active]

    def until(moment):  # the `sleep` that makes the next transaction come after `moment`
        return "sleep", {"seconds": max(1, moment - now)}

    if rnd is None or rnd["status"] in (ABANDONED, REJECTED) or (
            rnd["status"] == FINALIZED and m._accepted(rnd, now + 1)):
        if rnd is not None and rnd["status"] == FINALIZED and rng.random() < 0.2:
            silent = [i for i in members if m.accounts[i].address not in rnd["att"]]
            if silent and (not rnd["k"] or now + 1 <= rnd["att_deadline"]):
                return "attest", {"member": rng.choice(silent), "passed": rng.random() < 0.8,
                                  "back": 0}
        return _progress_open(m, rng, now + 1, members)
    end = rnd["reveal"] or rnd["deadline"]
    if rnd["status"] == FINALIZED:  # attested by too few so far, or failed by its attesters
        if _count(rnd)[1] >= rnd["k"]:
            if rng.random() < 0.5:
                return "reject", {"caller": OPERATOR}
            if now + 1 <= rnd["att_deadline"]:
                return until(rnd["att_deadline"])
            return "reject", {"caller": ANYONE}
        silent = [i for i in members if m.accounts[i].address not in rnd["att"]]
        if silent and rng.random() < 0.85:
            return "attest", {"member": rng.choice(silent), "passed": rng.random() < 0.7,
                              "back": 0}
        return until(rnd["att_deadline"])  # silence accepts it
    if rnd["status"] == CLOSED:
        if len(rnd["subs"]) >= rnd["min"] and rng.random() < 0.85:
            submitters = [m.index[a] for a in rnd["subs"]]
            bitmap = sum(1 << i for i in submitters if rng.random() < 0.3)
            return "finalize", {"caller": AGGREGATOR, "value": bitmap + 32 * rng.randint(0, 14)}
        if rng.random() < 0.3:
            return "abandon", {"caller": OPERATOR}
        if len(rnd["subs"]) >= rnd["min"] and now + 1 <= end + rnd["grace"]:
            return until(end + rnd["grace"])
        return "abandon", {"caller": ANYONE}
    # open
    if rng.random() < 0.05:
        return "abandon", {"caller": OPERATOR}
    if now + 1 <= rnd["deadline"]:
        if rnd["mode"] == PLAIN:
            waiting = [i for i in members if m.accounts[i].address not in rnd["subs"]]
            if len(rnd["subs"]) >= rnd["quorum"] and (not waiting or rng.random() < 0.4):
                return "close", {"caller": AGGREGATOR}
            if waiting and rng.random() < 0.9:
                return "submit", {"member": rng.choice(waiting), "value": _value(rng)}
        else:
            waiting = [i for i in members if m.accounts[i].address not in rnd["commits"]]
            if waiting and rng.random() < 0.85:
                return "commit", {"member": rng.choice(waiting), "value": _value(rng)}
        return until(rnd["deadline"])
    if rnd["mode"] == COMMIT_REVEAL and now + 1 <= rnd["reveal"]:
        hidden = [i for i in members if m.accounts[i].address in rnd["commits"]
                  and m.accounts[i].address not in rnd["subs"]]
        if hidden and rng.random() < 0.9:
            return "reveal", {"member": rng.choice(hidden), "honest": rng.random() < 0.9}
        if hidden and rng.random() < 0.5:
            return until(rnd["reveal"])
        return "close", {"caller": AGGREGATOR}
    if rng.random() < 0.7:
        return "close", {"caller": AGGREGATOR}
    if now + 1 <= end + rnd["grace"] and rng.random() < 0.6:
        return until(end + rnd["grace"])
    return "abandon", {"caller": ANYONE}


def _progress_open(m, rng, moment, members):
    """Open the next round as the aggregator, now and then after a policy change."""
    if rng.random() < 0.1:
        return "schedule_policy", {"caller": OPERATOR, "choice": rng.randrange(len(POLICIES))}
    if m.pending is not None and rng.random() < 0.15:
        return "sleep_a_day", {}
    policy = m.pending[0] if m._due(m.current + 1, moment) else m.policy
    minimum = m._minimum(policy, len(members))
    outside = [i for i in range(2, 7) if i not in members]
    if outside and (minimum > len(members) or not members or rng.random() < 0.05):
        return "readmit", {"member": rng.choice(outside)}
    if members and minimum <= len(members):
        return "_open", {"caller": m.aggregator, "model": m._base(moment) or h(_value(rng)),
                         "quorum": rng.randint(max(1, minimum), len(members)),
                         "seconds": rng.randint(policy[0], policy[1])}
    return "schedule_policy", {"caller": OPERATOR, "choice": 0}


def _walk(accounts, consortium, chain, seed, steps):
    """Drive a RoundMachine `steps` rules from the snapshot, checking all its invariants (every
    round, as under Hypothesis) after each one. Returns the machine's tally."""
    assert set(RANDOM_RULES) == {r.function.__name__ for r in RoundMachine.rules()}
    rng = random.Random(seed)
    chain.snapshot()
    RoundMachine.env = (accounts, consortium, chain)
    m = RoundMachine()
    m.in_hypothesis = False
    m.initial_policy(seed % len(POLICIES))  # the seeds cycle through the policies
    for step in range(1, steps + 1):
        if rng.random() < PROGRESS:
            name, args = _progress(m, rng)
        else:
            name = rng.choice(sorted(RANDOM_RULES))
            args = RANDOM_RULES[name](rng)
        m.tally["steps"] += 1
        try:
            getattr(m, name)(**args)
            m.chain_matches_model()
            m.no_round_outlives_its_limits()
        except Exception as exc:
            raise AssertionError(f"seed {seed}, step {step}: {name}({args}) after "
                                 f"{dict(m.tally)}") from exc
    return m.tally


def _summary(tally):
    """The walk's counts: how many of each successful step, and the reverts checked."""
    def total(prefix):
        return sum(n for what, n in tally.items() if what.startswith(prefix))
    return {"steps": tally["steps"], "opened": total("opened"), "finalized": total("finalized"),
            "abandoned": total("abandoned"), "rejected": total("rejected"),
            "committed": total("committed"), "revealed": total("revealed"),
            "attested": total("attested"), "reverts checked": total("reverted")}


_CI_WALKS = {}  # seed: summary, for the walks of CI_SEEDS this session ran


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_round_invariants_random_walk(accounts, consortium, chain, seed):
    summary = _summary(_walk(accounts, consortium, chain, seed, STEPS))
    print(f"seed {seed}: {summary}")
    assert summary["steps"] == STEPS
    # every walk gets rounds through to an end, and checks error paths
    assert summary["opened"] >= 2, summary
    assert summary["finalized"] + summary["abandoned"] >= 1, summary
    assert summary["reverts checked"] >= 3, summary
    _CI_WALKS[seed] = summary
    if set(_CI_WALKS) == set(CI_SEEDS):  # the last of them: together they cover every phase
        for what in ("finalized", "abandoned", "revealed", "attested", "rejected"):
            assert sum(s[what] for s in _CI_WALKS.values()) >= 1, (what, _CI_WALKS)


@pytest.mark.soak
@pytest.mark.parametrize("seed", SOAK_SEEDS)
def test_round_invariants_random_walk_soak(accounts, consortium, chain, seed):
    summary = _summary(_walk(accounts, consortium, chain, seed, SOAK_STEPS))
    print(f"seed {seed}: {summary}")
    assert summary["finalized"] + summary["abandoned"] >= 1, summary
