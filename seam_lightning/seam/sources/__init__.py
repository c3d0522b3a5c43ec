"""Candidate sources: each turns RL examples (I, r) into worse answers r*."""

from seam_lightning.seam.sources.base import CandidateSource, CandidateStats
from seam_lightning.seam.sources.contrast import ContrastSource

__all__ = ["CandidateSource", "CandidateStats", "ContrastSource"]
