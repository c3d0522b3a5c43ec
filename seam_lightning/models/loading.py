"""Loading policies and reward models, with optional LoRA and 4-/8-bit weights.

One entry point per model kind: :func:`load_policy` (a causal LM) and
:func:`load_reward_model` (the same backbone family with a scalar head). A model
is named by hub name, local folder, stage export folder, or ``bundled:<Name>``.
A folder holding only a LoRA adapter is loaded onto the base model its
``adapter_config.json`` names and merged, so a new adapter can be trained on top.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from seam_lightning.files import atomic_directory
from seam_lightning.hardware import cpu_has_native_bf16
from seam_lightning.models.attention import register_attention
from seam_lightning.models.bundled import bundled_model_dir, is_bundled
from seam_lightning.models.forward import check_output_logits

log = logging.getLogger(__name__)

DEFAULT_MODEL = "bundled:SmolLM2-135M-Instruct"
Quantization = Literal["4bit", "8bit"]
DType = Literal["float32", "bfloat16", "float16"]
Attention = Literal["sdpa", "eager", "flash_attention_2", "seam_grouped"]
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoRASettings:
    """LoRA adapter settings (peft).

    ``target_modules="all-linear"`` adapts every linear layer but the output one.
    ``layers`` limits the adapters to these transformer blocks (peft's
    ``layers_to_transform``); a negative index counts from the top. Adapting only
    the top blocks also stops back-propagation below them, which makes a step
    several times cheaper on small hardware.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = field(default="all-linear")
    layers: list[int] | None = None


def resolve_model_path(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` accepts (bundled names become folders)."""
    return str(bundled_model_dir(name)) if is_bundled(name) else name


def is_adapter_dir(path: str) -> bool:
    """True for a folder holding a LoRA adapter but no full model."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token (EOS when it has none: padding is always masked)."""
    path = resolve_model_path(name)
    if is_adapter_dir(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = _adapter_base(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    name: str,
    lora: LoRASettings | None = None,
    quantization: Quantization | None = None,
    dtype: DType = "float32",
    attn_implementation: Attention = "sdpa",
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """A causal LM policy; with ``lora`` a trainable peft model whose base weights are frozen.

    ``dtype`` is the weights' precision (not only autocast's); ``attn_implementation``
    is passed to ``from_pretrained``; ``gradient_checkpointing`` recomputes block
    activations in the backward pass instead of keeping them.
    """
    model = _load_merged(AutoModelForCausalLM, name, quantization, dtype, attn_implementation)
    check_output_logits(model)
    return _add_lora(_checkpointing(model, gradient_checkpointing), lora, "CAUSAL_LM", quantization)


def load_reward_model(
    name: str,
    lora: LoRASettings | None = None,
    quantization: Quantization | None = None,
    dtype: DType = "float32",
    attn_implementation: Attention = "sdpa",
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """A reward model: the backbone of ``name`` plus a scalar head (new if ``name`` is a policy).

    Initialising it from the SFT policy's folder gives the paper's RM initialisation.
    With LoRA the head is trained in full alongside the adapters. ``config.pad_token_id``
    is set to the tokenizer's pad id, so plain ``AutoModelForSequenceClassification``
    reads the reward at the same token as training does (see
    :func:`seam_lightning.models.forward.reward_token_index`). Other arguments: see
    :func:`load_policy`.
    """
    check_reward_family(name)
    model = _load_merged(AutoModelForSequenceClassification, name, quantization, dtype, attn_implementation,
                         num_labels=1)
    model.config.pad_token_id = load_tokenizer(name).pad_token_id
    return _add_lora(_checkpointing(model, gradient_checkpointing), lora, "SEQ_CLS", quantization)


def check_reward_family(name: str) -> None:
    """Raise unless transformers has a sequence-classification class for the family of ``name``.

    Cheap (reads the config only), so modules call it when built, long before weights load.
    """
    model_type = AutoConfig.from_pretrained(_base_path(name)).model_type
    if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(
            f"{name}: transformers has no sequence-classification class for model type {model_type!r}, so it "
            "cannot be a reward or value model here (nor be loaded as one by TRL or pipelines); "
            "use a model of another family for the reward model"
        )


def _checkpointing(model: PreTrainedModel, enabled: bool) -> PreTrainedModel:
    if enabled:
        # Non-reentrant checkpointing also works when only LoRA adapters need gradients.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _adapter_base(path: str) -> str:
    with open(Path(path) / ADAPTER_CONFIG) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path}/{ADAPTER_CONFIG}: no base_model_name_or_path; cannot tell which model it adapts")
    return base


def _base_path(name: str) -> str:
    """The folder or hub name holding the full model of ``name`` (an adapter folder's base model)."""
    path = resolve_model_path(name)
    return resolve_model_path(_adapter_base(path)) if is_adapter_dir(path) else path


def attention_for(config, requested: str) -> str:
    """The attention implementation to load: ``requested``, unless it would silently change the model.

    PyTorch's SDPA kernel cannot soft-cap attention scores, and transformers passes
    Gemma-2's ``attn_logit_softcapping`` to it without a word; such a model gets eager
    attention, which applies the cap (flash-attention 2 applies it too).
    """
    if requested == "sdpa" and getattr(config, "attn_logit_softcapping", None):
        log.warning("%s soft-caps attention scores, which SDPA cannot do: using eager attention",
                    config.model_type)
        return "eager"
    return requested


def _load_merged(auto_cls, name: str, quantization: Quantization | None, dtype: str, attn_implementation: str,
                 **kwargs) -> PreTrainedModel:
    path = resolve_model_path(name)
    adapter = None
    if is_adapter_dir(path):
        adapter, path = path, resolve_model_path(_adapter_base(path))
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    kwargs["dtype"] = getattr(torch, dtype)
    if dtype == "bfloat16" and quantization is None and not torch.cuda.is_available() and not cpu_has_native_bf16():
        log.warning("%s: bf16 weights on a CPU without native bf16 are emulated and run two orders of magnitude "
                    "slower than float32 here; use dtype=float32 on this machine", name)
    kwargs["attn_implementation"] = attention_for(AutoConfig.from_pretrained(path), attn_implementation)
    register_attention(kwargs["attn_implementation"])
    if quantization is not None:
        kwargs["quantization_config"] = _bnb_config(quantization, kwargs["dtype"])
        kwargs["device_map"] = {"": _quantized_device()}
    model = auto_cls.from_pretrained(path, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        log.info("merging the LoRA adapter %s into %s", adapter, path)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def _bnb_config(quantization: Quantization, compute_dtype: torch.dtype):
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as err:  # bitsandbytes raises several kinds on unsupported hardware
        raise RuntimeError(f"quantization={quantization!r} needs a working bitsandbytes: {err}") from err
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=True
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be '4bit', '8bit' or None, got {quantization!r}")


def _quantized_device() -> str:
    # bitsandbytes places weights at load time, so the device must be known
    # now rather than chosen later by Lightning.
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _add_lora(model: PreTrainedModel, lora: LoRASettings | None, task_type: str, quantization: Quantization | None):
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    layers, targets = None, lora.target_modules
    if lora.layers is not None:
        n = model.config.num_hidden_layers
        if any(not -n <= i < n for i in lora.layers):
            raise ValueError(f"lora.layers {lora.layers} out of range for a model with {n} layers")
        layers = sorted({i % n for i in lora.layers})
        if targets == "all-linear":
            # peft accepts a layer subset only with explicit module names.
            targets = _block_linear_names(model)
    config = LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        layers_to_transform=layers,
    )
    return get_peft_model(model, config)


def _block_linear_names(model: PreTrainedModel) -> list[str]:
    """Short names of the linear layers inside the transformer blocks (what "all-linear" adapts)."""
    heads = {id(model.get_output_embeddings()), id(getattr(model, "score", None))}
    names = sorted({
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and id(module) not in heads and ".layers." in f".{name}"
    })
    if not names:
        raise ValueError(f"cannot find the block linear layers of {type(model).__name__}; "
                         "give lora.target_modules as a list of module names")
    return names


def export_pretrained(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save a stage's result so that the next stage (or plain transformers + peft) loads it by path.

    The folder holds the full merged model and tokenizer (``from_pretrained(out_dir)``);
    with LoRA it also holds the adapter alone in ``adapter/`` (``PeftModel.from_pretrained``
    onto the model this stage started from). Quantized models are exported as the adapter
    only, in the folder itself, since merging into 4-/8-bit weights loses precision.
    The merged weights are computed layer by layer into CPU memory (:func:`merged_state_dict`):
    the trained model is neither copied nor changed, so a GPU never holds the weights twice.
    The folder is written beside its final place and renamed, so a crash never leaves half of one.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        if isinstance(model, PeftModel):
            quantized = getattr(model.get_base_model(), "is_quantized", False)
            model.save_pretrained(tmp if quantized else tmp / "adapter")
            if not quantized:
                model.get_base_model().save_pretrained(tmp, state_dict=merged_state_dict(model))
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def merged_state_dict(model) -> dict[str, Tensor]:
    """The plain state dict of a LoRA peft model with its active adapter merged, on the CPU.

    Each adapted weight becomes W + ΔW, added in float32 and rounded once to W's dtype
    (peft's in-place merge and unmerge would round the frozen base twice); head copies
    trained in full (``modules_to_save``) replace their originals; adapter weights are
    dropped. Keys are those of the model without peft, so ``from_pretrained`` loads it.
    """
    from peft.tuners.lora import LoraLayer

    adapter = model.active_adapter
    base = model.get_base_model()
    adapted = {f"{name}.base_layer.weight": module for name, module in base.named_modules()
               if isinstance(module, LoraLayer) and (adapter in module.lora_A or adapter in module.lora_embedding_A)}
    merged = {}
    for key, value in base.state_dict().items():
        parts = key.split(".")
        if any(part.startswith("lora_") for part in parts) or "original_module" in parts:
            continue
        if key in adapted:
            delta = adapted[key].get_delta_weight(adapter)
            value = (value.float() + delta.float()).to(value.dtype)
        merged[key.replace(".base_layer.", ".").replace(f".modules_to_save.{adapter}.", ".")] = value.detach().cpu()
    return merged
