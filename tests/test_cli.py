"""The shipped YAML configs parse against the code's signatures, and the CLI runs the three stages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seam_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "seam_lightning" / "configs"
CONFIGS = sorted([ROOT / "cli.yaml", *(ROOT / "seam_lightning" / "configs").glob("*.yaml"), *(ROOT / "callbacks").glob("*.yaml")])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_parses(config, capsys):
    # --print_config validates every key and type, then exits before building anything.
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path: seam_lightning." in capsys.readouterr().out


@pytest.mark.parametrize("fragment", sorted((ROOT / "callbacks").glob("*.yaml")), ids=lambda p: p.name)
def test_callback_fragment_adds_to_a_run_config(fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG_DIR / "ppo_paper.yaml"), "--config", str(fragment), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    # The fragment appends its callback; the run's own callbacks stay.
    assert "class_path: seam_lightning.SeamCallback" in out
    assert "class_path: lightning.pytorch.callbacks.ModelCheckpoint" in out


def test_unknown_key_in_config_is_rejected(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "cli.yaml").read_text().replace("learning_rate:", "learnin_rate:"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad), "--print_config"])
    assert exit_info.value.code != 0
    assert "learnin_rate" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "seam_lightning", "fit", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--data.preference" in out.stdout


def _stage_args(config: Path, root: Path, *model_args: str) -> list[str]:
    return [
        "fit", "--config", str(config), *model_args,
        f"--model.init_args.export_dir={root / 'export'}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
    ]


SMALL_LORA = '{"r": 8, "layers": null, "dropout": 0.0}'
SHORT_RUN = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=2"]


def test_cli_runs_sft_reward_model_and_ppo_with_seam_on_demo_data(tiny_model_dir, tmp_path, capsys):
    sft, rm, ppo = tmp_path / "sft", tmp_path / "rm", tmp_path / "ppo"
    main(_stage_args(CONFIG_DIR / "sft.yaml", sft, f"--model.init_args.model={tiny_model_dir}",
                     f"--model.init_args.lora={SMALL_LORA}", *SHORT_RUN))
    main(_stage_args(CONFIG_DIR / "reward.yaml", rm, f"--model.init_args.model={sft / 'export'}",
                     f"--model.init_args.lora={SMALL_LORA}", *SHORT_RUN))
    main(_stage_args(ROOT / "cli.yaml", ppo, f"--model.init_args.policy={sft / 'export'}",
                     f"--model.init_args.reward_model={rm / 'export'}", f"--model.init_args.lora={SMALL_LORA}",
                     f"--model.init_args.value_lora={SMALL_LORA}", "--model.init_args.max_ppo_steps=2",
                     '--model.init_args.sampling={"max_new_tokens": 6}', "--data.rl.limit=40", "--data.rl_val.limit=4",
                     '--trainer.callbacks.init_args.source.init_args.corpus={"path": "demo://sft_train", "limit": 300}',
                     f"--trainer.callbacks.init_args.scores_path={ppo / 'seam.parquet'}",
                     "--trainer.callbacks.init_args.progress=false"))
    out = capsys.readouterr().out
    assert "SFTModule done after 2 steps" in out and "RewardModule done after 2 steps" in out
    # 2 PPO steps × 2 epochs × 2 mini-batches × 2 optimizers
    assert "PPOModule done after 16 steps (2 PPO steps)" in out

    rm_summary = json.loads(next(rm.rglob("summary.json")).read_text())
    assert rm_summary["stage"] == "RewardModule" and 0.0 <= rm_summary["metrics"]["val/accuracy"] <= 1.0
    assert Path(rm_summary["checkpoint"]).is_file()
    summary = json.loads(next(ppo.rglob("summary.json")).read_text())
    metrics = summary["metrics"]
    assert summary["stage"] == "PPOModule" and summary["ppo_steps"] == 2 and Path(summary["checkpoint"]).is_file()
    assert metrics["seam/pruned"] == 8.0  # 20% of 40 RL prompts
    assert {"val/reward_before", "val/reward", "train/kl", "train/reward"} <= set(metrics)
    assert (ppo / "seam.parquet").is_file() and (ppo / "export" / "config.json").is_file()


def _run_command(args: list[str]) -> subprocess.CompletedProcess:
    """The `seam-lightning` command as a user runs it, in its own process."""
    return subprocess.run([sys.executable, "-m", "seam_lightning", *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


def test_command_runs_every_stage_under_two_process_ddp(tiny_model_dir, tmp_path):
    # Lightning launches rank 1 by re-running the command: this is the users' torchrun/SLURM path.
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    sft, rm, ppo = tmp_path / "sft", tmp_path / "rm", tmp_path / "ppo"
    runs = [
        (sft, _stage_args(CONFIG_DIR / "sft.yaml", sft, f"--model.init_args.model={tiny_model_dir}",
                          f"--model.init_args.lora={SMALL_LORA}", *SHORT_RUN)),
        (rm, _stage_args(CONFIG_DIR / "reward.yaml", rm, f"--model.init_args.model={sft / 'export'}",
                         f"--model.init_args.lora={SMALL_LORA}", *SHORT_RUN)),
        (ppo, _stage_args(ROOT / "cli.yaml", ppo, f"--model.init_args.policy={sft / 'export'}",
                          f"--model.init_args.reward_model={rm / 'export'}", f"--model.init_args.lora={SMALL_LORA}",
                          f"--model.init_args.value_lora={SMALL_LORA}", "--model.init_args.max_ppo_steps=1",
                          # Our own attention, registered with transformers in each process as it loads.
                          "--model.init_args.attn_implementation=seam_grouped",
                          '--model.init_args.sampling={"max_new_tokens": 4}', "--data.rl.limit=20",
                          "--data.rl_val.limit=4",
                          '--trainer.callbacks.init_args.source.init_args.corpus={"path": "demo://sft_train", "limit": 200}',
                          "--trainer.callbacks.init_args.progress=false")),
    ]
    for root, args in runs:
        out = _run_command([*args, *ddp])
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.count(" done after ") == 1, out.stdout  # one summary, from rank 0
        summary = json.loads(next(root.rglob("summary.json")).read_text())
        assert Path(summary["checkpoint"]).is_file() and (root / "export" / "config.json").is_file()
    assert summary["ppo_steps"] == 1 and summary["metrics"]["seam/pruned"] == 4.0  # 20% of 20 RL prompts


@pytest.mark.parametrize("native, flag, expected", [(False, [], "32-true"), (True, [], "bf16-mixed"),
                                                    (False, ["--bf16_on_cpu=always"], "bf16-mixed")])
def test_bf16_config_trains_in_fp32_on_a_cpu_without_native_bf16(tiny_model_dir, tmp_path, monkeypatch, native, flag,
                                                                  expected):
    import seam_lightning.cli as cli

    monkeypatch.setattr(cli, "cpu_has_native_bf16", lambda: native)
    built = cli.build_cli(["--config", str(CONFIG_DIR / "sft.yaml"), f"--model.init_args.model={tiny_model_dir}",
                           "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}", *flag], run=False)
    assert built.trainer.precision == expected
