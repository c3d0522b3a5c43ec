"""Sampling responses from a policy for PPO rollouts and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from seam_lightning.models.attention import attention_implementation
from seam_lightning.seeding import as_int64, counter_bits


@dataclass(frozen=True)
class SamplingSettings:
    """How responses are sampled during PPO.

    ``top_k=0`` and ``top_p=1.0`` sample from the full distribution (what PPO's
    log-probs assume; the StackLLaMA recipe). ``temperature`` also divides the
    logits of every log-prob PPO computes, so the ratio is taken against the
    distribution that was actually sampled.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.temperature <= 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling settings {self}: need max_new_tokens >= 1, temperature > 0, "
                             "top_k >= 0, 0 < top_p <= 1")


@dataclass
class Responses:
    """Prompts with their sampled responses; every response starts at column ``start``.

    ``response_mask`` [B, R] is 1 on the response tokens up to and including the first
    EOS; ``attention_mask`` [B, start + R] covers the prompt and those tokens only.
    """

    sequences: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    ended: Tensor  # [B] bool: the response stopped with EOS (not at max_new_tokens)
    start: int

    @property
    def tokens(self) -> Tensor:
        return self.sequences[:, self.start:]

    @property
    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1)


def counter_uniform(seeds: Tensor, step: int) -> Tensor:
    """One uniform float64 in [0, 1) per row seed [B] at ``step``: a pure function of (seed, step), 53 bits."""
    bits = counter_bits(seeds, step, 1).squeeze(-1)
    return ((bits >> 11) & ((1 << 53) - 1)).double() * 2.0**-53  # the top 53 bits (>> is arithmetic: mask)


def inverse_cdf(weights: Tensor, uniform: Tensor, block: int = 256) -> Tensor:
    """Token [B] whose CDF interval holds ``uniform`` [B]: the first j with Σ_{i≤j} w_i > u · Σ w.

    ``weights`` [B, V] are unnormalised probabilities (≥ 0). Sums are taken in float64,
    so a token's interval is its weight to ~1e-16, and a token of weight 0 (filtered by
    top-k/top-p) has an empty interval and is never drawn. The search has two levels —
    cumulative sums of blocks of ``block`` tokens, then inside the one block that holds
    the target — so the vocabulary is read once instead of written out as a float64
    cumulative sum (about 7x faster for 8 rows of a 49k vocabulary on a 2-core CPU).
    """
    rows, vocab = weights.shape
    n_blocks = -(-vocab // block)
    blocks = torch.nn.functional.pad(weights, (0, n_blocks * block - vocab)).view(rows, n_blocks, block)
    block_cdf = blocks.sum(-1, dtype=torch.float64).cumsum_(-1)
    total = block_cdf[:, -1:]
    target = torch.minimum(uniform.unsqueeze(-1) * total, total.nextafter(torch.zeros_like(total)))
    # First block whose CDF passes the target: its sum is > 0, and the CDF before it is ≤ the target.
    j = torch.searchsorted(block_cdf, target, right=True).clamp_(max=n_blocks - 1)
    before = torch.where(j > 0, block_cdf.gather(-1, (j - 1).clamp(min=0)), 0.0)
    inner = blocks[torch.arange(rows, device=weights.device), j.squeeze(-1)].double().cumsum_(-1) + before
    # The block's own cumulative sum can end a rounding error (~1e-16) below its block CDF:
    # a target in that sliver goes to the block's last token of weight > 0, not past the block.
    target = torch.minimum(target, inner[:, -1:].nextafter(torch.zeros_like(target)))
    return (j * block + torch.searchsorted(inner, target, right=True)).squeeze(-1)


class SeededSampling(LogitsProcessor):
    """Sample each row from its own random stream by inverse-CDF.

    Row b's token at step t is :func:`inverse_cdf` of the (temperature, top-k, top-p)
    sampling distribution at :func:`counter_uniform` (seeds[b], t): an exact draw whose
    uniform depends on (seed, step) only — not on the other prompts in the batch, their
    number, the padding, the rank it runs on, or the global random stream. The batch's
    uniforms come from a few tensor operations on [B] seeds (a counter-based generator:
    no generator object per row and token), and the draw reads the vocabulary twice (the
    exponentials, their block sums), whatever the batch size.

    The processor returns 0 at the drawn token and −inf elsewhere, so generation run
    greedy over its output emits exactly that token.

    (PPO does not take its old log-probs from here: the key/value-cached decoding gives
    log-probs up to 2e-5 away from a full forward in fp32 and 0.24 in bf16 autocast on
    SmolLM2-135M, while full forwards agree bitwise whatever the batch composition — so
    π/π_old is exactly 1 before the first update and the KL to π_ref exactly 0 at step 0.)
    """

    def __init__(self, seeds: list[int], settings: SamplingSettings):
        self.seeds = torch.tensor([as_int64(int(s)) for s in seeds], dtype=torch.int64)
        self.step = 0
        self.warpers = [TemperatureLogitsWarper(settings.temperature)]
        if settings.top_k > 0:
            self.warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(settings.top_p))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        if self.seeds.device != scores.device:
            self.seeds = self.seeds.to(scores.device)  # once per generation
        scores = scores.float()
        weights = (scores - scores.amax(-1, keepdim=True)).exp_()  # softmax up to its normalisation
        tokens = inverse_cdf(weights, counter_uniform(self.seeds, self.step))
        self.step += 1
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, tokens.unsqueeze(-1), 0.0)


@torch.no_grad()
def sample_responses(
    policy: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    settings: SamplingSettings,
    eos_token_id: int,
    pad_token_id: int,
    greedy: bool = False,
    seeds: list[int] | None = None,
    attn_implementation: str | None = None,
) -> Responses:
    """Generate one response per left-padded prompt (sampling, or greedy decoding for evaluation).

    With ``seeds`` (one per prompt) each response is drawn from its own random stream
    (:class:`SeededSampling`); without, from the global torch random stream.
    Only ``settings`` decide how tokens are chosen: the checkpoint's own
    ``generation_config`` (instruct exports ship do_sample, temperature, top_p,
    repetition_penalty) is not merged in, so PPO's log-probs are taken under the
    distribution the samples came from and greedy decoding is greedy.

    ``attn_implementation`` (e.g. ``"eager"``) is the attention used while decoding only, the
    model's own before and after (see :func:`attention_implementation`): each decoding step
    attends from one token, where a kernel built for long sequences may not be the fastest.
    """
    sampler = None
    if seeds is not None and not greedy:
        if len(seeds) != len(input_ids):
            raise ValueError(f"sample_responses: {len(seeds)} seeds for {len(input_ids)} prompts")
        sampler = SeededSampling(list(seeds), settings)
    sample = not greedy and sampler is None
    # Every setting that changes which token is chosen is given explicitly, and
    # use_model_defaults=False stops transformers from replacing our values that equal
    # its global defaults (top_k=50 among them) with the checkpoint's.
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=sample,
        temperature=settings.temperature if sample else None,
        top_k=settings.top_k if sample else None, top_p=settings.top_p if sample else None,
        min_p=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
        repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_repetition_penalty=1.0, bad_words_ids=None,
        min_length=0, min_new_tokens=None, num_beams=1, suppress_tokens=None, begin_suppress_tokens=None,
        forced_bos_token_id=None, forced_eos_token_id=None, sequence_bias=None, guidance_scale=None,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    # Eval mode: with gradient checkpointing, transformers drops the key/value cache of
    # layers in train mode, and generate() would then feed them the new token alone.
    modes = [(module, module.training) for module in policy.modules()]  # restored exactly, mixed or not
    policy.eval()
    try:
        with attention_implementation(policy, attn_implementation):
            sequences = policy.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                        logits_processor=LogitsProcessorList([sampler] if sampler else []),
                                        use_model_defaults=False)
    finally:
        for module, training in modes:
            module.training = training
    start = input_ids.shape[1]
    response = sequences[:, start:]
    is_eos = response == eos_token_id
    ended = is_eos.any(-1)
    # Everything after the first EOS is padding from generate(), whatever its id.
    first_eos = torch.where(ended, is_eos.long().argmax(-1), response.shape[1])
    columns = torch.arange(response.shape[1], device=response.device)
    response_mask = (columns.unsqueeze(0) <= first_eos.unsqueeze(1)).long()
    full_mask = torch.cat([attention_mask.long(), response_mask], dim=1)
    return Responses(sequences, full_mask, response_mask, ended, start)
