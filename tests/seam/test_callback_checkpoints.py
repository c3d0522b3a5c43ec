"""SeamCallback state in checkpoints: strategies that restore after setup, and several callbacks in one Trainer."""

import json

import pytest
import torch
from doubles import ListSource, RLConsumer
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import SingleDeviceStrategy

from seam_lightning import DataSource, RLHFDataModule, SeamCallback

pytestmark = pytest.mark.filterwarnings("ignore")

ROWS = 10


class LateRestore(SingleDeviceStrategy):
    """A one-device strategy that restores checkpoints after setup, as FSDP and DeepSpeed do.

    Lightning then calls ``on_fit_start`` before the callbacks' state is loaded, and
    builds the train loader after it (neither FSDP nor DeepSpeed runs on a CPU).
    """

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True


@pytest.fixture
def rl_data(tmp_path):
    rows = [{"instruction": f"Explain `mod.f{i}`.", "response": f"Return the value {i}."} for i in range(ROWS)]
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = {r["instruction"]: [f"Split {i} paths.", "Join two paths.", f"The lazy dog {i}."]
             for i, r in enumerate(rows)}
    # A second source with other candidates, for a callback that only scores.
    other = {r["instruction"]: [f"Return {i + 1}.", "Nothing at all."] for i, r in enumerate(rows)}
    return path, table, other


def _datamodule(path):
    return RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None,
                          rl=DataSource(str(path)), rl_val=None, batch_size=3)


def _callback(model_dir, source, **kwargs):
    kwargs = {"fraction": 0.3, "num_candidates": 2, "every_n_epochs": 0, "progress": False, "save_progress": False,
              "reference_policy": str(model_dir), "reward_model": str(model_dir)} | kwargs
    return SeamCallback(source, **kwargs)


def _trainer(root, epochs, callbacks, **kwargs):
    return Trainer(accelerator="cpu", max_epochs=epochs, callbacks=callbacks, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, **kwargs)


def _checkpointing(root):
    return ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)


def test_late_restoring_strategy_resumes_the_saved_selection_without_rescoring(tiny_model_dir, rl_data, tmp_path):
    path, table, _ = rl_data
    scores = tmp_path / "scores"
    torch.manual_seed(0)  # the RM is a policy folder: its new score head is drawn when it loads
    first = _callback(tiny_model_dir, ListSource(table), scores_path=str(scores / "seam-{epoch}.jsonl"))
    module = RLConsumer(str(tiny_model_dir))
    _trainer(tmp_path, 1, [first, _checkpointing(tmp_path)], strategy=LateRestore("cpu")).fit(
        module, datamodule=_datamodule(path))
    # A fresh run under such a strategy scores at fit start, and its first epoch trains on the active set.
    assert first.rescorings == 1 and len(first.pruned_ids) == 3
    assert sorted(module.seen[0]) == first.active_ids
    written = {p.name: p.read_text() for p in scores.iterdir()}
    assert list(written) == ["seam-0.jsonl"]

    source = ListSource(table)
    resumed = _callback(tiny_model_dir, source, scores_path=str(scores / "seam-{epoch}.jsonl"))
    module = RLConsumer(str(tiny_model_dir))
    torch.manual_seed(1)  # a rescoring would draw another score head and select otherwise
    _trainer(tmp_path, 2, [resumed, _checkpointing(tmp_path)], strategy=LateRestore("cpu")).fit(
        module, datamodule=_datamodule(path), ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    assert source.calls == 0, "the resumed callback built candidates: it rescored before its state was restored"
    assert resumed.rescorings == 1
    assert resumed.scores == first.scores and resumed.active_ids == first.active_ids
    assert resumed.selected_ids == first.selected_ids
    # The resumed epoch (1) trains on exactly the restored active set; epoch 0 did not run again.
    assert list(module.seen) == [1] and sorted(module.seen[1]) == first.active_ids
    # No scores file was written again, under epoch 0 or any other.
    assert {p.name: p.read_text() for p in scores.iterdir()} == written


def test_late_restoring_strategy_scores_when_the_checkpoint_holds_no_seam_state(tiny_model_dir, rl_data, tmp_path):
    path, table, _ = rl_data
    # A run without the callback (e.g. SFT's checkpoint reused, or the callback added later).
    _trainer(tmp_path, 1, [_checkpointing(tmp_path)], strategy=LateRestore("cpu")).fit(
        RLConsumer(str(tiny_model_dir)), datamodule=_datamodule(path))
    source = ListSource(table)
    callback = _callback(tiny_model_dir, source, scores_path=str(tmp_path / "scores-{epoch}.jsonl"))
    module = RLConsumer(str(tiny_model_dir))
    _trainer(tmp_path, 2, [callback, _checkpointing(tmp_path)], strategy=LateRestore("cpu")).fit(
        module, datamodule=_datamodule(path), ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    assert source.calls > 0 and callback.rescorings == 1 and len(callback.pruned_ids) == 3
    # Scored after the late restore, for the resumed epoch, whose loader was built again for it.
    assert list(module.seen) == [1] and sorted(module.seen[1]) == callback.active_ids
    assert [p.name for p in tmp_path.glob("scores-*")] == ["scores-1.jsonl"]


def test_a_pruning_and_a_scoring_callback_keep_their_own_state(tiny_model_dir, rl_data, tmp_path):
    path, table, other = rl_data
    torch.manual_seed(0)
    prune = _callback(tiny_model_dir, ListSource(table), scores_path=str(tmp_path / "prune-{epoch}.jsonl"))
    score = _callback(tiny_model_dir, ListSource(other), mode="score", fraction=0.5,
                      scores_path=str(tmp_path / "score-{epoch}.jsonl"))
    module = RLConsumer(str(tiny_model_dir))
    trainer = _trainer(tmp_path, 1, [prune, score, _checkpointing(tmp_path)])
    trainer.fit(module, datamodule=_datamodule(path))

    assert prune.state_key != score.state_key
    assert len(prune.pruned_ids) == 3 and score.pruned_ids == [] and len(score.selected_ids) == 5
    assert score.active_ids is None and prune.scores != score.scores  # other candidates, other SEAM
    # Only the pruning callback decides the RL loader.
    assert sorted(module.seen[0]) == prune.active_ids == sorted(set(range(ROWS)) - set(prune.pruned_ids))
    for name, callback in (("prune", prune), ("score", score)):
        rows = [json.loads(line) for line in (tmp_path / f"{name}-0.jsonl").read_text().splitlines()]
        assert {r["id"]: r["seam"] for r in rows} == pytest.approx(callback.scores)
        assert sorted(r["id"] for r in rows if r["selected"]) == sorted(callback.selected_ids)

    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["callbacks"][prune.state_key] == prune.state_dict()
    assert ckpt["callbacks"][score.state_key] == score.state_dict()

    # Resumed in the other order: each callback takes its own entry back, and neither scores again.
    sources = ListSource(table), ListSource(other)
    prune2 = _callback(tiny_model_dir, sources[0])
    score2 = _callback(tiny_model_dir, sources[1], mode="score", fraction=0.5)
    module = RLConsumer(str(tiny_model_dir))
    _trainer(tmp_path, 2, [score2, prune2]).fit(module, datamodule=_datamodule(path),
                                                ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    assert sources[0].calls == sources[1].calls == 0
    assert prune2.state_dict() == prune.state_dict() and score2.state_dict() == score.state_dict()
    assert list(module.seen) == [1] and sorted(module.seen[1]) == prune.active_ids


@pytest.mark.parametrize("second, error, message", [
    # Told apart by their default names (fraction differs), but both would set the RL set.
    ({"mode": "prune", "fraction": 0.5}, ValueError, "one pruning SeamCallback"),
    # The same name, so the same checkpoint entry: Lightning refuses it when the Trainer is built.
    ({"mode": "score", "name": "seam"}, RuntimeError, "state_key` must be unique"),
    ({"mode": "prune", "name": "seam"}, RuntimeError, "state_key` must be unique"),
])
def test_conflicting_callbacks_are_refused_before_anything_is_scored(tiny_model_dir, rl_data, tmp_path,
                                                                     second, error, message):
    path, table, other = rl_data
    sources = ListSource(table), ListSource(other)
    first = _callback(tiny_model_dir, sources[0], name="seam" if "name" in second else None)
    other_callback = _callback(tiny_model_dir, sources[1], **second)
    with pytest.raises(error, match=message):
        _trainer(tmp_path, 1, [first, other_callback], enable_checkpointing=False).fit(
            RLConsumer(str(tiny_model_dir)), datamodule=_datamodule(path))
    assert sources[0].calls == sources[1].calls == 0
