"""Chat models as a service: back ends (OpenAI-compatible endpoints, local transformers), the completion cache, template checks.

Used by the SEAM_GPT candidate source and by the LLM judge.
"""

from seam_lightning.llm.chat import (
    ChatBackend,
    ChatBackendError,
    ChatRequestRejected,
    Completion,
    OpenAIBackend,
    TransformersBackend,
    Usage,
)
from seam_lightning.llm.completion_cache import CompletionCache

__all__ = [
    "ChatBackend",
    "ChatBackendError",
    "ChatRequestRejected",
    "Completion",
    "CompletionCache",
    "OpenAIBackend",
    "TransformersBackend",
    "Usage",
]
