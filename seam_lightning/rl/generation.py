"""Sampling responses from a policy for PPO rollouts and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

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


def inverse_cdf(probs: Tensor, uniform: Tensor) -> Tensor:
    """Token [B] whose CDF interval holds ``uniform`` [B]: the first j with Σ_{i≤j} p_i > u · Σ p.

    The CDF is summed in float64, so a token's interval is its probability to ~1e-16;
    tokens of probability 0 (filtered by top-k/top-p) have empty intervals and are never
    drawn. Scaling u by the total makes unnormalised (or float32-rounded) ``probs`` exact.
    """
    cdf = probs.cumsum(-1, dtype=torch.float64)
    total = cdf[:, -1:]
    target = torch.minimum(uniform.unsqueeze(-1) * total, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


class SeededSampling(LogitsProcessor):
    """Sample each row from its own random stream by inverse-CDF; record the drawn tokens' log-probs.

    Row b's token at step t is :func:`inverse_cdf` of the (temperature, top-k, top-p)
    sampling distribution at :func:`counter_uniform` (seeds[b], t): an exact draw whose
    uniform depends on (seed, step) only — not on the other prompts in the batch, their
    number, the padding, the rank it runs on, or the global random stream. The batch's
    uniforms come from a few tensor operations on [B] seeds (a counter-based generator:
    no generator object per row and token), so the cost is one softmax and one cumulative
    sum over the vocabulary, whatever the batch size.

    The processor returns 0 at the drawn token and −inf elsewhere, so generation run
    greedy over its output emits exactly that token. It also keeps, per step, the log-prob
    of that token under softmax(logits / T) over the full vocabulary — what PPO's log-probs
    are (top-k/top-p restrict what is drawn, not the log-prob) — in :attr:`logprobs`.
    """

    def __init__(self, seeds: list[int], settings: SamplingSettings):
        self.seeds = torch.tensor([as_int64(int(s)) for s in seeds], dtype=torch.int64)
        self.temperature = settings.temperature
        self.step = 0
        self.logprobs: list[Tensor] = []
        self.warpers = [TemperatureLogitsWarper(settings.temperature)]
        if settings.top_k > 0:
            self.warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(settings.top_p))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logits = scores.float()
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        if self.seeds.device != scores.device:
            self.seeds = self.seeds.to(scores.device)  # once per generation
        tokens = inverse_cdf(scores.float().softmax(-1), counter_uniform(self.seeds, self.step))
        self.step += 1
        self.logprobs.append((logits / self.temperature).log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
        chosen = torch.full_like(logits, float("-inf"))
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
) -> Responses:
    """Generate one response per left-padded prompt (sampling, or greedy decoding for evaluation).

    With ``seeds`` (one per prompt) each response is drawn from its own random stream
    (:class:`SeededGumbelSampling`); without, from the global torch random stream.
    Only ``settings`` decide how tokens are chosen: the checkpoint's own
    ``generation_config`` (instruct exports ship do_sample, temperature, top_p,
    repetition_penalty) is not merged in, so PPO's log-probs are taken under the
    distribution the samples came from and greedy decoding is greedy.
    """
    processors = None
    if seeds is not None and not greedy:
        if len(seeds) != len(input_ids):
            raise ValueError(f"sample_responses: {len(seeds)} seeds for {len(input_ids)} prompts")
        processors = LogitsProcessorList([SeededGumbelSampling(list(seeds), settings)])
    sample = not greedy and processors is None
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
        sequences = policy.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                    logits_processor=processors, use_model_defaults=False)
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
