"""A fresh federation per test, driven through real `fleml-node` processes.

Each test gets its own anvil on a free loopback port with FlemlConsortium deployed from
brownie's artifact (operator key 0, aggregator key 1, members keys 2..5 admitted), the session's
IPFS daemon (`ipfs_api` in tests/conftest.py), and a :class:`Federation` that starts node
processes with their own key (``FLEML_PRIVATE_KEY``), state folder and log file, polls the
chain for what the test waits for, and terminates, then kills, every process it started.
Every failure message ends with the tails of all the process logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from fleml_node.chain.contract import Policy, RoundStatus, bind_consortium, connect
from fleml_node.chain.deployment import load_record
from fleml_node.chain.events import round_events
from fleml_node.devnet.anvil import LocalAnvil, test_keys
from fleml_node.devnet.consortium import deploy_local_consortium
from fleml_node.devnet.executables import ExecutableNotFound, find_anvil
from fleml_node.retry import is_transient

WRAPPER = Path(__file__).with_name("node_wrapper.py")
NUM_MEMBERS = 4
AGGREGATOR_KEY = 1
FIRST_MEMBER_KEY = 2
# A small task, identical for every node: 4 members with 120 MNIST samples each.
TASK_ARGS = ["--dataset", "mnist", "--num-clients", str(NUM_MEMBERS),
             "--max-client-samples", "120", "--validation-size", "200", "--seed", "3",
             "--alpha", "1.0"]
POLL = ["--poll-interval", "0.2"]
READY_LINE = "waiting for rounds"  # what `fleml-node client` prints once bound and loaded
TAIL_LINES = 25


def small_task(members: int) -> list[str]:
    """The task options of a small federation: 60 MNIST samples per member, 100 to validate."""
    return ["--dataset", "mnist", "--num-clients", str(members), "--max-client-samples", "60",
            "--validation-size", "100", "--seed", "3", "--alpha", "1.0"]


def _fleml_node() -> list[str]:
    """The installed `fleml-node` entry point (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("fleml-node")
    found = str(beside) if beside.exists() else shutil.which("fleml-node")
    return [found] if found else [sys.executable, str(WRAPPER), "none"]


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


@dataclass
class Node:
    """One node process and its log; `expected_rc` is what it may exit with."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    expected_rc: int = 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would; the process may not exit cleanly after this."""
        self.expected_rc = -9
        self.process.kill()
        self.process.wait(timeout=10)


class Federation:
    """The running chain and IPFS, and the node processes started on them."""

    def __init__(self, tmp_path: Path, url: str, record_path: Path, keys: list[str],
                 ipfs_api: str, anvil_log: Path) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.record_path = record_path
        self.keys = keys
        self.ipfs_api = ipfs_api
        self.anvil_log = anvil_log
        self.nodes: list[Node] = []
        # seconds each IPFS call may take: what a member's missing object costs a round
        self.ipfs_timeout = 30
        self.task_args = TASK_ARGS
        self.reader = bind_consortium(connect(url), load_record(record_path))
        self.node_cmd = _fleml_node()

    # -- accounts and chain reads --------------------------------------------------------
    def address(self, key_index: int) -> str:
        return Account.from_key(self.keys[key_index]).address

    def member(self, i: int) -> str:
        return self.address(FIRST_MEMBER_KEY + i)

    def status(self, round_id: int) -> RoundStatus:
        return self.reader.get_round(round_id).status

    def submitters(self, round_id: int) -> set[str]:
        """Members with an `UpdateSubmitted` event in the round."""
        return {e.args["member"]
                for e in round_events(self.reader, round_id).get("UpdateSubmitted", [])}

    def round_event(self, round_id: int, name: str):
        """The round's latest event of this name (e.g. its `RoundFinalized`)."""
        return round_events(self.reader, round_id)[name][-1]

    # -- processes -----------------------------------------------------------------------
    def _env(self, key_index: int | None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("FLEML_PRIVATE_KEY", None)  # chain and IPFS come as options, which win
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
        if key_index is not None:
            env["FLEML_PRIVATE_KEY"] = self.keys[key_index]
        return env

    def _connection(self, key_index: int | None = None) -> list[str]:
        return ["--rpc", self.rpc_for(key_index), "--deployment", str(self.record_path),
                "--ipfs-api", self.ipfs_api, "--ipfs-timeout", str(self.ipfs_timeout)]

    def launcher(self, key_index: int) -> list[str]:
        """What runs the node of this key: nothing here; tests/hosts puts it in a namespace."""
        return []

    def rpc_for(self, key_index: int | None) -> str:
        """The chain node the node of this key talks to: the one chain URL here; a PoA
        federation spreads its members over the network's nodes."""
        return self.url

    def start(self, name: str, command: str, key_index: int, args: list[str],
              fault: str | None = None, expected_rc: int = 0) -> Node:
        prefix = [sys.executable, str(WRAPPER), fault] if fault else self.node_cmd
        log = self.tmp_path / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        cmd = [*self.launcher(key_index), *prefix, "-v", command, *self._connection(key_index),
               *self.task_args, *POLL, *args]
        with open(log, "ab") as out:
            out.write(f"{_stamp()} $ {' '.join(cmd)}\n".encode())
            out.flush()
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                       env=self._env(key_index), cwd=self.tmp_path)
        node = Node(name, process, log, expected_rc)
        self.nodes.append(node)
        return node

    def client(self, i: int, *args: str, fault: str | None = None, name: str | None = None,
               expected_rc: int = 0) -> Node:
        """Member i (key 2+i, data share i) with its own state folder, kept across restarts."""
        return self.start(name or f"client{i}", "client", FIRST_MEMBER_KEY + i,
                          ["--client-index", str(i),
                           "--state-dir", str(self.tmp_path / "state" / f"client{i}"), *args],
                          fault=fault, expected_rc=expected_rc)

    def aggregator(self, *args: str, fault: str | None = None, name: str = "aggregator",
                   expected_rc: int = 0) -> Node:
        return self.start(name, "aggregator", AGGREGATOR_KEY,
                          list(args),
                          fault=fault, expected_rc=expected_rc)

    def audit(self, round_id: int | None = None, timeout: float = 180,
              extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """`fleml-node audit [--round r]` as a process (no key); output in `.stdout`.

        Without a round it audits every round, one process for all (each start imports torch).
        """
        only = ["--round", str(round_id)] if round_id is not None else []
        cmd = [*self.node_cmd, "audit", *self._connection(), *only, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=self._env(None), cwd=self.tmp_path)
        name = f"audit-round{round_id}" if round_id is not None else "audit"
        with open(self.tmp_path / "logs" / f"{name}.log", "a") as out:
            out.write(f"{_stamp()} $ {' '.join(cmd)}\nrc {done.returncode}\n"
                      f"{done.stdout}{done.stderr}")
        return done

    # -- waiting -------------------------------------------------------------------------
    def report(self, headline: str) -> str:
        """`headline` followed by every process's state and log tail."""
        parts = [headline]
        for node in self.nodes:
            rc = node.process.poll()
            state = "running" if rc is None else f"exited {rc}"
            parts.append(f"--- {node.name} ({state}, expected {node.expected_rc}) "
                         f"{node.log}:\n{node.tail()}")
        if self.anvil_log.exists():
            anvil = self.anvil_log.read_text(errors="replace").splitlines()[-5:]
            parts.append("--- anvil:\n" + "\n".join(anvil))
        return "\n".join(parts)

    def check_processes(self) -> None:
        """Fail at once if a process exited other than as expected."""
        for node in self.nodes:
            rc = node.process.poll()
            if rc is not None and rc != node.expected_rc:
                raise AssertionError(self.report(
                    f"{node.name} exited with {rc} (expected {node.expected_rc})"))

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float = 120,
                   interval: float = 0.25) -> None:
        """Poll `predicate` until it holds. A transient chain error while polling (a PoA node
        briefly without the state of its newest block, say) counts as "not yet", as it does
        for the nodes (fleml_node.retry); the last one is reported on timeout."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                if predicate():
                    return
            except Exception as exc:  # noqa: BLE001 - sorted by the nodes' own rule
                if not is_transient(exc):
                    raise
                last_error = f" (last transient error: {exc})"
            self.check_processes()
            if time.monotonic() > deadline:
                raise AssertionError(self.report(f"timed out after {timeout:.0f} s "
                                                 f"waiting for {what}{last_error}"))
            time.sleep(interval)

    def wait_ready(self, *nodes: Node, timeout: float = 120) -> None:
        """Until every client has bound its key, chain and IPFS and loaded its data."""
        for node in nodes:
            self.wait_until(f"{node.name} to be ready",
                            lambda node=node: READY_LINE in node.log_text(), timeout)

    def wait_log(self, node: Node, text: str, timeout: float = 120) -> None:
        self.wait_until(f"{text!r} in {node.name}'s log", lambda: text in node.log_text(),
                        timeout)

    def wait_status(self, round_id: int, status: RoundStatus, timeout: float = 120) -> None:
        self.wait_until(f"round {round_id} to be {status.name}",
                        lambda: self.reader.current_round() >= round_id
                        and self.status(round_id) >= status, timeout)

    def wait_exit(self, node: Node, timeout: float = 120) -> None:
        """Until `node` exits, which must be with its expected code."""
        self.wait_until(f"{node.name} to exit", lambda: node.process.poll() is not None,
                        timeout)
        self.check_processes()

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()


@pytest.fixture
def federation(tmp_path: Path, ipfs_api: str) -> Iterator[Federation]:
    """Key 0 operator, key 1 aggregator, keys 2..5 the members 0..3; nodes stopped after."""
    try:
        find_anvil()
    except ExecutableNotFound as err:
        pytest.skip(f"anvil is not installed (./fleml setup installs it): {err}")
    anvil_log = tmp_path / "anvil.log"
    with LocalAnvil(accounts=8, log_file=anvil_log) as anvil:
        keys = test_keys(8)
        # key 0 operator, key 1 (AGGREGATOR_KEY) aggregator, keys 2.. (FIRST_MEMBER_KEY) members
        record = deploy_local_consortium(connect(anvil.url), keys, NUM_MEMBERS,
                                         tmp_path / "deployment.json")
        fed = Federation(tmp_path, anvil.url, record.path, keys, ipfs_api, anvil_log)
        try:
            yield fed
        finally:
            fed.stop_all()


@pytest.fixture
def make_federation(tmp_path: Path, ipfs_api: str) -> Iterator[Callable[..., Federation]]:
    """``make_federation(members, policy)``: a federation of any size under a given policy.

    Its nodes train on 60 MNIST samples each; chains and nodes are stopped after the test.
    """
    feds: list[Federation] = []
    chains: list[LocalAnvil] = []

    def make(members: int, policy: Policy | None = None) -> Federation:
        anvil_log = tmp_path / f"anvil{len(chains)}.log"
        anvil = LocalAnvil(accounts=members + 2, log_file=anvil_log)
        chains.append(anvil.start())
        keys = test_keys(members + 2)
        record = deploy_local_consortium(connect(anvil.url), keys, members,
                                         tmp_path / f"deployment{len(chains)}.json",
                                         policy=policy)
        fed = Federation(tmp_path, anvil.url, record.path, keys, ipfs_api, anvil_log)
        fed.task_args = small_task(members)
        feds.append(fed)
        return fed

    yield make
    for fed in feds:
        fed.stop_all()
    for anvil in chains:
        anvil.stop()
