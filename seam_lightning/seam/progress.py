"""Scoring progress on disk, so a run killed while scoring D_rl does not score anything twice.

Each rank appends every SEAM result to ``<dir>/<fingerprint>/rank<r>.jsonl`` the
moment its chunk is scored. The fingerprint covers what decides a score besides the
example — the two models' weights, the scorer's settings and the candidate source's
configuration — and each line carries a key of the example's instruction and golden
response. A rerun (a resumed run, or a fresh one with the same models) reads every
rank's file and scores, and builds candidates for, only what is missing; a stale file
can never answer for changed models, source or data, since its key no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from seam_lightning.jsonl import append_jsonl, read_jsonl
from seam_lightning.seam.scorer import SeamResult

log = logging.getLogger(__name__)


def prompt_key(instruction: str, response: str) -> str:
    """What a score depends on in the RL example itself: its instruction and golden response.

    Candidates are not part of the key: they follow from the example and the source's
    configuration (in the run fingerprint), so a resumed run finds a prompt's saved score
    before building its candidates again (an LLM call or an attack saved).
    """
    parts = [instruction, response]
    return hashlib.blake2b(json.dumps(parts, ensure_ascii=False).encode("utf-8"), digest_size=16).hexdigest()


def run_fingerprint(*parts: object) -> str:
    """A short digest of the scoring set-up (model fingerprints, settings)."""
    return hashlib.blake2b(json.dumps([str(p) for p in parts]).encode("utf-8"), digest_size=12).hexdigest()


class ScoringProgress:
    """The SEAM results of one scoring set-up saved so far, shared by all ranks (append-only)."""

    def __init__(self, directory: str | Path, fingerprint: str, rank: int):
        self.directory = Path(directory) / fingerprint
        self.path = self.directory / f"rank{rank}.jsonl"
        self._open_line = False
        self._writable = True

    def load(self) -> dict[tuple[int, str], SeamResult]:
        """Every rank's saved results by (example id, prompt key); corrupt lines are skipped with a warning."""
        done: dict[tuple[int, str], SeamResult] = {}
        for path in sorted(self.directory.glob("rank*.jsonl")):
            entries, open_line = read_jsonl(path, _parse, what="SEAM progress")
            if path == self.path:
                self._open_line = open_line
            for key, result in entries:
                done.setdefault(key, result)
        return done

    def save(self, pairs: Iterable[tuple[str, SeamResult]]) -> None:
        """Append (prompt key, result) pairs durably; a refusing disk costs the progress file, never the run."""
        lines = [{"key": key, **_fields(result)} for key, result in pairs]
        if not self._writable or not lines:
            return
        try:
            append_jsonl(self.path, lines, self._open_line)
            self._open_line = False
        except OSError as e:
            self._writable = False
            log.warning("cannot write SEAM progress to %s (%s); continuing without it", self.path, e)


def _fields(result: SeamResult) -> dict:
    return {"id": result.id, "seam": result.seam, "golden_reward": result.golden_reward,
            "candidate_rewards": result.candidate_rewards, "candidate_logprob_sums": result.candidate_logprob_sums,
            "candidate_lengths": result.candidate_lengths, "candidates": result.candidates}


def _parse(entry: dict) -> tuple[tuple[int, str], SeamResult]:
    result = SeamResult(
        id=int(entry["id"]), seam=float(entry["seam"]), golden_reward=float(entry["golden_reward"]),
        candidate_rewards=[float(v) for v in entry["candidate_rewards"]],
        candidate_logprob_sums=[float(v) for v in entry["candidate_logprob_sums"]],
        candidate_lengths=[int(v) for v in entry["candidate_lengths"]],
        candidates=[str(v) for v in entry.get("candidates", [])],  # absent in files of earlier versions
    )
    if not isinstance(entry["key"], str):
        raise TypeError("key must be a string")
    return (result.id, entry["key"]), result
