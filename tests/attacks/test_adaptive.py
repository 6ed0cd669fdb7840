"""The adaptive attack on FLEML keeps FLEML's own features inside the benign range."""

import pytest
import torch
from torch import nn

from fleml_node.attacks import CoalitionContext, FLEMLAdaptiveAttack, make_attack
from fleml_node.attacks.adaptive import fleml_sampled_coordinates
from fleml_node.defense import RoundContext, make_defense
from fleml_node.learning import TrainConfig, flatten, get_params, local_train
from fleml_node.simulate import SimulationConfig, run_memory
from fleml_node.storage import decode_tensors

CLASSES, K, M = 5, 7, 3
DEFENSE_PARAMS = {"sample_coords": 160}  # fewer than the model's 325 parameters


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def samples(n, g, classes=range(CLASSES)):
    classes = list(classes)
    y = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
    centers = torch.randn(CLASSES, 1, 8, 8, generator=gen(99))
    return centers[y] + 0.7 * torch.randn(n, 1, 8, 8, generator=g), y


@pytest.fixture(scope="module")
def federation():
    """A linear model, a validation set, and 10 non-IID clients' honest updates."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES))
    start = get_params(model)
    config = TrainConfig(epochs=1, batch_size=16, lr=0.1, loss_eval_samples=0)
    updates = []
    for i in range(K + M):
        g = gen(10 + i)
        x, y = samples(60, g, classes=[(i + j) % CLASSES for j in range(3)])
        update, _ = local_train(model, start, x, y, config, g)
        updates.append(flatten(update))
    x_val, y_val = samples(200, gen(3))
    context = CoalitionContext(round_id=2, num_clients=K + M, global_params=flatten(start),
                               model=model, x_val=x_val, y_val=y_val, seed=4, defense="fleml",
                               defense_params=DEFENSE_PARAMS)
    ups = torch.stack(updates)
    return ups[:K], ups[K:], context


def fleml_view(rows, context):
    defense = make_defense("fleml", **DEFENSE_PARAMS)
    return defense.client_features(rows, RoundContext(
        round_number=context.round_id, seed=context.seed, global_params=context.global_params,
        model=context.model, x_val=context.x_val, y_val=context.y_val))


def test_features_stay_inside_the_benign_range(federation):
    benign, own, context = federation
    attack = FLEMLAdaptiveAttack(quantile=0.9)
    plan = attack.solve(benign, own, gen(1), context)
    assert plan.beta is not None and plan.strength > 0  # it found room and pushed
    # recomputed independently: every member within the benign 0.9-quantile of every oriented
    # z-score and of the anomaly score, and still descending FLEML's validation batch
    features = fleml_view(torch.cat([benign, plan.crafted]), context)
    values = {**features.z, "score": features.score}
    assert {"z_cos", "z_norm", "z_vne", "z_val"} <= set(values)
    for key, v in values.items():
        limit = torch.quantile(v[:K].double(), 0.9)
        assert bool((v[K:].double() <= limit + 1e-9).all()), key
    assert bool((features.signals["val_align"][K:] > 0).all())
    # the push points against the benign mean, and only where FLEML does not sample
    base = attack.candidates(benign, own, plan.pushes, torch.tensor(plan.beta), 0.0)
    push = (plan.crafted - base).double()
    assert float(push.sum(0) @ benign.double().mean(0)) < 0
    sampled = fleml_sampled_coordinates(context, benign.shape[1])
    assert sampled is not None and len(sampled) == 160
    assert float(push[:, sampled].abs().max()) < 1e-6
    # the members' pushes are on disjoint blocks (split): they do not look alike
    support = plan.pushes != 0
    assert not bool((support.sum(0) > 1).any())


def test_ipm_of_the_same_strength_would_be_caught(federation):
    """The constraint binds: the plain IPM update leaves the benign range."""
    benign, own, context = federation
    ipm = make_attack("ipm", epsilon=0.5).craft(benign, own, gen(), context)
    features = fleml_view(torch.cat([benign, ipm]), context)
    assert bool((features.signals["val_align"][K:] <= 0).all())


def test_reproducible_and_seeded(federation):
    benign, own, context = federation
    a = FLEMLAdaptiveAttack().craft(benign, own, gen(1), context)
    b = FLEMLAdaptiveAttack().craft(benign, own, gen(1), context)
    c = FLEMLAdaptiveAttack().craft(benign, own, gen(2), context)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # another deal of the coordinates among the members


def test_own_knowledge_and_other_directions(federation):
    benign, own, context = federation
    for params in ({"knowledge": "own"}, {"direction": "alie"}, {"direction": "loss"},
                   {"target": "all", "split": False, "project": False}):
        out = make_attack("fleml_adaptive", **params).craft(benign, own, gen(), context)
        assert out.shape == own.shape and bool(torch.isfinite(out).all())
    without_validation = CoalitionContext(round_id=1, num_clients=10)
    with pytest.raises(ValueError, match="validation set"):
        FLEMLAdaptiveAttack(direction="loss").craft(benign, own, gen(), without_validation)


def test_parameter_validation():
    for bad in ({"direction": "up"}, {"target": "some"}, {"quantile": 0}, {"quantile": 1.5},
                {"min_align": 1.0}, {"max_strength": -1.0}, {"steps": 0}, {"split": 1},
                {"knowledge": "all"}):
        with pytest.raises(ValueError):
            FLEMLAdaptiveAttack(**bad)


def test_adaptive_in_a_memory_round():
    tiny = dict(dataset="mnist", num_clients=4, malicious_fraction=0.5, defenses=("fleml",),
                rounds=1, max_client_samples=32, validation_size=64, test_samples=100,
                mode="memory", attack="fleml_adaptive")
    config = SimulationConfig(**tiny)
    published = []
    for _ in range(2):
        seen = {}

        def spy(round_id, client, blob, seen=seen):
            seen[client] = flatten(decode_tensors(blob, expected_kind="update").tensors)

        records = run_memory(config, "fleml", lambda r: None, corrupt=spy)
        published.append((seen, records[0]))
    (first, rec1), (second, rec2) = published
    assert rec1.aggregate_sha256 == rec2.aggregate_sha256
    assert all(torch.equal(first[i], second[i]) for i in first)
    assert set(first) == {0, 1, 2, 3}
