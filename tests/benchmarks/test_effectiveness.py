"""CI slice of the effectiveness suite: the pipeline, the store and the tables, not numbers.

One dataset, two attacks (one colluding, one data poisoning) and the clean reference, two
defenses, one seed, one tiny round: seconds, not the suite's hours.
"""

from __future__ import annotations

import json

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def suite():
    return load_benchmark("effectiveness")


SLICE = ["--quick", "--datasets", "mnist", "--attacks", "none", "alie", "label_flip",
         "--seeds", "2", "--defenses", "fedavg", "fleml",
         "--set", "rounds=1", "num_clients=5", "max_client_samples=20", "validation_size=40",
         "test_samples=100"]


def test_config_builds_every_attack_for_every_defense(suite):
    spec = suite.load_spec()
    quick = suite.build_cells(spec, "quick")
    assert {c.attack_key for c in quick} == set(spec["attacks"])
    assert all(set(c.defenses) == set(spec["defenses"]) for c in quick)
    assert len(spec["defenses"]) == 7 and len({c.seed for c in quick}) >= 3
    assert {c.dataset for c in quick} == {"mnist", "fashion_mnist"}
    full = suite.build_cells(spec, "full", datasets=["mnist"])
    assert {c.base["num_clients"] for c in full} == {20, 50}
    assert {c.base["rounds"] for c in full} == {30}
    assert {c.base["alpha"] for c in full} == {0.5, 0.1}
    # clean cells do not depend on the malicious share: one per (clients, alpha, seed)
    assert sum(c.attack == "none" for c in full) == 2 * 2 * 3


def test_unknown_attack_row_is_refused(suite):
    with pytest.raises(ValueError, match="unknown attack rows"):
        suite.build_cells(suite.load_spec(), "quick", attacks=["nope"])


def test_slice_runs_stores_resumes_and_renders(suite, tmp_path, capsys):
    stem, store = tmp_path / "eff", tmp_path / "cells"
    argv = SLICE + ["--out", str(stem), "--results-dir", str(store)]
    assert suite.main(argv) == 0
    stored = sorted(store.glob("*.json"))
    assert len(stored) == 6  # three rows in each of the two quick scenarios (alpha 0.5, 0.1)
    data = json.loads(stem.with_suffix(".json").read_text())
    assert {c["attack"] for c in data["cells"]} == {"none", "alie", "label_flip"}
    assert {c["base"]["alpha"] for c in data["cells"]} == {0.5, 0.1}
    assert all(set(c["defenses"]) == {"fedavg", "fleml"} for c in data["cells"])
    assert data["machine"]["device"] == "cpu"
    by_attack = {c["attack"]: c for c in data["cells"]}
    assert by_attack["none"]["malicious_clients"] == []
    assert len(by_attack["alie"]["malicious_clients"]) == 2  # 30% of 5
    table = stem.with_suffix(".md").read_text()
    assert "| attack |" in table and "## Detection targets" in table
    assert "## Accuracy targets" in table and "The paper's claims" in table
    # a second run finds every cell stored and runs none of them again
    mtimes = [p.stat().st_mtime_ns for p in stored]
    capsys.readouterr()
    assert suite.main(argv) == 0
    assert "6 cells (6 already stored)" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in stored] == mtimes
    # --table re-renders from the saved data alone
    stem.with_suffix(".md").unlink()
    assert suite.main(["--quick", "--table", "--out", str(stem)]) == 0
    assert stem.with_suffix(".md").read_text() == table


def test_readme_block_is_replaced_between_its_markers_only(suite, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- s:start -->\nold table\n<!-- s:end -->\nafter\n")
    tables = "# Effectiveness suite (s)\n\nrows\n\n## Detection targets\n\nmore\n"
    assert suite.update_readme(readme, "s", tables)
    assert readme.read_text() == ("intro\n<!-- s:start -->\nrows\n\n##### Detection targets\n\n"
                                  "more\n<!-- s:end -->\nafter\n")
    # no markers for this suite: nothing is written
    before = readme.read_text()
    assert not suite.update_readme(readme, "other", tables)
    assert readme.read_text() == before
