"""Frozen bottom blocks computed once and replayed: the same numbers as full forwards, bit for bit."""

import math

import pytest
import torch
from families import FAMILIES
from plain_reference import CONTINUATIONS, chat_ids, plain_logits
from tiny import build_tiny_model_dir, first_layer_of, with_live_adapters

from seam_lightning.data.collate import pad
from seam_lightning.models.batching import SharingModel, pad_id_of, run_continuations_sharing, run_prompts_sharing
from seam_lightning.models.forward import (
    hidden_states,
    position_ids_from_mask,
    response_logits,
    response_values,
    sequence_rewards,
)
from seam_lightning.models.frozen_blocks import decoder_blocks, first_trained_block, frozen_blocks, shared_frozen_blocks
from seam_lightning.models.loading import LoRASettings, load_policy, load_reward_model, load_tokenizer
from seam_lightning.models.prefix import continuation_logprob_sums, continuation_rewards

TOP = LoRASettings(r=4, dropout=0.0, layers=[-1])  # the tiny models have 2 blocks: block 1 is adapted


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
    policy = with_live_adapters(load_policy(str(tiny_model_dir), lora=TOP)).eval()
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

    value = with_live_adapters(load_reward_model(str(tiny_model_dir), lora=TOP), seed=1).eval()
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
    policy = with_live_adapters(load_policy(str(tiny_model_dir), lora=TOP, gradient_checkpointing=checkpointing))
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
        policy = with_live_adapters(load_policy(str(model_dir), lora=TOP)).eval()
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


@torch.no_grad()
def test_below_runs_the_frozen_blocks_only_and_replay_can_read_leading_columns(tiny_model_dir, batch):
    ids, mask = batch
    policy = with_live_adapters(load_policy(str(tiny_model_dir), lora=TOP)).eval()
    frozen = frozen_blocks(policy)
    with frozen.capture() as captured:
        expected = response_logits(policy, ids, mask, 4)
    above = []
    handle = frozen.blocks[1].register_forward_hook(lambda module, args, output: above.append(1))
    try:
        below = frozen.below(lambda: hidden_states(policy, ids, mask))
    finally:
        handle.remove()
    assert torch.equal(below, captured[0]) and above == []
    # Recorded for two more columns: a forward of the first columns reads those (causal blocks).
    wider_ids, wider_mask = torch.cat([ids, ids[:, -2:]], 1), torch.cat([mask, mask[:, -2:]], 1)
    with frozen.capture() as wider:
        hidden_states(policy, wider_ids, wider_mask)
    with frozen.replay(wider[0], leading_columns=True):
        torch.testing.assert_close(response_logits(policy, ids, mask, 4), expected, atol=1e-6, rtol=1e-6)
    with frozen.replay(wider[0]), pytest.raises(ValueError, match="do not match"):
        response_logits(policy, ids, mask, 4)


def _of_one_base(model_dir):
    """A policy and a reward model LoRA-tuned (different adapters) on the top block of one base."""
    policy = with_live_adapters(load_policy(str(model_dir), lora=TOP)).eval()
    torch.manual_seed(0)  # the score head is new
    return policy, with_live_adapters(load_reward_model(str(model_dir), lora=TOP), seed=1).eval()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_pm_and_rm_of_one_base_run_their_shared_blocks_once_with_plain_forward_numbers(family, family_dirs):
    model_dir = family_dirs(family)
    try:
        policy, reward_model = _of_one_base(model_dir)
    except ValueError as error:  # GPT-2's Conv1D blocks: LoRA on chosen layers needs explicit module names
        pytest.skip(str(error))
    shared = shared_frozen_blocks(policy, reward_model)
    if frozen_blocks(policy) is None:  # replay itself is refused for the family: so is sharing
        assert shared is None
        return
    assert shared is not None and [blocks.index for blocks in shared] == [1, 1]
    tokenizer = load_tokenizer(str(model_dir))
    prompts, responses = chat_ids(tokenizer)
    pad_id = pad_id_of(tokenizer)
    ran = []  # work done by the RM's own copy of the shared block: none
    handle = first_layer_of(decoder_blocks(reward_model)[0]).register_forward_hook(
        lambda module, args, output: ran.append(module))
    try:
        (policy_states, reward_states), row_of = run_prompts_sharing(
            [(policy, shared[0]), (reward_model, shared[1])], prompts, pad_id, token_budget=40)
        wanted = [i % 2 == 0 for i in range(len(CONTINUATIONS))]  # the PM scores some, the RM all
        logprobs, rewards = run_continuations_sharing(
            [SharingModel(policy, shared[0], continuation_logprob_sums, policy_states, wanted),
             SharingModel(reward_model, shared[1], continuation_rewards, reward_states)],
            [row_of[p] for p, _ in CONTINUATIONS], [responses[r] for _, r in CONTINUATIONS], pad_id, token_budget=40)
    finally:
        handle.remove()
    assert ran == [] and all("forward" not in block.__dict__ for block in decoder_blocks(reward_model))
    for i, (p, r) in enumerate(CONTINUATIONS):
        sequence = prompts[p] + responses[r]
        plain_reward = reward_model(input_ids=torch.tensor([sequence])).logits[0, 0]
        assert rewards[i] == pytest.approx(plain_reward.item(), abs=1e-4), (family, i)
        if wanted[i]:
            logprobs_of = plain_logits(policy, sequence).log_softmax(-1)[len(prompts[p]) - 1:len(sequence) - 1]
            plain_sum = logprobs_of.gather(-1, torch.tensor(responses[r])[:, None]).sum()
            assert logprobs[i] == pytest.approx(plain_sum.item(), abs=1e-4, rel=1e-5), (family, i)
        else:
            assert math.isnan(logprobs[i])


@torch.no_grad()
def test_sharing_is_refused_where_the_bottoms_differ(tiny_model_dir, tmp_path):
    policy, reward_model = _of_one_base(tiny_model_dir)
    assert shared_frozen_blocks(policy, reward_model) is not None
    other = load_reward_model(str(build_tiny_model_dir(tmp_path / "other", seed=1)), lora=TOP).eval()
    assert shared_frozen_blocks(policy, other) is None  # other weights
    assert shared_frozen_blocks(policy, load_reward_model(str(tiny_model_dir), lora=TOP).to(torch.bfloat16)) is None
    everywhere = with_live_adapters(load_policy(str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0)))
    assert shared_frozen_blocks(everywhere, reward_model) is None  # block 0 adapted in one of them
