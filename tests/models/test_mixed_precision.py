"""Frozen linear weights held in autocast's dtype: the same outputs as autocast casting them per call."""

import torch
from torch import nn

from seam_lightning import LoRASettings
from seam_lightning.models.loading import load_policy
from seam_lightning.models.mixed_precision import autocast_dtype, frozen_linear_weights_in


def _logits(model, ids):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(input_ids=ids).logits


def test_outputs_are_bitwise_those_of_plain_autocast(tiny_model_dir):
    model = load_policy(str(tiny_model_dir), lora=LoRASettings(r=4, dropout=0.0, layers=[-1])).eval()
    for name, p in model.named_parameters():  # adapters that are not zero, so they take part
        if "lora_B" in name:
            nn.init.normal_(p, std=0.5)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    expected = _logits(model, ids)
    before = dict(model.named_parameters())
    before_embedding = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is before_embedding  # the tiny model ties them, as SmolLM2 does
    with frozen_linear_weights_in(torch.bfloat16, model) as swapped:
        inside = {n: p for n, p in model.named_parameters()}
        got = _logits(model, ids)
        head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert torch.equal(got, expected)
    # 2 blocks × 7 projections and the output head. The head is tied to the embedding: it
    # computes with a bf16 copy while the embedding lookup keeps the fp32 table.
    assert swapped == 15
    assert head.dtype == torch.bfloat16 and embedding.dtype == torch.float32 and embedding is before_embedding
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied again
    cast = {n for n, p in inside.items() if p.dtype == torch.bfloat16}
    assert cast and all("base_layer" in n or "lora" not in n for n in cast)
    assert not any("embed" in n for n in cast)
    assert not any(inside[n].requires_grad for n in cast)
    assert all(inside[n] is before[n] for n in before if "lora_" in n)  # trainable adapters untouched
    # Afterwards every parameter is the original object again, in fp32.
    assert all(p is before[n] and p.dtype == torch.float32 for n, p in model.named_parameters())


def test_originals_come_back_after_an_error(tiny_model_dir):
    model = load_policy(str(tiny_model_dir)).eval()
    model.requires_grad_(False)
    before = dict(model.named_parameters())
    try:
        with frozen_linear_weights_in(torch.bfloat16, model):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(p is before[n] for n, p in model.named_parameters())


def test_nothing_changes_without_autocast(tiny_model_dir):
    model = load_policy(str(tiny_model_dir)).eval()
    model.requires_grad_(False)
    assert autocast_dtype(torch.device("cpu")) is None
    with frozen_linear_weights_in(autocast_dtype(torch.device("cpu")), model) as swapped:
        assert swapped == 0 and all(p.dtype == torch.float32 for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_dtype(torch.device("cpu")) == torch.bfloat16
