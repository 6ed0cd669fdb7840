"""FLEML: detection on constructed rounds, look-ahead learning, determinism and state."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fleml_node.defense import FLEMLDefense, InvalidRoundError, RoundContext, make_defense
from fleml_node.defense.fedavg import FedAvgDefense
from fleml_node.defense.fleml import FLEMLConfig
from fleml_node.learning.params import ParamSpec, flatten, get_params, set_params, unflatten

from .conftest import tiny_model

N_CLIENTS = 10


def _client_data(seed: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 4, generator=gen)
    y = x[:, :3].argmax(dim=1)
    return x, (y + 1) % 3 if flip else y


def _local_update(global_flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Five full-batch SGD steps of the tiny model; returns new - global."""
    model = tiny_model()
    spec = ParamSpec.from_model(model)
    set_params(model, unflatten(global_flat, spec))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return flatten(get_params(model)) - global_flat


def _round(global_flat: torch.Tensor, flippers: int, round_number: int) -> torch.Tensor:
    return torch.stack(
        [
            _local_update(global_flat, *_client_data(100 * round_number + i, flip=i < flippers))
            for i in range(N_CLIENTS)
        ]
    )


def _ctx(model: nn.Module, global_flat, validation, round_number: int = 0) -> RoundContext:
    x_val, y_val = validation
    return RoundContext(
        client_ids=[f"c{i}" for i in range(N_CLIENTS)],
        sample_counts=[40] * N_CLIENTS,
        round_number=round_number,
        global_params=global_flat,
        model=model,
        x_val=x_val,
        y_val=y_val,
        seed=5,
    )


def test_gross_outlier_is_flagged(model, global_params, validation) -> None:
    updates = _round(global_params, 0, 0)
    updates[3] = 100.0 * torch.randn(updates.shape[1], generator=torch.Generator().manual_seed(9))
    result = FLEMLDefense().aggregate(updates, _ctx(model, global_params, validation))
    assert result.flagged_ids == ["c3"]
    assert result.clients[3].coefficient == 0.0
    assert result.clients[3].reason.startswith("magnitude: norm ")
    assert result.info["flag_tests"]["magnitude"] == ["c3"]
    assert sum(result.coefficients) <= 1.0 + 1e-12


def test_sign_flipped_updates_are_flagged(model, global_params, validation) -> None:
    updates = _round(global_params, 0, 0)
    updates[:2] *= -1.0
    result = FLEMLDefense().aggregate(updates, _ctx(model, global_params, validation))
    assert set(result.flagged_ids) == {"c0", "c1"}


def test_honest_round_flags_nobody(model, global_params, validation) -> None:
    result = FLEMLDefense().aggregate(
        _round(global_params, 0, 0), _ctx(model, global_params, validation)
    )
    assert result.flagged_ids == []
    assert all(c.coefficient > 0 for c in result.clients)
    # d = 15 is too few coordinates for the binned information signals
    assert set(result.info["signals"]) == {"z_cos", "z_norm", "z_vne", "z_val", "z_peer"}


def test_label_flippers_lose_weight_and_fedavg_loses_accuracy(model, validation) -> None:
    x_val, y_val = validation
    start = flatten(get_params(model))
    fleml, fedavg = FLEMLDefense(), FedAvgDefense()
    g_fleml, g_fedavg = start.clone(), start.clone()
    flipper_mass = []
    for r in range(6):
        result = fleml.aggregate(_round(g_fleml, 3, r), _ctx(model, g_fleml, validation, r))
        flipper_mass.append(sum(result.coefficients[:3]))
        g_fleml = g_fleml + result.update
        g_fedavg = g_fedavg + fedavg.aggregate(_round(g_fedavg, 3, r)).update

    def val_loss(flat: torch.Tensor) -> float:
        net = tiny_model()
        set_params(net, unflatten(flat, ParamSpec.from_model(net)))
        with torch.no_grad():
            return float(F.cross_entropy(net(x_val), y_val))

    assert max(flipper_mass) < 0.1  # an even share would be 0.3
    assert val_loss(g_fleml) < val_loss(g_fedavg)


def test_same_inputs_same_report(model, global_params, validation) -> None:
    updates = _round(global_params, 2, 0)
    ctx = _ctx(model, global_params, validation)
    first = FLEMLDefense().aggregate(updates, ctx)
    second = FLEMLDefense().aggregate(updates, ctx)
    assert torch.equal(first.update, second.update)
    assert first.to_json() == second.to_json()


def test_state_restore_gives_identical_next_round(
    model, global_params, validation, tmp_path
) -> None:
    agg = FLEMLDefense()
    agg.aggregate(_round(global_params, 2, 0), _ctx(model, global_params, validation, 0))
    saved = json.dumps(agg.state_dict())
    agg.save_state(tmp_path / "fleml.json")
    updates = _round(global_params, 2, 1)
    expected = agg.aggregate(updates, _ctx(model, global_params, validation, 1))
    for restore in ("dict", "file"):
        fresh = FLEMLDefense()
        if restore == "dict":
            fresh.load_state_dict(json.loads(saved))
        else:
            fresh.load_state(tmp_path / "fleml.json")
        got = fresh.aggregate(updates, _ctx(model, global_params, validation, 1))
        assert torch.equal(got.update, expected.update)
        assert got.to_json() == expected.to_json()
        assert fresh.state_dict() == agg.state_dict()


def test_state_from_other_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        FLEMLDefense(bins=8).load_state_dict(FLEMLDefense().state_dict())
    with pytest.raises(ValueError, match="format"):
        FLEMLDefense().load_state_dict({"format": "other"})


def test_fallback_without_validation() -> None:
    # 9 noisy copies of one direction and one sign-flipped copy, d = 400
    gen = torch.Generator().manual_seed(4)
    direction = torch.randn(400, generator=gen)
    updates = direction + 0.5 * torch.randn(10, 400, generator=gen)
    updates[6] *= -1.0
    result = FLEMLDefense().aggregate(updates)
    assert result.info["validation"] is False and result.info["meta_losses"] == []
    assert result.info["signals"] == ["z_cos", "z_norm", "z_vne", "z_ce", "z_mi", "z_peer"]
    assert result.flagged_ids == ["6"]
    assert float(torch.nn.functional.cosine_similarity(result.update, direction, dim=0)) > 0.95


def test_clip_factor_is_folded_into_the_coefficient(model, global_params, validation) -> None:
    updates = _round(global_params, 0, 0)
    updates[4] *= 1.5
    result = FLEMLDefense(clip_ratio=1.0).aggregate(updates, _ctx(model, global_params, validation))
    norms = torch.linalg.vector_norm(updates, dim=1).to(torch.float64)
    client = result.clients[4]
    assert client.features["clip_factor"] == pytest.approx(float(norms.median() / norms[4]))
    assert client.coefficient == client.features["weight"] * client.features["clip_factor"]
    assert all(c.features["clip_factor"] <= 1.0 for c in result.clients)


def test_never_flags_everyone() -> None:
    # two copies of one vector: each is the other's near-copy; flagging both would leave
    # nothing to aggregate, so the collusion test is dropped for the round
    updates = torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
    result = FLEMLDefense().aggregate(updates, RoundContext(client_ids=["a", "b"]))
    assert result.flagged_ids == []


def test_colluding_copies_are_flagged_and_only_they(model, global_params, validation) -> None:
    # three members send one crafted vector (mean minus one std: ALIE-like, inside the
    # benign spread coordinate by coordinate); only the redundancy gives them away
    updates = _round(global_params, 0, 0)
    crafted = updates[3:].mean(dim=0) - updates[3:].std(dim=0)
    updates[:3] = crafted
    result = FLEMLDefense().aggregate(updates, _ctx(model, global_params, validation))
    assert result.flagged_ids == ["c0", "c1", "c2"]
    assert result.info["flag_tests"]["collusion"] == ["c0", "c1", "c2"]
    assert all(c.reason.startswith("collusion: closest peer cosine 1.0000") for c in
               result.clients[:3])
    ablated = FLEMLDefense(flag_collusion=False).aggregate(
        updates, _ctx(model, global_params, validation))
    assert "collusion" not in ablated.info["flag_tests"] and ablated.flagged_ids == []


def test_earlier_score_rule_is_opt_in(model, global_params, validation) -> None:
    assert FLEMLDefense().params()["flag_score"] is False
    result = FLEMLDefense(flag_score=True).aggregate(
        _round(global_params, 3, 0), _ctx(model, global_params, validation))
    assert set(result.info["flag_tests"]) == {"collusion", "magnitude", "opposition", "score"}


def test_invalid_settings_and_context(model, validation) -> None:
    with pytest.raises(ValueError):
        FLEMLDefense(bins=1)
    assert make_defense("fleml", bins=8).params()["bins"] == 8
    x_val, y_val = validation
    ctx = RoundContext(global_params=torch.zeros(7), model=model, x_val=x_val, y_val=y_val)
    with pytest.raises(InvalidRoundError, match="parameters"):
        FLEMLDefense().aggregate(torch.ones(3, 7), ctx)
    ctx = RoundContext(global_params=torch.zeros(15), model=model, x_val=x_val, y_val=y_val[:3])
    with pytest.raises(InvalidRoundError, match="equal lengths"):
        FLEMLDefense().aggregate(torch.ones(3, 15), ctx)


def test_config_round_trip() -> None:
    config = FLEMLConfig(flag_threshold=4, bins=8, clip=False, meta_steps=3)
    assert config.flag_threshold == 4.0 and isinstance(config.flag_threshold, float)
    as_dict = config.to_dict()
    assert list(as_dict) == FLEMLConfig.names() and len(as_dict) == 24
    assert FLEMLConfig.from_dict(as_dict) == config
    assert json.loads(json.dumps(as_dict)) == as_dict
    by_keywords = make_defense("fleml", **as_dict)
    assert by_keywords.config == config and by_keywords.params() == as_dict
    assert FLEMLDefense(config).params() == as_dict
    # the parameters in a round report are the config's
    updates = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    assert FLEMLDefense(config).aggregate(updates).params == as_dict
    assert FLEMLDefense().params() == FLEMLConfig().to_dict()


def test_unknown_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['binz', 'flag'\]"):
        make_defense("fleml", binz=8, flag=1)
    with pytest.raises(ValueError, match="either a config or keyword parameters"):
        FLEMLDefense(FLEMLConfig(), bins=8)
    with pytest.raises(ValueError, match="batches >= 1"):
        FLEMLConfig.from_dict({"meta_batch": 0})


def test_claimed_sample_counts_are_ignored_unless_sample_prior(
        model, global_params, validation) -> None:
    """A member's sample count is its own claim: by default FLEML's weights do not move when
    one member claims ten times more; with ``sample_prior`` it gains weight, but at most e^2."""
    updates = _round(global_params, 0, 0)
    honest = _ctx(model, global_params, validation)
    inflated = dataclasses.replace(honest, sample_counts=[400] + [40] * (N_CLIENTS - 1))
    default = [FLEMLDefense().aggregate(updates, c) for c in (honest, inflated)]
    assert torch.equal(default[0].update, default[1].update)
    assert [c.coefficient for c in default[0].clients] == \
        [c.coefficient for c in default[1].clients]
    trusting = [FLEMLDefense(sample_prior=True).aggregate(updates, c) for c in (honest, inflated)]
    gain = trusting[1].clients[0].coefficient / trusting[0].clients[0].coefficient
    assert 1.5 < gain <= math.exp(2) + 1e-9


def test_entropy_signals_can_be_left_out_of_score_and_weights(
        model, global_params, validation) -> None:
    updates = _round(global_params, 2, 0)
    ctx = _ctx(model, global_params, validation)
    full = FLEMLDefense().client_features(updates, ctx)
    without = FLEMLDefense(entropy_signals=False).client_features(updates, ctx)
    assert "z_vne" in full.z  # (the tiny model has too few coordinates for z_ce and z_mi)
    assert not {"z_vne", "z_ce", "z_mi"} & set(without.z)
    # the other signals are the same; the score is the mean over fewer of them
    assert torch.equal(full.z["z_cos"], without.z["z_cos"])
    assert not torch.equal(full.score, without.score)


def test_validation_passes_in_micro_batches_give_the_same_round(
        model, global_params, validation) -> None:
    """Smaller validation passes bound the activation memory; the gradients they accumulate
    are the same up to float rounding, so flags agree and coefficients match closely."""
    updates = _round(global_params, 2, 0)
    ctx = _ctx(model, global_params, validation)
    whole = FLEMLDefense(align_batch=64, meta_batch=64).aggregate(updates, ctx)
    passes = FLEMLDefense(align_batch=64, meta_batch=64, val_micro_batch=8).aggregate(
        updates, ctx)
    assert passes.flagged_ids == whole.flagged_ids
    for a, b in zip(whole.clients, passes.clients, strict=True):
        assert b.coefficient == pytest.approx(a.coefficient, rel=1e-4, abs=1e-7)
    assert torch.allclose(passes.update, whole.update, rtol=1e-4, atol=1e-7)
    # and they are really split: not the same floats as one pass
    assert [c.coefficient for c in passes.clients] != [c.coefficient for c in whole.clients]
