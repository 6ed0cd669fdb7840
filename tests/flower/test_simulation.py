"""A two-round federation under Flower's simulation engine gives the memory simulator's rounds,
bit for bit (runs in the Flower venv)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("flwr", reason="Flower is installed in .fleml/flower-venv only")

from fleml_node.flower.simulation import run  # noqa: E402
from fleml_node.learning import configure_threads  # noqa: E402
from fleml_node.simulate import SimulationConfig, run_memory  # noqa: E402


def test_flower_simulation_matches_the_memory_simulator(monkeypatch, tmp_path):
    # Ray refuses to create objects on a disk over 95% full; this machine's shared disk is
    monkeypatch.setenv("RAY_local_fs_capacity_threshold", "0.99")
    monkeypatch.setenv("RAY_TMPDIR", os.environ.get("RAY_TMPDIR", "/tmp"))
    config = SimulationConfig(dataset="mnist", num_clients=4, malicious_fraction=0.25,
                              attack="label_flip", defenses=("fleml",), rounds=2,
                              max_client_samples=100, validation_size=200, test_samples=300,
                              seed=5, mode="memory")
    seen = []
    reports, result = run(config, "fleml", on_round=seen.append, num_cpus=2)
    configure_threads()  # one torch thread, as simulate() and the ClientApps run
    memory = run_memory(config, "fleml", lambda r: None)
    assert [r.round for r in reports] == [1, 2] and seen == reports
    for flower_round, memory_round in zip(reports, memory, strict=True):
        assert flower_round.accepted == [f"partition-{i:04d}" for i in range(4)]
        assert flower_round.defense["aggregate_sha256"] == memory_round.aggregate_sha256
        assert [int(c.split("-")[1]) for c in flower_round.flagged] == memory_round.flagged
    # Flower kept the report in its metrics and the server-side accuracy of every round
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert result.train_metrics_clientapp[2]["fleml-flagged"] == len(reports[1].flagged)
    accuracy = {r: m["accuracy"] for r, m in result.evaluate_metrics_serverapp.items()}
    assert sorted(accuracy) == [0, 1, 2]
    assert accuracy[2] == memory[1].accuracy
