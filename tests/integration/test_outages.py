"""Nodes wait out outages of their own IPFS daemon and chain RPC, however long; none exits.

Four `fleml-node client` processes and an aggregator run two rounds. Once round 1 is open,
either the IPFS daemon is stopped for 90 s and started again (it comes back on the same API
port), or the chain process is frozen with SIGSTOP for 90 s and thawed with SIGCONT (the chain
itself survives, its RPC does not answer meanwhile). Afterwards both rounds must finalize with
every member's update, and every process must exit 0 on its own.

These run for several minutes each: `./fleml test -m soak` (CI runs the rest).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleml_node.chain.contract import RoundStatus, connect
from fleml_node.devnet.anvil import LocalAnvil
from fleml_node.devnet.anvil import test_keys as anvil_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.devnet.ipfs import LocalIpfsDaemon

from .conftest import NUM_MEMBERS, Federation

pytestmark = pytest.mark.soak

OUTAGE_SECONDS = 90


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[tuple[Federation, LocalIpfsDaemon, LocalAnvil]]:
    """A federation with its own chain and its own IPFS daemon, both ours to stop."""
    daemon = LocalIpfsDaemon(tmp_path / "ipfs")
    daemon.start()
    anvil = LocalAnvil(accounts=8, log_file=tmp_path / "anvil.log").start()
    try:
        keys = anvil_keys(8)
        record = deploy_local_consortium(connect(anvil.url), keys, NUM_MEMBERS,
                                         tmp_path / "deployment.json")
        fed = Federation(tmp_path, anvil.url, record.path, keys, daemon.api_addr,
                         tmp_path / "anvil.log")
        try:
            yield fed, daemon, anvil
        finally:
            fed.stop_all()
    finally:
        if anvil.pid:
            os.kill(anvil.pid, signal.SIGCONT)
        anvil.stop()
        daemon.stop()


def run_through(fed: Federation, outage: Callable[[], None]) -> None:
    clients = [fed.client(i, "--max-rounds", "2") for i in range(NUM_MEMBERS)]
    aggregator = fed.aggregator("--rounds", "2", "--round-seconds", "400", "--no-evaluate")
    fed.wait_status(1, RoundStatus.OPEN, timeout=120)
    started = time.monotonic()
    outage()
    fed.check_processes()  # nobody gave up during the outage
    assert time.monotonic() - started >= OUTAGE_SECONDS
    fed.wait_exit(aggregator, timeout=400)
    for client in clients:
        fed.wait_exit(client, timeout=120)
    everyone = {fed.member(i) for i in range(NUM_MEMBERS)}
    for r in (1, 2):
        assert fed.status(r) is RoundStatus.FINALIZED, fed.report(f"round {r}")
        assert fed.submitters(r) == everyone, fed.report(f"round {r} lacks submissions")
    logs = "\n".join(node.log_text() for node in fed.nodes)
    assert "retrying until it works" in logs and "works again" in logs, fed.report("no retry")


def test_nodes_survive_their_ipfs_daemon_down_for_90_seconds(isolated):
    fed, daemon, _ = isolated
    address = daemon.api_addr

    def outage() -> None:
        daemon.stop()
        time.sleep(OUTAGE_SECONDS)
        assert daemon.start() == address  # same API port: running nodes find it again

    run_through(fed, outage)


def test_nodes_survive_the_chain_rpc_frozen_for_90_seconds(isolated):
    fed, _, anvil = isolated

    def outage() -> None:
        os.kill(anvil.pid, signal.SIGSTOP)
        try:
            time.sleep(OUTAGE_SECONDS)
        finally:
            os.kill(anvil.pid, signal.SIGCONT)

    run_through(fed, outage)
