import math

import pytest
import torch

from seam_lightning.rl.functional import (
    entropy_from_logits,
    gae,
    kl_penalty,
    logprobs_and_entropy,
    masked_mean,
    masked_sum,
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
    # k3 of KL(old ‖ new) with r = π/π_old: token 0: (1.5 − 1) − log 1.5 = 0.09453489; token 1: 0
    torch.testing.assert_close(approx_kl, torch.tensor(0.09453489 / 2))
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


def test_policy_loss_approx_kl_is_k3_of_the_new_over_old_probability_ratio():
    p_old = [0.5, 0.2, 0.1, 0.4]
    p_new = [0.25, 0.3, 0.1, 0.9]
    mask = [1, 1, 1, 0]
    # k3 = (r − 1) − log r with r = p_new / p_old, averaged by hand over the real tokens:
    # r = [0.5, 1.5, 1.0] → [−0.5 + log 2, 0.5 − log 1.5, 0]
    k3 = [(n / o - 1.0) - math.log(n / o) for o, n, m in zip(p_old, p_new, mask) if m]
    expected = sum(k3) / len(k3)
    assert expected == pytest.approx((math.log(2.0) - 0.5 + 0.5 - math.log(1.5)) / 3)
    _, _, approx_kl = policy_loss(torch.tensor([p_new]).log(), torch.tensor([p_old]).log(), torch.ones(1, 4),
                                  torch.tensor([mask]), 0.2)
    torch.testing.assert_close(approx_kl, torch.tensor(expected))


def test_policy_loss_approx_kl_averages_to_kl_old_to_new_over_tokens_drawn_from_old():
    # Ten tokens drawn from π_old in exact proportion (7, 2, 1 of three outcomes): the token mean of
    # an unbiased estimate of KL(π_old ‖ π) is then that KL exactly, Σ_x π_old(x) log(π_old(x) / π(x)).
    p_old = [0.7, 0.2, 0.1]
    p_new = [0.4, 0.4, 0.2]
    draws = [0] * 7 + [1] * 2 + [2]
    kl_old_new = sum(o * math.log(o / n) for o, n in zip(p_old, p_new))
    old_logprobs = torch.tensor([[math.log(p_old[x]) for x in draws]])
    logprobs = torch.tensor([[math.log(p_new[x]) for x in draws]])
    _, _, approx_kl = policy_loss(logprobs, old_logprobs, torch.ones(1, 10), torch.ones(1, 10), 0.2)
    torch.testing.assert_close(approx_kl, torch.tensor(kl_old_new))


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


def test_logprobs_and_entropy_by_hand_with_gradient_through_the_logprobs_only():
    torch.manual_seed(0)
    logits = (torch.randn(2, 3, 5) * 2).requires_grad_()
    tokens = torch.tensor([[0, 4, 2], [1, 1, 3]])
    logprobs, entropy = logprobs_and_entropy(logits, tokens)
    expected_logprobs, expected_entropy = torch.empty(2, 3), torch.empty(2, 3)
    for b in range(2):
        for t in range(3):
            row = logits[b, t].detach().double()
            p = row.exp() / row.exp().sum()
            expected_logprobs[b, t] = float(p[tokens[b, t]].log())
            expected_entropy[b, t] = float(-(p * p.log()).sum())
    torch.testing.assert_close(logprobs.detach(), expected_logprobs, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-6, rtol=1e-6)
    assert logprobs.requires_grad and not entropy.requires_grad
    # d log p(token) / d logits = one-hot(token) - softmax: row sums are 0, the token's entry 1 - p.
    logprobs[0, 0].backward()
    p = logits[0, 0].detach().softmax(-1)
    torch.testing.assert_close(logits.grad[0, 0], torch.nn.functional.one_hot(tokens[0, 0], 5).float() - p)
    assert (logits.grad[1] == 0).all()


def test_logprobs_and_entropy_of_bf16_logits_are_float32():
    logprobs, entropy = logprobs_and_entropy(torch.tensor([[3.0, 3.0]], dtype=torch.bfloat16), torch.tensor([1]))
    assert logprobs.dtype == entropy.dtype == torch.float32
    torch.testing.assert_close(entropy, torch.tensor([0.69314718]))
    torch.testing.assert_close(logprobs, torch.tensor([-0.69314718]))


# --- inputs of any dtype: the math runs in floating point, at least float32 ----

# γ = λ = ½ keeps every intermediate a binary fraction, exact in every float dtype.
GAE_REWARDS = [[0, 0, 1], [1, 2, 5]]
GAE_VALUES = [[1, 0, 2], [0, 1, 9]]
GAE_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# row 0: δ = [0 + ½·0 − 1, 0 + ½·2 − 0, 1 − 2] = [−1, 1, −1] and γλ = ¼:
#        A2 = −1, A1 = 1 + ¼·(−1) = 0.75, A0 = −1 + ¼·0.75 = −0.8125; G = A + V = [0.1875, 0.75, 1]
# row 1: δ1 = 2 − 1 = 1 (nothing after the last real token), δ0 = 1 + ½·1 − 0 = 1.5;
#        A1 = 1, A0 = 1.5 + ¼·1 = 1.75; G = [1.75, 2, 0]
GAE_ADVANTAGES = [[-0.8125, 0.75, -1.0], [1.75, 1.0, 0.0]]
GAE_RETURNS = [[0.1875, 0.75, 1.0], [1.75, 2.0, 0.0]]


@pytest.mark.parametrize(("dtype", "computed_in"), [
    (torch.int64, torch.float32), (torch.int32, torch.float32), (torch.uint8, torch.float32),
    (torch.float16, torch.float32), (torch.bfloat16, torch.float32),
    (torch.float32, torch.float32), (torch.float64, torch.float64),
])
def test_gae_of_any_input_dtype_computes_in_float(dtype, computed_in):
    rewards = torch.tensor(GAE_REWARDS, dtype=dtype)
    values = torch.tensor(GAE_VALUES, dtype=dtype)
    advantages, returns = gae(rewards, values, GAE_MASK, gamma=0.5, lam=0.5)
    assert advantages.dtype == returns.dtype == computed_in
    torch.testing.assert_close(advantages, torch.tensor(GAE_ADVANTAGES, dtype=computed_in))
    torch.testing.assert_close(returns, torch.tensor(GAE_RETURNS, dtype=computed_in))


def test_gae_of_integer_rewards_equals_gae_of_the_same_rewards_as_float():
    rewards = torch.tensor(GAE_REWARDS)
    values = torch.tensor(GAE_VALUES, dtype=torch.float32)
    from_int = gae(rewards, values, GAE_MASK, gamma=0.5, lam=0.5)
    from_float = gae(rewards.float(), values, GAE_MASK, gamma=0.5, lam=0.5)
    torch.testing.assert_close(from_int, from_float)
    torch.testing.assert_close(from_int[0], torch.tensor(GAE_ADVANTAGES))


def test_gae_of_a_bool_success_reward_and_float64_values_is_float64():
    rewards = torch.tensor([[False, True]])
    values = torch.zeros(1, 2, dtype=torch.float64)
    advantages, returns = gae(rewards, values, torch.ones(1, 2), gamma=0.5, lam=1.0)
    # A1 = 1, A0 = 0 + ½·0 − 0 + ½·1·1 = 0.5
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor([[0.5, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_masked_whiten_of_bool_or_integer_values(dtype):
    values = torch.tensor([1, 0, 1, 1, 1], dtype=dtype)
    mask = torch.tensor([1, 1, 1, 1, 0])
    # mean ¾, unbiased variance (3·¼² + ¾²) / 3 = ¼, std ½
    out = masked_whiten(values, mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.5, -1.5, 0.5, 0.5, 0.0]))


def test_masked_whiten_of_half_values_does_not_overflow():
    # Their sum, 124000, is beyond float16's largest finite value (65504).
    values = torch.tensor([60000.0, 64000.0], dtype=torch.float16)
    # mean 62000, unbiased variance 2·2000² / 1, std 2000·√2
    out = masked_whiten(values, torch.ones(2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([-1 / math.sqrt(2.0), 1 / math.sqrt(2.0)]))


def test_token_rewards_of_integer_kl_keep_a_fractional_score():
    out = token_rewards(torch.tensor([1.5]), torch.tensor([[2, 1]]), 1, torch.ones(1, 2))
    # [−1·2, −1·1 + 1.5]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[-2.0, 0.5]]))


def test_token_rewards_keep_a_float32_score_with_half_kl():
    out = token_rewards(torch.tensor([1000.25]), torch.tensor([[0.5]], dtype=torch.float16), 0.5, torch.ones(1, 1))
    # 1000.25 − 0.25 (float16 has no 1000.25: its spacing near 1000 is 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[1000.0]]))


def test_kl_penalty_k3_of_half_logprobs_keeps_second_order_differences():
    log_r = -(2.0 ** -10)  # exactly representable in float16
    out = kl_penalty(torch.tensor([[0.0]], dtype=torch.float16), torch.tensor([[log_r]], dtype=torch.float16), "k3")
    # (r − 1) − log r ≈ (log r)² / 2 ≈ 4.8e-7, below float16's resolution next to 1e-3
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[math.expm1(log_r) - log_r]]), rtol=1e-3, atol=0)


def test_value_loss_of_integer_values_clips_by_a_fractional_range():
    values, old_values, returns = torch.tensor([[3]]), torch.tensor([[1]]), torch.tensor([[4]])
    loss, clip_fraction = value_loss(values, old_values, returns, torch.ones(1, 1), 0.5)
    # unclipped (3 − 4)² = 1; V_clip = 1 + 0.5 = 1.5, (1.5 − 4)² = 6.25 → ½ · 6.25
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor(3.125))
    torch.testing.assert_close(clip_fraction, torch.tensor(1.0))
