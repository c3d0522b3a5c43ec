import json
import re

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from seam_lightning.data import DataError, DataSource, RLHFDataModule
from seam_lightning.models import load_tokenizer


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DataSource(str(path))


@pytest.fixture
def sources(tmp_path):
    sft = _write_jsonl(tmp_path / "sft.jsonl", [
        {"instruction": f"What does `f{i}` do?", "response": f"Return the value {i}."} for i in range(6)
    ])
    prefs = _write_jsonl(tmp_path / "prefs.jsonl", [
        {"q": f"What does `f{i}` do?", "good": f"Return {i}.", "bad": "Split a pathname."} for i in range(4)
    ])
    rl = _write_jsonl(tmp_path / "rl.jsonl", [
        {"instruction": f"Explain `g{i}`.", "response": f"Join {i} paths."} for i in range(5)
    ])
    prefs = DataSource(prefs.path, fields={"instruction": "q", "chosen": "good", "rejected": "bad"})
    return {"sft": sft, "preference": prefs, "rl": rl}


def _datamodule(sources, **kwargs):
    return RLHFDataModule(sft=sources["sft"], sft_val=None, preference=sources["preference"], preference_val=None,
                          rl=sources["rl"], rl_val=None, batch_size=2, **kwargs)


@pytest.mark.parametrize("stage,keys", [
    ("sft", {"input_ids", "attention_mask", "labels", "ids"}),
    ("preference", {"input_ids", "attention_mask", "ids"}),
    ("rl", {"input_ids", "attention_mask", "ids", "instruction", "response"}),
])
def test_each_stage_gets_its_loader(sources, tiny_model_dir, stage, keys):
    dm = _datamodule(sources)
    dm.connect(load_tokenizer(str(tiny_model_dir)), stage)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == keys
    rows = 4 if stage == "preference" else 2  # chosen and rejected of 2 pairs
    assert batch["input_ids"].shape[0] == rows
    assert dm.val_dataloader() == []


def test_truncation_is_counted_and_drop_removes_examples(sources, tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    dm = _datamodule(sources, max_response_tokens=3)
    dm.connect(tok, "sft")
    assert len(dm.examples("sft")) == 6
    assert dm.stats["sft.response_truncated"] == 6
    dropper = _datamodule(sources, max_response_tokens=3, overlong="drop")
    dropper.connect(tok, "sft")
    with pytest.raises(DataError, match="every example was dropped as over-long"):
        dropper.examples("sft")
    assert dropper.stats["sft.dropped"] == 6


def test_rl_ids_are_stable_and_active_set_filters_loader(sources, tiny_model_dir):
    dm = _datamodule(sources)
    dm.connect(load_tokenizer(str(tiny_model_dir)), "rl")
    assert [e["id"] for e in dm.examples("rl")] == [0, 1, 2, 3, 4]
    dm.set_active_rl_ids([1, 3])
    seen = [i for batch in dm.train_dataloader() for i in batch["ids"].tolist()]
    assert sorted(seen) == [1, 3]
    with pytest.raises(ValueError, match="unknown RL example ids"):
        dm.set_active_rl_ids([99])
    dm.set_active_rl_ids([])
    with pytest.raises(DataError, match="no active RL examples left"):
        dm.train_dataloader()


def test_added_examples_reach_loader_and_survive_state_dict(sources, tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    dm = _datamodule(sources)
    dm.connect(tok, "preference")
    new_ids = dm.add_examples("preference", [{"instruction": "Explain `g1`.", "chosen": "Join 1 paths.", "rejected": "Return 3."}])
    assert new_ids == [4]
    added = [e for e in dm.examples("preference") if e["augmented"]]
    assert [e["id"] for e in added] == [4] and added[0]["chosen"] == "Join 1 paths."
    dm.set_active_rl_ids([0, 2])

    resumed = _datamodule(sources)
    resumed.load_state_dict(dm.state_dict())
    resumed.connect(tok, "preference")
    assert [e["id"] for e in resumed.examples("preference") if e["augmented"]] == [4]
    assert resumed.active_rl_ids is None  # SeamCallback owns the active set and applies it on resume
    with pytest.raises(DataError, match="augmented preference example 0: missing or empty field"):
        dm.add_examples("preference", [{"instruction": "x", "chosen": "", "rejected": "y"}])


def test_bad_record_error_surfaces_from_setup(tmp_path, tiny_model_dir):
    bad = tmp_path / "sft.jsonl"
    bad.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "a"}\n')
    dm = RLHFDataModule(sft=DataSource(str(bad)), sft_val=None)
    dm.connect(load_tokenizer(str(tiny_model_dir)), "sft")
    with pytest.raises(DataError, match=r"sft.jsonl line 2: missing field 'response'"):
        dm.setup("fit")


def test_setup_without_tokenizer_is_a_clear_error(sources):
    with pytest.raises(RuntimeError, match="call connect"):
        _datamodule(sources).setup("fit")


def test_augmented_sources_are_appended_marked_and_loaded_once(sources, tiny_model_dir, tmp_path):
    extra = _write_jsonl(tmp_path / "sft_aug.jsonl", [
        {"instruction": "What does `json.loads` do?", "response": "Deserialize s."},
        {"instruction": "What does `os.getcwd` do?", "response": "Return the current directory."},
    ])
    dm = _datamodule(sources, sft_augmented=extra)
    dm.connect(load_tokenizer(str(tiny_model_dir)), "sft")
    dm._load_augmented_sources()
    dm._load_augmented_sources()  # setup runs again for validate/test: nothing is added twice
    examples = dm.examples("sft")
    assert len(examples) == 8 and [e["augmented"] for e in examples] == [False] * 6 + [True] * 2
    assert [e["id"] for e in examples[-2:]] == [6, 7]  # ids continue after the split's own
    assert dm.added["sft"][0].origin.startswith(str(tmp_path / "sft_aug.jsonl"))
    # The checkpointed state carries them; a restored module does not load the file again.
    restored = _datamodule(sources, sft_augmented=extra)
    restored.load_state_dict(dm.state_dict())
    restored._load_augmented_sources()
    assert [r.text for r in restored.added["sft"]] == [r.text for r in dm.added["sft"]]


def test_examples_can_be_added_to_a_set_the_run_does_not_load(tiny_model_dir):
    # A PPO run has no preference source, yet augmentation adds preference pairs for the RM stage.
    dm = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None, rl=None, rl_val=None)
    ids = dm.add_examples("preference", [{"instruction": "Q?", "chosen": "Right.", "rejected": "Wrong."}])
    assert ids == [0] and dm.added["preference"][0].text["chosen"] == "Right."
    with pytest.raises(DataError, match="missing or empty field"):
        dm.add_examples("sft", [{"instruction": "Q?", "response": "  "}])


def test_drop_last_drops_only_a_partial_training_batch(sources, tiny_model_dir):
    dm = _datamodule(sources, drop_last=True)  # 6 SFT examples, batch 2 -> 3 full batches
    dm.connect(load_tokenizer(str(tiny_model_dir)), "rl")  # 5 RL examples -> 2 full batches, 1 dropped
    assert [len(b["ids"]) for b in dm.train_dataloader()] == [2, 2]
    dm.set_active_rl_ids([0])  # one example: no full batch, a clear error rather than empty epochs
    with pytest.raises(DataError, match="no full batch of 2"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------- prepare_data


def test_prepare_data_builds_the_demo_files_into_an_empty_cache(monkeypatch, tmp_path, tiny_model_dir):
    from seam_lightning.data.demo import DEMO_SPLITS, DEMO_VERSION

    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path / "cache"))
    dm = RLHFDataModule()  # every default source is a demo:// split
    dm.prepare_data()
    root = tmp_path / "cache" / DEMO_VERSION
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{s}.jsonl" for s in DEMO_SPLITS)
    # setup (on every rank) reads those files; it builds nothing again.
    stamps = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    dm.connect(load_tokenizer(str(tiny_model_dir)), "rl")
    dm.setup("fit")
    assert len(dm.records("rl")) == 500 and {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == stamps


def test_setup_without_prepare_data_still_builds_the_demo_files(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path / "cache"))
    dm = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None, rl_val=None)
    dm.connect(load_tokenizer(str(tiny_model_dir)), "rl")
    dm.setup("fit")  # no Trainer, so nobody called prepare_data
    assert len(dm.records("rl")) == 500


def test_prepare_data_builds_nothing_for_plain_files_or_a_bad_demo_name(monkeypatch, tmp_path, sources):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path / "cache"))
    _datamodule(sources).prepare_data()
    RLHFDataModule(sft=DataSource("demo://nope"), sft_val=None, preference=None, preference_val=None,
                   rl=None, rl_val=None).prepare_data()  # the bad name is setup's error to report
    assert not (tmp_path / "cache").exists()


def test_prepare_data_builds_the_bundled_models_of_module_and_callbacks(monkeypatch, sources):
    from types import SimpleNamespace

    from seam_lightning.models import bundled

    built = []
    monkeypatch.setattr(bundled, "bundled_model_dir", built.append)  # dequantising takes ~20 s: record instead
    dm = _datamodule(sources)
    module = SimpleNamespace(hparams={"model": "bundled:SmolLM2-135M-Instruct", "learning_rate": 1e-4})
    callback = SimpleNamespace(reference_policy="bundled:SmolLM2-135M-Instruct", reward_model="/runs/rm",
                               encoder="bundled:all-MiniLM-L6-v2")  # an encoder is read from its package
    dm.trainer = SimpleNamespace(lightning_module=module, callbacks=[callback])
    dm.prepare_data()
    assert built == ["bundled:SmolLM2-135M-Instruct"]
    dm.trainer = None
    dm.prepare_data()  # outside a Trainer only the data module's own sources count
    assert built == ["bundled:SmolLM2-135M-Instruct"]


# ----------------------------------------------------------------------------- resuming on the same RL data


class _RLLearner(LightningModule):
    """The least a module needs to train on the RL loader under a Trainer: a tokenizer, the stage, one weight."""

    data_stage = "rl"

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return self.weight * batch["input_ids"].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_rl(datamodule, tokenizer, tmp_path, max_steps, ckpt_path=None):
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_RLLearner(tokenizer), datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def test_resuming_on_changed_rl_data_is_refused_unless_allowed(sources, tiny_model_dir, tmp_path):
    tok = load_tokenizer(str(tiny_model_dir))
    first = _datamodule(sources)
    trainer = _fit_rl(first, tok, tmp_path, max_steps=1)
    checkpoint = tmp_path / "rl.ckpt"
    trainer.save_checkpoint(checkpoint)
    assert _fit_rl(_datamodule(sources), tok, tmp_path, max_steps=2, ckpt_path=checkpoint).global_step == 2

    rl_path = sources["rl"].path
    _write_jsonl(tmp_path / "rl.jsonl", [  # rebuilt: same ids, one text changed
        {"instruction": f"Explain `g{i}`.", "response": f"Join {i} paths." if i else "Split a path."} for i in range(5)
    ])
    with pytest.raises(ValueError, match=rf"RL data set differs.*checkpoint {re.escape(repr(rl_path))}.*"
                                         "allow_changed_data=True"):
        _fit_rl(_datamodule(sources), tok, tmp_path, max_steps=2, ckpt_path=checkpoint)
    allowed = _datamodule(sources, allow_changed_data=True)
    with pytest.warns(UserWarning, match="Resuming anyway"):
        assert _fit_rl(allowed, tok, tmp_path, max_steps=2, ckpt_path=checkpoint).global_step == 2
    assert "allow_changed_data" not in allowed.hparams  # the override never sticks to a checkpoint


def test_the_rl_fingerprint_is_recorded_only_when_an_rl_set_was_read(sources, tiny_model_dir, tmp_path):
    dm = _datamodule(sources)
    dm.connect(load_tokenizer(str(tiny_model_dir)), "sft")
    dm.setup("fit")
    state = dm.state_dict()
    assert state["rl_data"] is None  # an SFT run never read D_rl: nothing in its state refers to it
    _write_jsonl(tmp_path / "rl.jsonl", [{"instruction": "Other.", "response": "Data."}])
    _datamodule(sources).load_state_dict(state)  # so changing D_rl since is no concern

    older = {k: v for k, v in state.items() if k != "rl_data"}  # a checkpoint from before fingerprints
    resumed = _datamodule(sources)
    resumed.records("rl")
    with pytest.warns(UserWarning, match="records no fingerprint of its RL data set"):
        resumed.load_state_dict(older)


def test_rl_fingerprint_covers_ids_and_texts_not_their_order():
    from seam_lightning.data.datamodule import rl_data_fingerprint
    from seam_lightning.data.records import Record

    records = [Record(i, {"instruction": f"Q{i}", "response": f"A{i}"}, f"file #{i}") for i in range(3)]
    base = rl_data_fingerprint(records)
    assert rl_data_fingerprint(records[::-1]) == base
    assert rl_data_fingerprint([Record(7, r.text, r.origin) if r.id == 0 else r for r in records]) != base
    assert rl_data_fingerprint([Record(0, {"instruction": "Q0", "response": "B"}, "x"), *records[1:]]) != base
