"""Sampling responses from a policy for PPO rollouts and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from seam_lightning.seeding import mix_seed


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


class SeededGumbelSampling(LogitsProcessor):
    """Sample each row from its own random stream: argmax(logits/T + Gumbel noise) (the Gumbel-max trick).

    Generation runs greedy over these scores, and argmax(ℓ + G) with G ~ Gumbel(0, 1)
    is an exact draw from softmax(ℓ). Row b's noise at step t comes from a generator
    seeded with (seeds[b], t), so a prompt's response depends on its seed only — not
    on the other prompts in the batch, the padding, the rank it runs on, or the global
    random stream. Top-k and top-p filter the scores before the noise, as in sampling.
    """

    def __init__(self, seeds: list[int], settings: SamplingSettings):
        self.seeds = seeds
        self.step = 0
        self.warpers = [TemperatureLogitsWarper(settings.temperature)]
        if settings.top_k > 0:
            self.warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(settings.top_p))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        noise = torch.empty_like(scores, dtype=torch.float32)
        for row, seed in enumerate(self.seeds):
            generator = torch.Generator(device=scores.device).manual_seed(mix_seed(seed, self.step))
            uniform = torch.rand(scores.shape[-1], generator=generator, device=scores.device)
            noise[row] = -torch.log(-torch.log(uniform.clamp(min=1e-20)))
        self.step += 1
        return scores.float() + noise


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
