import torch
from transformers import BertConfig, BertForSequenceClassification

from seam_lightning.data.collate import IGNORE_INDEX, pad
from seam_lightning.models import load_policy, load_reward_model
from seam_lightning.models.forward import response_token_logprobs, sequence_rewards
from seam_lightning.models.prefix import (
    continuation_logprob_sums,
    continuation_rewards,
    encode_prompts,
    supports_prefix_sharing,
)

PROMPTS = [[5, 6, 7, 8, 9], [10, 11]]
# (prompt index, continuation): several continuations per prompt, of different lengths.
CONTINUATIONS = [(0, [20, 21, 22]), (0, [23]), (1, [24, 25, 26, 27, 28]), (1, [29, 30]), (0, [31, 32, 33, 34])]


def _shared(model, fn):
    ids, mask = pad(PROMPTS, 0, "left")
    states = encode_prompts(model, ids, mask)
    rows = torch.tensor([p for p, _ in CONTINUATIONS])
    cont_ids, cont_mask = pad([c for _, c in CONTINUATIONS], 0, "right")
    return fn(model, states, rows, cont_ids, cont_mask)


@torch.no_grad()
def test_logprob_sums_equal_full_forwards(tiny_model_dir):
    policy = load_policy(str(tiny_model_dir)).eval()
    got = _shared(policy, continuation_logprob_sums)
    for row, (p, cont) in enumerate(CONTINUATIONS):
        ids = torch.tensor([PROMPTS[p] + cont])
        labels = torch.tensor([[IGNORE_INDEX] * len(PROMPTS[p]) + cont])
        logprobs, _ = response_token_logprobs(policy, ids, torch.ones_like(ids), labels)
        torch.testing.assert_close(got[row], logprobs.sum(), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_rewards_equal_full_forwards(tiny_model_dir):
    torch.manual_seed(0)
    reward_model = load_reward_model(str(tiny_model_dir)).eval()
    got = _shared(reward_model, continuation_rewards)
    for row, (p, cont) in enumerate(CONTINUATIONS):
        ids = torch.tensor([PROMPTS[p] + cont])
        torch.testing.assert_close(got[row], sequence_rewards(reward_model, ids, torch.ones_like(ids))[0],
                                   atol=1e-5, rtol=1e-5)


def test_only_decoder_backbones_share_prompts(tiny_model_dir):
    assert supports_prefix_sharing(load_policy(str(tiny_model_dir)))
    assert supports_prefix_sharing(load_reward_model(str(tiny_model_dir)))
    encoder = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=1))
    assert not supports_prefix_sharing(encoder)


@torch.no_grad()
def test_rewards_with_pad_eos_endings_equal_plain_sequence_classification(tiny_model_dir):
    """Continuations ending in pad == EOS (the reward is read before it, so the body skips that column), and
    one that is a lone EOS (read at the prompt's last token), against the model's own forward."""
    torch.manual_seed(0)
    reward_model = load_reward_model(str(tiny_model_dir)).eval()
    eos = reward_model.config.pad_token_id
    assert eos is not None
    continuations = [(0, [20, 21, eos]), (1, [24, 25, 26, eos]), (0, [eos]), (1, [29, 30])]
    ids, mask = pad(PROMPTS, 0, "left")
    rows = torch.tensor([p for p, _ in continuations])
    cont_ids, cont_mask = pad([c for _, c in continuations], eos, "right")
    got = continuation_rewards(reward_model, encode_prompts(reward_model, ids, mask), rows, cont_ids, cont_mask)
    expected = torch.stack([reward_model(input_ids=torch.tensor([PROMPTS[p] + c])).logits[0, 0]
                            for p, c in continuations])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_logprob_sums_of_one_token_continuations_equal_full_forwards(tiny_model_dir):
    """Single-token continuations are predicted by the prompts' last states alone."""
    policy = load_policy(str(tiny_model_dir)).eval()
    ids, mask = pad(PROMPTS, 0, "left")
    continuations = [(0, [20]), (1, [21]), (0, [22])]
    rows = torch.tensor([p for p, _ in continuations])
    cont_ids, cont_mask = pad([c for _, c in continuations], 0, "right")
    got = continuation_logprob_sums(policy, encode_prompts(policy, ids, mask), rows, cont_ids, cont_mask)
    for row, (p, cont) in enumerate(continuations):
        logits = policy(input_ids=torch.tensor([PROMPTS[p]])).logits[0, -1]
        torch.testing.assert_close(got[row], logits.log_softmax(-1)[cont[0]], atol=1e-5, rtol=1e-5)
