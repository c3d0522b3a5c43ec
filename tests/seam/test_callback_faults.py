"""Faults on one rank of a real 2-process DDP job (gloo, CPU): the job must end promptly, never hang.

Each job is a fresh process (tests/ddp_job.py) in a session of its own; ``run_failing``
kills the whole job and fails the test if it has not ended within its timeout, far
below the process group's 30-minute timeout that a rank left waiting would sit out.
"""

import re

import pytest
import torch
from ddp_job import NAN_ID, result, run, run_failing, write_data, write_nan_reward_model

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPT_END = 90  # seconds: start-up, scoring and the failure together (a whole successful job takes ~15 s here)


@pytest.mark.parametrize("fault", ["source-rank1", "nan-rank1"])
def test_a_scoring_failure_on_rank_1_stops_both_ranks_with_its_message(tiny_model_dir, tmp_path, fault):
    data = write_data(tmp_path / "data")
    options = ["--stage", "seam", "--model", str(tiny_model_dir), "--data", str(data), "--steps", "1",
               "--devices", "2", "--batch-size", "1", "--fault", fault]
    if fault == "source-rank1":  # rank 1's candidate source raises on its second chunk
        message = "RuntimeError: endpoint gave up"
    else:  # rank 1's reward model gives a NaN for a candidate of record NAN_ID (in rank 1's second chunk)
        options += ["--reward-model", str(write_nan_reward_model(tiny_model_dir, tmp_path / "nan-rm"))]
        message = f"ValueError: SEAM: non-finite reward (nan) for example id {NAN_ID}, candidate 0"
    failure = run_failing(tmp_path / "run", *options, timeout=120)
    print(f"{fault}: the job failed (exit {failure.returncode}) after {failure.seconds:.1f} s")
    # The failing rank raises its own error; rank 0 raises PeerFailure naming rank 1 and that error
    # (torch prefixes each rank's traceback with its rank).
    assert f"[rank1]: {message}" in failure.output, failure.output[-5000:]
    assert (f"[rank0]: seam_lightning.seam.distributed.PeerFailure: SEAM scoring stopped: rank 1 failed with "
            f"{message}") in failure.output, failure.output[-5000:]
    assert failure.seconds < PROMPT_END, f"{fault}: the job took {failure.seconds:.0f} s to fail"
    if fault == "source-rank1":
        failed_at = float(re.search(r"rank 1's source fails at ([\d.]+)", failure.output).group(1))
        print(f"{fault}: {failure.ended_at - failed_at:.1f} s from the fault to the end of the job")
        assert failure.ended_at - failed_at < 30
    assert not (tmp_path / "run" / "result.json").exists()  # no rank trained


def test_rank_1_killed_mid_training_ends_the_job_and_a_restart_continues_it_exactly(tiny_model_dir, tmp_path):
    data = write_data(tmp_path / "data")
    # PPO on the RL set pruned by a SeamCallback at fit start; a checkpoint after every PPO step
    # (4 optimizer updates: 2 PPO epochs x policy and value).
    common = ["--stage", "ppo", "--prune", "--model", str(tiny_model_dir), "--data", str(data), "--steps", "4",
              "--devices", "2", "--batch-size", "2", "--checkpoint-every", "4"]
    whole = run(tmp_path / "whole", *common)

    # Rank 1 dies (SIGKILL) right after PPO step 3, before that step's checkpoint.
    failure = run_failing(tmp_path / "crash", *common, "--kill-at-step", "3", "--kill-rank", "1", timeout=120)
    killed_at = float(re.search(r"rank 1 kills itself \(SIGKILL\) after step 3 at ([\d.]+)", failure.output).group(1))
    waited = failure.ended_at - killed_at
    rank0 = re.search(r"\[rank0\]: (\S*Error: .*)", failure.output)
    how = (f"rank 0 raised {rank0.group(1)[:300]!r}" if rank0 else
           f"rank 0 ended with exit status {failure.returncode} without an error of its own")
    print(f"rank 1 killed; the job ended {waited:.1f} s later; {how}")
    # With gloo, rank 0 fails at its next collective (in saving the checkpoint); Lightning's
    # observer of the child ranks would SIGKILL it within ~5 s otherwise.
    assert waited < 30, f"the job took {waited:.0f} s to end after rank 1 died; {how}"
    assert failure.returncode == -9 or (rank0 and "Connection" in rank0.group(1)), how
    assert not (tmp_path / "crash" / "result.json").exists()

    # Restarted with 2 processes from the last checkpoint (PPO step 2): the same steps, weights and selection.
    resumed = run(tmp_path / "crash", *common, "--resume")
    assert [s["step"] for s in resumed["steps"]] == [3, 4]
    for a, b in zip(resumed["steps"], whole["steps"][2:]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    w_whole, w_resumed = torch.load(tmp_path / "whole" / "weights.pt"), torch.load(tmp_path / "crash" / "weights.pt")
    assert w_whole.keys() == w_resumed.keys() and w_whole
    for name in w_whole:
        torch.testing.assert_close(w_resumed[name], w_whole[name], rtol=1e-4, atol=1e-6)
    # The pruned set came back from the checkpoint: nothing was scored again.
    assert resumed["selected"] == whole["selected"] and len(whole["selected"]) == 4
    assert resumed["rescorings"] == 1 and resumed["last_scoring"] == {"reused": 0, "scored": 0}
    assert result(tmp_path / "crash")["world_size"] == 2
