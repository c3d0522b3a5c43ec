import pytest
import torch

from seam_lightning.data.collate import pad
from seam_lightning.models.loading import load_policy, load_tokenizer
from seam_lightning.rl.generation import Responses, SamplingSettings, sample_responses

EOS = 2
PAD = EOS


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    texts = ["What does `json.dumps` do?", "Join two", "Return the sum of the values; the quick brown fox"]
    seqs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len({len(s) for s in seqs}) == 3  # really different amounts of left padding
    return pad(seqs, tokenizer.pad_token_id, "left")


def _sample(policy, tokenizer, prompts, settings, greedy=False):
    ids, mask = prompts
    return sample_responses(policy, ids, mask, settings, tokenizer.eos_token_id, tokenizer.pad_token_id, greedy=greedy)


def _expected_response_mask(tokens, eos_id):
    mask = torch.zeros_like(tokens)
    for row, seq in enumerate(tokens.tolist()):
        end = seq.index(eos_id) + 1 if eos_id in seq else len(seq)
        mask[row, :end] = 1
    return mask


# --- a fake policy with a fixed generate(): exact mask values ---------------------------


class FixedGenerate(torch.nn.Module):
    """Appends fixed response rows to the prompts, whatever the config; records the config it got."""

    def __init__(self, responses):
        super().__init__()
        self.responses = torch.tensor(responses)
        self.configs = []

    def generate(self, input_ids, attention_mask, generation_config, logits_processor=None, use_model_defaults=None):
        assert use_model_defaults is False  # the checkpoint's generation defaults must never merge in
        self.configs.append(generation_config)
        return torch.cat([input_ids, self.responses[: input_ids.shape[0]]], dim=1)


FIXED = [
    [10, 11, EOS, PAD, PAD, PAD],  # EOS in the middle, then pad (== EOS) after it
    [EOS, PAD, PAD, PAD, PAD, PAD],  # EOS first: a one-token response
    [12, 13, 14, 15, 16, 17],  # no EOS: hit max_new_tokens
    [18, 19, 20, 21, 22, EOS],  # EOS as the very last token
    [23, EOS, 24, EOS, 25, 26],  # later tokens after the first EOS (even another EOS) don't count
]


def _fixed_prompts():
    return pad([[5, 6, 7], [8], [9, 5], [6, 7, 8, 9], [5]], PAD, "left")


def test_response_mask_covers_up_to_and_including_first_eos():
    ids, mask = _fixed_prompts()
    out = sample_responses(FixedGenerate(FIXED), ids, mask, SamplingSettings(max_new_tokens=6), EOS, PAD)
    assert out.response_mask.tolist() == [
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0],
    ]
    assert out.lengths.tolist() == [3, 1, 6, 6, 2]
    assert out.ended.tolist() == [True, True, False, True, True]
    assert out.ended.dtype == torch.bool


def test_fake_generate_layout_and_attention_mask():
    ids, mask = _fixed_prompts()
    out = sample_responses(FixedGenerate(FIXED), ids, mask, SamplingSettings(max_new_tokens=6), EOS, PAD)
    assert isinstance(out, Responses)
    assert out.start == ids.shape[1] == 4
    assert out.tokens.tolist() == FIXED
    assert torch.equal(out.sequences[:, :4], ids)
    assert torch.equal(out.attention_mask, torch.cat([mask, out.response_mask], dim=1))
    assert out.attention_mask.dtype == torch.long


def test_eos_and_pad_ids_are_distinct_when_pad_differs_from_eos():
    # pad 0 != EOS 2: the padding generate() puts after EOS is masked out too, and a 0 before any EOS isn't EOS.
    ids, mask = pad([[5, 6], [7]], 0, "left")
    fake = FixedGenerate([[0, 10, EOS, 0], [11, 12, 13, 0]])
    out = sample_responses(fake, ids, mask, SamplingSettings(max_new_tokens=4), EOS, 0)
    assert out.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert out.ended.tolist() == [True, False]


def test_generation_config_follows_settings_and_greedy_flag():
    ids, mask = _fixed_prompts()
    fake = FixedGenerate(FIXED)
    settings = SamplingSettings(max_new_tokens=6, temperature=0.7, top_k=5, top_p=0.9)
    sample_responses(fake, ids, mask, settings, EOS, PAD)
    sample_responses(fake, ids, mask, settings, EOS, PAD, greedy=True)
    sampled, greedy = fake.configs
    assert sampled.do_sample and not greedy.do_sample
    assert (sampled.temperature, sampled.top_k, sampled.top_p) == (0.7, 5, 0.9)
    assert sampled.max_new_tokens == greedy.max_new_tokens == 6
    assert sampled.eos_token_id == EOS and sampled.pad_token_id == PAD


# --- the real tiny model: shapes and determinism ---------------------------------------


def test_real_model_layout_and_masks(policy, tokenizer, prompts):
    torch.manual_seed(0)
    out = _sample(policy, tokenizer, prompts, SamplingSettings(max_new_tokens=8))
    ids, mask = prompts
    assert out.start == ids.shape[1]
    assert torch.equal(out.tokens, out.sequences[:, out.start:])
    assert torch.equal(out.sequences[:, : out.start], ids)
    assert 1 <= out.tokens.shape[1] <= 8
    assert torch.equal(out.response_mask, _expected_response_mask(out.tokens, tokenizer.eos_token_id))
    assert torch.equal(out.ended, (out.tokens == tokenizer.eos_token_id).any(-1))
    assert torch.equal(out.attention_mask, torch.cat([mask, out.response_mask], dim=1))


@pytest.mark.parametrize("max_new_tokens", [1, 3])
def test_responses_have_at_most_max_new_tokens(policy, tokenizer, prompts, max_new_tokens):
    torch.manual_seed(1)
    out = _sample(policy, tokenizer, prompts, SamplingSettings(max_new_tokens=max_new_tokens))
    assert out.tokens.shape[1] <= max_new_tokens
    assert (out.lengths <= max_new_tokens).all() and (out.lengths >= 1).all()


def test_greedy_is_deterministic_and_ignores_torch_rng(policy, tokenizer, prompts):
    settings = SamplingSettings(max_new_tokens=8, temperature=0.5, top_k=3)
    torch.manual_seed(0)
    first = _sample(policy, tokenizer, prompts, settings, greedy=True)
    torch.manual_seed(123)
    second = _sample(policy, tokenizer, prompts, settings, greedy=True)
    assert torch.equal(first.sequences, second.sequences)
    assert torch.equal(first.response_mask, second.response_mask)
    # Greedy really is the argmax: its first token is the argmax of the next-token logits.
    ids, mask = prompts
    logits = policy(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.equal(first.tokens[:, 0], logits.argmax(-1))


def test_sampling_is_reproducible_with_the_same_seed(policy, tokenizer, prompts):
    settings = SamplingSettings(max_new_tokens=8)
    torch.manual_seed(7)
    first = _sample(policy, tokenizer, prompts, settings)
    torch.manual_seed(7)
    second = _sample(policy, tokenizer, prompts, settings)
    torch.manual_seed(8)
    other = _sample(policy, tokenizer, prompts, settings)
    assert torch.equal(first.sequences, second.sequences)
    assert not torch.equal(first.sequences, other.sequences)  # it really samples


@pytest.mark.parametrize("kwargs", [
    {"max_new_tokens": 0},
    {"temperature": 0},
    {"temperature": -1.0},
    {"top_p": 0},
    {"top_p": 1.5},
    {"top_k": -1},
])
def test_invalid_sampling_settings_raise(kwargs):
    with pytest.raises(ValueError, match="invalid sampling settings"):
        SamplingSettings(**kwargs)


def test_default_and_edge_sampling_settings_are_valid():
    SamplingSettings()
    SamplingSettings(max_new_tokens=1, temperature=1e-3, top_k=0, top_p=1.0)


# --- seeded sampling: a response depends on its seed only ------------------------------


def test_seeded_sampling_ignores_batch_composition_padding_and_global_rng(policy, tokenizer, prompts):
    settings = SamplingSettings(max_new_tokens=8)
    ids, mask = prompts
    seeds = [11, 22, 33][: len(ids)]
    torch.manual_seed(0)
    together = sample_responses(policy, ids, mask, settings, tokenizer.eos_token_id, tokenizer.pad_token_id,
                                seeds=seeds)
    torch.manual_seed(99)
    for row in range(len(ids)):
        keep = mask[row].bool()  # the prompt alone, without the batch's left padding
        alone = sample_responses(policy, ids[row:row + 1, keep], mask[row:row + 1, keep], settings,
                                 tokenizer.eos_token_id, tokenizer.pad_token_id, seeds=[seeds[row]])
        n = int(alone.lengths[0])
        assert torch.equal(alone.tokens[0, :n], together.tokens[row, :n])
        assert int(together.lengths[row]) == n
    other = sample_responses(policy, ids, mask, settings, tokenizer.eos_token_id, tokenizer.pad_token_id,
                             seeds=[s + 1 for s in seeds])
    assert not torch.equal(other.sequences, together.sequences)  # it really samples


def test_seeded_gumbel_sampling_draws_from_the_softmax():
    from seam_lightning.rl.generation import SeededGumbelSampling

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    probs = torch.softmax(logits / 0.8, -1)[0]
    counts = torch.zeros(4)
    for seed in range(4000):
        sampler = SeededGumbelSampling([seed], SamplingSettings(temperature=0.8))
        counts[sampler(torch.zeros(1, 1, dtype=torch.long), logits).argmax()] += 1
    assert torch.allclose(counts / 4000, probs, atol=0.025)
    # Top-k removes the tail: with k=2 only the two best tokens are ever drawn.
    drawn = {int(SeededGumbelSampling([s], SamplingSettings(top_k=2))(torch.zeros(1, 1, dtype=torch.long),
                                                                       logits).argmax()) for s in range(300)}
    assert drawn == {0, 1}


def test_wrong_number_of_seeds_is_rejected(policy, tokenizer, prompts):
    ids, mask = prompts
    with pytest.raises(ValueError, match="seeds"):
        sample_responses(policy, ids, mask, SamplingSettings(max_new_tokens=2), tokenizer.eos_token_id,
                         tokenizer.pad_token_id, seeds=[1])


def test_generation_of_a_policy_training_with_gradient_checkpointing_is_unchanged(tiny_model_dir):
    # In train mode with checkpointing, transformers drops the layers' key/value cache;
    # generating there would feed the model its newest token alone.
    ids, mask = torch.tensor([[5, 6, 7, 8], [2, 2, 9, 10]]), torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    settings = SamplingSettings(max_new_tokens=8)
    plain = load_policy(str(tiny_model_dir)).eval()
    expected = sample_responses(plain, ids, mask, settings, EOS, PAD, greedy=True)
    checkpointed = load_policy(str(tiny_model_dir), gradient_checkpointing=True).train()
    got = sample_responses(checkpointed, ids, mask, settings, EOS, PAD, greedy=True)
    assert torch.equal(got.sequences, expected.sequences)
    assert checkpointed.training  # the caller's mode is restored
