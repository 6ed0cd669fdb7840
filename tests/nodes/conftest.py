"""A small real federation: anvil, the IPFS daemon, a deployed consortium, MNIST shares."""

from dataclasses import dataclass

import pytest
from eth_account import Account

from fleml_node.chain.contract import Consortium, connect
from fleml_node.devnet.anvil import LocalAnvil, test_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.learning import TrainConfig
from fleml_node.storage import IpfsStore
from fleml_node.task import TaskConfig

NUM_MEMBERS = 4
TASK = TaskConfig(dataset="mnist", seed=3, num_clients=NUM_MEMBERS, alpha=1.0,
                  validation_size=200, max_client_samples=120,
                  train=TrainConfig(epochs=1, batch_size=32, lr=0.05))


@dataclass
class Federation:
    url: str
    record_path: object
    keys: list
    ipfs_api: str

    def bind(self, key_index):
        w3 = connect(self.url)
        from fleml_node.chain.deployment import load_record
        account = Account.from_key(self.keys[key_index]) if key_index is not None else None
        return Consortium(w3, load_record(self.record_path), account)

    def store(self):
        return IpfsStore(self.ipfs_api, timeout=20, retries=1)


@pytest.fixture
def federation(tmp_path, ipfs_api):
    """Key 0 operator, key 1 aggregator, keys 2..5 members."""
    with LocalAnvil(accounts=8, log_file=tmp_path / "anvil.log") as anvil:
        keys = test_keys(8)
        record = deploy_local_consortium(connect(anvil.url), keys, NUM_MEMBERS,
                                         tmp_path / "deployment.json")
        yield Federation(anvil.url, record.path, keys, ipfs_api)
