"""attn_implementation="seam_grouped": grouped-query attention that reads the KV cache without repeat_kv's
copies gives, for every family and with sliding windows, what the model's usual attention gives.

The references are plain forwards of the model as loaded by default (``tests/plain_reference.py``); a
counting wrapper checks that seam_grouped really ran.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from plain_reference import check_continuation_logprob_sums, check_response_logits, responses_of, seeded_loop
from transformers import AttentionInterface

from seam_lightning.data.collate import pad
from seam_lightning.models.attention import (
    GROUPED_ATTENTION,
    attention_implementation,
    grouped_query_attention,
    register_attention,
    scoring_attention,
)
from seam_lightning.models.loading import load_policy
from seam_lightning.rl.generation import SamplingSettings, sample_responses


@contextmanager
def counting_grouped_attention():
    """The query lengths of every seam_grouped attention call inside the block."""
    query_lengths = []

    def counting(module, query, *args, **kwargs):
        query_lengths.append(query.shape[2])
        return grouped_query_attention(module, query, *args, **kwargs)

    register_attention(GROUPED_ATTENTION)
    AttentionInterface.register(GROUPED_ATTENTION, counting)
    try:
        yield query_lengths
    finally:
        AttentionInterface.register(GROUPED_ATTENTION, grouped_query_attention)


@torch.inference_mode()
def test_grouped_attention_forward_equals_plain_forward(policy, model_dir, tokenizer, chats):
    """A model loaded with seam_grouped attention gives, on left-padded batches, the logits that the model
    loaded as usual gives on each unpadded sequence."""
    grouped = load_policy(str(model_dir), attn_implementation=GROUPED_ATTENTION).eval()
    with counting_grouped_attention() as query_lengths:
        check_response_logits(grouped, tokenizer, chats, reference=policy)
    assert query_lengths, "the model did not attend with seam_grouped"


@torch.inference_mode()
def test_decoding_with_grouped_attention_is_plain_sampling(policy, tokenizer, chats):
    check_grouped_attention_decoding(policy, tokenizer, chats)


@torch.inference_mode()
def test_windowed_decoding_with_grouped_attention_is_plain_sampling(windowed):
    check_grouped_attention_decoding(*windowed)


def check_grouped_attention_decoding(policy, tokenizer, chats):
    """Seeded sampling that decodes with seam_grouped attention (left-padded prompts, KV cache) draws the
    tokens that the inverse CDF over plain forwards of the usual model draws; the model's attention is back
    afterwards."""
    prompts, _ = chats
    eos, seeds, own = tokenizer.eos_token_id, [11, 22, 33], policy.config._attn_implementation
    ids, mask = pad(prompts, tokenizer.pad_token_id, "left")
    with counting_grouped_attention() as query_lengths:
        out = sample_responses(policy, ids, mask, SamplingSettings(max_new_tokens=6), eos, tokenizer.pad_token_id,
                               greedy=False, seeds=seeds, attn_implementation=GROUPED_ATTENTION)
    assert 1 in query_lengths, "no decoding step attended with seam_grouped"
    assert policy.config._attn_implementation == own
    expected = [seeded_loop(policy, p, 6, eos, s, 1.0) for p, s in zip(prompts, seeds)]
    assert responses_of(out) == expected


@torch.inference_mode()
def test_shared_prompt_continuations_with_grouped_attention_equal_plain_forward(policy, tokenizer, chats):
    check_grouped_attention_continuations(policy, tokenizer, chats)


@torch.inference_mode()
def test_windowed_shared_prompt_continuations_with_grouped_attention_equal_plain_forward(windowed):
    check_grouped_attention_continuations(*windowed)


def check_grouped_attention_continuations(policy, tokenizer, chats):
    """What SEAM scoring runs on a CPU: prompts once, continuations of several tokens on their cache, both
    with seam_grouped switched on at run time; the sums are plain forwards' of the usual model."""
    own = policy.config._attn_implementation
    assert scoring_attention(policy) == GROUPED_ATTENTION  # a CPU model without attention sinks
    with counting_grouped_attention() as query_lengths, attention_implementation(policy, GROUPED_ATTENTION):
        check_continuation_logprob_sums(policy, tokenizer, chats)
    assert max(query_lengths) > 1, "no continuation attended with seam_grouped"
    assert policy.config._attn_implementation == own


def test_attention_comes_back_after_an_error(policy):
    own = policy.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with attention_implementation(policy, "eager" if own != "eager" else "sdpa"):
            assert policy.config._attn_implementation != own
            raise RuntimeError("boom")
    assert policy.config._attn_implementation == own
    with attention_implementation(policy, None):
        assert policy.config._attn_implementation == own


def test_scoring_keeps_the_models_own_attention_off_the_cpu_and_with_sinks(policy):
    with torch.device("meta"):
        on_meta = type(policy)(policy.config)
    assert scoring_attention(on_meta) is None
    with_sinks = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with_sinks[0].sinks = torch.nn.Parameter(torch.zeros(2))  # as gpt-oss's attention carries them
    assert scoring_attention(with_sinks) is None


@pytest.mark.parametrize("dtype, mask_dtype, softcap", [(torch.float32, torch.float32, None),
                                                        (torch.float32, torch.float32, 5.0),
                                                        (torch.bfloat16, torch.bfloat16, None),
                                                        (torch.bfloat16, torch.float32, None)])
def test_grouped_query_attention_is_attention_with_repeated_key_value_heads(dtype, mask_dtype, softcap):
    """Against attention written out with every key/value head repeated for its query heads (repeat_kv),
    fp32 scores: with and without soft-capping, and with a mask of another dtype (bf16 autocast)."""
    torch.manual_seed(0)
    batch, heads, kv_heads, q_len, length, head_dim = 2, 6, 2, 3, 7, 8
    query = torch.randn(batch, heads, q_len, head_dim).to(dtype)
    key, value = (torch.randn(batch, kv_heads, length, head_dim).to(dtype) for _ in range(2))
    blocked = torch.rand(batch, 1, q_len, length) < 0.3
    blocked[..., 0] = False  # every query sees a key
    mask = torch.zeros(batch, 1, q_len, length).masked_fill(blocked, torch.finfo(mask_dtype).min).to(mask_dtype)
    module = torch.nn.Module()
    output, weights = grouped_query_attention(module, query, key, value, mask, scaling=0.3, softcap=softcap)

    repeated_key, repeated_value = (t.float().repeat_interleave(heads // kv_heads, dim=1) for t in (key, value))
    scores = query.float() @ repeated_key.transpose(2, 3) * 0.3
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    expected_weights = scores.masked_fill(blocked, float("-inf")).softmax(-1)
    expected = (expected_weights @ repeated_value).transpose(1, 2)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    assert output.shape == (batch, q_len, heads, head_dim) and output.dtype == dtype
    torch.testing.assert_close(output.float(), expected, **tolerance)
    torch.testing.assert_close(weights.float(), expected_weights, **tolerance)


def test_grouped_query_attention_under_autocast_keeps_fully_masked_rows_finite():
    """Under bf16 autocast with fp32 inputs and an fp32 mask (how a bf16-mixed run calls it), a padding
    query that sees no key gets finite weights (eager's uniform ones), and the others are attention's."""
    torch.manual_seed(0)
    query, key, value = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    blocked = torch.zeros(1, 1, 3, 5, dtype=torch.bool)
    blocked[0, 0, 0] = True  # a left-padding query row
    blocked[0, 0, 1:, :2] = True  # the padding keys
    mask = torch.zeros(1, 1, 3, 5).masked_fill(blocked, torch.finfo(torch.float32).min)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, weights = grouped_query_attention(torch.nn.Module(), query, key, value, mask, scaling=0.3)
    assert torch.isfinite(output).all() and torch.isfinite(weights).all()
    repeated_key, repeated_value = (t.repeat_interleave(2, dim=1) for t in (key, value))
    expected = ((query @ repeated_key.transpose(2, 3) * 0.3).masked_fill(blocked, float("-inf")).softmax(-1)
                @ repeated_value).transpose(1, 2)
    torch.testing.assert_close(output[:, 1:].float(), expected[:, 1:], atol=3e-2, rtol=3e-2)
