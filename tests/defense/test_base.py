"""Round validation, registry, the shared weighted sum and JSON replay of every method."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fleml_node.defense import (
    REGISTRY,
    AggregationResult,
    ClientReport,
    Defense,
    FedAvgDefense,
    InvalidRoundError,
    KrumDefense,
    RoundContext,
    make_defense,
    replay,
    verify,
    weighted_sum,
)
from fleml_node.defense.base import robust_z, tensor_sha256, validate_round

NAMES = ["fedavg", "krum", "multikrum", "median", "trimmedmean", "fltrust", "fleml"]


def test_registry_has_every_method() -> None:
    assert sorted(REGISTRY) == sorted(NAMES)
    assert isinstance(make_defense("FedAvg"), FedAvgDefense)
    with pytest.raises(ValueError, match="unknown defense"):
        make_defense("bulyan")


def test_unknown_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"defense 'krum' has no parameter\(s\) \['g'\]"):
        make_defense("krum", g=1)
    with pytest.raises(ValueError, match=r"'fedavg' has no parameter\(s\) \['f'\]"):
        make_defense("fedavg", f=1)
    assert make_defense("multikrum", f=1, m=2).params() == {"f": 1, "m": 2}


@pytest.mark.parametrize(
    ("updates", "ctx", "message"),
    [
        (torch.zeros(0, 3), RoundContext(), "empty round"),
        (torch.zeros(3), RoundContext(), r"shape \[n, d\]"),
        (torch.zeros(2, 0), RoundContext(), "dimension 0"),
        (torch.zeros(2, 3, dtype=torch.int64), RoundContext(), "floating point"),
        (torch.zeros(2, 3), RoundContext(client_ids=["a"]), "1 client ids for 2"),
        (torch.zeros(2, 3), RoundContext(client_ids=["a", "a"]), "unique"),
        (torch.zeros(2, 3), RoundContext(sample_counts=[1, 2, 3]), "3 sample counts"),
        (torch.zeros(2, 3), RoundContext(sample_counts=[0, 0]), "not all 0"),
        (torch.zeros(2, 3), RoundContext(sample_counts=[1.5, 2]), "integers"),
        (torch.zeros(2, 3), RoundContext(global_params=torch.zeros(4)), "global_params"),
        (torch.zeros(2, 3), RoundContext(root_update=torch.zeros(2)), "root_update"),
    ],
)
def test_invalid_rounds_raise(updates: torch.Tensor, ctx: RoundContext, message: str) -> None:
    with pytest.raises(InvalidRoundError, match=message):
        make_defense("fedavg").aggregate(updates, ctx)


def test_non_finite_rows_are_listed() -> None:
    updates = torch.zeros(4, 3)
    updates[1, 2] = math.nan
    updates[3, 0] = -math.inf
    with pytest.raises(InvalidRoundError, match=r"rows \[1, 3\]") as err:
        make_defense("median").aggregate(updates)
    assert err.value.bad_rows == [1, 3]


def test_validate_round_converts_and_names() -> None:
    updates, ids = validate_round(torch.ones(2, 3, dtype=torch.float64), RoundContext())
    assert updates.dtype == torch.float32 and updates.is_contiguous()
    assert ids == ["0", "1"]


def test_weighted_sum_is_float64_accumulation_in_row_order() -> None:
    # 1e8 + 1 - 1e8 loses the 1 in float32 but not in float64.
    updates = torch.tensor([[1e8], [1.0], [-1e8]], dtype=torch.float32)
    assert weighted_sum(updates, [1.0, 1.0, 1.0]).item() == 1.0
    assert weighted_sum(torch.tensor([[2.0, 4.0], [1.0, 1.0]]), [0.5, 0.0]).tolist() == [1.0, 2.0]
    with pytest.raises(InvalidRoundError):
        weighted_sum(updates, [1.0])
    with pytest.raises(InvalidRoundError):
        weighted_sum(updates, [1.0, math.nan, 1.0])


def test_robust_z_by_hand() -> None:
    # median 2, |x - 2| = [1, 0, 1, 8] -> lower median MAD 1 -> scale 1.4826.
    z = robust_z(torch.tensor([1.0, 2.0, 3.0, 10.0]), 1e-3)
    assert z.tolist() == pytest.approx([-1 / 1.4826, 0.0, 1 / 1.4826, 8 / 1.4826])
    assert robust_z(torch.ones(3), 1e-3).tolist() == [0.0, 0.0, 0.0]
    assert robust_z(torch.tensor([0.0, 0.0, 1.0]), 0.5).tolist() == [0.0, 0.0, 2.0]


def _round(name: str, model, global_params, validation):
    gen = torch.Generator().manual_seed(7)
    updates = torch.randn(9, global_params.numel(), generator=gen) * 0.1
    updates[0] *= 20.0
    x_val, y_val = validation
    ctx = RoundContext(
        client_ids=[f"client-{i}" for i in range(9)],
        sample_counts=[10 * (i + 1) for i in range(9)],
        round_number=3,
        global_params=global_params,
        model=model,
        x_val=x_val,
        y_val=y_val,
        root_update=updates[1:].mean(dim=0),
        seed=11,
    )
    return updates, make_defense(name).aggregate(updates, ctx)


@pytest.mark.parametrize("name", NAMES)
def test_json_report_replays_bitwise(name: str, model, global_params, validation) -> None:
    updates, result = _round(name, model, global_params, validation)
    text = result.to_json()
    report = json.loads(text)
    assert report["method"] == name and report["n_clients"] == 9
    assert [c["client_id"] for c in report["clients"]] == [f"client-{i}" for i in range(9)]
    replayed = replay(updates, report)
    assert replayed.dtype == torch.float32
    assert torch.equal(replayed, result.update)
    assert torch.equal(REGISTRY[name].replay(updates, text), result.update)
    assert verify(updates, text)
    assert report["aggregate_sha256"] == tensor_sha256(result.update)
    assert not verify(updates + 1.0, report)


def test_linear_report_coefficients_are_exact(model, global_params, validation) -> None:
    updates, result = _round("fleml", model, global_params, validation)
    for client in json.loads(result.to_json())["clients"]:
        assert float.fromhex(client["coefficient_hex"]) == client["coefficient"]


def test_replay_checks_report_against_updates(model, global_params, validation) -> None:
    updates, result = _round("fedavg", model, global_params, validation)
    with pytest.raises(InvalidRoundError, match="cannot replay"):
        KrumDefense.replay(updates, result)
    with pytest.raises(InvalidRoundError, match="client ids"):
        replay(updates[:5], result)
    with pytest.raises(InvalidRoundError, match="dimension"):
        replay(updates[:, :4], result)
    report = result.to_dict() | {"method": "nope"}
    with pytest.raises(InvalidRoundError, match="unknown method"):
        Defense.replay(updates, report)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=64), min_size=1, max_size=6),
    st.integers(0, 2**31 - 1),
)
def test_coefficients_survive_json_exactly(coefficients: list[float], seed: int) -> None:
    updates = torch.randn(len(coefficients), 7, generator=torch.Generator().manual_seed(seed))
    clients = [
        ClientReport(client_id=str(i), coefficient=c) for i, c in enumerate(coefficients)
    ]
    result = AggregationResult("fedavg", {}, weighted_sum(updates, coefficients), clients)
    assert torch.equal(replay(updates, json.loads(result.to_json())), result.update)
