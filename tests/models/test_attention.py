"""attn_implementation="seam_grouped": grouped-query attention that reads the KV cache without repeat_kv's
copies gives, for every family and with sliding windows, what the model's usual attention gives.

The references are plain forwards of the model as loaded by default (``tests/plain_reference.py``); a
counting wrapper checks that seam_grouped really ran.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from plain_reference import check_response_logits, responses_of, seeded_loop
from transformers import AttentionInterface

from seam_lightning.data.collate import pad
from seam_lightning.models.attention import GROUPED_ATTENTION, grouped_query_attention, register_attention
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
