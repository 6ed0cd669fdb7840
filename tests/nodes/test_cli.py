"""`fleml-node` as a user meets it: help everywhere, config files, and one-line errors."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from click.testing import CliRunner

from fleml_node.chain.contract import RoundStatus
from fleml_node.cli import TASK_DEFAULTS, _until_round, main, read_config, task_from

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEAD_RPC = "http://127.0.0.1:9"  # nothing listens: reaching it would fail with "cannot reach"

COMMANDS = ["client", "aggregator", "audit", "status", "simulate", "account", "validation-set"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_unreachable_chain_is_one_clear_line():
    result = CliRunner().invoke(main, ["status", "--rpc", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "Error: cannot reach the chain at http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


def test_unknown_deployment_names_the_fix(federation, tmp_path):
    result = CliRunner().invoke(main, ["status", "--rpc", federation.url,
                                       "--deployment", str(tmp_path / "nope.json")])
    assert result.exit_code == 1
    assert "no deployment record" in result.output and "brownie run deploy" in result.output


def test_missing_key_is_reported_before_any_work(federation, monkeypatch):
    monkeypatch.delenv("FLEML_PRIVATE_KEY", raising=False)
    result = CliRunner().invoke(main, [
        "client", "--rpc", federation.url, "--deployment", str(federation.record_path),
        "--ipfs-api", federation.ipfs_api, "--client-index", "0", "--num-clients", "4"])
    assert result.exit_code == 1
    assert "no signing key: set FLEML_PRIVATE_KEY" in result.output


def test_unreachable_ipfs_is_reported(federation):
    result = CliRunner().invoke(main, [
        "audit", "--rpc", federation.url, "--deployment", str(federation.record_path),
        "--ipfs-api", "/ip4/127.0.0.1/tcp/9", "--ipfs-timeout", "2"])
    assert result.exit_code == 1
    assert "no IPFS API answers at /ip4/127.0.0.1/tcp/9" in result.output


def test_status_needs_no_ipfs(federation, monkeypatch):
    monkeypatch.setenv("FLEML_IPFS_API", "/ip4/127.0.0.1/tcp/9")
    result = CliRunner().invoke(main, [
        "status", "--rpc", federation.url, "--deployment", str(federation.record_path)])
    assert result.exit_code == 0, result.output
    assert "member 0:" in result.output and "no round yet" in result.output
    assert "--ipfs-api" not in CliRunner().invoke(main, ["status", "--help"]).output


@pytest.mark.parametrize(("args", "option"), [
    (["client", "--attack", "lable_flip"], "--attack"),
    (["client", "--dataset", "mnsit"], "--dataset"),
    (["aggregator", "--defense", "flemll"], "--defense"),
    (["aggregator", "--partition", "dirichlett"], "--partition"),
    (["simulate", "--defense", "krumm"], "--defense"),
    (["simulate", "--attack", "backdor"], "--attack"),
])
def test_unknown_choice_fails_while_parsing(args, option):
    result = CliRunner().invoke(main, [*args, "--rpc", DEAD_RPC] if args[0] != "simulate"
                                else args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "cannot reach" not in result.output


def test_choices_are_the_registries():
    from fleml_node.attacks import ATTACKS
    from fleml_node.defense import REGISTRY
    from fleml_node.learning.datasets import DATASETS

    commands = main.commands
    choices = {(cmd, p.name): tuple(p.type.choices) for cmd in ("client", "aggregator",
                                                                "simulate")
               for p in commands[cmd].params if p.name in ("attack", "defense", "defenses",
                                                           "dataset")}
    assert choices[("client", "dataset")] == DATASETS == choices[("simulate", "dataset")]
    assert choices[("client", "attack")] == tuple(ATTACKS) == choices[("simulate", "attack")]
    assert choices[("aggregator", "defense")] == tuple(REGISTRY)
    assert choices[("simulate", "defenses")] == (*REGISTRY, "all")


def test_unknown_defense_parameter_fails_before_connecting():
    result = CliRunner().invoke(main, ["aggregator", "--defense-param", "binz=8",
                                       "--rpc", DEAD_RPC])
    assert result.exit_code == 1
    assert "defense 'fleml' has no parameter(s) ['binz']" in result.output
    assert "cannot reach" not in result.output


def test_simulate_shares_the_task_options():
    def options(cmd):
        return {o for p in main.commands[cmd].params for o in p.opts}

    task = {"--dataset", "--seed", "--num-clients", "--partition", "--alpha", "--epochs",
            "--validation-size", "--max-client-samples", "--batch-size", "--lr", "--momentum"}
    for cmd in ("client", "aggregator", "simulate"):
        assert task <= options(cmd), cmd
    defaults = {cmd: {p.name: p.default for p in main.commands[cmd].params
                      if p.name in TASK_DEFAULTS}
                for cmd in ("client", "aggregator", "simulate")}
    assert defaults["client"] == defaults["aggregator"] == TASK_DEFAULTS
    # simulate differs only where it must: members' shares capped for a quick run
    assert defaults["simulate"] == {**TASK_DEFAULTS, "max_client_samples": 600}


def test_status_reads_options_from_a_config_file(federation, tmp_path):
    config = tmp_path / "fleml.toml"
    config.write_text(f'[common]\nrpc = "{federation.url}"\nipfs_api = "{federation.ipfs_api}"\n'
                      f'[status]\ndeployment = "{federation.record_path}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "status"])
    assert result.exit_code == 0, result.output
    assert "member 3:" in result.output and "'member-3' active" in result.output
    assert "no round yet" in result.output


def test_config_after_the_command(federation, tmp_path):
    config = tmp_path / "fleml.toml"
    config.write_text(f'[status]\nrpc = "{federation.url}"\n'
                      f'deployment = "{federation.record_path}"\n')
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "member 3:" in result.output


def test_config_after_the_command_sets_task_options(tmp_path):
    config = tmp_path / "fleml.toml"
    config.write_text('[common]\nrpc = "http://127.0.0.1:9"\n[client]\nattack = "lable_flip"\n')
    result = CliRunner().invoke(main, ["client", "--config", str(config)])
    assert result.exit_code == 2  # the file's value went through --attack's choices
    assert "Invalid value for '--attack'" in result.output


@pytest.mark.parametrize(("text", "message"), [
    ("[client]\nnum_client = 4\n", "unknown key(s) ['num_client'] in table [client]"),
    ("[common]\nrpcc = 'x'\n", "unknown key(s) ['rpcc'] in table [common]"),
    ("[status]\ndataset = 'mnist'\n", "unknown key(s) ['dataset'] in table [status]"),
    ("rpc = 'x'\n", "key(s) ['rpc'] in"),
])
@pytest.mark.parametrize("after", [False, True])
def test_config_file_with_an_unknown_key_is_refused(tmp_path, text, message, after):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    args = ["status", "--config", str(config)] if after else ["--config", str(config), "status"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_config_keys_are_option_names(tmp_path):
    config = tmp_path / "sim.toml"
    config.write_text('[simulate]\ndefense = ["krum"]\nnum_clients = 4\n'
                      '[audit]\nround = 2\n')
    tables = read_config(config)
    assert tables["simulate"]["defenses"] == ["krum"]
    assert tables["simulate"]["num_clients"] == 4
    assert tables["audit"] == {"round_id": 2}


@pytest.mark.parametrize("name", ["client", "aggregator"])
def test_examples_load_through_the_config_loader(name, monkeypatch):
    monkeypatch.setenv("FLEML_PRIVATE_KEY", "0x" + "11" * 32)  # nodes load their key first
    path = EXAMPLES / f"{name}.toml"
    tables = read_config(path)  # raises on any unknown table or key
    params = {p.name for p in main.commands[name].params}
    assert tables[name] and set(tables[name]) <= params
    # and the whole command line accepts them: parsing ends at the (unreachable) chain
    result = CliRunner().invoke(main, [name, "--config", str(path), "--rpc", DEAD_RPC,
                                       "--start-timeout", "0"])
    assert result.exit_code == 1, result.output
    assert "cannot reach the chain at http://127.0.0.1:9" in result.output


def test_rounds_and_until_round_conflict():
    result = CliRunner().invoke(main, ["aggregator", "--rounds", "3", "--until-round", "7",
                                       "--rpc", DEAD_RPC])
    assert result.exit_code == 2
    assert "not both" in result.output and "cannot reach" not in result.output


def test_until_round_on_the_command_line_wins_over_rounds_in_a_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEML_PRIVATE_KEY", "0x" + "11" * 32)
    config = tmp_path / "agg.toml"
    config.write_text("[aggregator]\nrounds = 4\n")
    result = CliRunner().invoke(main, ["aggregator", "--config", str(config),
                                       "--until-round", "7", "--rpc", DEAD_RPC,
                                       "--start-timeout", "0"])
    assert result.exit_code == 1, result.output  # parsed; failed only at the chain
    assert "cannot reach the chain" in result.output


class _Chain:
    """Just what _until_round reads from a Consortium."""

    def __init__(self, current, status=None):
        self.current, self.status = current, status

    def current_round(self):
        return self.current

    def get_round(self, r):
        assert r == self.current
        return SimpleNamespace(status=self.status)


@pytest.mark.parametrize(("chain", "rounds", "until"), [
    (_Chain(0), 3, 3),                              # fresh chain: rounds 1..3
    (_Chain(4, RoundStatus.FINALIZED), 3, 7),       # after round 4: rounds 5..7
    (_Chain(4, RoundStatus.OPEN), 3, 6),            # round 4 still open: it is the first
    (_Chain(4, RoundStatus.CLOSED), 1, 4),
])
def test_rounds_counts_from_the_chains_state(chain, rounds, until):
    assert _until_round(chain, rounds) == until


def test_config_file_with_an_unknown_table_is_refused(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[clients]\nrpc = 'x'\n")
    result = CliRunner().invoke(main, ["--config", str(config), "status"])
    assert result.exit_code == 2
    assert "unknown table(s) ['clients']" in result.output


def test_audit_of_a_missing_round_is_refused(federation):
    result = CliRunner().invoke(main, [
        "audit", "--round", "4", "--rpc", federation.url,
        "--deployment", str(federation.record_path), "--ipfs-api", federation.ipfs_api])
    assert result.exit_code == 1
    assert "round 4 does not exist (latest is 0)" in result.output


def test_account_creates_an_encrypted_keystore(tmp_path):
    path = tmp_path / "member.json"
    result = CliRunner().invoke(main, ["account", str(path)], input="pw\npw\n")
    assert result.exit_code == 0, result.output
    address = result.output.strip().splitlines()[-1]
    assert address.startswith("0x") and len(address) == 42
    assert '"crypto"' in path.read_text()
    again = CliRunner().invoke(main, ["account", str(path)], input="pw\npw\n")
    assert again.exit_code == 1 and "not overwriting" in again.output


def test_a_node_rides_out_an_outage_while_it_starts_but_not_a_mistake(federation, monkeypatch,
                                                                       caplog):
    """An outage while a node starts (here its chain's RPC stops answering for two attempts,
    after the node reached it) is waited out as in the running node; a mistake (another
    protocol here) stops it at once. (A first contact that fails is waited out the same way:
    `test_a_node_started_before_its_chain_waits_for_it_or_gives_up_when_told`.)"""

    from fleml_node.chain.contract import ChainError, Consortium
    from fleml_node.cli import _start_node

    monkeypatch.setenv("FLEML_PRIVATE_KEY", federation.keys[2])
    opts = {"rpc": federation.url, "deployment": str(federation.record_path),
            "chain_profile": None, "keystore": None, "ipfs_api": federation.ipfs_api,
            "ipfs_timeout": 5}
    attempts = []

    def build(consortium, store):
        attempts.append(consortium)
        if len(attempts) < 3:  # the chain's RPC stops answering for two attempts
            requests.post("http://127.0.0.1:9", timeout=1)
        return consortium

    with caplog.at_level("INFO", logger="fleml_node.retry"):
        node = _start_node(opts, "client", build)
    assert isinstance(node, Consortium) and len(attempts) == 3
    assert "client start-up failed, retrying until it works" in caplog.text
    assert "client start-up works again" in caplog.text

    def speaks_another_protocol(consortium, store):
        attempts.append(consortium)
        raise ChainError(f"the contract at {consortium.address} speaks protocol 1")

    with pytest.raises(ChainError, match="speaks protocol 1"):
        _start_node(opts, "client", speaks_another_protocol)
    assert len(attempts) == 4


def test_a_node_started_before_its_chain_waits_for_it_or_gives_up_when_told(federation,
                                                                           monkeypatch, caplog):
    """`fleml-node client` started while its chain is not up yet: it waits (logging where it
    looked) and starts once the chain answers; with --start-timeout it gives up in one line."""
    from fleml_node.chain.contract import Consortium
    from fleml_node.cli import _start_node
    from fleml_node.devnet.anvil import free_port

    monkeypatch.setenv("FLEML_PRIVATE_KEY", federation.keys[2])
    port = free_port()
    opts = {"rpc": f"http://127.0.0.1:{port}", "deployment": str(federation.record_path),
            "chain_profile": None, "keystore": None, "ipfs_api": federation.ipfs_api,
            "ipfs_timeout": 5, "start_timeout": None}
    # the chain comes up 2 s later: a relay to the federation's node, on the node's address
    relay = _relay(port, federation.url)
    threading.Timer(2.0, relay.start).start()
    try:
        with caplog.at_level("WARNING", logger="fleml_node.retry"):
            node = _start_node(opts, "client", lambda consortium, store: consortium)
    finally:
        relay.stop()
    assert isinstance(node, Consortium)
    assert f"client start-up failed, retrying until it works: cannot reach the chain at " \
           f"http://127.0.0.1:{port}" in caplog.text
    result = CliRunner().invoke(main, [
        "client", "--rpc", f"http://127.0.0.1:{port}", "--deployment",
        str(federation.record_path), "--ipfs-api", federation.ipfs_api, "--client-index", "0",
        "--num-clients", "4", "--start-timeout", "1"])
    assert result.exit_code == 1 and "Error: cannot reach the chain at" in result.output


class _relay:
    """An HTTP JSON-RPC relay on 127.0.0.1:`port` to `upstream`, started and stopped at will."""

    def __init__(self, port, upstream):
        self.port, self.upstream, self.server = port, upstream, None

    def start(self):
        upstream = self.upstream

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = requests.post(upstream, data=body, timeout=10,
                                       headers={"Content-Type": "application/json"}).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def test_validation_set_is_created_checked_and_published_for_the_operator(tmp_path, ipfs_api):
    from fleml_node.round_engine import decode_validation, encode_validation
    from fleml_node.storage import IpfsStore, content_hash
    from fleml_node.task import validation_data

    path = tmp_path / "validation.safetensors"
    result = CliRunner().invoke(main, ["validation-set", str(path), "--create", "--dataset",
                                       "mnist", "--validation-size", "50", "--ipfs-api",
                                       ipfs_api])
    assert result.exit_code == 0, result.output
    blob = path.read_bytes()
    digest = "0x" + content_hash(blob).hex()
    cid = result.output.split("cid    ")[1].split()[0]
    assert f"50 samples, inputs (1, 28, 28), 10 classes\nsha256 {digest}\n" in result.output
    assert f"brownie run admin set_validation_set {digest} {cid}" in result.output
    assert IpfsStore(ipfs_api).get(cid, expected_hash=content_hash(blob)) == blob
    # the very bytes the simulator commits for the same task
    task = task_from(dict(TASK_DEFAULTS, validation_size=50))
    assert blob == encode_validation(*validation_data(task))
    assert decode_validation(blob)[0].shape == (50, 1, 28, 28)
    again = CliRunner().invoke(main, ["validation-set", str(path), "--create"])
    assert again.exit_code == 1 and "exists; not overwriting it" in again.output
    no_ipfs = CliRunner().invoke(main, ["validation-set", str(path), "--ipfs-api",
                                        "/ip4/127.0.0.1/tcp/9"])
    assert no_ipfs.exit_code == 1 and "no IPFS API answers at /ip4/127.0.0.1/tcp/9" in \
        no_ipfs.output and "Traceback" not in no_ipfs.output


def test_a_file_that_is_no_validation_set_is_one_line_before_any_connection(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    for args in (["validation-set", str(bad), "--no-publish"],
                 ["aggregator", "--validation-file", str(bad), "--rpc", DEAD_RPC]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert f"Error: {bad} is not a FLEML validation file" in result.output
        assert "cannot reach" not in result.output and "Traceback" not in result.output
