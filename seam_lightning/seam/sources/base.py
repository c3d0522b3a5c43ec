"""The interface every SEAM candidate source implements, and the stats it reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class CandidateStats:
    """What one `CandidateSource.candidates` call produced.

    prompts: examples asked for; candidates: candidates returned in total;
    short: prompts that got fewer than num_candidates; empty: prompts that got none
    (their SEAM is 0 by construction, which says nothing about the RM).
    """

    prompts: int
    candidates: int
    short: int
    empty: int = 0

    @classmethod
    def of(cls, lists: list[list[str]], num_candidates: int) -> "CandidateStats":
        """Count the result of one call."""
        return cls(
            prompts=len(lists),
            candidates=sum(len(c) for c in lists),
            short=sum(len(c) < num_candidates for c in lists),
            empty=sum(not c for c in lists),
        )


class CandidateSource(ABC):
    """Builds the 'hacking' candidates r* for RL examples (I, r): one job, one method."""

    # Stats of the latest `candidates` call; None before the first one.
    last_stats: CandidateStats | None = None

    def prepare(self) -> None:
        """Optional one-time setup (load a corpus, build an index); `candidates` must work without it.

        Idempotent. A caller under DDP may run it on rank 0 first, then on the other
        ranks after a barrier, so that an expensive cache is built only once.
        """

    def use_reward_model(self, model, tokenizer) -> None:
        """Offered the reward model a SEAM run scores with; sources that attack the RM may keep it.

        Called by :class:`~seam_lightning.seam.SeamCallback` before each scoring, so a source
        need not load a second copy of the model. The default ignores it.
        """

    @abstractmethod
    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        """Up to num_candidates worse responses per example, same order as the inputs."""


def normalise_whitespace(text: str) -> str:
    """Collapse whitespace, so 'same text, other spacing' counts as the same text."""
    return " ".join(text.split())


def check_request(instructions: list[str], responses: list[str], num_candidates: int) -> None:
    """Validate the arguments of `CandidateSource.candidates` (shared by all sources)."""
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
    if len(instructions) != len(responses):
        raise ValueError(
            f"instructions and responses differ in length: {len(instructions)} != {len(responses)}"
        )
