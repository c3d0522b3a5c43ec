"""The shipped YAML configs parse against the code's signatures, and the CLI runs both stages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seam_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
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
        main(["fit", "--config", str(ROOT / "cli.yaml"), "--config", str(fragment), "--print_config"])
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


def _stage_args(config: Path, model: str, root: Path) -> list[str]:
    return [
        "fit", "--config", str(config),
        f"--model.init_args.model={model}",
        '--model.init_args.lora={"r": 8, "layers": null}',
        f"--model.init_args.export_dir={root / 'export'}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
    ]


def test_cli_trains_sft_then_reward_model_on_demo_data(tiny_model_dir, tmp_path, capsys):
    main(_stage_args(ROOT / "seam_lightning" / "configs" / "sft.yaml", str(tiny_model_dir), tmp_path / "sft"))
    main(_stage_args(ROOT / "cli.yaml", str(tmp_path / "sft" / "export"), tmp_path / "rm"))
    out = capsys.readouterr().out
    assert "SFTModule done after 2 steps" in out and "RewardModule done after 2 steps" in out
    summary = json.loads(next((tmp_path / "rm").rglob("summary.json")).read_text())
    assert summary["stage"] == "RewardModule"
    assert 0.0 <= summary["metrics"]["val/accuracy"] <= 1.0
    assert Path(summary["checkpoint"]).is_file()
    assert (tmp_path / "rm" / "export" / "config.json").is_file()
