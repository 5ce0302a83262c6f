"""Known answers for the post-training losses (issue 15's numbers)."""

from __future__ import annotations

import math

import pytest
import torch

from herd.post.losses import dpo_loss, dpo_loss_sum, ranking_pairs, reward_ranking_loss_sum, sequence_logprobs


def t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_dpo_known_value() -> None:
    loss = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    assert float(loss) == pytest.approx(0.5981389, abs=1e-7)


def test_dpo_equal_chosen_and_rejected_is_ln2_with_zero_preference_gradient() -> None:
    chosen, rejected = t(-7.0, grad=True), t(-7.0, grad=True)
    terms = dpo_loss_sum(chosen, rejected, t(-5.0), t(-5.0), beta=0.1)
    assert float(terms.loss_sum.detach()) == pytest.approx(math.log(2), abs=1e-12)
    # the same responses: the gradient pushes chosen up and rejected down by equal amounts, so the
    # gradient with respect to the (shared) sequence is zero
    grad_c, grad_r = torch.autograd.grad(terms.loss_sum, (chosen, rejected))
    assert float(grad_c + grad_r) == pytest.approx(0.0, abs=1e-12)
    # with the NLL term: ln 2 + 0.2 * NLL per token
    total = dpo_loss(t(-7.0), t(-7.0), t(-5.0), t(-5.0), 0.1, chosen_nll_sum=t(7.0), chosen_tokens=4, nll_weight=0.2)
    assert float(total) == pytest.approx(math.log(2) + 0.2 * 7.0 / 4, abs=1e-12)


def test_dpo_step_zero_policy_equals_reference() -> None:
    policy_c, policy_r = t(-3.0, -8.0), t(-4.0, -1.0)
    terms = dpo_loss_sum(policy_c, policy_r, policy_c.clone(), policy_r.clone(), beta=0.1)
    assert float(terms.loss_sum) / 2 == pytest.approx(math.log(2), abs=1e-12)
    assert terms.chosen_rewards.abs().max() == 0 and terms.rejected_rewards.abs().max() == 0


def test_dpo_label_smoothing_ipo_and_bad_arguments() -> None:
    smooth = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.1, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-0.2)) + 0.1 * math.log1p(math.exp(0.2))
    assert float(smooth) == pytest.approx(expected, abs=1e-12)
    ipo = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.1, loss_type="ipo")
    assert float(ipo) == pytest.approx((2.0 - 5.0) ** 2, abs=1e-12)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), loss_type="hinge2")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.0)
    with pytest.raises(ValueError, match="chosen_nll_sum"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), nll_weight=0.2)


def test_reward_ranking_three_responses() -> None:
    total, pairs = reward_ranking_loss_sum(t(2.0, 1.0, 0.0))
    assert pairs == 3 and ranking_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert float(total) / pairs == pytest.approx(0.2511505, abs=1e-7)
    two, n = reward_ranking_loss_sum(t(0.5, 0.5))
    assert n == 1 and float(two) == pytest.approx(math.log(2), abs=1e-12)
    margin, _ = reward_ranking_loss_sum(t(1.0, 0.0), margin=1.0)  # Llama 2's margin (off in Llama 3)
    assert float(margin) == pytest.approx(math.log(2), abs=1e-12)
    centered, _ = reward_ranking_loss_sum(t(1.0, -1.0), center_coefficient=0.01)
    assert float(centered) == pytest.approx(math.log1p(math.exp(-2.0)) + 0.01, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        reward_ranking_loss_sum(t(1.0))


def test_sequence_logprobs_is_a_masked_sum() -> None:
    lp = t(-1.0, -2.0, -3.0, -4.0)
    mask = torch.tensor([True, False, True, False])
    assert float(sequence_logprobs(lp, mask)) == -4.0
