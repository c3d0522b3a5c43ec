"""SEAM_Adv as the paper sets it up: seeds from SEAM_Contrast (§7.1), Table 1's recipes, already-misjudged seeds.

Reward functions here have preferences the tests control, so every outcome
(attacked, already misjudged, perturbation kept or not) is known in advance.
"""

import ast
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from doubles import ListSource
from seam_lightning.data.records import DataSource
from seam_lightning.seam.sources.adversarial.attacks import ATTACKS, build_attack
from seam_lightning.seam.sources.adversarial.stopwords import TEXTFOOLER_STOPWORDS, stopwords
from seam_lightning.seam.sources.adversarial.victim import RewardFunctionWrapper
from seam_lightning.seam.sources.adversarial.source import AdversarialSource
from seam_lightning.seam.sources.contrast import ContrastSource

ROOT = Path(__file__).resolve().parents[4]
HAS_WORDNET = Path("/usr/share/wordnet/data.noun").is_file()
GOLDEN = "the result is four"
LIKED = "a longer answer than the golden reply"  # longer than GOLDEN: a length-loving RM prefers it already
SEED = "the result is wrong and four is wrong too"


def prefers_longer(instruction, responses):
    """An RM that only likes length (characters): any seed longer than r is misjudged; inserting a character helps."""
    return [float(len(r)) for r in responses]


def likes_only(text):
    """An RM that prefers exactly ``text`` (reward 1) and nothing else (reward 0), perturbations included."""
    return lambda instruction, responses: [float(r == text) for r in responses]


def everything_beats(golden):
    """An RM that prefers every response to ``golden``: each seed is returned unattacked, in seed order."""
    return lambda instruction, responses: [0.0 if r == golden else 1.0 for r in responses]


def hackable_reward(instruction, responses):
    """−2 per "wrong", +0.1 per word (as in test_adversarial.py): hiding "wrong" beats GOLDEN."""
    return [-2.0 * r.lower().split().count("wrong") + 0.1 * len(r.split()) for r in responses]


def preferences(tmp_path, rows):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"instruction": i, "chosen": GOLDEN, "rejected": r}) + "\n" for i, r in rows))
    return DataSource(str(path))


# -- 1. seeds from SEAM_Contrast first (§7.1) --------------------------------------------------------


def test_seed_source_comes_first_by_default(tmp_path):
    """§7.1: SEAM_Adv attacks SEAM_Contrast's candidates; rejected responses only fill prompts short of seeds."""
    seeds = ListSource({"q": ["contrast one", "contrast two"], "p": []})
    rejected = preferences(tmp_path, [("q", "rejected one"), ("q", "rejected two"), ("p", "rejected p")])
    src = AdversarialSource(seeds=seeds, rejected=rejected, progress=False).bind_function(everything_beats(GOLDEN))
    assert src.seed_order == "seeds_first"
    assert src.candidates(["q", "p"], [GOLDEN, GOLDEN], 3) == [
        ["contrast one", "contrast two", "rejected one"], ["rejected p"]]
    assert seeds.calls == 1
    assert src.candidates(["q"], [GOLDEN], 2) == [["contrast one", "contrast two"]]
    s = src.last_attack_stats
    assert (s.seeds, s.already_misjudged, s.attacked) == (2, 2, 0)


def test_rejected_first_keeps_the_former_order(tmp_path):
    seeds = ListSource({"q": ["contrast one", "contrast two"]})
    rejected = preferences(tmp_path, [("q", "rejected one")])
    src = AdversarialSource(seeds=seeds, rejected=rejected, seed_order="rejected_first",
                            progress=False).bind_function(everything_beats(GOLDEN))
    assert src.candidates(["q"], [GOLDEN], 2) == [["rejected one", "contrast one"]]
    assert src.candidates(["q"], [GOLDEN], 1) == [["rejected one"]]
    assert seeds.calls == 1  # the rejected response was enough the second time


def test_seed_order_is_checked():
    with pytest.raises(ValueError, match="seed_order must be one of seeds_first, rejected_first"):
        AdversarialSource(seeds=ListSource({}), seed_order="contrast")


def test_contrast_source_seeds(tmp_path):
    """A real ContrastSource as the seed source: its candidates are the seeds, in its order, rejected after."""
    corpus = [("How do I sort a list in Python?", "Use sorted()."),
              ("How do I reverse a list in Python?", "Use reversed()."),
              ("How do I sort a dictionary by value in Python?", "Sort its items by value."),
              ("How do I bake bread?", "Knead, proof and bake."),
              ("What is the capital of France?", "Paris.")]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"instruction": i, "response": r}) + "\n" for i, r in corpus))
    contrast = ContrastSource(corpus=DataSource(str(path)), band=(0.3, 0.99), cache_dir=str(tmp_path / "cache"))
    query, golden = "How can I sort a Python list?", "Call list.sort()."
    expected = contrast.candidates([query], [golden], 4)[0]
    assert len(expected) >= 2  # the list questions are in band
    rejected = preferences(tmp_path, [(query, "I do not know.")])
    src = AdversarialSource(seeds=contrast, rejected=rejected, progress=False).bind_function(everything_beats(golden))
    assert src.candidates([query], [golden], len(expected) + 1) == [[*expected, "I do not know."]]


def test_callback_config_is_the_papers_setting():
    config = yaml.safe_load((ROOT / "callbacks" / "seam_prune_adversarial.yaml").read_text())
    [callback] = config["trainer"]["callbacks+"]
    args = callback["init_args"]
    source = args["source"]["init_args"]
    assert args["num_candidates"] == 30  # §7.1: 30 adversarial responses per instruction
    assert source["seeds"]["class_path"] == "seam_lightning.ContrastSource"
    assert source["seeds"]["init_args"]["band"] == [0.8, 0.9]
    assert "rejected" not in source and source.get("seed_order", "seeds_first") == "seeds_first"
    assert source["attack"] == "pwws"  # §5.2 cites Ren et al. 2019


# -- 2. the recipes of Table 1 / App. D.2 -----------------------------------------------------------


def test_katg_is_not_available():
    seeds = ListSource({})
    for name in ("katg", "KATG"):
        with pytest.raises(ValueError, match="KATG.*no public implementation; not available"):
            AdversarialSource(attack=name, seeds=seeds)
    with pytest.raises(ValueError, match="KATG.*no public implementation"):
        build_attack("katg", RewardFunctionWrapper(hackable_reward))
    with pytest.raises(ValueError, match="unknown attack 'hotflip'; choose one of .*iga.*KATG"):
        AdversarialSource(attack="hotflip", seeds=seeds)
    assert "katg" not in ATTACKS


def textattack_recipe_source(name):
    return Path(importlib.util.find_spec("textattack").submodule_search_locations[0], "attack_recipes", name)


def test_textfooler_stopwords_are_the_recipes():
    tree = ast.parse(textattack_recipe_source("textfooler_jin_2019.py").read_text())
    [words] = [[e.value for e in node.args[0].elts] for node in ast.walk(tree)
               if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "set"
               and node.args and isinstance(node.args[0], ast.List)]
    assert TEXTFOOLER_STOPWORDS == set(words)


@pytest.fixture
def embedding(tmp_path):
    """Unrelated unit vectors, but "incorrect" ~ "wrong" (the only swap within cosine 0.5)."""
    words = ["wrong", "incorrect", "result", "four", "the", "is", "and", "too", "cat", "dog"]
    vectors = np.eye(len(words))
    vectors[1] = vectors[0] + 0.1 * vectors[1]
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(f'{x:.5f}' for x in v)}\n" for w, v in zip(words, vectors)))
    return str(path)


@pytest.fixture
def masked_lm(tmp_path):
    """A tiny BertForMaskedLM built from a config (no package ships a trained MLM head)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "result", "is", "wrong", "and", "four", "too",
             "right", "fine", "good", "answer"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "mlm")
    return str(tmp_path / "mlm")


def components(attack):
    """(transformation class, search class, {constraint class: constraint}) of a textattack Attack."""
    constraints = {type(c).__name__: c for c in [*attack.pre_transformation_constraints, *attack.constraints]}
    return type(attack.transformation).__name__, type(attack.search_method).__name__, constraints


def test_embedding_recipes_follow_textattacks(embedding):
    wrapper = RewardFunctionWrapper(hackable_reward)
    # GeneticAlgorithmAlzantot2018, less its Google 1B-words LM.
    attack = build_attack("ga", wrapper, embedding=embedding)
    transformation, search, cons = components(attack)
    assert (transformation, search) == ("WordSwapEmbedding", "AlzantotGeneticAlgorithm")
    assert attack.transformation.max_candidates == 8
    assert (attack.search_method.pop_size, attack.search_method.max_iters) == (60, 20)
    assert set(cons) == {"RepeatModification", "StopwordModification", "MaxWordsPerturbed", "WordEmbeddingDistance"}
    assert cons["MaxWordsPerturbed"].max_percent == 0.2 and cons["WordEmbeddingDistance"].max_mse_dist == 0.5
    # IGAWang2019 (the paper's "GA", Wang et al. 2019): no repeat constraint, <= 5 replacements per word.
    attack = build_attack("iga", wrapper, embedding=embedding)
    transformation, search, cons = components(attack)
    assert (transformation, search) == ("WordSwapEmbedding", "ImprovedGeneticAlgorithm")
    assert attack.transformation.max_candidates == 50 and attack.search_method.max_replace_times_per_index == 5
    assert (attack.search_method.pop_size, attack.search_method.max_iters) == (60, 20)
    assert set(cons) == {"StopwordModification", "MaxWordsPerturbed", "WordEmbeddingDistance"}
    assert cons["StopwordModification"].stopwords == set(stopwords())  # the shipped stand-in for NLTK's English
    # TextFoolerJin2019, less its part-of-speech and Universal Sentence Encoder constraints.
    attack = build_attack("textfooler", wrapper, embedding=embedding)
    transformation, search, cons = components(attack)
    assert (transformation, search) == ("WordSwapEmbedding", "GreedyWordSwapWIR")
    assert attack.transformation.max_candidates == 50 and attack.search_method.wir_method == "delete"
    assert set(cons) == {"RepeatModification", "StopwordModification", "WordEmbeddingDistance"}
    assert cons["StopwordModification"].stopwords == TEXTFOOLER_STOPWORDS
    assert cons["WordEmbeddingDistance"].min_cos_sim == 0.5


def test_bert_attack_follows_textattacks(masked_lm):
    """BERTAttackLi2020, less its Universal Sentence Encoder constraint; the masked LM is the local one."""
    attack = build_attack("bert-attack", RewardFunctionWrapper(hackable_reward), masked_lm=masked_lm)
    transformation, search, cons = components(attack)
    assert (transformation, search) == ("WordSwapMaskedLM", "GreedyWordSwapWIR")
    assert attack.transformation.method == "bert-attack" and attack.transformation.max_candidates == 8
    assert attack.transformation.max_length == 64  # the tiny model's positions, not 512
    assert attack.search_method.wir_method == "unk"
    assert set(cons) == {"RepeatModification", "StopwordModification", "MaxWordsPerturbed"}
    assert cons["MaxWordsPerturbed"].max_percent == 0.4


def test_masked_lm_without_a_trained_head_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    from seam_lightning.seam.sources.adversarial.offline import OfflineResourceError

    config = BertConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path / "encoder-only")
    with pytest.raises(OfflineResourceError, match="no trained masked-LM head"):
        build_attack("bert-attack", RewardFunctionWrapper(hackable_reward), masked_lm=str(tmp_path / "encoder-only"))


def test_masked_lm_without_a_tokenizer_is_refused(masked_lm, tmp_path):
    from transformers import BertForMaskedLM

    from seam_lightning.seam.sources.adversarial.offline import OfflineResourceError

    BertForMaskedLM.from_pretrained(masked_lm).save_pretrained(tmp_path / "no-tokenizer")
    with pytest.raises(OfflineResourceError, match="cannot load the tokenizer"):
        build_attack("bert-attack", RewardFunctionWrapper(hackable_reward), masked_lm=str(tmp_path / "no-tokenizer"))


@pytest.mark.skipif(not HAS_WORDNET, reason="WordNet 3.0 not installed")
def test_pwws_follows_textattacks():
    attack = build_attack("pwws", RewardFunctionWrapper(hackable_reward))
    transformation, search, cons = components(attack)
    assert (transformation, search) == ("WordSwapWordNet", "GreedyWordSwapWIR")
    assert attack.search_method.wir_method == "weighted-saliency"
    assert set(cons) == {"RepeatModification", "StopwordModification"}
    assert cons["StopwordModification"].stopwords == set(stopwords())


def test_iga_hacks_the_reward_with_a_local_embedding(embedding):
    # <= 20% of 6 words: the one "wrong" is swapped.
    seed = "the result is wrong and four"
    src = AdversarialSource(attack="iga", seeds=ListSource({"q": [seed]}), embedding=embedding, progress=False)
    [[adv]] = src.bind_function(hackable_reward).candidates(["q"], [GOLDEN], 1)
    assert "wrong" not in adv.split() and len(adv.split()) == 6
    assert hackable_reward("q", [adv])[0] > hackable_reward("q", [GOLDEN])[0]


# -- 3. seeds the RM already misjudges ---------------------------------------------------------------


def misjudged_source(fn, table=None, **kwargs):
    seeds = ListSource(table or {"q": [LIKED]})
    return AdversarialSource(attack="deepwordbug", seeds=seeds, progress=False, **kwargs).bind_function(fn)


def test_misjudged_seeds_are_returned_unattacked_by_default(caplog):
    src = misjudged_source(prefers_longer)
    with caplog.at_level(logging.INFO, logger="seam_lightning.seam.sources.adversarial.source"):
        out = src.candidates(["q"], [GOLDEN], 1)
    assert out == [[LIKED]]
    s = src.last_attack_stats
    assert (s.already_misjudged, s.misjudged_attacked, s.misjudged_perturbed, s.attacked, s.queries) == (1, 0, 0, 0, 1)
    assert "1 seeds already misjudged (kept as they are, not attacked)" in caplog.text


def test_misjudged_seeds_are_perturbed_with_attack_misjudged(caplog):
    """attack_misjudged=True: attacked although the RM prefers them; the perturbation still beats r."""
    src = misjudged_source(prefers_longer, attack_misjudged=True)
    with caplog.at_level(logging.INFO, logger="seam_lightning.seam.sources.adversarial.source"):
        [[adv]] = src.candidates(["q"], [GOLDEN], 1)
    assert adv != LIKED and len(adv.split()) == len(LIKED.split())  # a character edit
    assert prefers_longer("q", [adv])[0] > prefers_longer("q", [GOLDEN])[0]
    s = src.last_attack_stats
    assert (s.already_misjudged, s.misjudged_attacked, s.misjudged_perturbed) == (1, 1, 1)
    assert (s.attacked, s.succeeded, s.failed) == (0, 0, 0) and s.queries > 1
    assert src.last_stats.candidates == s.succeeded + s.already_misjudged - s.duplicates
    assert "1 seeds already misjudged (attacked all the same: 1 kept perturbed" in caplog.text


def test_misjudged_seed_kept_as_is_when_no_perturbation_keeps_the_goal():
    """An RM that prefers the seed but no perturbation of it: the seed comes back as it is."""
    src = misjudged_source(likes_only(LIKED), attack_misjudged=True)
    assert src.candidates(["q"], [GOLDEN], 1) == [[LIKED]]
    s = src.last_attack_stats
    assert (s.already_misjudged, s.misjudged_attacked, s.misjudged_perturbed, s.failed) == (1, 1, 0, 0)
    assert s.queries > 1  # it was attacked


@pytest.mark.parametrize("attack_misjudged", [False, True])
def test_attack_misjudged_leaves_other_seeds_alone(attack_misjudged):
    """Seeds the RM does not prefer yet are attacked the same way with or without the option."""
    src = misjudged_source(hackable_reward, {"q": [SEED]}, attack_misjudged=attack_misjudged)
    baseline = misjudged_source(hackable_reward, {"q": [SEED]})
    assert src.candidates(["q"], [GOLDEN], 1) == baseline.candidates(["q"], [GOLDEN], 1)
    s = src.last_attack_stats
    assert (s.attacked, s.succeeded, s.already_misjudged, s.misjudged_attacked) == (1, 1, 0, 0)


def test_goal_requires_a_perturbation_when_asked():
    from textattack.goal_function_results import GoalFunctionResultStatus
    from textattack.shared import AttackedText

    from seam_lightning.seam.sources.adversarial import victim

    wrapper = RewardFunctionWrapper(prefers_longer)
    plain = victim.RewardHackingGoal(wrapper)
    result, _ = plain.init_attack_example(AttackedText(LIKED), GOLDEN)
    assert result.goal_status == GoalFunctionResultStatus.SKIPPED  # already misjudged: no attack
    goal = victim.RewardHackingGoal(wrapper, require_perturbation=True)
    result, _ = goal.init_attack_example(AttackedText(LIKED), GOLDEN)
    assert result.goal_status == GoalFunctionResultStatus.SEARCHING and result.score > 0
    [perturbed], _ = goal.get_results([AttackedText(LIKED + "s")])
    assert perturbed.goal_status == GoalFunctionResultStatus.SUCCEEDED
