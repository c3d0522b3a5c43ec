"""The blind-spot benchmark (scripts/exp_blind_spot.py): its pure parts, its settings, and its quick path end to end.

The quick path runs on the tiny test model (policy, RM backbone and gold RM alike), with a
40-row contrast corpus and two RM steps: the numbers mean nothing; the test checks that
every stage runs, writes its files, and that a rerun resumes from the cells file.
"""

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import exp_blind_spot  # noqa: E402
from experiments.blind_spot import (auroc, blind_spot_modules, flip_pairs, module_of, precision_at,  # noqa: E402
                                    seam_variants)
from seam_lightning.seam.score import seam_score  # noqa: E402


def test_defaults_parse():
    full, quick = exp_blind_spot.parse_args([]), exp_blind_spot.parse_args(["--quick"])
    assert full.rhos == [1.0, 0.5, 0.25] and full.seeds == [0, 1] and full.rm_backbone == "bundled:SmolLM2-135M-Instruct"
    assert full.rm_lora_layers == 8 and full.rl_seeds == [0, 1, 2] and not full.rl_effect
    assert quick.rm_steps < full.rm_steps and quick.rl_prompts < full.rl_prompts
    assert exp_blind_spot.parse_args(["--rhos", "0.5", "--seeds", "3"]).rhos == [0.5]
    # The common token-limit and learning-rate flags, at the benchmark's own defaults.
    assert (full.max_instruction_tokens, full.max_response_tokens, full.rm_lr) == (48, 64, 5e-4)
    changed = exp_blind_spot.parse_args(["--max-response-tokens", "16", "--rm-lr", "1e-3", "--ppo-lr", "1e-5"])
    assert (changed.max_response_tokens, changed.rm_lr, changed.ppo_lr) == (16, 1e-3, 1e-5)


def test_module_of_and_partition():
    assert module_of("json.dumps") == "json"
    assert module_of("os.path.join") == "os.path"
    assert module_of("email.utils.formatdate") == "email.utils"
    assert module_of("str.join") == "builtins"
    b = blind_spot_modules(0.2, 0)
    assert b == blind_spot_modules(0.2, 0) and 20 < len(b) < 60
    assert blind_spot_modules(0.1, 0) <= b  # a smaller share is a subset


def test_flips_are_nested_and_only_in_b():
    pairs = [{"source": f"{m}.f{i}", "chosen": "c", "rejected": "r"} for m in ("json", "abc", "math") for i in range(50)]
    b = frozenset({"abc"})
    flipped = {rho: {p["source"] for p in flip_pairs(pairs, b, rho, 0)[0] if p.get("flipped")} for rho in (1, .5, .25)}
    assert flipped[1] == {p["source"] for p in pairs if p["source"].startswith("abc.")}
    assert flipped[0.25] <= flipped[0.5] <= flipped[1]
    assert all(p["chosen"] == "r" for p in flip_pairs(pairs, b, 1, 0)[0] if p.get("flipped"))


def test_metrics_by_hand():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([1, 1, 1], [0, 1, 0]) == 0.5
    assert precision_at([5, 4, 3, 2, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0, 0, 0], 0.2) == 0.5
    assert precision_at([1, 1, 1, 1, 1], [0, 1, 1, 1, 1], 0.2) == 0.0  # a tie goes to the earlier prompt


def test_seam_variants_match_the_formula():
    import torch
    lp, n, r, g = [-3.0, -10.0, -2.0], [3, 5, 2], [1.5, 0.2, 2.0], 1.0
    v = seam_variants(lp, n, r, g)
    expected = seam_score(torch.tensor([lp]), torch.tensor([n]), torch.tensor([r]), torch.tensor([g]))
    assert v["seam"] == pytest.approx(float(expected[0]))
    assert v["misjudgement_rate"] == pytest.approx(2 / 3)
    assert v["excess_unweighted"] == pytest.approx(1.5)
    assert seam_variants([], [], [], 0.0)["seam"] == 0.0


def test_quick_path_on_tiny_models(tiny_model_dir, tmp_path, capsys):
    tiny = str(tiny_model_dir)
    argv = ["--quick", "--out", str(tmp_path), "--sft", tiny, "--base", tiny, "--rm-backbone", tiny,
            "--corpus-limit", "40", "--pref-limit", "16", "--batch-size", "4", "--resamples", "50", "--rhos", "1",
            "--max-response-tokens", "16", "--rl-effect"]
    result = exp_blind_spot.main(argv)
    assert result["policy"] == tiny
    assert {c["rho"] for c in result["cells"]} == {1.0}
    for name in exp_blind_spot.SIGNALS:
        assert 0.0 <= result["cells"][0]["detection"][name]["auroc"]["value"] <= 1.0 or result["rl_in_b"] in (0, 8)
    assert (tmp_path / "blind_spot.png").stat().st_size > 0
    assert "Plant check" in (tmp_path / "blind_spot.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "blind_spot" / "cells.jsonl").read_text().splitlines()]
    assert {json.loads(r["key"])["cell"] for r in rows} == {"rm", "pm_side", "detect", "pi_sft", "ppo"}
    # The RL effect: one PPO run per condition, judged on held-out prompts inside and outside B.
    effect = result["rl_effect"]
    assert set(effect["conditions"]) == {"full", "seam", "random"} and len(effect["runs"]) == 3
    assert effect["conditions"]["full"]["trained_on"] == 8 and effect["conditions"]["seam"]["trained_on"] == 6
    assert effect["conditions"]["full"]["out_b_delta_vs_full"]["mean"] == 0.0  # full against itself
    assert "RL effect" in (tmp_path / "blind_spot.md").read_text()
    # A rerun resumes: every cell comes from the file, nothing is trained again.
    again = exp_blind_spot.main(argv)
    assert again["cells"] == result["cells"] and again["rl_effect"] == result["rl_effect"]
    assert again["wall_seconds_this_run"] < result["wall_seconds_this_run"]
    # Flawed RMs trained longer than the gold RM reuse its cell and the PM side it judges; they are new.
    longer = exp_blind_spot.main([*argv[:-1], "--rm-steps", "3", "--gold-rm-steps", "2"])
    by_name = {rm["name"]: rm for rm in longer["rms"]}
    assert by_name["gold_seed1000"] == {rm["name"]: rm for rm in result["rms"]}["gold_seed1000"]
    assert by_name["flawed_rho1.0_seed0"]["steps"] == 3
    rows = [json.loads(json.loads(line)["key"]) for line in
            (tmp_path / "blind_spot" / "cells.jsonl").read_text().splitlines()]
    assert sum(r["cell"] == "pm_side" for r in rows) == 1 and sum(r["cell"] == "rm" for r in rows) == 3
