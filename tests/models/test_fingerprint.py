import torch
from lightning.pytorch import seed_everything

from seam_lightning import LoRASettings
from seam_lightning.models.fingerprint import frozen_fingerprint, model_fingerprint
from seam_lightning.models.loading import load_policy, load_reward_model


def test_fingerprint_follows_trained_weights_and_ignores_nothing_else():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before  # deterministic
    with torch.no_grad():
        model[1].weight[0, 2] += 1e-3  # a trained weight moves a little
    assert model_fingerprint(model) != before
    other = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))  # another model, same shapes
    other[0].requires_grad_(False)
    assert model_fingerprint(other) != model_fingerprint(model)


def test_frozen_fingerprint_ignores_training_and_sees_another_base(tiny_model_dir, tmp_path):
    from tiny import build_tiny_model_dir

    model = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))
    before = frozen_fingerprint(model)
    assert before is not None and frozen_fingerprint(model) == before  # deterministic
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).add_(1.0)  # a training step moves adapters only
    assert frozen_fingerprint(model) == before
    assert frozen_fingerprint(load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))) == before  # built again
    other = build_tiny_model_dir(tmp_path / "other", seed=1)
    assert frozen_fingerprint(load_policy(str(other), lora=LoRASettings(r=4))) != before


def test_a_model_without_frozen_weights_has_no_frozen_fingerprint(tiny_model_dir):
    assert frozen_fingerprint(load_policy(str(tiny_model_dir))) is None


def test_a_new_head_drawn_at_random_counts_only_with_the_replaced_originals(tiny_model_dir):
    # A policy loaded as a reward model gets a new score head each time; with LoRA peft trains
    # a copy of it (in the checkpoint) and keeps the random original frozen.
    heads = []
    for seed in (0, 1):
        seed_everything(seed)
        heads.append(load_reward_model(str(tiny_model_dir), lora=LoRASettings(r=4)))
    first, second = heads
    assert frozen_fingerprint(first, with_replaced_originals=False) == frozen_fingerprint(
        second, with_replaced_originals=False)
    assert frozen_fingerprint(first) != frozen_fingerprint(second)
