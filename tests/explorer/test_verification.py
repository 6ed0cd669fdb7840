"""Verifiable source: the deployment record alone recompiles to the code on chain.

For each shipped artifact (cancun, london) a consortium is deployed on anvil with the node's
web3 path; the record's ``verification`` section (solc standard-JSON input, compiler version,
contract name, metadata hash) is compiled with that exact solc and must give the runtime code
`eth_getCode` returns, byte for byte, metadata included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from fleml_node.chain.contract import connect
from fleml_node.chain.deploy import artifact_path, deploy_consortium, metadata_hash
from fleml_node.devnet.anvil import test_keys as anvil_keys

pytestmark = pytest.mark.slow
SOLC = Path.home() / ".solcx" / "solc-v0.8.28"


@pytest.mark.parametrize("evm", ["cancun", "london"])
def test_record_recompiles_to_the_code_on_chain(anvil, tmp_path, evm):
    import solcx

    if not SOLC.exists():
        pytest.skip(f"no solc at {SOLC}: tools/setup.sh installs the shim")
    w3 = connect(anvil.url)
    deployed = deploy_consortium(w3, Account.from_key(anvil_keys(1)[0]),
                                 tmp_path / "record.json", artifact=artifact_path(evm))
    record = json.loads((tmp_path / "record.json").read_text())
    section = record["verification"]
    assert section["format"] == "solc-standard-json"
    assert section["evm_version"] == evm
    version = section["compiler_version"]
    assert version.startswith("v0.8.28+commit.")

    # from the record alone: its input, its compiler, its contract name
    source, name = section["contract_name"].split(":")
    out = solcx.compile_standard(section["standard_json_input"], solc_binary=str(SOLC))
    compiled = out["contracts"][source][name]["evm"]["deployedBytecode"]["object"]
    on_chain = bytes(w3.eth.get_code(deployed.address)).hex()
    assert compiled == on_chain
    assert metadata_hash(on_chain) == section["metadata"]
    assert section["metadata"]["ipfs"].startswith("Qm")
    assert section["metadata"]["solc"] == "0.8.28"
    assert version.removeprefix("v").split("+")[0] == section["metadata"]["solc"]
