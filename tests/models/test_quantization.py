import sys

import pytest
import torch

from seam_lightning.models import LoRASettings, export_pretrained, load_policy, load_reward_model, load_tokenizer
from seam_lightning.models.forward import response_nll, sequence_rewards
from tiny import build_tiny_model_dir

IDS = torch.tensor([[1, 40, 41, 42, 2]])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # bitsandbytes' CPU 4-bit kernels work on blocks of 64 inputs: hidden 32 is too small.
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny64"), hidden_size=64)


@pytest.mark.parametrize("quantization,layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_lora_policy_trains_and_exports_its_adapter(model_dir, tmp_path, quantization, layer):
    model = load_policy(str(model_dir), lora=LoRASettings(r=4), quantization=quantization)
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == layer
    nll, _ = response_nll(model, IDS, torch.ones_like(IDS), IDS.clone())
    nll.backward()
    assert q_proj.lora_A["default"].weight.grad is not None
    out = export_pretrained(model, load_tokenizer(str(model_dir)), tmp_path / "export")
    # Quantized exports are the adapter alone; loading it merges it into the full-precision base.
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    reloaded = load_policy(str(out))
    assert torch.isfinite(reloaded(input_ids=IDS).logits).all()


def test_quantized_reward_model_scores(model_dir):
    rm = load_reward_model(str(model_dir), lora=LoRASettings(r=4), quantization="4bit")
    assert torch.isfinite(sequence_rewards(rm, IDS, torch.ones_like(IDS))).all()


def test_missing_bitsandbytes_is_a_clear_error(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails, as on unsupported hardware
    with pytest.raises(RuntimeError, match="quantization='4bit' needs a working bitsandbytes"):
        load_policy(str(model_dir), quantization="4bit")
