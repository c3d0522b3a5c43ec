"""Scoring a whole RL set across ranks: each rank its share, a chunk at a time, saved as it goes, stopping together.

One path for every caller (the callback while training, a scoring job on its own):
each rank takes records rank, rank + world, …, builds candidates for the prompts its
progress file does not already hold, scores them, appends them to the file, and
after every chunk checks with the other ranks whether any of them failed, so an
error on one rank (a NaN, a source's exception, an endpoint that gives up) stops
all of them with its message within a chunk. The shares are then gathered, so
every rank holds every result in record order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lightning.pytorch import Trainer
from tqdm.auto import tqdm

from seam_lightning.data.records import Record
from seam_lightning.seam.distributed import all_gather_objects, raise_together, rounds, shard
from seam_lightning.seam.progress import ScoringProgress, prompt_key
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer
from seam_lightning.seam.sources.base import CandidateSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringCounts:
    """This rank's share of one scoring: prompts whose saved score was reused / newly scored."""

    reused: int
    scored: int


def score_records(
    trainer: Trainer,
    records: list[Record],
    source: CandidateSource,
    scorer: SeamScorer,
    num_candidates: int,
    prompts_per_chunk: int,
    progress: ScoringProgress | None = None,
    show_progress: bool = True,
) -> tuple[list[SeamResult], ScoringCounts]:
    """SEAM of every record, on every rank, in record order; and this rank's counts.

    Every rank must call it with the same ``records`` (it is collective).
    """
    mine = shard(records, trainer)
    saved = progress.load() if progress is not None else {}
    trainer.strategy.barrier()  # every rank has read the files before any rank appends
    own: list[SeamResult] = []
    reused = 0
    bar = tqdm(total=len(mine), desc="SEAM", unit="prompt", disable=not (show_progress and trainer.is_global_zero))
    try:
        # Every rank runs the same number of rounds (the last ones may be empty), so the
        # check after each round always meets all ranks.
        for round_index in range(rounds(len(records), trainer, prompts_per_chunk)):
            part = mine[round_index * prompts_per_chunk:(round_index + 1) * prompts_per_chunk]
            error = None
            try:
                results, n_reused = _score_part(part, source, scorer, num_candidates, saved, progress)
                own.extend(results)
                reused += n_reused
            except Exception as e:  # shared with the other ranks, then raised on every one
                error = e
            raise_together(trainer, error)
            bar.update(len(part))
    finally:
        bar.close()
    counts = ScoringCounts(reused=reused, scored=len(own) - reused)
    if reused:
        log.info("SEAM: rank %d reused %d saved scores, scored %d", trainer.global_rank, counts.reused, counts.scored)
    everyone = [r for part in all_gather_objects(trainer, own) for r in part]
    order = {r.id: i for i, r in enumerate(records)}
    results = sorted(everyone, key=lambda r: order[r.id])
    if [r.id for r in results] != [r.id for r in records]:
        raise RuntimeError("SEAM: the gathered scores do not cover the RL set exactly once")
    return results, counts


def _score_part(part: list[Record], source: CandidateSource, scorer: SeamScorer, num_candidates: int,
                saved: dict[tuple[int, str], SeamResult], progress: ScoringProgress | None
                ) -> tuple[list[SeamResult], int]:
    """Results of one chunk of this rank's share, in its order, and how many came from saved progress."""
    keys = [prompt_key(r.text["instruction"], r.text["response"]) for r in part]
    todo = [(record, key) for record, key in zip(part, keys) if (record.id, key) not in saved]
    new: dict[int, SeamResult] = {}
    if todo:
        instructions = [record.text["instruction"] for record, _ in todo]
        responses = [record.text["response"] for record, _ in todo]
        candidates = source.candidates(instructions, responses, num_candidates)
        examples = [SeamExample(record.id, i, r, list(c))
                    for (record, _), i, r, c in zip(todo, instructions, responses, candidates)]
        scored = list(scorer.score(examples))
        if progress is not None:
            progress.save([(key, result) for (_, key), result in zip(todo, scored)])
        new = {result.id: result for result in scored}
    results = [saved[(record.id, key)] if (record.id, key) in saved else new[record.id]
               for record, key in zip(part, keys)]
    return results, len(part) - len(todo)
