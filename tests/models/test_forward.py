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
