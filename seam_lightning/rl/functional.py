"""The PPO math as plain tensor functions (RLHF objective of Ouyang et al. 2022; PPO of Schulman et al. 2017).

Every function takes ``[B, T]`` per-token tensors of the response part and a
``mask`` that is 1 on real response tokens (up to and including EOS) and 0 on
padding, and never lets a padded position leak into a result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


def _in_float(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` cast to one floating dtype of at least float32 (float64 is kept), for the PPO math.

    Integer or bool inputs (e.g. integer rewards) would otherwise truncate every
    intermediate (``zeros_like`` of an int tensor is int, an int clamped to ±0.2 is 0),
    and half/bfloat16 lose the small differences GAE, whitening and the losses are made
    of. The cast is differentiable and does not copy a tensor already in that dtype.
    """
    dtype = torch.float32
    for tensor in tensors:
        if tensor.is_floating_point():
            dtype = torch.promote_types(dtype, tensor.dtype)
    return tuple(tensor.to(dtype) for tensor in tensors)


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is 1 (NaN in masked slots does not leak)."""
    values = values.masked_fill(mask == 0, 0.0)
    return values.sum() if dim is None else values.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over the unmasked entries (of all, or along ``dim``); 0 where nothing is unmasked."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_moments(values: Tensor, mask: Tensor, unbiased: bool = True,
                   all_sum: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Mean and variance over the unmasked entries (variance Bessel-corrected by default).

    ``all_sum`` sums a tensor across processes (e.g. DDP ranks); the moments are then
    those of every rank's entries together, as if one process held them all.
    """
    (values,) = _in_float(values)
    all_sum = all_sum or (lambda x: x)
    n = all_sum(mask.sum().to(values.dtype))
    mean = all_sum(masked_sum(values, mask)) / n.clamp(min=1)
    var = all_sum(masked_sum((values - mean) ** 2, mask)) / n.clamp(min=1)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return mean, var


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  all_sum: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """(x − mean) / std over the unmasked entries; masked entries become 0.

    With ``shift_mean=False`` the mean is added back (scale only), as for rewards
    whose sign carries meaning. ``all_sum``: see :func:`masked_moments`.
    """
    (values,) = _in_float(values)
    mean, var = masked_moments(values, mask, all_sum=all_sum)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened.masked_fill(mask == 0, 0.0)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π (Schulman, "Approximating KL divergence", 2020).

    With log r = log π_ref(y) − log π(y):
    k1 = −log r (unbiased, can be negative), k2 = ½ (log r)² (low variance, biased),
    k3 = (r − 1) − log r (unbiased and never negative).
    """
    logprobs, ref_logprobs = _in_float(logprobs, ref_logprobs)
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def token_rewards(scores: Tensor, kl: Tensor, kl_coef: float, mask: Tensor) -> Tensor:
    """Per-token rewards r_t = −β·KL_t, plus the sequence score R(I∘r) on the last response token.

    Args:
        scores: reward-model score per sequence [B].
        kl: per-token KL estimate [B, T].
        kl_coef: β.
        mask: response mask [B, T]; every row must have at least one real token.
    """
    scores, kl = _in_float(scores, kl)
    rewards = (-kl_coef * kl).masked_fill(mask == 0, 0.0)
    last = mask.sum(-1).long() - 1
    if (last < 0).any():
        raise ValueError("token_rewards: a response has no tokens; its score has nowhere to go")
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16) over the response tokens.

    δ_t = r_t + γ V_{t+1} − V_t and A_t = δ_t + γλ A_{t+1}, with V and A zero after
    the last real token. Returns ``(advantages, returns)`` with returns = A + V, both
    zero where ``mask`` is 0.
    """
    rewards, values = _in_float(rewards, values)
    rewards = rewards.masked_fill(mask == 0, 0.0)
    values = values.masked_fill(mask == 0, 0.0)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    advantages = advantages.masked_fill(mask == 0, 0.0)
    return advantages, (advantages + values).masked_fill(mask == 0, 0.0)


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate loss (Schulman et al. 2017, Eq. 7), as a token mean to minimise.

    L = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)), ρ_t = π(y_t)/π_old(y_t).
    Returns ``(loss, clip_fraction, approx_kl)``; approx-KL is the k3 estimate of
    KL(π_old ‖ π) on the batch, the usual early-warning signal of a too-large update:
    the tokens were sampled from π_old, so with ρ = π/π_old it is mean_t (ρ_t − 1) − log ρ_t
    (unbiased for KL(π_old ‖ π) and never negative).
    """
    logprobs, old_logprobs, advantages = _in_float(logprobs, old_logprobs, advantages)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        # Samples of π_old: k3 of KL(π_old ‖ π) is kl_penalty's k3 with the roles of the two swapped.
        approx_kl = masked_mean(kl_penalty(old_logprobs, logprobs, "k3"), mask)
    return loss, clip_fraction, approx_kl


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float | None
) -> tuple[Tensor, Tensor]:
    """Clipped value loss ½ mean_t max((V − G)², (V_clip − G)²), V_clip = V_old + clip(V − V_old, ±ε).

    ``clip_range=None`` gives the plain squared error. Returns ``(loss, clip_fraction)``.
    """
    values, old_values, returns = _in_float(values, old_values, returns)
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * masked_mean(unclipped, mask), values.new_zeros(())
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position: −Σ p log p over the last dim."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def logprobs_and_entropy(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """log softmax(logits)[token] per position (differentiable) and each position's entropy (no gradient).

    Both from one fp32 log-softmax: the entropy is only logged, and a second log-softmax over
    [B, T, V] for it costs as much as the one the loss needs.
    """
    logp = torch.log_softmax(logits, -1, dtype=torch.float32)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy
