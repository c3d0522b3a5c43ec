import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from seam_lightning.data.collate import pad
from seam_lightning.models import LoRASettings, export_pretrained, load_policy, load_reward_model, load_tokenizer
from seam_lightning.models.bundled import bundled_model_dir
from seam_lightning.models.forward import sequence_rewards

IDS = [[1, 40, 41, 42, 2], [1, 50, 51, 2]]


def _perturb_lora(model):
    # Fresh LoRA B matrices are zero; make the adapter change the output.
    # eval(): LoRA dropout must not make two passes differ.
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def test_lora_freezes_base_weights(tiny_model_dir):
    model = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_policy_export_round_trip_with_plain_transformers_and_peft(tiny_model_dir, tmp_path):
    model = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))
    _perturb_lora(model)
    ids, mask = pad(IDS, 0, "right")
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = export_pretrained(model, load_tokenizer(str(tiny_model_dir)), tmp_path / "export")
    # Merged without touching the trained module: not one bit of it changed (an in-place
    # merge and unmerge would round the frozen weights twice).
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, out / "adapter")
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(adapted(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4)
    assert "lora_A" in str(list(model.state_dict())), "export must not merge the trained module in place"


def test_reward_model_initialised_from_policy_export(tiny_model_dir, tmp_path):
    policy = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))
    _perturb_lora(policy)
    sft_dir = export_pretrained(policy, load_tokenizer(str(tiny_model_dir)), tmp_path / "sft")
    rm = load_reward_model(str(sft_dir), lora=LoRASettings(r=4))
    merged = AutoModelForCausalLM.from_pretrained(sft_dir)
    backbone = rm.get_base_model().model
    # The RM's backbone carries the SFT weights (LoRA merged), not the original base ones.
    torch.testing.assert_close(
        backbone.layers[0].self_attn.q_proj.base_layer.weight, merged.model.layers[0].self_attn.q_proj.weight
    )
    assert any("score" in n for n, p in rm.named_parameters() if p.requires_grad)


def test_reward_model_export_loads_with_plain_transformers(tiny_model_dir, tmp_path):
    rm = load_reward_model(str(tiny_model_dir), lora=LoRASettings(r=4))
    _perturb_lora(rm)
    ids, mask = pad(IDS, 0, "right")
    with torch.no_grad():
        expected = sequence_rewards(rm, ids, mask)
    out = export_pretrained(rm, load_tokenizer(str(tiny_model_dir)), tmp_path / "rm")
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(sequence_rewards(reloaded, ids, mask), expected, atol=1e-4, rtol=1e-4)


def test_adapter_only_folder_loads_onto_its_base(tiny_model_dir, tmp_path):
    model = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4))
    _perturb_lora(model)
    model.save_pretrained(tmp_path / "adapter_only")
    ids, mask = pad(IDS, 0, "right")
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        loaded = load_policy(str(tmp_path / "adapter_only"))
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4, rtol=1e-4)


def test_unknown_bundled_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown bundled model 'bundled:nope'"):
        bundled_model_dir("bundled:nope")


def test_bad_quantization_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match="quantization must be"):
        load_policy(str(tiny_model_dir), quantization="3bit")


def test_attention_soft_capping_is_not_dropped_by_sdpa(family_dirs, tiny_model_dir):
    path = family_dirs("gemma2")
    policy = load_policy(str(path)).eval()  # attn_implementation="sdpa" by default
    assert policy.config.attn_logit_softcapping == 50.0
    # SDPA would ignore the cap; eager attention applies it, as the model was trained.
    assert policy.config._attn_implementation == "eager"
    ids = torch.tensor([[1, 40, 41, 42, 2]])
    eager = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(policy(input_ids=ids).logits, eager(input_ids=ids).logits)
    assert load_policy(str(tiny_model_dir)).config._attn_implementation == "sdpa"  # no cap: SDPA stays
