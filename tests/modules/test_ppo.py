import json
import math

import pytest
import torch
from doubles import ListSource, record_frozen_weight_swaps
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision

from seam_lightning import DataSource, LoRASettings, RLHFDataModule, SeamCallback
from seam_lightning.models.forward import logprobs_of, response_logits
from seam_lightning.models.loading import load_policy
from seam_lightning.modules.ppo import PPOModule
from seam_lightning.rl.generation import SamplingSettings


def count_o(instructions, responses):
    """A programmatic reward the tiny model can learn quickly: how many letters 'o' it writes."""
    return [float(r.count("o")) for r in responses]


@pytest.fixture
def rl_file(tmp_path):
    rows = [{"instruction": f"What does `json.dumps` do? ({i})", "response": f"Serialize obj {i}."} for i in range(16)]
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _datamodule(path, batch_size=8, val=True):
    return RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None, rl=DataSource(str(path)),
                          rl_val=DataSource(str(path), limit=4) if val else None, batch_size=batch_size)


def _trainer(tmp_path, callbacks=(), **kwargs):
    kwargs.setdefault("max_epochs", -1)
    return Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks), **kwargs)


class History(Callback):
    """Records the logged metrics of every PPO step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def test_programmatic_reward_rises_and_kl_stays_bounded(tiny_model_dir, rl_file, tmp_path):
    seed_everything(0)
    module = PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, lora=None, value_lora=None,
                       sampling=SamplingSettings(max_new_tokens=12), learning_rate=1e-2, ppo_epochs=4,
                       mini_batch_size=4, kl_coef=0.2, kl_target=None, max_ppo_steps=30, evaluate_at_start=False)
    history = History()
    _trainer(tmp_path, [history], enable_checkpointing=False, check_val_every_n_epoch=None, val_check_interval=None,
             limit_val_batches=0).fit(module, datamodule=_datamodule(rl_file))

    rewards = [s["train/reward"] for s in history.steps]
    assert len(rewards) == 30 and module.ppo_step == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 2.0, rewards  # about 0.8 -> 5 'o's in 12 tokens
    kls = [s["train/kl"] for s in history.steps]
    # β keeps the policy far from the deterministic optimum (12·log 300 ≈ 68 nats).
    assert all(abs(kl) < 35 for kl in kls), kls
    assert history.steps[-1]["train/entropy"] < history.steps[0]["train/entropy"]


def _resumable_module(tiny_model_dir, max_ppo_steps):
    return PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, lora=LoRASettings(r=4),
                     sampling=SamplingSettings(max_new_tokens=6), learning_rate=1e-2, ppo_epochs=2, mini_batch_size=2,
                     kl_coef=0.1, kl_target=1.0, kl_horizon=20, reward_normalization="running",
                     max_ppo_steps=max_ppo_steps, evaluate_at_start=False)


def _seam(table, tiny_model_dir):
    return SeamCallback(ListSource(table), fraction=0.25, num_candidates=2, every_n_epochs=0,
                        reward_model=str(tiny_model_dir), progress=False)


def test_resumed_run_equals_uninterrupted_run(tiny_model_dir, rl_file, tmp_path):
    rows = [json.loads(line) for line in rl_file.read_text().splitlines()]
    table = {r["instruction"]: ["Join two paths.", f"The lazy dog {i}."] for i, r in enumerate(rows)}
    updates_per_step = 2 * 2 * 2  # (policy + value) × ppo_epochs × mini-batches per batch of 4

    def run(max_ppo_steps, directory, ckpt_path=None):
        seed_everything(0)
        module, history = _resumable_module(tiny_model_dir, max_ppo_steps), History()
        checkpoints = ModelCheckpoint(dirpath=directory, every_n_train_steps=updates_per_step, save_top_k=-1)
        datamodule = _datamodule(rl_file, batch_size=4, val=False)
        trainer = _trainer(tmp_path, [history, checkpoints, _seam(table, tiny_model_dir)])
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        return module, history, datamodule, trainer

    # 12 active prompts after pruning = 3 batches per epoch: step 2 stops mid-epoch.
    full, full_history, full_data, _ = run(4, tmp_path / "full")
    run(2, tmp_path / "first")
    checkpoint = tmp_path / "first" / f"epoch=0-step={2 * updates_per_step}.ckpt"
    assert checkpoint.is_file()
    resumed, resumed_history, resumed_data, trainer = run(4, tmp_path / "second", ckpt_path=str(checkpoint))

    assert resumed.ppo_step == full.ppo_step == 4 and trainer.global_step == 4 * updates_per_step
    assert resumed_data.active_rl_ids == full_data.active_rl_ids and len(full_data.active_rl_ids) == 12
    for key in ("train/reward", "train/kl", "train/kl_coef", "train/policy_loss", "train/value_loss"):
        got = [s[key] for s in resumed_history.steps]
        expected = [s[key] for s in full_history.steps[2:]]
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), key
    assert resumed.kl_controller.value == pytest.approx(full.kl_controller.value, rel=1e-6)
    assert resumed.reward_moments.state_dict() == pytest.approx(full.reward_moments.state_dict())
    for (name, got), expected in zip(resumed.named_parameters(), full.parameters()):
        if got.requires_grad:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
    optimizer_state = trainer.optimizers[0].state_dict()["state"]
    assert optimizer_state and all(s["step"].item() == 4 * 2 * 2 for s in optimizer_state.values())


def test_reusing_frozen_blocks_changes_no_number(tiny_model_dir, rl_file, tmp_path):
    # LoRA on the top block of 2: block 0 runs once per rollout for π and π_ref, for the value
    # model and the RM sharing its backbone, and for every update pass.
    top = LoRASettings(r=4, dropout=0.0, layers=[-1])

    def run(reuse):
        seed_everything(0)
        module = PPOModule(policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), lora=top, value_lora=top,
                           reuse_frozen_blocks=reuse, sampling=SamplingSettings(max_new_tokens=6), learning_rate=1e-2,
                           ppo_epochs=2, mini_batch_size=2, max_ppo_steps=3, evaluate_at_start=False)
        history = History()
        _trainer(tmp_path / str(reuse), [history], enable_checkpointing=False, limit_val_batches=0).fit(
            module, datamodule=_datamodule(rl_file, 4, val=False))
        return module, history

    (reused, reused_history), (plain, plain_history) = run(True), run(False)
    assert reused._frozen_policy_blocks.index == reused._frozen_value_blocks.index == 1
    assert plain._frozen_policy_blocks is None and plain._frozen_value_blocks is None
    assert len(reused_history.steps) == 3
    assert reused_history.steps == plain_history.steps  # every metric, exactly
    for (name, got), expected in zip(reused.named_parameters(), plain.parameters()):
        assert torch.equal(got, expected), name
    assert reused_history.steps[-1]["train/kl"] != 0  # the policy moved away from π_ref


def test_reference_is_the_starting_policy_with_lora(tiny_model_dir, rl_file, tmp_path):
    seed_everything(0)
    module = _resumable_module(tiny_model_dir, max_ppo_steps=2)
    _trainer(tmp_path, enable_checkpointing=False, limit_val_batches=0).fit(module, datamodule=_datamodule(rl_file, 4, val=False))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    mask = torch.ones_like(ids)
    starting = load_policy(str(tiny_model_dir)).eval()
    with torch.no_grad():
        expected = logprobs_of(response_logits(starting, ids, mask, 2), ids[:, 2:])
        with module.reference() as reference:
            got = logprobs_of(response_logits(reference, ids, mask, 2), ids[:, 2:])
        trained = logprobs_of(response_logits(module.policy, ids, mask, 2), ids[:, 2:])
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(trained, expected)


def test_reward_model_run_checkpoints_only_trainable_weights(tiny_model_dir, rl_file, tmp_path):
    seed_everything(0)
    module = PPOModule(policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), lora=LoRASettings(r=4),
                       sampling=SamplingSettings(max_new_tokens=4), ppo_epochs=1, mini_batch_size=4, max_ppo_steps=1,
                       missing_eos_penalty=1.0, reward_normalization="batch", reward_clip=3.0,
                       export_dir=str(tmp_path / "export"))
    trainer = _trainer(tmp_path, enable_checkpointing=False)
    trainer.fit(module, datamodule=_datamodule(rl_file, 4))
    assert "val/reward_before" in trainer.callback_metrics and "val/reward" in trainer.callback_metrics
    trainer.save_checkpoint(tmp_path / "ppo.ckpt")
    state = torch.load(tmp_path / "ppo.ckpt", weights_only=False)["state_dict"]
    assert not any(k.startswith("reward_model.") for k in state)
    policy_keys = [k for k in state if k.startswith("policy.")]
    assert policy_keys and all("lora_" in k for k in policy_keys)
    assert any(k.startswith("value_model.") and "score" in k for k in state)
    assert (tmp_path / "export" / "config.json").is_file()


def test_rejects_bad_settings(tiny_model_dir, rl_file, tmp_path):
    with pytest.raises(ValueError, match="exactly one of reward_model"):
        PPOModule(policy=str(tiny_model_dir), reward_model=None)
    with pytest.raises(ValueError, match="exactly one of reward_model"):
        PPOModule(policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), reward_fn=count_o)
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, kl_estimator="k4")


def test_batches_that_are_no_multiple_of_the_mini_batch_end_with_a_smaller_one(tiny_model_dir, rl_file, tmp_path):
    # 16 prompts in batches of 6: 6, 6 and a last 4; mini-batches of 4 (4+2, 4+2, 4).
    module = PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, lora=None, value_lora=None,
                       sampling=SamplingSettings(max_new_tokens=3), mini_batch_size=4, ppo_epochs=1,
                       evaluate_at_start=False)
    _trainer(tmp_path, max_epochs=1, enable_checkpointing=False, limit_val_batches=0).fit(
        module, datamodule=_datamodule(rl_file, 6, val=False))
    assert module.ppo_step == 3
    assert module.trainer.global_step == 2 * (2 + 2 + 1)  # policy and value update per mini-batch
    # With drop_last the partial batch is left out: every PPO step has the same number of prompts.
    module = PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, lora=None, value_lora=None,
                       sampling=SamplingSettings(max_new_tokens=3), mini_batch_size=3, ppo_epochs=1,
                       evaluate_at_start=False)
    data = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None, rl=DataSource(str(rl_file)),
                          rl_val=None, batch_size=6, drop_last=True)
    _trainer(tmp_path, max_epochs=1, enable_checkpointing=False, limit_val_batches=0).fit(module, datamodule=data)
    assert module.ppo_step == 2


def test_seam_rescoring_with_the_current_policy_sees_the_trained_policy(tiny_model_dir, rl_file, tmp_path):
    rows = [json.loads(line) for line in rl_file.read_text().splitlines()]
    table = {r["instruction"]: ["Join two paths.", f"The lazy dog {i}."] for i, r in enumerate(rows)}
    seam = SeamCallback(ListSource(table), fraction=0.25, num_candidates=2, every_n_epochs=1, likelihood_from="current",
                        reward_model=str(tiny_model_dir), scores_path=str(tmp_path / "scores-{epoch}.jsonl"),
                        progress=False)
    seed_everything(0)
    module = _resumable_module(tiny_model_dir, max_ppo_steps=None)
    trainer = _trainer(tmp_path, [seam], enable_checkpointing=False, max_epochs=2, reload_dataloaders_every_n_epochs=1)
    trainer.fit(module, datamodule=_datamodule(rl_file, batch_size=4, val=False))

    assert seam.rescorings == 2 and module.ppo_step == 3 + 3  # 12 active prompts, batches of 4, two epochs
    first, second = ([json.loads(line) for line in (tmp_path / f"scores-{epoch}.jsonl").read_text().splitlines()]
                     for epoch in (0, 1))
    # Same candidates and frozen RM, but the log-likelihoods come from the policy after one epoch of PPO.
    assert [r["candidate_rewards"] for r in first] == [r["candidate_rewards"] for r in second]
    assert [r["candidate_logprob_sums"] for r in first] != [r["candidate_logprob_sums"] for r in second]


def test_a_nan_reward_stops_the_step_and_names_the_example(tiny_model_dir, rl_file, tmp_path):
    def nan_for_seven(instructions, responses):
        return [float("nan") if "(7)" in i else 1.0 for i in instructions]

    module = PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=nan_for_seven, lora=None,
                       value_lora=None, sampling=SamplingSettings(max_new_tokens=4), mini_batch_size=4,
                       max_ppo_steps=2, evaluate_at_start=False)
    data = _datamodule(rl_file, batch_size=16, val=False)
    module.configure_model()  # built now to record the weights; fit does not build them again
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"non-finite reward for RL example id\(s\) \[7\]"):
        _trainer(tmp_path, enable_checkpointing=False, limit_val_batches=0).fit(module, datamodule=data)
    # Nothing was updated with it.
    assert all(torch.equal(v, module.policy.state_dict()[k]) for k, v in before.items())


def _grad_norm(params) -> float:
    """The L2 norm of all the gradients of ``params`` together, by a plain sum of squares."""
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))


class GradNorms(Callback):
    """Each optimizer's gradient norm after the backward (as if unscaled) and as its step applies it.

    ``on_after_backward`` sees the gradients still multiplied by the GradScaler's scale, so it
    divides by that scale; ``on_before_optimizer_step`` comes after Lightning's own unscale,
    right before the update, so it sees the gradients the optimizer uses.
    """

    def __init__(self):
        self.unclipped: list[float] = []
        self.applied: list[float] = []

    def on_after_backward(self, trainer, pl_module):
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        scale = scaler.get_scale() if scaler is not None else 1.0
        for optimizer in trainer.optimizers:
            self.unclipped.append(_grad_norm(_params(optimizer)) / scale)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.applied.append(_grad_norm(_params(optimizer)))


def _params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize("amp", [False, True], ids=["32-true", "16-mixed-grad-scaler"])
def test_gradients_are_clipped_to_max_grad_norm_after_the_loss_scale_is_removed(tiny_model_dir, rl_file, tmp_path,
                                                                               amp):
    # Lightning turns Trainer(precision="16-mixed") on CPU into bf16-mixed, which has no GradScaler;
    # the plugin given explicitly keeps fp16 autocast and a real GradScaler, as on a GPU.
    scale = 2.0**6
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale))] if amp else []
    max_grad_norm = 1e-4  # far below the tiny models' gradient norms, so every update is clipped
    seed_everything(0)
    module = PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, lora=None, value_lora=None,
                       sampling=SamplingSettings(max_new_tokens=4), ppo_epochs=2, mini_batch_size=4,
                       max_grad_norm=max_grad_norm, max_ppo_steps=1, evaluate_at_start=False)
    norms = GradNorms()
    _trainer(tmp_path, [norms], plugins=plugins, enable_checkpointing=False, limit_val_batches=0).fit(
        module, datamodule=_datamodule(rl_file, batch_size=4, val=False))

    assert len(norms.applied) == len(norms.unclipped) == 2 * 2  # (policy, value) × ppo_epochs
    if amp:  # no overflow skipped a step or changed the scale mid-run
        assert module.trainer.precision_plugin.scaler.get_scale() == scale
    assert all(n > 10 * max_grad_norm for n in norms.unclipped), norms.unclipped
    assert norms.applied == pytest.approx([max_grad_norm] * 4, rel=1e-3), norms.applied


def test_value_model_shares_the_reward_models_backbone_with_the_same_numbers(tiny_model_dir, rl_file, tmp_path):
    from seam_lightning.models.loading import export_pretrained, load_reward_model, load_tokenizer

    # A trained-looking RM: a head with weight, saved as an RM stage exports it.
    seed_everything(3)
    rm = load_reward_model(str(tiny_model_dir))
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)
    rm_dir = export_pretrained(rm, load_tokenizer(str(tiny_model_dir)), tmp_path / "rm")

    def run(**kwargs):
        seed_everything(0)
        module = PPOModule(policy=str(tiny_model_dir), reward_model=str(rm_dir), lora=LoRASettings(r=4),
                           value_lora=LoRASettings(r=4, dropout=0.0), sampling=SamplingSettings(max_new_tokens=6),
                           learning_rate=1e-2, ppo_epochs=2, mini_batch_size=4, max_ppo_steps=2,
                           evaluate_at_start=False, **kwargs)
        history = History()
        _trainer(tmp_path / str(len(kwargs)), [history], enable_checkpointing=False, check_val_every_n_epoch=None,
                 val_check_interval=None, limit_val_batches=0).fit(module, datamodule=_datamodule(rl_file))
        return module, history.steps

    shared, shared_steps = run()
    separate, separate_steps = run(value_model=str(rm_dir))  # the value model loaded apart from the RM
    assert shared.shares_reward_backbone and shared.reward_model is None
    assert not separate.shares_reward_backbone and separate.reward_model is not None
    # One backbone fewer: the shared module holds the RM's weights once.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rm_size = count(separate.reward_model)
    assert count(separate) - count(shared) == rm_size
    # The value model trained (adapters and its head copy moved) and still the RM is read unchanged.
    ids = torch.tensor([[1, 40, 41, 42, 2], [1, 50, 51, 52, 53]])
    from seam_lightning.models.forward import sequence_rewards

    with torch.no_grad(), shared.reward() as reward_model:
        via_shared = sequence_rewards(reward_model, ids, torch.ones_like(ids))
    with torch.no_grad():
        assert not torch.allclose(sequence_rewards(shared.value_model, ids, torch.ones_like(ids)), via_shared)
        torch.testing.assert_close(via_shared, sequence_rewards(separate.reward_model, ids, torch.ones_like(ids)))
    # Same PPO trajectory as with three backbones.
    assert len(shared_steps) == len(separate_steps) == 2
    for a, b in zip(shared_steps, separate_steps):
        for key in ("train/reward", "train/kl", "train/value_loss", "train/policy_loss", "train/advantage_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_gradient_checkpointing_gives_the_same_ppo_trajectory(tiny_model_dir, rl_file, tmp_path):
    runs, block_calls = {}, {}
    for checkpointing in (False, True):
        seed_everything(0)
        module = PPOModule(policy=str(tiny_model_dir), reward_model=None, reward_fn=count_o, lora=LoRASettings(r=4),
                           value_lora=LoRASettings(r=4), sampling=SamplingSettings(max_new_tokens=6),
                           learning_rate=1e-2, ppo_epochs=2, mini_batch_size=4, max_ppo_steps=2,
                           evaluate_at_start=False, gradient_checkpointing=checkpointing)
        module.configure_model()
        calls = []
        module.policy.get_base_model().model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
        history = History()
        _trainer(tmp_path / str(checkpointing), [history], enable_checkpointing=False, check_val_every_n_epoch=None,
                 val_check_interval=None, limit_val_batches=0).fit(module, datamodule=_datamodule(rl_file))
        runs[checkpointing], block_calls[checkpointing] = history.steps, len(calls)
        if checkpointing:
            assert all(m.p == 0.0 for m in module.policy.modules() if isinstance(m, torch.nn.Dropout))
    # Active: each of the 2 steps × 2 epochs × 2 mini-batch updates (8 rows, 4 each) re-runs the block
    # in its backward pass; sampling and the rollout run as without checkpointing.
    assert block_calls[True] - block_calls[False] == 2 * 2 * 2
    for plain, checkpointed in zip(runs[False], runs[True]):
        for key in ("train/reward", "train/kl", "train/policy_loss", "train/value_loss", "train/approx_kl"):
            assert checkpointed[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key


def test_casting_frozen_weights_once_per_step_changes_no_number(tiny_model_dir, rl_file, tmp_path, monkeypatch):
    # bf16-mixed: autocast computes every linear layer in bf16; holding the frozen weights in bf16
    # for the step instead of casting them at each forward must give the same run, bit for bit.
    swapped = record_frozen_weight_swaps(monkeypatch)
    top = LoRASettings(r=4, dropout=0.0, layers=[-1])

    def run(cast_once):
        seed_everything(0)
        module = PPOModule(policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), lora=top, value_lora=top,
                           cast_frozen_weights_once=cast_once, sampling=SamplingSettings(max_new_tokens=6),
                           learning_rate=1e-2, ppo_epochs=2, mini_batch_size=2, max_ppo_steps=2,
                           evaluate_at_start=False)
        history = History()
        _trainer(tmp_path / str(cast_once), [history], precision="bf16-mixed", enable_checkpointing=False,
                 limit_val_batches=0).fit(module, datamodule=_datamodule(rl_file, 4, val=False))
        return module, history

    (once, once_history), (per_call, per_call_history) = run(True), run(False)
    # Each step swapped the frozen projections of both backbones (2 blocks × 7 each), the policy's
    # output head (tied to its embedding) and the RM's own score head (kept frozen beside the value
    # model's trained copy); with the option off, none.
    assert swapped == [30, 30, 0, 0]
    assert len(once_history.steps) == 2 and once_history.steps == per_call_history.steps
    for (name, got), expected in zip(once.named_parameters(), per_call.parameters()):
        assert torch.equal(got, expected), name
        assert got.dtype == torch.float32, name  # the fp32 weights are back after each step
    assert once_history.steps[-1]["train/kl"] != 0
