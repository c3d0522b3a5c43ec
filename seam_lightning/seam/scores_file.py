"""The scores file: one row per RL prompt with its SEAM and every candidate's terms."""

from __future__ import annotations

from pathlib import Path

from seam_lightning.data.records import Record
from seam_lightning.files import atomic_path
from seam_lightning.jsonl import write_jsonl_atomic
from seam_lightning.seam.scorer import SeamResult


def write_scores(path: str | Path, results: list[SeamResult], records: list[Record], selected: set[int]) -> Path:
    """Write one row per RL prompt (id, instruction, SEAM, selected, per-candidate texts and terms), atomically.

    ``.parquet`` gives a Parquet file, anything else JSON lines.
    """
    path = Path(path)
    instruction = {r.id: r.text["instruction"] for r in records}
    rows = [{
        "id": r.id, "instruction": instruction[r.id], "seam": r.seam, "selected": r.id in selected,
        "golden_reward": r.golden_reward, "candidate_rewards": r.candidate_rewards,
        "candidate_logprob_sums": r.candidate_logprob_sums, "candidate_lengths": r.candidate_lengths,
        "candidates": r.candidates,
    } for r in results]
    if path.suffix != ".parquet":
        return write_jsonl_atomic(path, rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path
