"""Fixtures for the contract tests: a fresh FlemlConsortium per module, isolated per test.

The tests run on brownie's `development` network (anvil, launched by brownie) or, with
``--network hardhat-fleml``, on Hardhat Network (tools/hardhat), which this file starts before
brownie connects, so that brownie attaches to it: brownie's own Hardhat launcher would write a
``hardhat.config.js`` into the project root and run ``npx hardhat`` there (see
tools/hardhat/not-running.sh, the network's command).
"""

from pathlib import Path

import pytest
from brownie import web3

HARDHAT_NETWORK = "hardhat-fleml"
_hardhat = None  # the LocalHardhat this session started, if any


def pytest_configure(config):
    """With ``--network hardhat-fleml``, start Hardhat on the network's port unless something
    already listens there (then brownie attaches to that)."""
    global _hardhat
    network = config.getoption("network", None)  # brownie's option takes one value, a list
    if network != [HARDHAT_NETWORK] or _hardhat is not None:
        return
    from brownie._config import CONFIG

    from fleml_node.devnet.anvil import port_in_use
    from fleml_node.devnet.hardhat import LocalHardhat

    port = int(CONFIG.networks[HARDHAT_NETWORK].get("cmd_settings", {}).get("port", 8555))
    if port_in_use(port):
        return
    log = Path(config.rootpath) / ".fleml" / "hardhat-contract-tests.log"
    log.parent.mkdir(exist_ok=True)
    log.write_bytes(b"")
    _hardhat = LocalHardhat(accounts=10, log_file=log, port=port, zero_base_fee=True).start()


def pytest_unconfigure(config):
    global _hardhat
    if _hardhat is not None:
        _hardhat.stop()
        _hardhat = None

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
MODEL_HASH = "0x" + "11" * 32
UPDATE_HASH = "0x" + "22" * 32
RESULT_HASH = "0x" + "33" * 32
REPORT_HASH = "0x" + "44" * 32
ROUND_SECONDS = 600
GRACE_SECONDS = 60
REVEAL_SECONDS = 300
WEEK = 7 * 24 * 3600
PLAIN, COMMIT_REVEAL = 0, 1


def make_policy(min_round=1, max_round=WEEK, min_submissions=1, min_bps=0, mode=PLAIN,
                reveal=0, grace=GRACE_SECONDS, attestations=0, window=0):
    """A `Policy` tuple in the struct's field order."""
    return (min_round, max_round, min_submissions, min_bps, mode, reveal, grace, attestations,
            window)


DEFAULT_POLICY = make_policy()
CR_POLICY = make_policy(mode=COMMIT_REVEAL, reveal=REVEAL_SECONDS)


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    """Every test starts from the same chain snapshot."""


@pytest.fixture(scope="module")
def operator(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def aggregator_account(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def members(accounts):
    """Four member accounts."""
    return accounts[2:6]


@pytest.fixture(scope="module")
def outsider(accounts):
    return accounts[9]


@pytest.fixture(scope="module")
def consortium(FlemlConsortium, operator, aggregator_account, members):
    """A consortium with an aggregator, four members and the default policy (plain, minimum 1
    submission, rounds of 1 s to a week, 60 s grace)."""
    contract = FlemlConsortium.deploy({"from": operator})
    contract.setAggregator(aggregator_account, {"from": operator})
    for i, member in enumerate(members):
        contract.admitMember(member, f"member-{i}", {"from": operator})
    contract.setInitialPolicy(DEFAULT_POLICY, {"from": operator})
    return contract


@pytest.fixture
def open_round(consortium, aggregator_account, chain):
    """Open round 1 with quorum 2; returns its id."""
    deadline = now(chain) + ROUND_SECONDS
    consortium.openRound(MODEL_HASH, CID, deadline, 2, {"from": aggregator_account})
    return 1


@pytest.fixture
def closed_round(consortium, open_round, aggregator_account, members):
    """Round 1 with two submissions, closed at quorum."""
    for member in members[:2]:
        consortium.submitUpdate(open_round, UPDATE_HASH, CID, {"from": member})
    consortium.closeRound(open_round, {"from": aggregator_account})
    return open_round


def pass_time(chain, moment):
    """Mine a block later than `moment` (anvil's clock, not brownie's, is what counts)."""
    chain.sleep(max(1, moment - chain[-1].timestamp + 5))
    chain.mine()
    assert chain[-1].timestamp > moment


def next_block_at(moment):
    """Make the next block (the next transaction's) carry exactly `moment` (unix seconds)."""
    web3.provider.make_request("evm_setNextBlockTimestamp", [moment])


def now(chain) -> int:
    """The time the next block will at least carry.

    brownie's chain.time() and anvil's clock can drift apart after many snapshot reverts in
    one session, so deadlines are based on the later of the two.
    """
    return max(chain.time(), chain[-1].timestamp)


def error(name: str, *args) -> str:
    """The revert message brownie decodes from custom error `name(args)`."""
    def show(arg):
        if hasattr(arg, "address"):
            return arg.address.lower()
        if isinstance(arg, str) and arg.startswith("0x") and len(arg) == 66:
            return str(bytes.fromhex(arg[2:]))  # brownie shows bytes32 arguments as bytes
        return str(arg)

    shown = [show(a) for a in args]
    return f"{name}: {', '.join(shown)}"
