"""Branch-Train-Stitch (issue 20, first slice): stitch placement, parameter count, the seed-equivalence
of the initial stitches, gates, frozen hub and experts under stitch training, and the merging baselines."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from herd.experts import (
    EXPERTS_INTO_HUB,
    HUB_INTO_EXPERTS,
    BTMEnsemble,
    StitchedModel,
    StitchLayer,
    build_btx,
    load_balancing_loss,
    model_soup,
    stitch_parameter_count,
    stitch_plan,
    task_arithmetic,
)
from herd.model import ModelConfig, Transformer, init_weights

H2E, E2H = HUB_INTO_EXPERTS, EXPERTS_INTO_HUB


def tiny_model(n_layers: int = 4, dim: int = 32, seed: int = 0) -> Transformer:
    config = ModelConfig(dim=dim, n_layers=n_layers, n_heads=4, n_kv_heads=2, vocab_size=64, ffn_dim=64)
    model = Transformer(config)
    init_weights(model, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def perturbed(model: Transformer, seed: int, scale: float = 0.05) -> Transformer:
    """An "expert": the model with every float weight moved a little (as continued pretraining would)."""
    expert = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return expert


def checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


TOKENS = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(7))


def test_plan_places_stitches_after_every_floor_l_over_k_layers_ending_experts_into_hub() -> None:
    assert stitch_plan(20, 4) == [(5, H2E), (10, E2H), (15, H2E), (20, E2H)]
    assert stitch_plan(30, 4) == [(7, H2E), (14, E2H), (21, H2E), (28, E2H)]
    assert stitch_plan(12, 3) == [(4, E2H), (8, H2E), (12, E2H)]
    assert stitch_plan(5, 1) == [(5, E2H)]
    for bad in (0, 6):
        with pytest.raises(ValueError, match="between 1 and"):
            stitch_plan(5, bad)


@pytest.mark.parametrize(("dim", "n", "k"), [(16, 1, 1), (24, 2, 3), (32, 3, 4), (8, 5, 2)])
def test_trainable_parameter_count_is_k_times_2n_plus_1_times_d_squared(dim: int, n: int, k: int) -> None:
    hub = tiny_model(n_layers=4, dim=dim)
    stitched = StitchedModel(hub, [copy.deepcopy(hub) for _ in range(n)], n_stitches=k)
    trainable = sum(p.numel() for p in stitched.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in stitched.trainable_parameters()) == k * (2 * n + 1) * dim * dim
    assert stitch_parameter_count(dim, n, k) == trainable


def test_the_papers_stitch_count() -> None:
    assert stitch_parameter_count(3072, 3, 4) == 264_241_152


@pytest.mark.parametrize("n_stitches", [1, 2, 3, 4])
@pytest.mark.parametrize("training", [False, True])
def test_copies_of_the_seed_with_initial_stitches_give_the_seeds_logits(n_stitches: int, training: bool) -> None:
    seed = tiny_model()
    stitched = StitchedModel(seed, [copy.deepcopy(seed) for _ in range(3)], n_stitches=n_stitches)
    stitched.train(training)  # gate dropout on: a convex mix of equal states is still that state
    with torch.no_grad():
        torch.testing.assert_close(stitched(TOKENS), seed(TOKENS), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [H2E, E2H])
def test_each_initial_stitch_kind_maps_equal_states_to_themselves(kind: str) -> None:
    stitch = StitchLayer(32, 2, kind).train()
    h = torch.randn(3, 5, 32)
    hub, experts = stitch(h, [h.clone(), h.clone()])
    torch.testing.assert_close(hub, h, atol=1e-6, rtol=1e-6)
    for state in experts:
        torch.testing.assert_close(state, h, atol=1e-6, rtol=1e-6)


def test_initial_stitches_differ_from_the_seed_once_experts_differ() -> None:
    seed = tiny_model()
    stitched = StitchedModel(seed, [perturbed(seed, 1), perturbed(seed, 2)], n_stitches=2)
    with torch.no_grad():
        assert (stitched(TOKENS) - seed(TOKENS)).abs().max() > 1e-3


def test_gates_softmax_sums_to_one_and_sigmoid_lies_in_zero_one() -> None:
    h = torch.randn(4, 6, 16)
    into_hub = StitchLayer(16, 3, E2H).eval()
    into_experts = StitchLayer(16, 3, H2E).eval()
    for stitch in (into_hub, into_experts):
        torch.nn.init.normal_(stitch.gate.weight, std=0.1)
    g = into_hub.gates(h)
    assert g.shape == (4, 6, 4, 16)
    torch.testing.assert_close(g.sum(dim=-2), torch.ones(4, 6, 16))
    assert (g.std(dim=-2) > 0).any()  # not uniform once the gate has weights
    s = into_experts.gates(h)
    assert bool(((s > 0) & (s < 1)).all())
    # the experts-into-hub output is the gate-weighted mix the formula gives
    experts = [torch.randn(4, 6, 16) for _ in range(3)]
    mixed, passed = into_hub(h, experts)
    expected = g[..., 0, :] * h + sum(g[..., i + 1, :] * into_hub.proj[i](e) for i, e in enumerate(experts))
    torch.testing.assert_close(mixed, expected)
    assert all(a is b for a, b in zip(passed, experts))
    hub, updated = into_experts(h, experts)
    assert hub is h
    for i, (new, old) in enumerate(zip(updated, experts)):
        torch.testing.assert_close(new, (1 - s[..., i + 1, :]) * old + s[..., i + 1, :] * into_experts.proj[i](h))


def test_stitch_training_changes_only_the_stitches() -> None:
    seed = tiny_model(seed=3)
    experts = [perturbed(seed, 10 + i) for i in range(2)]
    before = [checksum(m) for m in (seed, *experts)]
    stitched = StitchedModel(seed, experts, n_stitches=2)
    stitches_before = checksum(stitched.stitches)
    optimizer = torch.optim.AdamW(stitched.trainable_parameters(), lr=1e-2)
    stitched.train()
    losses = []
    for _ in range(8):
        logits = stitched(TOKENS[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), TOKENS[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert not stitched.hub.training and not any(m.training for m in stitched.experts)
    assert all(p.grad is None for m in (seed, *experts) for p in m.parameters())
    assert [checksum(m) for m in (seed, *experts)] == before
    assert checksum(stitched.stitches) != stitches_before
    assert losses[-1] < losses[0]


def test_last_gates_are_per_token_model_weights() -> None:
    seed = tiny_model()
    stitched = StitchedModel(seed, [perturbed(seed, 1), perturbed(seed, 2)], n_stitches=2).eval()
    gates = stitched.last_gates(TOKENS)
    assert gates.shape == (2, 9, 3)
    torch.testing.assert_close(gates, torch.full((2, 9, 3), 1 / 3))  # zero gate weights: uniform


def test_experts_must_match_the_hub() -> None:
    with pytest.raises(ValueError, match="branched from the hub"):
        StitchedModel(tiny_model(n_layers=4), [tiny_model(n_layers=2)], n_stitches=2)
    with pytest.raises(ValueError, match="at least one expert"):
        StitchedModel(tiny_model(), [], n_stitches=1)
    with pytest.raises(ValueError, match="expert states"):
        StitchLayer(8, 2, E2H)(torch.zeros(8), [torch.zeros(8)])


def test_soup_of_identical_models_and_task_arithmetic_at_zero_are_the_seed() -> None:
    seed = tiny_model()
    state = seed.state_dict()
    soup = model_soup([copy.deepcopy(state) for _ in range(3)])
    for key, value in state.items():
        torch.testing.assert_close(soup[key], value)  # (x + x + x) / 3 in float32: equal up to rounding
    experts = [perturbed(seed, i).state_dict() for i in range(3)]
    zero = task_arithmetic(state, experts, 0.0)
    for key, value in state.items():
        assert torch.equal(zero[key], value)


def test_task_arithmetic_adds_the_scaled_sum_of_task_vectors() -> None:
    seed = tiny_model()
    state = seed.state_dict()
    a, b = perturbed(seed, 1).state_dict(), perturbed(seed, 2).state_dict()
    one = task_arithmetic(state, [a], 1.0)
    for key in state:
        torch.testing.assert_close(one[key], a[key])
    half = task_arithmetic(state, [a, b], 0.5)
    key = "layers.0.attention.wq.weight" if "layers.0.attention.wq.weight" in state else next(iter(state))
    torch.testing.assert_close(half[key], state[key] + 0.5 * ((a[key] - state[key]) + (b[key] - state[key])))
    soup = model_soup([a, b])
    torch.testing.assert_close(half[key], soup[key])  # lambda = 1/n over n experts is the soup
    broken = dict(b)
    broken.pop(key)
    with pytest.raises(Exception, match="missing"):
        task_arithmetic(state, [a, broken], 1.0)


def test_btm_ensemble_mixes_probabilities() -> None:
    seed = tiny_model()
    with torch.no_grad():
        same = BTMEnsemble([copy.deepcopy(seed), copy.deepcopy(seed)])(TOKENS)
        torch.testing.assert_close(same, seed(TOKENS).log_softmax(-1), atol=1e-5, rtol=1e-5)
        a, b = perturbed(seed, 1), perturbed(seed, 2)
        mixed = BTMEnsemble([a, b], weights=[3.0, 1.0])(TOKENS)
        expected = (0.75 * a(TOKENS).softmax(-1) + 0.25 * b(TOKENS).softmax(-1)).log()
        torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2, 9))
    with pytest.raises(ValueError, match="non-negative"):
        BTMEnsemble([seed], weights=[-1.0])


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_btx_from_identical_experts_is_the_seed(top_k: int) -> None:
    seed = tiny_model()
    btx = build_btx([copy.deepcopy(seed) for _ in range(3)], top_k=top_k)
    with torch.no_grad():
        torch.testing.assert_close(btx(TOKENS), seed(TOKENS), atol=1e-5, rtol=1e-5)


def test_btx_averages_all_but_the_ffns_and_routes_each_token_to_top_k() -> None:
    seed = tiny_model()
    experts = [perturbed(seed, i) for i in range(3)]
    btx = build_btx(experts, top_k=2)
    soup = model_soup([e.state_dict() for e in experts])
    state = btx.state_dict()
    for key, value in soup.items():
        if ".feed_forward." not in key:
            torch.testing.assert_close(state[key], value)
    for index, block in enumerate(btx.blocks()):
        for i, ffn in enumerate(block.feed_forward.experts):
            torch.testing.assert_close(ffn.w1.weight, experts[i].blocks()[index].feed_forward.w1.weight)
    mixture = btx.blocks()[0].feed_forward
    _, weights = mixture.routing(torch.randn(10, 32))
    assert ((weights > 0).sum(-1) == 2).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    # the routed output is the weighted sum of the chosen experts' outputs
    x = torch.randn(4, 32)
    with torch.no_grad():
        _, w = mixture.routing(x)
        expected = sum(w[:, i, None] * ffn(x) for i, ffn in enumerate(mixture.experts))
        torch.testing.assert_close(mixture(x), expected, atol=1e-6, rtol=1e-5)


def test_btx_load_balancing_loss_is_one_when_uniform_and_trains_the_router() -> None:
    seed = tiny_model()
    btx = build_btx([perturbed(seed, i) for i in range(4)], top_k=4)
    for block in btx.blocks():
        torch.nn.init.zeros_(block.feed_forward.router.weight)  # uniform routing
    with torch.no_grad():
        btx(TOKENS)
    torch.testing.assert_close(load_balancing_loss(btx), torch.tensor(float(len(btx.blocks()))))
    skewed = build_btx([perturbed(seed, i) for i in range(4)], top_k=1)
    mixture = skewed.blocks()[0].feed_forward
    with torch.no_grad():
        mixture.router.weight.zero_()
        mixture.router.weight[0] = 1.0  # positive inputs all go to expert 0
        mixture(torch.rand(16, 32) + 0.5)
    torch.testing.assert_close(mixture.aux_loss, torch.tensor(4.0))  # n * (1 * P_0), P_0 ~ 1
    logits = skewed(TOKENS)
    (logits.logsumexp(-1).mean() + load_balancing_loss(skewed)).backward()
    # everything trains (an expert FFN that no token was routed to this step has no gradient yet)
    assert all(p.requires_grad for p in skewed.parameters())
    assert all(p.grad is not None for name, p in skewed.named_parameters() if ".feed_forward.experts." not in name)
    assert mixture.router.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="top_k"):
        build_btx([seed], top_k=2)
