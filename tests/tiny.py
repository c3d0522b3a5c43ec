"""Tiny models built from a config, with a byte-level BPE tokenizer trained on the spot.

Nothing is downloaded: the tokenizer is trained on a few sentences and the model
has random weights, which is all the mechanics tests need.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What does `json.dumps` do? Serialize obj to a JSON formatted str.",
    "Explain what `os.path.join` is for. Join two or more pathname components.",
    "Return the sum of the values; the quick brown fox jumps over the lazy dog.",
    "Deserialize s to a Python object. Split a pathname into a pair (head, tail).",
]


def build_tokenizer(chat_template: bool) -> PreTrainedTokenizerFast:
    """A ~300-token byte-level BPE tokenizer; ChatML template if ``chat_template``, else none."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_model_dir(path: Path, chat_template: bool = True, seed: int = 0, hidden_size: int = 32) -> Path:
    """Write a 2-layer llama (hidden 32 by default) and its tokenizer to ``path``; returns ``path``."""
    tokenizer = build_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def with_live_adapters(model, seed: int = 0):
    """LoRA B starts at 0 (adapters on = off); random B makes the adapted blocks really differ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model


def first_layer_of(block: torch.nn.Module) -> torch.nn.Module:
    """The block's first submodule with weights of its own (a norm or projection): it runs whenever the block does."""
    return next(m for m in block.modules() if m is not block and next(m.parameters(recurse=False), None) is not None)
