"""Grouped-query attention that reads the key/value cache without copying it.

transformers' eager and SDPA attention expand a grouped-query model's keys and values to
every query head (``repeat_kv``) whenever an attention mask is given, and generation from
left-padded prompts always gives one: at each decoded token, every layer copies its whole
KV cache ``heads / kv_heads`` times before reading it. Here the query heads that share a
key/value head are stacked instead (one [B, kv_heads, groups · q, T] score matmul), so the
cache is only read. The arithmetic is eager attention's: the same scaling, soft-capping,
additive mask and fp32 softmax (without soft-capping, the scaling and the mask are applied
in the score matmul's accumulator, before its one rounding).

``attn_implementation="seam_grouped"`` selects it, when loading a model or for decoding
only (``PPOModule(generation_attn_implementation="seam_grouped")``): it is registered with
transformers' attention and mask interfaces on first use. SEAM scoring on a CPU uses it
by default (:func:`scoring_attention`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

GROUPED_ATTENTION = "seam_grouped"


def grouped_query_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                            attention_mask: Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                            softcap: float | None = None, **kwargs) -> tuple[Tensor, Tensor]:
    """Attention of ``query`` [B, H, q, D] over ``key``/``value`` [B, KV, T, D] (H a multiple of KV).

    Query head h attends with key/value head h // (H / KV), as ``repeat_kv`` pairs them.
    ``attention_mask``: additive, [B or 1, 1, q, ≥T] (transformers' eager mask). Returns the
    output [B, q, H, D] and the attention weights [B, H, q, T], as transformers' attention
    functions do.
    """
    if kwargs.get("s_aux") is not None or getattr(module, "sinks", None) is not None:
        raise NotImplementedError(f"{GROUPED_ATTENTION} attention has no attention sinks; load this model "
                                  "with attn_implementation='eager' or 'sdpa'")
    batch, heads, q_len, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    if scaling is None:
        scaling = module.head_dim**-0.5
    if attention_mask is not None and attention_mask.shape[1] != 1:
        raise ValueError(f"{GROUPED_ATTENTION} attention takes a mask shared by the heads, got "
                         f"{tuple(attention_mask.shape)}")
    # [B · KV, groups · q, D]: the query heads of a group stacked against their one key/value head.
    grouped = query.reshape(batch * kv_heads, groups * q_len, head_dim)
    keys = key.reshape(batch * kv_heads, length, head_dim).transpose(1, 2)
    autocast = torch.is_autocast_enabled(query.device.type)
    if attention_mask is not None and softcap is None and attention_mask.dtype == query.dtype and not autocast:
        # One kernel for the scores, their scaling and the mask: a third of the time of three
        # passes over [B, H, q, T] at SEAM scoring's shapes on a CPU. Not under autocast: it
        # would round an fp32 mask's minimum to bf16's -inf, and a fully masked (padding) row
        # would turn NaN.
        scores = torch.baddbmm(_grouped_mask(attention_mask, batch, kv_heads, groups, q_len, length), grouped,
                               keys, alpha=scaling)
    else:
        scores = torch.bmm(grouped, keys) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is not None:
            scores = scores + _grouped_mask(attention_mask, batch, kv_heads, groups, q_len, length)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.bmm(weights, value.reshape(batch * kv_heads, length, head_dim))  # [B · KV, groups · q, D]
    output = output.reshape(batch, heads, q_len, head_dim).transpose(1, 2).contiguous()
    return output, weights.reshape(batch, heads, q_len, length)


def _grouped_mask(attention_mask: Tensor, batch: int, kv_heads: int, groups: int, q_len: int, length: int) -> Tensor:
    """The additive mask [B or 1, 1, q, ≥T] laid out as the grouped scores [B · KV, groups · q, T]:
    every query head of a group meets its position's mask row."""
    mask = attention_mask[:, :, :, :length].unsqueeze(2).expand(batch, kv_heads, groups, q_len, length)
    return mask.reshape(batch * kv_heads, groups * q_len, length)


def register_attention(name: str | None) -> None:
    """Make ``name`` usable as a transformers ``attn_implementation`` if it is ours (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    if name != GROUPED_ATTENTION or name in AttentionInterface().valid_keys():
        return
    AttentionInterface.register(GROUPED_ATTENTION, grouped_query_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_ATTENTION, eager_mask)  # always an additive mask


@contextmanager
def attention_implementation(model: nn.Module, name: str | None) -> Iterator[None]:
    """Inside the block ``model`` (a transformers model, or a peft model around one) computes attention with ``name``.

    Its own implementation is back on exit (also on an error). ``None``, or the implementation
    the model already has, changes nothing.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if name is None or current is None or name == current:
        yield
        return
    register_attention(name)
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(current)


def scoring_attention(model: nn.Module) -> str | None:
    """The attention a no-grad scoring pass of ``model`` runs fastest with, or None to keep the model's own.

    On a CPU that is seam_grouped: its matmuls beat PyTorch's CPU flash-attention kernel
    on the short queries over a shared prompt that SEAM scoring runs (bf16 SEAM scoring in
    4.96 s against SDPA's 6.19 s on 2 AVX-512 cores, ``bench_seam.py --sweep``). A GPU keeps the
    model's own (SDPA / flash-attention kernels are the fast path there), and so does a
    model with attention sinks, which seam_grouped does not implement.
    """
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cpu":
        return None
    if any(getattr(module, "sinks", None) is not None for module in model.modules()):
        return None
    return GROUPED_ATTENTION
