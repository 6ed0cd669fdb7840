"""`fleml-node devnet up|status|down` with a real anvil chain and a real js-ipfs daemon."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from fleml_node.chain.contract import connect
from fleml_node.chain.deployment import load_record
from fleml_node.devnet.anvil import free_port
from fleml_node.storage import IpfsStore

FLEML_NODE = Path(sys.executable).with_name("fleml-node")


def devnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FLEML_NODE), "devnet", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def exports(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", stdout, re.MULTILINE))


def test_up_status_down_up_keeps_ports_chain_and_deployment(tmp_path: Path) -> None:
    state = tmp_path / "devnet"
    port = free_port()
    first = devnet("up", "--dir", str(state), "--rpc-port", str(port), "--members", "2")
    assert first.returncode == 0, first.stderr
    env = exports(first.stdout)
    assert env["FLEML_RPC"] == f"http://127.0.0.1:{port}"
    assert env["FLEML_DEPLOYMENT"] == str(state / "deployment.json")
    for role in ("operator", "aggregator", "member-0", "member-1"):
        line = rf"^#\s+{role}\s+0x[0-9a-fA-F]{{40}}\s+FLEML_PRIVATE_KEY=0x[0-9a-f]{{64}}$"
        assert re.search(line, first.stdout, re.MULTILINE), first.stdout
    # every stdout line is shell: an export or a comment, so `eval "$(... up)"` works
    assert all(line.startswith(("export ", "#")) for line in first.stdout.splitlines())
    assert (state / "env").read_text().count("export ") == 3
    record = load_record(Path(env["FLEML_DEPLOYMENT"]))
    assert connect(env["FLEML_RPC"]).eth.get_code(record.address)
    cid = IpfsStore(env["FLEML_IPFS_API"], timeout=10, retries=0).put(b"devnet")

    status = devnet("status", "--dir", str(state))
    assert status.returncode == 0 and "# chain: running" in status.stdout, status.stdout
    assert exports(status.stdout) == env
    again = devnet("up", "--dir", str(state))  # idempotent: nothing restarted or redeployed
    assert again.returncode == 0 and exports(again.stdout) == env, again.stderr
    assert load_record(state / "deployment.json").address == record.address

    down = devnet("down", "--dir", str(state))
    assert down.returncode == 0 and "anvil pid" in down.stdout and "js-ipfs pid" in down.stdout
    stopped = devnet("status", "--dir", str(state))
    assert stopped.returncode == 1 and "# chain: stopped" in stopped.stdout
    assert "# ipfs:  stopped" in stopped.stdout

    # Back up: same ports, and the chain state (so the deployment) and IPFS blocks are kept.
    back = devnet("up", "--dir", str(state))
    assert back.returncode == 0 and exports(back.stdout) == env, back.stderr
    assert load_record(state / "deployment.json").address == record.address
    assert connect(env["FLEML_RPC"]).eth.get_code(record.address)
    assert IpfsStore(env["FLEML_IPFS_API"], timeout=10, retries=0).get(cid) == b"devnet"

    wiped = devnet("down", "--dir", str(state), "--wipe")
    assert wiped.returncode == 0 and not state.exists()


def test_a_taken_rpc_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = devnet("up", "--dir", str(tmp_path / "devnet"), "--rpc-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"Error: 127.0.0.1:{port} is in use by another process "
                                     "(another chain?); stop it or choose another port with "
                                     "--rpc-port")
    assert not (tmp_path / "devnet" / "ipfs").exists()  # nothing started
