"""Candidate sources: each turns RL examples (I, r) into worse answers r*."""

from seam_lightning.seam.attacks import RewardFunctionWrapper, RewardModelWrapper, RewardWrapper, build_attack
from seam_lightning.seam.chat import (
    ChatBackend,
    ChatBackendError,
    ChatRequestRejected,
    Completion,
    OpenAIBackend,
    TransformersBackend,
    Usage,
)
from seam_lightning.seam.completion_cache import CompletionCache
from seam_lightning.seam.sources.adversarial import AdversarialSource, AttackStats
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats
from seam_lightning.seam.sources.contrast import ContrastSource
from seam_lightning.seam.sources.llm import LLMSource

__all__ = [
    "AdversarialSource",
    "AttackStats",
    "CandidateSource",
    "CandidateStats",
    "ChatBackend",
    "ChatBackendError",
    "ChatRequestRejected",
    "Completion",
    "CompletionCache",
    "ContrastSource",
    "LLMSource",
    "OpenAIBackend",
    "RewardFunctionWrapper",
    "RewardModelWrapper",
    "RewardWrapper",
    "TransformersBackend",
    "Usage",
    "build_attack",
]
