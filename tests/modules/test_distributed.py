"""SFT, RM and PPO under real 2-process DDP (gloo, CPU) equal one process with the same global batch.

Each run is a fresh process (tests/ddp_job.py); with ``--devices 2`` Lightning's DDP
launcher starts the second rank. Per-step metrics and the trainable weights at the
end are compared.
"""

import pytest
import torch
from ddp_job import result, run, write_data

pytestmark = pytest.mark.filterwarnings("ignore")


STAGES = ["sft", "reward", "ppo"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("ddp-data"))


@pytest.fixture(scope="module")
def trajectories(data, tiny_model_dir, tmp_path_factory):
    """Every stage with 2 ranks × batch 2, and in one process × batch 4 (one start-up per layout)."""
    root = tmp_path_factory.mktemp("ddp-runs")
    common = ["--stage", ",".join(STAGES), "--model", str(tiny_model_dir), "--data", str(data), "--steps", "3"]
    run(root / "two", *common, "--devices", "2", "--batch-size", "2")
    run(root / "one", *common, "--devices", "1", "--batch-size", "4")
    return root


def _weights(out):
    return torch.load(out / "weights.pt")


@pytest.mark.parametrize("stage", STAGES)
def test_two_ranks_follow_the_single_process_trajectory(stage, trajectories):
    name = f"{stage}-{STAGES.index(stage)}"
    two, one = result(trajectories / "two" / name), result(trajectories / "one" / name)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert len(two["steps"]) == len(one["steps"]) == 3
    for a, b in zip(two["steps"], one["steps"]):
        assert a.keys() == b.keys()
        for metric in a:
            assert a[metric] == pytest.approx(b[metric], rel=1e-4, abs=1e-5), (metric, two["steps"], one["steps"])
    w2, w1 = _weights(trajectories / "two" / name), _weights(trajectories / "one" / name)
    assert w2.keys() == w1.keys() and w1
    # Two ranks reduce gradients in another order than one process; Adam divides by sqrt(v), so
    # where a gradient entry is near zero that rounding moves the update by a visible share of
    # lr = 1e-2 (1.9e-5 seen on an AVX-512 CPU). 1e-4 is 1% of one step: a wrong gradient moves
    # weights by whole steps.
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-4)
    # The run changed the weights at all (the comparison is not between two untouched models).
    assert any(not torch.allclose(w1[n], torch.zeros_like(w1[n])) for n in w1 if "lora_B" in n)


def test_ppo_killed_mid_run_resumes_to_the_same_result(data, tiny_model_dir, tmp_path):
    common = ["--stage", "ppo", "--model", str(tiny_model_dir), "--data", str(data), "--steps", "5",
              "--batch-size", "4", "--checkpoint-every", "4"]  # 4 optimizer updates = one PPO step
    whole = run(tmp_path / "whole", *common)
    run(tmp_path / "crash", *common, "--kill-at-step", "3", killed=True)  # last checkpoint: PPO step 2
    resumed = run(tmp_path / "crash", *common, "--resume")
    assert [s["step"] for s in resumed["steps"]] == [3, 4, 5]
    for a, b in zip(resumed["steps"], whole["steps"][2:]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    w_whole, w_resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "crash")
    for name in w_whole:
        torch.testing.assert_close(w_resumed[name], w_whole[name], rtol=1e-4, atol=1e-6)
