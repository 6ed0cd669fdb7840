"""`fleml-node simulate`: the real path reproduces the in-memory numbers, and writes its results."""

import json

from click.testing import CliRunner

from fleml_node.cli import main
from fleml_node.simulate import SimulationConfig, simulate

SMALL = dict(dataset="mnist", num_clients=4, malicious_fraction=0.25, attack="label_flip",
             defenses=("fedavg", "fleml"), rounds=2, max_client_samples=100,
             validation_size=200, test_samples=500, seed=5)


def test_chain_and_memory_modes_give_the_same_rounds(tmp_path, ipfs_api):
    # members one after another here; tests/nodes/test_policy_equivalence.py runs them on
    # threads (the default)
    chain = simulate(SimulationConfig(**SMALL, mode="chain", ipfs_api=ipfs_api,
                                      member_threads=1), tmp_path / "chain")
    memory = simulate(SimulationConfig(**SMALL, mode="memory"), tmp_path / "memory")
    for a, b in zip(chain["rounds"], memory["rounds"], strict=True):
        assert (a["defense"], a["round"]) == (b["defense"], b["round"])
        assert a["accuracy"] == b["accuracy"]
        assert a["flagged"] == b["flagged"]
    assert all(r["gas_used"] > 0 for r in chain["rounds"])
    assert all(r["bytes_moved"] > 0 for r in chain["rounds"])


def test_results_are_written_with_config_and_plots(tmp_path):
    out = tmp_path / "sim"
    result = CliRunner().invoke(main, [
        "simulate", "--mode", "memory", "--num-clients", "4", "--malicious", "0.25",
        "--attack", "backdoor", "--attack-param", "target_class=2", "--defense", "median",
        "--rounds", "1", "--max-client-samples", "80", "--test-samples", "300",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["attack_params"] == {"target_class": 2}
    assert data["config"]["seed"] == 0 and data["machine"]["cpus"] >= 1
    assert len(data["malicious_clients"]) == 1
    record = data["rounds"][0]
    assert 0 <= record["accuracy"] <= 1 and 0 <= record["backdoor_asr"] <= 1
    assert (out / "results.csv").read_text().startswith("defense,round,accuracy")
    for png in ("accuracy.png", "detection.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "summary" in result.output and "median" in result.output


def test_bad_options_are_clear_errors(tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--defense", "nonsense", "--mode", "memory",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2  # refused while parsing, from the defense registry
    assert "Invalid value for '--defense': 'nonsense' is not one of" in result.output


def test_cifar10_runs_the_same_way_when_its_files_are_given(tmp_path, monkeypatch):
    """No CIFAR-10 here: a small set in the standard format stands in for the user's copy."""
    from fleml_node import task as task_module
    from tests.learning.test_datasets import _write_cifar

    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, "py3", per_batch=40)
    monkeypatch.setenv("FLEML_CIFAR10_DIR", str(folder))
    task_module.load_task_dataset.cache_clear()
    task_module._split.cache_clear()
    out = tmp_path / "sim"
    result = CliRunner().invoke(main, [
        "simulate", "--mode", "memory", "--dataset", "cifar10", "--num-clients", "3",
        "--malicious", "0", "--attack", "none", "--defense", "fedavg", "--rounds", "1",
        "--validation-size", "20", "--max-client-samples", "30", "--test-samples", "0",
        "--out", str(out)])
    task_module.load_task_dataset.cache_clear()
    task_module._split.cache_clear()
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["dataset"] == "cifar10" and len(data["rounds"]) == 1


def test_cifar10_without_its_files_says_where_to_put_them(tmp_path, monkeypatch):
    from fleml_node import task as task_module

    monkeypatch.setenv("FLEML_CIFAR10_DIR", str(tmp_path / "absent"))
    task_module.load_task_dataset.cache_clear()
    result = CliRunner().invoke(main, ["simulate", "--mode", "memory", "--dataset", "cifar10",
                                       "--rounds", "1", "--out", str(tmp_path / "o")])
    task_module.load_task_dataset.cache_clear()
    assert result.exit_code != 0
    assert "FLEML_CIFAR10_DIR" in result.output
