"""Scoring progress: prompt keys and the append-only store."""

import logging

from seam_lightning.seam.progress import ScoringProgress, prompt_key
from seam_lightning.seam.scorer import SeamResult


def _result(i):
    return SeamResult(id=i, seam=0.5 * i, golden_reward=1.0, candidate_rewards=[1.5, 0.5],
                      candidate_logprob_sums=[-3.0, -4.0], candidate_lengths=[3, 4])


def _key(i):
    return prompt_key(f"question {i}", f"answer {i}")


def test_prompt_key_covers_instruction_and_golden_response():
    assert prompt_key("question 1", "answer 1") == _key(1)
    assert prompt_key("question 1", "other") != _key(1)
    assert prompt_key("question 2", "answer 1") != _key(1)
    assert prompt_key("a", "bc") != prompt_key("ab", "c")  # fields are not simply concatenated


def test_every_ranks_file_is_read_and_corrupt_lines_are_skipped(tmp_path, caplog):
    rank0, rank1 = ScoringProgress(tmp_path, "fp", 0), ScoringProgress(tmp_path, "fp", 1)
    rank0.save([(_key(0), _result(0)), (_key(2), _result(2))])
    rank1.save([(_key(1), _result(1))])
    ScoringProgress(tmp_path, "other", 0).save([(_key(3), _result(3))])  # another set-up: not read
    with open(rank1.path, "a") as f:
        f.write('{"key": "x", "id": 9, "seam": ')  # a kill mid-write
    with caplog.at_level(logging.WARNING):
        done = ScoringProgress(tmp_path, "fp", 0).load()
    assert sorted(i for i, _ in done) == [0, 1, 2]
    assert done[(2, _key(2))] == _result(2)
    assert "rank1.jsonl line 2: skipping a corrupt SEAM progress line" in caplog.text
    # The next append from rank 1 starts on a fresh line, so both survive.
    fresh = ScoringProgress(tmp_path, "fp", 1)
    fresh.load()
    fresh.save([(_key(4), _result(4))])
    assert sorted(i for i, _ in ScoringProgress(tmp_path, "fp", 0).load()) == [0, 1, 2, 4]
