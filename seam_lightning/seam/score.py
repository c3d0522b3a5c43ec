"""The SEAM formula on tensors: a PM–RM discrepancy score per RL prompt.

Paper: "It Takes Two: On the Seamlessness between Reward and Policy Model in
RLHF", §5, Eq. 2 (SEAM) and Eq. 3 (the RM's misjudgement ε), with the length
normalisation of §5.2. For a prompt I with golden response r and candidates
r*_1..r*_N (worse than r by construction),

    SEAM(I) = Σ_i exp( log P_PM(r*_i | I) / len(r*_i) ) · max( R(I∘r*_i) − R(I∘r), 0 )

**Direction.** The value is the *discrepancy* between policy and reward model:
0 means the RM never rewards a worse answer above the golden one (or the PM
would never write it); larger means a worse fit. The paper's "low-SEAM" data
means low *seamlessness*, i.e. the **largest** values here: those are the
prompts to prune or to augment.
"""

from __future__ import annotations

import torch
from torch import Tensor


def seam_score(
    logprob_sums: Tensor,
    lengths: Tensor,
    candidate_rewards: Tensor,
    golden_rewards: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """SEAM discrepancy per prompt [B] (larger = worse PM–RM fit; see the module docstring).

    Args:
        logprob_sums: [B, N] summed response-token log-probs of each candidate under the PM.
        lengths: [B, N] response token counts (the §5.2 length normalisation; > 0 where valid).
        candidate_rewards: [B, N] RM reward of prompt∘candidate.
        golden_rewards: [B] RM reward of prompt∘golden response.
        mask: optional bool [B, N], True for real candidates. Masked slots add
            exactly 0 whatever they hold (NaN, garbage, length 0).

    Each term is exp(mean token log-prob) ∈ (0, 1] — how naturally the PM would
    write the candidate — times ε = max(R(I∘r*) − R(I∘r), 0), the RM's
    misjudgement (Eq. 3).
    """
    mask = _check(logprob_sums, lengths, candidate_rewards, golden_rewards, mask)
    dtype = logprob_sums.dtype if logprob_sums.is_floating_point() else torch.get_default_dtype()
    golden = golden_rewards.to(dtype).unsqueeze(-1)
    # Replace masked slots by harmless values *before* any arithmetic: 0 * NaN is
    # NaN, and even a discarded NaN branch of torch.where poisons gradients.
    logp = torch.where(mask, logprob_sums.to(dtype), 0.0)
    length = torch.where(mask, lengths.to(dtype), 1.0)
    reward = torch.where(mask, candidate_rewards.to(dtype), golden)
    if bool((length <= 0).any()):
        raise ValueError("seam_score: every valid candidate needs a length > 0 (mask out empty candidates)")
    weight = torch.exp(logp / length)
    excess = (reward - golden).clamp(min=0)
    return torch.where(mask, weight * excess, 0.0).sum(-1)


def _check(logprob_sums: Tensor, lengths: Tensor, candidate_rewards: Tensor, golden_rewards: Tensor,
           mask: Tensor | None) -> Tensor:
    """Validate shapes; returns the mask (all True when none was given)."""
    if logprob_sums.dim() != 2:
        raise ValueError(f"seam_score: logprob_sums must be [B, N], got shape {tuple(logprob_sums.shape)}")
    for name, t in (("lengths", lengths), ("candidate_rewards", candidate_rewards)):
        if t.shape != logprob_sums.shape:
            raise ValueError(f"seam_score: {name} has shape {tuple(t.shape)}, "
                             f"expected {tuple(logprob_sums.shape)} like logprob_sums")
    _check_golden(golden_rewards, logprob_sums)
    return _check_mask(mask, logprob_sums)


def _check_golden(golden_rewards: Tensor, like: Tensor) -> None:
    if golden_rewards.shape != like.shape[:1]:
        raise ValueError(f"golden_rewards must be [B] = [{like.shape[0]}], got shape {tuple(golden_rewards.shape)}")


def _check_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    if mask.shape != like.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(like.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    return mask
