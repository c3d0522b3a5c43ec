"""SEAM_GPT: a chat model writes worse answers (the paper's Prompt 2); ``replies`` splits its reply into answers."""

from seam_lightning.seam.sources.llm.source import LLMSource

__all__ = ["LLMSource"]
