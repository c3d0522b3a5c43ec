"""Responses, rewards, preference accuracy (Q_RM) and match rate on tiny models and hand cases."""

import pytest
import torch

from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.eval.quality import (
    generate_responses,
    match_rate,
    preference_accuracy,
    reference_preferences,
    reward_scores,
)
from seam_lightning.models.forward import sequence_rewards
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer

INSTRUCTIONS = ["What does `json.dumps` do?", "Explain what `os.path.join` is for.", "Return the sum",
                "Split a pathname.", "Deserialize s to a Python object."]
CHOSEN = ["Serialize obj to a JSON formatted str.", "Join two or more pathname components.",
          "Return the sum of the values.", "Split a pathname into a pair (head, tail).", "Deserialize s."]
REJECTED = ["The quick brown fox.", "Return the sum of the values.", "jumps over the lazy dog",
            "Serialize obj.", "Join two pathname components; the quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir):
    torch.manual_seed(0)  # the new score head
    return load_reward_model(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir)).eval()


# ----------------------------------------------------------------------------- rewards and Q_RM


def test_reward_scores_match_a_hand_built_sequence(reward_model, tokenizer):
    rewards = reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, batch_size=2, progress=False)
    assert rewards.shape == (5,) and rewards.dtype == torch.float32 and torch.isfinite(rewards).all()
    fmt = PromptFormatter(tokenizer, 128, 192)
    ids = torch.tensor([fmt.prompt_ids(INSTRUCTIONS[3]).ids + fmt.response_ids(CHOSEN[3]).ids])
    with torch.no_grad():
        alone = sequence_rewards(reward_model, ids, torch.ones_like(ids))
    assert rewards[3].item() == pytest.approx(alone.item(), abs=1e-5)
    # Batch size (hence padding) does not change a reward.
    one_by_one = reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, batch_size=1, progress=False)
    torch.testing.assert_close(rewards, one_by_one, atol=1e-5, rtol=1e-5)


def test_reward_scores_limits_and_mode(reward_model, tokenizer):
    reward_model.train()
    short = reward_scores(reward_model, tokenizer, INSTRUCTIONS[:2], CHOSEN[:2], max_response_tokens=2,
                          progress=False)
    assert reward_model.training  # the caller's mode is restored
    reward_model.eval()
    full = reward_scores(reward_model, tokenizer, INSTRUCTIONS[:2], CHOSEN[:2], progress=False)
    assert not torch.allclose(short, full)  # truncated responses are other sequences
    assert reward_scores(reward_model, tokenizer, [], [], progress=False).shape == (0,)
    with pytest.raises(ValueError, match="differ in length"):
        reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN[:2])
    with pytest.raises(TypeError, match=r"responses\[1\] must be a string"):
        reward_scores(reward_model, tokenizer, INSTRUCTIONS[:2], ["a", 3])
    with pytest.raises(ValueError, match="batch_size"):
        reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, batch_size=0)


def test_non_finite_reward_names_the_example(reward_model, tokenizer):
    def poison(module, inputs, output):
        output = output.clone()
        output[1] = float("nan")
        return output

    handle = reward_model.score.register_forward_hook(poison)
    try:
        with pytest.raises(FloatingPointError, match="example index 1"):
            reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, batch_size=8, progress=False)
    finally:
        handle.remove()


def test_preference_accuracy_is_the_share_by_hand(reward_model, tokenizer):
    kw = dict(batch_size=3, progress=False)
    r_chosen = reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, **kw)
    r_rejected = reward_scores(reward_model, tokenizer, INSTRUCTIONS, REJECTED, **kw)
    assert not torch.any(r_chosen == r_rejected)  # no ties, so swapping is the complement
    by_hand = sum(c > r for c, r in zip(r_chosen.tolist(), r_rejected.tolist())) / len(INSTRUCTIONS)
    accuracy = preference_accuracy(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, REJECTED, **kw)
    assert accuracy == pytest.approx(by_hand)
    swapped = preference_accuracy(reward_model, tokenizer, INSTRUCTIONS, REJECTED, CHOSEN, **kw)
    assert swapped == pytest.approx(1 - accuracy)
    # A pair against itself is a tie: an error, as in training.
    assert preference_accuracy(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, CHOSEN, **kw) == 0.0
    with pytest.raises(ValueError, match="at least one pair"):
        preference_accuracy(reward_model, tokenizer, [], [], [])


# ----------------------------------------------------------------------------- match rate


def test_match_rate_hand_cases():
    a = [1.0, 2.0, 0.5, 3.0]
    b = [0.0, 3.0, 0.5, 1.0]
    # RM prefers: a, b, tie, a
    assert match_rate(a, b, [True, False, True, True]) == pytest.approx(3 / 4)  # RM tie on a decided pair: mismatch
    assert match_rate(a, b, [True, True, None, False]) == pytest.approx(1 / 3)  # reference tie excluded
    assert match_rate(a, b, [False, True, None, False]) == 0.0
    assert match_rate(torch.tensor(a), torch.tensor(b), [True, False, None, True]) == 1.0
    with pytest.raises(ValueError, match="reference ties all 2 pairs"):
        match_rate([1.0, 2.0], [0.0, 1.0], [None, None])
    with pytest.raises(ValueError, match="got 2 rewards for a, 1 for b"):
        match_rate([1.0, 2.0], [0.0], [True, True])


def test_reference_preferences():
    assert reference_preferences([9.0, 5.0, 7.0, None, 3.0], [8.0, 6.0, 7.0, 4.0, None]) == [
        True, False, None, None, None]
    with pytest.raises(ValueError, match="2 reference scores for a but 1 for b"):
        reference_preferences([1.0, 2.0], [1.0])


def test_rm_agrees_with_itself(reward_model, tokenizer):
    a = reward_scores(reward_model, tokenizer, INSTRUCTIONS, CHOSEN, progress=False)
    b = reward_scores(reward_model, tokenizer, INSTRUCTIONS, REJECTED, progress=False)
    assert match_rate(a, b, reference_preferences(a.tolist(), b.tolist())) == 1.0


# ----------------------------------------------------------------------------- responses


def test_generate_responses_greedy_is_deterministic(policy, tokenizer):
    out = generate_responses(policy, tokenizer, INSTRUCTIONS, max_new_tokens=8, batch_size=2, progress=False)
    assert len(out) == len(INSTRUCTIONS) and all(isinstance(r, str) for r in out)
    again = generate_responses(policy, tokenizer, INSTRUCTIONS, max_new_tokens=8, batch_size=2, progress=False)
    assert out == again
    assert all(tokenizer.eos_token not in r for r in out)
    assert generate_responses(policy, tokenizer, [], progress=False) == []


def test_generate_responses_decodes_up_to_eos(policy, tokenizer):
    """Force EOS as the 3rd token: the text is the first two tokens, whatever comes after."""
    eos = tokenizer.eos_token_id

    def force_eos(module, inputs, output):
        logits = output.clone()
        step = getattr(force_eos, "step", 0)
        if step == 2:
            logits[..., :] = -1e9
            logits[..., eos] = 1e9
        force_eos.step = step + 1
        return logits

    handle = policy.lm_head.register_forward_hook(force_eos)
    try:
        out = generate_responses(policy, tokenizer, INSTRUCTIONS[:1], max_new_tokens=6, progress=False)
    finally:
        handle.remove()
    force_eos.step = 0
    two = generate_responses(policy, tokenizer, INSTRUCTIONS[:1], max_new_tokens=2, progress=False)
    assert out == two


def test_generate_responses_sampling_and_plain_template(tiny_plain_model_dir):
    tokenizer = load_tokenizer(str(tiny_plain_model_dir))
    policy = load_policy(str(tiny_plain_model_dir))
    policy.train()
    torch.manual_seed(0)
    out = generate_responses(policy, tokenizer, INSTRUCTIONS[:3], max_new_tokens=5, greedy=False, progress=False)
    assert len(out) == 3 and all(isinstance(r, str) for r in out) and policy.training
