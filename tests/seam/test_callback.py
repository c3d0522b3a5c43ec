import json

import pyarrow.parquet as pq
import pytest
import torch
from doubles import ListSource, RLConsumer, record_frozen_weight_swaps
from lightning.pytorch import Trainer

from seam_lightning import DataSource, RLHFDataModule, SeamCallback


@pytest.fixture
def rl_data(tmp_path):
    rows = [{"instruction": f"Explain `mod.f{i}`.", "response": f"Return the value {i}."} for i in range(10)]
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = {r["instruction"]: [f"Split {i} paths.", "Join two paths.", f"The lazy dog {i}."] for i, r in enumerate(rows)}
    return path, table


def _datamodule(path):
    return RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None,
                          rl=DataSource(str(path)), rl_val=None, batch_size=3)


def _trainer(tmp_path, epochs, callback, **kwargs):
    return Trainer(accelerator="cpu", max_epochs=epochs, reload_dataloaders_every_n_epochs=1, callbacks=[callback],
                   logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                   **kwargs)


def test_prune_scores_every_prompt_and_shrinks_the_loader(tiny_model_dir, rl_data, tmp_path):
    path, table = rl_data
    torch.manual_seed(0)
    callback = SeamCallback(ListSource(table), fraction=0.3, num_candidates=2, every_n_epochs=1,
                            reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir),
                            scores_path=str(tmp_path / "scores-{epoch}.parquet"), progress=False)
    module, dm = RLConsumer(str(tiny_model_dir)), _datamodule(path)
    _trainer(tmp_path, 2, callback, enable_checkpointing=False).fit(module, datamodule=dm)

    assert sorted(callback.scores) == list(range(10))
    expected = sorted(callback.scores, key=lambda i: (-callback.scores[i], i))[:3]
    assert callback.pruned_ids == expected
    assert callback.active_ids == sorted(set(range(10)) - set(expected))
    # Scored at fit start, so the very first epoch already trains on the active 7 only.
    assert sorted(module.seen[0]) == callback.active_ids and sorted(module.seen[1]) == callback.active_ids
    # Scored at fit start only: after epoch 0 the frozen models, the source and D_rl are unchanged,
    # so the rescoring is skipped (and none follows the last epoch, which nothing would train on).
    assert callback.rescorings == 1

    table_out = pq.read_table(tmp_path / "scores-0.parquet").to_pylist()
    assert len(table_out) == 10 and sum(row["selected"] for row in table_out) == 3
    row = next(r for r in table_out if r["id"] == expected[0])
    assert row["seam"] == pytest.approx(callback.scores[expected[0]]) and len(row["candidate_rewards"]) == 2


def test_state_dict_round_trip_resumes_with_the_same_data(tiny_model_dir, rl_data, tmp_path):
    path, table = rl_data
    torch.manual_seed(0)
    first = SeamCallback(ListSource(table), fraction=0.5, num_candidates=3, every_n_epochs=0,
                         reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
    trainer = _trainer(tmp_path, 1, first)
    trainer.fit(RLConsumer(str(tiny_model_dir)), datamodule=_datamodule(path))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)

    source = ListSource(table)
    resumed = SeamCallback(source, fraction=0.5, num_candidates=3, every_n_epochs=0,
                           reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
    module, dm = RLConsumer(str(tiny_model_dir)), _datamodule(path)
    _trainer(tmp_path, 2, resumed).fit(module, datamodule=dm, ckpt_path=ckpt)
    assert source.calls == 0  # no rescoring on resume
    assert resumed.scores == first.scores and resumed.active_ids == first.active_ids
    assert sorted(module.seen[1]) == first.active_ids


def test_rescoring_between_epochs_needs_loader_reload(tiny_model_dir, rl_data, tmp_path):
    path, table = rl_data
    callback = SeamCallback(ListSource(table), every_n_epochs=1, reference_policy=str(tiny_model_dir),
                            reward_model=str(tiny_model_dir))
    trainer = Trainer(accelerator="cpu", max_epochs=1, callbacks=[callback], logger=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        trainer.fit(RLConsumer(str(tiny_model_dir)), datamodule=_datamodule(path))


def test_missing_models_are_named_in_the_error(tiny_model_dir, rl_data, tmp_path):
    path, table = rl_data
    callback = SeamCallback(ListSource(table), every_n_epochs=0, reward_model=str(tiny_model_dir))
    with pytest.raises(ValueError, match="needs reference_policy="):
        _trainer(tmp_path, 1, callback).fit(RLConsumer(str(tiny_model_dir)), datamodule=_datamodule(path))


def test_random_selection_prunes_the_same_share_without_scoring(tiny_model_dir, rl_data, tmp_path):
    path, table = rl_data
    picks = []
    for seed in (0, 0, 1):
        source = ListSource(table)
        callback = SeamCallback(source, fraction=0.3, selection="random", every_n_epochs=0, seed=seed,
                                reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
        module, dm = RLConsumer(str(tiny_model_dir)), _datamodule(path)
        _trainer(tmp_path, 1, callback, enable_checkpointing=False).fit(module, datamodule=dm)
        assert source.calls == 0 and callback.scores == {}  # nothing was scored
        assert len(callback.pruned_ids) == 3 and sorted(module.seen[0]) == callback.active_ids
        picks.append(callback.pruned_ids)
    assert picks[0] == picks[1] and picks[0] != picks[2]  # a function of the seed


def test_scoring_progress_is_reused_by_a_rerun_with_the_same_models(tiny_model_dir, rl_data, tmp_path):
    path, table = rl_data
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the RM is a policy folder: its new score head is drawn when it loads
        callback = SeamCallback(ListSource(table), fraction=0.3, num_candidates=2, every_n_epochs=0, prompts_per_chunk=4,
                                reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
        _trainer(tmp_path, 1, callback, enable_checkpointing=False).fit(RLConsumer(str(tiny_model_dir)),
                                                                        datamodule=_datamodule(path))
        runs.append(callback)
    assert runs[0].last_scoring == {"reused": 0, "scored": 10}
    assert runs[1].last_scoring == {"reused": 10, "scored": 0}
    assert runs[1].source.calls == 0  # saved scores are found before any candidate is built
    assert runs[1].scores == runs[0].scores and runs[1].pruned_ids == runs[0].pruned_ids
    # A source configured differently (another table) gives other candidates: nothing saved answers for it.
    changed = dict(table)
    first = next(iter(changed))
    changed[first] = ["Something else entirely."]
    torch.manual_seed(0)
    callback = SeamCallback(ListSource(changed), fraction=0.3, num_candidates=2, every_n_epochs=0, prompts_per_chunk=4,
                            reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
    _trainer(tmp_path, 1, callback, enable_checkpointing=False).fit(RLConsumer(str(tiny_model_dir)),
                                                                    datamodule=_datamodule(path))
    assert callback.last_scoring == {"reused": 0, "scored": 10}


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "prune", "selection": "all"}, "prune every RL prompt"),
    ({"mode": "augment"}, "augment_source=ContrastSource"),
    ({"selection": "best"}, "selection must be"),
    ({"mode": "grow"}, "mode must be"),
    ({"prompts_per_chunk": 0}, "prompts_per_chunk"),
    ({"augmentations_per_prompt": 0}, "augmentations_per_prompt"),
    ({"order": "middle"}, "order must be 'largest' or 'smallest'"),
    ({"selection": "random", "order": "smallest"}, "scores nothing"),
    ({"selection": "perplexity", "mode": "augment"}, r"data-selection baseline \(§7, pruning\)"),
    ({"perplexity_model": "bundled:x"}, "only by selection='perplexity'"),
])
def test_bad_settings_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SeamCallback(ListSource({}), **kwargs)


def test_augment_mode_in_a_reward_model_run_trains_on_the_new_pairs(tiny_model_dir, tmp_path):
    from ddp_job import write_data
    from lightning.pytorch import Callback

    from seam_lightning import ContrastSource, LoRASettings
    from seam_lightning.modules.reward import RewardModule

    class SeenIds(Callback):
        def __init__(self):
            self.ids = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.ids.extend(batch["ids"].tolist())

    data = write_data(tmp_path / "data")
    source = ContrastSource(corpus=DataSource(str(data / "corpus.jsonl")), band=(0.3, 0.95),
                            cache_dir=str(tmp_path / "contrast"))
    # The RM being trained is the module's own model; the policy comes by path.
    callback = SeamCallback(source, mode="augment", fraction=0.25, num_candidates=2, every_n_epochs=0,
                            reference_policy=str(tiny_model_dir), augmentations_per_prompt=2,
                            augment_dir=str(tmp_path / "augmented"), progress=False)
    dm = RLHFDataModule(sft=None, sft_val=None, preference=DataSource(str(data / "preference.jsonl")),
                        preference_val=None, rl=DataSource(str(data / "rl.jsonl")), rl_val=None, batch_size=4)
    seen = SeenIds()
    torch.manual_seed(0)
    module = RewardModule(model=str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0), warmup_steps=0)
    Trainer(accelerator="cpu", max_epochs=1, callbacks=[callback, seen], logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path).fit(module, datamodule=dm)

    assert len(callback.selected_ids) == 4 and callback.pruned_ids == []  # 25% of 16; nothing pruned
    added = dm.added["preference"]
    assert len(added) == 8  # 2 contrast pairs for each of the 4 prompts
    # Scored at fit start, so the first epoch already trains on the 16 original and 8 new pairs.
    assert sorted(seen.ids) == list(range(24))
    augmented = [e for e in dm.examples("preference") if e["augmented"]]
    assert [e["id"] for e in augmented] == list(range(16, 24))
    written = (tmp_path / "augmented" / "preference.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == [r.text for r in added]
    assert len((tmp_path / "augmented" / "sft.jsonl").read_text().splitlines()) == len(dm.added["sft"]) >= 1


@pytest.mark.parametrize("order", ["largest", "smallest"])
def test_seam_order_selects_that_end_of_the_scores(tiny_model_dir, rl_data, tmp_path, order):
    path, table = rl_data
    torch.manual_seed(0)
    callback = SeamCallback(ListSource(table), fraction=0.3, num_candidates=2, every_n_epochs=0, order=order,
                            reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
    module = RLConsumer(str(tiny_model_dir))
    _trainer(tmp_path, 1, callback, enable_checkpointing=False).fit(module, datamodule=_datamodule(path))
    sign = -1 if order == "largest" else 1
    assert callback.pruned_ids == sorted(callback.scores, key=lambda i: (sign * callback.scores[i], i))[:3]
    assert sorted(module.seen[0]) == callback.active_ids == sorted(set(range(10)) - set(callback.pruned_ids))


@pytest.mark.parametrize("which, order", [("reference", "largest"), ("perplexity_model", "largest"),
                                          ("perplexity_model", "smallest")])
def test_perplexity_selection_prunes_the_golden_responses_with_the_highest_perplexity(
        tiny_model_dir, tmp_path, which, order):
    """Paper §7's "LLaMa" baseline: the pruned ids are the top perplexities of a plain transformers forward."""
    from perplexity_reference import plain_perplexity, ranked, rl_rows, write_rl
    from tiny import build_tiny_model_dir
    from transformers import AutoModelForCausalLM

    path = write_rl(tmp_path / "data", 10)
    # Another tiny model (other weights, same tokenizer): perplexity_model must be the one used.
    other = build_tiny_model_dir(tmp_path / "other", seed=1)
    lm_dir = other if which == "perplexity_model" else tiny_model_dir
    source = ListSource({})
    callback = SeamCallback(source, fraction=0.3, selection="perplexity", order=order, every_n_epochs=0,
                            reference_policy=str(tiny_model_dir), progress=False,
                            perplexity_model=str(other) if which == "perplexity_model" else None)
    module = RLConsumer(str(tiny_model_dir))
    _trainer(tmp_path, 1, callback, enable_checkpointing=False).fit(module, datamodule=_datamodule(path))

    lm = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    expected = {i: plain_perplexity(lm, module.tokenizer, r["instruction"], r["response"])
                for i, r in enumerate(rl_rows(10))}
    assert callback.scores == pytest.approx(expected, rel=1e-4)
    assert callback.pruned_ids == ranked(expected, 3, largest=order == "largest")  # most extreme first
    assert sorted(module.seen[0]) == callback.active_ids == sorted(set(range(10)) - set(callback.pruned_ids))
    assert source.calls == 0  # no SEAM candidates were built


def test_renamed_arguments_still_work_and_warn():
    with pytest.warns(FutureWarning, match=r"policy=.*likelihood_from="):
        callback = SeamCallback(ListSource({}), policy="current")
    assert callback.likelihood_from == "current"
    with pytest.warns(FutureWarning, match=r"chunk_size=.*prompts_per_chunk="):
        callback = SeamCallback(ListSource({}), chunk_size=7)
    assert callback.prompts_per_chunk == 7


@pytest.mark.parametrize("selection", ["seam", "perplexity"])
def test_bf16_mixed_scoring_with_frozen_weights_cast_once_gives_the_same_scores(tiny_model_dir, rl_data, tmp_path,
                                                                                 monkeypatch, selection):
    """Under bf16-mixed the scoring models' frozen weights are cast once, and no score moves."""
    path, table = rl_data
    swapped = record_frozen_weight_swaps(monkeypatch)

    def scores(cast_once):
        torch.manual_seed(0)  # the RM's score head is new, drawn when the callback loads it
        callback = SeamCallback(ListSource(table), fraction=0.3, num_candidates=3, selection=selection,
                                reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir),
                                cast_frozen_weights_once=cast_once, save_progress=False, progress=False)
        _trainer(tmp_path / str(cast_once), 1, callback, enable_checkpointing=False, precision="bf16-mixed").fit(
            RLConsumer(str(tiny_model_dir)), datamodule=_datamodule(path))
        return callback.scores

    once, per_call = scores(True), scores(False)
    # The tiny policy: 2 blocks × 7 projections and its tied output head; the RM adds its own
    # 14 and its score head. With the option off nothing is swapped.
    assert swapped == ([30] if selection == "seam" else [15]) + [0]
    assert once == per_call and len(once) == 10
