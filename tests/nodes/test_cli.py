"""`fleml-node` as a user meets it: help everywhere, config files, and one-line errors."""

import pytest
from click.testing import CliRunner

from fleml_node.cli import main

COMMANDS = ["client", "aggregator", "audit", "status", "simulate", "account"]


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
        "status", "--rpc", federation.url, "--deployment", str(federation.record_path),
        "--ipfs-api", "/ip4/127.0.0.1/tcp/9", "--ipfs-timeout", "2"])
    assert result.exit_code == 1
    assert "no IPFS API answers at /ip4/127.0.0.1/tcp/9" in result.output


def test_status_reads_options_from_a_config_file(federation, tmp_path):
    config = tmp_path / "fleml.toml"
    config.write_text(f'[common]\nrpc = "{federation.url}"\nipfs_api = "{federation.ipfs_api}"\n'
                      f'[status]\ndeployment = "{federation.record_path}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "status"])
    assert result.exit_code == 0, result.output
    assert "member 3:" in result.output and "'member-3' active" in result.output
    assert "no round yet" in result.output


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
