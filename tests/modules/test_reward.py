import torch
from lightning.pytorch import Trainer, seed_everything

from seam_lightning import LoRASettings, RewardModule
from seam_lightning.modules.losses import pairwise_ranking_loss, preference_correct


def test_pairwise_loss_on_hand_computed_values():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # −log σ(1) = 0.3133, −log σ(−2) = 2.1269
    torch.testing.assert_close(pairwise_ranking_loss(chosen, rejected), torch.tensor((0.313262 + 2.126928) / 2))
    assert preference_correct(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])).tolist() == [1.0, 0.0]


def test_reward_model_learns_preferences_on_tiny_model(tiny_model_dir, tiny_data, tmp_path):
    seed_everything(0)
    module = RewardModule(model=str(tiny_model_dir), lora=LoRASettings(r=8), learning_rate=1e-2, warmup_steps=0)
    kwargs = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer = Trainer(max_steps=1, **kwargs)
    trainer.validate(module, datamodule=tiny_data, verbose=False)
    before = trainer.callback_metrics["val/loss"].item()
    trainer = Trainer(max_steps=60, **kwargs)
    trainer.fit(module, datamodule=tiny_data)
    trainer.validate(module, datamodule=tiny_data, verbose=False)
    assert trainer.callback_metrics["val/loss"].item() < 0.5 * before
    assert trainer.callback_metrics["val/accuracy"].item() == 1.0
