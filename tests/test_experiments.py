"""Smoke tests of the experiment scripts (scripts/exp_*.py): each one's --quick path end to end on tiny models.

The tiny model stands in for π_SFT, the training RM, the base model and the gold RM;
sizes are cut to a handful of prompts, one PPO step and a 40-row contrast corpus. The
numbers mean nothing; the tests check that every script runs, prints its table and
writes its JSON and PNG.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY_SIZES = ["--quick", "--rl-prompts", "8", "--batch-size", "4", "--val-prompts", "2", "--ppo-steps", "1",
              "--new-tokens", "4", "--candidates", "2", "--pref-val", "4", "--corpus-limit", "40", "--lora-layers", "2"]
EXTRA = {"augmentation": ["--rm-steps", "1", "--pref-limit", "8"]}


@pytest.mark.parametrize("name", ["data_selection", "filter_rate", "overlap", "augmentation"])
def test_experiment_runs_on_tiny_models(name, tiny_model_dir, tmp_path, monkeypatch, capsys):
    tiny = str(tiny_model_dir)
    argv = [f"exp_{name}.py", "--out", str(tmp_path), "--sft", tiny, "--rm", tiny, "--base", tiny,
            "--gold-rm", tiny, *TINY_SIZES, *EXTRA.get(name, [])]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.syspath_prepend(str(SCRIPTS))
    runpy.run_path(str(SCRIPTS / f"exp_{name}.py"), run_name="__main__")

    out = capsys.readouterr().out
    assert "| " in out and "Settings:" in out  # the markdown table and the settings line
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["settings"]["rl_prompts"] == 8 and result["gold_rm"]["pairs"] == 4
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


CONFIGS = sorted((SCRIPTS / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("name", ["data_selection", "filter_rate", "overlap", "augmentation"])
def test_shipped_experiment_config_parses(name, config, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"exp_{name}.py", "--config", str(config), "--print_config"])
    monkeypatch.syspath_prepend(str(SCRIPTS))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPTS / f"exp_{name}.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert "rl_data:" in capsys.readouterr().out


def test_a_rerun_reuses_every_finished_cell(tiny_model_dir, tmp_path, monkeypatch, capsys):
    tiny = str(tiny_model_dir)
    argv = ["exp_data_selection.py", "--out", str(tmp_path), "--sft", tiny, "--rm", tiny, "--base", tiny,
            "--gold-rm", tiny, *TINY_SIZES]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.syspath_prepend(str(SCRIPTS))
    runpy.run_path(str(SCRIPTS / "exp_data_selection.py"), run_name="__main__")
    first = json.loads((tmp_path / "data_selection.json").read_text())
    assert capsys.readouterr().out.count("saved result reused") == 0
    runpy.run_path(str(SCRIPTS / "exp_data_selection.py"), run_name="__main__")
    assert capsys.readouterr().out.count("saved result reused") == 3  # full, seam, random: nothing rerun
    assert json.loads((tmp_path / "data_selection.json").read_text())["rows"] == first["rows"]
    assert (tmp_path / "data_selection.md").read_text().startswith("| condition")
