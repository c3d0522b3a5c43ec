"""Smoke tests of the experiment scripts (scripts/exp_*.py): each one's --quick path end to end on tiny models.

The tiny model stands in for π_SFT, the training RM, the base model and the gold RM;
sizes are cut to a handful of prompts, one PPO step and a 40-row contrast corpus. The
numbers mean nothing; the tests check that every script runs, prints its table, writes
its JSON, markdown table and PNG, and that a rerun resumes from the saved cells instead
of computing anything again. Q_PM by the LLM judge runs against the tests' own
OpenAI-compatible server.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from openai_server import MODEL, PROMPT_1, FakeOpenAI, judged, numbered_reply
from seam_lightning.eval.judge import PAPER_JUDGE_PROMPT, render_judge_prompt
from seam_lightning.eval.stats import mean_ci

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
DRIVERS = ["data_selection", "filter_rate", "overlap", "augmentation", "saturation", "sanity", "scaling"]
TINY_SIZES = ["--quick", "--rl-prompts", "8", "--batch-size", "4", "--val-prompts", "2", "--ppo-steps", "1",
              "--new-tokens", "4", "--candidates", "2", "--pref-val", "4", "--corpus-limit", "40", "--lora-layers", "2"]
LADDERS = ["--pm-examples", "0", "4", "--rm-pairs", "0", "4"]
EXTRA = {"augmentation": ["--rm-steps", "1", "--pref-limit", "8"], "saturation": LADDERS,
         "data_selection": ["--adv-query-budget", "5"],
         "sanity": [*LADDERS, "--seeds", "0", "1"],
         "scaling": [*LADDERS, "--sizes", "first:1", "SELF"]}  # SELF: the tiny model itself (2 blocks)
CELLS = {"data_selection": 7,  # π_SFT alone; full, seam_contrast, seam_llm, seam_adv, random, perplexity
         "filter_rate": 3,  # 0 (reference), 20, 40%
         "overlap": 4,  # (SFT, base) x (RM, gold)
         "augmentation": 5,  # the selections, then original, seam, random, full
         "saturation": 8,  # 2 PMs, 2 RMs, 2 x 2 PPO runs
         "sanity": 8,  # 2 seeds x (2 PMs + 2 RMs)
         "scaling": 2}  # 2 sizes
FROM_CELLS = {"data_selection": ["rows", "runs"], "filter_rate": ["rows"], "overlap": ["pairs", "overlap_matrix"],
              "augmentation": ["selected", "rows"], "saturation": ["pms", "rms", "grid"],
              "sanity": ["pms", "rms", "rows"], "scaling": ["rows"]}
"""The parts of each result built from cells: a rerun must reproduce them exactly. (Other parts may be
recomputed: the tiny model loaded as a reward model gets a new random head each time.)"""
MODELS = {"saturation": ["pm-4-seed0", "rm-0-seed0", "rm-4-seed0"],  # k = 0 is the base model itself: not exported
          "sanity": ["pm-4-seed0", "pm-4-seed1", "rm-0-seed0", "rm-0-seed1", "rm-4-seed0", "rm-4-seed1"],
          "scaling": ["pm-4-seed0", "pm-4-seed0", "rm-4-seed0", "rm-4-seed0"]}  # per size; weak PM (k=0) = base
FIGURES = {"saturation": ["saturation.png", "saturation_heatmap.png"]}
LLM_JUDGED = {"saturation", "scaling"}  # Q_PM by the LLM judge there; by the gold RM elsewhere
LLM_SOURCED = {"data_selection"}  # SEAM_GPT's worse answers from the test server
def rating_of(answer: str) -> int:
    """The fake judge's rating: a function of the answer alone, so a test can recompute it."""
    return len(answer) % 11


def rating_reply(request: dict) -> str:
    """A judge's reply in Prompt 1's format: a short explanation, then [[rating]]; to a worse-answers prompt
    (SEAM_GPT), numbered worse answers."""
    prompt = request["messages"][-1]["content"]
    if not PROMPT_1.search(prompt):
        return numbered_reply(request)
    _, answer = judged(prompt)
    return f"The answer is short. Rating: [[{rating_of(answer)}]]"


def run_driver(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [f"exp_{name}.py", *argv])
    monkeypatch.syspath_prepend(str(SCRIPTS))
    runpy.run_path(str(SCRIPTS / f"exp_{name}.py"), run_name="__main__")


@pytest.mark.parametrize("name", DRIVERS)
def test_experiment_runs_and_resumes_on_tiny_models(name, tiny_model_dir, tmp_path, monkeypatch, capsys):
    tiny = str(tiny_model_dir)
    argv = ["--out", str(tmp_path), "--sft", tiny, "--rm", tiny, "--base", tiny, "--gold-rm", tiny, *TINY_SIZES,
            *[tiny if arg == "SELF" else arg for arg in EXTRA.get(name, [])]]
    with FakeOpenAI(reply=rating_reply) as server:
        if name in LLM_JUDGED:
            argv += ["--q-pm-judge", "llm", "--judge-endpoint", server.url, "--judge-model", MODEL,
                     "--judge-cache", str(tmp_path / "judge.jsonl")]
        if name in LLM_SOURCED:
            argv += ["--llm-endpoint", server.url, "--llm-model", MODEL]
        run_driver(name, argv, monkeypatch)
        out = capsys.readouterr().out
        first = json.loads((tmp_path / f"{name}.json").read_text())
        asked = len(server.requests)
        run_driver(name, argv, monkeypatch)  # a rerun: every cell is saved
        again = capsys.readouterr().out
        assert len(server.requests) == asked  # nothing judged again

    assert "| " in out and "Settings:" in out  # the markdown table and the settings line
    assert out.count("saved result reused") == 0 and again.count("saved result reused") == CELLS[name]
    assert len((tmp_path / f"{name}.cells.jsonl").read_text().splitlines()) == CELLS[name]
    rerun = json.loads((tmp_path / f"{name}.json").read_text())
    same = json.dumps([rerun[k] for k in FROM_CELLS[name]]) == json.dumps([first[k] for k in FROM_CELLS[name]])
    assert same  # compared as text: NaN (a Spearman ρ of constant scores) equals itself there
    table = (tmp_path / f"{name}.md").read_text()
    assert table.startswith("| ") and table.strip() in again  # the printed table, written as markdown
    assert first["settings"]["rl_prompts"] == 8
    if name in LLM_SOURCED:  # SEAM_GPT ran: its worse answers came from the server
        assert "seam_llm" in first["variants"] and asked > 0 and not first["left_out"]
    if name in LLM_JUDGED:
        assert first["q_pm_judge"]["judge"] == "llm" and asked > 0
        assert all(judged(p)[0] for p in server.prompts)  # every request was a rendered Prompt 1
    else:
        assert (first.get("q_pm_judge") or first["gold_rm"])["pairs"] == 4  # the gold RM's held-out accuracy
    if name in MODELS:  # each ladder model trained once, named by rung and seed (and a hash of its settings)
        assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "models").iterdir()) == MODELS[name]
    for figure in FIGURES.get(name, [f"{name}.png"]):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"


def test_q_pm_by_the_llm_judge_is_the_mean_prompt_1_rating(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # never send a real key to the test server
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from experiments.common import experiment_parser, resolve
    from experiments.judges import Judges

    tiny = str(tiny_model_dir)
    unrated = set()

    def reply(request: dict) -> str:  # the first question gets a reply without a rating
        question, answer = judged(request["messages"][-1]["content"])
        return "I cannot tell." if question in unrated else rating_reply(request)

    with FakeOpenAI(reply=reply) as server:
        argv = ["--out", str(tmp_path), "--sft", tiny, "--rm", tiny, "--val-prompts", "3", "--new-tokens", "6",
                "--q-pm-judge", "llm", "--judge-endpoint", server.url, "--judge-model", MODEL,
                "--judge-cache", str(tmp_path / "judge.jsonl")]
        args = resolve(experiment_parser("test").parse_args(argv))
        judges = Judges(args)
        unrated.add(judges.instructions[0])
        result = judges.evaluate_path(tiny)
        prompts = list(server.prompts)
        again = Judges(args).evaluate_path(tiny)
        assert len(server.requests) == len(prompts)  # every reply came from the cache
        assert again["q_pm_per_prompt"] == result["q_pm_per_prompt"]

    answers = dict(map(judged, prompts))
    assert sorted(answers) == sorted(judges.instructions)  # one request per held-out prompt
    for question, answer in answers.items():  # each request is Prompt 1, verbatim
        assert render_judge_prompt(PAPER_JUDGE_PROMPT, question, answer) in prompts
    expected = [None if q in unrated else rating_of(answers[q]) for q in judges.instructions]
    assert result["q_pm_per_prompt"] == expected and result["unrated"] == 1
    assert result["q_pm"] == mean_ci([e for e in expected if e is not None]).to_dict()
    assert result["rm_reward"]["n"] == 3  # the training RM still scores every answer


@pytest.fixture
def scripts(monkeypatch):
    """The experiment scripts' folder on sys.path, for importing their pieces."""
    monkeypatch.syspath_prepend(str(SCRIPTS))


def test_a_worse_answer_is_the_contrast_candidate_else_another_records_golden_answer(scripts):
    from exp_sanity import worse_answers

    golden = ["A", "B", "C", "B"]
    worse, from_contrast = worse_answers(["a", "b", "c", "d"], golden, [["X", "Y"], [], [], ["Z"]], seed=3)
    assert worse[0] == "X" and worse[3] == "Z" and from_contrast == 2
    assert worse[1] in {"A", "C"} and worse[2] in {"A", "B"}  # another record's golden answer, never an equal one
    assert worse_answers(["a", "b", "c", "d"], golden, [["X", "Y"], [], [], ["Z"]], seed=3)[0] == worse  # seeded


def test_sanity_summary_is_over_seeds_with_drl_against_the_in_domain_set(scripts):
    from exp_sanity import summary

    per_seed = {"D_p": [4.0, 6.0], "D_r": [5.0, 5.0], "D_rl": [4.5, 5.1]}
    ratio = summary(per_seed, "D_p", ratio=True)
    assert ratio["D_p"]["mean"] == 5.0 and ratio["D_p"]["n"] == 2 and ratio["D_r"]["low"] == ratio["D_r"]["high"] == 5.0
    assert ratio["D_rl_vs_in_domain"] == pytest.approx(4.8 / 5.0)
    assert summary(per_seed, "D_r", ratio=False)["D_rl_vs_in_domain"] == pytest.approx(4.8 - 5.0)


@pytest.mark.parametrize("pm, rm, backbone, message", [
    ([0, 4], [0, 4, 8], "rank", "equal lengths"),  # rank pairing needs one RM per PM
    ([0, 4, 4], [0, 4, 8], "rank", "distinct"),
    ([0, -4], [0, 4], "rank", "distinct sizes >= 0"),
    ([], [0], "some/model", "distinct"),
])
def test_ladders_that_cannot_be_paired_or_sized_are_refused(scripts, pm, rm, backbone, message):
    import argparse
    from experiments.ladder import check_ladders

    with pytest.raises(SystemExit, match=message):
        check_ladders(argparse.Namespace(pm_examples=pm, rm_pairs=rm, rm_backbone=backbone))


def test_ladders_of_unequal_length_pair_with_one_named_backbone(scripts):
    import argparse
    from experiments.ladder import check_ladders

    check_ladders(argparse.Namespace(pm_examples=[0, 4], rm_pairs=[0, 4, 8], rm_backbone="some/model"))


def test_learning_rates_and_token_limits_are_flags_that_keys_hold_only_when_changed(scripts):
    from experiments.common import LATER_SETTINGS, cell_key, experiment_parser
    from experiments.ladder import RANK, pm_key, rm_key

    parser = experiment_parser("test")
    defaults = parser.parse_args([])
    assert {k: getattr(defaults, k) for k in LATER_SETTINGS} == LATER_SETTINGS  # the former fixed values
    changed = parser.parse_args(["--sft-lr", "1e-5", "--rm-lr", "2e-5", "--ppo-lr", "1.4e-5",
                                 "--max-instruction-tokens", "512", "--max-response-tokens", "256"])
    for args in (defaults, changed):  # the ladder flags exp_saturation.py adds
        args.pm_examples, args.rm_pairs, args.rm_backbone, args.sft_epochs, args.rm_epochs = [0, 4], [0, 4], RANK, 1, 1
    # At the defaults a key is what it was when these were constants, so cells and models saved then stay valid.
    for key in (cell_key(defaults, "x"), pm_key(defaults, 4, 0), rm_key(defaults, 1, 0)):
        assert not set(LATER_SETTINGS) & set(key)
    assert {k: cell_key(changed, "x")[k] for k in LATER_SETTINGS} == {
        "sft_lr": 1e-5, "rm_lr": 2e-5, "ppo_lr": 1.4e-5, "max_instruction_tokens": 512, "max_response_tokens": 256}
    assert pm_key(changed, 4, 0)["sft_lr"] == 1e-5 and "rm_lr" not in pm_key(changed, 4, 0)
    assert rm_key(changed, 1, 0)["rm_lr"] == 2e-5 and rm_key(changed, 1, 0)["backbone"]["sft_lr"] == 1e-5
    assert rm_key(changed, 1, 0)["max_response_tokens"] == 256


CONFIG_DIR = SCRIPTS / "experiments" / "configs"
SHARED_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if "_" not in p.stem)  # demo.yaml, paper.yaml
OWN_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*_*.yaml"))  # <driver>_<demo|paper>.yaml


def printed_config(name: str, configs: list[Path], monkeypatch, capsys) -> dict:
    """The settings ``exp_<name>.py --config ... --print_config`` would run with."""
    argv = [arg for config in configs for arg in ("--config", str(config))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        run_driver(name, argv, monkeypatch)
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", SHARED_CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("name", DRIVERS)
def test_shipped_experiment_config_parses(name, config, monkeypatch, capsys):
    printed = printed_config(name, [config], monkeypatch, capsys)
    assert {k: printed[k] for k in yaml.safe_load(config.read_text())} == yaml.safe_load(config.read_text())


def test_every_driver_config_belongs_to_a_driver_and_a_shared_config():
    assert {p.stem.rsplit("_", 1)[0] for p in OWN_CONFIGS} <= set(DRIVERS)
    assert {p.stem.rsplit("_", 1)[1] for p in OWN_CONFIGS} <= {p.stem for p in SHARED_CONFIGS}
    assert {p.name for p in OWN_CONFIGS} >= {"saturation_demo.yaml", "saturation_paper.yaml", "sanity_demo.yaml",
                                             "sanity_paper.yaml"}


@pytest.mark.parametrize("config", OWN_CONFIGS, ids=lambda p: p.name)
def test_a_drivers_own_config_parses_alone_and_over_the_shared_one(config, monkeypatch, capsys):
    name, flavour = config.stem.rsplit("_", 1)  # saturation_demo -> exp_saturation.py over demo.yaml
    shared, own = config.with_name(f"{flavour}.yaml"), yaml.safe_load(config.read_text())
    alone = printed_config(name, [config], monkeypatch, capsys)
    assert {k: alone[k] for k in own} == own
    layered = printed_config(name, [shared, config], monkeypatch, capsys)
    expected = {**yaml.safe_load(shared.read_text()), **own}  # the later file wins
    assert {k: layered[k] for k in expected} == expected


def test_data_selection_over_the_ladders_top_pair_reuses_its_models_and_notes_what_it_leaves_out(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    tiny = str(tiny_model_dir)
    common = ["--base", tiny, "--gold-rm", tiny, *TINY_SIZES, *LADDERS, "--ladder-top", "1", "--seeds", "0", "1",
              "--variants", "full", "seam_contrast", "seam_llm", "random"]
    run_driver("data_selection", ["--out", str(tmp_path / "first"), *common], monkeypatch)
    first_out = capsys.readouterr().out
    models = sorted(p.name for p in (tmp_path / "first" / "models").iterdir())
    # A second study reads the first one's ladder (as it would the saturation run's): nothing is trained again.
    run_driver("data_selection", ["--out", str(tmp_path / "second"), "--ladder-dir", str(tmp_path / "first"),
                                  *common], monkeypatch)
    second_out = capsys.readouterr().out
    assert "[ladder]" in first_out and "[ladder]" not in second_out and not (tmp_path / "second" / "models").exists()
    assert sorted(p.name for p in (tmp_path / "first" / "models").iterdir()) == models

    result = json.loads((tmp_path / "second" / "data_selection.json").read_text())
    assert "NOTE: seam_llm (SEAM_GPT) left out" in second_out and result["left_out"]  # never silently
    assert result["variants"] == ["full", "seam_contrast", "random"]
    (pair,) = result["pairs"]  # rank 1: the last rung of each ladder, the PM trained on 4 examples
    assert pair["pm_id"]["examples"] == 4 and pair["rm_id"]["pairs"] == 4
    assert Path(pair["pm"]).parent == Path(pair["rm"]).parent == tmp_path / "first" / "models"
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [(v, s) for v in result["variants"] for s in (0, 1)]
    runs = {(r["variant"], r["seed"]): r for r in result["runs"]}
    for row in result["rows"]:
        pruned = 0 if row["variant"] == "full" else 2  # 20% of 8 prompts
        assert row["prompts_trained_on"] == 8 - pruned
        assert all(len(runs[row["variant"], s]["pruned_ids"]) == pruned for s in (0, 1))
        if row["variant"] != "full":  # Δ: per-prompt differences to full of the same seed, pooled over seeds
            diffs = [a - b for s in (0, 1) for a, b in zip(runs[row["variant"], s]["q_pm_per_prompt"],
                                                           runs["full", s]["q_pm_per_prompt"])]
            assert row["delta_vs_full"] == pytest.approx(mean_ci(diffs).to_dict())
    assert (tmp_path / "second" / "data_selection.png").read_bytes()[:4] == b"\x89PNG"


def test_overlap_of_rank_matched_ladder_pairs_is_table_3_of_the_top_seam_sets(tiny_model_dir, tmp_path, monkeypatch,
                                                                              capsys):
    tiny = str(tiny_model_dir)
    argv = ["--out", str(tmp_path), "--base", tiny, *TINY_SIZES, *LADDERS, "--ladder-ranks", "1", "2"]
    run_driver("overlap", argv, monkeypatch)
    result = json.loads((tmp_path / "overlap.json").read_text())
    assert result["names"] == ["rank 1", "rank 2"] and result["gold_rm"] is None  # no gold RM trained for this
    assert result["models"]["rank 1"]["pm_id"]["examples"] == 4 and result["models"]["rank 1"]["rm_id"]["pairs"] == 4
    assert result["models"]["rank 2"]["pm"] == tiny and result["models"]["rank 2"]["rm_id"]["pairs"] == 0

    def top(scores: dict[str, float]) -> set[int]:  # the largest 20% of 8 by SEAM, ties to the smaller id
        return {int(i) for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], int(kv[0])))[:2]}

    one, two = top(result["scores"]["rank 1"]), top(result["scores"]["rank 2"])
    assert [set(s) for s in result["selected"].values()] == [one, two]
    overlap = len(one & two) / 2
    assert result["overlap_matrix"] == [[1.0, overlap], [overlap, 1.0]]
    table = (tmp_path / "overlap.md").read_text()
    assert f"| rank 2 | {overlap:.0%} | - |" in table and "| rank 1 | - |  |" in table  # lower triangle, as Table 3
    run_driver("overlap", argv, monkeypatch)  # a rerun scores nothing again
    assert capsys.readouterr().out.count("saved result reused") == 2


def test_table_3_layout_is_the_papers_lower_triangle(scripts):
    from exp_overlap import table_3

    names = ["rank 1", "rank 3", "rank 5"]
    matrix = [[1.0, 0.72, 0.64], [0.72, 1.0, 0.69], [0.64, 0.69, 1.0]]  # the paper's Table 3
    lines = table_3(names, matrix).splitlines()
    assert lines[0] == "| model combo | rank 1 | rank 3 | rank 5 |"
    assert lines[2:] == ["| rank 1 | - |  |  |", "| rank 3 | 72% | - |  |", "| rank 5 | 64% | 69% | - |"]


def test_scaling_match_rate_is_the_share_of_reference_preferences_the_rank_1_rm_shares(tiny_model_dir, tmp_path,
                                                                                       monkeypatch, scripts):
    import exp_scaling

    def answers(args, path, instructions):  # the tiny model answers only newlines: make the two PMs differ
        word = "trained" if "/models/pm-" in path else "base"
        return [f"{word} answer " * (1 + i % 3) + instruction[:12] for i, instruction in enumerate(instructions)]

    monkeypatch.setattr(exp_scaling, "answers", answers)
    tiny = str(tiny_model_dir)
    monkeypatch.setattr(sys, "argv", ["exp_scaling.py", "--out", str(tmp_path), "--base", tiny, "--gold-rm", tiny,
                                      *TINY_SIZES, *LADDERS, "--sizes", "first:1", tiny])
    exp_scaling.main()  # the gold RM (a random head) judges: continuous rewards
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [r["size"] for r in rows] == ["first:1", tiny]
    truncated = json.loads((Path(rows[0]["base"]) / "config.json").read_text())
    assert truncated["num_hidden_layers"] == 1 and rows[0]["parameters"] < rows[1]["parameters"]
    for row in rows:
        assert row["models"]["weak_pm"] == row["base"]  # rank 2 of the [0, 4] ladder: the base model itself
        decided = [(ra, rb, ma, mb) for ra, rb, ma, mb in zip(row["reference_a"], row["reference_b"], row["rm_a"],
                                                              row["rm_b"]) if ra != rb]
        agree = sum((ra > rb and ma > mb) or (rb > ra and mb > ma) for ra, rb, ma, mb in decided)
        assert row["pairs_compared"] == len(decided) > 0 and row["match_rate"] == pytest.approx(agree / len(decided))
        assert 0.0 <= row["q_rm"] <= 1.0 and row["q_pm"]["n"] == 2
    assert "| first:1 |" in (tmp_path / "scaling.md").read_text()


def test_parameter_count_counts_tied_embeddings_once(scripts, tiny_model_dir):
    from transformers import AutoModelForCausalLM
    from exp_scaling import parameter_count

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    unique = {id(p): p.numel() for p in model.parameters()}  # what the loaded model really holds
    assert parameter_count(str(tiny_model_dir)) == sum(unique.values())


def test_data_selection_ladder_pairs_are_rank_matched_or_the_grid(scripts, monkeypatch):
    import argparse
    import exp_data_selection

    monkeypatch.setattr(exp_data_selection, "ensure_pm", lambda args, k, seed: f"pm{k}")
    monkeypatch.setattr(exp_data_selection, "ensure_rm", lambda args, rung, seed: f"rm{args.rm_pairs[rung]}")
    args = argparse.Namespace(pm_examples=[0, 10, 20, 30], rm_pairs=[0, 5, 6, 7], rm_backbone="rank", ladder_top=2,
                              ladder_seed=0, ladder_pairs="matched", base="b", sft_data="d", preference_data="p",
                              sft_epochs=1, rm_epochs=1, lora_layers=2, batch_size=4, precision="32-true")
    matched = [(p.pm, p.rm) for p in exp_data_selection.model_pairs(args)]
    assert matched == [("pm30", "rm7"), ("pm20", "rm6")]  # rank 1 = the last rung, then rank 2
    args.ladder_pairs = "grid"
    grid = [(p.pm, p.rm) for p in exp_data_selection.model_pairs(args)]
    assert grid == [("pm30", "rm7"), ("pm30", "rm6"), ("pm20", "rm7"), ("pm20", "rm6")]
