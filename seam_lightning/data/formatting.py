"""Prompt formatting and tokenization, in one place for every stage.

A prompt is, by default, the tokenizer's chat template applied to a single user
turn (after an optional system turn) with the generation prompt, or, for
tokenizers without a template, the plain template :data:`PLAIN_TEMPLATE`. A plain
``template`` given explicitly wins over the chat template, e.g. StackLLaMA's
:data:`STACK_LLAMA_TEMPLATE`, which the paper's setup uses. A response is its
tokens followed by EOS.
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

STACK_LLAMA_TEMPLATE = "Question: {instruction}\n\nAnswer: "
"""StackLLaMA's prompt (the paper's StackExchange setup builds on it)."""

Overlong = Literal["truncate", "drop"]


@dataclass
class Truncated:
    """Token ids of one field after applying its limit."""

    ids: list[int]
    truncated: bool


class PromptFormatter:
    """Turns instructions and responses into token ids for one tokenizer.

    ``template``: a plain prompt template with ``{instruction}`` (None: the tokenizer's chat
    template, or :data:`PLAIN_TEMPLATE` without one). ``system_prompt``: a system turn for the
    chat template, or a first paragraph before a plain template (None: none).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_instruction_tokens: int, max_response_tokens: int,
                 template: str | None = None, system_prompt: str | None = None):
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token; responses need one to end")
        check_template(template)
        self.tokenizer = tokenizer
        self.max_instruction_tokens = max_instruction_tokens
        self.max_response_tokens = max_response_tokens
        self.uses_chat_template = template is None and bool(getattr(tokenizer, "chat_template", None))
        self.template = template or PLAIN_TEMPLATE
        self.system_prompt = system_prompt

    def prompt_ids(self, instruction: str) -> Truncated:
        """Token ids of the full prompt for ``instruction``, truncated at the instruction's limit."""
        # The limit applies to the instruction's own tokens; the template is added after.
        cut = self._limit(instruction, self.max_instruction_tokens)
        # A cut inside a multi-byte character decodes to U+FFFD, which re-encodes as several
        # tokens: drop it, so the prompt stays within the limit.
        text = self.tokenizer.decode(cut.ids).rstrip("\ufffd") if cut.truncated else instruction
        if self.uses_chat_template:
            # The template writes its own special tokens, so none are added here.
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            rendered = self.tokenizer.apply_chat_template(
                [*system, {"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            system = f"{self.system_prompt}\n\n" if self.system_prompt else ""
            # str.replace, not format: an instruction or template may hold other braces.
            ids = self.tokenizer(system + self.template.replace("{instruction}", text))["input_ids"]
        return Truncated(ids, cut.truncated)

    def response_ids(self, response: str) -> Truncated:
        """Token ids of a response plus EOS; a response cut at the limit gets no EOS (it did not end)."""
        cut = self._limit(response, self.max_response_tokens)
        return cut if cut.truncated else Truncated(cut.ids + [self.tokenizer.eos_token_id], False)

    def _limit(self, text: str, limit: int) -> Truncated:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Truncated(ids[:limit], len(ids) > limit)


def prompt_format(owner: object) -> dict[str, object]:
    """The :class:`PromptFormatter` settings of a data module (defaults where it lacks one).

    Everything that formats a stage's texts outside the data module (SEAM scoring, the
    adversarial victim, perplexity) reads them here, so it formats exactly as training did.
    """
    return {"max_instruction_tokens": getattr(owner, "max_instruction_tokens", 128),
            "max_response_tokens": getattr(owner, "max_response_tokens", 192),
            "template": getattr(owner, "prompt_template", None),
            "system_prompt": getattr(owner, "system_prompt", None)}


def check_template(template: str | None) -> None:
    """A plain template must hold ``{instruction}`` exactly once."""
    if template is not None and template.count("{instruction}") != 1:
        raise ValueError(f"prompt template must contain '{{instruction}}' exactly once, got {template!r}")
