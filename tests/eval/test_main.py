"""``python -m seam_lightning.eval``: every command end to end on tiny models and small JSONL files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openai_server import MODEL, FakeOpenAI
from seam_lightning.eval.__main__ import main
from seam_lightning.eval.files import parse_fields
from seam_lightning.files import write_json
from seam_lightning.eval.quality import preference_accuracy
from seam_lightning.models.loading import load_reward_model, load_tokenizer
from tiny import CORPUS, build_tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    {"instruction": "What does `json.dumps` do?", "chosen": "Serialize obj to a JSON formatted str.",
     "rejected": "The quick brown fox."},
    {"instruction": "Explain what `os.path.join` is for.", "chosen": "Join two or more pathname components.",
     "rejected": "Return the sum of the values."},
    {"instruction": "Return the sum", "chosen": "Return the sum of the values.", "rejected": "jumps over the lazy dog"},
    {"instruction": "Split a pathname.", "chosen": "Split a pathname into a pair (head, tail).",
     "rejected": "Serialize obj."},
    {"instruction": "Never read: --limit 4", "chosen": "x", "rejected": "y"},
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def save_reward_model(source: Path, out: Path, seed: int) -> str:
    torch.manual_seed(seed)  # the new score head
    load_reward_model(str(source)).save_pretrained(out)
    load_tokenizer(str(source)).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("eval-cli")
    policy_b = build_tiny_model_dir(root / "policy-b", seed=1)
    return {
        "pairs": write_jsonl(root / "pairs.jsonl", PAIRS),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": text[:30]} for text in CORPUS] + [{"prompt": "?"}]),
        "policy_a": str(tiny_model_dir),
        "policy_b": str(policy_b),
        "rm": save_reward_model(tiny_model_dir, root / "rm", seed=0),
        "gold": save_reward_model(policy_b, root / "gold", seed=1),
    }


def run(argv: list[str], tmp_path: Path, capsys) -> tuple[dict, str]:
    out = tmp_path / "result.json"
    assert main([*argv, "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.endswith(f"-> {out}") and "\n" not in printed  # one summary line
    assert not list(tmp_path.glob(".result.json.*"))  # no temporary file left behind
    return json.loads(out.read_text()), printed


GENERATION = ["--fields", "instruction=prompt", "--limit", "4", "--max-new-tokens", "6"]


def test_rm_accuracy(files, tmp_path, capsys):
    result, printed = run(["rm-accuracy", "--reward-model", files["rm"], "--data", files["pairs"], "--limit", "4",
                           "--batch-size", "3"], tmp_path, capsys)
    assert result["command"] == "rm-accuracy" and result["n"] == 4 and 0.0 <= result["accuracy"] <= 1.0
    tokenizer, model = load_tokenizer(files["rm"]), load_reward_model(files["rm"])
    rows = PAIRS[:4]
    expected = preference_accuracy(model, tokenizer, *([r[k] for r in rows] for k in ("instruction", "chosen", "rejected")),
                                   progress=False)
    assert result["accuracy"] == pytest.approx(expected)
    assert result["settings"]["reward_model"] == files["rm"] and result["settings"]["limit"] == 4
    assert printed.startswith(f"rm-accuracy: {expected:.4f} on 4 pairs")


def test_gold_reward(files, tmp_path, capsys):
    result, printed = run(["gold-reward", "--policy", files["policy_a"], "--gold-reward-model", files["gold"],
                           "--data", files["prompts"], *GENERATION], tmp_path, capsys)
    assert result["n"] == 4 and result["ci_low"] <= result["mean_reward"] <= result["ci_high"]
    assert result["confidence"] == 0.95 and len(result["examples"]) == 4
    assert [e["instruction"] for e in result["examples"]] == [text[:30] for text in CORPUS[:4]]
    assert result["settings"]["max_new_tokens"] == 6 and printed.startswith("gold-reward: mean ")


def test_judge_against_a_local_server(files, tmp_path, capsys):
    replies = iter(["[[8]]", "Rating: 6", "no verdict", "[[9]]"] * 2)
    with FakeOpenAI(reply=lambda request: next(replies)) as server:
        argv = ["judge", "--policy", files["policy_a"], "--data", files["prompts"], *GENERATION,
                "--base-url", server.url, "--model", MODEL, "--cache", str(tmp_path / "judge.jsonl"),
                "--judge-workers", "1"]
        result, printed = run(argv, tmp_path, capsys)
        assert result["n"] == 4 and result["n_rated"] == 3 and result["n_unparsable"] == 1
        assert result["mean_rating"] == pytest.approx(23 / 3) and result["judge_requests"] == 4
        assert "1 of 4 unrated" in printed
        again, _ = run(argv, tmp_path, capsys)  # a rerun: all from the cache
        assert len(server.requests) == 4 and again["judge_cache_hits"] == 4 and again["judge_requests"] == 0
        assert again["mean_rating"] == result["mean_rating"]


def test_match_rate_with_a_gold_reward_model(files, tmp_path, capsys):
    common = ["match-rate", "--policy-a", files["policy_a"], "--policy-b", files["policy_b"],
              "--reward-model", files["rm"], "--data", files["prompts"], *GENERATION]
    result, printed = run([*common, "--gold-reward-model", files["gold"]], tmp_path, capsys)
    assert result["n"] == 4 and result["n_pairs"] + result["n_ties_excluded"] == 4
    assert result["reference"] == "gold-reward-model" and printed.startswith("match-rate: ")
    assert result["match_rate"] is None or 0.0 <= result["match_rate"] <= 1.0
    # The RM as its own reference agrees on every pair it does not tie.
    itself, _ = run([*common, "--gold-reward-model", files["rm"]], tmp_path, capsys)
    assert itself["match_rate"] in (1.0, None)


@pytest.mark.parametrize("argv, message", [
    (["rm-accuracy", "--reward-model", "x", "--data", "/no/such/file.jsonl"], "no such file"),
    (["gold-reward", "--policy", "x", "--gold-reward-model", "y", "--data", "PAIRS", "--fields", "instruction"],
     "bad field mapping"),
    (["gold-reward", "--policy", "x", "--gold-reward-model", "y", "--data", "PAIRS", "--fields", "instruction=nope"],
     "missing field 'nope'"),
    (["match-rate", "--policy-a", "x", "--policy-b", "y", "--reward-model", "z", "--data", "PAIRS"],
     "needs one reference"),
    (["judge", "--policy", "x", "--data", "PAIRS"], "the judge needs --model"),
])
def test_errors_exit_2_with_a_message(files, tmp_path, capsys, argv, message):
    argv = [files["pairs"] if a == "PAIRS" else a for a in argv]
    assert main([*argv, "--output", str(tmp_path / "r.json"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_bad_numbers_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["rm-accuracy", "--reward-model", "x", "--limit", "0", "--output", str(tmp_path / "r.json")])
    assert exit_info.value.code == 2


def test_module_entry_point(files, tmp_path):
    out = tmp_path / "sub.json"
    proc = subprocess.run(
        [sys.executable, "-m", "seam_lightning.eval", "rm-accuracy", "--reward-model", files["rm"],
         "--data", files["pairs"], "--limit", "2", "--output", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("rm-accuracy: ") and json.loads(out.read_text())["n"] == 2


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "deep" / "r.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")})  # not JSON: the old result stays whole
    assert json.loads(path.read_text()) == {"a": 2} and [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_parse_fields():
    assert parse_fields(None) == {} and parse_fields("") == {}
    assert parse_fields(" instruction=prompt , chosen=good,") == {"instruction": "prompt", "chosen": "good"}
    with pytest.raises(ValueError, match="canonical=column"):
        parse_fields("instruction=")


def test_attention_implementation_reaches_the_evaluated_model(files, tmp_path, capsys, monkeypatch):
    import seam_lightning.eval.commands as commands

    seen = []
    real = commands.load_reward_model
    monkeypatch.setattr(commands, "load_reward_model",
                        lambda *a, **kw: seen.append(kw["attn_implementation"]) or real(*a, **kw))
    eager, _ = run(["rm-accuracy", "--reward-model", files["rm"], "--data", files["pairs"], "--limit", "4",
                    "--attn-implementation", "eager"], tmp_path, capsys)
    sdpa, _ = run(["rm-accuracy", "--reward-model", files["rm"], "--data", files["pairs"], "--limit", "4"],
                  tmp_path, capsys)
    assert seen == ["eager", "sdpa"] and eager["settings"]["attn_implementation"] == "eager"
    assert eager["accuracy"] == pytest.approx(sdpa["accuracy"])  # the same model either way
