"""SFT, RM and PPO under real 2-process DDP (gloo, CPU) equal one process with the same global batch.

Each run is a fresh process (tests/ddp_job.py); with ``--devices 2`` Lightning's DDP
launcher starts the second rank. Per-step metrics and the trainable weights at the
end are compared.
"""

import pytest
import torch
from ddp_job import run, write_data

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("ddp-data"))


def _weights(out):
    return torch.load(out / "weights.pt")


@pytest.mark.parametrize("stage", ["sft", "reward", "ppo"])
def test_two_ranks_follow_the_single_process_trajectory(stage, data, tiny_model_dir, tmp_path):
    common = ["--stage", stage, "--model", str(tiny_model_dir), "--data", str(data), "--steps", "3"]
    two = run(tmp_path / "two", *common, "--devices", "2", "--batch-size", "2")
    one = run(tmp_path / "one", *common, "--devices", "1", "--batch-size", "4")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert len(two["steps"]) == len(one["steps"]) == 3
    for a, b in zip(two["steps"], one["steps"]):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-5), (name, two["steps"], one["steps"])
    w2, w1 = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    assert w2.keys() == w1.keys() and w1
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5)
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
