"""`--rpc URL1,URL2`: a node's requests move to the next node of the same chain when one fails."""

import contextlib
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from web3.exceptions import Web3RPCError

from fleml_node.chain.contract import (
    BROKEN_NODE_ERRORS,
    ChainError,
    Consortium,
    bind_consortium,
    connect,
)
from fleml_node.devnet.anvil import LocalAnvil, free_port


@contextlib.contextmanager
def json_rpc_endpoint(answer):
    """A local HTTP JSON-RPC endpoint whose reply to each request body is ``answer(body)``
    (bytes); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            data = answer(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _state_root_error(call_id) -> dict:
    return {"jsonrpc": "2.0", "id": call_id, "error": {
        "code": -32603, "message": f"Internal error: State trie {BROKEN_NODE_ERRORS[0]}"}}


@contextlib.contextmanager
def broken_node(chain_id: str):
    """A JSON-RPC endpoint that knows its chain id and answers everything else as
    @ethereumjs/client 0.9.0 does once its synchronizer has stopped."""
    seen: list[str] = []

    def answer(raw: bytes) -> bytes:
        body = json.loads(raw)
        calls = body if isinstance(body, list) else [body]
        answers = []
        for call in calls:
            seen.append(call["method"])
            if call["method"] == "eth_chainId":
                answers.append({"jsonrpc": "2.0", "id": call["id"], "result": chain_id})
            else:
                answers.append(_state_root_error(call["id"]))
        return json.dumps(answers if isinstance(body, list) else answers[0]).encode()

    with json_rpc_endpoint(answer) as url:
        yield url, seen


def test_an_unreachable_first_node_is_skipped(anvil):
    w3 = connect(f"http://127.0.0.1:{free_port()},{anvil.url}")
    assert w3.eth.block_number >= 0
    assert w3.provider.endpoint_uri == anvil.url


def test_a_node_that_lost_its_state_is_left_for_the_next(anvil, deployed):
    _, record = deployed
    chain_id = hex(connect(anvil.url).eth.chain_id)
    with broken_node(chain_id) as (broken, seen):
        w3 = connect(f"{broken},{anvil.url}")  # its read of the genesis block moves on
        assert w3.provider.endpoint_uri == anvil.url and "eth_getBlockByNumber" in seen
    with broken_node(chain_id) as (broken, seen):
        w3 = connect(f"{broken},{anvil.url}", poa=False)  # no block read: still the first
        assert w3.provider.endpoint_uri == broken
        reader = Consortium(w3, record)  # its code check fails there and goes to anvil
        assert reader.current_round() == 0
        assert w3.provider.endpoint_uri == anvil.url and "eth_getCode" in seen
    with broken_node(chain_id) as (broken, seen):
        w3 = connect(f"{broken},{anvil.url}", poa=False)
        seen.clear()
        with w3.batch_requests() as batch:  # as a member's view of a round is read
            batch.add(w3.eth.get_block("latest"))
            batch.add(w3.eth.get_block(0))
            latest, genesis = batch.execute()
        assert seen == ["eth_getBlockByNumber", "eth_getBlockByNumber"]  # then anvil
        assert w3.provider.endpoint_uri == anvil.url  # the batch moved on as a whole
        assert latest["number"] >= 0 and genesis["hash"] == w3.eth.get_block(0)["hash"]


def test_a_node_of_another_chain_is_refused(tmp_path):
    with LocalAnvil(accounts=2, log_file=tmp_path / "anvil.log") as node:
        with broken_node("0x1") as (other, _):
            w3 = connect(f"{node.url},{other}")
            assert w3.eth.block_number >= 0
            node.stop()
            with pytest.raises(ChainError, match="every --rpc URL must be a node of the same"):
                w3.eth.block_number  # noqa: B018 - the request is the test


@contextlib.contextmanager
def lagging_node(upstream: str, failures: int):
    """A node just behind the one that sealed the newest block: its first `failures` state
    reads answer "State trie does not contain state root"; everything else is `upstream`'s."""
    seen: list[str] = []

    def answer(raw: bytes) -> bytes:
        call = json.loads(raw)
        seen.append(call["method"])
        if call["method"] == "eth_getCode" and seen.count("eth_getCode") <= failures:
            return json.dumps(_state_root_error(call["id"])).encode()
        return requests.post(upstream, data=raw, timeout=10,
                             headers={"Content-Type": "application/json"}).content

    with json_rpc_endpoint(answer) as url:
        yield url, seen


def test_binding_waits_out_a_node_that_has_not_executed_its_newest_block(anvil, deployed):
    _, record = deployed
    with lagging_node(anvil.url, failures=2) as (url, seen):
        reader = bind_consortium(connect(url, poa=False), record, interval=0.05)
        assert reader.current_round() == 0 and seen.count("eth_getCode") == 3
    with lagging_node(anvil.url, failures=100) as (url, seen), \
            pytest.raises(Web3RPCError, match="does not contain state root"):
        bind_consortium(connect(url, poa=False), record, retry_seconds=0.2, interval=0.05)
    # a record for another contract is a mistake, not a moment: no retry
    wrong = dataclasses.replace(record, address="0x" + "11" * 20)
    with lagging_node(anvil.url, failures=0) as (url, seen), \
            pytest.raises(ChainError, match="no contract"):
        bind_consortium(connect(url, poa=False), wrong, retry_seconds=30, interval=0.05)
    assert seen.count("eth_getCode") == 1


def test_binding_refuses_a_contract_that_speaks_no_protocol_version_at_once(anvil, deployed):
    """A record naming a contract without `version()` (an older protocol, or another contract)
    is a mistake every tool must refuse, without the retries a lagging node gets."""
    w3, record = deployed
    # init code that deploys the one-byte runtime STOP: every call returns no data
    stub = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "data": "0x6001600c60003960016000f300"}))
    other = dataclasses.replace(record, address=stub["contractAddress"])
    with lagging_node(anvil.url, failures=0) as (url, seen), \
            pytest.raises(ChainError, match=r"has no version\(\)"):
        bind_consortium(connect(url, poa=False), other, retry_seconds=30, interval=0.05)
    assert seen.count("eth_call") == 1  # not retried
