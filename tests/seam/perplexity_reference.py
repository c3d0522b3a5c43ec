"""The tests' own golden-response perplexity: a plain `transformers` forward, independent of the package's code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

WORDS = ["json", "path", "fox", "dog", "zq", "xv", "the", "Join", "str", "value", "lazy", "kk"]


def rl_rows(n: int) -> list[dict[str, str]]:
    """``n`` RL rows whose golden responses differ in length and wording (so their perplexities differ)."""
    return [{"instruction": f"Explain `mod.f{i}`.",
             "response": " ".join(WORDS[(3 * i + k) % len(WORDS)] for k in range(1 + i % 5))} for i in range(n)]


def write_rl(directory: Path, n: int) -> Path:
    """``rl.jsonl`` of :func:`rl_rows` in ``directory``; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rl_rows(n)))
    return path


def plain_perplexity(model, tokenizer, instruction: str, response: str) -> float:
    """exp(mean NLL of the response tokens) from ``model(input_ids).logits.log_softmax`` on one ChatML sequence.

    The prompt is the chat template's user turn plus generation prompt; the response is its
    tokens plus EOS (no truncation: the texts are short).
    """
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
    prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logprobs = model(torch.tensor([prompt + answer])).logits.log_softmax(-1)[0, len(prompt) - 1:-1]
    return math.exp(-logprobs.gather(-1, torch.tensor(answer).unsqueeze(-1)).mean().item())


def ranked(values: dict[int, float], k: int, largest: bool = True) -> list[int]:
    """The ``k`` ids with the largest (or smallest) values; asserts the cut is not a near-tie."""
    order = sorted(values, key=lambda i: values[i], reverse=largest)
    if 0 < k < len(order):
        inside, outside = values[order[k - 1]], values[order[k]]
        assert abs(inside - outside) > 1e-3 * abs(inside), "test data too close to a tie at the cut"
    return order[:k]
