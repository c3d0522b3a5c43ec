"""Frozen bottom blocks computed once and replayed: the same numbers as full forwards, bit for bit."""

import pytest
import torch
from families import FAMILIES

from seam_lightning.data.collate import pad
from seam_lightning.models.forward import position_ids_from_mask, response_logits, response_values, sequence_rewards
from seam_lightning.models.frozen_blocks import first_trained_block, frozen_blocks
from seam_lightning.models.loading import LoRASettings, load_policy, load_reward_model

TOP = LoRASettings(r=4, dropout=0.0, layers=[-1])  # the tiny models have 2 blocks: block 1 is adapted


def _with_live_adapters(model, seed=0):
    """LoRA B starts at 0 (adapters on = off); random B makes the adapted blocks really differ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model


@pytest.fixture(scope="module")
def batch():
    # Left-padded rows of different lengths; responses start at column 4.
    ids, mask = pad([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16], [17, 18, 19, 20, 21, 22]], 2, "left")
    return ids, mask


def test_first_trained_block(tiny_model_dir):
    assert first_trained_block(load_policy(str(tiny_model_dir), lora=TOP)) == 1
    assert first_trained_block(load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))) == 0
    assert first_trained_block(load_policy(str(tiny_model_dir))) == 0  # full fine-tuning: embeddings train
    # The value model's score head trains too, but it sits above the blocks.
    assert first_trained_block(load_reward_model(str(tiny_model_dir), lora=TOP)) == 1
    assert frozen_blocks(load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))) is None


@torch.no_grad()
def test_replay_equals_full_forwards_for_policy_reference_value_and_reward(tiny_model_dir, batch):
    ids, mask = batch
    policy = _with_live_adapters(load_policy(str(tiny_model_dir), lora=TOP)).eval()
    frozen = frozen_blocks(policy)
    assert frozen is not None and frozen.index == 1
    expected = response_logits(policy, ids, mask, 4)
    with frozen.capture() as captured:
        full = response_logits(policy, ids, mask, 4)
    assert torch.equal(full, expected) and len(captured) == 1
    prefix = captured[0]
    with frozen.replay(prefix):
        assert torch.equal(response_logits(policy, ids, mask, 4), expected)
    # π_ref: the adapters off, from the same frozen-block output; and against a plain transformers forward.
    with policy.disable_adapter():
        reference = response_logits(policy, ids, mask, 4)
        with frozen.replay(prefix):
            assert torch.equal(response_logits(policy, ids, mask, 4), reference)
    plain = load_policy(str(tiny_model_dir)).eval()
    out = plain(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, 3:-1]
    torch.testing.assert_close(reference, out.float(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(reference, expected, atol=1e-3)  # the adapters matter
    # A subset of rows replays from those rows of the prefix (what an update mini-batch does).
    rows = torch.tensor([2, 0])
    with frozen.replay(prefix[rows]):
        assert torch.equal(response_logits(policy, ids[rows], mask[rows], 4), expected[rows])

    value = _with_live_adapters(load_reward_model(str(tiny_model_dir), lora=TOP), seed=1).eval()
    frozen = frozen_blocks(value)
    with frozen.capture() as captured:
        values = response_values(value, ids, mask, 4)
    with frozen.replay(captured[0]):
        assert torch.equal(response_values(value, ids, mask, 4), values)
    with value.disable_adapter():
        rewards = sequence_rewards(value, ids, mask)
        with frozen.replay(captured[0]):
            assert torch.equal(sequence_rewards(value, ids, mask), rewards)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_replayed_forward_gives_the_same_gradients(tiny_model_dir, batch, checkpointing):
    ids, mask = batch
    policy = _with_live_adapters(load_policy(str(tiny_model_dir), lora=TOP, gradient_checkpointing=checkpointing))
    frozen = frozen_blocks(policy)
    policy.train(checkpointing)  # checkpointing acts in train mode (no dropout here)

    def grads(replay):
        policy.zero_grad(set_to_none=True)
        if replay is None:
            loss = response_logits(policy, ids, mask, 4).logsumexp(-1).sum()
        else:
            with frozen.replay(replay):
                loss = response_logits(policy, ids, mask, 4).logsumexp(-1).sum()
        loss.backward()  # outside the replay block, as PPO's update does
        return {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}

    with torch.no_grad(), frozen.capture() as captured:
        response_logits(policy, ids, mask, 4)
    expected, got = grads(None), grads(captured[0])
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert all(not torch.is_nonzero(g.abs().sum() == 0) for g in got.values())  # every adapter got a gradient


def test_replay_refuses_other_rows(tiny_model_dir, batch):
    ids, mask = batch
    policy = load_policy(str(tiny_model_dir), lora=TOP).eval()
    frozen = frozen_blocks(policy)
    with torch.no_grad(), frozen.capture() as captured:
        response_logits(policy, ids, mask, 4)
    with torch.no_grad(), frozen.replay(captured[0][:2]), pytest.raises(ValueError, match="do not match"):
        response_logits(policy, ids, mask, 4)
    # The blocks are themselves again afterwards.
    assert all("forward" not in block.__dict__ for block in frozen.blocks)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_replay_across_families_is_exact_or_refused(family, family_dirs, batch):
    ids, mask = batch
    model_dir = family_dirs(family)
    try:
        policy = _with_live_adapters(load_policy(str(model_dir), lora=TOP)).eval()
    except ValueError as error:  # GPT-2's Conv1D blocks: LoRA on chosen layers needs explicit module names
        pytest.skip(str(error))
    frozen = frozen_blocks(policy)
    if frozen is None:
        pytest.skip(f"{family}: replay refused by the check (full forwards are used)")
    expected = response_logits(policy, ids, mask, 4)
    with frozen.capture() as captured:
        response_logits(policy, ids, mask, 4)
    with frozen.replay(captured[0]):
        assert torch.equal(response_logits(policy, ids, mask, 4), expected)
