"""Failures in two kinds: outages are waited out, everything a retry cannot mend is not retried."""

import logging

import pytest
import requests
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from fleml_node.chain.contract import ChainError, ContractReverted
from fleml_node.retry import Backoff, is_outage, is_permanent, is_transient
from fleml_node.storage import (
    HashMismatch,
    IpfsRequestError,
    IpfsTimeout,
    IpfsUnavailable,
    NonFiniteValues,
    SpecMismatch,
)


def _caused(exc, cause):
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize("exc", [
    IpfsUnavailable("connection refused"),
    IpfsTimeout("timed out"),
    IpfsRequestError("bad gateway", 502),
    IpfsRequestError("no status", 0),
    ChainError("cannot reach the chain at http://127.0.0.1:1"),
    ChainError("openRound transaction 0xab was not mined"),
    requests.ConnectionError("refused"),
    TimeExhausted("receipt"),
    ConnectionResetError("reset"),
])
def test_outages_of_our_own_services_are_transient(exc):
    assert is_transient(exc) and not is_permanent(exc)


@pytest.mark.parametrize("exc", [
    ContractReverted("submitUpdate reverted: DeadlinePassed(roundId=1, deadline=2)"),
    ContractLogicError("execution reverted"),
    NonFiniteValues("tensor 'w' has 1 NaN/Inf values"),
    SpecMismatch("payload is for round 2, expected round 3"),
    HashMismatch(b"\x01" * 32, b"\x02" * 32, "bafy..."),
    IpfsRequestError("invalid path", 400),
])
def test_what_a_retry_cannot_mend_is_permanent(exc):
    assert not is_transient(exc) and is_permanent(exc)


def test_bugs_are_neither_so_they_propagate():
    assert not is_transient(KeyError("x")) and not is_permanent(KeyError("x"))


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(base=0.5, cap=4.0)
    delays = [backoff.failed("step", IpfsTimeout("t")) for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    backoff.succeeded("step")
    assert backoff.failed("step", IpfsTimeout("t")) == 0.5


def test_backoff_logs_an_outage_once_then_every_tenth_attempt(caplog):
    backoff = Backoff(base=0.1, cap=0.1)
    with caplog.at_level(logging.INFO, logger="fleml_node.retry"):
        for _ in range(25):
            backoff.failed("client poll", IpfsUnavailable("down"))
        backoff.succeeded("client poll")
    lines = [r.getMessage() for r in caplog.records]
    assert sum("retrying until it works" in line for line in lines) == 1
    assert sum("still failing" in line for line in lines) == 2
    assert "works again" in lines[-1]


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


@pytest.mark.parametrize("exc, outage", [
    (requests.ConnectionError("refused"), True),
    (requests.ReadTimeout("read timed out"), True),
    (IpfsUnavailable("connection refused"), True),
    (IpfsTimeout("timed out"), True),
    (IpfsRequestError("bad gateway", 502), True),
    (Web3RPCError("State trie does not contain state root"), True),
    (_caused(ChainError("cannot reach the chain at http://127.0.0.1:1"),
             requests.ConnectionError("refused")), True),
    (ChainError("no contract at 0x11 on chain 31337"), False),
    (ChainError("the contract at 0x11 speaks protocol 1, this node protocol 2"), False),
    (_caused(ChainError("the contract has no version()"), ContractLogicError("reverted")),
     False),
    (IpfsRequestError("invalid path", 400), False),
    (KeyError("x"), False),
])
def test_an_outage_is_our_own_service_not_answering_not_a_mistake(exc, outage):
    """What a node's start-up waits out (fleml_node.cli._start_node) and what stops it."""
    assert is_outage(exc) is outage
