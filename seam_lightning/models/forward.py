"""Forward passes that are correct under any padding: rewards and response-token log-probs.

Every pass derives position ids from the attention mask, so a sequence gets the
same positions whether it is left-padded, right-padded or alone.

Two rules keep these passes equal to what the model gives in plain `transformers`:

- Logits come from :func:`output_logits`: the output head *and* whatever the family
  does after it (Gemma-2/3 soft-capping, Cohere's ``logit_scale``, Granite's
  ``logits_scaling``). :func:`check_output_logits` compares it with the model's own
  forward when a model is loaded, so a family with a transform not known here fails
  loudly instead of training on other log-probs.
- The reward is read where ``AutoModelForSequenceClassification`` reads it: at the
  last real token whose id is not the pad id (:func:`reward_token_index`). With
  pad == EOS, as in many chat models, that is the token before the final EOS; an
  exported reward model therefore scores the same in TRL, pipelines or RewardBench
  as in training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel


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


def readable_tokens(input_ids: Tensor, attention_mask: Tensor, pad_token_id: int | None) -> Tensor:
    """Bool [B, T]: the real tokens a reward may be read at (those whose id is not the pad id)."""
    real = attention_mask.bool()
    return real if pad_token_id is None else real & (input_ids != pad_token_id)


def reward_token_index(input_ids: Tensor, attention_mask: Tensor, pad_token_id: int | None) -> Tensor:
    """Index of the token whose state the reward head reads: the last real token that is not a pad id.

    This is ``AutoModelForSequenceClassification``'s rule (the rightmost non-pad token),
    restricted to real tokens so that a row padded with any id gives the same index.
    A row made of pad ids only falls back to its last real token.
    """
    readable = readable_tokens(input_ids, attention_mask, pad_token_id)
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    index = (positions * readable.long()).argmax(-1)
    return torch.where(readable.any(-1), index, last_token_index(attention_mask))


def output_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """The model's logits from final hidden states [..., H]: its output head and the family's post-processing.

    Families transform the head's output in their own ``forward``: Gemma-2/3
    soft-cap (cap · tanh(logits / cap)), Cohere multiplies by ``logit_scale``,
    Granite divides by ``logits_scaling``. Computing them here lets callers run the
    head on the positions they need only (no [B, T, V] tensor) and still get what
    ``model(...).logits`` gives. :func:`check_output_logits` guards the list.
    """
    inner = unwrap(model)
    logits = inner.get_output_embeddings()(hidden)
    config = inner.config
    # Cohere multiplies by config.logit_scale (copied onto the model at init); Granite divides.
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    divisor = getattr(config, "logits_scaling", None)
    if isinstance(divisor, (int, float)) and divisor != 1:
        logits = logits / divisor
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def check_output_logits(model: nn.Module, n_tokens: int = 6) -> None:
    """Raise if :func:`output_logits` disagrees with the model's own forward on a short input.

    Runs once when a policy is loaded (a few tokens, negligible next to loading), so a
    family whose forward transforms the logits in a way not handled here is refused
    with its name rather than trained on other log-probs. Skipped for weights not yet
    materialised (meta device).
    """
    inner = unwrap(model)
    parameter = next(inner.parameters())
    if parameter.device.type == "meta":
        return
    vocab = inner.get_output_embeddings().weight.shape[0]
    ids = torch.arange(1, n_tokens + 1, device=parameter.device).remainder(vocab).unsqueeze(0)
    mask = torch.ones_like(ids)
    was_training = inner.training
    inner.eval()
    try:
        expected = inner(input_ids=ids, attention_mask=mask).logits.float()
        ours = output_logits(inner, hidden_states(inner, ids, mask)).float()
    finally:
        inner.train(was_training)
    tolerance = 1e-3 if parameter.dtype == torch.float32 else 5e-2
    error = (ours - expected).abs().max().item()
    if not error <= tolerance * max(1.0, expected.abs().max().item()):
        raise NotImplementedError(
            f"{type(inner).__name__} (model_type {inner.config.model_type!r}): its forward post-processes the "
            f"logits in a way seam_lightning does not reproduce (max difference {error:.3g}); log-probs would be "
            "wrong. Add the transform to seam_lightning.models.forward.output_logits."
        )


def transformer_body(model: nn.Module) -> nn.Module:
    """The model's transformer body: the part under its LM or score head.

    Usually the attribute named by ``base_model_prefix``; some classes name another
    (Gemma-3's causal LM says ``language_model`` and keeps its body in ``model``), so
    otherwise it is the child that is itself a pretrained model.
    """
    inner = unwrap(model)
    body = getattr(inner, inner.base_model_prefix, None)
    if body is None:
        body = next((child for child in inner.children() if isinstance(child, PreTrainedModel)), None)
    if body is None:
        raise TypeError(f"cannot find the transformer body of {type(inner).__name__}")
    return body


def hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Last hidden states [B, T, H] of the model's transformer body (no LM or score head)."""
    out = transformer_body(model)(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids_from_mask(attention_mask))
    return out.last_hidden_state


def score_head(model: nn.Module) -> nn.Module:
    """The scalar head of a reward/value model."""
    head = getattr(unwrap(model), "score", None)
    if head is None:
        raise TypeError(f"{type(unwrap(model)).__name__} has no `score` head; load it with load_reward_model")
    return head


def sequence_rewards(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Scalar reward per sequence [B]: the score head at :func:`reward_token_index`."""
    hidden = hidden_states(model, input_ids, attention_mask)
    index = reward_token_index(input_ids, attention_mask, unwrap(model).config.pad_token_id)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    return score_head(model)(last).squeeze(-1).float()


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
    return head_logprobs(model, hidden[rows, cols], targets[rows, cols]), rows


def head_logprobs(model: nn.Module, hidden: Tensor, tokens: Tensor, rows_per_chunk: int = 256,
                  rows_per_softmax: int | None = None) -> Tensor:
    """log p(token | state) [K] from final hidden states [K, H]: the output head, a few hundred rows at a time.

    Each chunk's logits are reduced to the K log-probs before the next chunk runs, so no
    [K, V] tensor is held: at a 49k vocabulary the fp32 log-softmax of one token is 200 KB,
    and for thousands of response tokens these tensors set the peak memory of scoring.

    The head runs as one matmul per chunk; its log-softmax runs ``rows_per_softmax`` rows at
    a time (default: 16 on a CPU, the whole chunk on a GPU). On a CPU the fp32 copy of 16
    rows (3 MB at 49k) stays in cache, and the log-softmax of 512 rows then costs 20 ms
    instead of 80 ms, more than the head's matmul itself (2 AVX-512 cores, bf16); a GPU
    wants one large kernel. 256-row chunks run the head's matmul ~20% faster there than
    512 (its [rows, 49k] output stays smaller).
    """
    if rows_per_softmax is None:
        rows_per_softmax = 16 if hidden.device.type == "cpu" else rows_per_chunk
    parts = []
    for start in range(0, hidden.shape[0], rows_per_chunk):
        logits = output_logits(model, hidden[start:start + rows_per_chunk])
        targets = tokens[start:start + rows_per_chunk]
        parts.extend(logprobs_of(logits[row:row + rows_per_softmax], targets[row:row + rows_per_softmax])
                     for row in range(0, logits.shape[0], rows_per_softmax))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def response_nll(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed negative log-likelihood of the labelled tokens and their count (for token-weighted means)."""
    logprobs, _ = response_token_logprobs(model, input_ids, attention_mask, labels)
    return -logprobs.sum(), torch.tensor(logprobs.numel(), device=logprobs.device)


def response_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int,
                    temperature: float = 1.0) -> Tensor:
    """Logits [B, T − start, V] predicting the tokens ``input_ids[:, start:]`` (the response of a rollout).

    Rollouts put every response at the same column ``start`` (prompts are left-padded),
    so the output head runs on the T − start positions that predict them and no others.
    ``temperature``: the logits of the distribution responses were sampled from (divided by
    it, in fp32). At 1 nothing is divided: a division is a pass over B·T·V values forward
    and another backward, as costly as the log-softmax itself at a 49k vocabulary.
    """
    hidden = hidden_states(model, input_ids, attention_mask)
    logits = output_logits(model, hidden[:, start - 1 : -1]).float()
    return logits if temperature == 1.0 else logits / temperature


def logprobs_of(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] per position, in fp32: [..., V] and [...] → [...].

    ``dtype=float32`` makes the cast of bf16 logits part of the softmax kernel instead of a copy.
    """
    return torch.log_softmax(logits, -1, dtype=torch.float32).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_values(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Per-token values [B, T − start] of a reward-model-shaped value model.

    V_t is the score head applied to the state that predicts response token t (the
    position before it), so V_0 values the prompt alone, as in the RLHF literature.
    """
    hidden = hidden_states(model, input_ids, attention_mask)
    return score_head(model)(hidden[:, start - 1 : -1]).squeeze(-1).float()


def response_logprob_sums(model: nn.Module, ids: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
    """Summed log-prob of the labelled (response) tokens of each row."""
    logprobs, rows = response_token_logprobs(model, ids, mask, labels)
    return torch.zeros(ids.shape[0], dtype=logprobs.dtype, device=logprobs.device).index_add_(0, rows, logprobs)
