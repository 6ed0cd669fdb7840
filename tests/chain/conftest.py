"""A real anvil chain with a deployed consortium, driven through fleml_node.chain (web3.py)."""

import time

import pytest
from eth_account import Account

from fleml_node.chain.contract import Consortium, connect
from fleml_node.devnet.anvil import LocalAnvil, test_keys
from fleml_node.devnet.consortium import deploy_local_consortium


@pytest.fixture(scope="module")
def anvil(tmp_path_factory):
    with LocalAnvil(accounts=8, log_file=tmp_path_factory.mktemp("anvil") / "anvil.log") as node:
        yield node


@pytest.fixture(scope="module")
def keys():
    return test_keys(8)


@pytest.fixture
def deployed(anvil, keys, tmp_path):
    """A fresh consortium: key 0 operator, key 1 aggregator, keys 2..5 members."""
    w3 = connect(anvil.url)
    return w3, deploy_local_consortium(w3, keys, 4, tmp_path / "deployment.json")


@pytest.fixture
def as_account(deployed, keys):
    w3, record = deployed

    def bind(index):
        return Consortium(w3, record, Account.from_key(keys[index]))

    return bind


def future(seconds=600):
    return int(time.time()) + seconds
