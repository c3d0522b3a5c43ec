"""The SEAM candidate sources as the drivers build them from flags: contrast, LLM (SEAM_GPT) and adversarial."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from experiments.common import device
from seam_lightning import DataSource
from seam_lightning.llm.chat import ChatBackend, OpenAIBackend, TransformersBackend
from seam_lightning.seam.sources import AdversarialSource, CandidateSource, ContrastSource, LLMSource


def contrast_source(args: argparse.Namespace) -> ContrastSource:
    """SEAM_Contrast over demo://sft_train as in cli.yaml (MiniLM encoder, band [0.8, 0.9])."""
    return ContrastSource(corpus=DataSource(args.corpus_data, limit=args.corpus_limit), band=(0.8, 0.9))


LOCAL_LLM = "local:"
"""--llm-model's prefix for a local causal LM (``local:<name or path>``; ``local:`` alone: π_SFT)."""


def add_source_args(parser: ArgumentParser, adv_query_budget: int, without_llm: str) -> None:
    """The flags of the LLM (SEAM_GPT) and adversarial (SEAM_Adv) candidate sources.

    ``adv_query_budget``: the driver's default RM queries per attacked candidate; ``without_llm``: what the
    driver does without --llm-model (for its help).
    """
    p = parser.add_argument
    p("--llm-model", default=None, help="SEAM_GPT's writer of worse answers (LLMSource, the paper's Prompt 2; paper: "
                                        f"gpt-4-0613): a model NAME at --llm-endpoint, or '{LOCAL_LLM}<name or path>' "
                                        f"for a local causal LM ('{LOCAL_LLM}' alone: π_SFT); {without_llm}")
    p("--llm-endpoint", default=None, help="its OpenAI-compatible base URL (default $OPENAI_BASE_URL, else OpenAI's)")
    p("--llm-api-key-env", default="OPENAI_API_KEY", help="environment variable holding that endpoint's key")
    p("--adv-attack", default="deepwordbug", help="SEAM_Adv's attack (AdversarialSource: deepwordbug, pwws, ga, …)")
    p("--adv-query-budget", type=int, default=adv_query_budget, help="RM queries per attacked candidate")


def llm_backend(args: argparse.Namespace, policy: str) -> ChatBackend:
    """--llm-model's chat model: ``local:<name or path>`` samples a local causal LM on the run's device (``local:``
    alone: ``policy``, π_SFT); any other name is asked at the OpenAI-compatible --llm-endpoint."""
    if args.llm_model.startswith(LOCAL_LLM):
        return TransformersBackend(args.llm_model[len(LOCAL_LLM):] or policy, device=str(device(args)))
    return OpenAIBackend(args.llm_model, base_url=args.llm_endpoint, api_key_env=args.llm_api_key_env)


def llm_source(args: argparse.Namespace, policy: str, cache_dir: str | Path) -> LLMSource:
    """SEAM_GPT candidates from --llm-model (the paper's Prompt 2), every reply cached under ``cache_dir``."""
    return LLMSource(llm_backend(args, policy), progress=False, seed=0, cache_dir=str(cache_dir))


def adversarial_source(args: argparse.Namespace, seeds: CandidateSource, **formatting: Any) -> AdversarialSource:
    """SEAM_Adv candidates: ``seeds``' candidates attacked (--adv-attack, --adv-query-budget RM queries each) until
    the RM prefers them to the golden answer; ``formatting``: the RM's token limits (AdversarialSource's defaults
    without). The victim is the RM a SeamCallback offers, or one bound with ``bind``."""
    return AdversarialSource(attack=args.adv_attack, seeds=seeds, query_budget=args.adv_query_budget, progress=False,
                             device=str(device(args)), **formatting)
