"""SEAM: how badly the reward model misjudges answers the policy is likely to write.

``score.seam_score`` is the metric (paper §5, Eq. 2–3), ``scorer.SeamScorer``
computes it for RL prompts with a policy and a reward model, ``sources`` build
the candidate answers, ``selection`` picks the prompts to drop, ``augment`` the
pairs to add, and ``callback.SeamCallback`` does it while a Trainer runs, reading the
RL prompts through ``rl_data`` (any DataModule with two methods, or a ``PromptFilter``);
``report`` writes what a scoring found for people.
"""

from seam_lightning.seam.callback import SeamCallback
from seam_lightning.seam.rl_data import PromptFilter, SeamRLData
from seam_lightning.seam.score import seam_score
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer
from seam_lightning.seam.selection import largest_seam
from seam_lightning.seam.sources import AdversarialSource, CandidateSource, CandidateStats, ContrastSource, LLMSource

__all__ = [
    "AdversarialSource",
    "CandidateSource",
    "CandidateStats",
    "ContrastSource",
    "LLMSource",
    "PromptFilter",
    "SeamCallback",
    "SeamExample",
    "SeamResult",
    "SeamRLData",
    "SeamScorer",
    "largest_seam",
    "seam_score",
]
