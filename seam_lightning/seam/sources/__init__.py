"""Candidate sources: each turns RL examples (I, r) into worse answers r*.

``contrast`` (SEAM_Contrast: rejected responses of similar preference pairs),
``llm`` (SEAM_GPT: a chat model writes them) and ``adversarial`` (SEAM_Adv:
attacks on the reward model) and ``policy_sample`` (the policy's own samples
judged worse than r), all implementing ``base.CandidateSource``.
"""

from seam_lightning.seam.sources.adversarial import AdversarialSource, AttackStats
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats
from seam_lightning.seam.sources.contrast import ContrastSource
from seam_lightning.seam.sources.llm import LLMSource
from seam_lightning.seam.sources.policy_sample import PolicySampleSource, RewardJudge

__all__ = [
    "AdversarialSource",
    "AttackStats",
    "CandidateSource",
    "CandidateStats",
    "ContrastSource",
    "LLMSource",
    "PolicySampleSource",
    "RewardJudge",
]
