"""`seam-lightning score`: the command as users run it, on tiny models, over the formats users have."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from seam_lightning.cli import main
from seam_lightning.models.loading import load_reward_model, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["json.loads", "json.dump", "os.path.join", "os.path.split", "re.compile", "math.sqrt",
         "random.choice", "shutil.copy", "pickle.dumps", "base64.b64encode", "itertools.chain", "functools.partial"]


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny reward model with a fixed (saved) head, so every process scores with the same one."""
    out = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    load_reward_model(str(tiny_model_dir)).save_pretrained(out)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(out)
    return out


def _conversational_rows(n: int) -> list[dict]:
    """TRL's conversational prompt/completion rows, with an extra column the split must keep."""
    return [{"prompt": [{"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": f"What does `{NAMES[i % len(NAMES)]}` do? ({i})"}],
             "completion": [{"role": "assistant", "content": f"It is {NAMES[i % len(NAMES)]}, case {i}."}],
             "source": f"row-{i}"} for i in range(n)]


def _corpus(path: Path) -> Path:
    rows = [{"instruction": f"What does `{m}` do?", "response": f"It is {m}: a standard library function."}
            for m in NAMES]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score_args(data: Path, policy: Path, reward_model: Path, out: Path, corpus: Path, *extra: str) -> list[str]:
    return ["score", f"--data.path={data}", f"--policy={policy}", f"--reward_model={reward_model}",
            "--source.class_path=seam_lightning.ContrastSource", f"--source.init_args.corpus.path={corpus}",
            "--source.init_args.band=[0.3, 0.99]", f"--source.init_args.cache_dir={out / 'contrast'}",
            "--num_candidates=3", "--fraction=0.25", f"--output_dir={out}", "--progress=false",
            "--trainer.accelerator=cpu", *extra]


def _check_split(out: Path, input_rows: list[dict], kept: list[dict], pruned: list[dict], fraction: float) -> None:
    """kept ∪ pruned is the input, each in input order with its columns; pruned is the largest SEAM (ties by id)."""
    assert sorted(kept + pruned, key=input_rows.index) == input_rows
    assert kept == [r for r in input_rows if r in kept] and pruned == [r for r in input_rows if r in pruned]
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert [s["id"] for s in scores] == list(range(len(input_rows)))
    ranked = sorted(scores, key=lambda s: (-s["seam"], s["id"]))
    expected = sorted(s["id"] for s in ranked[:round(fraction * len(input_rows))])
    assert sorted(input_rows.index(r) for r in pruned) == expected
    assert any(s["candidates"] for s in scores)  # the candidates' texts are in the scores file
    report = (out / "report.md").read_text()
    assert "## The 20 prompts with the largest SEAM" in report and "Misjudgement rate" in report
    assert (out / "seam_distribution.png").read_bytes()[:4] == b"\x89PNG"


def test_score_splits_a_conversational_jsonl_in_its_own_format(tiny_model_dir, reward_model_dir, tmp_path, capsys):
    rows = _conversational_rows(24)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    main(_score_args(data, tiny_model_dir, reward_model_dir, out, _corpus(tmp_path / "corpus.jsonl")))

    kept = [json.loads(line) for line in (out / "kept.jsonl").read_text().splitlines()]
    pruned = [json.loads(line) for line in (out / "pruned.jsonl").read_text().splitlines()]
    assert len(pruned) == 6
    _check_split(out, rows, kept, pruned, 0.25)
    # The kept lines are the input's own bytes.
    assert set((out / "kept.jsonl").read_text().splitlines()) <= set(data.read_text().splitlines())
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[seam-lightning score] 24 prompts") and "pruned 6 by seam" in line

    # A rerun reuses every saved score (the progress store) and writes the same split.
    main(_score_args(data, tiny_model_dir, reward_model_dir, out, _corpus(tmp_path / "corpus.jsonl")))
    assert "(24 from saved progress)" in capsys.readouterr().out
    assert [json.loads(x) for x in (out / "pruned.jsonl").read_text().splitlines()] == pruned


def test_score_splits_a_parquet_file_keeping_its_schema(tiny_model_dir, reward_model_dir, tmp_path):
    rows = [{"question": f"What does `{NAMES[i % len(NAMES)]}` do? ({i})", "id": 100 + i,
             "answer": f"It is {NAMES[i % len(NAMES)]}, case {i}.", "score": float(i)} for i in range(20)]
    data = tmp_path / "prompts.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    out = tmp_path / "out"
    main(_score_args(data, tiny_model_dir, reward_model_dir, out, _corpus(tmp_path / "corpus.jsonl"),
                     "--data.fields={instruction: question, response: answer}", "--data.id_field=id"))
    kept_table = pq.read_table(out / "kept.parquet")
    assert kept_table.schema.equals(pq.read_table(data).schema)
    kept, pruned = kept_table.to_pylist(), pq.read_table(out / "pruned.parquet").to_pylist()
    assert len(pruned) == 5
    # Ids come from the id column: the scores file names them, the split follows them.
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert [s["id"] for s in scores] == [r["id"] for r in rows]
    ranked = sorted(scores, key=lambda s: (-s["seam"], s["id"]))
    assert sorted(r["id"] for r in pruned) == sorted(s["id"] for s in ranked[:5])
    assert sorted(kept + pruned, key=rows.index) == rows


def test_bad_data_file_is_one_line_and_exit_2(tiny_model_dir, reward_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "fine", "completion": "fine"}) + "\n" + json.dumps({"prompt": "no answer"}) + "\n")
    args = _score_args(data, tiny_model_dir, reward_model_dir, tmp_path / "out", _corpus(tmp_path / "corpus.jsonl"))
    proc = subprocess.run([sys.executable, "-m", "seam_lightning", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()
    assert error[-2].startswith("seam-lightning: error: ") and f"{data} line 2" in error[-2]
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "seam_lightning", *args, "--debug"], capture_output=True,
                           text=True, timeout=300, cwd=ROOT)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_score_under_two_process_ddp_equals_one_process(tiny_model_dir, reward_model_dir, tmp_path):
    rows = _conversational_rows(20)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = _corpus(tmp_path / "corpus.jsonl")
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"out{processes}"
        args = _score_args(data, tiny_model_dir, reward_model_dir, out, corpus, f"--trainer.devices={processes}",
                           *(["--trainer.strategy=ddp"] if processes > 1 else []))
        proc = subprocess.run([sys.executable, "-m", "seam_lightning", *args], capture_output=True, text=True,
                              timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("[seam-lightning score]") == 1  # one summary, from rank 0
        outputs[processes] = out
    one, two = (pq.read_table(outputs[p] / "scores.parquet").to_pylist() for p in (1, 2))
    assert [s["id"] for s in one] == [s["id"] for s in two]
    for a, b in zip(one, two):
        assert a["seam"] == pytest.approx(b["seam"], abs=1e-6) and a["selected"] == b["selected"]
    assert (outputs[1] / "pruned.jsonl").read_text() == (outputs[2] / "pruned.jsonl").read_text()


def test_shipped_score_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--config", str(ROOT / "seam_lightning" / "configs" / "score" / "demo.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path: seam_lightning.ContrastSource" in capsys.readouterr().out
