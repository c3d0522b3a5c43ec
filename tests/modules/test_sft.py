import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from seam_lightning import LoRASettings, SFTModule


def _trainer(tmp_path, steps):
    return Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                   limit_val_batches=2, num_sanity_val_steps=0)


def test_sft_loss_decreases_on_tiny_model(tiny_model_dir, tiny_data, tmp_path):
    seed_everything(0)
    module = SFTModule(model=str(tiny_model_dir), lora=None, learning_rate=3e-3, warmup_steps=2)
    trainer = _trainer(tmp_path, steps=1)
    trainer.validate(module, datamodule=tiny_data, verbose=False)
    before = trainer.callback_metrics["val/loss"].item()
    trainer = _trainer(tmp_path, steps=40)
    trainer.fit(module, datamodule=tiny_data)
    trainer.validate(module, datamodule=tiny_data, verbose=False)
    after = trainer.callback_metrics["val/loss"].item()
    assert after < 0.5 * before, (before, after)
    torch.testing.assert_close(trainer.callback_metrics["val/perplexity"], torch.tensor(after).exp(), rtol=1e-4, atol=0)


def test_sft_checkpoint_keeps_only_lora_weights_and_round_trips(tiny_model_dir, tiny_data, tmp_path):
    seed_everything(0)
    module = SFTModule(model=str(tiny_model_dir), lora=LoRASettings(r=4), learning_rate=1e-2, warmup_steps=0)
    trainer = _trainer(tmp_path, steps=5)
    trainer.fit(module, datamodule=tiny_data)
    path = tmp_path / "sft.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    model_keys = [k for k in state if k.startswith("model.")]
    assert model_keys and all("lora_" in k for k in model_keys)

    restored = SFTModule.load_from_checkpoint(path)
    module.eval(), restored.eval()
    batch = next(iter(tiny_data.val_dataloader()))
    with torch.no_grad():
        expected = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = restored.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected)


def test_sft_exports_for_the_next_stage(tiny_model_dir, tiny_data, tmp_path):
    module = SFTModule(model=str(tiny_model_dir), lora=LoRASettings(r=4), export_dir=str(tmp_path / "export"))
    _trainer(tmp_path, steps=2).fit(module, datamodule=tiny_data)
    assert (tmp_path / "export" / "config.json").is_file()
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "export" / "tokenizer_config.json").is_file()


def _first_step_gradients(module, tiny_data):
    batch = _first_batch(module, tiny_data)
    module.model.train()
    module.training_step(batch, 0).backward()
    return {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}


def _first_batch(module, tiny_data):
    module.configure_model()  # outside a Trainer the module builds its model on request
    tiny_data.connect(module.tokenizer, "sft")
    tiny_data.setup("fit")
    return next(iter(tiny_data.train_dataloader()))


def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_gradients(tiny_model_dir, tiny_data, tmp_path):
    grads, block_calls = {}, {}
    for checkpointing in (False, True):
        seed_everything(0)
        module = SFTModule(model=str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0),
                           gradient_checkpointing=checkpointing)
        module.configure_model()
        block = module.model.get_base_model().model.layers[0]
        calls = []
        # A pre-hook: a recomputation stops as soon as it has rebuilt what the backward needs.
        block.register_forward_pre_hook(lambda *_: calls.append(1))
        grads[checkpointing] = _first_step_gradients(module, tiny_data)
        block_calls[checkpointing] = len(calls)
    # With checkpointing the block runs again during the backward pass, to rebuild its activations.
    assert block_calls == {False: 1, True: 2}
    assert grads[True].keys() == grads[False].keys()
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-5, atol=1e-7)


def test_bfloat16_weights_are_held_in_bfloat16_and_train(tiny_model_dir, tiny_data, tmp_path):
    seed_everything(0)
    full = SFTModule(model=str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0))
    seed_everything(0)
    half = SFTModule(model=str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0), dtype="bfloat16")
    assert half.model is None  # built in configure_model, where the strategy decides placement
    full.configure_model(), half.configure_model()
    frozen = [p for p in half.model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)  # the weights, not only autocast
    batch = _first_batch(half, tiny_data)
    with torch.no_grad():
        half_loss, full_loss = half.training_step(batch, 0), full.training_step(batch, 0)
    assert half_loss.isfinite() and half_loss.item() == pytest.approx(full_loss.item(), rel=2e-2)
    _trainer(tmp_path, steps=2).fit(half, datamodule=tiny_data)  # and a bf16 run trains
