"""A real 2-round federation for the explorer's tests, built once per session.

Five members run real `fleml-node client` processes on anvil and the session's IPFS daemon:
member 0 tampers with everything it puts on IPFS (rejected as ``tampered``), member 1 sends
large Gaussian noise (flagged: Multi-Krum averages the 3 most central of the 4 screened
updates), members 2-4 are honest. A sixth account is admitted with a label full of HTML and
never submits: every page must show it escaped. The aggregator finalizes two rounds with
``multikrum f=0 m=3``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from fleml_node.chain.contract import Consortium, RoundStatus, connect
from fleml_node.chain.deployment import load_record
from fleml_node.devnet.anvil import LocalAnvil, test_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.devnet.executables import ExecutableNotFound, find_anvil
from fleml_node.storage import IpfsStore
from tests.integration.conftest import FIRST_MEMBER_KEY, Federation, small_task

MEMBERS = 5
TAMPERER, NOISY = 0, 1
ROUNDS = 2
EVIL_LABEL = '<script>alert("x")</script><b>bold</b>&amp;'
EXPLORER_SECTION = {"name": "TestScan", "address_url": "https://scan.example/address/{address}",
                    "tx_url": "https://scan.example/tx/{tx}"}


@dataclass
class ExplorerFederation:
    fed: Federation
    evil: str  # the address admitted with EVIL_LABEL

    @property
    def tamperer(self) -> str:
        return self.fed.member(TAMPERER)

    @property
    def noisy(self) -> str:
        return self.fed.member(NOISY)


@pytest.fixture(scope="session")
def explorer_federation(tmp_path_factory: pytest.TempPathFactory,
                        ipfs_api: str) -> Iterator[ExplorerFederation]:
    try:
        find_anvil()
    except ExecutableNotFound as err:
        pytest.skip(f"anvil is not installed (./fleml setup installs it): {err}")
    tmp = tmp_path_factory.mktemp("explorer-fed")
    anvil_log = tmp / "anvil.log"
    keys = test_keys(MEMBERS + 3)
    with LocalAnvil(accounts=MEMBERS + 3, log_file=anvil_log) as anvil:
        w3 = connect(anvil.url)
        record = deploy_local_consortium(w3, keys, MEMBERS, tmp / "deployment.json")
        _add_explorer_section(record.path)
        operator = Consortium(w3, load_record(record.path), Account.from_key(keys[0]))
        evil = Account.from_key(keys[MEMBERS + 2]).address
        operator.admit_member(evil, EVIL_LABEL)
        fed = Federation(tmp, anvil.url, record.path, keys, ipfs_api, anvil_log)
        fed.task_args = small_task(MEMBERS)
        fed.ipfs_timeout = 10
        try:
            clients = [fed.client(TAMPERER, "--max-rounds", str(ROUNDS), fault="tamper-put"),
                       fed.client(NOISY, "--max-rounds", str(ROUNDS), "--attack",
                                  "gaussian_noise", "--attack-param", "scale=5",
                                  "--attack-param", "replace=true")]
            clients += [fed.client(i, "--max-rounds", str(ROUNDS))
                        for i in range(2, MEMBERS)]
            fed.wait_ready(*clients, timeout=240)
            aggregator = fed.aggregator("--rounds", str(ROUNDS), "--round-seconds", "240",
                                        "--quorum", str(MEMBERS), "--defense", "multikrum",
                                        "--defense-param", "f=0",
                                        "--defense-param", "m=3", "--no-evaluate")
            fed.wait_exit(aggregator, timeout=600)
            for r in range(1, ROUNDS + 1):
                assert fed.status(r) is RoundStatus.FINALIZED, fed.report(f"round {r}")
            yield ExplorerFederation(fed, evil)
        finally:
            fed.stop_all()


def _add_explorer_section(path: Path) -> None:
    import json

    record = json.loads(path.read_text())
    record["explorer"] = EXPLORER_SECTION
    path.write_text(json.dumps(record, indent=2))


@pytest.fixture(scope="session")
def explorer(explorer_federation: ExplorerFederation):
    from fleml_node.explorer import Explorer

    fed = explorer_federation.fed
    return Explorer(Consortium(connect(fed.url), load_record(fed.record_path)),
                    IpfsStore(fed.ipfs_api, timeout=20))


@pytest.fixture(scope="session")
def client(explorer):
    from fleml_node.explorer.web import create_app

    return create_app(explorer).test_client()


@pytest.fixture(scope="session")
def served(explorer) -> Iterator[str]:
    """The explorer served over HTTP on a loopback port; yields its base URL."""
    from werkzeug.serving import make_server

    from fleml_node.explorer.web import create_app

    server = make_server("127.0.0.1", 0, create_app(explorer), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


__all__ = ["FIRST_MEMBER_KEY"]


@pytest.fixture(scope="module")
def anvil(tmp_path_factory):
    """A plain anvil chain per test module (the cache and verification tests)."""
    try:
        find_anvil()
    except ExecutableNotFound as err:
        pytest.skip(f"anvil is not installed: {err}")
    with LocalAnvil(accounts=8, log_file=tmp_path_factory.mktemp("anvil") / "a.log") as node:
        yield node
