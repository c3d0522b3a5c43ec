"""The paper's §7 "LLaMa" baseline: the perplexity of each prompt's golden response under a language model.

The prompts with the highest perplexity are filtered, as SEAM filters the largest
discrepancy; :func:`seam_lightning.seam.selection.select_fraction` picks them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from tqdm.auto import tqdm

from seam_lightning.data.collate import IGNORE_INDEX
from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.models.batching import eval_mode, pad_id_of, run_sequences
from seam_lightning.models.forward import response_logprob_sums


def perplexity(logprob_sum: float, n_tokens: int) -> float:
    """exp(−mean token log-prob): the perplexity of a response of ``n_tokens`` tokens (paper §7's baseline).

    A mean NLL beyond float64's range gives ``inf`` rather than an OverflowError.
    """
    if n_tokens < 1:
        raise ValueError(f"perplexity needs at least one token, got {n_tokens}")
    mean_nll = -logprob_sum / n_tokens
    return math.exp(mean_nll) if mean_nll < 709.0 else math.inf


def golden_perplexities(model: nn.Module, formatter: PromptFormatter, examples: Iterable[tuple[int, str, str]],
                        token_budget: int, prompts_per_chunk: int = 256,
                        progress: bool = False) -> dict[int, float]:
    """Perplexity of each golden response r given its instruction I under the causal LM ``model``.

    The number of the paper's §7 baseline "LLaMa" (LLaMa2-7B perplexity; the highest is filtered).

    ``examples`` are ``(id, instruction, golden response)``. Prompt and response are
    formatted and truncated by ``formatter`` exactly as training formats them (the
    response ends with EOS unless it was cut), and only the response tokens count:
    perplexity = exp(mean NLL of r's tokens | I). Sequences run in ``token_budget``
    batches under inference and eval mode with padding-safe forwards, so the numbers
    do not depend on the batching. Results are keyed by id.
    """
    tokenizer = formatter.tokenizer
    out: dict[int, float] = {}
    iterator = iter(examples)
    bar = tqdm(total=len(examples) if hasattr(examples, "__len__") else None, disable=not progress,
               desc="perplexity", unit="prompt")
    with bar, torch.inference_mode(), eval_mode(model):
        while chunk := list(islice(iterator, prompts_per_chunk)):
            sequences, labels, lengths = [], [], []
            for _, instruction, response in chunk:
                prompt = formatter.prompt_ids(instruction).ids
                answer = formatter.response_ids(response).ids
                sequences.append(prompt + answer)
                labels.append([IGNORE_INDEX] * len(prompt) + answer)
                lengths.append(len(answer))
            sums = run_sequences(model, response_logprob_sums, sequences, pad_id_of(tokenizer),
                                 getattr(tokenizer, "padding_side", "right"), token_budget, labels)
            for (example_id, _, _), total, n in zip(chunk, sums, lengths):
                if not math.isfinite(total):
                    raise ValueError(f"perplexity: non-finite log-prob ({total}) of the golden response of "
                                     f"example id {example_id}")
                out[example_id] = perplexity(total, n)
            bar.update(len(chunk))
    return out

