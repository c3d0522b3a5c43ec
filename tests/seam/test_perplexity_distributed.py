"""SeamCallback(selection="perplexity") under real 2-process DDP: sharded like SEAM scoring, same decision everywhere.

Each run is a fresh process (perplexity_ddp_job.py); with ``--devices 2`` Lightning's DDP
launcher starts the second rank.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from perplexity_reference import plain_perplexity, ranked, rl_rows, write_rl
from transformers import AutoModelForCausalLM

from seam_lightning.models.loading import load_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore")
JOB = Path(__file__).with_name("perplexity_ddp_job.py")
SIZES = [5, 1]  # uneven, fewer prompts than ranks


def _run(out: Path, model: Path, data: str, devices: int) -> None:
    command = [sys.executable, str(JOB), "--model", str(model), "--data", data, "--devices", str(devices),
               "--fraction", "0.4", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]


def test_two_ranks_prune_the_highest_perplexity_exactly_as_one_process(tiny_model_dir, tmp_path):
    data = ",".join(str(write_rl(tmp_path / f"data{n}", n).parent) for n in SIZES)
    _run(tmp_path / "two", tiny_model_dir, data, 2)
    _run(tmp_path / "one", tiny_model_dir, data, 1)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    for index, n in enumerate(SIZES):
        ranks = [json.loads((tmp_path / "two" / str(index) / f"rank{r}.json").read_text()) for r in (0, 1)]
        one = json.loads((tmp_path / "one" / str(index) / "rank0.json").read_text())
        assert ranks[0]["world_size"] == 2 and one["world_size"] == 1
        # Every rank holds every perplexity and takes the same decision as a single process.
        assert ranks[0]["scores"] == ranks[1]["scores"]
        assert ranks[0]["pruned"] == ranks[1]["pruned"] == one["pruned"]
        assert ranks[0]["scores"] == pytest.approx(one["scores"], rel=1e-5)  # batches pad differently
        # Each rank computed its own share only: rank 0 records 0, 2, 4, …; rank 1 records 1, 3, …
        assert [r["computed"] for r in ranks] == [(n + 1) // 2, n // 2] and one["computed"] == n
        expected = {i: plain_perplexity(lm, tokenizer, r["instruction"], r["response"])
                    for i, r in enumerate(rl_rows(n))}
        assert {int(k): v for k, v in one["scores"].items()} == pytest.approx(expected, rel=1e-4)
        assert one["pruned"] == ranked(expected, {5: 2, 1: 0}[n])  # 40%, rounded half up
