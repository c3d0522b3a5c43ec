"""The interface every SEAM candidate source implements, and the stats it reports."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any


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

    def config(self) -> dict[str, Any]:
        """The settings that decide this source's candidates, as plain data (see :func:`describe`).

        Saved SEAM progress is keyed by it, so a rerun reuses a prompt's score without
        building its candidates again only when the source is configured the same. The
        default describes the public attributes; override it when candidates depend on
        something they do not show (the contents of a file, a remote model's version).
        """
        return describe(self)


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


def describe(value: Any, depth: int = 3) -> Any:
    """``value`` as JSON-able plain data that is the same in every run for the same settings.

    Plain values, paths, lists, dicts and dataclasses are kept; candidate sources (yours
    too) and objects of this package (chat back ends) are described by their class and
    public attributes, down to ``depth`` levels; anything else (models, tokenizers,
    clients) by its class name only, never by ``repr``, which may hold a memory address.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [describe(v, depth) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v, depth) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"class": type(value).__qualname__,
                **{f.name: describe(getattr(value, f.name), depth) for f in dataclasses.fields(value)}}
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    ours = isinstance(value, CandidateSource) or type(value).__module__.startswith("seam_lightning.")
    if depth > 0 and ours and hasattr(value, "__dict__"):
        # `last_*` attributes report the latest call (last_stats, last_matches): not settings.
        public = {k: v for k, v in vars(value).items() if not k.startswith(("_", "last_"))}
        return {"class": name, **{k: describe(v, depth - 1) for k, v in sorted(public.items())}}
    return {"class": name}
