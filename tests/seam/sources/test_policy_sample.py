"""PolicySampleSource: the policy's own samples, kept as candidates when a judge rates them below the golden response.

Everything runs on the tiny test model with the package's real sampling
(`sample_responses` → `generate`); only the judges are simple rule-based stand-ins
where a test needs to know which samples are "worse", plus a real `RewardJudge` and a
real `LLMJudge` over a scripted chat back end.
"""

import json

import pytest

from seam_lightning.eval.judge import LLMJudge
from seam_lightning.llm.chat import ChatBackend, Completion
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer
from seam_lightning.rl.generation import SamplingSettings
from seam_lightning.seam.scorer import SeamExample, SeamScorer
from seam_lightning.seam.sources import CandidateSource, PolicySampleSource, RewardJudge

QUESTIONS = ["What does `json.dumps` do?", "Explain what `os.path.join` is for."]
GOLDEN = ["Serialize obj to a JSON formatted str.", "Join two or more pathname components."]


class RuleJudge:
    """Rates the golden responses 5 and every other answer by ``rating(answer)``."""

    def __init__(self, rating):
        self.rating, self.calls = rating, 0

    def rate(self, questions, answers):
        self.calls += 1
        return [5.0 if a in GOLDEN else self.rating(a) for a in answers]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_policy(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))


def source(tiny, judge, **kwargs):
    policy, tokenizer = tiny
    kwargs.setdefault("sampling", SamplingSettings(max_new_tokens=6))
    return PolicySampleSource(policy, tokenizer, judge, **kwargs)


def test_is_a_candidate_source_and_keeps_samples_judged_worse(tiny):
    src = source(tiny, RuleJudge(lambda a: 1.0), samples_per_prompt=4)
    assert isinstance(src, CandidateSource)
    out = src.candidates(QUESTIONS, GOLDEN, num_candidates=10)
    assert len(out) == 2 and len(src.last_samples) == 2
    for kept, record, golden in zip(out, src.last_samples, GOLDEN):
        assert len(record.samples) == 4 and record.golden_rating == 5.0
        unique = list(dict.fromkeys(" ".join(s.split()) for s in record.samples if s.strip()))
        assert [" ".join(k.split()) for k in kept] == unique  # all worse: every distinct non-empty sample
    assert src.last_stats.prompts == 2 and src.last_stats.candidates == sum(map(len, out))


def test_drops_ties_better_and_unrated_samples(tiny):
    ratings = iter([5.0, 9.0, None, 1.0] * 2)  # per sample, in order: tie, better, no rating, worse
    src = source(tiny, RuleJudge(lambda a: next(ratings)), samples_per_prompt=4)
    out = src.candidates(QUESTIONS, GOLDEN, num_candidates=10)
    for kept, record in zip(out, src.last_samples):
        assert kept == ([record.samples[3]] if record.samples[3].strip() else [])


def test_num_candidates_caps_the_kept_samples(tiny):
    src = source(tiny, RuleJudge(lambda a: 0.0), samples_per_prompt=6)
    assert all(len(c) <= 2 for c in src.candidates(QUESTIONS, GOLDEN, num_candidates=2))
    with pytest.raises(ValueError):
        src.candidates(QUESTIONS, GOLDEN, num_candidates=0)


def test_samples_are_real_seeded_and_independent_of_the_batch(tiny):
    a = source(tiny, RuleJudge(lambda a: 0.0), samples_per_prompt=3, batch_size=2)
    b = source(tiny, RuleJudge(lambda a: 0.0), samples_per_prompt=3, batch_size=5)
    both = a.sample(QUESTIONS)
    assert both == b.sample(QUESTIONS)  # another batch size, same streams
    assert b.sample(QUESTIONS[1:]) == both[1:]  # alone or with others: same samples
    assert both == a.sample(QUESTIONS)  # rerun: same samples
    other = source(tiny, RuleJudge(lambda a: 0.0), samples_per_prompt=3, seed=1).sample(QUESTIONS)
    assert other != both
    assert any(s for row in both for s in row)  # the random tiny model writes something


def test_reward_judge_is_the_reference_rm_and_is_labelled_oracle(tiny, tiny_model_dir):
    rm, tok = load_reward_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    judge = RewardJudge(rm, tok, oracle=True, name="gold")
    src = source(tiny, judge, samples_per_prompt=4)
    assert src.oracle and src.config()["oracle"] is True
    out = src.candidates(QUESTIONS, GOLDEN, num_candidates=4)
    for kept, record in zip(out, src.last_samples):
        for text, rating in zip(record.samples, record.ratings):
            if " ".join(text.split()) in {" ".join(k.split()) for k in kept}:
                assert rating < record.golden_rating
        assert all(r is not None for r in record.ratings)
    json.dumps(src.config())  # plain data: SEAM progress is keyed by it
    assert not source(tiny, RuleJudge(lambda a: 0.0)).oracle


class ScriptedChat(ChatBackend):
    """Replies like a judge: [[8]] for a golden answer, [[2]] for anything else."""

    name = "scripted-judge"

    def complete(self, prompt, *, temperature, max_tokens, seed=None, system=None):
        return Completion("Fine. Rating: [[8]]" if any(g in prompt for g in GOLDEN) else "Weak. Rating: [[2]]")


def test_llm_judge_with_prompt_1(tiny, tmp_path):
    judge = LLMJudge(ScriptedChat(), cache_path=str(tmp_path / "judge.jsonl"), progress=False)
    src = source(tiny, judge, samples_per_prompt=3)
    out = src.candidates(QUESTIONS, GOLDEN, num_candidates=3)
    assert [r.golden_rating for r in src.last_samples] == [8.0, 8.0]
    assert all(r == 2.0 for rec in src.last_samples for r in rec.ratings)
    assert not src.oracle
    assert sum(map(len, out)) > 0


def test_candidates_score_with_seam(tiny, tiny_model_dir):
    policy, tokenizer = tiny
    rm = load_reward_model(str(tiny_model_dir)).eval()
    src = source(tiny, RuleJudge(lambda a: 0.0), samples_per_prompt=3)
    cands = src.candidates(QUESTIONS, GOLDEN, num_candidates=3)
    scorer = SeamScorer(policy, rm, tokenizer, progress=False)
    results = list(scorer.score([SeamExample(i, q, r, c) for i, (q, r, c) in enumerate(zip(QUESTIONS, GOLDEN, cands))]))
    assert [len(r.candidate_lengths) for r in results] == [len(c) for c in cands]
    assert all(r.seam >= 0 for r in results)
