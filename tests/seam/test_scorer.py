import itertools
import math

import pytest
import torch

from tiny import first_layer_of, with_live_adapters

from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.models import LoRASettings, load_policy, load_reward_model, load_tokenizer, sequence_rewards
from seam_lightning.models.frozen_blocks import decoder_blocks
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer

EXAMPLES = [
    SeamExample(3, "What does `json.dumps` do?", "Serialize obj to a JSON formatted str.", [
        "Join two or more pathname components.",
        "the lazy dog",
        "Return the sum of the values; the quick brown fox jumps over the lazy dog.",
    ]),
    SeamExample(5, "Explain what `os.path.join` is for.", "Join two or more pathname components.", [
        "Split a pathname into a pair (head, tail).",
        "fox",
    ]),
    SeamExample(8, "Return the sum.", "Return the sum of the values.", []),
    SeamExample(9, "Deserialize s.", "Deserialize s to a Python object.", [
        "Serialize obj to a JSON formatted str.", "dog", "Join two paths.", "the quick brown fox",
    ]),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: on a busy machine thread hand-offs cost far more than the matmuls."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir):
    torch.manual_seed(0)  # the scalar head is new and random
    return load_reward_model(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def reference(policy, reward_model, tokenizer):
    return score_all(SeamScorer(policy, reward_model, tokenizer, progress=False))


def score_all(scorer: SeamScorer, examples=EXAMPLES) -> dict[int, SeamResult]:
    results = list(scorer.score(examples))
    assert [r.id for r in results] == [e.id for e in examples]  # input order
    return {r.id: r for r in results}


@torch.inference_mode()
def expected_result(policy, reward_model, tokenizer, reward_tokenizer, example: SeamExample) -> SeamResult:
    """Plain single-sequence forwards (no padding, full logits) and the SEAM formula written out."""
    pm_fmt, rm_fmt = PromptFormatter(tokenizer, 128, 192), PromptFormatter(reward_tokenizer, 128, 192)

    def reward(response: str) -> float:
        ids = torch.tensor([rm_fmt.prompt_ids(example.instruction).ids + rm_fmt.response_ids(response).ids])
        return sequence_rewards(reward_model, ids, torch.ones_like(ids)).item()

    prompt = pm_fmt.prompt_ids(example.instruction).ids
    logprob_sums, lengths = [], []
    for candidate in example.candidates:
        response = pm_fmt.response_ids(candidate).ids
        ids = torch.tensor([prompt + response])
        logprobs = policy(ids).logits.log_softmax(-1)[0]
        # The token at position p is predicted by the logits at p - 1.
        logprob_sums.append(sum(logprobs[p - 1, ids[0, p]].item() for p in range(len(prompt), ids.shape[1])))
        lengths.append(len(response))
    golden = reward(example.response)
    rewards = [reward(c) for c in example.candidates]
    seam = sum(math.exp(lp / n) * max(r - golden, 0.0) for lp, n, r in zip(logprob_sums, lengths, rewards))
    return SeamResult(example.id, seam, golden, rewards, logprob_sums, lengths)


def assert_results_close(got: dict[int, SeamResult], want: dict[int, SeamResult], atol=1e-4):
    assert got.keys() == want.keys()
    for i, w in want.items():
        g = got[i]
        assert g.candidate_lengths == w.candidate_lengths
        assert g.seam == pytest.approx(w.seam, abs=atol)
        assert g.golden_reward == pytest.approx(w.golden_reward, abs=atol)
        assert g.candidate_rewards == pytest.approx(w.candidate_rewards, abs=atol)
        # Sums of hundreds of float32 log-probs: their rounding is relative (~1e-7 of the sum).
        assert g.candidate_logprob_sums == pytest.approx(w.candidate_logprob_sums, abs=atol, rel=1e-6)


def test_matches_hand_computation(reference, policy, reward_model, tokenizer):
    want = {e.id: expected_result(policy, reward_model, tokenizer, tokenizer, e) for e in EXAMPLES}
    assert_results_close(reference, want)
    assert any(r.seam > 0 for r in reference.values())  # the RM really misjudges something here
    assert reference[8].seam == 0.0 and reference[8].candidate_rewards == []  # no candidates


def test_separate_reward_tokenizer(policy, tokenizer, tiny_plain_model_dir):
    # An RM with another prompt format (plain template, no chat template) gets its own tokenization.
    torch.manual_seed(1)
    rm = load_reward_model(str(tiny_plain_model_dir)).eval()
    rm_tok = load_tokenizer(str(tiny_plain_model_dir))
    examples = EXAMPLES[:2]
    got = score_all(SeamScorer(policy, rm, tokenizer, reward_tokenizer=rm_tok, progress=False), examples)
    assert_results_close(got, {e.id: expected_result(policy, rm, tokenizer, rm_tok, e) for e in examples})


@pytest.mark.parametrize("token_budget, prompts_per_chunk", [(64, 64), (300, 64), (300, 1), (100_000, 1)])
def test_independent_of_batching(reference, policy, reward_model, tokenizer, token_budget, prompts_per_chunk):
    scorer = SeamScorer(policy, reward_model, tokenizer, token_budget=token_budget,
                        prompts_per_chunk=prompts_per_chunk, progress=False)
    assert_results_close(score_all(scorer), reference)


@pytest.mark.parametrize("token_budget", [64, 300, 100_000])
def test_sharing_prompts_equals_full_forwards(reference, policy, reward_model, tokenizer, token_budget):
    full = SeamScorer(policy, reward_model, tokenizer, token_budget=token_budget, share_prompts=False, progress=False)
    assert_results_close(score_all(full), reference, atol=1e-5)


@pytest.mark.parametrize("attn_implementation, during", [("auto", "seam_grouped"), (None, "sdpa"), ("eager", "eager")])
def test_attention_while_scoring(reference, policy, reward_model, tokenizer, attn_implementation, during):
    """On a CPU "auto" scores with seam_grouped; every choice gives the same numbers, and each model's own
    attention is back afterwards."""
    seen = []
    hooks = [model.get_submodule("model.layers.0.self_attn").register_forward_pre_hook(
        lambda module, args: seen.append(module.config._attn_implementation)) for model in (policy, reward_model)]
    try:
        scorer = SeamScorer(policy, reward_model, tokenizer, attn_implementation=attn_implementation, progress=False)
        assert_results_close(score_all(scorer), reference)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and set(seen) == {during}
    assert policy.config._attn_implementation == reward_model.config._attn_implementation == "sdpa"


def test_scoring_under_bf16_autocast_is_fp32_scoring_to_bf16_precision(reference, policy, reward_model, tokenizer):
    """How SeamCallback scores in a bf16-mixed run: left-padded prompts of different lengths (padding rows
    that see no key) stay finite, and every number is the fp32 one to bf16's precision."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = score_all(SeamScorer(policy, reward_model, tokenizer, progress=False))
    for i, want in reference.items():
        assert got[i].golden_reward == pytest.approx(want.golden_reward, abs=0.05)
        assert got[i].candidate_rewards == pytest.approx(want.candidate_rewards, abs=0.05)
        assert got[i].candidate_logprob_sums == pytest.approx(want.candidate_logprob_sums, rel=0.02, abs=0.05)


def test_independent_of_padding_side(reference, policy, reward_model, tiny_model_dir):
    left = load_tokenizer(str(tiny_model_dir))
    left.padding_side = "left"
    assert_results_close(score_all(SeamScorer(policy, reward_model, left, progress=False)), reference)


def test_candidate_order_permutes_lists_only(reference, policy, reward_model, tokenizer):
    permuted = [SeamExample(e.id, e.instruction, e.response, e.candidates[::-1]) for e in EXAMPLES]
    got = score_all(SeamScorer(policy, reward_model, tokenizer, token_budget=300, progress=False), permuted)
    want = {
        i: SeamResult(r.id, r.seam, r.golden_reward, r.candidate_rewards[::-1], r.candidate_logprob_sums[::-1],
                      r.candidate_lengths[::-1])
        for i, r in reference.items()
    }
    assert_results_close(got, want)


@pytest.mark.parametrize("share", [True, False])
def test_pm_and_rm_of_one_base_score_their_shared_block_once(tiny_model_dir, tokenizer, share):
    """LoRA on the top block of one base (different adapters): the bottom block runs once for both models
    (the RM's own copy only in the check's probe); both ways give the plain forwards' numbers."""
    top = LoRASettings(r=4, dropout=0.0, layers=[-1])
    policy = with_live_adapters(load_policy(str(tiny_model_dir), lora=top)).eval()
    torch.manual_seed(0)
    reward_model = with_live_adapters(load_reward_model(str(tiny_model_dir), lora=top), seed=1).eval()
    want = {e.id: expected_result(policy, reward_model, tokenizer, tokenizer, e) for e in EXAMPLES}
    rows = []  # rows × columns through the RM's own bottom block
    handle = first_layer_of(decoder_blocks(reward_model)[0]).register_forward_hook(lambda module, args, output: rows.append(tuple(args[0].shape[:2])))
    try:
        got = score_all(SeamScorer(policy, reward_model, tokenizer, progress=False, share_frozen_blocks=share))
    finally:
        handle.remove()
    assert_results_close(got, want)
    if share:
        assert rows == [(2, 6)]  # shared_frozen_blocks' probe: two rows of six tokens
    else:
        assert sum(r * c for r, c in rows) > 100


def test_streams_lazily(policy, reward_model, tokenizer):
    # An endless generator: results arrive chunk by chunk without reading the whole input.
    endless = (SeamExample(i, e.instruction, e.response, e.candidates) for i, e in enumerate(itertools.cycle(EXAMPLES)))
    scorer = SeamScorer(policy, reward_model, tokenizer, prompts_per_chunk=2, progress=False)
    assert [r.id for r in itertools.islice(scorer.score(endless), 5)] == [0, 1, 2, 3, 4]


def test_lora_models_in_train_mode_are_scored_in_eval_and_restored(reference, tiny_model_dir, tokenizer):
    lora = LoRASettings(r=4, dropout=0.5)
    policy = load_policy(str(tiny_model_dir), lora=lora)
    torch.manual_seed(0)
    reward_model = load_reward_model(str(tiny_model_dir), lora=lora)
    policy.train()
    reward_model.train()
    reward_model.get_base_model().model.layers[0].eval()  # a mixed state must survive as it was
    modes = {m: m.training for model in (policy, reward_model) for m in model.modules()}
    got = score_all(SeamScorer(policy, reward_model, tokenizer, progress=False))
    # LoRA's B starts at zero and dropout is off in eval, so the numbers equal the plain models'.
    assert_results_close(got, reference)
    assert {m: m.training for m in modes} == modes


def test_empty_candidates_score_zero(policy, reward_model, tokenizer):
    only = [SeamExample(1, "Return the sum.", "Return the sum of the values.", [])]
    (result,) = SeamScorer(policy, reward_model, tokenizer, progress=False).score(only)
    assert result.seam == 0.0 and result.candidate_lengths == [] and math.isfinite(result.golden_reward)


def test_non_finite_reward_names_example_and_golden(tiny_model_dir, policy, tokenizer):
    torch.manual_seed(0)
    broken = load_reward_model(str(tiny_model_dir)).eval()
    with torch.no_grad():
        broken.score.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"reward.*example id 3, golden response"):
        list(SeamScorer(policy, broken, tokenizer, progress=False).score(EXAMPLES))


def test_non_finite_logprob_names_example_and_candidate(tiny_model_dir, reward_model, tokenizer):
    broken = load_policy(str(tiny_model_dir)).eval()
    with torch.no_grad():
        broken.get_output_embeddings().weight[:, 0] = float("nan")
    with pytest.raises(ValueError, match=r"log-prob.*example id 3, candidate 0"):
        list(SeamScorer(broken, reward_model, tokenizer, progress=False).score(EXAMPLES))


def test_invalid_settings(policy, reward_model, tokenizer):
    with pytest.raises(ValueError, match="token_budget"):
        SeamScorer(policy, reward_model, tokenizer, token_budget=0)
