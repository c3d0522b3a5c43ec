"""A candidate source for tests: fixed answers per instruction (a test double with real behaviour)."""

from __future__ import annotations

from seam_lightning.seam.sources.base import CandidateSource, CandidateStats


class ListSource(CandidateSource):
    """Candidates from a fixed table: instruction -> answers."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table
        self.calls = 0

    def candidates(self, instructions, responses, num_candidates):
        self.calls += 1
        out = [self.table.get(i, [])[:num_candidates] for i in instructions]
        self.last_stats = CandidateStats.of(out, num_candidates)
        return out
