"""Prompt formatting and tokenization, in one place for every stage.

A prompt is the tokenizer's chat template applied to a single user turn (with
the generation prompt), or, for tokenizers without a template, the plain
template :data:`PLAIN_TEMPLATE`. A response is its tokens followed by EOS.
Prompt and response are tokenized separately and concatenated, so the boundary
between them — and hence the SFT loss mask — is exact, and a generated response
(which starts right after the prompt's tokens) sees the same prompt ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
"""Template for tokenizers without a chat template (BOS, if the tokenizer adds one, goes first)."""

Overlong = Literal["truncate", "drop"]


@dataclass
class Truncated:
    """Token ids of one field after applying its limit."""

    ids: list[int]
    truncated: bool


class PromptFormatter:
    """Turns instructions and responses into token ids for one tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_instruction_tokens: int, max_response_tokens: int):
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token; responses need one to end")
        self.tokenizer = tokenizer
        self.max_instruction_tokens = max_instruction_tokens
        self.max_response_tokens = max_response_tokens
        self.uses_chat_template = bool(getattr(tokenizer, "chat_template", None))

    def prompt_ids(self, instruction: str) -> Truncated:
        """Token ids of the full prompt for ``instruction``, truncated at the instruction's limit."""
        # The limit applies to the instruction's own tokens; the template is added after.
        cut = self._limit(instruction, self.max_instruction_tokens)
        # A cut inside a multi-byte character decodes to U+FFFD, which re-encodes as several
        # tokens: drop it, so the prompt stays within the limit.
        text = self.tokenizer.decode(cut.ids).rstrip("\ufffd") if cut.truncated else instruction
        if self.uses_chat_template:
            # The template writes its own special tokens, so none are added here.
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(PLAIN_TEMPLATE.format(instruction=text))["input_ids"]
        return Truncated(ids, cut.truncated)

    def response_ids(self, response: str) -> Truncated:
        """Token ids of a response plus EOS; a response cut at the limit gets no EOS (it did not end)."""
        cut = self._limit(response, self.max_response_tokens)
        return cut if cut.truncated else Truncated(cut.ids + [self.tokenizer.eos_token_id], False)

    def _limit(self, text: str, limit: int) -> Truncated:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Truncated(ids[:limit], len(ids) > limit)
