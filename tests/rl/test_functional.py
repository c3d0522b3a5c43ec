import math

import pytest
import torch

from seam_lightning.rl.functional import (
    entropy_from_logits,
    gae,
    kl_penalty,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)

NAN = float("nan")


# --- masked reductions -------------------------------------------------------


def test_masked_sum_and_mean_over_all_and_along_dim():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(masked_sum(values, mask), torch.tensor(7.0))
    torch.testing.assert_close(masked_mean(values, mask), torch.tensor(7.0 / 3.0))
    torch.testing.assert_close(masked_sum(values, mask, dim=1), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 4.0]))


def test_masked_sum_and_mean_ignore_nan_and_inf_in_masked_slots():
    values = torch.tensor([[1.0, NAN, 3.0], [float("inf"), 5.0, NAN]])
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]])
    torch.testing.assert_close(masked_sum(values, mask), torch.tensor(9.0))
    torch.testing.assert_close(masked_mean(values, mask), torch.tensor(3.0))
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([2.0, 5.0]))


def test_masked_mean_of_empty_mask_is_zero():
    values = torch.tensor([[1.0, 2.0], [NAN, 7.0]])
    torch.testing.assert_close(masked_mean(values, torch.zeros(2, 2)), torch.tensor(0.0))
    row_mask = torch.tensor([[1, 1], [0, 0]])
    torch.testing.assert_close(masked_mean(values, row_mask, dim=1), torch.tensor([1.5, 0.0]))


def test_masked_var_is_unbiased_over_unmasked_entries():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    mask = torch.tensor([1, 1, 1, 1, 0])
    # mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    torch.testing.assert_close(masked_var(values, mask), torch.tensor(5.0 / 3.0))
    torch.testing.assert_close(masked_var(values, mask, unbiased=False), torch.tensor(1.25))


def test_masked_whiten_gives_zero_mean_unit_std_and_zeros_masked():
    values = torch.tensor([[1.0, 2.0, NAN], [3.0, 4.0, 50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    out = masked_whiten(values, mask)
    # mean 2.5, unbiased std sqrt(5/3)
    s = math.sqrt(5.0 / 3.0)
    expected = torch.tensor([[-1.5 / s, -0.5 / s, 0.0], [0.5 / s, 1.5 / s, 0.0]])
    torch.testing.assert_close(out, expected)
    real = out[mask.bool()]
    torch.testing.assert_close(real.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(real.std(), torch.tensor(1.0))


def test_masked_whiten_without_shift_keeps_the_mean():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, NAN])
    mask = torch.tensor([1, 1, 1, 1, 0])
    out = masked_whiten(values, mask, shift_mean=False)
    s = math.sqrt(5.0 / 3.0)
    expected = torch.tensor([2.5 - 1.5 / s, 2.5 - 0.5 / s, 2.5 + 0.5 / s, 2.5 + 1.5 / s, 0.0])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[:4].mean(), torch.tensor(2.5))
    torch.testing.assert_close(out[:4].std(), torch.tensor(1.0))


# --- KL estimators -----------------------------------------------------------

LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5]])
REF_LOGPROBS = torch.tensor([[-2.0, -1.0, -0.5]])  # log r = ref - logp = [-1, 1, 0]


def test_kl_penalty_k1_is_logp_minus_ref_and_can_be_negative():
    out = kl_penalty(LOGPROBS, REF_LOGPROBS, "k1")
    torch.testing.assert_close(out, torch.tensor([[1.0, -1.0, 0.0]]))
    assert (out < 0).any()


def test_kl_penalty_default_is_k1():
    torch.testing.assert_close(kl_penalty(LOGPROBS, REF_LOGPROBS), torch.tensor([[1.0, -1.0, 0.0]]))


def test_kl_penalty_k2_is_half_squared_log_ratio():
    out = kl_penalty(LOGPROBS, REF_LOGPROBS, "k2")
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5, 0.0]]))


def test_kl_penalty_k3_values():
    out = kl_penalty(LOGPROBS, REF_LOGPROBS, "k3")
    # (e^-1 - 1) + 1 = e^-1;  (e - 1) - 1 = e - 2;  0
    torch.testing.assert_close(out, torch.tensor([[0.36787944, 0.71828183, 0.0]]))


def test_kl_penalty_k3_is_never_negative():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(8, 16, generator=gen) * 3
    ref = torch.randn(8, 16, generator=gen) * 3
    assert (kl_penalty(logp, ref, "k3") >= 0).all()


def test_kl_penalty_invalid_estimator_raises():
    with pytest.raises(ValueError):
        kl_penalty(LOGPROBS, REF_LOGPROBS, "k4")


# --- token rewards -----------------------------------------------------------


def test_token_rewards_put_score_on_last_real_token():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = token_rewards(scores, kl, 0.5, mask)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 + 2.0, 0.0]])
    torch.testing.assert_close(out, expected)


def test_token_rewards_masked_positions_are_zero_even_with_nan_kl():
    scores = torch.tensor([3.0])
    kl = torch.tensor([[1.0, NAN, NAN]])
    mask = torch.tensor([[1, 0, 0]])
    out = token_rewards(scores, kl, 0.1, mask)
    torch.testing.assert_close(out, torch.tensor([[-0.1 + 3.0, 0.0, 0.0]]))


def test_token_rewards_row_without_tokens_raises():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError):
        token_rewards(scores, kl, 0.1, mask)


# --- GAE ---------------------------------------------------------------------


def test_gae_gamma_one_lambda_one_is_return_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    mask = torch.ones(1, 3)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # returns-to-go [6, 5, 3]
    torch.testing.assert_close(advantages, torch.tensor([[5.5, 4.0, 1.5]]))
    torch.testing.assert_close(returns, torch.tensor([[6.0, 5.0, 3.0]]))


def test_gae_two_rows_with_padding_does_not_leak_garbage():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 1000.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.4, -1000.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: δ = [0.9·0.6 − 0.5, 0.9·0.7 − 0.6, 1 − 0.7] = [0.04, 0.03, 0.3]
    #        A2 = 0.3, A1 = 0.03 + 0.72·0.3 = 0.246, A0 = 0.04 + 0.72·0.246 = 0.21712
    # row 1: δ1 = 2 − 0.4 = 1.6 (nothing after the last real token),
    #        δ0 = 0.5 + 0.9·0.4 − 1 = −0.14, A0 = −0.14 + 0.72·1.6 = 1.012
    expected_adv = torch.tensor([[0.21712, 0.246, 0.3], [1.012, 1.6, 0.0]])
    torch.testing.assert_close(advantages, expected_adv)
    expected_ret = torch.tensor([[0.71712, 0.846, 1.0], [2.012, 2.0, 0.0]])
    torch.testing.assert_close(returns, expected_ret)


def test_gae_returns_are_advantages_plus_values_on_real_tokens():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 5, generator=gen)
    values = torch.randn(3, 5, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.95, lam=0.9)
    torch.testing.assert_close(returns, (advantages + values) * mask)
    assert (advantages[mask == 0] == 0).all()
    assert (returns[mask == 0] == 0).all()


# --- policy loss -------------------------------------------------------------


def test_policy_loss_ratio_one_is_minus_mean_advantage():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]])
    advantages = torch.tensor([[1.0, 2.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, clip_fraction, approx_kl = policy_loss(logprobs, logprobs.clone(), advantages, mask, 0.2)
    torch.testing.assert_close(loss, torch.tensor(-1.5))
    torch.testing.assert_close(clip_fraction, torch.tensor(0.0))
    torch.testing.assert_close(approx_kl, torch.tensor(0.0))


def test_policy_loss_clips_large_ratio_with_positive_advantage():
    old = torch.tensor([[0.0, -1.0]])
    logprobs = torch.tensor([[math.log(1.5), -1.0]], requires_grad=True)
    advantages = torch.tensor([[2.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, clip_fraction, approx_kl = policy_loss(logprobs, old, advantages, mask, 0.2)
    # token 0: max(−2·1.5, −2·1.2) = −2.4 (clipped); token 1: −1
    torch.testing.assert_close(loss, torch.tensor(-1.7))
    torch.testing.assert_close(clip_fraction, torch.tensor(0.5))
    # k3 of KL(old ‖ new): token 0: (1/1.5 − 1) + log 1.5 = 0.07213225; token 1: 0
    torch.testing.assert_close(approx_kl, torch.tensor(0.07213225 / 2))
    loss.backward()
    # clipped token gets no gradient; token 1: d/dlogp (−A·ρ)/2 = −1·1/2
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -0.5]]))


def test_policy_loss_clips_small_ratio_with_negative_advantage():
    old = torch.tensor([[0.0]])
    logprobs = torch.tensor([[math.log(0.5)]], requires_grad=True)
    advantages = torch.tensor([[-1.0]])
    loss, clip_fraction, _ = policy_loss(logprobs, old, advantages, torch.ones(1, 1), 0.2)
    # max(1·0.5, 1·0.8) = 0.8 (clipped)
    torch.testing.assert_close(loss, torch.tensor(0.8))
    torch.testing.assert_close(clip_fraction, torch.tensor(1.0))
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0]]))


def test_policy_loss_does_not_clip_the_pessimistic_side():
    old = torch.tensor([[0.0]])
    logprobs = torch.tensor([[math.log(0.5)]], requires_grad=True)
    advantages = torch.tensor([[1.0]])
    loss, clip_fraction, _ = policy_loss(logprobs, old, advantages, torch.ones(1, 1), 0.2)
    # max(−0.5, −0.8) = −0.5 (unclipped)
    torch.testing.assert_close(loss, torch.tensor(-0.5))
    torch.testing.assert_close(clip_fraction, torch.tensor(0.0))
    loss.backward()
    # d/dlogp (−A·ρ) = −ρ = −0.5
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.5]]))


def test_policy_loss_ignores_masked_tokens():
    old = torch.tensor([[0.0, 0.0]])
    logprobs = torch.tensor([[0.0, 5.0]])
    advantages = torch.tensor([[3.0, NAN]])
    mask = torch.tensor([[1, 0]])
    loss, clip_fraction, approx_kl = policy_loss(logprobs, old, advantages, mask, 0.2)
    torch.testing.assert_close(loss, torch.tensor(-3.0))
    torch.testing.assert_close(clip_fraction, torch.tensor(0.0))
    torch.testing.assert_close(approx_kl, torch.tensor(0.0))


# --- value loss --------------------------------------------------------------

V = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
V_OLD = torch.tensor([[1.0, 1.0, 3.5, 0.0]])
G = torch.tensor([[2.0, 0.0, 3.0, -100.0]])
V_MASK = torch.tensor([[1, 1, 1, 0]])


def test_value_loss_without_clip_is_half_mse():
    loss, clip_fraction = value_loss(V, V_OLD, G, V_MASK, None)
    # squared errors [1, 4, 0] → ½ · 5/3
    torch.testing.assert_close(loss, torch.tensor(0.5 * 5.0 / 3.0))
    torch.testing.assert_close(clip_fraction, torch.tensor(0.0))


def test_value_loss_with_clip():
    loss, clip_fraction = value_loss(V, V_OLD, G, V_MASK, 0.2)
    # V_clip = [1.0, 1.2, 3.3]; clipped sq errors [1, 1.44, 0.09]; unclipped [1, 4, 0]
    # max = [1, 4, 0.09] → ½ · 5.09/3; only token 2 takes the clipped branch
    torch.testing.assert_close(loss, torch.tensor(0.5 * 5.09 / 3.0))
    torch.testing.assert_close(clip_fraction, torch.tensor(1.0 / 3.0))


def test_value_loss_gradient_is_zero_on_clipped_token():
    values = V.clone().requires_grad_(True)
    loss, _ = value_loss(values, V_OLD, G, V_MASK, 0.2)
    loss.backward()
    # token 0: V = V_old, both branches equal, d½(V−G)²/3 = (1−2)/3; token 1: (2−0)/3; token 2 clipped: 0
    torch.testing.assert_close(values.grad, torch.tensor([[-1.0 / 3.0, 2.0 / 3.0, 0.0, 0.0]]))


# --- entropy -----------------------------------------------------------------


def test_entropy_of_uniform_over_four_is_log_four():
    out = entropy_from_logits(torch.zeros(2, 3, 4))
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, torch.full((2, 3), 1.3862944))


def test_entropy_of_peaked_distribution_is_about_zero():
    out = entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([0.0]), atol=1e-6, rtol=0)


def test_entropy_of_two_equal_logits_is_log_two_in_float32_from_bf16():
    out = entropy_from_logits(torch.tensor([[3.0, 3.0]], dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.69314718]))
