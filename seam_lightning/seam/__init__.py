"""SEAM: how badly the reward model misjudges answers the policy is likely to write.

``seam_score`` is the metric (paper §5, Eq. 2–3), ``SeamScorer`` computes it for
RL prompts with a policy and a reward model, the sources build the candidate
answers, and ``SeamCallback`` prunes the RL prompts with the largest values.
"""

from seam_lightning.seam.callback import SeamCallback
from seam_lightning.seam.score import misjudged, seam_score
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer
from seam_lightning.seam.selection import largest_seam
from seam_lightning.seam.sources.adversarial import AdversarialSource
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats
from seam_lightning.seam.sources.contrast import ContrastSource
from seam_lightning.seam.chat import OpenAIBackend, TransformersBackend
from seam_lightning.seam.sources.llm import LLMSource

__all__ = [
    "AdversarialSource",
    "CandidateSource",
    "CandidateStats",
    "ContrastSource",
    "LLMSource",
    "OpenAIBackend",
    "SeamCallback",
    "SeamExample",
    "SeamResult",
    "SeamScorer",
    "TransformersBackend",
    "largest_seam",
    "misjudged",
    "seam_score",
]
