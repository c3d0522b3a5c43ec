import pytest
import splitmix
import torch

from seam_lightning.data.collate import pad
from seam_lightning.models.loading import load_policy, load_tokenizer
from seam_lightning.rl.generation import (
    Responses,
    SamplingSettings,
    SeededSampling,
    counter_uniform,
    inverse_cdf,
    sample_responses,
)
from seam_lightning.seeding import mix_seed

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


def test_counter_uniform_is_the_reference_splitmix_word():
    seeds = [0, 11, 2**62 + 5, mix_seed(3, 1, 7)]
    for step in (0, 1, 17):
        got = counter_uniform(torch.tensor(seeds), step)
        assert got.dtype == torch.float64
        assert got.tolist() == [splitmix.uniform(s, step) for s in seeds]


def test_counter_uniforms_are_uniform():
    # Kolmogorov-Smirnov on 20,000 (seed, step) pairs: the largest CDF gap stays under the 0.1% critical value.
    u = torch.cat([counter_uniform(torch.arange(2000), step) for step in range(10)]).sort().values
    n = len(u)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert (grid - u).abs().max().item() < 1.95 / n**0.5
    assert 0.0 <= u.min().item() and u.max().item() < 1.0


@pytest.mark.parametrize("block", [256, 2, 3])
def test_inverse_cdf_by_hand(block):
    probs = torch.tensor([[0.5, 0.25, 0.0, 0.25]]).expand(7, 4)
    u = torch.tensor([0.0, 0.49, 0.5, 0.74, 0.75, 0.99, 1.0 - 2**-53], dtype=torch.float64)
    # [0, .5) -> 0, [.5, .75) -> 1, token 2 has an empty interval, [.75, 1) -> 3.
    assert inverse_cdf(probs, u, block).tolist() == [0, 0, 1, 1, 3, 3, 3]
    # Unnormalised weights: u scales by their total.
    assert inverse_cdf(torch.tensor([[2.0, 1.0, 1.0]]).expand(3, 3),
                       torch.tensor([0.49, 0.5, 0.76], dtype=torch.float64), block).tolist() == [0, 1, 2]


def test_inverse_cdf_equals_a_full_float64_search_and_skips_zero_weights():
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand(4, 1000, generator=generator) ** 8  # many tiny weights
    weights[:, ::7] = 0.0  # filtered tokens, also at block edges
    weights[1, 256:768] = 0.0  # whole empty blocks
    u = torch.rand(4, 2000, generator=generator, dtype=torch.float64)
    cdf = weights.double().cumsum(-1)
    for row in range(4):
        uniforms = u[row]
        got = inverse_cdf(weights[row].expand(len(uniforms), -1), uniforms)
        expected = torch.searchsorted(cdf[row], uniforms * cdf[row, -1], right=True)
        assert torch.equal(got, expected)
        assert (weights[row, got] > 0).all()


def _draws(settings, logits, seeds, step=0):
    sampler = SeededSampling(seeds, settings)
    sampler.step = step
    scores = sampler(torch.zeros(len(seeds), 1, dtype=torch.long), logits.expand(len(seeds), -1))
    assert torch.isinf(scores).sum(-1).tolist() == [logits.shape[-1] - 1] * len(seeds)  # greedy emits the draw
    return scores.argmax(-1)


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    return ((counts - expected) ** 2 / expected).sum().item()


def test_seeded_sampling_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    probs = torch.softmax(logits.double() / 0.8, -1)[0]
    draws = torch.cat([_draws(SamplingSettings(temperature=0.8), logits, list(range(s, s + 1000)), step)
                       for s, step in ((0, 0), (1000, 1), (5000, 7), (9000, 2))])
    counts = torch.bincount(draws, minlength=5).double()
    assert _chi_square(counts, probs) < 18.5  # chi-square, 4 degrees of freedom, p = 0.001
    # Top-k draws from the renormalised top tokens only.
    draws = _draws(SamplingSettings(top_k=2), logits, list(range(4000)))
    counts = torch.bincount(draws, minlength=5).double()
    assert counts[2:].sum() == 0
    assert _chi_square(counts[:2], torch.softmax(logits[0, :2].double(), -1)) < 10.8  # 1 degree of freedom


def test_seeded_sampling_is_the_inverse_cdf_at_the_reference_uniform():
    logits = torch.randn(1, 300, generator=torch.Generator().manual_seed(0)) * 3
    seeds = [3, 1, 4, 1, 5, 9, 2, 6]
    probs = torch.softmax(logits.double() / 0.7, -1)[0]
    cdf = probs.cumsum(0)
    for step in (0, 5):
        expected = [int((cdf <= splitmix.uniform(s, step)).sum()) for s in seeds]
        assert _draws(SamplingSettings(temperature=0.7), logits, seeds, step).tolist() == expected


def test_a_rows_draw_does_not_depend_on_its_batch():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    seeds = [10, 20, 30, 40, 50, 60]
    settings = SamplingSettings()
    together = SeededSampling(seeds, settings)(torch.zeros(6, 1, dtype=torch.long), logits).argmax(-1)
    for row in range(6):
        alone = SeededSampling([seeds[row]], settings)(torch.zeros(1, 1, dtype=torch.long), logits[row:row + 1])
        assert alone.argmax(-1).item() == together[row].item()
    order = [5, 0, 3]
    subset = SeededSampling([seeds[i] for i in order], settings)(torch.zeros(3, 1, dtype=torch.long), logits[order])
    assert subset.argmax(-1).tolist() == together[order].tolist()


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


@pytest.mark.parametrize("lora", [False, True])
def test_decoding_attention_is_switched_for_generation_only(tiny_model_dir, lora):
    """With attn_implementation="eager" the tokens are those of a model loaded with eager attention."""
    from transformers import AutoModelForCausalLM

    from seam_lightning import LoRASettings

    ids, mask = torch.tensor([[5, 6, 7, 8], [2, 2, 9, 10]]), torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    settings = SamplingSettings(max_new_tokens=8)
    model = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0) if lora else None).eval()
    inner = model.get_base_model() if lora else model
    assert inner.config._attn_implementation == "sdpa"
    seen = []
    hook = inner.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, args: seen.append(module.config._attn_implementation))
    got = sample_responses(model, ids, mask, settings, EOS, PAD, greedy=True, attn_implementation="eager")
    hook.remove()
    assert set(seen) == {"eager"} and len(seen) == 8  # the prompt, then one step per new token
    assert inner.config._attn_implementation == "sdpa"  # its own attention is back
    eager = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()
    expected = eager.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                              eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(got.sequences, expected)
