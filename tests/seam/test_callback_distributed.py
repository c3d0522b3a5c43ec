"""SeamCallback under real 2-process DDP, and killed (SIGKILL) while scoring or augmenting.

Each run is a fresh process (tests/ddp_job.py); with ``--devices 2`` Lightning's DDP
launcher starts the second rank.
"""

import json

import pytest
from ddp_job import result, run, write_data

pytestmark = pytest.mark.filterwarnings("ignore")


def _seam_args(model, data, *extra):
    return ["--stage", "seam", "--model", str(model), "--data", str(data), "--steps", "1", *extra]


SIZES = [16, 5, 1]  # even, uneven, fewer prompts than ranks


def test_two_ranks_select_exactly_what_one_process_selects(tiny_model_dir, tmp_path):
    data = ",".join(str(write_data(tmp_path / f"data{rows}", n=rows)) for rows in SIZES)
    # One start-up per layout; the three data sets run one after the other in the same processes.
    run(tmp_path / "two", *_seam_args(tiny_model_dir, data, "--devices", "2", "--batch-size", "1"))
    run(tmp_path / "one", *_seam_args(tiny_model_dir, data, "--devices", "1", "--batch-size", "2"))
    for index, rows in enumerate(SIZES):
        two, one = result(tmp_path / "two" / f"seam-{index}"), result(tmp_path / "one" / f"seam-{index}")
        assert two["world_size"] == 2
        assert two["selected"] == one["selected"]
        assert len(one["selected"]) == {16: 4, 5: 1, 1: 0}[rows]  # 25%, rounded half up
        assert two["scores"].keys() == one["scores"].keys() == {str(i) for i in range(rows)}
        for key, value in one["scores"].items():
            assert two["scores"][key] == pytest.approx(value, rel=1e-3, abs=1e-9)  # batches pad differently
        # Each rank scored its own share only: rank 0 holds records 0, 2, 4, ...
        assert two["last_scoring"] == {"reused": 0, "scored": (rows + 1) // 2}


def test_killed_while_scoring_resumes_without_rescoring_what_was_saved(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "data")
    whole = run(tmp_path / "whole", *_seam_args(tiny_model_dir, data))
    # Chunks of 4 prompts: the source dies while building the third chunk, after two were scored and saved.
    run(tmp_path / "crash", *_seam_args(tiny_model_dir, data, "--kill-on-call", "3"), killed=True)
    saved = list((tmp_path / "crash" / "seam_progress").glob("*/rank0.jsonl"))
    assert len(saved) == 1 and len(saved[0].read_text().splitlines()) == 8
    rerun = run(tmp_path / "crash", *_seam_args(tiny_model_dir, data))
    assert rerun["last_scoring"] == {"reused": 8, "scored": 8}
    assert rerun["selected"] == whole["selected"]
    assert rerun["scores"] == pytest.approx(whole["scores"], rel=1e-6)
    # A truncated last line (a kill mid-write) is skipped with a warning, and its prompt is scored again.
    lines = saved[0].read_text().splitlines()
    saved[0].write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    again = run(tmp_path / "crash", *_seam_args(tiny_model_dir, data))
    assert again["last_scoring"] == {"reused": 15, "scored": 1}
    assert again["selected"] == whole["selected"]


def test_augmentation_killed_mid_run_resumes_with_the_same_examples(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "data")
    common = ["--stage", "augment", "--model", str(tiny_model_dir), "--reward-model", str(tiny_model_dir),
              "--data", str(data), "--steps", "8", "--batch-size", "4", "--checkpoint-every", "2"]
    whole = run(tmp_path / "whole", *common)
    # Source calls: 4 chunks scored at fit start, 1 augmentation, 4 chunks after epoch 0, then the
    # 10th — the second augmentation — dies. The last checkpoint is from step 4, before the epoch's end.
    run(tmp_path / "crash", *common, "--kill-on-call", "10", killed=True)
    resumed = run(tmp_path / "crash", *common, "--resume")
    assert resumed["added"] == whole["added"]
    assert resumed["selected"] == whole["selected"] and resumed["rescorings"] == whole["rescorings"] == 2
    assert resumed["last_scoring"]["reused"] == 16  # the epoch-end scoring was saved before the kill
    for a, b in zip(resumed["steps"], whole["steps"][4:]):
        assert a == pytest.approx(b, rel=1e-4)


def test_augment_mode_adds_marked_examples_that_reach_the_next_epoch(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "data")
    result = run(tmp_path / "run", "--stage", "augment", "--model", str(tiny_model_dir), "--reward-model",
                 str(tiny_model_dir), "--data", str(data), "--steps", "8", "--batch-size", "4")
    rl = {json.loads(line)["instruction"]: json.loads(line)["response"]
          for line in (data / "rl.jsonl").read_text().splitlines()}
    corpus = {json.loads(line)["instruction"]: json.loads(line)["response"]
              for line in (data / "corpus.jsonl").read_text().splitlines()}
    selected = result["selected"]
    assert len(selected) == 8  # 50% of 16
    preference = result["added"]["preference"]
    # Two contrast examples per selected prompt (augmentations_per_prompt=2), golden preferred.
    assert len(preference) == 16
    for pair in preference:
        assert rl[pair["instruction"]] == pair["chosen"] and pair["rejected"] in corpus.values()
    assert {p["instruction"] for p in preference} == {f"What does `json.dumps` do? ({i})" for i in selected}
    # SFT gets the contrast instructions with their own golden answers, each once.
    sft = result["added"]["sft"]
    assert sft and all(corpus[e["instruction"]] == e["response"] for e in sft)
    assert len({e["instruction"] for e in sft}) == len(sft)
    # 16 original SFT examples in 4 batches in epoch 0; epoch 1 sees the added ones too (5 batches).
    assert len(result["steps"]) == 8
