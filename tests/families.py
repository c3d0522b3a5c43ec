"""Tiny random models of every decoder family the package claims to support.

Each family gets what makes it differ from llama in a way a forward pass can get
wrong: an untied output head whose logits are as large as a trained model's (so
Gemma-2/3's final soft-capping really caps), Cohere's ``logit_scale``, Granite's
``logits_scaling`` and embedding/residual/attention multipliers, Gemma's scaled
embeddings, Qwen3/OLMo2's q/k norms, GPT-NeoX's partial rotary, GPT-2's learned
positions. The checkpoint also ships an instruct-style ``generation_config.json``
(sampling on, temperature, top-p/k, repetition penalty), as Qwen2.5-Instruct and
Llama-3-Instruct do, which code that wants plain greedy or its own sampling must
not pick up. Everything is built from configs: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    CohereConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GenerationConfig,
    GPT2Config,
    GPTNeoXConfig,
    GraniteConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from tiny import build_tokenizer

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "cohere", "granite", "olmo2",
            "gpt2", "gpt_neox"]

HIDDEN = 32
SOFTCAP = 30.0  # gemma2 / gemma3 final_logit_softcapping
COHERE_LOGIT_SCALE = 0.5
GRANITE_LOGITS_SCALING = 4.0
# Standard deviation of the (pre-soft-capping) logits: the largest of ~300 are then ~45, above the cap.
LOGIT_STD = 15.0

# What Qwen2.5-Instruct / Llama-3-Instruct ship in generation_config.json.
INSTRUCT_GENERATION = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.3)

# A few sentences in the tokenizer's training corpus: the head is scaled on their hidden states.
CALIBRATION_TEXT = "Return the sum of the values; the quick brown fox jumps over the lazy dog."
# Greedy decoding of this chat prompt emits EOS by step EOS_STEP (a random model rarely would on its own).
EOS_PROMPT = "Join two"
EOS_STEP = 2
# Families with a sliding-window option (build_family_model_dir(..., sliding_window=w)).
WINDOWED_FAMILIES = ["mistral", "phi3", "gemma2", "gemma3"]


def _config(family: str, vocab_size: int, eos: int, pad: int, bos: int):
    ids = dict(eos_token_id=eos, pad_token_id=pad, bos_token_id=bos, tie_word_embeddings=False)
    decoder = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **ids)
    head_dim = HIDDEN // 4
    if family == "llama":
        return LlamaConfig(**decoder)
    if family == "mistral":
        return MistralConfig(**decoder)
    if family == "qwen2":
        return Qwen2Config(**decoder)
    if family == "qwen3":
        return Qwen3Config(head_dim=head_dim, **decoder)  # head_dim defaults to 128
    if family == "gemma":
        return GemmaConfig(head_dim=head_dim, hidden_activation="gelu_pytorch_tanh", **decoder)  # head_dim: 256
    if family == "gemma2":
        return Gemma2Config(head_dim=head_dim, query_pre_attn_scalar=head_dim, final_logit_softcapping=SOFTCAP,
                            attn_logit_softcapping=50.0, **decoder)
    if family == "gemma3":
        # Text-only Gemma 3 (Gemma3ForCausalLM); one sliding and one global layer, as the real pattern mixes them.
        return Gemma3TextConfig(head_dim=head_dim, query_pre_attn_scalar=head_dim, final_logit_softcapping=SOFTCAP,
                                layer_types=["sliding_attention", "full_attention"], **decoder)
    if family == "phi3":
        return Phi3Config(original_max_position_embeddings=512, **decoder)
    if family == "cohere":
        return CohereConfig(logit_scale=COHERE_LOGIT_SCALE, **decoder)
    if family == "granite":
        return GraniteConfig(logits_scaling=GRANITE_LOGITS_SCALING, embedding_multiplier=6.0, residual_multiplier=0.5,
                             attention_multiplier=0.2, **decoder)
    if family == "olmo2":
        return Olmo2Config(**decoder)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=512, **ids)
    if family == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                             num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512, **ids)
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def raw_logit_scale(config) -> float:
    """What the family multiplies ``lm_head(hidden)`` by before any soft-capping."""
    if config.model_type == "cohere":
        return config.logit_scale
    if config.model_type == "granite":
        return 1.0 / config.logits_scaling
    return 1.0


@torch.no_grad()
def raw_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of a plain causal LM before the final soft-capping: its output head's output, family-scaled.

    Read with a hook on the head during an ordinary forward, so no family's module layout is assumed.
    """
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        model(input_ids=input_ids)
    finally:
        handle.remove()
    return seen[0] * raw_logit_scale(model.config)


@torch.no_grad()
def _make_eos_reachable(model, tokenizer) -> None:
    """Let greedy decoding of EOS_PROMPT end with EOS at step EOS_STEP.

    The EOS row of the head becomes 1.05 × the row of the token greedy decoding picks there:
    wherever that token would win (a positive logit), EOS now wins by 5% instead. Earlier
    steps do not change (the head is untied: the hidden states stay the same).
    """
    seq = tokenizer.apply_chat_template([{"role": "user", "content": EOS_PROMPT}], add_generation_prompt=True,
                                        tokenize=True)
    for _ in range(EOS_STEP + 1):
        token = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            return
        seq.append(token)
    weight = model.get_output_embeddings().weight
    weight[tokenizer.eos_token_id] = 1.05 * weight[seq[-1]]


def build_family_model_dir(path: Path, family: str, seed: int = 0, sliding_window: int | None = None) -> Path:
    """Write a 2-layer random ``family`` model, its ChatML tokenizer and instruct generation defaults to ``path``.

    ``sliding_window`` (families in WINDOWED_FAMILIES) makes the sliding-window layers see only that many
    tokens, so that test sequences are longer than the window (real ones: Gemma-3 512-1024, Mistral-7B-v0.1
    and Gemma-2 4096, Phi-3-mini 2047). Gemma-2/3 alternate sliding and global layers; Mistral and Phi-3
    slide in every layer.
    """
    path = Path(path)
    tokenizer = build_tokenizer(chat_template=True)  # pad == EOS == <|im_end|>, as in real chat models
    eos, pad, bos = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    config = _config(family, len(tokenizer), eos, pad, bos)
    if sliding_window is not None:
        if family not in WINDOWED_FAMILIES:
            raise ValueError(f"{family}: no sliding-window option here; windowed families: {WINDOWED_FAMILIES}")
        config.sliding_window = sliding_window
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight, f"{family}: head is tied"
    # Scale the untied head so that logits are as large as a trained model's.
    calibration = torch.tensor([tokenizer(CALIBRATION_TEXT, add_special_tokens=False)["input_ids"]])
    std = raw_logits(model, calibration).std().item()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(LOGIT_STD / std)
    _make_eos_reachable(model, tokenizer)
    model.generation_config = GenerationConfig(**INSTRUCT_GENERATION, eos_token_id=eos, pad_token_id=pad,
                                               bos_token_id=bos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
