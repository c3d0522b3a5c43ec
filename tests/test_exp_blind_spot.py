"""The blind-spot benchmark (scripts/exp_blind_spot.py): its pure parts, its settings, and its quick path end to end.

The quick path runs on the tiny test model (policy, RM backbone and gold RM alike, and the LLM
source's writer), with a 40-row contrast corpus and two RM steps: the numbers mean nothing; the
test checks that every stage runs, writes its files, that a rerun resumes from the cells file,
and that the optional LLM and adversarial sources only add cells of their own.
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
from experiments.blind_spot_scoring import load_rm  # noqa: E402
from experiments.common import data_rows  # noqa: E402
from experiments.blind_spot_sources import adversarial_detection  # noqa: E402
from openai_server import MODEL, PROMPT_1, FakeOpenAI, judged  # noqa: E402
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
    # The optional sources are off by default.
    assert full.llm_model is None and not full.adv and (full.adv_attack, full.adv_query_budget) == ("deepwordbug", 20)


# The shared settings every cell key held at the default flags when cells were first saved: a change here
# would orphan every saved cell (gold RM, PM side, RMs, detections, PPO runs).
SAVED_SETTINGS = {
    "accelerator": "cpu", "base": "bundled:SmolLM2-135M-Instruct", "batch_size": 8, "candidates": 5,
    "corpus_data": "demo://sft_train", "corpus_limit": None, "devices": 1, "gold_rm": None, "gold_seed": 1000,
    "gold_steps": None, "judge_api_key_env": "OPENAI_API_KEY", "judge_cache": None, "judge_endpoint": None,
    "judge_model": None, "max_instruction_tokens": 48, "max_response_tokens": 64, "new_tokens": 32,
    "partition_seed": 0, "precision": None, "pref_limit": None, "pref_val": 400,
    "preference_data": "demo://preference_train", "preference_val_data": "demo://preference_val",
    "q_pm_judge": "gold_rm", "resamples": 1000, "rl_data": "demo://rl_train", "rl_prompts": 160,
    "rm": "runs/reward/export", "rm_backbone": "bundled:SmolLM2-135M-Instruct", "rm_lora_layers": 8, "rm_lr": 0.0005,
    "rm_steps": 250, "samples": 4, "sft": "runs/sft/export", "sft_data": "demo://sft_train",
    "sft_val_data": "demo://sft_val", "share": 0.2, "strategy": "auto"}


def test_cell_settings_are_the_saved_ones_whatever_the_sources():
    e = exp_blind_spot
    assert e.settings_of(e.parse_args([]), e.CELL_SKIP) == SAVED_SETTINGS
    with_sources = e.parse_args(["--llm-model", "gpt-4o", "--llm-endpoint", "http://localhost:8000/v1", "--adv",
                                 "--adv-attack", "pwws", "--adv-query-budget", "7", "--llm-api-key-env", "KEY"])
    assert e.settings_of(with_sources, e.CELL_SKIP) == SAVED_SETTINGS


def test_report_labels_the_optional_sources_only_when_computed():
    from experiments.blind_spot_report import loglik_label, signal_labels
    plain = signal_labels({})
    assert "seam_llm" not in plain and "seam_adv" not in plain and list(plain) == list(exp_blind_spot.SIGNALS)
    result = {"sources": {"llm": {"writer": "local: π_SFT"},
                          "adv": {"attack": "deepwordbug", "query_budget": 20, "per_rm": [{}, {}]}}}
    labels = signal_labels(result)
    assert list(labels)[:4] == ["seam_contrast", "seam_policy", "seam_llm", "seam_adv"]
    assert labels["seam_llm"] == "SEAM, LLM source (local: π_SFT)"
    assert labels["seam_adv"] == "SEAM, adversarial source (deepwordbug, budget 20)"
    assert loglik_label("adversarial", result) == "adversarial (deepwordbug, budget 20; 2 flawed RMs)"


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
    # A rerun resumes: every cell comes from the file, nothing is trained or computed again.
    cells_file = tmp_path / "blind_spot" / "cells.jsonl"
    saved = cells_file.read_text()
    again = exp_blind_spot.main(argv)
    assert cells_file.read_text() == saved
    assert again["cells"] == result["cells"] and again["rl_effect"] == result["rl_effect"]
    assert again["wall_seconds_this_run"] < result["wall_seconds_this_run"]
    assert "LLM source" not in (tmp_path / "blind_spot.md").read_text() and result["sources"] == {}
    assert set(result["cells"][0]["detection"]) == set(exp_blind_spot.SIGNALS)
    check_optional_sources(argv, tiny, tmp_path, result, saved)
    # Flawed RMs trained longer than the gold RM reuse its cell and the PM side it judges; they are new.
    longer = exp_blind_spot.main([*argv[:-1], "--rm-steps", "3", "--gold-rm-steps", "2"])
    by_name = {rm["name"]: rm for rm in longer["rms"]}
    assert by_name["gold_seed1000"] == {rm["name"]: rm for rm in result["rms"]}["gold_seed1000"]
    assert by_name["flawed_rho1.0_seed0"]["steps"] == 3
    rows = [json.loads(json.loads(line)["key"]) for line in
            (tmp_path / "blind_spot" / "cells.jsonl").read_text().splitlines()]
    assert sum(r["cell"] == "pm_side" for r in rows) == 1 and sum(r["cell"] == "rm" for r in rows) == 3
    check_llm_sample_judge(argv, tmp_path, result)


def check_llm_sample_judge(argv: list[str], out: Path, result: dict) -> None:
    """--sample-judge llm: the policy samples are kept where the paper's Prompt 1 judge rates them below the
    golden answer; the PM side and the detections get cells of their own, the RMs and PPO runs are reused."""
    args = exp_blind_spot.parse_args(argv)
    goldens = {r["response"].strip() for r in data_rows(args.rl_data)[:args.rl_prompts]}

    def rating(answer: str) -> int:  # the golden answers 5, a sample by its length: some below, some not
        return 5 if answer.strip() in goldens else len(answer) % 11

    def reply(request: dict) -> str:
        return f"Judged. Rating: [[{rating(judged(request['messages'][-1]['content'])[1])}]]"

    cells_file = out / "blind_spot" / "cells.jsonl"
    before = cells_file.read_text()
    with FakeOpenAI(reply=reply) as server:
        judged_run = exp_blind_spot.main([*argv, "--sample-judge", "llm", "--judge-endpoint", server.url,
                                          "--judge-model", MODEL, "--judge-cache", str(out / "judge.jsonl")])
        assert server.requests and all(PROMPT_1.search(p) for p in server.prompts)
    added = [json.loads(line) for line in cells_file.read_text()[len(before):].splitlines()]
    assert sorted(json.loads(row["key"])["cell"] for row in added) == ["detect", "pm_side"]
    pm = next(row["result"] for row in added if json.loads(row["key"])["cell"] == "pm_side")
    samples = [(text, kept) for p in pm["prompts"] for text, kept in zip(p["samples"], p["sample_kept"])]
    assert samples and all(kept == (rating(text) < 5 and bool(text.strip())) for text, kept in samples)
    assert judged_run["rms"] == result["rms"] and judged_run["rl_effect"] == result["rl_effect"]
    assert judged_run["sample_judge"]["judge"] == "llm"
    assert f"| SEAM, policy samples (judge: LLM {MODEL}, Prompt 1) |" in (out / "blind_spot.md").read_text()


def check_optional_sources(argv: list[str], tiny: str, out: Path, result: dict, saved: str) -> None:
    """The LLM source (the tiny model as writer: junk replies) and the adversarial source add their own cells only,
    leave every other number as it was, and get their rows in the report; a rerun with them computes nothing."""
    cells_file = out / "blind_spot" / "cells.jsonl"
    sourced_argv = [*argv, "--llm-model", f"local:{tiny}", "--adv", "--adv-query-budget", "3"]
    sourced = exp_blind_spot.main(sourced_argv)
    text = cells_file.read_text()
    assert text.startswith(saved)
    added = sorted(json.loads(json.loads(line)["key"])["cell"] for line in text[len(saved):].splitlines())
    assert added == ["detect_adv", "detect_llm", "llm_side"]
    cell, before = sourced["cells"][0], result["cells"][0]
    assert {k: v for k, v in cell["detection"].items() if k not in ("seam_llm", "seam_adv")} == before["detection"]
    for name in ("seam_llm", "seam_adv"):
        assert len(cell[name]) == 8 and all(v >= 0 for v in cell[name])
        auroc = cell["detection"][name]["auroc"]["value"]
        assert 0.0 <= auroc <= 1.0 or sourced["rl_in_b"] in (0, 8)
    assert set(sourced["mean_token_loglik"]) >= {"llm", "adversarial", "contrast"}
    assert sourced["sources"]["llm"]["stats"]["prompts"] == 8
    report = (out / "blind_spot.md").read_text()
    assert f"| SEAM, LLM source (local:{tiny}) |" in report
    assert "| SEAM, adversarial source (deepwordbug, budget 3) |" in report
    assert f"| llm (local:{tiny}) |" in report and "| adversarial (deepwordbug, budget 3; 1 flawed RM) |" in report
    exp_blind_spot.main(sourced_argv)
    assert cells_file.read_text() == text
    # The attack itself, on the flawed RM, with seeds it does not all misjudge (other prompts' golden answers).
    args = exp_blind_spot.parse_args(sourced_argv)
    rl = data_rows(args.rl_data)[:args.rl_prompts]
    pm = {"prompts": [{"contrast": [o["response"] for o in rl if o is not r][:2]} for r in rl]}
    flawed = next(rm for rm in sourced["rms"] if rm["name"].startswith("flawed"))
    rm, tok = load_rm(args, flawed["path"])
    adv = adversarial_detection(args, pm, tiny, rm, tok, rl, [i < 4 for i in range(8)], 0)
    assert adv["attack_stats"]["attacked"] > 0 and adv["attack_stats"]["queries"] > 0
    assert len(adv["seam_adv"]) == 8 and all(len(p["lengths"]) == len(p["candidates"]) for p in adv["prompts"])
