"""Resuming checks that a checkpoint meets the frozen bases and the trainable weights it was written with."""

import json
import re

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from tiny import build_tiny_model_dir

from seam_lightning import DataSource, LoRASettings, RewardModule, RLHFDataModule, SFTModule
from seam_lightning.models.loading import export_pretrained, load_reward_model, load_tokenizer
from seam_lightning.modules.ppo import PPOModule
from seam_lightning.rl.generation import SamplingSettings


def _fit(module, datamodule, tmp_path, ckpt_path=None, **kwargs):
    kwargs.setdefault("max_steps", 1)
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0,
                      num_sanity_val_steps=0, **kwargs)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def _sft(base, **kwargs):
    return SFTModule(model=str(base), lora=kwargs.pop("lora", LoRASettings(r=4)), warmup_steps=0, **kwargs)


def _saved_run(module, datamodule, tmp_path, **kwargs):
    """Train ``module`` briefly and return the path of its checkpoint."""
    trainer = _fit(module, datamodule, tmp_path, **kwargs)
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    return path


# ----------------------------------------------------------------------------- frozen bases


def test_sft_resume_on_a_rebuilt_base_is_refused_unless_allowed(tiny_data, tmp_path):
    base = build_tiny_model_dir(tmp_path / "sft-export")
    seed_everything(0)
    checkpoint = _saved_run(_sft(base), tiny_data, tmp_path)
    provenance = torch.load(checkpoint, weights_only=False)["provenance"]
    assert list(provenance) == ["model"] and provenance["model"]["source"] == str(base)
    assert _fit(_sft(base), tiny_data, tmp_path, ckpt_path=checkpoint, max_steps=2).global_step == 2  # same base

    build_tiny_model_dir(base, seed=1)  # the base exported again, with other weights, at the same path
    with pytest.raises(ValueError, match="frozen weights of model differ") as refused:
        _fit(_sft(base), tiny_data, tmp_path, ckpt_path=checkpoint, max_steps=2)
    assert f"model: checkpoint {str(base)!r}" in str(refused.value)
    assert "allow_changed_bases=True" in str(refused.value)

    allowed = _sft(base)
    allowed.allow_changed_bases = True  # HFModule's override; SFTModule's __init__ does not pass it on yet
    with pytest.warns(UserWarning, match="Resuming anyway"):
        assert _fit(allowed, tiny_data, tmp_path, ckpt_path=checkpoint, max_steps=2).global_step == 2


def test_a_checkpoint_without_provenance_loads_with_a_warning(tiny_model_dir, tiny_data, tmp_path):
    checkpoint = _saved_run(_sft(tiny_model_dir), tiny_data, tmp_path)
    state = torch.load(checkpoint, weights_only=False)
    del state["provenance"]  # as written before fingerprints were recorded
    torch.save(state, checkpoint)
    with pytest.warns(UserWarning, match="records no fingerprints"):
        assert _fit(_sft(tiny_model_dir), tiny_data, tmp_path, ckpt_path=checkpoint, max_steps=2).global_step == 2


def _provenance(module):
    """What ``module`` records in a checkpoint (its hook on a state dict of its own)."""
    module.configure_model()
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    return checkpoint["provenance"]


def test_only_models_with_frozen_weights_are_recorded(tiny_model_dir):
    assert _provenance(_sft(tiny_model_dir, lora=None)) == {}  # full fine-tuning: everything is in the checkpoint


def test_a_reward_model_with_a_new_head_records_the_same_base_each_time(tiny_model_dir):
    # From a policy the head is drawn at random whenever the model is built; the run only
    # reads its trained copy (in the checkpoint), so a resumed run must not count it as a change.
    recorded = []
    for seed in (0, 1):
        seed_everything(seed)
        recorded.append(_provenance(RewardModule(model=str(tiny_model_dir), lora=LoRASettings(r=4))))
    assert list(recorded[0]) == ["model"] and recorded[0] == recorded[1]


# ----------------------------------------------------------------------------- trainable keys


def test_a_checkpoint_of_other_lora_settings_is_refused(tiny_model_dir, tiny_data, tmp_path):
    checkpoint = _saved_run(_sft(tiny_model_dir), tiny_data, tmp_path)
    other = _sft(tiny_model_dir, lora=LoRASettings(r=4, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"trainable weights are not this module's: missing: none; unexpected: \d+ "
                                         r"\(.*\).*LoRA settings"):
        _fit(other, tiny_data, tmp_path, ckpt_path=checkpoint, max_steps=2)


def test_a_missing_or_an_extra_trainable_key_is_refused(tiny_model_dir, tiny_data, tmp_path):
    checkpoint = _saved_run(_sft(tiny_model_dir), tiny_data, tmp_path)
    state = torch.load(checkpoint, weights_only=False)
    dropped = next(k for k in state["state_dict"] if "lora_A" in k)
    del state["state_dict"][dropped]
    state["state_dict"]["model.extra.weight"] = torch.zeros(2)
    torch.save(state, checkpoint)
    expected = rf"missing: 1 \({re.escape(dropped)}\); unexpected: 1 \(model\.extra\.weight\)"
    with pytest.raises(ValueError, match=expected):
        _fit(_sft(tiny_model_dir), tiny_data, tmp_path, ckpt_path=checkpoint, max_steps=2)
    with pytest.raises(ValueError, match=expected):  # load_from_checkpoint checks the same
        SFTModule.load_from_checkpoint(checkpoint)


# ----------------------------------------------------------------------------- PPO


def _reward_model_dir(tiny_model_dir, path, seed):
    """An exported reward model whose head has weights drawn with ``seed``."""
    seed_everything(seed)
    rm = load_reward_model(str(tiny_model_dir))
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)
    return export_pretrained(rm, load_tokenizer(str(tiny_model_dir)), path)


def _ppo(policy, reward_model, **kwargs):
    kwargs.setdefault("lora", LoRASettings(r=4))
    return PPOModule(policy=str(policy), reward_model=str(reward_model), sampling=SamplingSettings(max_new_tokens=4),
                     ppo_epochs=1, mini_batch_size=4, evaluate_at_start=False, **kwargs)


def test_ppo_records_each_frozen_base_and_refuses_a_changed_reward_model(tiny_model_dir, tmp_path):
    rm_dir = _reward_model_dir(tiny_model_dir, tmp_path / "rm", seed=3)
    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"instruction": f"What does `f{i}` do?", "response": f"Return {i}."}) + "\n"
                          for i in range(8)))

    def data():
        return RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None, rl=DataSource(str(rl)),
                              rl_val=None, batch_size=4)

    seed_everything(0)
    checkpoint = _saved_run(_ppo(tiny_model_dir, rm_dir, max_ppo_steps=1), data(), tmp_path, max_steps=-1,
                            max_epochs=-1)
    provenance = torch.load(checkpoint, weights_only=False)["provenance"]
    # LoRA: the reference is the policy's base; the value model shares the RM's backbone.
    assert sorted(provenance) == ["policy", "reward_model", "value_model"]
    assert provenance["policy"]["source"] == str(tiny_model_dir)
    assert provenance["reward_model"]["source"] == provenance["value_model"]["source"] == str(rm_dir)

    _reward_model_dir(tiny_model_dir, rm_dir, seed=4)  # the RM exported again: same backbone, another head
    with pytest.raises(ValueError, match="frozen weights of reward_model differ") as refused:
        _fit(_ppo(tiny_model_dir, rm_dir, max_ppo_steps=2), data(), tmp_path, ckpt_path=checkpoint, max_steps=-1,
             max_epochs=-1)
    assert f"reward_model: checkpoint {str(rm_dir)!r}" in str(refused.value)
    with pytest.warns(UserWarning, match="Resuming anyway"):
        resumed = _ppo(tiny_model_dir, rm_dir, max_ppo_steps=2, allow_changed_bases=True)
        _fit(resumed, data(), tmp_path, ckpt_path=checkpoint, max_steps=-1, max_epochs=-1)
    assert resumed.ppo_step == 2
    assert "allow_changed_bases" not in resumed.hparams  # the override never sticks to a checkpoint


def test_ppo_without_lora_records_its_reference_and_separate_reward_model(tiny_model_dir, tmp_path):
    rm_dir = _reward_model_dir(tiny_model_dir, tmp_path / "rm", seed=3)
    module = _ppo(tiny_model_dir, rm_dir, lora=None, value_lora=None)
    assert sorted(_provenance(module)) == ["reference_policy", "reward_model"]  # policy and value train in full
