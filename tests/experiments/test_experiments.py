"""The sweep cell runner and results store (fleml_node.experiments): stable keys, atomic
storage, resume, and the same numbers sequentially and in a process pool."""

from __future__ import annotations

import json

import pytest

from fleml_node.experiments import (
    Cell,
    CellsFailed,
    ResultStore,
    comparable,
    defense_params,
    run_cell,
    run_cells,
)

TINY = {"num_clients": 3, "rounds": 1, "malicious_fraction": 0.34, "max_client_samples": 40,
        "validation_size": 100, "test_samples": 200}


def tiny(seed: int = 0, attack: str = "label_flip", key: str = "label_flipping",
         defenses: tuple[str, ...] = ("fedavg", "fleml"), **base) -> Cell:
    return Cell("test", "mnist", key, attack, {}, seed, defenses, {**TINY, **base})


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> list[dict]:
    cells = [tiny(0), tiny(1, "sign_flip", "untargeted")]
    store = ResultStore(tmp_path_factory.mktemp("seq"))
    return run_cells(cells, store)


def test_key_is_stable_and_covers_every_field():
    cell = tiny()
    # a fixed value: keys name stored results, so they must not change between versions
    assert cell.key() == "test-mnist-label_flipping-s0-4ad0eef8725a5d52"
    assert Cell.from_dict(json.loads(json.dumps(cell.to_dict()))).key() == cell.key()
    assert Cell.from_dict(cell.to_dict()) == cell
    variants = [tiny(1), tiny(attack="sign_flip"), tiny(key="other"), tiny(defenses=("fedavg",)),
                tiny(rounds=2), tiny(alpha=0.1),
                Cell("other", "mnist", "label_flipping", "label_flip", {}, 0,
                     ("fedavg", "fleml"), TINY),
                Cell("test", "mnist", "label_flipping", "label_flip", {"scale": 2.0}, 0,
                     ("fedavg", "fleml"), TINY)]
    keys = {v.key() for v in variants} | {cell.key()}
    assert len(keys) == len(variants) + 1
    # base order does not matter
    assert Cell("test", "mnist", "label_flipping", "label_flip", {}, 0, ("fedavg", "fleml"),
                dict(reversed(list(TINY.items())))).key() == cell.key()


def test_cell_rejects_bad_input_and_builds_a_memory_config():
    with pytest.raises(ValueError, match="may not set"):
        tiny(seed=0, dataset="cifar10")
    with pytest.raises(ValueError, match="JSON"):
        tiny(alpha=object())
    with pytest.raises(ValueError, match="missing fields"):
        Cell.from_dict({"suite": "x"})
    with pytest.raises(ValueError, match="does not know"):
        tiny(no_such_field=1).config()
    config = tiny().config()
    assert (config.mode, config.dataset, config.num_clients, config.attack) == \
        ("memory", "mnist", 3, "label_flip")
    # the clean reference has no malicious client, whatever the base's fraction
    assert tiny(attack="none", key="none").config().malicious_fraction == 0.0
    with pytest.raises(ValueError, match="workers"):
        run_cells([tiny()], ResultStore("/tmp/unused-h6"), workers=0)


def test_store_is_atomic_and_ignores_partial_files(tmp_path):
    store = ResultStore(tmp_path)
    cell = tiny()
    result = {"cell": cell.to_dict(), "key": cell.key(), "summary": {"fedavg": {}},
              "rounds": [], "malicious_clients": [1], "seconds": 1.0, "machine": {}}
    # a file cut short (a crash mid-write by something not using put) is not a result
    full = json.dumps(result)
    store.path(cell.key()).write_text(full[: len(full) // 2])
    # nor is put's own temporary file, nor a file holding another key's result
    (tmp_path / f".{cell.key()}.abc.tmp").write_text(full)
    other = tiny(5)
    store.path(other.key()).write_text(full)
    assert not store.has(cell.key()) and not store.has(other.key())
    assert store.results() == []
    path = store.put(result)
    assert path == store.path(cell.key()) and store.get(cell.key()) == result
    assert [r["key"] for r in store.results()] == [cell.key()]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{cell.key()}.")
                and p.name != f".{cell.key()}.abc.tmp"]
    with pytest.raises(ValueError, match="not its cell's key"):
        store.put({**result, "key": other.key()})
    with pytest.raises(ValueError, match="not a cell key"):
        store.path("../escape")


def test_resume_skips_finished_cells(tmp_path):
    store = ResultStore(tmp_path)
    done, todo = tiny(0, defenses=("fedavg",)), tiny(1, defenses=("fedavg",))
    # a stored result is returned as is, never recomputed: its made-up accuracy survives
    stored = {"cell": done.to_dict(), "key": done.key(),
              "summary": {"fedavg": {"final_accuracy": -1.0}}, "rounds": [],
              "malicious_clients": [], "seconds": 0.0, "machine": {}}
    store.put(stored)
    seen = []
    results = run_cells([done, todo, todo], store,
                        progress=lambda r, i, n: seen.append((r["key"], i, n)))
    assert seen == [(todo.key(), 1, 1)]
    assert results[0] == stored and results[1] == results[2] == store.get(todo.key())
    assert 0 <= results[1]["summary"]["fedavg"]["final_accuracy"] <= 1
    # everything is done now: a rerun runs nothing
    seen.clear()
    assert run_cells([done, todo], store, progress=lambda *a: seen.append(a)) == results[:2]
    assert seen == []
    # a result from another device is not reused: the cell runs again and replaces it
    other_device = {**results[1], "machine": {**results[1]["machine"], "device": "cuda:0"},
                    "summary": {"fedavg": {"final_accuracy": -2.0}}}
    store.put(other_device)
    again = run_cells([todo], store, progress=lambda *a: seen.append(a))
    assert len(seen) == 1 and comparable(again[0]) == comparable(results[1])
    assert store.get(todo.key())["machine"]["device"] == "cpu"


def test_a_result_from_other_defense_parameters_is_stale(tmp_path, caplog):
    store = ResultStore(tmp_path)
    cell = tiny(0, defenses=("fleml",))
    fresh = run_cells([cell], store)[0]
    assert fresh["defense_params"] == defense_params(cell)
    assert fresh["defense_params"]["fleml"]["prior_scale"] == 0.3  # the default, recorded
    # as if stored before FLEML's default prior_scale changed: the cell runs again
    old = json.loads(json.dumps(fresh))
    old["defense_params"]["fleml"]["prior_scale"] = 1.0
    old["summary"]["fleml"]["final_accuracy"] = -1.0
    store.put(old)
    seen = []
    again = run_cells([cell], store, progress=lambda *a: seen.append(a))
    assert len(seen) == 1 and comparable(again[0]) == comparable(fresh)
    # a cell that sets the parameter itself has another key and records what it set
    varied = tiny(0, defenses=("fleml",), defense_params={"fleml": {"prior_scale": 0.0}})
    assert varied.key() != cell.key()
    assert defense_params(varied)["fleml"]["prior_scale"] == 0.0
    # a result stored before parameters were recorded is reused, with a warning
    legacy = {k: v for k, v in fresh.items() if k != "defense_params"}
    legacy["summary"] = {"fleml": {**fresh["summary"]["fleml"], "final_accuracy": -3.0}}
    store.put(legacy)
    seen.clear()
    with caplog.at_level("WARNING", logger="fleml_node.experiments"):
        reused = run_cells([cell], store, progress=lambda *a: seen.append(a))
    assert seen == [] and reused[0]["summary"]["fleml"]["final_accuracy"] == -3.0
    assert "predate parameter records" in caplog.text


def test_bad_cell_fails_before_any_cell_runs(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="unknown attack"):
        run_cells([tiny(), tiny(attack="no_such_attack")], store)
    assert store.results() == []


def test_run_cell_is_a_pure_function_of_the_cell(sequential):
    again = run_cell(tiny(0).to_dict())
    assert comparable(again) == comparable(sequential[0])
    result = sequential[0]
    assert result["key"] == tiny(0).key() and set(result["summary"]) == {"fedavg", "fleml"}
    assert result["machine"]["torch_threads"] == 1 and len(result["machine"]["loadavg"]) == 3
    assert [r["round"] for r in result["rounds"]] == [1, 1]
    assert result["malicious_clients"] == tiny(0).config().malicious_clients() == [2]


def test_process_pool_gives_the_sequential_results(sequential, tmp_path):
    cells = [Cell.from_dict(r["cell"]) for r in sequential]
    pooled = run_cells(cells, ResultStore(tmp_path), workers=2)
    assert [comparable(r) for r in pooled] == [comparable(r) for r in sequential]
    assert {r["machine"]["pid"] for r in pooled}.isdisjoint(
        {r["machine"]["pid"] for r in sequential})


def test_failed_cells_are_reported_after_the_others_are_stored(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    good, bad = tiny(0, defenses=("fedavg",)), tiny(1, defenses=("fedavg",))
    import fleml_node.experiments as experiments

    real = experiments.run_cell

    def flaky(cell_dict, device="cpu"):
        if cell_dict["seed"] == 1:
            raise RuntimeError("disk full")
        return real(cell_dict, device)

    monkeypatch.setattr(experiments, "run_cell", flaky)
    with pytest.raises(CellsFailed, match="disk full") as info:
        run_cells([bad, good], store)
    assert list(info.value.failures) == [bad.key()]
    assert store.has(good.key()) and not store.has(bad.key())
