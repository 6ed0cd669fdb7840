"""Sweep cells as Ray tasks give the sequential results (runs where Ray is installed: the
Flower venv; tests/flower/test_flower_venv.py runs it from the main suite)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="Ray is installed in .fleml/flower-venv only")

from fleml_node.experiments import Cell, ResultStore, comparable, run_cells  # noqa: E402

TINY = {"num_clients": 3, "rounds": 1, "malicious_fraction": 0.34, "max_client_samples": 40,
        "validation_size": 100, "test_samples": 200}
ATTACKS = [("none", "none", {}), ("label_flipping", "label_flip", {}),
           ("untargeted", "sign_flip", {"scale": 5.0}),
           ("backdoor", "backdoor", {"target_class": 0, "fraction": 0.5, "scale": 3.0})]


def check_ray_equals_sequential(cells, tmp_path, monkeypatch):
    # Ray refuses to create objects on a disk over 95% full; this machine's shared disk is
    monkeypatch.setenv("RAY_local_fs_capacity_threshold", "0.99")
    sequential = run_cells(cells, ResultStore(tmp_path / "seq"))
    store = ResultStore(tmp_path / "ray")
    seen = []
    on_ray = run_cells(cells, store, ray_address="local", workers=2,
                       progress=lambda r, done, total: seen.append((done, total)))
    assert [comparable(r) for r in on_ray] == [comparable(r) for r in sequential]
    assert sorted(seen) == [(i, len(cells)) for i in range(1, len(cells) + 1)]
    assert len(store.results()) == len(cells)
    # the tasks ran in Ray's worker processes, not here
    assert {r["machine"]["pid"] for r in on_ray}.isdisjoint({r["machine"]["pid"]
                                                            for r in sequential})
    # a finished sweep resumes without starting Ray at all
    assert run_cells(cells, store, ray_address="ray://nowhere:1") == on_ray


@pytest.mark.soak  # about 2 minutes on 2 cores (over 3 when the machine is busy)
def test_four_cell_sweep_on_ray_equals_the_sequential_run(tmp_path, monkeypatch):
    cells = [Cell("ray-test", "mnist", key, attack, params, 0, ("fedavg", "fleml"), TINY)
             for key, attack, params in ATTACKS]
    check_ray_equals_sequential(cells, tmp_path, monkeypatch)


def test_two_cells_on_ray_equal_the_sequential_run(tmp_path, monkeypatch):
    cells = [Cell("ray-test", "mnist", key, attack, params, 1, ("fedavg",), TINY)
             for key, attack, params in ATTACKS[1:3]]
    check_ray_equals_sequential(cells, tmp_path, monkeypatch)
