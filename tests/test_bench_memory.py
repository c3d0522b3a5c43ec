"""The memory accounting of scripts/bench_memory.py (scripts/experiments/memory_estimate.py) on hand-computed
numbers (no model, no timing)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from experiments import memory_estimate  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return memory_estimate


# 2**30 bf16 parameters = 2 GiB; 2**26 LoRA parameters x 16 bytes = 1 GiB; 4 x 256 tokens, 128 of them response.
SIZES = dict(n_params=2**30, hidden=1024, layers=8, vocab=32768, dtype_bytes=2, lora_params=2**26, batch=4,
             seq_len=256)
SHAPE = dict(response_len=128, intermediate=2048)
# Per token and layer: 17 x 1024 x 2 (Korthikanti) + (6 x 1024 + 2048) x 4 (fp32 LoRA input copies) = 67584 bytes.
PER_TOKEN_LAYER = 17 * 1024 * 2 + 8192 * 4


def test_lora_parameter_count(bench):
    # Llama-2-7B: r·(2h + 2(h + kv) + 2h + 2(h + i) + (i + h)) per layer, 32 layers.
    assert bench.lora_param_count(4096, 11008, 4096, 32, 16) == 16 * (9 * 4096 + 2 * 4096 + 3 * 11008) * 32
    assert bench.lora_param_count(4096, 11008, 4096, 32, 16) == 39_976_960
    # SmolLM2-135M: what peft reports for r=16 all-linear.
    assert bench.lora_param_count(576, 1536, 192, 30, 16) == 4_884_480


def test_lora_activation_bytes(bench):
    assert bench.lora_activation_bytes(1024, 2048, 4, lora_dropout=False) == 0  # fp32 base: shares the block's
    assert bench.lora_activation_bytes(1024, 2048, 2, lora_dropout=False) == 8192 * 4  # fp32 casts
    assert bench.lora_activation_bytes(1024, 2048, 2, lora_dropout=True) == 8192 * 5  # dropped copy + bool mask
    assert bench.lora_activation_bytes(1024, 2048, 4, lora_dropout=True, mask_bytes=4) == 8192 * 8  # CPU mask


def test_sft_parts(bench):
    est = bench.estimate(**SIZES, checkpointing=False, stage="sft", **SHAPE)
    assert est["policy"] == 2.0 and est["reference"] == est["reward_model"] == est["value_model"] == 0
    assert est["trainable"] == 1.0
    assert est["activations"] == pytest.approx(1024 * 8 * PER_TOKEN_LAYER / 2**30) == pytest.approx(0.515625)
    assert est["logits"] == pytest.approx(4 * 128 * 32768 * 4 * 3 / 2**30) == pytest.approx(0.1875)
    assert est["generation"] == 0
    assert est["total"] == pytest.approx(2 + 1 + 0.515625 + 0.1875)


def test_checkpointing_keeps_block_inputs_and_one_layer(bench):
    est = bench.estimate(**SIZES, checkpointing=True, stage="sft", **SHAPE)
    block_inputs = 1024 * 8 * 1024 * 2  # tokens x layers x h x 2 bytes = 16 MiB
    one_layer = 1024 * PER_TOKEN_LAYER
    assert est["activations"] == pytest.approx((block_inputs + one_layer) / 2**30) == pytest.approx(0.080078125)
    assert est["total"] == pytest.approx(2 + 1 + 0.080078125 + 0.1875)


def test_reward_model_has_pairs_and_no_lm_head(bench):
    est = bench.estimate(**SIZES, checkpointing=False, stage="rm", tied_embeddings=False, **SHAPE)
    assert est["reward_model"] == pytest.approx((2**30 - 32768 * 1024) * 2 / 2**30) == pytest.approx(1.9375)
    assert est["trainable"] == pytest.approx((2**26 + 1024) * 16 / 2**30)  # adapters + the score head
    assert est["activations"] == pytest.approx(2 * 0.515625)  # chosen and rejected: twice the sequences
    assert est["logits"] == 0


def test_ppo_shares_backbones_and_back_propagates_two_models(bench):
    est = bench.estimate(**SIZES, checkpointing=False, stage="ppo", **SHAPE)
    assert (est["policy"], est["reference"], est["reward_model"], est["value_model"]) == (2.0, 0.0, 0.0, 2.0)
    assert est["trainable"] == pytest.approx((2 * 2**26 + 1024) * 16 / 2**30)
    assert est["activations"] == pytest.approx(2 * 0.515625)  # policy and value model
    assert est["logits"] == pytest.approx(4 * 128 * 32768 * 4 * 4 / 2**30) == pytest.approx(0.25)
    # KV cache: 2 (K, V) x layers x kv width x 2 bytes x batch x tokens, + 3 float32 [batch x vocab].
    assert est["generation"] == pytest.approx((2 * 8 * 1024 * 2 * 4 * 256 + 3 * 4 * 32768 * 4) / 2**30)
    assert est["total"] == pytest.approx(4 + est["trainable"] + 2 * 0.515625 + 0.25)
    separate = bench.estimate(**SIZES, checkpointing=False, stage="ppo", shared_reward_backbone=False, **SHAPE)
    assert separate["reward_model"] == 2.0 and separate["total"] == pytest.approx(est["total"] + 2.0)


def test_ppo_counts_generation_when_it_is_the_larger_phase(bench):
    # A long generation with a tiny update: the KV cache sets the peak, not activations + logits.
    est = bench.estimate(**dict(SIZES, batch=64, seq_len=4096), checkpointing=True, stage="ppo", mini_batch=1,
                         response_len=1, intermediate=2048)
    assert est["generation"] > est["activations"] + est["logits"]
    fixed = est["policy"] + est["value_model"] + est["trainable"]
    assert est["total"] == pytest.approx(fixed + est["generation"])


def test_fits_keeps_ten_percent_free(bench):
    assert bench.fits(21.5, 24) and not bench.fits(21.7, 24)
    assert bench.fits(71.9, 80) and not bench.fits(72.1, 80)
    assert bench.fits(23.9, 24, headroom=0.0)


def test_rejects_unknown_stage(bench):
    with pytest.raises(ValueError, match="stage"):
        bench.estimate(**SIZES, checkpointing=False, stage="dpo")
