"""Forward passes that are correct under any padding: rewards and response-token log-probs.

Every pass derives position ids from the attention mask, so a sequence gets the
same positions whether it is left-padded, right-padded or alone; and the reward
is read at the last *real* token, found from the mask, never from pad-token ids
(which breaks when pad == EOS, as in many chat models).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def unwrap(model: nn.Module) -> nn.Module:
    """The `transformers` model under a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, … over the real tokens of each row; pads get 0 (their outputs are never read)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last real token in each row, for left or right padding."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Last hidden states [B, T, H] of the model's transformer body (no LM or score head)."""
    inner = unwrap(model)
    body = getattr(inner, inner.base_model_prefix)
    out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask))
    return out.last_hidden_state


def sequence_rewards(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Scalar reward per sequence [B]: the score head applied at the last real token."""
    hidden = hidden_states(model, input_ids, attention_mask)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    head = getattr(unwrap(model), "score", None)
    if head is None:
        raise TypeError(f"{type(unwrap(model)).__name__} has no `score` head; load it with load_reward_model")
    return head(last).squeeze(-1).float()


def response_token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probs of the labelled tokens and their positions.

    ``labels`` is ``input_ids`` with -100 wherever a token is not scored (prompt,
    padding). The output head runs only on the positions that predict a labelled
    token, so no [B, T, V] logit tensor is ever built. Returns ``(logprobs [K],
    rows [K])`` for the K labelled tokens, in row-major order.
    """
    hidden = hidden_states(model, input_ids, attention_mask)
    targets = labels[:, 1:]
    rows, cols = (targets != -100).nonzero(as_tuple=True)
    head = unwrap(model).get_output_embeddings()
    logits = head(hidden[rows, cols]).float()
    logprobs = logits.log_softmax(-1).gather(-1, targets[rows, cols].unsqueeze(-1)).squeeze(-1)
    return logprobs, rows


def response_nll(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed negative log-likelihood of the labelled tokens and their count (for token-weighted means)."""
    logprobs, _ = response_token_logprobs(model, input_ids, attention_mask, labels)
    return -logprobs.sum(), torch.tensor(logprobs.numel(), device=logprobs.device)


def response_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Logits [B, T − start, V] predicting the tokens ``input_ids[:, start:]`` (the response of a rollout).

    Rollouts put every response at the same column ``start`` (prompts are left-padded),
    so the output head runs on the T − start positions that predict them and no others.
    """
    hidden = hidden_states(model, input_ids, attention_mask)
    return unwrap(model).get_output_embeddings()(hidden[:, start - 1 : -1]).float()


def logprobs_of(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] per position: [B, T, V] and [B, T] → [B, T]."""
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_values(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Per-token values [B, T − start] of a reward-model-shaped value model.

    V_t is the score head applied to the state that predicts response token t (the
    position before it), so V_0 values the prompt alone, as in the RLHF literature.
    """
    hidden = hidden_states(model, input_ids, attention_mask)
    head = getattr(unwrap(model), "score", None)
    if head is None:
        raise TypeError(f"{type(unwrap(model)).__name__} has no `score` head; load it with load_reward_model")
    return head(hidden[:, start - 1 : -1]).squeeze(-1).float()
