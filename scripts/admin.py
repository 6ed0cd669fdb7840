"""Consortium administration by the operator, against the recorded deployment.

    brownie run admin set_aggregator 0xAGGREGATOR [--network NAME]
    brownie run admin admit 0xMEMBER hospital-a
    brownie run admin remove 0xMEMBER [force]   (refused if rounds could no longer open)
    brownie run admin transfer_operator 0xNEW     (the new operator then runs accept_operator)
    brownie run admin accept_operator
    brownie run admin schedule_policy min_submissions=3,grace_seconds=600
    brownie run admin schedule_policy attestations_required=2,attestation_window_seconds=86400
    brownie run admin abandon ROUND
    brownie run admin set_validation_set 0xSHA256 bafk...   (0x00..00 "" clears it)
    brownie run admin reject ROUND     (a round k members' attestations failed)
    brownie run admin show

The operator's account is chosen as in scripts/deploy.py (accounts[0] on development,
FLEML_DEPLOYER_KEY or FLEML_DEPLOYER_ACCOUNT elsewhere). The contract address comes from the
deployment record ($FLEML_DEPLOYMENT or deployments/<chain_id>.json).
"""

import dataclasses
import os

from brownie import Contract, accounts, chain, network

from fleml_node.chain.contract import PROTOCOL_VERSION, Policy, SubmissionMode
from fleml_node.chain.deployment import CONTRACT_NAME, default_record_path, load_record


def deployer_account():
    """The operator's account: a key from the environment, a keystore id, or accounts[0]."""
    if os.environ.get("FLEML_DEPLOYER_KEY"):
        return accounts.add(os.environ["FLEML_DEPLOYER_KEY"])
    if os.environ.get("FLEML_DEPLOYER_ACCOUNT"):
        return accounts.load(os.environ["FLEML_DEPLOYER_ACCOUNT"])
    if network.show_active() in ("development", "anvil") or chain.id == 31337:
        return accounts[0]
    raise SystemExit("set FLEML_DEPLOYER_KEY or FLEML_DEPLOYER_ACCOUNT to deploy on "
                     f"network {network.show_active()!r}")


def consortium_contract():
    """The recorded consortium, refused unless it speaks this code's protocol version."""
    record = load_record(os.environ.get("FLEML_DEPLOYMENT") or default_record_path(chain.id))
    contract = Contract.from_abi(CONTRACT_NAME, record.address, record.abi)
    try:
        found = contract.version()
    except (ValueError, AttributeError) as exc:  # a revert or no return data: no version()
        raise SystemExit(f"the contract at {record.address} has no version(): a protocol "
                         f"older than {PROTOCOL_VERSION}? ({exc})") from None
    if found != PROTOCOL_VERSION:
        raise SystemExit(f"the contract at {record.address} speaks protocol {found}, these "
                         f"scripts protocol {PROTOCOL_VERSION}")
    return contract


def admit_members(consortium, operator, spec: str) -> None:
    """Admit members listed as 'address:label,address:label'."""
    for item in filter(None, (part.strip() for part in spec.split(","))):
        address, _, label = item.partition(":")
        if not label:
            raise SystemExit(f"member {address!r} needs a label: write address:label")
        consortium.admitMember(address, label, {"from": operator})


def parse_policy(spec: str, base: Policy | None = None) -> Policy:
    """A policy from 'field=value,field=value' over `base` (default: Policy()'s defaults)."""
    fields = {f.name for f in dataclasses.fields(Policy)}
    values = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in fields or not value.strip().isdigit():
            raise SystemExit(f"bad policy item {item!r}: write field=integer with a field of "
                             f"{', '.join(sorted(fields))}")
        values[name.strip()] = int(value)
    if "mode" in values:
        values["mode"] = SubmissionMode(values["mode"])
    return dataclasses.replace(base or Policy(), **values)


def schedule_policy(spec):
    """Schedule a policy change over the policy in force (it waits rounds and a day)."""
    c = consortium_contract()
    policy = parse_policy(str(spec), Policy.from_tuple(c.policy()))
    c.schedulePolicy(policy.as_tuple(), {"from": deployer_account()})


def abandon(round_id):
    consortium_contract().abandonRound(int(round_id), {"from": deployer_account()})


def set_validation_set(validation_hash, cid=""):
    """Set the validation set: at once before round 1, later under the policy delay."""
    consortium_contract().setValidationSet(str(validation_hash), str(cid),
                                           {"from": deployer_account()})


def reject(round_id):
    consortium_contract().rejectRound(int(round_id), {"from": deployer_account()})


def set_aggregator(address):
    consortium_contract().setAggregator(address, {"from": deployer_account()})


def admit(address, label):
    admit_members(consortium_contract(), deployer_account(), f"{address}:{label}")


def remove(address, force=""):
    """Remove a member, unless that leaves fewer active members than an absolute minimum.

    A round opens only when the active members can reach the policy's minimum; below an
    absolute one no round opens, so no scheduled change can take effect either (it waits for
    rounds), and only admitting members (a lost key's replacement) restarts the consortium.
    Lower the minimum first, or pass `force` to remove anyway.
    """
    c = consortium_contract()
    left = c.activeMembers() - 1
    policies = [("in force", Policy.from_tuple(c.policy()))]
    pending, from_round, _ = c.pendingPolicy()
    if from_round:
        policies.append((f"scheduled from round {from_round}", Policy.from_tuple(pending)))
    for when, policy in policies:
        if policy.min_submissions > left and str(force).lower() not in ("force", "true", "1"):
            fix = (f"Schedule a lower minimum first (brownie run admin schedule_policy "
                   f"min_submissions={left}) or admit a replacement" if left
                   else "Admit a replacement first")
            raise SystemExit(
                f"removing {address} leaves {left} active member(s), below the minimum of "
                f"{policy.min_submissions} submissions {when}: no round could open, and no "
                f"policy change could take effect. {fix}; 'remove {address} force' removes "
                f"anyway")
    c.removeMember(address, {"from": deployer_account()})


def transfer_operator(address):
    consortium_contract().transferOperator(address, {"from": deployer_account()})


def accept_operator():
    consortium_contract().acceptOperator({"from": deployer_account()})


def show():
    c = consortium_contract()
    print(f"consortium {c.address} on chain {chain.id}")
    print(f"  operator   {c.operator()}")
    print(f"  aggregator {c.aggregator()}")
    print(f"  members    {c.activeMembers()} active of {c.memberSlots()} admitted")
    for index in range(c.memberSlots()):
        address = c.memberAt(index)
        known, active, _, label = c.memberInfo(address)
        print(f"  [{index}] {address} {label!r} {'active' if active else 'removed'}")
    print(f"  round      {c.currentRound()} (last finalized {c.lastFinalizedRound()}, last "
          f"accepted {c.lastAcceptedRound()}), protocol {c.version()}")
    digest, cid = c.validationSet()
    print(f"  validation {digest} {cid or '(none)'}")
    digest, cid, from_round, _ = c.pendingValidationSet()
    if from_round:
        print(f"  scheduled  validation {digest} {cid or '(none)'} from round {from_round}")
    print(f"  policy     {Policy.from_tuple(c.policy())}")
    pending, from_round, from_time = c.pendingPolicy()
    if from_round:
        print(f"  scheduled  {Policy.from_tuple(pending)} from round {from_round}, "
              f"time {from_time}")
