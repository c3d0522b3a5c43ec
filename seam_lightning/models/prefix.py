"""Forward passes that share one prompt across many continuations.

SEAM scores N candidate responses per prompt with the same prompt in front of
each. A causal model's states for the prompt do not depend on what follows, so
the prompt runs once, its key/value cache is copied to the rows of its
candidates, and only the candidate tokens run through the model again. The
results equal full forwards of prompt∘candidate (same position ids, same
masking); only the work is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from seam_lightning.models.forward import head_logprobs, position_ids_from_mask, readable_tokens, reward_token_index, score_head, transformer_body, unwrap
from seam_lightning.models.frozen_blocks import FrozenBlocks


def supports_prefix_sharing(model: nn.Module) -> bool:
    """True for decoder-only backbones (their prompt states do not see the continuation).

    Encoders such as BERT also have a causal-LM class, used only when configured as a decoder.
    """
    config = unwrap(model).config
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False):
        return False
    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or bool(getattr(config, "is_decoder", False))


@dataclass
class PromptStates:
    """A batch of left-padded prompts after one forward pass.

    ``layers`` holds each layer's (keys, values) [B, heads, P, head_dim]; ``last_hidden``
    [B, H] is the state of the last prompt token, which predicts a response's first token.
    """

    layers: list[tuple[Tensor, Tensor]]
    mask: Tensor
    last_hidden: Tensor


def concat_prompt_states(parts: list[PromptStates]) -> PromptStates:
    """One PromptStates from several batches, left-padded to the widest (padding is masked out)."""
    width = max(part.mask.shape[1] for part in parts)

    def left_pad(t: Tensor, dim: int) -> Tensor:
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    layers = [(torch.cat([left_pad(part.layers[i][0], 2) for part in parts]),
               torch.cat([left_pad(part.layers[i][1], 2) for part in parts])) for i in range(len(parts[0].layers))]
    return PromptStates(layers, torch.cat([left_pad(part.mask, 1) for part in parts]),
                        torch.cat([part.last_hidden for part in parts]))


def _prompt_forward(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, cache: DynamicCache):
    # A cache of our own keeps every layer's keys whole: the one a model builds for itself
    # keeps only the last window of a sliding-window layer, which continuations past the
    # window would then miss. The masks still apply the window.
    return transformer_body(model)(input_ids=input_ids, attention_mask=attention_mask,
                                   position_ids=position_ids_from_mask(attention_mask), past_key_values=cache,
                                   use_cache=True)


def encode_prompts(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> PromptStates:
    """Run left-padded prompts once and keep their key/value cache."""
    out = _prompt_forward(model, input_ids, attention_mask, DynamicCache())
    layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return PromptStates(layers, attention_mask, out.last_hidden_state[:, -1])


def encode_prompts_sharing(models: list[tuple[nn.Module, FrozenBlocks]], input_ids: Tensor,
                           attention_mask: Tensor) -> list[PromptStates]:
    """:func:`encode_prompts` for each model, the blocks below ``index`` that they compute alike run once.

    ``models``: (model, its FrozenBlocks) from :func:`~seam_lightning.models.frozen_blocks.shared_frozen_blocks`.
    The first model's blocks below run; each model's blocks above start from their output.
    The lower layers' keys and values are the same for all, and held once.
    """
    first, frozen = models[0]
    cache = DynamicCache()
    hidden = frozen.below(lambda: _prompt_forward(first, input_ids, attention_mask, cache))
    below = [(layer.keys, layer.values) for layer in cache.layers[:frozen.index]]
    states = []
    for model, blocks in models:
        with blocks.replay(hidden):
            own = encode_prompts(model, input_ids, attention_mask)
        states.append(PromptStates(below + own.layers[blocks.index:], attention_mask, own.last_hidden))
    return states


def _continuation_forward(model: nn.Module, prompts: PromptStates, rows: Tensor, input_ids: Tensor,
                          attention_mask: Tensor, layers: int | None = None):
    cache = DynamicCache(ddp_cache_data=[(k.index_select(0, rows), v.index_select(0, rows))
                                         for k, v in prompts.layers[:layers]])
    full_mask = torch.cat([prompts.mask.index_select(0, rows), attention_mask], dim=1)
    # Positions continue after each prompt's own real tokens, exactly as in a full forward.
    positions = position_ids_from_mask(full_mask)[:, -input_ids.shape[1]:]
    return transformer_body(model)(input_ids=input_ids, attention_mask=full_mask, position_ids=positions,
                                   past_key_values=cache, use_cache=True)


def continuation_hidden(model: nn.Module, prompts: PromptStates, rows: Tensor, input_ids: Tensor,
                        attention_mask: Tensor) -> Tensor:
    """Hidden states [R, T, H] of right-padded continuations; row r continues prompt ``rows[r]``."""
    return _continuation_forward(model, prompts, rows, input_ids, attention_mask).last_hidden_state


def continuation_below(model: nn.Module, frozen: FrozenBlocks, prompts: PromptStates, rows: Tensor,
                       input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Block ``frozen.index``'s input [R, T, H] for right-padded continuations (as :func:`continuation_hidden`
    reads them): only the blocks below it run, each with its own layer of the prompts' cache."""
    return frozen.below(lambda: _continuation_forward(model, prompts, rows, input_ids, attention_mask,
                                                      layers=frozen.index))


def continuation_logprob_sums(model: nn.Module, prompts: PromptStates, rows: Tensor, input_ids: Tensor,
                              attention_mask: Tensor) -> Tensor:
    """Summed log-prob [R] of each continuation's real tokens given its prompt.

    The first token is predicted by the prompt's last state, token t > 0 by the
    continuation's state t − 1; the output head runs on those positions only. The last
    column predicts nothing, so the body runs without it. Both kinds of state go through the
    head together: each head call reads all of its weights (V·H, the largest matrix).
    """
    states, targets = prompts.last_hidden.index_select(0, rows), input_ids[:, 0]
    r, t = attention_mask[:, 1:].nonzero(as_tuple=True)
    if len(r):
        hidden = continuation_hidden(model, prompts, rows, input_ids[:, :-1], attention_mask[:, :-1])
        states, targets = torch.cat([states, hidden[r, t]]), torch.cat([targets, input_ids[r, t + 1]])
    logprobs = head_logprobs(model, states, targets)
    sums = logprobs[:len(rows)] * attention_mask[:, 0]
    return sums.index_add(0, r, logprobs[len(rows):])


def continuation_rewards(model: nn.Module, prompts: PromptStates, rows: Tensor, input_ids: Tensor,
                         attention_mask: Tensor) -> Tensor:
    """Reward [R] of prompt∘continuation, read where a full forward reads it (:func:`reward_token_index`).

    That is the continuation's last real non-pad token; a continuation made of pad ids
    only (e.g. a lone EOS when pad == EOS) is read at the prompt's last token, as the
    full sequence would be.
    """
    if (attention_mask.sum(-1) == 0).any():
        raise ValueError("continuation_rewards: every continuation needs at least one token")
    pad_token_id = unwrap(model).config.pad_token_id
    readable = readable_tokens(input_ids, attention_mask, pad_token_id).any(-1)
    states = prompts.last_hidden.index_select(0, rows)
    if readable.any():
        index = reward_token_index(input_ids, attention_mask, pad_token_id)
        # The columns after the last one read (a final EOS when pad == EOS) cannot change it: the body skips them.
        width = int(index[readable].max()) + 1
        hidden = continuation_hidden(model, prompts, rows, input_ids[:, :width], attention_mask[:, :width])
        read = hidden[torch.arange(len(rows), device=hidden.device), index.clamp(max=width - 1)]
        states = torch.where(readable.unsqueeze(-1), read, states)
    return score_head(model)(states).squeeze(-1).float()
