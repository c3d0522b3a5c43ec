import pytest
import torch

from seam_lightning.data.collate import pad
from seam_lightning.models import load_policy, load_reward_model, response_token_logprobs, sequence_rewards
from seam_lightning.models.forward import last_token_index

SEQS = [[1, 40, 41, 42, 43, 44, 2], [1, 50, 2], [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 2]]


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir):
    torch.manual_seed(0)
    return load_reward_model(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir)).eval()


def test_last_token_index_for_both_sides():
    _, right = pad(SEQS, 0, "right")
    _, left = pad(SEQS, 0, "left")
    assert last_token_index(right).tolist() == [6, 2, 10]
    assert last_token_index(left).tolist() == [10, 10, 10]


@torch.inference_mode()
def test_reward_does_not_depend_on_padding_side_or_batch(reward_model):
    alone = torch.stack([sequence_rewards(reward_model, *pad([s], 0, "right"))[0] for s in SEQS])
    right = sequence_rewards(reward_model, *pad(SEQS, 0, "right"))
    left = sequence_rewards(reward_model, *pad(SEQS, 0, "left"))
    shuffled = sequence_rewards(reward_model, *pad(SEQS[::-1], 0, "left")).flip(0)
    # Pad id equal to EOS (2) must not confuse the last-token lookup either.
    eos_padded = sequence_rewards(reward_model, *pad(SEQS, 2, "right"))
    for other in (right, left, shuffled, eos_padded):
        torch.testing.assert_close(other, alone, atol=1e-5, rtol=1e-5)
    assert alone.unique().numel() == 3  # the three sequences really get different rewards


@torch.inference_mode()
def test_response_logprobs_match_full_forward_and_ignore_padding(policy):
    ids, mask = pad(SEQS, 0, "right")
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100  # score tokens from position 2 on
    logprobs, rows = response_token_logprobs(policy, ids, mask, labels)
    full = policy(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    expected = full[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)[labels[:, 1:] != -100]
    torch.testing.assert_close(logprobs, expected, atol=1e-5, rtol=1e-5)
    # Same per-sequence sums when left-padded.
    lids, lmask = pad(SEQS, 0, "left")
    llabels = lids.masked_fill(lmask == 0, -100)
    for row, seq in enumerate(SEQS):
        llabels[row, lids.shape[1] - len(seq): lids.shape[1] - len(seq) + 2] = -100
    left_logprobs, left_rows = response_token_logprobs(policy, lids, lmask, llabels)
    sums = torch.zeros(3).index_add_(0, rows, logprobs)
    left_sums = torch.zeros(3).index_add_(0, left_rows, left_logprobs)
    torch.testing.assert_close(left_sums, sums, atol=1e-4, rtol=1e-5)


# --- response logits, log-probs and values (PPO) ------------------------------------------

from seam_lightning.models.forward import (  # noqa: E402
    head_logprobs,
    hidden_states,
    logprobs_of,
    position_ids_from_mask,
    response_logits,
    response_values,
)

PROMPTS = [[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61, 62]]
RESPONSES = [[70, 71, 72, 2], [80, 81, 2], [90, 2]]


def _rollout(prompts, responses, pad_id=2):
    """Left-padded prompts with right-padded responses after them, as sample_responses lays them out."""
    ids, mask = pad(prompts, pad_id, "left")
    resp, resp_mask = pad(responses, pad_id, "right")
    return torch.cat([ids, resp], 1), torch.cat([mask, resp_mask], 1), ids.shape[1], resp_mask


@torch.inference_mode()
def test_response_logits_match_plain_forward_at_predicting_positions(policy):
    ids, mask, start, _ = _rollout(PROMPTS, RESPONSES)
    logits = response_logits(policy, ids, mask, start)
    assert logits.shape == (3, ids.shape[1] - start, policy.config.vocab_size)
    assert logits.dtype == torch.float32
    full = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    torch.testing.assert_close(logits, full[:, start - 1 : -1], atol=1e-5, rtol=1e-5)


def test_response_logits_at_a_temperature_are_the_plain_logits_divided_by_it(policy):
    ids, mask, start, _ = _rollout(PROMPTS, RESPONSES)
    full = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logits = response_logits(policy, ids, mask, start, temperature=0.7)
    torch.testing.assert_close(logits, full[:, start - 1 : -1] / 0.7, atol=1e-5, rtol=1e-5)


def test_logprobs_of_is_log_softmax_gather():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7) * 3
    tokens = torch.randint(0, 7, (2, 5))
    expected = torch.empty(2, 5)
    for b in range(2):
        for t in range(5):
            expected[b, t] = logits[b, t, tokens[b, t]] - torch.logsumexp(logits[b, t], -1)
    torch.testing.assert_close(logprobs_of(logits, tokens), expected, atol=1e-6, rtol=1e-6)
    assert (logprobs_of(logits, tokens) <= 0).all()


@torch.inference_mode()
@pytest.mark.parametrize("rows_per_chunk, rows_per_softmax", [(512, None), (10, 3), (4, 16)])
def test_head_logprobs_in_chunks_are_the_plain_forwards_log_softmax(policy, rows_per_chunk, rows_per_softmax):
    ids, mask, _, _ = _rollout(PROMPTS, RESPONSES)
    full = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    rows, cols = mask[:, 1:].nonzero(as_tuple=True)
    expected = full[rows, cols].log_softmax(-1).gather(-1, ids[rows, cols + 1].unsqueeze(-1)).squeeze(-1)
    hidden = hidden_states(policy, ids, mask)[rows, cols]
    got = head_logprobs(policy, hidden, ids[rows, cols + 1], rows_per_chunk, rows_per_softmax)
    assert got.shape == (len(rows),) and len(rows) > 10
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_response_logprobs_do_not_depend_on_left_padding_or_batch(policy):
    ids, mask, start, resp_mask = _rollout(PROMPTS, RESPONSES)
    batched = logprobs_of(response_logits(policy, ids, mask, start), ids[:, start:])
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        a_ids, a_mask, a_start, _ = _rollout([prompt], [response])
        alone = logprobs_of(response_logits(policy, a_ids, a_mask, a_start), a_ids[:, a_start:])[0]
        n = len(response)
        assert resp_mask[row].sum() == n
        torch.testing.assert_close(batched[row, :n], alone, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_response_values_are_score_head_at_each_predicting_position(reward_model):
    ids, mask, start, resp_mask = _rollout(PROMPTS, RESPONSES)
    values = response_values(reward_model, ids, mask, start)
    assert values.shape == (3, ids.shape[1] - start)
    for t in (0, 1):  # every row has at least two response tokens
        prefix = sequence_rewards(reward_model, ids[:, : start + t], mask[:, : start + t])
        torch.testing.assert_close(values[:, t], prefix, atol=1e-5, rtol=1e-5)
    # V_0 values the prompt alone, independent of the response that follows.
    prompt_only = sequence_rewards(reward_model, *pad(PROMPTS, 2, "left"))
    torch.testing.assert_close(values[:, 0], prompt_only, atol=1e-5, rtol=1e-5)
    # The first row's last value predicts its last token (EOS): the prefix without that EOS.
    n = len(RESPONSES[0])
    last = sequence_rewards(reward_model, ids[:1, : start + n - 1], mask[:1, : start + n - 1])
    torch.testing.assert_close(values[0, n - 1 : n], last, atol=1e-5, rtol=1e-5)


def test_response_values_need_a_score_head(policy):
    ids, mask, start, _ = _rollout(PROMPTS[:1], RESPONSES[:1])
    with pytest.raises(TypeError, match="no `score` head"):
        response_values(policy, ids, mask, start)
